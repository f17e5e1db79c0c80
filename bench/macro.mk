# bench/macro.mk - the macro benchmark (issue 7), included by the top-level
# Makefile after the micro-benchmarks, so one `make bench` runs the parser and
# matcher benchmarks first and then merges their JSON into results.json.
#
# One QEMU guest (8G, VM_CPUS vCPUs, TCG) runs ktcpvs, HAProxy and nginx side
# by side against the same nginx backends, wrk as the client; see
# docs/performance.md.  BENCH_QUICK=1: one short repetition, for iterating.
# BENCH_VM_MEM: the guest's memory (10,000 held connections need room).

BENCH_VM_MEM ?= 8G

.PHONY: bench-setup bench-macro

# Bench-only extra (matplotlib in .venv): not part of `make setup`.
bench-setup: $(SETUP_STAMP)
	bench/macro/setup.sh

# The guest boots kernel KVER (6.1 unless named: make bench KVER=6.12).
bench-macro: bench-setup module ext
	$(PY) bench/macro/run.py --kernel $(KVER) --memory $(BENCH_VM_MEM) --cpus $(VM_CPUS) \
		--module $(BUILD)/$(KVER_FULL)/ktcpvs.ko

bench:: bench-macro
