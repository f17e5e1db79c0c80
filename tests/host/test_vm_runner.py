"""tests/vm.py's judgement of a guest run, without booting one.

The report lines are the kernel's own format strings (mm/slub.c,
mm/page_poison.c, mm/kfence/report.c, lib/list_debug.c, kernel/watchdog.c,
kernel/rcu/tree_stall.h, kernel/hung_task.c, arch/x86/mm/fault.c, ... of
Debian's 6.1 and 6.12 sources) with their arguments filled in as the
kernel prints them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import vm

ROOT = Path(__file__).resolve().parents[2]

REPORTS = [
    # mm/slub.c slab_bug() via check_bytes_and_report(), object_err(), slab_err()
    ("SLUB", "[   42.123456] BUG kmalloc-64 (Tainted: G    B   O  E     ): Poison overwritten"),
    ("SLUB", "BUG kmalloc-rnd-05-64 (Not tainted): Left Redzone overwritten"),
    ("SLUB", "BUG ktcpvs_buf (Tainted: G           OE     ): Right Redzone overwritten"),
    ("SLUB", "BUG kmalloc-128 (Tainted: G           OE     ): Object padding overwritten"),
    ("SLUB", "BUG kmalloc-64 (Tainted: G           OE     ): Freechain corrupt"),
    ("SLUB", "BUG kt_conn (Tainted: G           OE     ): Freepointer corrupt"),
    ("SLUB", "BUG kmalloc-256 (Tainted: G           OE     ): Object already free"),
    (
        "SLUB",
        "BUG kt_conn (Tainted: G    B      OE     ): Objects remaining on __kmem_cache_shutdown()",
    ),
    (
        "SLUB",
        "BUG kt_conn (Tainted: G    B      OE     ): Objects remaining in"
        " kt_conn on __kmem_cache_shutdown()",
    ),
    ("SLUB", "FIX kmalloc-64: Restoring Poison 0xffff8880041a2c40-0xffff8880041a2c47=0x6b"),
    ("SLUB", "FIX kmalloc-64: Isolate corrupted freechain"),
    # mm/slab_common.c kmem_cache_destroy()
    (
        "SLUB",
        "kmem_cache_destroy kt_conn: Slab cache still has objects when called"
        " from ktcpvs_exit+0x4c/0x90 [ktcpvs]",
    ),
    # mm/page_poison.c check_poison_mem()
    ("page poisoning", "[  311.000001] pagealloc: memory corruption"),
    ("page poisoning", "pagealloc: single bit error"),
    # mm/kfence/report.c kfence_report_error()
    ("KFENCE", "BUG: KFENCE: out-of-bounds read in kt_http_parse+0x1c4/0x9a0 [ktcpvs]"),
    ("KFENCE", "BUG: KFENCE: use-after-free write in kt_conn_work+0x2a/0x510 [ktcpvs]"),
    ("KFENCE", "BUG: KFENCE: memory corruption in kfree+0x7a/0x1a0"),
    ("KFENCE", "BUG: KFENCE: invalid read in kt_splice_up+0x33/0x120 [ktcpvs]"),
    ("KFENCE", "BUG: KFENCE: invalid free in kt_conn_free+0x51/0x80 [ktcpvs]"),
    # lib/list_debug.c
    (
        "list corruption",
        "list_add corruption. next->prev should be prev (ffff888004b1c8a8),"
        " but was ffff888004b1c000. (next=ffff888004b1c8a8).",
    ),
    (
        "list corruption",
        "list_del corruption, ffff888004b1c8a8->next is LIST_POISON1 (dead000000000100)",
    ),
    (
        "list corruption",
        "list_del corruption. prev->next should be ffff888004b1c8a8, but was"
        " ffff888004b1c000. (prev=ffff888004b1c8b0)",
    ),
    (
        "list corruption",
        "list_add double add: new=ffff888004b1c8a8, prev=ffff888004b1c8a8, next=ffff888004b1c000.",
    ),
    # kernel/watchdog.c, kernel/watchdog_hld.c, kernel/workqueue.c
    ("soft lockup", "watchdog: BUG: soft lockup - CPU#1 stuck for 26s! [kworker/1:2:187]"),
    ("hard lockup", "NMI watchdog: Watchdog detected hard LOCKUP on cpu 0"),
    (
        "workqueue lockup",
        "BUG: workqueue lockup - pool cpus=1 node=0 flags=0x0 nice=0 stuck for 33s!",
    ),
    # kernel/rcu/tree_stall.h, tree_exp.h, tasks.h
    ("RCU stall", "rcu: INFO: rcu_preempt self-detected stall on CPU"),
    ("RCU stall", "rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:"),
    ("RCU stall", "rcu: INFO: rcu_preempt detected expedited stalls on CPUs/tasks: {"),
    ("RCU stall", "INFO: rcu_tasks detected stalls on tasks:"),
    # kernel/hung_task.c
    ("hung task", "INFO: task kworker/0:1:42 blocked for more than 120 seconds."),
    # arch/x86/mm/fault.c, arch/x86/kernel/traps.c, dumpstack.c, kernel/panic.c
    ("oops", "BUG: kernel NULL pointer dereference, address: 0000000000000010"),
    ("oops", "BUG: unable to handle page fault for address: ffffffffc0a1b000"),
    ("oops", "Oops: 0000 [#1] PREEMPT SMP NOPTI"),
    (
        "oops",
        "general protection fault, probably for non-canonical address"
        " 0xdead000000000122: 0000 [#1] PREEMPT SMP NOPTI",
    ),
    ("oops", "kernel BUG at net/core/skbuff.c:4512!"),
    ("oops", "Kernel panic - not syncing: Fatal exception in interrupt"),
    # kernel/panic.c __warn(), lib/refcount.c
    ("WARNING", "WARNING: CPU: 1 PID: 213 at net/ipv4/tcp.c:2912 tcp_close+0x7c/0x90"),
    ("refcount", "refcount_t: underflow; use-after-free."),
    ("UBSAN", "UBSAN: array-index-out-of-bounds in /work/main/kmod/kt_sched.c:238:32"),
    ("call trace", " Call Trace:"),
    # the module's own leak count at unload
    ("ktcpvs leak", "ktcpvs: 3 allocations leaked"),
]

# Lines of a clean 6.12 boot with memory debugging, and of the module.
CLEAN = [
    "[    0.000000] Kernel command line: console=ttyS0 slub_debug=FZP"
    " page_poison=1 kfence.sample_interval=10",
    "[    0.061234] mem auto-init: stack:all(zero), heap alloc:off, heap free:off",
    "[    0.071234] kfence: initialized - using 2097152 bytes for 255"
    " objects at 0x(____ptrval____)-0x(____ptrval____)",
    "[    0.081234] SLUB: HWalign=64, Order=0-3, MinObjects=0, CPUs=2, Nodes=1",
    "[    2.345678] ktcpvs: version 0.2.0 loaded (netlink protocol 1)",
    "[    2.345679] ktcpvs: loading out-of-tree module taints kernel.",
    "[    9.876543] ktcpvs: unloaded",
    "[    1.000000] rcu: Hierarchical RCU implementation.",
    "[    1.000001] rcu: \tRCU restricting CPUs from NR_CPUS=8192 to nr_cpu_ids=2.",
    # a user-space process's fault, which the kernel only reports (show_signal)
    "[   12.345678] traps: modprobe[1234] general protection fault ip:7f5a1b2c3d4e"
    " sp:7ffd12345678 error:0 in libc.so.6[7f5a1b200000+155000]",
    "[   12.345679] python3[999]: segfault at 0 ip 00007f0000001234 sp 00007ffc00000000"
    " error 4 in libc.so.6[7f0000000000+155000] likely on CPU 1 (core 1, socket 0)",
]


@pytest.mark.parametrize(("kind", "line"), REPORTS)
def test_every_kernel_report_is_caught_with_its_kind(kind: str, line: str) -> None:
    assert vm.kernel_reports(line) == [(kind, line.strip())]


def test_clean_lines_are_not_reports() -> None:
    assert vm.kernel_reports("\n".join(CLEAN)) == []


def test_reports_are_found_among_clean_lines_in_order() -> None:
    dmesg = "\n".join([CLEAN[0], REPORTS[0][1], CLEAN[4], REPORTS[14][1], CLEAN[6]])
    assert [k for k, _ in vm.kernel_reports(dmesg)] == ["SLUB", "KFENCE"]


FULL = vm.MemDebug(enabled=True, kfence_ms=10)
SEEN_FULL = {
    "cmdline": "console=ttyS0 quiet slub_debug=FZP page_poison=1 kfence.sample_interval=10",
    "kmalloc-64/sanity_checks": "1",
    "kmalloc-64/red_zone": "1",
    "kmalloc-64/poison": "1",
    "kfence/sample_interval": "10",
}


def test_memdebug_live_as_asked_passes() -> None:
    assert vm.memdebug_problems(FULL, SEEN_FULL) == []


@pytest.mark.parametrize(
    ("key", "value", "complaint"),
    [
        ("kmalloc-64/poison", "0", "kmalloc-64/poison"),
        ("kmalloc-64/sanity_checks", "", "kmalloc-64/sanity_checks"),
        ("kfence/sample_interval", "0", "KFENCE not live"),
        ("cmdline", "console=ttyS0 slub_debug=FZP kfence.sample_interval=10", "page_poison=1"),
    ],
)
def test_memdebug_not_live_fails(key: str, value: str, complaint: str) -> None:
    problems = vm.memdebug_problems(FULL, {**SEEN_FULL, key: value})
    assert len(problems) == 1 and complaint in problems[0]


def test_memdebug_off_asks_nothing_and_checks_nothing() -> None:
    off = vm.MemDebug(enabled=False, kfence_ms=10)
    assert off.cmdline() == []
    assert vm.memdebug_problems(off, {}) == []


def test_kfence_only_where_the_kernel_has_it() -> None:
    for series in ("6.1", "6.12"):
        kver = subprocess.run(
            [str(ROOT / "scripts" / "kver.sh"), series], capture_output=True, text=True, check=True
        ).stdout.strip()
        has = vm.kernel_config(kver).get("CONFIG_KFENCE") == "y"
        opts = vm.memdebug_for(kver, enabled=True).cmdline()
        assert opts[:2] == ["slub_debug=FZP", "page_poison=1"]
        assert any(o.startswith("kfence.sample_interval=") for o in opts) == has
    # Debian's 6.1 is built without KFENCE, its 6.12 with it.
    assert vm.kernel_config(vm.resolve_kernel("6.12")).get("CONFIG_KFENCE") == "y"
    assert "CONFIG_KFENCE" not in vm.kernel_config(vm.resolve_kernel("6.1"))


def test_junit_counts(tmp_path: Path) -> None:
    xml = tmp_path / "junit.xml"
    xml.write_text(
        '<?xml version="1.0" encoding="utf-8"?><testsuites>'
        '<testsuite name="pytest" errors="1" failures="2" skipped="3" tests="20" time="12.5">'
        '<testcase classname="tests.kernel.test_a" name="test_one" time="1">'
        '<failure message="AssertionError: assert 1 == 2&#10;more">trace</failure></testcase>'
        '<testcase classname="tests.kernel.test_a" name="test_two" time="1">'
        '<failure message="">trace</failure></testcase>'
        '<testcase classname="tests.kernel.test_b" name="test_three" time="1">'
        '<error message="failed on setup with X">trace</error></testcase>'
        '<testcase classname="tests.kernel.test_b" name="test_ok" time="1"/>'
        "</testsuite></testsuites>"
    )
    c = vm.junit_counts(xml)
    assert c == vm.Counts(
        passed=14,
        failed=3,
        skipped=3,
        seconds=12.5,
        failures=[
            "tests.kernel.test_a::test_one: AssertionError: assert 1 == 2",
            "tests.kernel.test_a::test_two: failure",
            "tests.kernel.test_b::test_three: failed on setup with X",
        ],
    )
    assert vm.junit_counts(tmp_path / "missing.xml") is None


def test_check_results_fails_on_a_report_and_on_taint(tmp_path: Path) -> None:
    for name, text in {
        "done": "done",
        "insmod.rc": "0",
        "module.check": "ok",
        "run.rc": "0",
        "rmmod.rc": "0",
        "tainted": str(vm.ALLOWED_TAINT),
        "memdebug.txt": "\n".join(f"{k}={v}" for k, v in SEEN_FULL.items()),
        "dmesg.txt": "\n".join(CLEAN),
    }.items():
        (tmp_path / name).write_text(text)
    assert vm.check_results(tmp_path, expect_pytest=True, memdebug=FULL) == []

    (tmp_path / "dmesg.txt").write_text("\n".join([*CLEAN, REPORTS[12][1]]))
    (tmp_path / "tainted").write_text(str(vm.ALLOWED_TAINT | (1 << 5)))  # B: bad page
    problems = vm.check_results(tmp_path, expect_pytest=True, memdebug=FULL)
    assert len(problems) == 2
    assert "[page poisoning] " in problems[0] and "taint" in problems[1]

    (tmp_path / "done").unlink()
    assert "did not finish" in vm.check_results(tmp_path, expect_pytest=True, memdebug=FULL)[0]


PANIC = [
    "tests/kernel/test_live_fuzz.py ..",
    "[  861.100001] BUG: kernel NULL pointer dereference, address: 0000000000000008",
    "[  861.100002] #PF: supervisor read access in kernel mode",
    "[  861.100003] RIP: 0010:kt_bconn_pop+0x2a/0x120 [ktcpvs]",
    "[  861.100004] Call Trace:",
    "[  861.100005]  <IRQ>",
    "[  861.100006]  kt_backend_pick_from+0x8f/0x2a0 [ktcpvs]",
    "[  861.100007] Kernel panic - not syncing: Fatal exception in interrupt",
]


def test_a_guest_that_died_reports_what_its_console_said(tmp_path: Path) -> None:
    """The kernel's last words in console.log reach the report: the first report line on."""
    boot = [f"[    0.{i:06d}] clean boot line {i}" for i in range(30)]
    (tmp_path / "console.log").write_text("\n".join([*boot, "guest: pytest output", *PANIC]))
    (problem,) = vm.check_results(tmp_path, expect_pytest=True, memdebug=FULL)
    head, *excerpt = problem.splitlines()
    assert "did not finish" in head
    # From the first report, the kernel's lines only (not the tests' output), in order.
    assert [ln.strip() for ln in excerpt] == [ln for ln in PANIC if ln.startswith("[")]

    long_report = [f"[  861.2{i:05d}]  frame_{i}+0x1/0x2" for i in range(40)]
    (tmp_path / "console.log").write_text("\n".join([*PANIC[:2], *long_report]))
    (problem,) = vm.check_results(tmp_path, expect_pytest=True, memdebug=FULL)
    assert len(problem.splitlines()) == 1 + vm.EXCERPT_LINES

    # Without a kernel report (QEMU itself failed, say): the console's last lines.
    qemu = "qemu-system-x86_64: tcg fatal error"
    (tmp_path / "console.log").write_text("\n".join([*boot, "tests/x.py ...", qemu, ""]))
    (problem,) = vm.check_results(tmp_path, expect_pytest=True, memdebug=FULL)
    head, said, *tail = problem.splitlines()
    assert "no kernel report" in said
    assert [ln.strip() for ln in tail] == [*boot[-vm.TAIL_LINES + 2 :], "tests/x.py ...", qemu]

    # An empty console: console.log is named, nothing more.
    (tmp_path / "console.log").write_text("")
    (problem,) = vm.check_results(tmp_path, expect_pytest=True, memdebug=FULL)
    assert problem.endswith("console.log")


