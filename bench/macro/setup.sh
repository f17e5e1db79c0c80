#!/bin/bash
# Bench-only extras, installed by `make bench-setup` (not by `make setup`, so
# that `make test` in CI does not pay for them):
#   linux-perf   perf for the profile of the guest under load (the guest runs
#                the host's /usr/bin/perf, linux-perf 6.1, the guest kernel's version)
#   matplotlib   into .venv, for build/bench/chart.png
# wrk, haproxy and nginx-light come with `make setup` (scripts/debian-packages.txt).
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v perf >/dev/null 2>&1; then
	echo "bench-setup: installing linux-perf"
	apt-get update -qq || true
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf
fi
if ! .venv/bin/python -c "import matplotlib" 2>/dev/null; then
	echo "bench-setup: installing matplotlib into .venv"
	.venv/bin/pip install -q matplotlib
fi
