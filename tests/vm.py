#!/usr/bin/env python3
"""Boot Debian's kernel in QEMU with virtme-ng and run the kernel suite inside.

The guest sees the host's filesystem read-only (the project and its .venv
included) and writes its results to build/vm/, the one directory shared
read-write.  One boot runs the whole suite:

    tests/vm.py [--cpus N] [--memory SIZE] [-- PYTEST_ARGS...]
    tests/vm.py --script scripts/demo-guest.sh

Inside, tests/guest.sh loads build/ktcpvs.ko (or $KTCPVS_KO: a module built
elsewhere, e.g. in a git worktree, so that concurrent runs do not share one),
runs pytest (or the script), unloads the module and saves dmesg and the
taint flags.  Back on the host this runner fails unless pytest passed, the
module unloaded, the guest's dmesg shows no BUG, WARNING or oops, and the
kernel carries no taint but those of loading an unsigned out-of-tree module.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "build" / "vm"
OUT = DEFAULT_OUT
MODULE = Path(os.environ.get("KTCPVS_KO") or ROOT / "build" / "ktcpvs.ko").resolve()

# Taint bits a clean run may show: TAINT_OOT_MODULE (O) and
# TAINT_UNSIGNED_MODULE (E), both set by loading our module.
ALLOWED_TAINT = (1 << 12) | (1 << 13)
TAINT_NAMES = "PFSRMBUDAWCIOELKXT"

BAD_DMESG = re.compile(
    r"\b(BUG|WARNING|Oops|general protection fault|kernel BUG|UBSAN|"
    r"KASAN|RCU stall|INFO: task .* blocked|list_(add|del) corruption|"
    r"refcount_t|stack-protector|Call Trace)\b"
    r"|ktcpvs: \d+ allocations leaked"
)


def kernel_version() -> str:
    kver = os.environ.get("KVER") or subprocess.run(
        [str(ROOT / "scripts" / "kver.sh")], capture_output=True, text=True, check=True
    ).stdout.strip()
    if kver in ("", "none"):
        sys.exit("vm: no Debian kernel with headers installed: run make setup")
    return kver


def check_module(kver: str) -> None:
    if not MODULE.exists():
        sys.exit(f"vm: {MODULE} missing: run make module")
    vermagic = subprocess.run(
        ["modinfo", "-F", "vermagic", str(MODULE)], capture_output=True, text=True
    ).stdout.split()
    if not vermagic or vermagic[0] != kver:
        sys.exit(f"vm: {MODULE} was built for {vermagic[:1]}, the guest runs {kver}")


def taint_flags(value: int) -> str:
    return "".join(c for i, c in enumerate(TAINT_NAMES) if value & (1 << i)) or "none"


def check_results(expect_pytest: bool) -> list[str]:
    """Read what the guest left in build/vm and list every failure."""
    problems: list[str] = []

    def read(name: str) -> str | None:
        p = OUT / name
        return p.read_text(errors="replace").strip() if p.exists() else None

    if read("done") is None:
        return ["the guest did not finish (crash, hang or boot failure): see build/vm/console.log"]
    if read("insmod.rc") != "0":
        problems.append("loading ktcpvs.ko failed (build/vm/dmesg.txt)")
    rc = read("run.rc")
    if rc != "0":
        what = "pytest" if expect_pytest else "the guest script"
        problems.append(f"{what} exited {rc}")
    if read("rmmod.rc") != "0":
        problems.append("ktcpvs did not unload (rmmod failed)")
    dmesg = read("dmesg.txt") or ""
    bad = [line for line in dmesg.splitlines() if BAD_DMESG.search(line)]
    if bad:
        problems.append("guest dmesg shows:\n    " + "\n    ".join(bad[:40]))
    tainted = int(read("tainted") or "0")
    if tainted & ~ALLOWED_TAINT:
        problems.append(f"kernel tainted: {tainted} ({taint_flags(tainted)})")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpus", type=int, default=int(os.environ.get("VM_CPUS", "2")))
    ap.add_argument("--memory", default=os.environ.get("VM_MEM", "2G"))
    ap.add_argument("--script", help="run this guest script instead of pytest")
    ap.add_argument("--timeout", type=int, default=2400, help="seconds for the whole VM run")
    ap.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="results directory, shared read-write with the guest (default build/vm); "
        "give each concurrent run its own",
    )
    ap.add_argument("pytest_args", nargs="*", help="arguments for pytest inside the guest")
    args = ap.parse_args()

    global OUT
    OUT = args.out.resolve()
    if not OUT.is_relative_to(ROOT):
        sys.exit("vm: --out must be inside the project (the guest sees it at the same path)")
    kver = kernel_version()
    kernel = Path(f"/boot/vmlinuz-{kver}")
    if not os.access(kernel, os.R_OK):
        sys.exit(f"vm: cannot read {kernel}: run make setup")
    check_module(kver)
    vng = shutil.which("vng", path=f"{ROOT / '.venv' / 'bin'}:{os.environ.get('PATH', '')}")
    if not vng:
        sys.exit("vm: vng (virtme-ng) not found: run make setup")

    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)

    guest_cmd = [f"KTCPVS_KO={MODULE}", "tests/guest.sh", "--out", str(OUT.relative_to(ROOT))]
    if args.script:
        guest_cmd += ["--script", args.script]
    else:
        guest_cmd += ["--", *(args.pytest_args or ["tests/kernel"])]
    cmd = [
        vng, "--run", str(kernel), "--cpus", str(args.cpus), "--memory", args.memory,
        "--rwdir", str(OUT), "--exec", " ".join(guest_cmd),
    ]  # fmt: skip
    if os.environ.get("KTCPVS_VM_KVM") != "1":
        cmd.insert(1, "--disable-kvm")  # software emulation: no usable KVM here
    env = dict(os.environ)
    env["PATH"] = f"{ROOT / '.venv' / 'bin'}:{env.get('PATH', '')}"
    print(f"vm: booting {kernel} ({args.cpus} CPUs, {args.memory}) ...", flush=True)
    with open(OUT / "console.log", "wb") as log:
        try:
            proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            assert proc.stdout is not None
            for chunk in iter(lambda: proc.stdout.read1(4096), b""):  # type: ignore[union-attr,attr-defined]
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
                log.write(chunk)
            proc.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            print(f"vm: timed out after {args.timeout}s", file=sys.stderr)
            return 1

    problems = check_results(expect_pytest=not args.script)
    if problems:
        for p in problems:
            print(f"vm: FAIL: {p}", file=sys.stderr)
        return 1
    print("vm: guest run clean (module loaded and unloaded, dmesg clean, taint O+E only)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
