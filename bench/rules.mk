# Rule matcher micro-benchmark (issue 4): match time with 10..10,000 rules,
# compile time, table size -> build/bench/rules.json.  Included by the
# top-level Makefile; needs the l7ctl._match extension (make ext).
bench:: ext
	$(PY) bench/rules/bench.py --out $(BUILD)/bench/rules.json
