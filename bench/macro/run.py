#!/usr/bin/env python3
"""Run the macro benchmark: boot one QEMU guest, run bench/macro/guest.py in it,
then merge everything into build/bench/results.json, print the table and
draw build/bench/chart.png (bench/macro/report.py).

    run.py [--quick] [--kernel 6.1] [--module build/KVER/ktcpvs.ko] [--memory 8G] [--cpus 2]
           [--systems floor,ktcpvs] [--workloads small_keepalive] [--reps N]
           [--no-throughput] [--no-memory] [--no-counts] [--report-only]

The guest boots --kernel (a series of scripts/kver.sh or a full version;
$KVER, else 6.1), without memory debugging, which would distort the figures.

BENCH_QUICK=1 in the environment is the same as --quick: one repetition,
2 s runs, 200 and 1,000 held connections.  --systems and --workloads run a
selection (for iterating; the report leaves out what was not run; direct and
HAProxy are needed for most ratios).  BENCH_SYSTEMS and BENCH_WORKLOADS in
the environment are the same.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

import report  # noqa: E402


class HostLoad:
    """How loaded the host was while the guest ran: its load average and the
    other QEMU guests running beside ours, sampled every 20 s.  Figures from
    a host shared with other guests are marked as such in the report."""

    def __init__(self) -> None:
        self.samples: list[dict[str, float]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    @staticmethod
    def sample() -> dict[str, float]:
        load = float(Path("/proc/loadavg").read_text().split()[0])
        guests = 0
        me = str(os.getpid())
        for p in Path("/proc").iterdir():
            if not p.name.isdigit():
                continue
            try:
                cmd = (p / "cmdline").read_bytes().split(b"\0")
                if not cmd[0].endswith(b"qemu-system-x86_64"):
                    continue
                # ours: a descendant of this process (vm.py -> vng -> qemu)
                ppid = p.name
                for _ in range(6):
                    ppid = (Path("/proc") / ppid / "stat").read_text().rsplit(")", 1)[1].split()[1]
                    if ppid in (me, "0", "1"):
                        break
                if ppid != me:
                    guests += 1
            except (OSError, IndexError):
                continue
        return {"t": time.time(), "load1": load, "other_guests": guests}

    def run(self) -> None:
        while True:
            self.samples.append(self.sample())
            if self.stop.wait(20):
                return

    def summary(self) -> dict[str, Any]:
        if not self.samples:
            return {}
        loads = [s["load1"] for s in self.samples]
        guests = [s["other_guests"] for s in self.samples]
        return {
            "samples": len(self.samples),
            "load1_mean": round(sum(loads) / len(loads), 2),
            "load1_max": max(loads),
            "other_guests_max": max(guests),
            "other_guests_share": round(sum(1 for g in guests if g) / len(guests), 2),
            "host_cpus": os.cpu_count(),
        }


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
    ap.add_argument("--no-counts", action="store_true", help="no counted runs (perf stat)")
    ap.add_argument("--no-throughput", action="store_true")
    ap.add_argument(
        "--systems",
        default=os.environ.get("BENCH_SYSTEMS", ""),
        help="comma-separated: direct,floor,ktcpvs,haproxy,nginx (default all)",
    )
    ap.add_argument(
        "--workloads",
        default=os.environ.get("BENCH_WORKLOADS", ""),
        help="comma-separated workload names (default all)",
    )
    ap.add_argument("--reps", type=int, default=0, help="repetitions (default 3; quick 1)")
    ap.add_argument(
        "--tlsd-events",
        action="store_true",
        help="count how the TLS daemons' connections ended (--events), in the report",
    )
    ap.add_argument(
        "--profile-tlsd",
        action="store_true",
        help="run the TLS daemons under cProfile (one worker each) and report where their "
        "time goes per connection (a diagnostic run: its HTTPS figures are not comparable)",
    )
    ap.add_argument(
        "--function-times",
        action="store_true",
        help="after the other phases, one run per workload and system under the function_graph "
        "tracer: time per request in the module's steps and the TCP calls (a diagnostic run)",
    )
    args = ap.parse_args()

    bench = ROOT / "build" / "bench"
    bench.mkdir(parents=True, exist_ok=True)
    rc = 0
    if not args.report_only:
        cfg: dict[str, Any] = {
            "out": args.out,
            "quick": args.quick,
            "memory": not args.no_memory,
            "counts": not args.no_counts,
            "throughput": not args.no_throughput,
            "systems": [x for x in args.systems.split(",") if x],
            "workloads": [x for x in args.workloads.split(",") if x],
        }
        if args.reps:
            cfg["reps"] = args.reps
        if args.profile_tlsd:
            cfg["profile_tlsd"] = True
        if args.tlsd_events:
            cfg["tlsd_events"] = True
        if args.function_times:
            cfg["function_times"] = True
        (bench / "macro-config.json").write_text(json.dumps(cfg))
        kver = subprocess.run(
            [str(ROOT / "scripts/kver.sh"), args.kernel], capture_output=True, text=True, check=True
        ).stdout.strip()
        module = Path(args.module or ROOT / "build" / kver / "ktcpvs.ko").resolve()
        print(f"bench: kernel {kver}, module {module}", flush=True)
        env = dict(os.environ, KTCPVS_KO=str(module))
        load = HostLoad()
        load.thread.start()
        # The guest's time bound: a whole run takes about 55 minutes on a host
        # of its own (2026-12-03: 9 workloads, 7 systems, held connections,
        # counts); a shared host stretches it past an hour.
        rc = subprocess.run(
            [sys.executable, str(ROOT / "tests/vm.py"), "--kernel", kver, "--no-memdebug",
             "--cpus", str(args.cpus), "--memory", args.memory, "--out", args.out,
             "--timeout", "7200", "--script", "bench/macro/guest.sh"],
            cwd=ROOT, env=env, check=False,
        ).returncode  # fmt: skip
        load.stop.set()
        load.thread.join()
        (bench / "host-load.json").write_text(json.dumps(load.summary()))
    macro = ROOT / args.out / "macro.json"
    if not macro.exists():
        print(f"bench: {macro} missing: the guest run failed", file=sys.stderr)
        return 1
    report.main(macro, ROOT / args.out, bench)
    return rc


if __name__ == "__main__":
    sys.exit(main())
