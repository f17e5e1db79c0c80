# KTCPVS - top-level build.  `make help` lists the targets.
#
# The module is built against Debian's linux-headers-amd64 (the kernel the
# QEMU guest boots), never against the host's running kernel.

SHELL     := /bin/bash
VENV      := $(CURDIR)/.venv
PY        := $(VENV)/bin/python
PYTEST    := $(VENV)/bin/pytest
BUILD     := $(CURDIR)/build

# The newest Debian kernel that has both an image and matching headers.
KVER      ?= $(shell scripts/kver.sh)
KDIR      ?= /usr/src/linux-headers-$(KVER)
VM_CPUS   ?= 2
VM_MEM    ?= 2G

export KVER KDIR VM_CPUS VM_MEM

.PHONY: help setup build module ext sparse test host-test kernel-test demo \
	lint fuzz fuzz-short bench clean

help:
	@echo "make setup        install everything (Debian packages, .venv) - idempotent, root"
	@echo "make build        build kmod/ktcpvs.ko (against $(KDIR)) and the l7ctl extensions"
	@echo "make test         host tests, short fuzz run, then the kernel suite inside QEMU"
	@echo "make demo         boot a VM and run the demo site"
	@echo "make sparse       build the module with sparse (C=1) and W=1"
	@echo "make lint         ruff and mypy"
	@echo "make fuzz         long libFuzzer runs on the pure-C core"
	@echo "make bench        micro + macro benchmarks (build/bench/results.json, chart.png)"

setup:
	scripts/setup.sh

# Set up on first use, and again when what setup installs has changed.
SETUP_STAMP := $(VENV)/.ktcpvs-setup
$(SETUP_STAMP): scripts/setup.sh scripts/debian-packages.txt pyproject.toml setup.py
	scripts/setup.sh

build: $(SETUP_STAMP)
	$(MAKE) module ext

module: $(SETUP_STAMP)
	@test -d "$(KDIR)" || { echo "no kernel headers at $(KDIR): run make setup" >&2; exit 1; }
	$(MAKE) -C $(KDIR) M=$(CURDIR)/kmod W=1 modules
	@mkdir -p $(BUILD) && cp kmod/ktcpvs.ko $(BUILD)/ktcpvs.ko

sparse:
	$(MAKE) -C $(KDIR) M=$(CURDIR)/kmod W=1 C=2 modules 2>&1 | tee $(BUILD)/sparse.log
	@! grep -E "warning|error" $(BUILD)/sparse.log | grep -v "^make" || \
		{ echo "sparse/W=1 reported problems" >&2; exit 1; }

ext:
	$(PY) setup.py -q build_ext --inplace

test: build lint host-test fuzz-short kernel-test

host-test:
	$(PYTEST) -q tests/host

kernel-test: module
	$(PY) tests/vm.py --cpus $(VM_CPUS) --memory $(VM_MEM) -- tests/kernel

demo: build
	$(PY) tests/vm.py --cpus $(VM_CPUS) --memory $(VM_MEM) --script scripts/demo-guest.sh

lint:
	$(VENV)/bin/ruff check l7ctl tests bench scripts setup.py
	$(VENV)/bin/mypy

clean:
	-$(MAKE) -C $(KDIR) M=$(CURDIR)/kmod clean
	rm -rf $(BUILD) l7ctl/*.so build/

# Fragments owned by the parser/matcher work: fuzz harnesses and benchmarks.
-include tests/fuzz/fuzz.mk
-include bench/bench.mk
-include bench/rules.mk
-include bench/macro.mk

fuzz-short::
fuzz::
bench::
