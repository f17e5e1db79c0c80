#!/bin/bash
# The demo, run inside the QEMU guest by `make demo` (tests/vm.py --script).
# The module is already loaded by tests/guest.sh and unloaded after.
set -euo pipefail
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "guest kernel"
uname -r
step "ktcpvs.ko loaded"
grep ktcpvs /proc/modules
dmesg | grep 'ktcpvs:' | tail -1
step "l7ctl status"
l7ctl status
if [ -f examples/images-vs-cgi.rules ] && l7ctl check --help >/dev/null 2>&1; then
	step "l7ctl check examples/images-vs-cgi.rules"
	l7ctl check examples/images-vs-cgi.rules
	if l7ctl route --help >/dev/null 2>&1; then
		for url in http://www.example.com/img/logo.png http://www.example.com/cgi-bin/search.cgi \
			http://www.example.com/index.html; do
			step "l7ctl route examples/images-vs-cgi.rules GET $url"
			l7ctl route examples/images-vs-cgi.rules GET "$url" || true
		done
	fi
fi
