"""Run the parser micro-benchmark and write build/bench/parser.json.

Usage: python3 bench/parser/run.py BENCH_BINARY OUT_JSON

Wall-clock ns/request and bytes/s come from one run of the binary (best of
5 repetitions per parser and sample); instruction counts come from callgrind
(`--collect-atstart=no`, the binary toggles collection around the parse
loop only), a figure that noise does not move.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

CALLGRIND_ITERS = 2000


def instructions(binary: str, parser: str, sample: str) -> float | None:
    if not shutil.which("valgrind"):
        return None
    out = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            "--collect-atstart=no",
            binary,
            "callgrind",
            parser,
            sample,
            str(CALLGRIND_ITERS),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    m = re.search(r"refs:\s+([\d,]+)", out)
    assert m, out
    return int(m.group(1).replace(",", "")) / CALLGRIND_ITERS


def main() -> int:
    binary, out_path = sys.argv[1], Path(sys.argv[2])
    result = json.loads(
        subprocess.run([binary, "time"], capture_output=True, text=True, check=True).stdout
    )
    listing = subprocess.run([binary, "list"], capture_output=True, text=True, check=True).stdout
    parsers = [ln.split()[1] for ln in listing.splitlines() if ln.startswith("parser ")]
    samples = [ln.split()[1] for ln in listing.splitlines() if ln.startswith("sample ")]
    cg: dict[str, dict[str, float | None]] = {}
    for p in parsers:
        cg[p] = {s: instructions(binary, p, s) for s in samples}
        known = [v for v in cg[p].values() if v is not None]
        cg[p]["corpus_mean"] = sum(known) / len(known) if known else None
    result["instructions_per_request"] = cg
    t = result["time"]
    result["ratios"] = {
        "ns_http_parser_over_ktcpvs": t["http-parser"]["corpus"]["ns_per_request"]
        / t["ktcpvs"]["corpus"]["ns_per_request"],
        "ns_picohttpparser_over_ktcpvs": t["picohttpparser"]["corpus"]["ns_per_request"]
        / t["ktcpvs"]["corpus"]["ns_per_request"],
    }
    if cg["ktcpvs"]["corpus_mean"] and cg["picohttpparser"]["corpus_mean"]:
        result["ratios"]["instr_picohttpparser_over_ktcpvs"] = (
            cg["picohttpparser"]["corpus_mean"] / cg["ktcpvs"]["corpus_mean"]
        )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"parser benchmark: {out_path}")
    for p in parsers:
        print(
            f"  {p:16} {t[p]['corpus']['ns_per_request']:8.1f} ns/req"
            f"  {t[p]['corpus']['bytes_per_second'] / 1e6:8.1f} MB/s"
            + "".join(
                f"  {s}={v:.0f}" for s, v in cg[p].items() if v is not None and s != "corpus_mean"
            )
            + " instr/req"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
