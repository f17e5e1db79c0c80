"""Active health checks, run by the module itself (kmod/kt_check.c; docs/rules.md
"Health checks"), through the live switch.

The demo site's backends serve (img1 10.0.1.11 and img2 10.0.1.12 are echo
servers answering every request 200 with X-Backend); each test starts what
else it needs on the "flaky" backend 10.0.4.11: an echo server it stops and
starts again, or a server that accepts connections and never answers.  Every
test applies its own rules and puts the demo rules back afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from demo_site import Site, get, wait_for
from nsutil import in_netns
from topology import HERE, read_log, stop, wait_port

from l7ctl import health, netlink, stats
from l7ctl.apply import apply_file
from l7ctl.netlink import Client, Counters

FLAKY = "10.0.4.11"
ROOT = Path(__file__).resolve().parents[2]
KO = os.environ.get("KTCPVS_KO") or str(ROOT / "build" / "ktcpvs.ko")
T = TypeVar("T")

RULES = """
pool hc {
    scheduler rr;
    check http "GET /health" host "hc.example.com" interval 400ms timeout 400ms rise 2 fall 2;
    server 10.0.4.11:80;
    server 10.0.1.12:80;
}
pool silent { check http "GET /health" interval 300ms timeout 200ms rise 1 fall 1;
              server 10.0.4.11:81; server 10.0.1.11:80; }
pool tcpc { check tcp interval 200ms timeout 150ms rise 1 fall 1; server 10.0.4.11:82;
            server 10.0.1.11:80; }
pool plain { scheduler rr; server 10.0.1.11:80; server 10.0.1.12:80; }

