"""VIP failover between two ktcpvs directors with keepalived (VRRP), measured.

    client 10.0.0.2 ─┐  front segment 10.0.0.0/24 (bridge)
                     ├─ director A eth0 10.0.0.11 ─┐  VIP 10.0.0.1 on the VRRP master
                     └─ director B eth0 10.0.0.12 ─┤
                        director A eth1 10.0.1.2  ─┤  back segment 10.0.1.0/24 (bridge)
                        director B eth1 10.0.1.3  ─┴─ echo servers 10.0.1.11, 10.0.1.12

Both directors apply examples/keepalived/site.rules (a service on the VIP,
listening with IP_FREEBIND) and run keepalived with
examples/keepalived/keepalived.conf as shipped, but for keepalived's pid
files and, except in the health-script test, without its track_script.
A client sends a request on a new connection every 50 ms, each with a path
naming its sequence number; the echo servers log which director address
each one came from.

* Stopping the master's keepalived (it resigns with a priority-0 advert):
  clients are served again through the backup; the outage (from the last
  answer before to the first after) and the requests lost are measured and
  bounded.

* The example's vrrp_script (`l7ctl health --fail-on down`) failing on the
  master because its switch cannot serve (its configuration flushed): its
  priority drops below the backup's, the backup takes the address (the way
  back is left out: see the test).  Under the guest's software emulation one
  run of the script (a Python process) takes 4-12 s: the test's copy
  gives the script an interval of 5 s, a timeout of 120 s and fall/rise 1
  (the shipped file: 3 s, 10 s, 2), only the master runs it, and its
  client sends a request every 200 ms, so the outage it measures is mostly
  the script's run time under emulation, not keepalived's.

The figures each run measured are written to the run's results
(build/vm/KVER/failover-*.json) and docs/operations.md reports them.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

import pytest
from nsutil import in_netns
from topology import read_log, sh, wait_port

from l7ctl.apply import apply_file
from l7ctl.netlink import Client

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "keepalived"
KEEPALIVED = "/usr/sbin/keepalived"

VIP = "10.0.0.1"
CLIENT = "10.0.0.2"
FRONT = {"a": "10.0.0.11", "b": "10.0.0.12"}
BACK = {"a": "10.0.1.2", "b": "10.0.1.3"}
SERVERS = {"s1": "10.0.1.11", "s2": "10.0.1.12"}

# Bounds the measured figures must keep.  A resigning master hands over at
# once (priority 0: the backup waits only its skew time, (256 - 100) / 256 s,
# then sends gratuitous ARP).
STOP_OUTAGE_MAX = 5.0
PERIOD = 0.05  # seconds between the client's requests
# The health script's timings in the test's copy (see above), and the bound
# of the outage it causes: one script interval plus one run, under emulation.
SCRIPT_TIMINGS = {"interval": 5, "timeout": 120, "fall": 1, "rise": 1}
SCRIPT_PERIOD = 0.2
SCRIPT_OUTAGE_MAX = 150.0
TIMEOUT = 1.0  # per request: connect, send, read the answer

pytestmark = [
    pytest.mark.skipif(
        not os.path.exists(KEEPALIVED), reason="keepalived not installed (make setup)"
    ),
    # the first test also builds the pair (Python echo servers, two keepalived
    # elections), each test moves the address and back: minutes under emulation
    pytest.mark.timeout(480),
]


@dataclass
class Pair:
    tag: str
    tmp: Path
    ns: dict[str, str] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)
    keepalived: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def exec(self, node: str, *argv: str, check: bool = True) -> str:
        return sh("ip", "netns", "exec", self.ns[node], *argv, check=check).stdout

    def spawn(self, node: str, argv: list[str], log: str) -> subprocess.Popen[bytes]:
        with open(self.tmp / log, "ab") as f:
            p = subprocess.Popen(
                ["ip", "netns", "exec", self.ns[node], *argv],
                stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.procs.append(p)
        return p

    # -- keepalived -------------------------------------------------------------

    def config(self, script: bool) -> Path:
        """The example configuration as shipped, with or without its health
        script.  Without: under emulation one run of `l7ctl health` (a
        Python process) can take about as long as the shipped script timeout, and
        a killed run counts as a failure that would move the address by
        itself.  With: the timings relaxed for emulation (above), and the
        l7ctl of the project's environment when none is installed."""
        text = (EXAMPLE / "keepalived.conf").read_text()
        line = '"/usr/local/bin/l7ctl health --fail-on down"'
        assert line in text
        if script:
            l7ctl = Path("/usr/local/bin/l7ctl")
            if not l7ctl.exists():
                l7ctl = Path(sys.executable).parent / "l7ctl"
            text = text.replace(line, f'"{l7ctl} health --fail-on down"')
            for key, value in SCRIPT_TIMINGS.items():
                text, n = re.subn(rf"(?m)^(\s*{key}) \d+$", rf"\g<1> {value}", text, count=1)
                assert n == 1, key
        else:
            text, n = re.subn(r"(?m)^\s*track_script \{\n\s*chk_ktcpvs\n\s*\}\n", "", text)
            assert n == 1
        path = self.tmp / f"keepalived{'-script' if script else ''}.conf"
        path.write_text(text)
        return path

    def start_keepalived(self, d: str, script: bool = False) -> None:
        conf = self.config(script)
        pid = self.tmp / f"keepalived-{d}"
        self.keepalived[d] = self.spawn(
            d,
            [KEEPALIVED, "--dont-fork", "--log-console", "--log-detail", "--no-syslog",
             "--vrrp", "-i", f"director-{d}", "-f", str(conf), "-p", f"{pid}.pid",
             "-r", f"{pid}-vrrp.pid", "-c", f"{pid}-checkers.pid"],
            f"keepalived-{d}.log",
        )  # fmt: skip

    def stop_keepalived(self, d: str) -> None:
        p = self.keepalived.pop(d, None)
        if p is None:
            return
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)

    def keepalived_log(self, d: str) -> str:
        return (self.tmp / f"keepalived-{d}.log").read_text(errors="replace")

    def holds_vip(self, d: str) -> bool:
        return f"inet {VIP}/" in self.exec(d, "ip", "-4", "addr", "show", "dev", "eth0")

    def wait_master(self, d: str, timeout: float = 60.0) -> None:
        other = "b" if d == "a" else "a"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.holds_vip(d) and not self.holds_vip(other):
                return
            time.sleep(0.2)
        raise AssertionError(
            f"director {d} did not become the only VRRP master\n"
            f"--- A ---\n{self.keepalived_log('a')}\n--- B ---\n{self.keepalived_log('b')}"
        )

    def apply(self, d: str) -> None:
        in_netns(self.ns[d], lambda: apply_file(EXAMPLE / "site.rules"))

    def flush(self, d: str) -> None:
        in_netns(self.ns[d], lambda: Client().flush())

    def directors(self) -> dict[int, str]:
        """Which director forwarded each request (by sequence number), from
        the servers' logs: the address the request came from."""
        out: dict[int, str] = {}
        for log in self.logs.values():
            for e in read_log(log):
                m = re.match(r"GET /failover/(\d+) ", str(e["raw"]))
                if m:
                    peer = str(e["peer"]).rsplit(":", 1)[0].strip("[]")
                    out[int(m.group(1))] = next((d for d, a in BACK.items() if a == peer), peer)
        return out


