# KTCPVS - top-level build.  `make help` lists the targets.
#
# The module is built and tested for the kernels scripts/kver.sh names
# (Debian's 6.1 and 6.12 series, each the version its meta-package depends
# on), never against the host's running kernel and never "the newest found".

SHELL     := /bin/bash
VENV      := $(CURDIR)/.venv
PY        := $(VENV)/bin/python
PYTEST    := $(VENV)/bin/pytest
BUILD     := $(CURDIR)/build

# Every kernel the module is built and tested for (series names), and the
# one kernel of single-kernel targets (module, demo, bench).  Both take a
# series or a full version: make kernel-test KERNELS=6.12, make demo KVER=6.12.
KERNELS   ?= $(shell scripts/kver.sh --series)
KVER      ?= 6.1
VM_CPUS   ?= 2
VM_MEM    ?= 2G

# The full version of a kernel name (6.1 -> 6.1.0-57-amd64), evaluated when
# used: after make setup has installed the kernels.
kfull      = $(shell scripts/kver.sh $(1))
KVER_FULL  = $(call kfull,$(KVER))

export KVER VM_CPUS VM_MEM

.PHONY: help setup build modules module compat-selftest ext sparse test host-test \
	kernel-test demo lint deb deb-test install uninstall install-test fuzz fuzz-short \
	bench clean

help:
	@echo "make setup        install everything (Debian packages, both kernels, .venv) - idempotent, root"
	@echo "make build        build/KVER/ktcpvs.ko for every kernel ($(KERNELS)), W=1, and the l7ctl extensions"
	@echo "make module       one kernel's module: KVER=$(KVER) (a series or a full version)"
	@echo "make test         build, lint, host tests, short fuzz runs, sparse, packages, kernel suite on every kernel"
	@echo "make kernel-test  the kernel suite in QEMU, once per kernel (KERNELS=...), results in build/vm/KVER/"
	@echo "make demo         boot a VM (kernel KVER=$(KVER)) and run the demo site"
	@echo "make sparse       the module under sparse (C=2) and W=1, every kernel; fails on any warning"
	@echo "make lint         ruff and mypy"
	@echo "make deb          Debian packages ktcpvs-dkms and l7ctl in build/deb/"
	@echo "make install      (root) DKMS module, l7ctl in /opt/ktcpvs/venv, ktcpvs.service, /etc/ktcpvs/site.rules"
	@echo "make uninstall    (root) remove all that make install put in place"
	@echo "make fuzz         long libFuzzer runs on the pure-C core"
	@echo "make bench        micro + macro benchmarks (build/bench/results.json, chart.png)"

setup:
	scripts/setup.sh

# Set up on first use, and again when what setup installs has changed.
SETUP_STAMP := $(VENV)/.ktcpvs-setup
$(SETUP_STAMP): scripts/setup.sh scripts/debian-packages.txt scripts/kver.sh pyproject.toml setup.py
	scripts/setup.sh

build: $(SETUP_STAMP)
	$(MAKE) modules ext

modules: $(SETUP_STAMP)
	@for k in $(KERNELS); do $(MAKE) --no-print-directory module KVER=$$k || exit 1; done

# One kernel: kmod/Makefile builds in build/KVER/kmod (links to kmod/, the
# compat probes' kt_have.h, kbuild with W=1) and proves compat.h
# (compat-selftest); the module is then build/KVER/ktcpvs.ko.
module: $(SETUP_STAMP)
	@kv="$(KVER_FULL)" && test -n "$$kv" && \
	echo "module: kernel $$kv (KVER=$(KVER))" && \
	$(MAKE) --no-print-directory -C kmod KVER=$$kv KDIR=/usr/src/linux-headers-$$kv \
		OUT=$(BUILD)/$$kv/kmod W=1 modules compat-selftest && \
	cp $(BUILD)/$$kv/kmod/ktcpvs.ko $(BUILD)/$$kv/ktcpvs.ko && \
	echo "module: $(BUILD)/$$kv/ktcpvs.ko"

# sparse (C=2: every file) with W=1 against every kernel, in each kernel's
# build directory; any warning or error fails.
sparse: $(SETUP_STAMP)
	@for k in $(KERNELS); do \
		kv=$$(scripts/kver.sh $$k) || exit 1; \
		echo "sparse: kernel $$kv"; \
		mkdir -p $(BUILD)/$$kv; \
		$(MAKE) --no-print-directory -C kmod KVER=$$kv KDIR=/usr/src/linux-headers-$$kv \
			OUT=$(BUILD)/$$kv/kmod W=1 C=2 modules >$(BUILD)/$$kv/sparse.log 2>&1 || \
			{ cat $(BUILD)/$$kv/sparse.log; echo "sparse: $$kv: build failed" >&2; exit 1; }; \
		if grep -E "warning|error" $(BUILD)/$$kv/sparse.log | grep -v "^make"; then \
			echo "sparse: $$kv: sparse or W=1 reported problems ($(BUILD)/$$kv/sparse.log)" >&2; \
			exit 1; \
		fi; \
		echo "sparse: $$kv: clean"; \
	done

ext:
	$(PY) setup.py -q build_ext --inplace

test: build lint host-test fuzz-short sparse deb-test
	$(MAKE) --no-print-directory kernel-test INSTALL_TEST=1

host-test:
	$(PYTEST) -q tests/host

# The kernel suite once per kernel, one boot each, one after the other:
# results in build/vm/KVER/, a summary per kernel at the end.  INSTALL_TEST=1
# (make test) first runs make install on this host (DKMS build for every
# kernel, nothing loaded) so the guests test the installed module and unit
# (tests/kernel/test_install.py), and make uninstall afterwards, also on
# failure.  VM_MEMDEBUG=0 boots without memory debugging (to measure it).
kernel-test: $(SETUP_STAMP)
	$(MAKE) --no-print-directory modules
	scripts/kernel-test.sh $(KERNELS)

demo: $(SETUP_STAMP)
	$(MAKE) --no-print-directory module ext
	$(PY) tests/vm.py --kernel $(KVER) --cpus $(VM_CPUS) --memory $(VM_MEM) \
		--script scripts/demo-guest.sh

lint:
	$(VENV)/bin/ruff check l7ctl tests bench scripts setup.py
	$(VENV)/bin/ruff format --check l7ctl tests bench scripts setup.py
	$(VENV)/bin/mypy

# Packages and install: scripts/deb.sh, scripts/install.sh (docs/kernels.md).
deb: $(SETUP_STAMP)
	scripts/deb.sh

# Builds the packages and checks what they hold (never installs them here).
deb-test: $(SETUP_STAMP)
	scripts/deb.sh --check

install:
	scripts/install.sh install

uninstall:
	scripts/install.sh uninstall

clean:
	rm -rf $(BUILD) l7ctl/*.so
	rm -rf kmod/.compat-probes kmod/.compat-selftest kmod/compat/kt_have.h

# Fragments owned by the parser/matcher work: fuzz harnesses and benchmarks.
-include tests/fuzz/fuzz.mk
-include bench/bench.mk
-include bench/rules.mk
-include bench/macro.mk

fuzz-short::
fuzz::
bench::
