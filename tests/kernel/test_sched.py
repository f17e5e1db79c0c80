"""The eight schedulers checked against their definitions, idle and under concurrent load."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import pytest
from demo_site import VIP, Site, connect, read_responses
from topology import HERE, read_log, wait_port


def spread(site: Site, paths: list[str]) -> list[str]:
    """The image server that answered each path, all on one keep-alive connection.

    One connection, so a request is scheduled only after the previous one ended
    and gave back its active count: every choice is made with an idle pool.
    """

    def run() -> list[str]:
        out = []
        with connect() as s:
            for p in paths:
                s.sendall(f"GET {p} HTTP/1.1\r\nHost: www.example.com\r\n\r\n".encode())
                (r,) = read_responses(s, 1)
                assert r.status == 200, (p, r.status)
                out.append(r.backend or "?")
        return out

    return site.client(run)  # type: ignore[no-any-return]


@pytest.mark.parametrize("sched", ["rr", "wrr", "lc", "wlc", "dh", "sh", "lblc", "lblcr"])
def test_scheduler_choices(site: Site, sched: str) -> None:
    """images: 10.0.1.11 weight 3 (img1), 10.0.1.12 weight 1 (img2); requests one at a time."""
    site.apply(sched=sched)
    try:
        same = spread(site, ["/same.png"] * 12)
        varied = spread(site, [f"/v{i}/x.png" for i in range(40)])
        again = spread(site, [f"/v{i}/x.png" for i in range(40)])
    finally:
        site.apply()
    n1 = varied.count("img1")
    if sched == "rr":
        assert n1 == 20  # strict alternation
    elif sched in ("wrr", "lc", "wlc"):
        # smooth WRR (wrr), and the tie-break of lc/wlc when nothing is in progress
        assert n1 == 30
    elif sched == "sh":
        assert len(set(same + varied)) == 1  # one client address: one server
    else:
        # dh, lblc, lblcr: a URL sticks to its server; many URLs use both servers
        assert len(set(same)) == 1
        assert 0 < n1 < 40
    if sched in ("dh", "sh", "lblc", "lblcr"):
        assert again == varied  # hashing or locality: the same choices the second time


M32 = 0xFFFFFFFF


def _rol(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & M32


def jhash(data: bytes, initval: int) -> int:
    """Linux's jhash() (include/linux/jhash.h) on a little-endian machine."""
    a = b = c = (0xDEADBEEF + len(data) + initval) & M32
    k = data
    while True:
        last = len(k) <= 12
        if last:
            if not k:
                return c
            k = k + bytes(12 - len(k))
        a = (a + int.from_bytes(k[0:4], "little")) & M32
        b = (b + int.from_bytes(k[4:8], "little")) & M32
        c = (c + int.from_bytes(k[8:12], "little")) & M32
        if last:
            break
        for x, y, z, r in ((0, 2, 1, 4), (1, 0, 2, 6), (2, 1, 0, 8), (0, 2, 1, 16),
                           (1, 0, 2, 19), (2, 1, 0, 4)):  # fmt: skip
            v = [a, b, c]  # __jhash_mix: v[x] -= v[y]; v[x] ^= rol(v[y], r); v[y] += v[z]
            v[x] = ((v[x] - v[y]) & M32) ^ _rol(v[y], r)
            v[y] = (v[y] + v[z]) & M32
            a, b, c = v
        k = k[12:]
    for x, y, r in ((2, 1, 14), (0, 2, 11), (1, 0, 25), (2, 1, 16), (0, 2, 4), (1, 0, 14),
                    (2, 1, 24)):  # fmt: skip
        v = [a, b, c]  # __jhash_final: v[x] ^= v[y]; v[x] -= rol(v[y], r)
        v[x] = ((v[x] ^ v[y]) - _rol(v[y], r)) & M32
        a, b, c = v
    return c


def test_jhash_is_the_kernels() -> None:
    # values of include/linux/jhash.h's jhash() built in user space, as kt_request.c hashes a key
    h = jhash(b"www.example.com", 0)
    assert [jhash(p, h) for p in (b"", b"/a", b"/k1/x.png")] == [1009079396, 88354136, 2050707465]
    assert jhash(b"/abcdefghijklmnopqrstuvwxyz/0123456789.png", h) == 3765066165


def colliding_keys(sets: int, per_set: int) -> list[str]:
    """Paths whose lblc key (kt_request.c: jhash(path, jhash(host, 0))) falls into the same set
    of the 256 x 4 table, per_set of them for each of `sets` sets."""
    host = jhash(b"www.example.com", 0)
    by_set: dict[int, list[str]] = {}
    i = 0
    while len([v for v in by_set.values() if len(v) >= per_set]) < sets:
        p = f"/k{i}/x.png"
        by_set.setdefault(jhash(p.encode(), host) % 256, []).append(p)
        i += 1
    full = [v[:per_set] for v in by_set.values() if len(v) >= per_set][:sets]
    return [p for v in full for p in v]


