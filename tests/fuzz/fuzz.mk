# tests/fuzz/fuzz.mk - libFuzzer harnesses for the pure-C core: the HTTP
# parser (request, response, chunked) and the rule-table validator and
# matcher (match).
# Included by the top-level Makefile (which defines BUILD).
#
#   make fuzz-short   every harness for FUZZ_SHORT_SECS (part of make test)
#   make fuzz         every harness for FUZZ_LONG_SECS
#
# A crash, a sanitizer report or a failed invariant stops the build; the
# reproducer is left in build/fuzz/crash-<harness>-*.  New inputs found go to
# build/fuzz/corpus-<harness>/ (the seeds in tests/fuzz/corpus/ stay as they
# are; copy interesting finds there by hand).

FUZZ_DIR        := $(BUILD)/fuzz
FUZZ_CC         ?= clang
FUZZ_CFLAGS     ?= -g -O1 -fsanitize=fuzzer,address,undefined \
		   -fno-sanitize-recover=all -fno-omit-frame-pointer \
		   -Wall -Wextra -Werror
FUZZ_HARNESSES  := request response chunked match
FUZZ_SHORT_SECS ?= 15
FUZZ_LONG_SECS  ?= 600
FUZZ_BINS       := $(FUZZ_HARNESSES:%=$(FUZZ_DIR)/fuzz_%)
FUZZ_DEPS       := tests/fuzz/fuzz_common.h tests/fuzz/fuzz_assert.h kmod/core/http.c kmod/core/http.h \
		   kmod/core/kt_compat.h

$(FUZZ_DIR)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_DEPS)
	@mkdir -p $(FUZZ_DIR)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -Ikmod/core -o $@ $< kmod/core/http.c

# The matcher harness: blob || request view (see fuzz_match.c); blobs of the
# examples are 5-35 KB, so it gets a larger max_len and no HTTP dictionary.
$(FUZZ_DIR)/fuzz_match: tests/fuzz/fuzz_match.c tests/fuzz/fuzz_assert.h kmod/core/match.c \
			kmod/core/match.h kmod/core/kt_compat.h
	@mkdir -p $(FUZZ_DIR)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -Ikmod/core -o $@ $< kmod/core/match.c

# $(1): seconds per harness
define fuzz_run
	@for h in $(FUZZ_HARNESSES); do \
		mkdir -p $(FUZZ_DIR)/corpus-$$h; \
		echo "fuzz $$h: $(1) s"; \
		if [ $$h = match ]; then \
			opts="-max_len=65536"; \
		else \
			opts="-max_len=4096 -dict=tests/fuzz/http.dict"; \
		fi; \
		$(FUZZ_DIR)/fuzz_$$h -max_total_time=$(1) $$opts \
			-timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
			-artifact_prefix=$(FUZZ_DIR)/crash-$$h- \
			$(FUZZ_DIR)/corpus-$$h tests/fuzz/corpus/$$h \
			> $(FUZZ_DIR)/$$h.log 2>&1 \
		|| { tail -n 40 $(FUZZ_DIR)/$$h.log; \
		     echo "fuzz $$h FAILED: see $(FUZZ_DIR)/$$h.log" >&2; exit 1; }; \
		grep -E "stat::number_of_executed_units|cov:" $(FUZZ_DIR)/$$h.log | tail -n 2; \
	done
endef

fuzz-short:: $(FUZZ_BINS)
	$(call fuzz_run,$(FUZZ_SHORT_SECS))

fuzz:: $(FUZZ_BINS)
	$(call fuzz_run,$(FUZZ_LONG_SECS))
