"""Local answers: `answer STATUS "BODY" if ...;` rules are served by the
switch itself, no backend involved (docs/rules.md, docs/operations.md).

A request without a body on a keep-alive connection keeps its connection:
the next request (pipelined or later) is switched as usual.  A request with
a body is answered with Connection: close.  HEAD gets the length and no
body; 204 gets neither.  Every answer counts as "answered" in the service's
statistics.
"""

from __future__ import annotations

import json
import socket

from demo_site import VIP, Site, connect, read_responses

from l7ctl.netlink import Client

RULES = """
pool img { scheduler rr; server 10.0.1.11:80; server 10.0.1.12:80; }

service web listen 10.0.0.1:80 {
    answer 200 "ok\\n" if path exact "/healthz";
    answer 503 "maintenance \\"window\\"\\n" if path prefix "/maint/";
    answer 204 "" if path exact "/empty";
    route img;
}
"""


def answered(site: Site) -> int:
    rows = site.director(lambda: Client().stats())
    svc = next(r for r in rows if r.kind == "service" and r.name == "web")
    return int(svc.errors["answered"])


def raw_exchange(raw: bytes) -> bytes:
    """Send @raw on a new connection, read until the switch closes."""
    with socket.create_connection((VIP, 80), timeout=20) as s:
        s.sendall(raw)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def test_answer_rules_are_served_by_the_switch(site: Site) -> None:
    site.apply_text(RULES)
    try:
        before = answered(site)

        def ka() -> list[tuple[int, dict[str, str], bytes]]:
            with connect() as s:
                s.sendall(
                    b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                    b"GET /maint/now HTTP/1.1\r\nHost: x\r\n\r\n"
                    b"GET /img/a.png HTTP/1.1\r\nHost: x\r\n\r\n"
                    b"GET /empty HTTP/1.1\r\nHost: x\r\n\r\n"
                )
                rs = read_responses(s, 4)
                # still open: a later request on the same connection
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                rs += read_responses(s, 1)
            return [(r.status, r.headers, r.body) for r in rs]

        got = site.client(ka)
        assert [(st, body) for st, _, body in got if st != 200 or body == b"ok\n"] == [
            (200, b"ok\n"),
            (503, b'maintenance "window"\n'),
            (204, b""),
            (200, b"ok\n"),
        ], got
        h = got[0][1]
        assert h["content-length"] == "3" and "connection" not in h
        # the third went to a backend (an echo server: JSON with the request)
        assert got[2][0] == 200 and got[2][1]["x-backend"] in ("img1", "img2")
        assert json.loads(got[2][2])["raw"].startswith("GET /img/a.png HTTP/1.1\r\n")
        assert "content-length" not in got[3][1]
        # no backend saw the answered requests
        assert [r.split("\r\n")[0] for r in site.all_received()] == ["GET /img/a.png HTTP/1.1"]
        assert answered(site) - before == 4
    finally:
        site.apply()


def test_answers_to_head_and_to_requests_with_a_body(site: Site) -> None:
    site.apply_text(RULES)
    try:
        data = site.client(
            lambda: raw_exchange(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        )
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: 3" in head
        assert body == b""

        # a body the switch never reads: the answer closes the connection
        data = site.client(
            lambda: raw_exchange(
                b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                b"GET /img/b.png HTTP/1.1\r\nHost: x\r\n\r\n"
            )
        )
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close" in head
        assert body == b"ok\n"
        assert site.all_received() == []
    finally:
        site.apply()