def test_lblc_keys_stick_through_table_evictions(site: Site) -> None:
    """Eight keys for each of eight sets of the 4-way lblc table: every key keeps its server.

    Twice as many keys as a set holds, asked for in the same order twice: with least
    recently used replacement every lookup of the second pass misses, so every key is
    scheduled afresh.  On an idle pool a new key's wlc choice is a tie between all
    servers, broken by rendezvous hashing of the key -- exactly dh's choice -- so an
    evicted key lands on the server it had.
    """
    keys = colliding_keys(8, 8)
    choices: dict[str, list[list[str]]] = {}
    try:
        for sched in ("dh", "lblc", "lblcr"):
            site.apply(sched=sched)
            choices[sched] = [spread(site, keys), spread(site, keys)]
    finally:
        site.apply()
    dh = choices["dh"][0]
    assert choices["dh"][1] == dh
    assert 0 < dh.count("img1") < len(keys)
    for sched in ("lblc", "lblcr"):
        for n, run in enumerate(choices[sched]):
            moved = [k for k, a, b in zip(keys, dh, run, strict=True) if a != b]
            assert not moved, f"{sched} pass {n + 1}: {len(moved)} keys moved, e.g. {moved[:5]}"


# -- under concurrent load -------------------------------------------------------------
#
# Three hold servers (echo_server.py --release-dir) on port 8080 of img1, img2 and cgi.  Requests
# carrying X-Hold stay in flight until the test releases them, so the number of
# active connections of every server is known exactly when the next request is
# scheduled: each choice is checked against the scheduler's definition, with no
# timing involved.

WEIGHTS = {"img1": 3, "img2": 1, "cgi": 2}
HOLD_RULES = """
pool held {{ scheduler {sched}; server 10.0.1.11:8080 weight 3; server 10.0.1.12:8080;
             server 10.0.2.11:8080 weight 2; }}
service web listen 10.0.0.1:80 {{ timeout backend 300s; route held; }}
"""


@dataclass
class Holders:
    site: Site
    logs: dict[str, Path]
    release_dir: Path

    def arrived(self) -> dict[str, str]:
        """X-Seq of every request the hold servers received -> the server."""
        out: dict[str, str] = {}
        for name, log in self.logs.items():
            for e in read_log(log):
                raw = str(e["raw"])
                for line in raw.split("\r\n"):
                    if line.lower().startswith("x-seq:"):
                        out[line.split(":", 1)[1].strip()] = name
        return out


@pytest.fixture(scope="module")
def holders(site_session: Site) -> Holders:
    site = site_session
    release_dir = site.tmp / "release"
    release_dir.mkdir(exist_ok=True)
    logs = {}
    for name in WEIGHTS:
        node = site.topo.nodes[name]
        logs[name] = site.topo.tmp / f"hold-{name}.jsonl"
        site.topo.spawn(
            node.ns,
            [sys.executable, str(HERE / "echo_server.py"), "--name", name,
             "--listen", f"{node.addr}:8080", "--log", str(logs[name]),
             "--release-dir", str(release_dir)],
            f"hold-{name}.out",
        )  # fmt: skip
    for name in WEIGHTS:
        wait_port(site.topo.nodes[name].ns, site.topo.nodes[name].addr, 8080)
    return Holders(site, logs, release_dir)


Loads = dict[str, int]


def wlc_least(loads: Loads) -> set[str]:
    ratio = {s: Fraction(loads[s], WEIGHTS[s]) for s in WEIGHTS}
    m = min(ratio.values())
    return {s for s in WEIGHTS if ratio[s] == m}


def lc_least(loads: Loads) -> set[str]:
    m = min(loads.values())
    return {s for s in WEIGHTS if loads[s] == m}


def overloaded(s: str, loads: Loads) -> bool:
    """LVS's is_overloaded(): over its weight while some server is under half of its own."""
    return loads[s] > WEIGHTS[s] and any(2 * loads[o] < WEIGHTS[o] for o in WEIGHTS)


class Lblc:
    """lblc for one key: keep its server unless overloaded, else the wlc choice."""

    def __init__(self) -> None:
        self.cur: str | None = None

    def allowed(self, loads: Loads) -> set[str]:
        if self.cur is not None and not overloaded(self.cur, loads):
            return {self.cur}
        return wlc_least(loads)

    def chose(self, s: str) -> None:
        self.cur = s