def test_a_guest_killed_at_its_timeout_reports_what_its_console_said(tmp_path: Path) -> None:
    """A hung guest's soft lockup or RCU stall report reaches the summary too."""
    (tmp_path / "console.log").write_text("\n".join(["guest: pytest output", *PANIC]))
    head, *excerpt = vm.timed_out(tmp_path, 4200).splitlines()
    assert head.startswith("the guest did not finish: killed after 4200 s")
    assert excerpt[0].strip() == PANIC[1]
    assert vm.timed_out(tmp_path / "missing", 60).endswith("console.log")


def test_stage_pack_holds_what_the_guest_imports_and_no_debugging_symbols(tmp_path: Path) -> None:
    """tests/stage.sh pack: one tar file with the trees the guest bind-mounts
    (listed in .srcs, each an existing path of this machine: the two
    Pythons' libraries, libpython, the virtual environment's packages), the
    packages the guest imports, none of those it never does, and libpython
    without its debugging symbols."""
    import tarfile

    tar = tmp_path / "stage.tar"
    subprocess.run([str(ROOT / "tests" / "stage.sh"), "pack", str(tar)], check=True)
    with tarfile.open(tar) as t:
        names = t.getnames()
        srcs_file = t.extractfile("./.srcs")
        assert srcs_file is not None
        srcs = srcs_file.read().decode().split()
        libpython = next(m for m in t.getmembers() if "/libpython3" in m.name)
        libpython_bytes = t.extractfile(libpython).read()  # type: ignore[union-attr]
    assert len(srcs) >= 4 and all(Path(s).exists() for s in srcs)
    assert any(s.startswith("/usr/lib/python3.") for s in srcs)  # Debian's
    assert any(s.endswith("site-packages") for s in srcs)
    packages = {n.split("site-packages/")[1].split("/")[0] for n in names if "site-packages/" in n}
    assert {"pyroute2", "lark", "hypothesis", "_pytest", "pluggy"} <= packages
    assert not packages & {"numpy", "mypy", "pip", "ruff", "matplotlib"}
    stdlib = f"/python{sys.version_info.major}.{sys.version_info.minor}/"
    assert any(stdlib + "json/" in n for n in names)
    assert not any(stdlib + "test/" in n or stdlib + "tkinter/" in n for n in names)
    (tmp_path / "libpython.so").write_bytes(libpython_bytes)
    sections = subprocess.run(
        ["readelf", "-S", str(tmp_path / "libpython.so")], capture_output=True, text=True
    ).stdout
    assert ".text" in sections and ".debug_info" not in sections
