"""Time per function of the data path: what `run.py --function-times` adds.

The counts (counters.py) say how often things happen; under TCG no sampling
profiler says where the time goes (a system-wide perf record puts nearly
every sample on the idle task).  The function_graph tracer does not sample:
it stamps every entry and return of the functions it is given, so the time
each call took is measured, whatever the emulation does to sampling.  The
guest runs one traced wrk run per workload and system with the tracer on
FUNCTIONS only (the module's steps and the socket calls they make), and
report.py divides each function's time by the requests of that run.

Two figures per function: `total`, the time from its entry to its return
(its callees' included), and `self`, that less the time of the traced
functions it called (softirq work that interrupted it included: a
tasklet run inside a system call shows as the system call's callee).  A
process-context call that slept (lock_sock waiting for the socket) counts
its sleep.  The tracer's own cost is in every figure: each traced call adds
its entry and return stamps to its caller's self time, which is why the
list is short and the calls per request are reported beside the times.
"""

from __future__ import annotations

import contextlib
import re
from collections import defaultdict
from dataclasses import dataclass, field

from counters import TRACEFS, mount_tracefs

# The functions traced: the module's runs and steps, the work a request
# does in them, and the TCP calls both the module and user space end in.
# Any the running kernel or module does not offer (inlined, renamed) is
# left out and named in the results.
FUNCTIONS: tuple[str, ...] = (
    # the module: where its runs start
    "kt_sk_event",  # a socket callback: queue the connection's run
    "kt_conn_tasklet",  # the softirq run
    "kt_conn_work",  # the work item
    "kt_accept_work",
    # its steps, in the order of a request (the static helpers they call
    # are inlined: their time is their step's own)
    "kt_step_request",  # read, parse, route, edit and send the request head
    "kt_http_parse",
    "kt_match",  # the compiled rules
    "kt_schedule",  # the pool's scheduler
    "kt_head_insert",
    "kt_alog_begin",
    "kt_step_response",  # read and parse the response head, relay its body
    "kt_http_body_feed",
    "kt_dir_step",  # a direction's body relay
    "kt_dir_tunnel",  # a tunnel's relay (the floor's)
    "kt_alog_emit",
    "kt_conn_start_request",
    "kt_conn_end_request",
    # its socket calls
    "kt_recv",
    "kt_sendv",
    "kt_dir_send",
    "kt_pipe_fill",
    "kt_pipe_flush",
    # TCP, for every system
    "tcp_recvmsg",
    "tcp_sendmsg",
    "tcp_read_sock",
    "skb_send_sock_locked",
    "kernel_sendmsg_locked",
    "tcp_v4_rcv",
)

BUFFER_KB = 262144  # per CPU: a traced run of a few seconds fits without loss
_saved_buffer_kb = ""  # the buffer's size before setup(), given back by teardown()


def _write(name: str, value: str) -> None:
    (TRACEFS / name).write_text(value)


def setup(functions: tuple[str, ...] = FUNCTIONS) -> tuple[list[str], list[str]]:
    """The function_graph tracer on @functions, stopped; returns (traced,
    problems).  Nothing traced when tracefs or the tracer is missing."""
    problem = mount_tracefs()
    if problem:
        return [], [problem]
    offered = set()
    for line in (TRACEFS / "available_filter_functions").read_text().splitlines():
        offered.add(line.split()[0] if line else "")
    traced = [f for f in functions if f in offered]
    problems = []
    missing = [f for f in functions if f not in offered]
    if missing:
        problems.append("not traceable here (inlined or absent): " + ", ".join(missing))
    if not traced:
        return [], [*problems, "no function to trace"]
    try:
        _write("tracing_on", "0")
        _write("current_tracer", "nop")
        _write("set_ftrace_filter", "\n".join(traced) + "\n")
        global _saved_buffer_kb
        _saved_buffer_kb = _saved_buffer_kb or (TRACEFS / "buffer_size_kb").read_text().split()[0]
        _write("buffer_size_kb", str(BUFFER_KB))
        _write("options/overwrite", "0")  # a full buffer stops, and says so
        _write("current_tracer", "function_graph")
        for opt, on in (("funcgraph-proc", 1), ("funcgraph-tail", 1), ("funcgraph-irqs", 1)):
            _write(f"options/{opt}", str(on))
        _write("trace", "")
    except OSError as e:
        teardown()
        return [], [*problems, f"function_graph: {e}"]
    return traced, problems


