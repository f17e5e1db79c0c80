#!/bin/bash
# make install / make uninstall: KTCPVS on one's own machine (root).
#
#   scripts/install.sh install     the module under DKMS, l7ctl, the service
#   scripts/install.sh uninstall   remove all of it
#   scripts/install.sh status      list what is installed (exit 1: nothing)
#
# install puts in place:
#   /usr/src/ktcpvs-VERSION        the module's sources and dkms.conf; DKMS
#                                  builds and installs ktcpvs.ko for every
#                                  installed kernel that has headers (6.1 and
#                                  later), and again at each kernel upgrade
#                                  (AUTOINSTALL); nothing is loaded
#   /opt/ktcpvs/venv               l7ctl in its own virtual environment (no
#                                  system Python package is touched), linked
#                                  as /usr/local/bin/l7ctl
#   /etc/systemd/system/ktcpvs.service and ktcpvs-tlsd.service (the TLS
#                                  daemon, started with ktcpvs.service)
#   /etc/ktcpvs/site.rules         commented, applies nothing; kept if present
# VERSION is the module's own (scripts/version.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX_VENV=/opt/ktcpvs/venv
BIN=/usr/local/bin/l7ctl
UNIT=/etc/systemd/system/ktcpvs.service
UNIT_TLSD=/etc/systemd/system/ktcpvs-tlsd.service
RULES=/etc/ktcpvs/site.rules

say() { echo "install: $*"; }
die() {
	echo "install: $*" >&2
	exit 1
}

need_root() {
	[ "$(id -u)" -eq 0 ] || die "run as root (make install / make uninstall)"
}

systemd_running() { [ -d /run/systemd/system ]; }

# Every ktcpvs version DKMS knows, from its tree (dkms status's format has
# changed between releases; the tree has not).
dkms_versions() {
	local d
	for d in /var/lib/dkms/ktcpvs/*/; do
		[ -d "$d" ] || continue
		d=${d%/}
		d=${d##*/}
		case $d in
		kernel-*) ;; # DKMS's per-kernel links
		*) echo "$d" ;;
		esac
	done
}

# Kernels with headers: those DKMS can build for.
kernels_with_headers() {
	local d
	for d in /lib/modules/*/; do
		d=${d%/}
		[ -e "$d/build/include" ] && echo "${d##*/}"
	done
}

status() {
	local found=1 v
	for v in $(dkms_versions); do
		say "DKMS: ktcpvs/$v ($(dkms status -m ktcpvs -v "$v" 2>/dev/null | tr '\n' ';'))"
		found=0
	done
	for p in /usr/src/ktcpvs-* /opt/ktcpvs "$BIN" "$UNIT" "$RULES"; do
		if [ -e "$p" ] || [ -L "$p" ]; then
			say "present: $p"
			found=0
		fi
	done
	if dpkg-query -W -f='${Status}\n' ktcpvs-dkms l7ctl 2>/dev/null | grep -q "install ok installed"; then
		say "the Debian packages ktcpvs-dkms / l7ctl are installed"
		found=0
	fi
	return $found
}

install_all() {
	need_root
	if dpkg-query -W -f='${Status}\n' ktcpvs-dkms 2>/dev/null | grep -q "install ok installed"; then
		die "the Debian package ktcpvs-dkms is installed: use it, or remove it first"
	fi
	command -v dkms >/dev/null || die "dkms is not installed (apt-get install dkms)"
	local version src kv built=0 tmp
	version=$(scripts/version.sh)
	src=/usr/src/ktcpvs-$version

	# The module: sources, then DKMS (add, build, install) for each kernel.
	if dkms_versions | grep -qx "$version"; then
		say "DKMS already has ktcpvs/$version: replacing it"
		dkms remove -m ktcpvs -v "$version" --all >/dev/null
	fi
	rm -rf "$src"
	scripts/kmod-sources.sh "$src"
	say "module sources in $src"
	dkms add -m ktcpvs -v "$version"
	for kv in $(kernels_with_headers); do
		if dkms install -m ktcpvs -v "$version" -k "$kv"; then
			built=$((built + 1))
		else
			# BUILD_EXCLUSIVE_KERNEL_MIN: kernels before 6.1 are skipped.
			say "no module for kernel $kv (see above)"
		fi
	done
	[ "$built" -gt 0 ] || die "DKMS built ktcpvs for no kernel: install a kernel's headers (6.1 or later)"

	# l7ctl: its own virtual environment, built from a clean copy of the
	# package (nothing is written into the source tree).
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' RETURN
	mkdir -p "$tmp/src/kmod"
	cp -r l7ctl pyproject.toml setup.py README.md "$tmp/src/"
	cp -r kmod/core kmod/uapi "$tmp/src/kmod/"
	find "$tmp/src" \( -name '*.so' -o -name __pycache__ -o -name '*.o' \) -prune -exec rm -rf {} +
	rm -rf "$PREFIX_VENV"
	# Debian's Python, whatever PATH says (pyenv, a venv).
	/usr/bin/python3 -m venv "$PREFIX_VENV"
	"$PREFIX_VENV/bin/pip" install -q --disable-pip-version-check "$tmp/src"
	ln -sfn "$PREFIX_VENV/bin/l7ctl" "$BIN"
	say "l7ctl in $PREFIX_VENV, linked as $BIN ($("$BIN" --version 2>/dev/null || echo '?'))"

	# The service and its rules.
	sed "s|@L7CTL@|$BIN|g" packaging/ktcpvs.service.in >"$UNIT"
	sed "s|@L7CTL@|$BIN|g" packaging/ktcpvs-tlsd.service.in >"$UNIT_TLSD"
	chmod 0644 "$UNIT" "$UNIT_TLSD"
	if [ -e "$RULES" ]; then
		say "$RULES exists: kept as it is"
	else
		install -D -m 0644 packaging/site.rules "$RULES"
	fi
	if systemd_running; then
		systemctl daemon-reload
	fi
	say "done: ktcpvs $version; edit $RULES, then systemctl enable --now ktcpvs"
}

uninstall_all() {
	need_root
	local v
	if systemd_running && [ -e "$UNIT" ]; then
		# Stopping unloads the module (flush, modprobe -r).
		systemctl disable --now ktcpvs-tlsd.service ktcpvs.service 2>/dev/null || true
	fi
	for v in $(dkms_versions); do
		dkms remove -m ktcpvs -v "$v" --all || die "dkms remove ktcpvs/$v failed"
	done
	rm -rf /usr/src/ktcpvs-*
	rm -f "$UNIT" "$UNIT_TLSD"
	if systemd_running; then
		systemctl daemon-reload
	fi
	[ "$(readlink "$BIN" 2>/dev/null)" = "$PREFIX_VENV/bin/l7ctl" ] && rm -f "$BIN"
	rm -rf /opt/ktcpvs
	if [ -e "$RULES" ]; then
		if cmp -s "$RULES" packaging/site.rules; then
			rm -f "$RULES"
			rmdir --ignore-fail-on-non-empty /etc/ktcpvs
		else
			say "$RULES was changed since it was installed: kept (remove it by hand)"
		fi
	fi
	say "ktcpvs uninstalled"
}

case ${1:-} in
install) install_all ;;
uninstall) uninstall_all ;;
status) status ;;
*)
	echo "usage: scripts/install.sh install|uninstall|status" >&2
	exit 2
	;;
esac
