#!/bin/bash
# The demo, run inside the QEMU guest by `make demo` (tests/vm.py --script).
# tests/guest.sh has loaded build/ktcpvs.ko and unloads it afterwards.
set -euo pipefail
printf '\n\033[1m== guest kernel %s, module loaded\033[0m\n' "$(uname -r)"
grep ktcpvs /proc/modules
l7ctl status
python3 scripts/demo.py
