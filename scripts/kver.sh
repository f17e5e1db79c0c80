#!/bin/bash
# The kernels KTCPVS is built and tested for, chosen explicitly: each series
# is named here with the Debian meta-packages that track it, and its version
# is the one those meta-packages depend on -- never "the newest found", never
# the host's running kernel.
#
#   scripts/kver.sh SERIES|VERSION   the full version (e.g. 6.1 -> 6.1.0-57-amd64)
#   scripts/kver.sh all              every series' version, one a line
#   scripts/kver.sh --series         the series names (6.1 6.12)
#   scripts/kver.sh --packages       the meta-packages make setup installs
#
# A VERSION given in full (6.12.117+deb12-amd64) is accepted as it is when its
# image and headers are installed.  Fails, saying why, when the image
# (/boot/vmlinuz-VER) or the headers (/usr/src/linux-headers-VER) are missing.
set -euo pipefail

# series  image meta-package       headers meta-package
SERIES_TABLE="
6.1   linux-image-amd64       linux-headers-amd64
6.12  linux-image-6.12-amd64  linux-headers-6.12-amd64
"

die() {
	echo "kver: $*" >&2
	exit 1
}

series_names() {
	awk 'NF { print $1 }' <<<"$SERIES_TABLE"
}

# The package version a meta-package depends on: linux-image-6.1.0-57-amd64
# (= 6.1.192-3) -> 6.1.0-57-amd64.
meta_target() {
	local meta=$1 prefix=$2 dep
	dep=$(dpkg-query -W -f='${Status} ${Depends}\n' "$meta" 2>/dev/null) ||
		die "$meta is not installed: run make setup"
	case $dep in
	"install ok installed "*) ;;
	*) die "$meta is not installed: run make setup" ;;
	esac
	dep=${dep#install ok installed }
	dep=$(tr ',' '\n' <<<"$dep" | sed -n "s/^ *$prefix\([^ ]*\).*/\1/p" | head -n 1)
	[ -n "$dep" ] || die "$meta depends on no $prefix* package"
	echo "$dep"
}

check_installed() {
	local ver=$1
	[ -e "/boot/vmlinuz-$ver" ] || die "/boot/vmlinuz-$ver missing: run make setup"
	[ -d "/usr/src/linux-headers-$ver" ] || die "/usr/src/linux-headers-$ver missing: run make setup"
}

resolve() {
	local want=$1 series image headers ver hver
	while read -r series image headers; do
		[ -n "$series" ] || continue
		[ "$series" = "$want" ] || continue
		ver=$(meta_target "$image" linux-image-)
		hver=$(meta_target "$headers" linux-headers-)
		[ "$ver" = "$hver" ] || die "$image wants $ver but $headers wants $hver: run make setup"
		check_installed "$ver"
		echo "$ver"
		return 0
	done <<<"$SERIES_TABLE"
	# Not a series name: a full version.
	case $want in
	[0-9]*.*-*) check_installed "$want" && echo "$want" ;;
	*) die "unknown kernel '$want': one of $(series_names | xargs), or a full version" ;;
	esac
}

[ $# -eq 1 ] || die "usage: kver.sh SERIES|VERSION|all|--series|--packages"
case $1 in
--series) series_names | xargs ;;
--packages) awk 'NF { print $2; print $3 }' <<<"$SERIES_TABLE" ;;
all) for s in $(series_names); do resolve "$s"; done ;;
*) resolve "$1" ;;
esac
