#!/bin/bash
# Bench-only extras, installed by `make bench-setup` (not by `make setup`, so
# that `make test` in CI does not pay for them):
#   linux-perf   Debian's perf, which counts events in the guest (perf stat -a;
#                bench/macro/counters.py); the guest runs the host's binaries
#   matplotlib   into .venv, for build/bench/chart.png
# wrk, haproxy and nginx-light come with `make setup` (scripts/debian-packages.txt).
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v perf >/dev/null || ! perf version >/dev/null 2>&1; then
	echo "bench-setup: installing linux-perf"
	apt-get install -y -q linux-perf >/dev/null || {
		apt-get update -q >/dev/null
		apt-get install -y -q linux-perf >/dev/null
	}
fi
if ! .venv/bin/python -c "import matplotlib" 2>/dev/null; then
	echo "bench-setup: installing matplotlib into .venv"
	.venv/bin/pip install -q matplotlib
fi
