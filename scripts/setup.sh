#!/bin/bash
# make setup: install everything KTCPVS needs on a Debian bookworm machine.
# Idempotent; run as root.  Installs the Debian packages listed in
# scripts/debian-packages.txt and creates .venv with l7ctl (editable) and the
# test and VM tools.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
	echo "make setup installs Debian packages: run it as root" >&2
	exit 1
fi

mapfile -t pkgs < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' scripts/debian-packages.txt)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "setup: installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# nginx-light's package enables a default site on :80 of the host; the
# project only ever runs nginx inside the guest's namespaces.
if systemctl is-active --quiet nginx 2>/dev/null; then
	systemctl disable --now nginx >/dev/null 2>&1 || true
fi

kver=$(scripts/kver.sh)
if [ "$kver" = none ]; then
	echo "setup: no Debian kernel with matching headers after install" >&2
	exit 1
fi
echo "setup: guest kernel $kver"

# The VM runner boots /boot/vmlinuz-*, which Debian installs mode 0600.
chmod a+r "/boot/vmlinuz-$kver"

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
	"$python" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[dev]'
.venv/bin/python setup.py -q build_ext --inplace
touch .venv/.ktcpvs-setup
echo "setup: done"