def _veth(pair: Pair, node: str, dev: str, bridge: str, addr: str) -> None:
    port = f"{pair.tag}{node}{dev[-1]}"
    sh("ip", "link", "add", port, "netns", pair.ns["sw"], "type", "veth",
       "peer", "name", dev, "netns", pair.ns[node])  # fmt: skip
    sh("ip", "-n", pair.ns["sw"], "link", "set", port, "master", bridge, "up")
    sh("ip", "-n", pair.ns[node], "addr", "add", addr, "dev", dev)
    sh("ip", "-n", pair.ns[node], "link", "set", dev, "up")


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    tag = f"fo{os.getpid() % 10000}"
    p = Pair(tag, Path(tempfile.mkdtemp(prefix="ktfailover-")))
    try:
        for node in ("sw", "cli", "a", "b", *SERVERS):
            p.ns[node] = f"{tag}-{node}"
            sh("ip", "netns", "add", p.ns[node])
            sh("ip", "-n", p.ns[node], "link", "set", "lo", "up")
        for br in ("br0", "br1"):
            sh("ip", "-n", p.ns["sw"], "link", "add", br, "type", "bridge")
            sh("ip", "-n", p.ns["sw"], "link", "set", br, "up")
        _veth(p, "cli", "eth0", "br0", f"{CLIENT}/24")
        for d in ("a", "b"):
            _veth(p, d, "eth0", "br0", f"{FRONT[d]}/24")
            _veth(p, d, "eth1", "br1", f"{BACK[d]}/24")
        for s, addr in SERVERS.items():
            _veth(p, s, "eth0", "br1", f"{addr}/24")
            p.logs[s] = p.tmp / f"echo-{s}.jsonl"
            p.spawn(
                s,
                [sys.executable, str(Path(__file__).parent / "echo_server.py"), "--name", s,
                 "--listen", f"{addr}:80", "--log", str(p.logs[s])],
                f"echo-{s}.out",
            )  # fmt: skip
        for s, addr in SERVERS.items():
            wait_port(p.ns[s], addr, 80)
        for d in ("a", "b"):
            p.apply(d)
            wait_port(p.ns[d], VIP, 80)  # listening before the address is there
        p.start_keepalived("a")
        p.start_keepalived("b")
        p.wait_master("a")
        yield p
    finally:
        for proc in p.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for d in ("a", "b"):
            if d in p.ns:
                with contextlib.suppress(Exception):
                    in_netns(p.ns[d], lambda: Client().flush())
        for ns in reversed(list(p.ns.values())):
            sh("ip", "netns", "del", ns, check=False)


