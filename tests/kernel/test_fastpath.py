"""The softirq run: keep-alive requests are served from the socket callbacks.

A socket callback in softirq schedules the connection's tasklet, which reads,
parses, routes and sends at once (kmod/kt_conn.c); only what needs process
context -- a connect, a shutdown, a socket a process owns, memory that needs
reclaim, timeouts -- goes to the connection's work item.  These tests count
the work items the module runs (the workqueue_execute_start tracepoint) for
a number of keep-alive requests, with the fast path on and, as the control,
off (the module parameter `fastpath`), and check every answer either way.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from demo_site import Response, Site, check_routed, connect, read_responses
from worktrace import counting_work

PARAM = Path("/sys/module/ktcpvs/parameters/fastpath")


def set_fastpath(on: bool) -> None:
    PARAM.write_text("1" if on else "0")


@pytest.fixture
def fastpath(site: Site) -> Iterator[None]:
    site.apply()
    yield
    set_fastpath(True)


def requests(site: Site, paths: list[str]) -> list[Response]:
    """Each path in turn on one keep-alive connection, one answer at a time."""

    def run() -> list[Response]:
        out: list[Response] = []
        with connect() as s:
            for p in paths:
                s.sendall(f"GET {p} HTTP/1.1\r\nHost: www.example.com\r\n\r\n".encode())
                out.extend(read_responses(s, 1))
        return out

    result: list[Response] = site.client(run)
    return result


def test_keepalive_requests_take_no_work_item(site: Site, fastpath: None) -> None:
    n = 200
    paths = ["/index.html"] * n
    set_fastpath(False)
    with counting_work() as off:
        answers = requests(site, paths)
    check_routed(paths, answers)
    set_fastpath(True)
    with counting_work() as on:
        answers = requests(site, paths)
    check_routed(paths, answers)
    print(f"work items for {n} requests: fast path off {off[0]}, on {on[0]}")
    # off: one per direction of each request; on: the connect and the
    # client's first bytes (queued by the accept), nothing per request
    assert off[0] >= n
    assert on[0] <= n // 20


def test_switching_pools_per_request_stays_in_softirq(site: Site, fastpath: None) -> None:
    cycle = ["/cgi-bin/a.cgi", "/img/a.png", "/index.html"]
    warm = cycle * 4  # every server gets a backend connection to park
    requests(site, warm)
    paths = cycle * 50
    with counting_work() as on:
        answers = requests(site, warm + paths)
    check_routed(warm + paths, answers)
    print(f"work items for {len(warm + paths)} requests switching pools: {on[0]}")
    # the connects of the warm-up at most; then each request parks its
    # backend connection and takes an idle one to the next pool's server
    assert on[0] <= len(warm) + 10


def test_switching_the_fast_path_under_traffic_loses_nothing(site: Site, fastpath: None) -> None:
    paths = ["/cgi-bin/a.cgi", "/img/a.png", "/index.html"] * 40
    stop = threading.Event()

    def flip() -> None:
        on = False
        while not stop.is_set():
            set_fastpath(on)
            on = not on
            stop.wait(0.01)

    t = threading.Thread(target=flip)
    t.start()
    try:
        answers = requests(site, paths)
    finally:
        stop.set()
        t.join()
    check_routed(paths, answers)


def test_a_client_that_asked_to_close_takes_no_work_item(site: Site, fastpath: None) -> None:
    """A request with "Connection: close" and a length-delimited answer: the
    connection closes at once, from the softirq run, without lingering (a
    shutdown in the work item, then a read until the client closes).  The
    client gets its whole answer and then the end of the stream."""
    n = 20
    req = b"GET /index.html HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n"

    def run() -> list[Response]:
        answers = []
        for _ in range(n):
            with connect() as s:
                s.sendall(req)
                answers.extend(read_responses(s, 1))
                assert s.recv(1) == b""  # the end of the stream follows
        return answers

    site.client(run)  # the backend connections are made and parked
    with counting_work() as count:
        answers = site.client(run)
    check_routed(["/index.html"] * n, answers)
    assert all(a.headers.get("connection") == "close" for a in answers)
    print(f"work items for {n} new connections that asked to close: {count[0]}")
    # lingering took two per connection when this test came: the shutdown,
    # and the run its own state change queued (one since: the next test)
    assert count[0] <= n // 4


def test_a_lingering_close_takes_one_work_item(site: Site, fastpath: None) -> None:
    """An answer of the switch's own (400: a space before a field's colon)
    ends in a lingering close: the shutdown of the client's socket, which
    needs the work item, then reading until the client closes.  The state
    changes of that close itself (the shutdown's, then the client's ACK of
    the FIN) queue nothing: one work item per connection, where they took
    two."""
    n = 20

    def run() -> list[bytes]:
        out = []
        for _ in range(n):
            with connect() as s:
                s.sendall(b"GET /x HTTP/1.1\r\nHost : x\r\n\r\n")
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
                out.append(data)
        return out

    with counting_work() as count:
        answers = site.client(run)
    assert all(a.startswith(b"HTTP/1.1 400 ") for a in answers)
    print(f"work items for {n} connections closed lingering: {count[0]}")
    assert count[0] <= n + n // 2
