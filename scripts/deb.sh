#!/bin/bash
# make deb: the Debian packages, in build/deb/:
#   ktcpvs-dkms_VERSION_all.deb   the module's sources under DKMS, ktcpvs.service
#                                 and ktcpvs-tlsd.service,
#                                 /etc/ktcpvs/site.rules
#   l7ctl_VERSION_ARCH.deb        the tool with its C extensions (Debian's lark,
#                                 pyroute2, h11)
# VERSION is the module's (scripts/version.sh), for both packages; l7ctl's
# own (pyproject.toml) should be the same, and a difference is reported.  The packages are built from a copy of the tree in
# build/deb/ktcpvs-VERSION/ (debian/ from the top, debian/changelog written
# there), so the source tree gets no build products.
#
#   scripts/deb.sh --check   also test the packages without installing them
#                            (make test): their contents, a DKMS build of the
#                            packaged sources for every kernel of
#                            scripts/kver.sh in a private DKMS tree under
#                            build/deb/ (nothing in /var/lib/dkms or
#                            /lib/modules, nothing loaded), and the packaged
#                            l7ctl run with its C extensions.
set -euo pipefail
cd "$(dirname "$0")/.."

die() {
	echo "deb: $*" >&2
	exit 1
}

check=0
[ "${1:-}" = --check ] && check=1

version=$(scripts/version.sh)
py_version=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
# Both packages carry the module's version (one source package); l7ctl's own
# should be the same (test_module.py checks the loaded module against it).
[ "$py_version" = "$version" ] ||
	echo "deb: warning: the module is $version but l7ctl (pyproject.toml) says $py_version" >&2

out=$PWD/build/deb
stage=$out/ktcpvs-$version
rm -rf "$out"
mkdir -p "$stage"
cp -r debian packaging l7ctl pyproject.toml setup.py README.md "$stage/"
find "$stage/l7ctl" \( -name '*.so' -o -name __pycache__ \) -prune -exec rm -rf {} +
scripts/kmod-sources.sh "$stage/kmod"
when=$(git log -1 --format=%cD 2>/dev/null || date -R)
maintainer=$(sed -n 's/^Maintainer: //p' debian/control)
cat >"$stage/debian/changelog" <<EOF
ktcpvs ($version) unstable; urgency=medium

  * ktcpvs $version, built from the source tree by make deb.

 -- $maintainer  $when
EOF
for unit in ktcpvs ktcpvs-tlsd; do
	sed "s|@L7CTL@|/usr/bin/l7ctl|g" "packaging/$unit.service.in" >"$stage/debian/ktcpvs-dkms.$unit.service"
done

echo "deb: building ktcpvs-dkms and l7ctl $version (log: $out/build.log)"
# Debian's own tools and Python, whatever PATH says (pyenv, a venv).
(cd "$stage" && PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -b -us -uc) \
	>"$out/build.log" 2>&1 ||
	{ tail -n 40 "$out/build.log"; die "dpkg-buildpackage failed"; }
dkms_deb=$out/ktcpvs-dkms_${version}_all.deb
l7ctl_deb=$(ls "$out"/l7ctl_"${version}"_*.deb)
ls -l "$dkms_deb" "$l7ctl_deb"
[ $check = 1 ] || exit 0

# --- what the packages hold --------------------------------------------------
root=$out/root
rm -rf "$root"
dpkg-deb -x "$dkms_deb" "$root"
dpkg-deb -x "$l7ctl_deb" "$root"
src=$root/usr/src/ktcpvs-$version
for f in "$src/dkms.conf" "$src/Makefile" "$src/Kbuild" "$src/compat/compat.h" \
	"$src/compat/probes/baseline.c" "$root/lib/systemd/system/ktcpvs.service" \
	"$root/lib/systemd/system/ktcpvs-tlsd.service" \
	"$root/etc/ktcpvs/site.rules" "$root/usr/bin/l7ctl"; do
	[ -e "$f" ] || die "missing from the packages: ${f#"$root"}"
