#!/bin/bash
# Copy the module's sources, as DKMS builds them, into DIR: kmod/ without
# anything a build leaves there, plus dkms.conf with the module's version.
#   scripts/kmod-sources.sh DIR
# Used by scripts/install.sh (DIR = /usr/src/ktcpvs-VERSION) and
# scripts/deb.sh (the ktcpvs-dkms package's copy).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 1 ] || { echo "usage: scripts/kmod-sources.sh DIR" >&2; exit 2; }
dest=$1
version=$(scripts/version.sh)
mkdir -p "$dest"
(
	cd kmod
	find . \( -name '*.c' -o -name '*.h' -o -name Kbuild -o -name Makefile \) \
		! -name '*.mod.c' ! -path './compat/kt_have.h' ! -path './.*' -print
) | sort | while read -r f; do
	install -D -m 0644 "kmod/$f" "$dest/$f"
done
sed "s/#MODULE_VERSION#/$version/" packaging/dkms.conf >"$dest/dkms.conf"