def start() -> None:
    _write("trace", "")
    _write("tracing_on", "1")


def stop() -> tuple[str, int]:
    """Stop tracing; the trace's text and the events it lost (a lost event
    makes the run's figures wrong, so the caller reports it)."""
    _write("tracing_on", "0")
    lost = 0
    for stats in (TRACEFS / "per_cpu").glob("cpu*/stats"):
        for line in stats.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("overrun", "dropped events"):
                with contextlib.suppress(ValueError):
                    lost += int(value.split()[0])
    return (TRACEFS / "trace").read_text(errors="replace"), lost


def teardown() -> None:
    with contextlib.suppress(OSError):
        _write("tracing_on", "0")
        _write("current_tracer", "nop")
        _write("set_ftrace_filter", "")
        if _saved_buffer_kb:
            _write("buffer_size_kb", _saved_buffer_kb)
        _write("trace", "")


@dataclass
class Times:
    calls: int = 0
    total_ns: int = 0
    self_ns: int = 0


@dataclass
class _Frame:
    name: str
    children_ns: int = 0


@dataclass
class Parsed:
    times: dict[str, Times] = field(default_factory=lambda: defaultdict(Times))
    unmatched: int = 0  # returns whose entry the trace did not hold


# " 1)   wrk-512    |   0.541 us    |      kt_recv [ktcpvs]();"
# " 1)   wrk-512    |               |      kt_conn_tasklet [ktcpvs]() {"
# " 1)   wrk-512    | + 15.432 us   |      } /* kt_conn_tasklet [ktcpvs] */"
_LINE = re.compile(
    r"^\s*(?P<cpu>\d+)\)\s*(?P<task>\S.*?)\s*\|\s*(?:[-+!#*@$]\s*)?(?:(?P<us>\d+\.\d+) us)?\s*\|\s*"
    r"(?P<body>.*?)\s*$"
)
_NAME = re.compile(r"^(?P<name>[\w.]+)(?: \[\w+\])?")


def _ns(us: str) -> int:
    whole, _, frac = us.partition(".")
    return int(whole) * 1000 + int((frac + "000")[:3])


def parse(text: str) -> Parsed:
    """A function_graph trace (funcgraph-proc and funcgraph-tail on) into
    calls, total and self time per function.  Nesting is followed per task
    (a softirq nests inside the task it interrupted, as the tracer does)."""
    out = Parsed()
    stacks: dict[str, list[_Frame]] = defaultdict(list)
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        # a task's calls nest wherever it runs; the idle tasks (pid 0), one
        # per CPU, share a name
        task = m["task"] if not m["task"].endswith("-0") else f"{m['task']}/{m['cpu']}"
        body, us, stack = m["body"], m["us"], stacks[task]
        if body.endswith("{"):
            n = _NAME.match(body)
            if n:
                stack.append(_Frame(n["name"]))
            continue
        if us is None:
            continue
        ns = _ns(us)
        if body.startswith("}"):
            n = _NAME.match(body.removeprefix("}").strip().removeprefix("/*").strip())
            if not n or not stack or stack[-1].name != n["name"]:
                out.unmatched += 1
                stack.clear()  # the trace began inside this call: start afresh
                continue
            frame = stack.pop()
            self_ns = ns - frame.children_ns
        elif body.endswith(";"):
            n = _NAME.match(body)
            if not n:
                continue
            frame, self_ns = _Frame(n["name"]), ns
        else:
            continue
        t = out.times[frame.name]
        t.calls += 1
        t.total_ns += ns
        t.self_ns += max(0, self_ns)
        if stack:
            stack[-1].children_ns += ns
    return out


def per_request(parsed: Parsed, requests: int) -> dict[str, dict[str, float]]:
    """Per request: calls, total µs and self µs, per function."""
    n = max(1, requests)
    return {
        name: {
            "calls": round(t.calls / n, 3),
            "total_us": round(t.total_ns / n / 1000, 2),
            "self_us": round(t.self_ns / n / 1000, 2),
        }
        for name, t in sorted(parsed.times.items())
    }
