"""Event counts of the macro benchmark: what perf stat counts, and how.

Under TCG perf cannot sample, but it counts: software events, tracepoints
and kprobes are counted exactly, whatever the emulation does to time.  The
guest (bench/macro/guest.py) runs one counted wrk run per system and
workload as

    perf stat -a -x, -o FILE EVENTS... -- wrk ...

so the counters cover the whole guest (every CPU, every process, softirqs
and work items alike) from wrk's start to its end; report.py divides them by
the requests wrk completed.  The host imports this module for the names and
descriptions only.

Socket calls are counted with kprobes the guest defines in tracefs
(`ktb/...`): tcp_sendmsg and tcp_recvmsg are where every TCP send and
receive ends up, from a system call or from the module's kernel_sendmsg and
kernel_recvmsg; the module's zero-copy relay reads with tcp_read_sock and
sends with skb_send_sock_locked, which do not pass through those two.  A
return probe on tcp_recvmsg, filtered on -EAGAIN, counts the reads that
found nothing.  Page allocations are counted three times, filtered on their
order, and context switches once more per kind of task switched out
(sched_switch filtered on its name): whose sleeps they are -- the client's,
the backends', HAProxy's, Python's (the TLS daemon), kernel workers',
ksoftirqd's -- and how often an idle CPU took up a woken task.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

TRACEFS = Path("/sys/kernel/tracing")
GROUP = "ktb"


@dataclass(frozen=True)
class Event:
    key: str  # name in results.json
    perf: str  # perf's event name
    filter: str = ""  # a tracepoint filter (its own -e)
    kprobe: str = ""  # the kprobe_events definition, when the guest makes it


EVENTS: tuple[Event, ...] = (
    Event("context_switches", "context-switches"),
    # the same switches by the task switched out: whose sleeps they are
    Event("cs_wrk", "sched:sched_switch", filter='prev_comm == "wrk"'),
    Event("cs_nginx", "sched:sched_switch", filter='prev_comm == "nginx"'),
    Event("cs_haproxy", "sched:sched_switch", filter='prev_comm == "haproxy"'),
    Event("cs_python", "sched:sched_switch", filter='prev_comm ~ "python*"'),
    Event("cs_kworker", "sched:sched_switch", filter='prev_comm ~ "kworker*"'),
    Event("cs_ksoftirqd", "sched:sched_switch", filter='prev_comm ~ "ksoftirqd*"'),
    Event("cs_idle", "sched:sched_switch", filter='prev_comm ~ "swapper*"'),
    Event("wakeups", "sched:sched_wakeup"),
    Event("wakeups_new", "sched:sched_wakeup_new"),
    Event("work_queued", "workqueue:workqueue_queue_work"),
    Event("work_executed", "workqueue:workqueue_execute_start"),
    Event("softirqs", "irq:softirq_entry"),
    Event("tasklets", "irq:tasklet_entry"),
    Event("timers_started", "timer:timer_start"),
    Event("syscalls", "raw_syscalls:sys_enter"),
    Event("slab_kmalloc", "kmem:kmalloc"),
    Event("slab_cache", "kmem:kmem_cache_alloc"),
    Event("pages_order0", "kmem:mm_page_alloc", filter="order == 0"),
    Event("pages_order1", "kmem:mm_page_alloc", filter="order == 1"),
    Event("pages_order2plus", "kmem:mm_page_alloc", filter="order >= 2"),
    Event("dev_xmit", "net:net_dev_xmit"),
    Event("tcp_sendmsg", f"{GROUP}:tcp_sendmsg", kprobe="p:{g}/tcp_sendmsg tcp_sendmsg"),
    Event("tcp_recvmsg", f"{GROUP}:tcp_recvmsg", kprobe="p:{g}/tcp_recvmsg tcp_recvmsg"),
    Event(
        "tcp_recvmsg_eagain",
        f"{GROUP}:tcp_recvmsg_ret",
        filter="ret == -11",
        kprobe="r:{g}/tcp_recvmsg_ret tcp_recvmsg ret=$retval:s32",
    ),
    Event(
        "kernel_sendmsg", f"{GROUP}:kernel_sendmsg", kprobe="p:{g}/kernel_sendmsg kernel_sendmsg"
    ),
    Event(
        "kernel_recvmsg", f"{GROUP}:kernel_recvmsg", kprobe="p:{g}/kernel_recvmsg kernel_recvmsg"
    ),
    Event(
        "kernel_sendmsg_locked",
        f"{GROUP}:kernel_sendmsg_locked",
        kprobe="p:{g}/kernel_sendmsg_locked kernel_sendmsg_locked",
    ),
    Event("tcp_read_sock", f"{GROUP}:tcp_read_sock", kprobe="p:{g}/tcp_read_sock tcp_read_sock"),
    Event(
        "skb_send_sock",
        f"{GROUP}:skb_send_sock_locked",
        kprobe="p:{g}/skb_send_sock_locked skb_send_sock_locked",
    ),
)

# What report.py shows per request, in this order: (key, label, how it is
# made from the events, or from the guest's other measurements).
DERIVED: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("work_queued", "work items queued", ("work_queued",)),
    ("work_executed", "work items executed", ("work_executed",)),
    ("context_switches", "context switches", ("context_switches",)),
    ("cs_wrk", "  of them wrk's (the client)", ("cs_wrk",)),
    ("cs_nginx", "  of them nginx's (the backends; and nginx's own proxy)", ("cs_nginx",)),
    ("cs_haproxy", "  of them HAProxy's", ("cs_haproxy",)),
    ("cs_python", "  of them Python's (l7ctl tlsd; the bench's own helpers)", ("cs_python",)),
    ("cs_kworker", "  of them kernel workers' (work items)", ("cs_kworker",)),
    ("cs_ksoftirqd", "  of them ksoftirqd's (softirqs run in their thread)", ("cs_ksoftirqd",)),
    ("cs_idle", "  of them an idle CPU's (to a task that was woken)", ("cs_idle",)),
    ("wakeups", "wakeups", ("wakeups", "wakeups_new")),
    ("softirqs", "softirqs run", ("softirqs",)),
    ("tasklets", "  of them tasklets (the module's softirq run, TCP's)", ("tasklets",)),
    ("timers_started", "timers (re)armed", ("timers_started",)),
    ("syscalls", "system calls", ("syscalls",)),
    ("socket_calls", "TCP send/receive calls",
     ("tcp_sendmsg", "tcp_recvmsg", "tcp_read_sock", "skb_send_sock", "kernel_sendmsg_locked")),
    ("tcp_recvmsg_eagain", "  of them reads that found nothing (-EAGAIN)", ("tcp_recvmsg_eagain",)),
    ("module_socket_calls", "  of them the module's (kernel_sendmsg/recvmsg, zero-copy, softirq)",
     ("kernel_sendmsg", "kernel_recvmsg", "tcp_read_sock", "skb_send_sock",
      "kernel_sendmsg_locked")),
    ("page_allocs", "page allocations", ("pages_order0", "pages_order1", "pages_order2plus")),
    ("pages_order1plus", "  of them order >= 1", ("pages_order1", "pages_order2plus")),
    ("slab_allocs", "slab allocations", ("slab_kmalloc", "slab_cache")),
    ("dev_xmit", "packets transmitted (every veth hop)", ("dev_xmit",)),
    ("segs_director", "TCP segments sent by the director", ("snmp:director:OutSegs",)),
    ("segs_all", "TCP segments sent, all hosts", ("snmp:all:OutSegs",)),
)  # fmt: skip


def mount_tracefs() -> str:
    """tracefs at TRACEFS, mounted if it is not; a problem, or ""."""
    if not (TRACEFS / "events").is_dir():
        rc = os.system(f"mount -t tracefs nodev {TRACEFS} 2>/dev/null")
        if rc or not (TRACEFS / "events").is_dir():
            return f"tracefs not available at {TRACEFS}"
    return ""


def setup() -> list[str]:
    """Mount tracefs if needed and define the kprobes; returns problems (an
    event that cannot be counted is left out, never fatal)."""
    problems: list[str] = []
    problem = mount_tracefs()
    if problem:
        return [f"{problem}: no tracepoints or kprobes"]
    teardown()
    for e in EVENTS:
        if not e.kprobe:
            continue
        try:
            _kprobe_write(e.kprobe.format(g=GROUP))
        except OSError as err:
            problems.append(f"kprobe {e.key}: {err}")
    return problems


def _kprobe_write(line: str) -> None:
    # One write(2) per definition, with O_APPEND: Python's "a" mode would
    # seek to the end first, which tracefs refuses (EINVAL).
    fd = os.open(TRACEFS / "kprobe_events", os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def teardown() -> None:
    """Remove the kprobes setup() defined (they cost nothing while unused)."""
    for e in EVENTS:
        if e.kprobe:
            name = e.perf.split(":", 1)[1]
            with contextlib.suppress(OSError):
                _kprobe_write(f"-:{GROUP}/{name}")


def available() -> list[Event]:
    """The events this guest's kernel has."""
    out = []
    for e in EVENTS:
        if ":" not in e.perf:
            out.append(e)
            continue
        sysname, name = e.perf.split(":", 1)
        if (TRACEFS / "events" / sysname / name).is_dir():
            out.append(e)
    return out


