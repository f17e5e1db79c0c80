#!/usr/bin/env python3
"""Run the macro benchmark: boot one QEMU guest, run bench/macro/guest.py in it,
then merge everything into build/bench/results.json, print the table and
draw build/bench/chart.png (bench/macro/report.py).

    run.py [--quick] [--kernel 6.1] [--module build/KVER/ktcpvs.ko] [--memory 8G] [--cpus 2]

The guest boots --kernel (a series of scripts/kver.sh or a full version;
$KVER, else 6.1), without memory debugging, which would distort the figures.

BENCH_QUICK=1 in the environment is the same as --quick: one repetition,
2 s runs, 200 and 1,000 held connections, a short profile.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

import report  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", default=os.environ.get("BENCH_QUICK") == "1")
    ap.add_argument("--kernel", default=os.environ.get("KVER") or "6.1")
    ap.add_argument(
        "--module", default=os.environ.get("KTCPVS_KO"), help="default build/KVER/ktcpvs.ko"
    )
    ap.add_argument("--memory", default="8G")
    ap.add_argument("--cpus", type=int, default=int(os.environ.get("VM_CPUS", "2")))
    ap.add_argument("--out", default="build/vm-bench", help="the guest's output directory")
    ap.add_argument("--report-only", action="store_true", help="only merge, print and draw")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--no-throughput", action="store_true")
    args = ap.parse_args()

    bench = ROOT / "build" / "bench"
    bench.mkdir(parents=True, exist_ok=True)
    rc = 0
    if not args.report_only:
        cfg = {
            "out": args.out,
            "quick": args.quick,
            "memory": not args.no_memory,
            "profile": not args.no_profile,
            "throughput": not args.no_throughput,
        }
        (bench / "macro-config.json").write_text(json.dumps(cfg))
        kver = subprocess.run(
            [str(ROOT / "scripts/kver.sh"), args.kernel], capture_output=True, text=True, check=True
        ).stdout.strip()
        module = Path(args.module or ROOT / "build" / kver / "ktcpvs.ko").resolve()
        print(f"bench: kernel {kver}, module {module}", flush=True)
        env = dict(os.environ, KTCPVS_KO=str(module))
        rc = subprocess.run(
            [sys.executable, str(ROOT / "tests/vm.py"), "--kernel", kver, "--no-memdebug",
             "--cpus", str(args.cpus), "--memory", args.memory, "--out", args.out,
             "--timeout", "3600", "--script", "bench/macro/guest.sh"],
            cwd=ROOT, env=env, check=False,
        ).returncode  # fmt: skip
    macro = ROOT / args.out / "macro.json"
    if not macro.exists():
        print(f"bench: {macro} missing: the guest run failed", file=sys.stderr)
        return 1
    report.main(macro, ROOT / args.out, bench)
    return rc


if __name__ == "__main__":
    sys.exit(main())
