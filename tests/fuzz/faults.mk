# tests/fuzz/faults.mk - the long run of the kernel fault test
# (tests/kernel/test_faults.py): misbehaving clients and backends through the
# live module, in one QEMU guest.  Included by the top-level Makefile after
# tests/fuzz/fuzz.mk.
#
#   make fuzz          the libFuzzer runs, then this for FAULT_SECS
#   make fuzz-faults   only this
#
# Every batch of scenarios runs whatever happens (KTCPVS_FAULT_KEEP_GOING=1)
# and every failing scenario is reported with its label; a kernel report ends
# the run at once.  FAULT_SEED replays a run (its seed is printed at the start
# and in every failure); KTCPVS_FAULT_ONLY=LABEL,... in the environment of
# pytest replays single scenarios.  Kernel: KVER (a series or a version).
# Results in build/vm-faults/: console.log (with the pytest output), dmesg.txt.

FAULT_SECS   ?= 1800
FAULT_SEED   ?=
FAULT_OUT    := $(BUILD)/vm-faults
FAULT_SCRIPT := $(BUILD)/faults-guest.sh

.PHONY: fuzz-faults

# tests/vm.py passes no environment into the guest: a script carries it.
fuzz-faults: $(SETUP_STAMP)
	$(MAKE) --no-print-directory module ext
	@mkdir -p $(BUILD)
	@{ echo 'export KTCPVS_FAULT_SECONDS=$(FAULT_SECS) KTCPVS_FAULT_KEEP_GOING=1'; \
	   $(if $(FAULT_SEED),echo 'export KTCPVS_FAULT_SEED=$(FAULT_SEED)';) \
	   echo 'exec pytest -p no:cacheprovider -o addopts= -s --durations=8 tests/kernel/test_faults.py'; \
	 } >$(FAULT_SCRIPT)
	$(PY) tests/vm.py --kernel $(KVER) --cpus $(VM_CPUS) --memory $(VM_MEM) \
		--out $(FAULT_OUT) --timeout $$(( $(FAULT_SECS) + 1200 )) --script $(FAULT_SCRIPT)

fuzz:: fuzz-faults
