#!/bin/bash
# Python for the guest, in its memory (docs/testing.md, "The guest's files").
#
#   tests/stage.sh pack TAR     on the host, before a boot (tests/vm.py)
#   tests/stage.sh unpack TAR   in the guest (tests/guest.sh)
#
# The guest reads the host's files over 9p without a cache, a round trip to
# QEMU for every stat, open and read.  The interpreter's library (without its
# test suite, Tk, IDLE and optimised bytecode), libpython and the virtual
# environment's packages the guest uses (not numpy, matplotlib, mypy, pip,
# ...), and Debian's Python library beside them, are packed here into one tar file, without debugging symbols; the
# guest reads that one file, unpacks it into a tmpfs and bind-mounts each
# tree over its path.  (Copying the same trees file by file over 9p took
# 143 s of a boot alone and 390 s with a second guest on the host.)  The tar
# holds .srcs, the list of paths.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
	echo "usage: tests/stage.sh pack|unpack TAR" >&2
	exit 2
}
[ $# -eq 2 ] || usage
tar_file=$(realpath -m "$2")

pack() {
	local py_home py_ver tmp
	py_home=$(realpath .venv/bin/python)
	py_home=$(dirname "$(dirname "$py_home")")
	py_ver=$(.venv/bin/python -c 'import sys; print("python%d.%d" % sys.version_info[:2])')
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' RETURN
	# put SRC [TAR-EXCLUDES...]: SRC's tree (or file) under $tmp at its path
	put() {
		local src=$1 dst
		shift
		dst=$tmp$src
		[ -e "$src" ] || return 0
		if [ -d "$src" ]; then
			mkdir -p "$dst"
			tar -C "$src" -cf - "$@" . | tar -C "$dst" -xf -
		else
			mkdir -p "$(dirname "$dst")"
			cp -p "$src" "$dst"
		fi
		echo "$src" >>"$tmp/.srcs"
	}
	stdlib_excludes=(--exclude=./test --exclude=./site-packages --exclude='*.opt-?.pyc'
		--exclude=./idlelib --exclude=./tkinter --exclude=./turtledemo
		--exclude=./ensurepip --exclude=./lib2to3 --exclude='./config-*')
	put "$py_home/lib/$py_ver" "${stdlib_excludes[@]}"
	for so in "$py_home"/lib/libpython*.so.*; do put "$so"; done
	put "$PWD/.venv/lib/$py_ver/site-packages" --exclude='./numpy*' \
		--exclude='./matplotlib*' --exclude=./mpl_toolkits --exclude='./fontTools*' \
		--exclude='./mypy*' --exclude='./*__mypyc*' --exclude='./PIL' \
		--exclude='./pillow*' --exclude='./pip' --exclude='./pip-*' \
		--exclude='./kiwisolver*' --exclude='./contourpy*' \
		--exclude='./virtme*' --exclude='./ruff*' --exclude='./setuptools' \
		--exclude='./pkg_resources' --exclude='*.opt-?.pyc'
	# Debian's Python: tests run it as another user (test_safety.py), and the
	# installed l7ctl's environment (/opt/ktcpvs/venv, there while make test
	# holds its test installation: test_install.py) is built on it.
	put "$(/usr/bin/python3 -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')" \
		"${stdlib_excludes[@]}"
	for sp in /opt/ktcpvs/venv/lib/python3*/site-packages; do
		[ -e "$sp" ] && put "$sp" --exclude='./pip' --exclude='./pip-*' --exclude='*.opt-?.pyc'
	done
	# Debugging symbols (libpython alone carries 16 MB of them): a quarter of
	# the bytes the guest would read and unpack, and nothing runs differently.
	find "$tmp" -name '*.so*' -type f -exec strip --strip-debug {} +
	mkdir -p "$(dirname "$tar_file")"
	tar -C "$tmp" -cf "$tar_file.part" .
	mv "$tar_file.part" "$tar_file"
}

unpack() {
	local src
	mkdir -p /tmp/stage
	# read in large blocks: each read over 9p is a round trip (tar's own
	# are 10 KiB)
	dd if="$tar_file" bs=4M status=none | tar -C /tmp/stage -xf -
	while read -r src; do
		mount --bind "/tmp/stage$src" "$src"
	done </tmp/stage/.srcs
}

case $1 in
pack) pack ;;
unpack) unpack ;;
*) usage ;;
esac
