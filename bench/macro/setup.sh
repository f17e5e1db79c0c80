#!/bin/bash
# Bench-only extra, installed by `make bench-setup` (not by `make setup`, so
# that `make test` in CI does not pay for them):
#   matplotlib   into .venv, for build/bench/chart.png
# (perf is not used: it does not sample under TCG, see docs/performance.md.)
# wrk, haproxy and nginx-light come with `make setup` (scripts/debian-packages.txt).
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! .venv/bin/python -c "import matplotlib" 2>/dev/null; then
	echo "bench-setup: installing matplotlib into .venv"
	.venv/bin/pip install -q matplotlib
fi