class Lblcr:
    """lblcr for one key: the least loaded of its set; an overloaded set grows by wlc."""

    def __init__(self) -> None:
        self.set: list[str] = []

    def _least(self, loads: Loads) -> set[str]:
        ratio = {s: Fraction(loads[s], WEIGHTS[s]) for s in self.set}
        m = min(ratio.values())
        return {s for s in self.set if ratio[s] == m}

    def allowed(self, loads: Loads) -> set[str]:
        if self.set:
            least = self._least(loads)
            if not overloaded(next(iter(least)), loads):
                return least
        return wlc_least(loads)

    def chose(self, s: str) -> None:
        if s not in self.set:
            self.set.append(s)  # three servers: the set of four never fills


@dataclass
class Step:
    seq: str
    loads: Loads
    server: str
    allowed: set[str]


def run_load(
    h: Holders, sched: str, n_held: int, n_fast: int, allowed: Callable[[Loads], set[str]],
    chose: Callable[[str], None], path: Callable[[int], str],
) -> list[Step]:  # fmt: skip
    """n_held requests held one after another, then n_fast on one keep-alive connection.

    Every held request is sent once the previous one arrived at its server, so the
    switch schedules it with the loads the test knows; the fast ones are answered at
    once and all see the final held loads.  Returns what happened at every step.
    """
    site = h.site
    token = f"t{time.monotonic_ns()}"
    site.apply_text(HOLD_RULES.format(sched=sched))
    steps: list[Step] = []
    socks: list[socket.socket] = []

    def held() -> list[Step]:
        loads = {s: 0 for s in WEIGHTS}
        out = []
        try:
            for i in range(n_held):
                seq = f"{token}-h{i}"
                ok = allowed(loads)
                s = socket.create_connection((VIP, 80), timeout=60)
                socks.append(s)
                s.sendall(
                    f"GET {path(i)} HTTP/1.1\r\nHost: www.example.com\r\n"
                    f"X-Seq: {seq}\r\nX-Hold: {token}\r\n\r\n".encode()
                )
                deadline = time.monotonic() + 60
                while (srv := h.arrived().get(seq)) is None:
                    assert time.monotonic() < deadline, f"request {seq} never reached a backend"
                    time.sleep(0.05)
                out.append(Step(seq, dict(loads), srv, ok))
                chose(srv)
                loads[srv] += 1
            with connect() as s:
                for i in range(n_fast):
                    seq = f"{token}-f{i}"
                    ok = allowed(loads)
                    s.sendall(
                        f"GET {path(n_held + i)} HTTP/1.1\r\nHost: www.example.com\r\n"
                        f"X-Seq: {seq}\r\n\r\n".encode()
                    )
                    (r,) = read_responses(s, 1)
                    assert r.status == 200 and r.backend, (r.status, r.headers)
                    out.append(Step(seq, dict(loads), r.backend, ok))
                    chose(r.backend)
            (h.release_dir / token).touch()
            for s in socks:  # the held requests complete once released
                (r,) = read_responses(s, 1)
                assert r.status == 200, r.status
            return out
        finally:
            (h.release_dir / token).touch()
            for s in socks:
                s.close()

    try:
        steps = site.client(held)
    finally:
        (h.release_dir / token).touch()
        site.apply()
    return steps


def check(steps: list[Step]) -> None:
    bad = [st for st in steps if st.server not in st.allowed]
    assert not bad, "\n".join(
        f"{st.seq}: loads {st.loads} -> {st.server}, allowed {sorted(st.allowed)}" for st in bad
    )


@pytest.fixture
def hold_site(site: Site, holders: Holders) -> Iterator[Holders]:
    yield holders


def test_lc_sends_each_request_to_a_server_with_the_fewest_active(hold_site: Holders) -> None:
    steps = run_load(
        hold_site, "lc", 12, 12, lambda loads: lc_least(loads), lambda s: None, lambda i: "/x"
    )
    check(steps)
    assert sorted(steps[11].loads.values()) == [3, 4, 4]  # before the 12th: spread evenly


def test_wlc_sends_each_request_to_the_least_active_per_weight(hold_site: Holders) -> None:
    steps = run_load(
        hold_site, "wlc", 12, 12, lambda loads: wlc_least(loads), lambda s: None, lambda i: "/x"
    )
    check(steps)
    # 12 held over weights 3:1:2 is 6:2:4; then every fast request has a three-way tie
    final = dict(steps[11].loads)
    final[steps[11].server] += 1
    assert final == {"img1": 6, "img2": 2, "cgi": 4}
    assert {st.server for st in steps[12:]} == {"img1", "img2", "cgi"}


@pytest.mark.parametrize("sched", ["lblc", "lblcr"])
def test_lblc_keeps_a_key_on_its_server_until_overloaded(hold_site: Holders, sched: str) -> None:
    model = Lblc() if sched == "lblc" else Lblcr()
    steps = run_load(hold_site, sched, 12, 6, model.allowed, model.chose, lambda i: "/one/key")
    check(steps)
    # the key did move: one server cannot take 12 held requests without being overloaded
    assert len({st.server for st in steps}) > 1