# -- the client ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    seq: int
    start: float  # monotonic seconds
    end: float
    ok: bool
    error: str = ""


def client_loop(first: int, stop: EventType, period: float, answered: Any) -> list[Attempt]:
    """In the client's namespace (a forked child: `stop` is a multiprocessing
    event, `answered` a shared counter of the requests answered so far): a new
    connection every `period` seconds until `stop` is set, one request each,
    answered within TIMEOUT or failed."""
    out: list[Attempt] = []
    seq = first
    while not stop.is_set():
        t0 = time.monotonic()
        ok, err = False, ""
        try:
            with socket.create_connection((VIP, 80), timeout=TIMEOUT) as s:
                s.settimeout(max(0.05, TIMEOUT - (time.monotonic() - t0)))
                s.sendall(f"GET /failover/{seq} HTTP/1.1\r\nHost: www.example.com\r\n"
                          "Connection: close\r\n\r\n".encode())  # fmt: skip
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            ok = data.startswith(b"HTTP/1.1 200 ")
            err = "" if ok else data[:40].decode("latin-1")
        except OSError as e:
            err = type(e).__name__
        t1 = time.monotonic()
        out.append(Attempt(seq, t0, t1, ok, err))
        if ok:
            with answered.get_lock():
                answered.value += 1
        seq += 1
        stop.wait(max(0.0, period - (t1 - t0)))
    return out


class Requester:
    """client_loop in a thread, from start to stop()."""

    def __init__(self, pair: Pair, first: int, period: float) -> None:
        self.stop_event = multiprocessing.Event()
        self.answered = multiprocessing.Value("i", 0)
        self.result: list[list[Attempt]] = []
        self.thread = threading.Thread(
            target=lambda: self.result.append(
                in_netns(
                    pair.ns["cli"],
                    lambda: client_loop(first, self.stop_event, period, self.answered),
                )
            )
        )
        self.thread.start()

    def wait_answered(self, n: int, timeout: float) -> None:
        """Until n requests have been answered (the guest may be slow to
        answer the first: the event must come after some)."""
        deadline = time.monotonic() + timeout
        while self.answered.value < n:
            assert time.monotonic() < deadline, f"{self.answered.value} of {n} answered"
            time.sleep(0.1)

    def stop(self) -> list[Attempt]:
        self.stop_event.set()
        self.thread.join(timeout=60)
        assert self.result, "the client loop did not finish"
        return self.result[0]


@dataclass
class Run:
    attempts: list[Attempt]
    event: float  # monotonic time of the failover's cause

    @property
    def first_answer(self) -> float:
        """When the first answered request began (the path's warm-up ends)."""
        return min((a.start for a in self.attempts if a.ok), default=float("inf"))

    @property
    def warmup(self) -> list[Attempt]:
        """Requests that failed before any was answered: the client's first
        connections under emulation (1 s each, ARP and the first accept
        included), not the failover; reported, not counted as lost.  A 6.1
        CI run failed here with "no request was answered before the
        failover" when these were counted."""
        return [a for a in self.attempts if not a.ok and a.start < self.first_answer]

    @property
    def lost(self) -> list[Attempt]:
        """Requests that failed once the path had answered."""
        return [a for a in self.attempts if not a.ok and a.start > self.first_answer]

    def outage(self) -> float:
        """From the last answer before the first failed request to the first
        answer after the last failed one (0 when none failed)."""
        if not self.lost:
            return 0.0
        first_lost = min(a.start for a in self.lost)
        last_lost = max(a.start for a in self.lost)
        before = [a.end for a in self.attempts if a.ok and a.start < first_lost]
        after = [a.end for a in self.attempts if a.ok and a.start > last_lost]
        assert before, "no request was answered before the failover"
        assert after, "no request was answered after the failover"
        return max(0.0, min(after) - max(before))


def traffic(pair: Pair, first: int, seconds: float, cause: float, act: object) -> Run:
    """Run the client for `seconds`; after `cause` seconds, call act()."""
    client = Requester(pair, first, PERIOD)
    time.sleep(cause)
    event = time.monotonic()
    act()  # type: ignore[operator]
    time.sleep(max(0.0, seconds - cause))
    return Run(client.stop(), event)


