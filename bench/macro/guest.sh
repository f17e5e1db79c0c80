#!/bin/bash
# The macro benchmark inside the QEMU guest (tests/vm.py --script bench/macro/guest.sh).
# tests/guest.sh has loaded the module and unloads it afterwards.  The host's
# bench/macro/run.py wrote the configuration (output directory, quick mode)
# to build/bench/macro-config.json before booting.
set -euo pipefail
ulimit -n 262144
sysctl -qw fs.file-max=2000000
sysctl -qw kernel.perf_event_paranoid=-1 kernel.kptr_restrict=0 || true
exec python3 bench/macro/guest.py build/bench/macro-config.json
