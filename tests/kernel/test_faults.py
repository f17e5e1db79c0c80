"""Misbehaving peers on both sides of the live module: random scenarios, then the bugs found.

The randomized test (test_random_faults) runs scenarios of fault_client.py in concurrent
batches through the switch.  Backends (fault_server.py, one process on many ports) close,
reset or stall before, while or after reading a request's head or body, answer early
(while the client still uploads), close-delimited, in tiny segments, after a 1xx, with a
bad chunk, a short body, garbage, an oversized head or a 101 nobody asked for, or keep a
connection alive and close it a moment later.  Clients upload Content-Length and chunked
bodies of random sizes in random segments, pipeline, close, reset or stall at any byte,
half-close, go idle, or send something that is no HTTP.

Invariants, checked after every batch:

- no kernel report in dmesg (BUG, WARNING, Oops, KFENCE, corruption, ...): a failure
  names the batch's scenarios, those that never ended first;
- every exchange ends (end of stream or reset) within the deadline -- the service's
  timeouts are short, so a stall resolves in seconds;
- what the client receives is valid HTTP (the project's parser): answers in request
  order, each of the backend (its X-Plan names the request it answers, its body is the
  pattern the plan says, its X-Got the digest of the request body the backend received)
  or of the switch with a status the scenario allows (400, 408, 502, 503, 504 where they
  can happen), possibly followed by a cut -- never an answer of another request, never
  invalid bytes, never a made-up answer after part of a real one;
- a well-behaved client talking to well-behaved servers (pool "g") gets every answer,
  complete and exact;
- the switch then serves a normal request to another pool correctly;

and at the end, once the clients are gone: no connection left in the namespace, and
after the configuration is flushed, the module's allocations are back where they were.

Settings (environment): KTCPVS_FAULT_SECONDS (time for batches, default 30),
KTCPVS_FAULT_EXAMPLES (at most this many scenarios), KTCPVS_FAULT_BATCH (scenarios per
batch, default 10), KTCPVS_FAULT_SEED (the run's seed, random by default; it is printed in
every failure), KTCPVS_FAULT_ONLY (comma-separated scenario labels, e.g. "1234:3:7": run
just those), KTCPVS_FAULT_KEEP_GOING=1 (run every batch and report every failing scenario
instead of stopping after the first batch with one; a kernel report always stops the run).
`make fuzz` runs it long (tests/fuzz/faults.mk).

The deterministic tests below it reproduce, one each, the bugs the randomized run found.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from demo_site import Site, read_responses
from fault_client import Outcome, Req, Scenario, answers, generate, run_batch
from fault_server import COMPLETE, Plan, pattern
from nsutil import in_netns
from topology import sh, stop
from vm import kernel_reports

from l7ctl.apply import apply_file
from l7ctl.httpparse import Refusal
from l7ctl.netlink import Client

T = TypeVar("T")
HERE = Path(__file__).parent
FAULT = "10.0.4.11"  # the demo site's "flaky" backend
ECHO_PORT, GOOD_PORT, FAULT_PORT = 9000, 9080, 9081
ACCEPT_PORTS = {"fin": 9082, "rst": 9083, "garbage": 9084}
STALL_PORTS = range(9090, 9098)  # 504s put a server in a cool-down: spread them
FREEZE_PORTS = range(9100, 9106)
DEADLINE = 30.0  # seconds a scenario may take before it counts as a hang


def _servers(ports: range) -> str:
    return " ".join(f"server {FAULT}:{p};" for p in ports)


RULES = f"""
pool good   {{ server {FAULT}:{GOOD_PORT}; }}
pool fault  {{ server {FAULT}:{FAULT_PORT}; }}
pool stall  {{ scheduler rr; {_servers(STALL_PORTS)} }}
pool a_fin  {{ server {FAULT}:{ACCEPT_PORTS["fin"]}; }}
pool a_rst  {{ server {FAULT}:{ACCEPT_PORTS["rst"]}; }}
pool a_garbage {{ server {FAULT}:{ACCEPT_PORTS["garbage"]}; }}
pool a_freeze  {{ scheduler rr; {_servers(FREEZE_PORTS)} }}
pool echo   {{ server {FAULT}:{ECHO_PORT}; }}

