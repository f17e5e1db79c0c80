#!/bin/bash
# make setup: install everything KTCPVS needs on a Debian bookworm machine.
# Idempotent; run as root.  Installs the Debian packages listed in
# scripts/debian-packages.txt and the kernels scripts/kver.sh names (every
# series' image and headers meta-packages), and creates .venv with l7ctl
# (editable) and the test and VM tools.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
	echo "make setup installs Debian packages: run it as root" >&2
	exit 1
fi

mapfile -t pkgs < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' scripts/debian-packages.txt)
mapfile -t -O ${#pkgs[@]} pkgs < <(scripts/kver.sh --packages)
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

for series in $(scripts/kver.sh --series); do
	kver=$(scripts/kver.sh "$series") || {
		echo "setup: kernel $series: no image with matching headers after install" >&2
		exit 1
	}
	echo "setup: kernel $series: $kver"
	# The VM runner boots /boot/vmlinuz-*, which Debian installs mode 0600.
	chmod a+r "/boot/vmlinuz-$kver"
done

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
	"$python" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[dev]'
.venv/bin/python setup.py -q build_ext --inplace
touch .venv/.ktcpvs-setup
echo "setup: done"
