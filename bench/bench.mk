# bench/bench.mk - benchmark fragments, included by the top-level Makefile.
#
# Parser micro-benchmark: ktcpvs's HTTP parser (kmod/core/http.c) against
# picohttpparser (phr_parse_request from Debian's libh2o-evloop) and
# http-parser (Debian's libhttp-parser).  Both libraries are Debian builds,
# so ours is compiled with the same compiler and Debian's default CFLAGS
# (dpkg-buildflags).  Results: build/bench/parser.json.

BENCH_DIR        := $(BUILD)/bench
BENCH_CC         ?= gcc
BENCH_CFLAGS     ?= $(shell dpkg-buildflags --get CFLAGS 2>/dev/null || echo -g -O2)
BENCH_PARSER_BIN := $(BENCH_DIR)/bench_parser

$(BENCH_PARSER_BIN): bench/parser/bench_parser.c kmod/core/http.c kmod/core/http.h \
		     kmod/core/kt_compat.h
	@mkdir -p $(BENCH_DIR)
	$(BENCH_CC) $(BENCH_CFLAGS) -Wall -Wextra -Ikmod/core -o $@ \
		bench/parser/bench_parser.c kmod/core/http.c \
		-l:libh2o-evloop.so -lhttp_parser

bench:: $(SETUP_STAMP) $(BENCH_PARSER_BIN)
	$(PY) bench/parser/run.py $(BENCH_PARSER_BIN) $(BENCH_DIR)/parser.json
