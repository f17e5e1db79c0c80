"""The access log end to end: records of real exchanges through the module.

Every test tags its requests with a path of its own (a fresh token), reads the
namespace's records back with KTCPVS_CMD_GET_LOG (l7ctl.accesslog decodes
them) or through `l7ctl log`, and compares them with what the client did:
addresses and ports, method, host, path, status, bytes each way, durations,
and how the exchange ended.  A module without the access log has no
records, so every test fails on it.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from demo_site import RULES, Site, connect, read_responses
from nsutil import in_netns

from l7ctl import netlink
from l7ctl.accesslog import LogRecord, records_of
from l7ctl.netlink import Client

T = TypeVar("T")

CLIENT = "10.0.0.2"
IMAGES = {"10.0.1.11", "10.0.1.12"}


def rules(log: str = "on", extra: str = "", catch_all: bool = True) -> str:
    """The demo site's rules with `log <log>;` and `extra` statements first in
    the service; without `catch_all`, only /index.html goes to the static pool."""
    text = RULES.format(sched="wlc", header_timeout="10s")
    head = "    x-forwarded-for on;\n"
    text = text.replace(head, f"{head}    log {log};\n{extra}")
    if not catch_all:
        text = text.replace(
            "    route static;\n", '    route static if path exact "/index.html";\n'
        )
    return text


def line_of(text: str, needle: str) -> int:
    """The line number (1-based) of the only line of `text` holding `needle`."""
    (n,) = [i for i, ln in enumerate(text.splitlines(), 1) if needle in ln]
    return n


def on_client(site: Site, fn: Callable[[], T]) -> T:
    return in_netns(site.topo.client.ns, fn)


def on_director(site: Site, fn: Callable[[], T]) -> T:
    return in_netns(site.topo.director.ns, fn)


def wait_for(pred: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    return pred()


def token() -> str:
    return uuid.uuid4().hex[:12]


def records(site: Site) -> list[LogRecord]:
    """The namespace's records, oldest first (a GET_LOG dump)."""

    def dump() -> list[LogRecord]:
        with Client() as c:
            msgs = c.log_dump()
        out: list[LogRecord] = []
        for recs, probs, _ in records_of(msgs):
            assert not probs, probs
            out += recs
        return out

    return on_director(site, dump)


def tagged(site: Site, tag: str, n: int = 1, timeout: float = 10.0) -> list[LogRecord]:
    """The records whose path holds `tag`, once there are at least `n` of them
    (the record leaves as the exchange ends, a moment after the client has its
    answer)."""
    found: list[LogRecord] = []

    def enough() -> bool:
        nonlocal found
        found = [r for r in records(site) if tag in r.path]
        return len(found) >= n

    wait_for(enough, timeout)
    return found


def dropped(site: Site) -> int:
    return int(on_director(site, lambda: Client().info().log_dropped))


def with_rules(site: Site, text: str, fn: Callable[[], T]) -> T:
    """Run fn with `text` applied; the demo site's rules afterwards."""
    site.apply_text(text)  # raises if refused
    try:
        return fn()
    finally:
        site.apply()


def raw_exchange(raw: bytes) -> tuple[int, int, bytes]:
    """Send `raw` on a new connection, read until the switch closes it:
    (the client's port, bytes sent, bytes received)."""
    with connect() as s:
        port = s.getsockname()[1]
        s.sendall(raw)
        got = bytearray()
        while chunk := s.recv(65536):
            got += chunk
    return port, len(raw), bytes(got)


def status_of(resp: bytes) -> int:
    return int(resp.split(b" ", 2)[1])


# ---- normal exchanges --------------------------------------------------------------------