def perf_argv(events: list[Event], out: Path) -> list[str]:
    """perf stat over the whole guest, counting only; a filtered event has an
    -e of its own (perf applies --filter to the last -e)."""
    argv = ["perf", "stat", "-a", "-x", ",", "-o", str(out)]
    plain = [e.perf for e in events if not e.filter]
    if plain:
        argv += ["-e", ",".join(plain)]
    for e in events:
        if e.filter:
            argv += ["-e", e.perf, "--filter", e.filter]
    return argv


def hold(events: list[Event]) -> subprocess.Popen[bytes]:
    """A perf stat over EVENTS for the whole counted phase, whose counts
    nobody reads: while it runs, every tracepoint's and software event's
    static key stays on and every kprobe stays armed, so the counted runs'
    own perf stat instances only take references and the kernel patches
    its text once at the phase's start and once at its end, not at each
    run's start and end.  Why: under the emulator (QEMU 7.2 TCG, two vCPUs)
    a vCPU went on executing the int3 of such a patch after the text was
    restored, and looped in the kernel's int3 handler with interrupts off
    (docs/performance.md, the stall).  release() ends it."""
    return subprocess.Popen(
        [*perf_argv(events, Path("/dev/null")), "--", "sleep", "infinity"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def release(holder: subprocess.Popen[bytes]) -> None:
    """End hold()'s perf stat (its process group)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(holder.pid, sig)
        try:
            holder.wait(timeout=30)
            return
        except subprocess.TimeoutExpired:
            continue


def parse(events: list[Event], text: str) -> dict[str, int]:
    """perf stat -x, output: one line per event, in the order perf_argv gave
    them; a count perf could not take is left out."""
    order = [e for e in events if not e.filter] + [e for e in events if e.filter]
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#") and "," in ln]
    out: dict[str, int] = {}
    for e, line in zip(order, lines, strict=False):
        f = line.split(",")
        if len(f) < 3 or f[2] != e.perf:
            continue
        with contextlib.suppress(ValueError):
            out[e.key] = int(float(f[0]))
    return out


def derive(raw: dict[str, float]) -> dict[str, float]:
    """DERIVED from raw counts (keys missing from raw make the figure missing)."""
    out: dict[str, float] = {}
    for key, _label, parts in DERIVED:
        if all(p in raw for p in parts):
            out[key] = sum(raw[p] for p in parts)
    return out


# /proc/stat's cpu line: user nice system idle iowait irq softirq steal
# guest guest_nice (clock ticks).  Busy = all but idle and iowait (guest time
# is already in user).
CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def cpu_ticks(line: str) -> dict[str, int]:
    f = line.split()
    assert f[0] == "cpu", line
    return dict(zip(CPU_FIELDS, (int(x) for x in f[1:9]), strict=True))


def cpu_delta(before: str, after: str, hz: int) -> dict[str, float]:
    """Seconds of CPU time between two /proc/stat cpu lines, by kind; 'busy'
    is user + nice + system + irq + softirq + steal."""
    a, b = cpu_ticks(before), cpu_ticks(after)
    d = {k: (b[k] - a[k]) / hz for k in CPU_FIELDS}
    d["busy"] = d["user"] + d["nice"] + d["system"] + d["irq"] + d["softirq"] + d["steal"]
    return d