service faults listen 10.0.0.1:80 {{
    timeout header 6s;
    timeout idle 4s;
    timeout connect 2s;
    timeout backend 5s;
    route echo   if path prefix "/echo/";
    route good   if path prefix "/g/";
    route fault  if path prefix "/f/";
    route stall  if path prefix "/s/";
    route a_fin  if path prefix "/a/fin/";
    route a_rst  if path prefix "/a/rst/";
    route a_garbage if path prefix "/a/garbage/";
    route a_freeze  if path prefix "/a/freeze/";
}}
"""

# What the switch itself may answer, by pool: the backends of "g" never give it a reason;
# a stale keep-alive connection or a misbehaving backend gives 502; the stall pools 504,
# and 503 once their servers are cooling down.
SWITCH = {
    "g": set(),
    "f": {502},
    "s": {502, 503, 504},
    "a/fin": {502},
    "a/rst": {502},
    "a/garbage": {502},
    "a/freeze": {503, 504},
}


class Kmsg:
    """New kernel reports since the last look: what tests/vm.py checks after the run (BUG,
    WARNING, oops, KFENCE, SLUB, list corruption, ...), seen as soon as a batch is over."""

    def __init__(self) -> None:
        self.seen = len(self._lines())

    @staticmethod
    def _lines() -> list[str]:
        return subprocess.run(["dmesg"], capture_output=True, text=True).stdout.splitlines()

    def reports(self) -> list[str]:
        lines = self._lines()
        new, self.seen = lines[self.seen :], len(lines)
        bad = [i for i, line in enumerate(new) if kernel_reports(line)]
        if not bad:
            return []
        return new[max(bad[0] - 2, 0) : bad[0] + 60]  # the first report with its context


@dataclass
class Env:
    site: Site
    kmsg: Kmsg
    rules: Path
    baseline: int = 0  # module allocations before the rules were applied

    def client(self, fn: Callable[[], T]) -> T:
        return in_netns(self.site.topo.client.ns, fn)

    def director(self, fn: Callable[[], T]) -> T:
        return in_netns(self.site.topo.director.ns, fn)

    def apply(self) -> None:
        """Apply the rules (a re-apply of the running ones changes nothing)."""
        self.director(lambda: apply_file(self.rules))

    def counts(self) -> tuple[int, int]:
        """(connections in the namespace, allocations of the module)."""
        info = self.director(lambda: Client().info())
        return info.connections, info.allocations


def wait_for(pred: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.25)
    return pred()


@pytest.fixture(scope="module")
def env(site_session: Site) -> Iterator[Env]:
    """The fault server on the demo site's flaky backend, the service's configuration
    dropped (so that the baseline of allocations is the module's without it)."""
    topo = site_session.topo
    ports = [f"{ECHO_PORT}:echo", f"{GOOD_PORT}:script", f"{FAULT_PORT}:script"]
    ports += [f"{p}:{m}" for m, p in ACCEPT_PORTS.items()]
    ports += [f"{p}:script" for p in STALL_PORTS] + [f"{p}:freeze" for p in FREEZE_PORTS]
    argv = [sys.executable, str(HERE / "fault_server.py"), "--addr", FAULT]
    for port in ports:
        argv += ["--port", port]
    proc = topo.spawn(topo.nodes["flaky"].ns, argv, "fault.out")
    try:
        log = topo.tmp / "fault.out"
        assert wait_for(lambda: b"ready" in log.read_bytes(), 60), log.read_text()
        e = Env(site_session, Kmsg(), site_session.tmp / "faults.rules")
        e.rules.write_text(RULES)
        e.director(lambda: Client().flush())  # the next test applies the demo site again
        assert wait_for(lambda: e.counts()[0] == 0, 30), f"connections left: {e.counts()}"
        e.baseline = e.counts()[1]
        yield e
    finally:
        stop(proc)
        proc.wait()


@pytest.fixture
def faults(env: Env) -> Env:
    """The environment with the rules applied."""
    env.apply()
    return env


# ---- checking one exchange --------------------------------------------------------


def switch_statuses(sc: Scenario, i: int) -> set[int]:
    r = sc.reqs[i]
    out = set(SWITCH[r.pool])
    if r.bad:
        out.add(400)
    stall = sc.stall_in()
    if stall == (i, True):
        out.add(408)
    return out


def backend_statuses(r: Req) -> set[int]:
    if r.pool.startswith("a/") or r.bad == "garbage":
        return set()
    if r.plan.act == "switch":
        return {101}
    if r.plan.act in (*COMPLETE, "eof", "short", "badchunk"):
        return {r.plan.status}
    return set()


def strict(sc: Scenario) -> bool:
    """A well-behaved client and well-behaved servers: every answer complete and exact."""
    return sc.good_client and all(r.pool == "g" for r in sc.reqs)


def check(sc: Scenario, out: Outcome) -> list[str]:
    """What is wrong with how the exchange went (nothing: an empty list)."""
    problems: list[str] = []
    if out.ended not in ("eof", "reset", "self"):
        what = {"hang": f"did not end within {DEADLINE:.0f} s"}.get(out.ended, out.ended)
        problems.append(f"the exchange {what}")
    i = 0  # the request the next final answer belongs to
    interims = 0  # 1xx answers to request i so far
    cut = False
    for m, body in answers(out.received):
        if isinstance(m, Refusal):
            if not m.error.startswith("incomplete"):
                problems.append(f"invalid HTTP reached the client: {m.error} at {m.offset}")
            elif strict(sc):
                problems.append(f"an answer was cut: {m.error} at {m.offset}")
            cut = True
            break
        if i >= len(sc.reqs):
            problems.append(f"more answers than requests: {m.status}")
            break
        r = sc.reqs[i]
        fields = {k.lower(): v for k, v in m.headers}
        if 100 <= m.status < 200 and m.status != 101:
            interims += 1
            sent = (r.plan.act == "interim") + r.expect  # the plan's, the one to Expect
            if interims > sent or r.pool not in ("g", "f", "s"):
                problems.append(f"[{i}] an interim {m.status} nobody sent")
            continue
        interims = 0
        if fields.get(b"server") == b"ktcpvs":
            if m.status not in switch_statuses(sc, i):
                problems.append(f"[{i}] the switch answered {m.status}, allowed: "
                                f"{sorted(switch_statuses(sc, i))}")  # fmt: skip
        else:
            problems += [f"[{i}] {p}" for p in check_backend_answer(sc, r, m.status, m.framing,
                                                                     fields, body)]  # fmt: skip
        i += 1
    if strict(sc) and not cut:
        needed = 1
        while needed < len(sc.reqs) and sc.reqs[needed - 1].keeps_connection:
            needed += 1
        if i < needed:
            problems.append(f"{i} answer(s), {needed} expected")
    return problems


def check_backend_answer(
    sc: Scenario, r: Req, status: int, framing: str, fields: dict[bytes, bytes], body: bytes
) -> list[str]:
    problems = []
    plan = fields.get(b"x-plan", b"").decode("latin-1")
    if plan != r.plan.encode():
        return [f"the answer of another request: X-Plan {plan!r}"]
    if status not in backend_statuses(r):
        problems.append(f"the backend's answer arrived as {status}")
    if strict(sc) and status != r.plan.status:
        problems.append(f"{status}, not the backend's {r.plan.status}")
    want = pattern(r.plan.seed, r.plan.size)
    if framing in ("length", "chunked") and r.plan.act in COMPLETE and body != want:
        problems.append(f"body of {len(body)} bytes differs from the {len(want)} sent")
    elif framing == "close" and not want.startswith(body):
        problems.append(f"close-delimited body of {len(body)} bytes is not what was sent")
    elif framing == "close" and strict(sc) and body != want:
        problems.append(f"close-delimited body of {len(body)} bytes, {len(want)} sent")
    got = fields.get(b"x-got")
    sent = hashlib.sha256(r.body()).hexdigest()
    if got is not None and got.decode() != sent:
        problems.append("the backend received another request body than the client sent")
    if got is None and strict(sc) and r.plan.at == "end" and status != 101:
        problems.append("no X-Got on an answer made after the whole request")
    return problems


# ---- running scenarios --------------------------------------------------------------


def health(e: Env, tag: str) -> list[str]:
    """A normal request to another pool: answered correctly?"""

    def run() -> list[str]:
        raw = f"GET /echo/{tag} HTTP/1.1\r\nHost: fault.example\r\n\r\n".encode()
        with socket.create_connection(("10.0.0.1", 80), timeout=10) as s:
            s.sendall(raw)
            rs = read_responses(s, 1)
        if [(r.status, r.body) for r in rs] != [(200, raw)]:
            return [f"a normal request after the batch got {rs!r}"]
        return []

    try:
        return e.client(run)
    except RuntimeError as err:
        return [f"a normal request after the batch failed: {err}"]


def announce(batch: list[Scenario]) -> None:
    """Name the batch's scenarios in the kernel log, so that a report that leaves the
    guest unable to go on (an oops) still shows, on the console, what was running."""
    with open("/dev/kmsg", "w") as kmsg:
        for sc in batch:
            kmsg.write("ktcpvs fault test: " + " |".join(sc.describe().split("\n")) + "\n")
            kmsg.flush()


def tcp_counters(ns: str) -> dict[str, int]:
    """The TCP and IP counters of a namespace (/proc/net/netstat and snmp), by name."""
    text = sh("ip", "netns", "exec", ns, "cat", "/proc/net/netstat", "/proc/net/snmp").stdout
    out: dict[str, int] = {}
    lines = text.splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        group, _, keys = names.partition(":")
        for k, v in zip(keys.split(), values.partition(":")[2].split(), strict=False):
            with contextlib.suppress(ValueError):
                out[f"{group}.{k}"] = int(v)
    return out


# Counters that say a segment was dropped or a connection waited, and the
# retransmissions that follow: shown when a batch fails.
DROPS = (
    "Drop", "Overflow", "Prune", "Collapsed", "MemoryPressure", "Retrans", "Timeouts",
    "Backlog", "Syncookies", "ZeroWindow", "InErrs", "Lost",
)  # fmt: skip


def counter_deltas(before: dict[str, int], after: dict[str, int]) -> str:
    return " ".join(
        f"{k}+{after[k] - before.get(k, 0)}"
        for k in sorted(after)
        if after[k] != before.get(k, 0) and any(d in k for d in DROPS)
    )


def run_scenarios(e: Env, seed: str, batch: list[Scenario]) -> list[str]:
    """Run a batch at once: what went wrong, scenario by scenario (a kernel report fails
    the test at once)."""
    announce(batch)
    nodes = {"director": e.site.topo.director.ns, "client": e.site.topo.client.ns}
    before = {n: tcp_counters(ns) for n, ns in nodes.items()}
    outcomes = e.client(lambda: run_batch(batch, DEADLINE))
    order = sorted(range(len(batch)), key=lambda k: outcomes[k].ended != "hang")
    report = e.kmsg.reports()
    if report:
        scen = "\n".join(
            f"{batch[k].describe()}\n    -> {outcomes[k].ended} after {outcomes[k].elapsed:.1f} s"
            for k in order
        )
        pytest.fail(
            f"kernel report during a batch of seed {seed} (scenarios that never ended first):\n"
            f"{scen}\n--- dmesg ---\n" + "\n".join(report),
            pytrace=False,
        )
    failures = []
    for sc, out in zip(batch, outcomes, strict=True):
        problems = check(sc, out)
        if problems:
            failures.append(
                f"{sc.describe()}\n    -> {out.ended} after {out.elapsed:.1f} s, "
                f"{len(out.received)} bytes received: {out.received[:300]!r}\n"
                + "\n".join(f"    !! {p}" for p in problems)
            )
    failures += health(e, f"after-{batch[0].label.replace(':', '-')}")
    if failures:  # the whole batch, for context: how long each took, how far it got
        failures.append(
            "the batch: "
            + ", ".join(
                f"{sc.label} {out.ended} {out.elapsed:.1f}s sent {out.sent}/{len(sc.stream())}"
                for sc, out in zip(batch, outcomes, strict=True)
            )
        )
        failures += [
            f"{n} TCP/IP counters during the batch: {counter_deltas(before[n], tcp_counters(ns))}"
            for n, ns in nodes.items()
        ]
    return failures


def nothing_left(e: Env) -> None:
    """No connection left, and once flushed, no allocation of the configuration (the
    next test applies the demo site again)."""
    # lingering closes (2 s) and the idle timeout (4 s) end every connection
    assert wait_for(lambda: e.counts()[0] == 0, 20), f"connections left: {e.counts()}"
    e.director(lambda: Client().flush())
    # the module counts every allocation; other namespaces only free theirs meanwhile
    assert wait_for(lambda: e.counts()[1] <= e.baseline, 20), (
        f"allocations: {e.counts()[1]}, before the rules were applied: {e.baseline}"
    )


def test_random_faults(faults: Env) -> None:
    seed = os.environ.get("KTCPVS_FAULT_SEED") or str(random.randrange(10**6))
    seconds = float(os.environ.get("KTCPVS_FAULT_SECONDS", "30"))
    examples = int(os.environ.get("KTCPVS_FAULT_EXAMPLES", "0")) or None
    size = int(os.environ.get("KTCPVS_FAULT_BATCH", "10"))
    keep_going = os.environ.get("KTCPVS_FAULT_KEEP_GOING") == "1"
    print(f"fault test: seed {seed}")
    only = [label for label in os.environ.get("KTCPVS_FAULT_ONLY", "").split(",") if label]
    failures = []
    if only:
        failures = run_scenarios(faults, seed, [generate(label) for label in only])
    else:
        end = time.monotonic() + seconds
        n = b = 0
        while time.monotonic() < end and (examples is None or n < examples):
            k = size if examples is None else min(size, examples - n)
            failures += run_scenarios(faults, seed, [generate(f"{seed}:{b}:{j}") for j in range(k)])
            n += k
            b += 1
            if failures and not keep_going:
                break
        print(f"fault test: {n} scenarios in {b} batches")
    if failures:
        pytest.fail(f"seed {seed}:\n" + "\n".join(failures), pytrace=False)
    nothing_left(faults)


# ---- the bugs the randomized run found, one test each --------------------------------


def test_close_delimited_answer_during_upload(faults: Env) -> None:
    """The server answers close-delimited right after the head and half-closes (FIN, then
    reads on) while the client still uploads: the answer ends with the server's FIN, the
    switch must close the client's connection after it -- not send the rest of the upload
    to the backend socket it has just released (a NULL dereference in kt_splice_up, issue
    11 point 2)."""
    batch = []
    for k in range(24):
        plan = Plan("head", 0, "eof", "fin", False, 200, 1000 + k, 7000 + k)
        req = Req("POST", "length", 8 << 20, pool="g", plan=plan, seed=k, pace=(65536, 0.02))
        batch.append(Scenario(f"close-during-upload:{k}", (req,)))
    for _ in range(2):
        failures = run_scenarios(faults, "close-during-upload", batch)
        assert not failures, "\n".join(failures)
    nothing_left(faults)