def test_normal_requests_have_records_that_match_the_client(site: Site) -> None:
    tag = token()
    text = rules()
    image_line = line_of(text, "route images if type image/*;")
    cgi_line = line_of(text, 'route cgi    if path prefix "/cgi-bin/"')
    body = b"x" * 3000
    get = f"GET /img/{tag}/a.png?q=1 HTTP/1.1\r\nHost: www.example.com\r\n\r\n".encode()
    post = (
        f"POST /cgi-bin/{tag}/post HTTP/1.1\r\nHost: cgi.example.com\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body

    def run() -> tuple[int, int, int, bytes, bytes]:
        with connect() as s:
            port = s.getsockname()[1]
            before = time.time_ns()
            s.sendall(get)
            (r1,) = read_responses(s, 1)
            assert r1.status == 200
            s.sendall(post)
            rest = bytearray()
            while chunk := s.recv(65536):
                rest += chunk
            after = time.time_ns()
        return port, before, after, bytes(rest), r1.body

    port, before, after, rest, _ = with_rules(site, text, lambda: on_client(site, run))
    recs = tagged(site, tag, 2)
    assert len(recs) == 2, recs
    g, p = recs
    for r in (g, p):
        assert (r.client, r.client_port) == (CLIENT, port)
        assert r.service == "web"
        assert r.end == "normal" and r.status == 200
        assert before <= r.time_ns <= after
        assert 0 < r.first_byte_us <= r.total_us
        assert r.connect_us <= r.first_byte_us
        assert r.version == 11
    assert (g.method, g.host, g.path) == ("GET", "www.example.com", f"/img/{tag}/a.png")
    assert g.pool == "images" and g.server in IMAGES and g.server_port == 80
    assert g.rule_line == image_line
    assert g.bytes_in == len(get)
    assert (p.method, p.host, p.path) == ("POST", "cgi.example.com", f"/cgi-bin/{tag}/post")
    assert (p.pool, p.server, p.server_port) == ("cgi", "10.0.2.11", 80)
    assert p.rule_line == cgi_line
    assert p.bytes_in == len(post)
    # the POST's response is what the client read after the GET's response
    assert p.bytes_out == len(rest)
    assert g.bytes_out > 0
    assert g.time_ns <= p.time_ns


def test_bytes_out_is_what_the_client_received(site: Site) -> None:
    tag = token()
    raw = f"GET /img/{tag}/b.gif HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    port, sent, got = with_rules(site, rules(), lambda: on_client(site, lambda: raw_exchange(raw)))
    (r,) = tagged(site, tag)
    assert (r.client_port, r.bytes_in, r.bytes_out) == (port, sent, len(got))
    assert r.status == status_of(got) == 200


# ---- answers of the switch ---------------------------------------------------------------


def test_an_answer_rule_has_its_record(site: Site) -> None:
    tag = token()
    text = rules(extra='    answer 200 "pong\\n" if path prefix "/ping/";\n')
    line = line_of(text, "answer 200")
    raw = f"GET /ping/{tag} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    port, sent, got = with_rules(site, text, lambda: on_client(site, lambda: raw_exchange(raw)))
    assert status_of(got) == 200, got
    (r,) = tagged(site, tag)
    assert r.end == "answered" and r.status == 200
    assert r.rule_line == line
    assert (r.pool, r.server, r.server_port) == ("", "", 0)
    assert (r.client_port, r.bytes_in, r.bytes_out) == (port, sent, len(got))

    # on a keep-alive connection, answered in place: a record per answer
    tags = [token(), token()]
    ka = "".join(f"GET /ping/{t} HTTP/1.1\r\nHost: x\r\n\r\n" for t in tags).encode()

    def two() -> bytes:
        with connect() as s:
            s.sendall(ka)
            data = b""
            while data.count(b"pong") < 2:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            return data

    got = with_rules(site, text, lambda: on_client(site, two))
    assert got.count(b"HTTP/1.1 200 OK") == 2, got
    for t in tags:
        (r,) = tagged(site, t)
        assert (r.end, r.status, r.bytes_out) == ("answered", 200, len(got) // 2)


def test_refusals_and_failures_have_records(site: Site) -> None:
    text = rules(catch_all=False)
    block_line = line_of(text, "block 403")
    redirect_line = line_of(text, "redirect 301")
    nowhere_line = line_of(text, "route nowhere")
    tags = {k: token() for k in ("block", "none", "redirect", "nowhere", "empty")}
    reqs = {
        "block": f"GET /{tags['block']} HTTP/1.1\r\nHost: x\r\nUser-Agent: sqlmap/1\r\n\r\n",
        "none": f"GET /{tags['none']} HTTP/1.1\r\nHost: x\r\n\r\n",
        "redirect": f"GET /old/{tags['redirect']} HTTP/1.1\r\nHost: x\r\n\r\n",
        "nowhere": f"GET /nowhere/{tags['nowhere']} HTTP/1.1\r\nHost: x\r\n\r\n",
        "empty": f"GET /empty/{tags['empty']} HTTP/1.1\r\nHost: x\r\n\r\n",
    }

    def run() -> dict[str, tuple[int, int, bytes]]:
        return {k: raw_exchange(v.encode()) for k, v in reqs.items()}

    got = with_rules(site, text, lambda: on_client(site, run))
    want = {
        "block": (403, "refused", block_line, ""),
        "none": (404, "refused", 0, ""),
        "redirect": (301, "refused", redirect_line, ""),
        "nowhere": (502, "server_error", nowhere_line, "nowhere"),
        "empty": (503, "refused", line_of(text, "route empty"), "empty"),
    }
    for k, (status, end, line, pool) in want.items():
        port, sent, resp = got[k]
        assert status_of(resp) == status, (k, resp[:60])
        (r,) = tagged(site, tags[k])
        assert (r.status, r.end, r.rule_line, r.pool) == (status, end, line, pool), (k, r)
        assert (r.client_port, r.bytes_in, r.bytes_out) == (port, sent, len(resp)), (k, r)
        assert r.method == "GET" and r.host == "x"
    (r,) = tagged(site, tags["nowhere"])
    assert (r.server, r.server_port) == ("10.0.2.11", 81)


def test_a_client_abort_has_its_record(site: Site) -> None:
    """The client sends a part of a request body and goes away."""
    tag = token()
    head = (f"POST /cgi-bin/{tag} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n").encode()
    raw = head + b"y" * 1000

    def run() -> int:
        s = connect()
        port = int(s.getsockname()[1])
        s.sendall(raw)
        time.sleep(1.0)  # the switch relays what came
        s.close()
        return port

    port = with_rules(site, rules(), lambda: on_client(site, run))
    (r,) = tagged(site, tag)
    assert r.end == "client_abort" and r.status == 0
    assert (r.client_port, r.bytes_in, r.bytes_out) == (port, len(raw), 0)
    assert (r.method, r.pool, r.server) == ("POST", "cgi", "10.0.2.11")


# ---- the service's log mode -------------------------------------------------------------


def keep_alive_gets(paths: list[str]) -> int:
    """GET each path on one keep-alive connection: the number of 200s."""
    ok = 0
    with connect() as s:
        for p in paths:
            s.sendall(f"GET {p} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            (r,) = read_responses(s, 1)
            ok += r.status == 200
    return ok


def test_log_off_gives_no_record(site: Site) -> None:
    tag = token()
    paths = [f"/img/{tag}/{i}.png" for i in range(20)]

    def run() -> list[LogRecord]:
        assert on_client(site, lambda: keep_alive_gets(paths)) == len(paths)
        time.sleep(1.0)  # a batch leaves at the latest 250 ms after its first record
        return [r for r in records(site) if tag in r.path]

    assert with_rules(site, rules("off"), run) == []
    # ... and the same requests are logged once the service logs again
    assert on_client(site, lambda: keep_alive_gets(paths)) == len(paths)
    assert len(tagged(site, tag, len(paths))) == len(paths)


def test_sample_logs_about_one_request_in_n(site: Site) -> None:
    tag = token()
    n, every = 400, 4
    paths = [f"/img/{tag}/{i}.png" for i in range(n)]

    def run() -> int:
        assert on_client(site, lambda: keep_alive_gets(paths)) == n
        time.sleep(1.0)
        return len([r for r in records(site) if tag in r.path])

    got = with_rules(site, rules(f"sample {every}"), run)
    # binomial(400, 1/4): mean 100, standard deviation 8.7; this is +-6 of them
    assert 48 <= got <= 152, got


# ---- through the CLI -------------------------------------------------------------------------


ROOT = Path(__file__).resolve().parents[2]
# The CLI starts slowly in the guest: its imports come over 9p from the host.
CLI_START = 180.0


def l7ctl_argv(site: Site, *args: str) -> list[str]:
    """`l7ctl ARGS` of this tree (not whichever l7ctl is installed), in the
    director's namespace."""
    return ["ip", "netns", "exec", site.topo.director.ns, sys.executable, "-m", "l7ctl.cli", *args]


def cli_env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT))


@pytest.mark.timeout(400)
def test_l7ctl_log_json(site: Site) -> None:
    tag = token()
    raw = f"GET /img/{tag}/c.jpg HTTP/1.1\r\nHost: img.example.com\r\nConnection: close\r\n\r\n"
    port, sent, got = with_rules(
        site, rules(), lambda: on_client(site, lambda: raw_exchange(raw.encode()))
    )
    tagged(site, tag)  # it is there
    out = subprocess.run(
        l7ctl_argv(site, "log", "--json"), capture_output=True, text=True, timeout=CLI_START,
        check=True, env=cli_env(),
    ).stdout  # fmt: skip
    mine = [json.loads(ln) for ln in out.splitlines() if tag in ln]
    assert len(mine) == 1, out[-2000:]
    j = mine[0]
    assert (j["client"], j["client_port"], j["method"], j["host"]) == (
        CLIENT, port, "GET", "img.example.com"
    )  # fmt: skip
    assert (j["path"], j["status"], j["end"], j["pool"]) == (
        f"/img/{tag}/c.jpg",
        200,
        "normal",
        "images",
    )
    assert (j["bytes_in"], j["bytes_out"], j["version"]) == (sent, len(got), "HTTP/1.1")


@pytest.mark.timeout(400)
def test_l7ctl_log_follow_prints_new_records(site: Site) -> None:
    first, second = token(), token()
    site.apply_text(rules())
    proc = subprocess.Popen(
        l7ctl_argv(site, "log", "--follow", "--json"), stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, env=cli_env(),
    )  # fmt: skip
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    out = bytearray()

    def seen(tag: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while tag.encode() not in out and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.2)[0]:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                out.extend(chunk)
        return tag.encode() in out

    try:
        # a record from before it started: in its dump, which it prints once subscribed
        on_client(site, lambda: keep_alive_gets([f"/img/{first}/x.png"]))
        tagged(site, first)
        # (the dump may run before the record is in: then it comes by multicast)
        assert seen(first, CLI_START), bytes(out[-2000:])
        on_client(site, lambda: keep_alive_gets([f"/img/{second}/y.png"]))
        assert seen(second, 20), bytes(out[-2000:])
        line = next(ln for ln in bytes(out).splitlines() if second.encode() in ln)
        j = json.loads(line)
        assert (j["client"], j["status"], j["end"]) == (CLIENT, 200, "normal")
    finally:
        proc.terminate()
        proc.wait(10)
        site.apply()
    # each record printed once
    assert bytes(out).count(second.encode()) == 1


# ---- a listener that does not read --------------------------------------------------------

SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_BROADCAST_ERROR = 4


def test_a_listener_that_does_not_read_costs_drops_not_memory(site: Site) -> None:
    """A subscriber to the "log" group with a tiny buffer that never reads: the
    batches it has no room for are counted as dropped (it asked to be told, as
    l7ctl does), and the module's memory stays where it was."""
    tag = token()
    paths = [f"/img/{tag}/{i:04d}/{'p' * 100}.png" for i in range(600)]

    def run() -> tuple[int, int, int, int]:
        # the same traffic first, so that the servers' idle connections it
        # leaves (module allocations too) are there before the count
        assert in_netns(site.topo.client.ns, lambda: keep_alive_gets(paths[:50])) == 50
        time.sleep(1.0)
        with Client() as c:
            gid = c.group_id(netlink.MCGRP_LOG)
            info = c.info()
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, netlink.NETLINK_GENERIC)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # the minimum
            s.bind((0, 0))
            s.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, gid)
            s.setsockopt(SOL_NETLINK, NETLINK_BROADCAST_ERROR, 1)
            assert in_netns(site.topo.client.ns, lambda: keep_alive_gets(paths)) == len(paths)
            # the connection's release and the last batch are moments behind
            wait_for(lambda: Client().info().allocations <= info.allocations, 5)
            after = Client().info()
        finally:
            s.close()
        return info.log_dropped, after.log_dropped, info.allocations, after.allocations

    drop0, drop1, alloc0, alloc1 = with_rules(site, rules(), lambda: on_director(site, run))
    # 600 records of ~230 bytes are ~17 batches of 8 KiB: the socket takes the
    # first, the others find it full
    assert drop1 - drop0 >= 300, (drop0, drop1)
    # nothing piled up in the module: the ~17 batches the listener missed are gone
    assert alloc1 - alloc0 <= 2, (alloc0, alloc1)
    # the ring has them all the same
    assert len(tagged(site, tag, len(paths))) >= 600 - 5
    assert dropped(site) >= drop1


def test_the_ring_is_bounded(site: Site) -> None:
    """More records than the ring holds: a dump gives the newest KTCPVS_LOG_RING."""
    tag = token()
    n = 1100
    paths = [f"/img/{tag}/{i:05d}.png" for i in range(n)]

    def run() -> list[LogRecord]:
        assert on_client(site, lambda: keep_alive_gets(paths)) == n
        time.sleep(1.0)
        return [r for r in records(site) if tag in r.path]

    got = with_rules(site, rules(), run)
    assert len(got) == 1024, len(got)
    assert [r.path for r in got] == paths[n - 1024 :]
