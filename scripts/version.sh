#!/bin/bash
# Print the module's version: KTCPVS_VERSION as the module's own sources
# define it (kmod/*.h, kmod/*.c), the one place it is written.  The DKMS
# package version, /usr/src/ktcpvs-VERSION and the Debian packages' version
# all come from here.  Fails if the sources define it twice, differently.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t versions < <(sed -n 's/^#define[[:space:]]\+KTCPVS_VERSION[[:space:]]\+"\([^"]*\)".*/\1/p' \
	kmod/*.h kmod/*.c | sort -u)
case ${#versions[@]} in
1) echo "${versions[0]}" ;;
0) echo "version: no #define KTCPVS_VERSION in kmod/" >&2; exit 1 ;;
*) echo "version: kmod/ defines KTCPVS_VERSION more than once: ${versions[*]}" >&2; exit 1 ;;
esac