def report(name: str, run: Run, pair: Pair) -> dict[str, object]:
    n = len(run.attempts)
    figures = {
        "scenario": name,
        "requests": n,
        "lost": len(run.lost),
        "outage_s": round(run.outage(), 2),
        "errors": sorted({a.error for a in run.lost}),
        "warmup_failed": [(round(a.end - a.start, 2), a.error) for a in run.warmup],
    }
    print(f"failover {json.dumps(figures)}")
    # beside the run's results on the host (build/vm/KVER/), for docs/operations.md
    out = Path(os.environ.get("KTCPVS_RESULTS") or pair.tmp)
    (out / f"failover-{name}.json").write_text(json.dumps(figures) + "\n")
    return figures


def served_by(pair: Pair, attempts: list[Attempt]) -> set[str | None]:
    via = pair.directors()
    return {via.get(a.seq) for a in attempts if a.ok}


def assert_moved(pair: Pair, run: Run, settled: float) -> None:
    """Every request answered before the event went through A; every one
    begun after `settled` was answered, through B."""
    before = [a for a in run.attempts if a.end < run.event]
    after = [a for a in run.attempts if a.start > settled]
    assert before and after
    assert served_by(pair, before) == {"a"}, run.lost
    assert served_by(pair, after) == {"b"}
    assert all(a.ok for a in after), [a for a in after if not a.ok]


# -- tests --------------------------------------------------------------------------------


def test_stop_master_keepalived_moves_the_vip_to_the_backup(pair: Pair) -> None:
    pair.wait_master("a")
    try:
        run = traffic(pair, 0, seconds=12.0, cause=4.0, act=lambda: pair.stop_keepalived("a"))
        pair.wait_master("b", timeout=10)
        assert_moved(pair, run, run.event + STOP_OUTAGE_MAX)
        fig = report("stop-keepalived", run, pair)
        assert run.outage() < STOP_OUTAGE_MAX, fig
        assert len(run.lost) <= STOP_OUTAGE_MAX / PERIOD, fig
        assert "Entering MASTER STATE" in pair.keepalived_log("b")
    finally:
        # A comes back and, with the higher priority, takes the address back
        pair.start_keepalived("a")
        pair.wait_master("a")


def wait_log(pair: Pair, d: str, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in pair.keepalived_log(d):
        assert time.monotonic() < deadline, f"no {text!r} in {d}'s log:\n{pair.keepalived_log(d)}"
        time.sleep(0.5)


def test_health_script_moves_the_vip_off_a_director_that_cannot_serve(pair: Pair) -> None:
    """The master's switch loses its configuration: `l7ctl health` exits 2
    (down), the script's failure lowers A's priority by 60 (150 -> 90, below
    B's 100) and B takes the address.  (The way back, A's script passing
    again after an apply, is left out: on 6.1 one run of the script begun
    as the apply ran did not end within keepalived's 120 s, not understood;
    the teardown restarts A without the script instead.)"""
    for d in ("a", "b"):
        pair.stop_keepalived(d)
    (pair.tmp / "keepalived-a.log").write_text("")
    (pair.tmp / "keepalived-b.log").write_text("")
    try:
        # Only A runs the script: in a run where both directors ran it
        # (then importing pyroute2: ~8 s CPU under emulation, every 2 s), no
        # run finished within keepalived's timeout (the cause not established).
        for d in ("a", "b"):
            pair.start_keepalived(d, script=d == "a")
        pair.wait_master("a")
        wait_log(pair, "a", "VRRP_Script(chk_ktcpvs) succeeded", SCRIPT_OUTAGE_MAX)
        client = Requester(pair, 100_000, SCRIPT_PERIOD)
        client.wait_answered(5, 60)
        event = time.monotonic()
        pair.flush("a")
        pair.wait_master("b", timeout=SCRIPT_OUTAGE_MAX)
        moved = time.monotonic()
        time.sleep(3.0)
        run = Run(client.stop(), event)
        wait_log(pair, "a", "VRRP_Script(chk_ktcpvs) failed", 10)
        assert_moved(pair, run, moved + 1.0)
        fig = report("health-script", run, pair)
        assert run.outage() < SCRIPT_OUTAGE_MAX, fig
    finally:
        # leave the pair as the fixture made it: the address on A
        for d in ("a", "b"):
            if d in pair.keepalived:
                pair.stop_keepalived(d)
        with contextlib.suppress(Exception):
            pair.apply("a")
        for d in ("a", "b"):
            pair.start_keepalived(d)
        pair.wait_master("a")
