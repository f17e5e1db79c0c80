#!/usr/bin/env python3
"""Boot a Debian kernel in QEMU with virtme-ng and run the kernel suite inside.

The guest sees the host's filesystem read-only (the project and its .venv
included) and writes its results to the --out directory (build/vm/KVER/ by
default), the one directory shared read-write.  One boot runs the whole suite:

    tests/vm.py --kernel 6.1 [--cpus N] [--memory SIZE] [-- PYTEST_ARGS...]
    tests/vm.py --kernel 6.12 --script scripts/demo-guest.sh

The kernel is always named: --kernel (or $KVER), a series of scripts/kver.sh
(6.1, 6.12) or a full version; there is no default.  Inside, tests/guest.sh
loads build/KVER/ktcpvs.ko (or $KTCPVS_KO: a module built elsewhere, e.g. in
a git worktree, so that concurrent runs do not share one), runs pytest (or
the script), unloads the module and saves dmesg, the taint flags and what
memory debugging the guest runs with.

The guest boots with the kernel's memory debugging (slub_debug=FZP,
page_poison=1, KFENCE where the kernel has it; --no-memdebug or
VM_MEMDEBUG=0 turns it off, to measure what it costs).  Back on the host
this runner fails unless pytest passed, the module unloaded, memory
debugging was live as asked, the guest's dmesg holds no kernel report (BUG,
WARNING, oops, SLUB, page poisoning, KFENCE, list corruption, lockups, RCU
stalls, hung tasks, ...; kernel_reports() below), and the kernel carries no
taint but those of loading an unsigned out-of-tree module.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import json
import os
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Taint bits a clean run may show: TAINT_OOT_MODULE (O) and
# TAINT_UNSIGNED_MODULE (E), both set by loading our module.
ALLOWED_TAINT = (1 << 12) | (1 << 13)
TAINT_NAMES = "PFSRMBUDAWCIOELKXT"

# KFENCE samples one allocation every this many milliseconds (the kernel's
# default, CONFIG_KFENCE_SAMPLE_INTERVAL, is 0 = off in Debian's 6.12).
KFENCE_INTERVAL_MS = 10
SLUB_DEBUG = "slub_debug=FZP"
PAGE_POISON = "page_poison=1"
# SLUB debug flags as /sys/kernel/slab/CACHE/ shows them: F, Z, P, U.
SLAB_FLAGS = ("sanity_checks", "red_zone", "poison")

# What the kernel prints when something went wrong, each with the source
# that prints it (read in Debian's 6.1 and 6.12 trees).  One line is
# enough: the runner lists the lines it found.
REPORTS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(rx))
    for name, rx in (
        # mm/kfence/report.c: "BUG: KFENCE: out-of-bounds read in f+0x1/0x2"
        ("KFENCE", r"\bBUG: KFENCE: "),
        # mm/slub.c slab_bug(): "BUG kmalloc-64 (Tainted: G  O): Poison overwritten",
        # "Redzone overwritten", "Object padding overwritten", "Freechain corrupt",
        # "Freepointer corrupt", "Object already free", ...; then slab_fix(): "FIX ...".
        ("SLUB", r"\bBUG \S+ \((Not tainted|Tainted: [^)]*)\): |\bFIX \S+: "),
        # mm/slab_common.c kmem_cache_destroy(): a cache destroyed with objects.
        ("SLUB", r"Slab cache still has objects|Objects remaining (in \S+ )?on __kmem_cache_sh"),
        # mm/page_poison.c check_poison_mem().
        ("page poisoning", r"pagealloc: (memory corruption|single bit error|corrupted page)"),
        # lib/list_debug.c (CONFIG_DEBUG_LIST, CONFIG_LIST_HARDENED).
        ("list corruption", r"list_(add|del) corruption|list_add double add"),
        # kernel/watchdog.c, kernel/watchdog_hld.c.
        ("soft lockup", r"BUG: soft lockup - CPU#"),
        ("hard lockup", r"Watchdog detected hard LOCKUP"),
        # kernel/rcu/tree_stall.h, tree_exp.h, tasks.h.
        ("RCU stall", r"INFO: \S+ (self-detected stall|detected (expedited )?stalls)|RCU stall"),
        # kernel/hung_task.c.
        ("hung task", r"INFO: task \S+ blocked for more than \d+ seconds"),
        # kernel/workqueue.c.
        ("workqueue lockup", r"BUG: workqueue lockup"),
        # arch/x86/mm/fault.c, arch/x86/kernel/traps.c, dumpstack.c, kernel/panic.c.
        ("oops", r"\bBUG: (kernel NULL pointer dereference|unable to handle)|\bOops\b"),
        ("oops", r"general protection fault|kernel BUG at|Kernel panic - not syncing"),
        ("WARNING", r"\bWARNING\b"),
        ("BUG", r"\bBUG\b"),
        # lib/ubsan.c, mm/kasan/report.c, lib/refcount.c, kernel/panic.c.
        ("UBSAN", r"\bUBSAN\b"),
        ("KASAN", r"\bKASAN\b"),
        ("refcount", r"refcount_t: "),
        ("stack-protector", r"stack-protector"),
        ("call trace", r"\bCall Trace\b"),
        # The module counts its allocations and logs any left at unload.
        ("ktcpvs leak", r"ktcpvs: \d+ allocations leaked"),
    )
)


# A user-space process's fault, which the kernel reports and survives
# (arch/x86/kernel/traps.c, arch/x86/mm/fault.c show_signal_msg): not a
# kernel problem, though it names one of the same faults.
USER_FAULT = re.compile(r"\btraps: \S+\[\d+\] |\S+\[\d+\]: segfault at ")


def kernel_reports(dmesg: str) -> list[tuple[str, str]]:
    """Every line of dmesg that reports a kernel problem, with its kind."""
    found: list[tuple[str, str]] = []
    for line in dmesg.splitlines():
        if USER_FAULT.search(line):
            continue
        for name, rx in REPORTS:
            if rx.search(line):
                found.append((name, line.strip()))
                break
    return found


# The kernel's console goes to console.log from this level up (the
# loglevel= parameter: 5 shows KERN_WARNING and more urgent, and the
# KERN_DEFAULT of oops headers and call traces): a report that kills the
# guest before the guest script can save dmesg is still on the host.
CONSOLE_LOGLEVEL = 5
# What a crash report leaves in the summary: where it starts, at most so many lines.
EXCERPT_LINES = 16
# Without a kernel report: the console's last lines (QEMU's own error, say).
TAIL_LINES = 6
KERNEL_LINE = re.compile(r"^\[\s*\d+\.\d+\] ")


def crash_excerpt(console: str) -> str:
    """The kernel console's first report in console, else the console's last
    lines, as indented lines to append (or "" for an empty console)."""
    lines = [ln.rstrip() for ln in console.splitlines() if KERNEL_LINE.match(ln)]
    for i, line in enumerate(lines):
        if kernel_reports(line):
            return "".join("\n    " + ln for ln in lines[i : i + EXCERPT_LINES])
    tail = [ln.rstrip() for ln in console.splitlines() if ln.strip()][-TAIL_LINES:]
    return (
        "\n    no kernel report; the console's last lines:" + "".join("\n    " + ln for ln in tail)
        if tail
        else ""
    )


def timed_out(out: Path, timeout: int) -> str:
    """The problem of a guest killed at its timeout, with what its console said."""
    console = out / "console.log"
    said = console.read_text(errors="replace") if console.exists() else ""
    return (
        f"the guest did not finish: killed after {timeout} s (--timeout): "
        f"see {console}" + crash_excerpt(said)
    )


@dataclass(frozen=True)
class MemDebug:
    """The memory debugging a boot asks for."""

    enabled: bool
    kfence_ms: int | None  # None: the kernel has no KFENCE

    def cmdline(self) -> list[str]:
        if not self.enabled:
            return []
        opts = [SLUB_DEBUG, PAGE_POISON]
        if self.kfence_ms is not None:
            opts.append(f"kfence.sample_interval={self.kfence_ms}")
        return opts


def kernel_config(kver: str) -> dict[str, str]:
    """/boot/config-KVER as a dict (CONFIG_FOO -> y/m/value)."""
    cfg: dict[str, str] = {}
    path = Path(f"/boot/config-{kver}")
    if path.exists():
        for line in path.read_text().splitlines():
            if line.startswith("CONFIG_") and "=" in line:
                k, v = line.split("=", 1)
                cfg[k] = v
    return cfg


def memdebug_for(kver: str, enabled: bool) -> MemDebug:
    has_kfence = kernel_config(kver).get("CONFIG_KFENCE") == "y"
    return MemDebug(enabled, KFENCE_INTERVAL_MS if has_kfence else None)


def memdebug_problems(want: MemDebug, seen: dict[str, str]) -> list[str]:
    """Compare what the guest saw (tests/guest.sh's memdebug.txt) with what was asked."""
    if not want.enabled:
        return []
    problems = []
    cmdline = seen.get("cmdline", "").split()
    for opt in want.cmdline():
        if opt not in cmdline:
            problems.append(f"{opt} missing from the guest's /proc/cmdline")
    for flag in SLAB_FLAGS:
        if seen.get(f"kmalloc-64/{flag}") != "1":
            value = seen.get(f"kmalloc-64/{flag}")
            problems.append(f"SLUB debugging not live: kmalloc-64/{flag} = {value}")
    if want.kfence_ms is not None and seen.get("kfence/sample_interval") != str(want.kfence_ms):
        problems.append(
            f"KFENCE not live: sample_interval = {seen.get('kfence/sample_interval')}, "
            f"asked {want.kfence_ms}"
        )
    return problems


def parse_memdebug(text: str) -> dict[str, str]:
    seen = {}
    for line in text.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            seen[k.strip()] = v.strip()
    return seen


@dataclass(frozen=True)
class Counts:
    passed: int
    failed: int
    skipped: int
    seconds: float
    failures: list[str]  # "file::test: first line of the message"


def junit_counts(path: Path) -> Counts | None:
    """Tests passed, failed (failures + errors) and skipped in a pytest JUnit XML."""
    if not path.exists():
        return None
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    tests = failed = skipped = 0
    seconds = 0.0
    failures = []
    for s in suites:
        tests += int(s.get("tests", 0))
        failed += int(s.get("failures", 0)) + int(s.get("errors", 0))
        skipped += int(s.get("skipped", 0))
        seconds += float(s.get("time", 0))
        for case in s.iter("testcase"):
            for bad in (*case.findall("failure"), *case.findall("error")):
                name = f"{case.get('classname', '')}::{case.get('name', '')}"
                msg = (bad.get("message") or "").strip().splitlines()
                failures.append(f"{name}: {msg[0][:200] if msg else bad.tag}")
    return Counts(tests - failed - skipped, failed, skipped, seconds, failures)


def resolve_kernel(name: str) -> str:
    """A series (6.1) or full version -> the full version, by scripts/kver.sh."""
    r = subprocess.run(
        [str(ROOT / "scripts" / "kver.sh"), name], capture_output=True, text=True, check=False
    )
    if r.returncode != 0 or not r.stdout.strip():
        sys.exit(r.stderr.strip() or f"vm: unknown kernel {name}")
    return r.stdout.strip()


def check_module(module: Path, kver: str) -> None:
    if not module.exists():
        sys.exit(f"vm: {module} missing: run make module KVER={kver}")
    vermagic = subprocess.run(
        ["modinfo", "-F", "vermagic", str(module)], capture_output=True, text=True, check=False
    ).stdout.split()
    if not vermagic or vermagic[0] != kver:
        sys.exit(f"vm: {module} was built for {vermagic[:1]}, the guest runs {kver}")


def taint_flags(value: int) -> str:
    return "".join(c for i, c in enumerate(TAINT_NAMES) if value & (1 << i)) or "none"


def check_results(out: Path, expect_pytest: bool, memdebug: MemDebug) -> list[str]:
    """Read what the guest left in OUT and list every failure."""
    problems: list[str] = []

    def read(name: str) -> str | None:
        p = out / name
        return p.read_text(errors="replace").strip() if p.exists() else None

    if read("done") is None:
        # The kernel's console is in console.log (crash_excerpt): what a
        # panic printed before QEMU went away goes into the report.
        return [
            "the guest did not finish (crash, hang or boot failure): "
            f"see {out}/console.log" + crash_excerpt(read("console.log") or "")
        ]
    if read("insmod.rc") != "0":
        problems.append(f"loading ktcpvs.ko failed ({out}/dmesg.txt)")
    if read("module.check") not in (None, "ok"):
        problems.append(f"the module loaded is not the one asked for: {read('module.check')}")
    rc = read("run.rc")
    if rc != "0":
        what = "pytest" if expect_pytest else "the guest script"
        problems.append(f"{what} exited {rc}")
    if read("rmmod.rc") != "0":
        problems.append("ktcpvs did not unload (rmmod failed)")
    problems += memdebug_problems(memdebug, parse_memdebug(read("memdebug.txt") or ""))
    reports = kernel_reports(read("dmesg.txt") or "")
    if reports:
        lines = [f"[{name}] {line}" for name, line in reports[:40]]
        problems.append("guest dmesg shows:\n    " + "\n    ".join(lines))
    tainted = int(read("tainted") or "0")
    if tainted & ~ALLOWED_TAINT:
        problems.append(f"kernel tainted: {tainted} ({taint_flags(tainted)})")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--kernel",
        default=os.environ.get("KVER"),
        help="the guest's kernel: a series (6.1, 6.12) or a full version; default $KVER",
    )
    ap.add_argument("--cpus", type=int, default=int(os.environ.get("VM_CPUS", "2")))
    ap.add_argument("--memory", default=os.environ.get("VM_MEM", "2G"))
    ap.add_argument("--script", help="run this guest script instead of pytest")
    ap.add_argument(
        "--timeout",
        type=int,
        default=int(os.environ.get("VM_TIMEOUT", "4200")),
        help="seconds for the whole VM run (VM_TIMEOUT)",
    )
    ap.add_argument(
        "--no-memdebug",
        action="store_true",
        default=os.environ.get("VM_MEMDEBUG") == "0",
        help="boot without memory debugging (VM_MEMDEBUG=0)",
    )
    ap.add_argument(
        "--out",
        type=Path,
        help="results directory, shared read-write with the guest (default build/vm/KVER); "
        "give each concurrent run its own",
    )
    ap.add_argument("pytest_args", nargs="*", help="arguments for pytest inside the guest")
    args = ap.parse_args()

    if not args.kernel:
        sys.exit("vm: name the kernel: --kernel 6.1 (or 6.12, or a full version; or KVER=...)")
    kver = resolve_kernel(args.kernel)
    out = (args.out or ROOT / "build" / "vm" / kver).resolve()
    if not out.is_relative_to(ROOT):
        sys.exit("vm: --out must be inside the project (the guest sees it at the same path)")
    kernel = Path(f"/boot/vmlinuz-{kver}")
    if not os.access(kernel, os.R_OK):
        sys.exit(f"vm: cannot read {kernel}: run make setup")
    module = Path(os.environ.get("KTCPVS_KO") or ROOT / "build" / kver / "ktcpvs.ko").resolve()
    check_module(module, kver)
    # The guest reads the project over 9p and may not write to it: every
    # Python process there (the tests start hundreds: l7ctl, servers,
    # clients) would compile the project's modules anew.  Compiled here once,
    # they are read like the packages' own.
    for tree in ("l7ctl", "tests"):
        compileall.compile_dir(ROOT / tree, quiet=1)
    vng = shutil.which("vng", path=f"{ROOT / '.venv' / 'bin'}:{os.environ.get('PATH', '')}")
    if not vng:
        sys.exit("vm: vng (virtme-ng) not found: run make setup")
    memdebug = memdebug_for(kver, enabled=not args.no_memdebug)

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    guest_env = [f"KTCPVS_KO={module}"]
    # Python for the guest in one file (tests/stage.sh); KTCPVS_GUEST_STAGE=0
    # leaves the guest to read it file by file over 9p.
    stage_tar = out / "stage.tar"
    if os.environ.get("KTCPVS_GUEST_STAGE", "1") != "0":
        subprocess.run([ROOT / "tests" / "stage.sh", "pack", stage_tar], check=True)
        guest_env.append(f"KTCPVS_STAGE_TAR={stage_tar}")
    # KTCPVS_INSTALL_TEST=1: this host holds a test installation (make test),
    # which tests/kernel/test_install.py must then find.
    if os.environ.get("KTCPVS_INSTALL_TEST") == "1":
        guest_env.append("KTCPVS_INSTALL_TEST=1")
    guest_cmd = [*guest_env, "tests/guest.sh", "--out", str(out.relative_to(ROOT))]
    if args.script:
        guest_cmd += ["--script", args.script]
    else:
        guest_cmd += ["--", *(args.pytest_args or ["tests/kernel"])]
    cmd = [
        vng, "--run", str(kernel), "--cpus", str(args.cpus), "--memory", args.memory,
        "--rwdir", str(out), "--exec", shlex.join(guest_cmd),
    ]  # fmt: skip
    for opt in memdebug.cmdline():
        cmd += ["--append", opt]
    # The kernel's console to console.log (vng -v: the boot console on
    # stderr), warnings and more urgent only (the last loglevel= wins).
    cmd += ["-v", "--append", f"loglevel={CONSOLE_LOGLEVEL}"]
    # QEMU's monitor, to look into a guest that stops making progress from
    # the host (tests/vm_monitor.py OUT 'info registers -a').
    cmd.append(f"--qemu-opts=-monitor unix:{out / 'monitor.sock'},server=on,wait=off")
    if os.environ.get("KTCPVS_VM_KVM") != "1":
        cmd.insert(1, "--disable-kvm")  # software emulation: no usable KVM here
    env = dict(os.environ)
    env["PATH"] = f"{ROOT / '.venv' / 'bin'}:{env.get('PATH', '')}"
    debug = " ".join(memdebug.cmdline()) or "no memory debugging"
    print(
        f"vm: kernel {kver}: booting {kernel} ({args.cpus} CPUs, {args.memory}; {debug}), "
        f"module {module}, results in {out} ...",
        flush=True,
    )
    started = time.monotonic()
    # CPU time of the guest (QEMU and its helpers): unlike the duration, it
    # hardly changes when other guests share the host's CPUs.
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_before = ru.ru_utime + ru.ru_stime
    with open(out / "console.log", "wb") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        # The bound holds even while the console is silent (a hung guest):
        # a timer kills QEMU and vng, which ends the read below.
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(args.timeout, expire)
        timer.daemon = True
        timer.start()
        try:
            assert proc.stdout is not None
            for chunk in iter(lambda: proc.stdout.read1(4096), b""):  # type: ignore[union-attr,attr-defined]
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
                log.write(chunk)
            proc.wait()
        finally:
            timer.cancel()
            stage_tar.unlink(missing_ok=True)
    seconds = time.monotonic() - started
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_seconds = ru.ru_utime + ru.ru_stime - cpu_before

    if expired.is_set():
        problems = [timed_out(out, args.timeout)]
    else:
        problems = check_results(out, expect_pytest=not args.script, memdebug=memdebug)
    counts = None if args.script else junit_counts(out / "junit.xml")
    summary = {
        "kernel": kver,
        "memdebug": memdebug.cmdline(),
        "seconds": round(seconds),
        "cpu_seconds": round(cpu_seconds),
        "ok": not problems,
        "problems": problems,
        **(
            {
                "passed": counts.passed,
                "failed": counts.failed,
                "skipped": counts.skipped,
                "failures": counts.failures,
            }
            if counts
            else {}
        ),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    for p in problems:
        print(f"vm: kernel {kver}: FAIL: {p}", file=sys.stderr)
    tests = (
        f"{counts.passed} passed, {counts.failed} failed, {counts.skipped} skipped"
        if counts
        else "no test results"
    )
    verdict = (
        "FAILED" if problems else "clean (module loaded and unloaded, dmesg clean, taint O+E only)"
    )
    print(
        f"vm: kernel {kver}: {tests}; {seconds:.0f} s ({cpu_seconds:.0f} s CPU); {verdict}",
        flush=True,
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
