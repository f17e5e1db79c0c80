"""The zero-copy relay: bodies and tunnels pass as skbs, byte for byte, bounded.

Body bytes whose framing needs no look (the rest of a Content-Length body,
chunk data, a close-delimited body, a tunnel) are taken off the source
socket as cloned skbs and sent from their pages; the service's `spliced`
counter says how many bytes went that way.  Each test checks the bytes end
to end and that (almost) all of them were spliced -- only heads, chunk
lines and a request's or a short answer's body that arrived with its head
are copied.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bulk_server import CHUNKS, pattern
from demo_site import Site, connect, read_responses, wait_for
from topology import stop, wait_port

from l7ctl.netlink import Client, Counters

MIB = 1 << 20
FLAKY = "10.0.4.11"


@pytest.fixture
def bulk(site: Site) -> Iterator[None]:
    ns = site.topo.nodes["flaky"].ns
    script = str(Path(__file__).with_name("bulk_server.py"))
    p = site.topo.spawn(ns, [sys.executable, script, "--listen", f"{FLAKY}:80"], "bulk.out")
    wait_port(ns, FLAKY, 80)
    yield
    stop(p)
    p.wait()


def service(site: Site) -> Counters:
    (svc,) = [r for r in site.director(lambda: Client().stats()) if r.kind == "service"]
    return svc


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def fetch(site: Site, path: str) -> tuple[int, bytes]:
    def run() -> tuple[int, bytes]:
        with connect(timeout=120) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            (r,) = read_responses(s, 1)
            return r.status, r.body

    result: tuple[int, bytes] = site.client(run)
    return result


def test_content_length_download_is_spliced(site: Site) -> None:
    before = service(site)
    want = sha((site.docroot / "doc" / "big.bin").read_bytes())
    out = site.topo.exec(
        site.topo.client.ns, "sh", "-c", "curl -sS -m 300 http://10.0.0.1/doc/big.bin | sha256sum"
    ).stdout
    assert out.split()[0] == want
    after = service(site)
    # a Content-Length body longer than what came with its head is spliced
    # from its first byte (whether nginx sent the head apart or not)
    assert after.spliced - before.spliced == 64 * MIB
    assert after.bytes_out - before.bytes_out >= 64 * MIB


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_downloads_in_every_framing(site: Site, bulk: None, framing: str) -> None:
    n = 24 * MIB + 12345
    before = service(site)
    status, body = fetch(site, f"/flaky/{framing}/{n}")
    after = service(site)
    assert status == 200 and len(body) == n and body == pattern(n)
    spliced = after.spliced - before.spliced
    if framing == "chunked":
        # chunk lines are copied, and with them the start of each chunk's
        # data; the large chunks' data is spliced
        large = sum(c for c in CHUNKS if c >= 65536) / sum(CHUNKS)
        assert spliced >= n * large * 0.9
    else:
        assert spliced >= n - 16384


def test_a_body_that_did_not_all_come_with_its_head_is_spliced_whole(
    site: Site, bulk: None
) -> None:
    """The read that completes a response head takes the rest of what came
    into the pipe when a Content-Length body is longer than that: the whole
    body is spliced, none of it copied (the server sends head and body in
    one write).  A short body that came whole with its head is copied with
    it, to go out in one send."""
    for n, spliced in ((16384, 16384), (300_000, 300_000), (512, 0)):
        before = service(site)
        status, body = fetch(site, f"/flaky/length/{n}")
        after = service(site)
        assert status == 200 and body == pattern(n), n
        assert after.spliced - before.spliced == spliced, n
        assert after.bytes_out - before.bytes_out > n


def post_sink(site: Site, head: bytes, chunks: list[bytes]) -> dict[str, object]:
    def run() -> dict[str, object]:
        with connect(timeout=120) as s:
            s.sendall(head)
            for c in chunks:
                s.sendall(c)
            (r,) = read_responses(s, 1)
            assert r.status == 200
            result: dict[str, object] = json.loads(r.body)
            return result

    out: dict[str, object] = site.client(run)
    return out


def test_content_length_upload_is_spliced(site: Site, bulk: None) -> None:
    body = pattern(16 * MIB + 7)
    before = service(site)
    got = post_sink(
        site,
        f"POST /flaky/sink HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode(),
        [body[i : i + MIB] for i in range(0, len(body), MIB)],
    )
    after = service(site)
    assert got == {"sha256": sha(body), "length": len(body)}
    assert after.spliced - before.spliced >= len(body) - 16384


def test_chunked_upload_is_relayed_verbatim(site: Site, bulk: None) -> None:
    data = pattern(8 * MIB)
    cuts = [0, 1, 3 * MIB, 3 * MIB + 10, len(data)]
    parts = [data[a:b] for a, b in itertools.pairwise(cuts)]
    wire = b"".join(b"%x\r\n" % len(p) + p + b"\r\n" for p in parts) + b"0\r\nX-Trailer: t\r\n\r\n"
    before = service(site)
    got = post_sink(
        site,
        b"POST /flaky/sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        [wire[i : i + 100000] for i in range(0, len(wire), 100000)],
    )
    after = service(site)
    assert got == {"sha256": sha(wire), "length": len(wire)}
    assert after.spliced - before.spliced >= len(data) * 0.9


def test_expect_100_continue_end_to_end(site: Site, bulk: None) -> None:
    # The client sends the body only after the 100 came back through the
    # switch: the head must go to the server alone, and the interim response
    # must come back before the final one.
    body = pattern(2 * MIB)

    def run() -> tuple[bytes, dict[str, object]]:
        with connect(timeout=60) as s:
            s.sendall(
                b"POST /flaky/sink HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body)
            )
            interim = b""
            while not interim.endswith(b"\r\n\r\n"):
                d = s.recv(1)
                assert d, "connection closed before the 100 Continue"
                interim += d
            s.sendall(body)
            (r,) = read_responses(s, 1)
            assert r.status == 200
            return interim, json.loads(r.body)

    interim, got = site.client(run)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert got == {"sha256": sha(body), "length": len(body)}


def test_tunnel_carries_bulk_both_ways(site: Site, bulk: None) -> None:
    data = pattern(8 * MIB)
    before = service(site)

    def run() -> bytes:
        with connect(timeout=120) as s:
            s.sendall(b"GET /flaky/tunnel HTTP/1.1\r\nHost: x\r\nUpgrade: echo\r\n"
                      b"Connection: Upgrade\r\n\r\n")  # fmt: skip
            head = b""
            while b"\r\n\r\n" not in head:
                head += s.recv(1)
            assert head.startswith(b"HTTP/1.1 101 ")
            got = bytearray()

            def reader() -> None:
                while len(got) < len(data) and (d := s.recv(1 << 20)):
                    got.extend(d)

            t = threading.Thread(target=reader)
            t.start()
            s.sendall(data)
            t.join(120)
            return bytes(got)

    echoed = site.client(run)
    after = service(site)
    assert len(echoed) == len(data) and echoed == data
    assert after.spliced - before.spliced >= 2 * len(data) * 0.99


def test_slow_reader_holds_a_bounded_amount(site: Site) -> None:
    # A client that stops reading: the relay stops taking bytes off the
    # server's socket once its pipe (at most 64 skbs) is full; TCP's window
    # pushes back on the server.  Then everything arrives, byte for byte.
    want = sha((site.docroot / "doc" / "big.bin").read_bytes())
    base = site.director(lambda: Client().info().allocations)

    def run() -> tuple[int, str]:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.settimeout(120)
        s.connect(("10.0.0.1", 80))
        with s:
            s.sendall(b"GET /doc/big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            time.sleep(3)
            held = site.director(lambda: Client().info().allocations) - base
            data = bytearray()
            while d := s.recv(1 << 20):
                data.extend(d)
            body = bytes(data).split(b"\r\n\r\n", 1)[1]
            return held, sha(body)

    held, got = site.client(run)
    assert got == want
    # connection, buffers, parse context, pipe skbs (64 at most): not the
    # thousands of skbs 64 MiB would take
    assert held <= 64 + 16
    assert wait_for(lambda: site.director(lambda: Client().info().connections) == 0, 30)


def test_idle_connections_hold_no_buffers(site: Site) -> None:
    # Fresh connections that sent nothing, and keep-alive connections between
    # requests, hold their connection structure only: buffers and the parse
    # context are taken when bytes arrive and given back after a response.
    n = 40
    assert wait_for(lambda: site.director(lambda: Client().info().connections) == 0, 30)
    site.apply(header_timeout="11s")  # a new configuration retires idle backend connections

    def allocations() -> int:
        return int(site.director(lambda: Client().info().allocations))

    def backend_conns() -> int:
        out = site.topo.exec(
            site.topo.director.ns, "ss", "-Htn", "state", "established", "dst", "10.0.2.11:80"
        ).stdout
        return len(out.splitlines())

    def run() -> list[int]:
        # what the apply let go of after an RCU grace period is gone first
        base = allocations()
        for _ in range(20):
            time.sleep(0.5)
            if (now := allocations()) == base:
                break
            base = now
        fresh = [connect() for _ in range(n)]
        assert wait_for(lambda: site.director(lambda: Client().info().connections) == n, 30)
        held = [site.director(lambda: Client().info().allocations) - base]
        idle = [connect() for _ in range(n)]
        for s in idle:
            s.sendall(b"GET /cgi-bin/idle HTTP/1.1\r\nHost: x\r\n\r\n")
            (r,) = read_responses(s, 1)
            assert r.status == 200
        # a second after its answer, each gives its backend connection to the
        # cgi server's idle pool (40 < the pool's 64), where a later client's
        # request may take it again: at most one backend connection each
        time.sleep(2.5)
        held.append(site.director(lambda: Client().info().allocations) - base)
        held.append(backend_conns())
        for s in fresh + idle:
            s.close()
        return held

    try:
        fresh_held, both_held, backends = site.client(run)
    finally:
        site.apply()
    # each client its connection structure, each backend connection its own
    assert 1 <= backends <= n
    assert (fresh_held, both_held) == (n, 2 * n + backends)


def test_idle_clients_give_their_backend_connections_back(site: Site) -> None:
    # 80 keep-alive clients go idle after one answer each: their backend
    # connections go to the server's idle pool, which keeps 64 and closes the
    # rest; every client is still served afterwards.
    n = 80

    def backend_conns() -> int:
        out = site.topo.exec(
            site.topo.director.ns, "ss", "-Htn", "state", "established", "dst", "10.0.2.11:80"
        ).stdout
        return len(out.splitlines())

    def run() -> tuple[int, list[int]]:
        clients = [connect() for _ in range(n)]
        for s in clients:
            s.sendall(b"GET /cgi-bin/park HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_responses(s, 1)[0].status == 200
        time.sleep(2.5)
        conns = backend_conns()
        statuses = []
        for s in clients:
            s.sendall(b"GET /cgi-bin/again HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            statuses.append(read_responses(s, 1)[0].status)
            s.close()
        return conns, statuses

    conns, statuses = site.client(run)
    assert conns <= 64
    assert statuses == [200] * n