service web listen 10.0.0.1:80 {
    timeout connect 1s;
    route hc if path prefix "/hc/";
    route silent if path prefix "/silent/";
    route tcpc if path prefix "/tcp/";
    route plain;
}
"""

# A pool whose only server fails its check (img1 answers 200, 3xx expected).
PICKY = RULES.replace(
    "pool plain {",
    'pool picky { check http "GET /health" expect 300-399 interval 200ms timeout 150ms'
    " rise 1 fall 1;\n             server 10.0.1.11:80; }\npool plain {",
).replace("    route plain;", '    route picky if path prefix "/picky/";\n    route plain;')


@dataclass
class Checks:
    """The demo site with RULES applied, and the processes a test started."""

    site: Site
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def director(self, fn: Callable[[], T]) -> T:
        return in_netns(self.site.topo.director.ns, fn)

    def client(self, fn: Callable[[], T]) -> T:
        return in_netns(self.site.topo.client.ns, fn)

    def apply(self, text: str) -> None:
        path = self.site.tmp / "checks.rules"
        path.write_text(text)
        self.director(lambda: apply_file(path))

    def start_echo(self, port: int = 80) -> tuple[subprocess.Popen[bytes], Path]:
        """An echo server on the flaky backend, named "flaky"."""
        log = self.site.tmp / f"flaky-{port}.jsonl"
        log.write_text("")
        topo = self.site.topo
        p = topo.spawn(
            topo.nodes["flaky"].ns,
            [sys.executable, str(HERE / "echo_server.py"), "--name", "flaky",
             "--listen", f"{FLAKY}:{port}", "--log", str(log)],
            f"flaky-{port}.out",
        )  # fmt: skip
        self.procs.append(p)
        wait_port(topo.nodes["flaky"].ns, FLAKY, port)
        return p, log

    def start_silent(self, port: int) -> subprocess.Popen[bytes]:
        """A server whose kernel completes connections; it never reads or answers."""
        topo = self.site.topo
        p = topo.spawn(
            topo.nodes["flaky"].ns,
            [sys.executable, "-c",
             "import socket, time\n"
             "s = socket.socket()\n"
             "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
             f"s.bind(('{FLAKY}', {port}))\n"
             "s.listen(1024)\n"
             "time.sleep(3600)\n"],
            f"silent-{port}.out",
        )  # fmt: skip
        self.procs.append(p)
        wait_port(topo.nodes["flaky"].ns, FLAKY, port)
        return p

    def server(self, pool: str, addr: str) -> Counters:
        rows = self.director(lambda: Client().stats())
        for r in rows:
            if r.kind == "server" and r.name == pool and r.address == addr:
                return r
        raise AssertionError(f"no server {addr} in pool {pool}: {rows}")

    def check_is(
        self, pool: str, addr: str, state: str, last: str | None = None, timeout: float = 30.0
    ) -> Counters:
        """Wait until the server's check state is `state` (and, given `last`,
        its last result is that)."""

        def reached() -> bool:
            c = self.server(pool, addr)
            return c.check == state and (last is None or c.check_last == last)

        ok = wait_for(reached, timeout)
        assert ok, self.server(pool, addr)
        return self.server(pool, addr)


@pytest.fixture
def checks(site: Site) -> Iterator[Checks]:
    """RULES applied; afterwards the flaky backend's processes are stopped and
    the demo rules applied again."""
    c = Checks(site)
    c.apply(RULES)
    try:
        yield c
    finally:
        for p in c.procs:
            stop(p)
        site.apply()


def request(path: str) -> tuple[int, str | None]:
    """One request on a new connection: its status and X-Backend (or None)."""
    r = get(path)
    return r.status, r.backend


def test_http_check_takes_a_stopped_server_out_and_back(checks: Checks) -> None:
    echo, log = checks.start_echo()
    up = checks.check_is("hc", f"{FLAKY}:80", "up")
    assert wait_for(lambda: checks.server("hc", f"{FLAKY}:80").check_last == "200", 10)
    # the check's request: GET /health with the pool's Host, closing
    assert wait_for(lambda: any(str(e["raw"]).startswith("GET /health HTTP/1.1\r\n")
                                and "\r\nHost: hc.example.com\r\n" in str(e["raw"])
                                and "\r\nConnection: close\r\n" in str(e["raw"])
                                for e in read_log(log)), 10)  # fmt: skip
    changes = checks.server("hc", f"{FLAKY}:80").check_changes
    stop(echo)
    down = checks.check_is("hc", f"{FLAKY}:80", "down")
    assert down.check_last in ("refused", "reset", "closed"), down.check_last
    assert down.check_changes == changes + 1
    # once marked down, no client sees an error: every request goes to img2
    got = checks.client(lambda: [request(f"/hc/{i}") for i in range(20)])
    assert got == [(200, "img2")] * 20
    # the health verdict: degraded, not down (img2 serves the pool)
    h = checks.director(health.read)
    assert h.code == health.DEGRADED, h
    assert f"hc {FLAKY}:80 down by its check" in h.reason, h.reason
    # back: rise (2) checks later it takes requests again
    checks.start_echo()
    again = checks.check_is("hc", f"{FLAKY}:80", "up")
    assert again.check_changes == changes + 2
    got = checks.client(lambda: [request(f"/hc/{i}") for i in range(4)])
    assert {b for _, b in got} == {"flaky", "img2"}, got  # (status, backend) of each
    assert up.check == "up"


def test_stopping_a_server_under_load_costs_at_most_the_requests_before_the_mark(
    checks: Checks,
) -> None:
    """Two servers, a stream of requests; the flaky one stops.  Errors are
    allowed only until the check marks it down (fall 2 x 400 ms): none after."""
    checks.start_echo()
    checks.check_is("hc", f"{FLAKY}:80", "up")
    results: list[tuple[float, int]] = []

    def load() -> list[tuple[float, int]]:
        out = []
        stop_at = time.monotonic() + 12
        while time.monotonic() < stop_at:
            t = time.monotonic()
            try:
                st, _ = request("/hc/load")
            except OSError:
                st = 0
            out.append((t, st))
        return out

    t = threading.Thread(target=lambda: results.extend(checks.client(load)))
    t.start()
    time.sleep(3)
    for p in checks.procs:
        stop(p)
    stopped = time.monotonic()
    checks.check_is("hc", f"{FLAKY}:80", "down")
    marked = time.monotonic()
    t.join(60)
    # CLOCK_MONOTONIC is one clock for every process of the guest
    late = [st for when, st in results if when > marked and st != 200]
    # (a 503 here with img2 down by its check: the guest too slow for its timeout)
    assert not late, (late, checks.server("hc", "10.0.1.12:80"))
    assert sum(1 for when, _ in results if when > marked) > 10
    assert marked - stopped < 10


def test_a_server_that_accepts_and_never_answers_is_down_by_timeout(checks: Checks) -> None:
    checks.start_silent(81)
    # the check runs from the apply on: before the server listens it is down
    # as "refused"; once the server accepts, each check runs out its timeout
    down = checks.check_is("silent", f"{FLAKY}:81", "down", last="timeout")
    assert down.check_last == "timeout"
    got = checks.client(lambda: [request(f"/silent/{i}")[1] for i in range(6)])
    assert got == ["img1"] * 6


def test_tcp_check_and_expect(checks: Checks) -> None:
    # nothing listens on 10.0.4.11:82: the connect is refused
    down = checks.check_is("tcpc", f"{FLAKY}:82", "down")
    assert down.check_last == "refused", down.check_last
    checks.start_silent(82)  # a TCP check passes once the server accepts
    up = checks.check_is("tcpc", f"{FLAKY}:82", "up")
    assert up.check_last == "connected"
    # img1 answers 200, the pool expects 300-399: down, the status as result
    checks.apply(PICKY)
    picky = checks.check_is("picky", "10.0.1.11:80", "down")
    assert picky.check_last == "200"
    assert checks.client(lambda: request("/picky/x"))[0] == 503
    assert checks.director(health.read).code == health.DOWN
    # servers of pools without a check have none
    assert checks.server("plain", "10.0.1.11:80").check == "none"


def test_check_changes_are_notified_and_exported(checks: Checks) -> None:
    echo, _ = checks.start_echo()
    checks.check_is("hc", f"{FLAKY}:80", "up")
    ready = checks.site.tmp / "subscribed"
    ready.unlink(missing_ok=True)
    got: list[list[tuple[Any, ...]]] = []

    def listen() -> list[tuple[Any, ...]]:
        sub = netlink.Subscription(netlink.MCGRP_CONFIG, "following check changes")
        ready.write_text("1")
        out = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not out:
            msgs, _ = sub.receive(1.0)
            for m in msgs:
                if m.cmd == netlink.CMD_CHECK:
                    out.append((bytes(m.get_attr("KTCPVS_A_OBJ_POOL")).decode(),
                                m.get_attr("KTCPVS_A_CHECK_STATE"),
                                m.get_attr("KTCPVS_A_CHECK_LAST")))  # fmt: skip
        sub.close()
        return out

    t = threading.Thread(target=lambda: got.append(checks.director(listen)))
    t.start()
    assert wait_for(ready.exists, 30)
    stop(echo)
    t.join(60)
    assert got and got[0], "no KTCPVS_CMD_CHECK notification"
    pool, state, last = got[0][0]
    assert (pool, state) == ("hc", 2) and last in ("refused", "reset", "closed"), got
    prom = checks.director(lambda: stats.format_prometheus(Client().stats(), Client().info()))
    assert f'ktcpvs_server_check_up{{pool="hc",address="{FLAKY}:80"}} 0' in prom
    assert 'ktcpvs_server_check_up{pool="hc",address="10.0.1.12:80"} 1' in prom


def test_apply_and_flush_mid_check(checks: Checks) -> None:
    """Checks in flight (a server that never answers, timeouts just under the
    interval) while configurations change: each apply takes the new checks and
    keeps the servers' state, a flush stops them all, nothing is left behind."""
    checks.start_silent(81)
    _, log = checks.start_echo()
    base = checks.director(lambda: Client().info().allocations)
    # down by a timeout, not by a refusal before the server listened: checks
    # that run out their time are what this test changes configurations under
    checks.check_is("silent", f"{FLAKY}:81", "down", last="timeout")
    for interval in ("100ms", "150ms", "250ms", "1s"):
        checks.apply(
            RULES.replace("interval 300ms timeout 200ms", f"interval {interval} timeout 90ms")
        )
        # the state carries over an apply: still down, at once
        assert checks.server("silent", f"{FLAKY}:81").check == "down"
        time.sleep(0.3)
    checks.apply(RULES.replace("check tcp interval 200ms timeout 150ms rise 1 fall 1;", ""))
    assert checks.server("tcpc", f"{FLAKY}:82").check == "none"
    checks.director(lambda: Client().flush())
    time.sleep(1)
    n = len(read_log(log))
    time.sleep(2)
    assert len(read_log(log)) == n, "checks went on after the flush"
    assert wait_for(lambda: checks.director(lambda: Client().info().allocations) <= base, 30)