done
grep -qx "PACKAGE_VERSION=\"$version\"" "$src/dkms.conf" || die "dkms.conf does not say version $version"
if find "$src" \( -name '*.o' -o -name '*.ko' -o -name '.*.cmd' -o -name kt_have.h \) | grep .; then
	die "build products in the ktcpvs-dkms package"
fi
cmp -s "$root/etc/ktcpvs/site.rules" packaging/site.rules || die "site.rules differs from packaging/site.rules"
for unit in ktcpvs ktcpvs-tlsd; do
	diff <(sed "s|@L7CTL@|/usr/bin/l7ctl|g" "packaging/$unit.service.in") \
		"$root/lib/systemd/system/$unit.service" || die "the packaged unit is not packaging/$unit.service.in"
done
depends=$(dpkg-deb -f "$l7ctl_deb" Depends)
for p in python3-lark python3-pyroute2 python3-h11; do
	[[ $depends == *"$p"* ]] || die "l7ctl does not depend on $p: $depends"
done
[[ $(dpkg-deb -f "$dkms_deb" Depends) == *dkms* ]] || die "ktcpvs-dkms does not depend on dkms"
echo "deb: contents ok (l7ctl Depends: $depends)"

# --- the packaged l7ctl, with Debian's Python and libraries ------------------
# Run from / so that the source tree's l7ctl/ is not the one imported.
site=$(find "$root/usr/lib/python3/dist-packages" -maxdepth 0)
packaged() { (cd / && PYTHONPATH=$site /usr/bin/python3 "$@"); }
where=$(packaged -c 'import l7ctl, l7ctl._http, l7ctl._match, l7ctl._tlsloop; print(l7ctl.__file__)') ||
	die "the packaged l7ctl's C extensions do not load"
[[ $where == "$site"/* ]] || die "imported $where, not the packaged l7ctl"
got=$(packaged "$root/usr/bin/l7ctl" --version)
[ "$got" = "l7ctl $py_version" ] || die "packaged l7ctl --version says '$got'"
packaged "$root/usr/bin/l7ctl" check "$root/etc/ktcpvs/site.rules" |
	grep -q ": ok: 0 service(s), 0 rule(s), 0 pool(s), 0 virtual service(s)" ||
	die "the packaged site.rules does not compile to an empty configuration"
echo "deb: packaged l7ctl runs ($got), site.rules applies nothing"

# --- DKMS builds the packaged sources for every kernel -----------------------
# A private DKMS tree: the host's DKMS state and /lib/modules stay untouched.
# DKMS signs what it builds with its machine key, /var/lib/dkms/mok.key,
# which it creates when missing: one created here is removed afterwards.
tree=$out/dkms
mkdir -p "$tree/var" "$tree/install"
if [ ! -e /var/lib/dkms/mok.key ]; then
	trap 'rm -f /var/lib/dkms/mok.key /var/lib/dkms/mok.pub' EXIT
fi
dkms_private=(--dkmstree "$tree/var" --sourcetree "$root/usr/src" --installtree "$tree/install")
dkms add -m ktcpvs -v "$version" "${dkms_private[@]}" >"$out/dkms.log" 2>&1 ||
	{ cat "$out/dkms.log"; die "dkms add failed"; }
for kv in $(scripts/kver.sh all); do
	dkms build -m ktcpvs -v "$version" -k "$kv" "${dkms_private[@]}" >>"$out/dkms.log" 2>&1 ||
		{ tail -n 40 "$out/dkms.log"; die "dkms build for $kv failed ($out/dkms.log)"; }
	ko=$(find "$tree/var/ktcpvs/$version/$kv" -name 'ktcpvs.ko*' | head -n 1)
	[ -n "$ko" ] || die "dkms build for $kv left no ktcpvs.ko"
	magic=$(modinfo -F vermagic "$ko" | cut -d' ' -f1)
	[ "$magic" = "$kv" ] || die "DKMS built $ko for '$magic', not $kv"
	echo "deb: DKMS built the packaged sources for $kv: ${ko#"$out"/}"
done