def test_checks_end_with_their_namespace(tmp_path: Path) -> None:
    """A namespace's exit with checks in flight (one server silent, one
    unreachable) frees everything of it."""
    ns = f"kt-chk-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    procs = []
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        procs.append(subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c",
             "import socket, time\ns = socket.socket()\ns.bind(('127.0.0.1', 9000))\n"
             "s.listen(100)\ntime.sleep(600)\n"]))  # fmt: skip
        wait_port(ns, "127.0.0.1", 9000)
        base = Client().info().allocations
        rules = tmp_path / "ns.rules"
        rules.write_text(
            'pool p { check http "GET /" interval 100ms timeout 90ms; server 127.0.0.1:9000;'
            " server 192.0.2.1:9001; }\n"
            "service s listen 127.0.0.1:8080 { route p; }\n"
        )
        in_netns(ns, lambda: apply_file(rules))
        time.sleep(1)
        assert in_netns(ns, lambda: Client().info().allocations) > base
    finally:
        for p in procs:
            stop(p)
        subprocess.run(["ip", "netns", "del", ns], check=False)
    assert wait_for(lambda: Client().info().allocations == base, 60)


def test_unload_with_checks_in_flight(tmp_path: Path) -> None:
    """rmmod while checks wait on a silent server and an address that never answers:
    the module stops them and unloads without leaking (the runner fails on
    a kernel report or a leak message), and comes back."""
    ns = f"kt-chk-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    procs = []
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        # 198.51.100.0/24 goes into a dummy device: SYNs vanish, no answer
        subprocess.run(["ip", "-n", ns, "link", "add", "d0", "type", "dummy"], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "d0", "up"], check=True)
        subprocess.run(["ip", "-n", ns, "route", "add", "198.51.100.0/24", "dev", "d0"],
                       check=True)  # fmt: skip
        procs.append(subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c",
             "import socket, time\ns = socket.socket()\ns.bind(('127.0.0.1', 9000))\n"
             "s.listen(100)\ntime.sleep(600)\n"]))  # fmt: skip
        wait_port(ns, "127.0.0.1", 9000)
        rules = tmp_path / "ns.rules"
        rules.write_text(
            'pool p { check http "GET /" interval 30s timeout 20s; server 127.0.0.1:9000;'
            " server 198.51.100.1:9001; }\n"
            "service s listen 127.0.0.1:8080 { route p; }\n"
        )
        in_netns(ns, lambda: apply_file(rules))
        time.sleep(2)  # the first checks (within 1 s) are waiting now
        subprocess.run(["rmmod", "ktcpvs"], check=True, timeout=60)
    finally:
        subprocess.run(["insmod", str(KO)], check=False)
        for p in procs:
            stop(p)
        subprocess.run(["ip", "netns", "del", ns], check=False)
    dmesg = subprocess.run(["dmesg"], capture_output=True, text=True).stdout
    assert "allocations leaked" not in dmesg
    assert Client().info().service_count == 0  # loaded again, afresh
