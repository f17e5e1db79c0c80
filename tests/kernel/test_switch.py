"""The content switch end to end: real module, real sockets, real backends."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
from demo_site import Response, Site, connect, exchange, get, read_responses, wait_for
from nsutil import in_netns
from topology import stop

from l7ctl.netlink import Client, Counters

KO = os.environ.get("KTCPVS_KO") or str(Path(__file__).resolve().parents[2] / "build" / "ktcpvs.ko")

IMAGES = {"img1", "img2"}


def echoed(r: Response) -> str:
    assert r.status == 200, (r.status, r.body[:200])
    return str(json.loads(r.body)["raw"])


def test_images_cgi_and_static_go_to_their_pools(site: Site) -> None:
    r = site.client(lambda: get("/img/logo.png"))
    assert r.status == 200 and r.backend in IMAGES
    assert echoed(r).startswith("GET /img/logo.png HTTP/1.1\r\n")
    r = site.client(lambda: get("/cgi-bin/search.cgi?q=1"))
    assert r.backend == "cgi"
    assert echoed(r).startswith("GET /cgi-bin/search.cgi?q=1 HTTP/1.1\r\n")
    r = site.client(lambda: get("/index.html"))
    assert r.status == 200 and r.backend == "static" and r.body == b"<h1>static</h1>\n"
    r = site.client(lambda: get("/", host="img.example.com"))
    assert r.backend in IMAGES


def test_curl_through_the_switch(site: Site) -> None:
    out = site.topo.exec(
        site.topo.client.ns, "curl", "-sS", "-m", "30", "-o", "/dev/null", "-w",
        "%{http_code} %header{x-backend}", "http://10.0.0.1/a/b/photo.JPG",
    ).stdout  # fmt: skip
    code, backend = out.split()
    assert code == "200" and backend in IMAGES


def test_x_forwarded_for_is_added(site: Site) -> None:
    raw = echoed(site.client(lambda: get("/cgi-bin/x")))
    assert "\r\nX-Forwarded-For: 10.0.0.2\r\n\r\n" in raw


def test_keep_alive_routes_every_request_afresh(site: Site) -> None:
    paths = ["/a.png", "/cgi-bin/env", "/b.gif", "/index.html", "/run.cgi", "/c.jpeg"]

    def run() -> list[Response]:
        out = []
        with connect() as s:
            for p in paths:
                s.sendall(f"GET {p} HTTP/1.1\r\nHost: www.example.com\r\n\r\n".encode())
                out += read_responses(s, 1)
        return out

    rs = site.client(run)
    assert [r.status for r in rs] == [200] * len(paths)
    kinds = ["img" if r.backend in IMAGES else r.backend for r in rs]
    assert kinds == ["img", "cgi", "img", "static", "cgi", "img"]


def test_pipelined_requests_are_answered_in_order(site: Site) -> None:
    paths = ["/p1.png", "/cgi-bin/p2", "/p3.webp", "/p4.cgi"]
    raw = b"".join(f"GET {p} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for p in paths)
    rs = site.client(lambda: exchange(raw, n=len(paths)))
    assert [echoed(r).split(" ")[1] for r in rs] == paths
    assert [r.backend == "cgi" for r in rs] == [False, True, False, True]


def test_request_bodies_content_length_and_chunked(site: Site) -> None:
    body = bytes(range(256)) * 300
    raw = (
        f"POST /cgi-bin/upload HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    r = site.client(lambda: exchange(raw))[0]
    got = echoed(r).encode("latin-1")
    assert got.endswith(b"\r\n\r\n" + body)
    chunked = (
        b"POST /cgi-bin/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: t\r\n\r\n"
    )
    r = site.client(lambda: exchange(chunked))[0]
    assert (
        echoed(r)
        .encode("latin-1")
        .endswith(b"\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: t\r\n\r\n")
    )


def test_64_mib_download_is_byte_exact(site: Site) -> None:
    want = hashlib.sha256((site.docroot / "doc" / "big.bin").read_bytes()).hexdigest()
    out = site.topo.exec(
        site.topo.client.ns, "sh", "-c",
        "curl -sS -m 300 http://10.0.0.1/doc/big.bin | sha256sum",
    ).stdout  # fmt: skip
    assert out.split()[0] == want


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (
            b"GET /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked"
            b"\r\n\r\n",
            400,
        ),
        (b"GET /x HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET /x HTTP/1.1\r\nHost : x\r\n\r\n", 400),
        (b"GET /x HTTP/1.1\nHost: x\n\n", 400),
        (b"GET /x HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /x HTTP/1.1\r\nHost: x\r\nUser-Agent: sqlmap/1.0\r\n\r\n", 403),
    ],
)
def test_refused_requests_never_reach_a_backend(site: Site, raw: bytes, status: int) -> None:
    rs = site.client(lambda: exchange(raw))
    assert len(rs) == 1 and rs[0].status == status
    assert rs[0].headers.get("connection") == "close"
    time.sleep(0.5)
    assert site.all_received() == []


def test_redirect_rule(site: Site) -> None:
    r = site.client(lambda: get("/old/page"))
    assert r.status == 301 and r.headers["location"] == "https://www.example.com/new/"
    assert site.all_received() == []


def test_unreachable_and_empty_pools(site: Site) -> None:
    assert site.client(lambda: get("/nowhere/x")).status == 502
    assert site.client(lambda: get("/empty/x")).status == 503


def test_header_timeout_answers_408(site: Site) -> None:
    site.apply(header_timeout="1s")

    def slow() -> list[Response]:
        with connect() as s:
            s.sendall(b"GET /cgi-bin/slow HTTP/1.1\r\nHost: x\r\n")
            return read_responses(s, 1)

    try:
        rs = site.client(slow)
        assert [r.status for r in rs] == [408]
        assert site.all_received() == []
    finally:
        site.apply()


def test_counters(site: Site) -> None:
    def snapshot() -> dict[tuple[str, str, str], Counters]:
        return {(r.kind, r.name, r.address): r for r in site.director(lambda: Client().stats())}

    before = snapshot()
    for p in ("/a.png", "/b.png", "/cgi-bin/c"):
        assert site.client(lambda p=p: get(p)).status == 200
    site.client(lambda: exchange(b"BAD\r\n\r\n"))
    after = snapshot()

    def delta(key: tuple[str, str, str], attr: str) -> int:
        return int(getattr(after[key], attr)) - int(getattr(before[key], attr))

    svc = ("service", "web", "10.0.0.1:80")
    assert delta(svc, "requests") == 3 and delta(svc, "conns") == 4
    assert after[svc].errors["parse"] - before[svc].errors["parse"] == 1
    assert delta(("pool", "images", ""), "requests") == 2
    assert delta(("pool", "cgi", ""), "requests") == 1
    img = [k for k in after if k[0] == "server" and k[1] == "images"]
    assert sum(delta(k, "requests") for k in img) == 2
    assert after[svc].active == 0


def test_reapply_same_file_changes_nothing(site: Site) -> None:
    assert not site.apply().changed


def test_backend_that_resets_mid_response(site: Site) -> None:
    # A backend that sends a partial response then closes: the client must
    # see the connection cut, never a complete-looking response.
    srv = site.topo.spawn(
        site.topo.nodes["flaky"].ns,
        ["python3", "-c",
         "import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
         "s.bind(('10.0.4.11',80));s.listen(8)\n"
         "while True:\n c,_=s.accept();c.recv(65536);"
         "c.sendall(b'HTTP/1.1 200 OK\\r\\nContent-Length: 100\\r\\n\\r\\npartial');c.close()"],
        "reset-server.out",
    )  # fmt: skip
    from topology import wait_port

    wait_port(site.topo.nodes["flaky"].ns, "10.0.4.11", 80)

    def run() -> tuple[int, bytes]:
        with connect() as s:
            s.sendall(b"GET /flaky/x HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            return len(data), data

    _, data = site.client(run)
    stop(srv)
    assert data.startswith(b"HTTP/1.1 200 OK") and data.endswith(b"partial")


def flaky_server(site: Site, body: str) -> subprocess.Popen[bytes]:
    """Run a misbehaving Python server on the flaky backend, port 80."""
    from topology import wait_port

    code = (
        "import socket,time\n"
        "s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
        "s.bind(('10.0.4.11',80));s.listen(64)\n"
        "while True:\n c,_=s.accept()\n" + body
    )
    p = site.topo.spawn(site.topo.nodes["flaky"].ns, ["python3", "-c", code], "flaky.out")
    wait_port(site.topo.nodes["flaky"].ns, "10.0.4.11", 80)
    return p


def test_backend_that_stalls_gets_504(site: Site) -> None:
    srv = flaky_server(site, " c.recv(65536); time.sleep(60)\n")
    try:
        r = site.client(lambda: get("/flaky/stall"))
    finally:
        stop(srv)
    assert r.status == 504


def test_client_reset_mid_upload(site: Site) -> None:
    def upload_and_reset() -> None:
        s = connect()
        s.sendall(b"POST /cgi-bin/up HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        s.sendall(b"x" * 5000)
        time.sleep(0.5)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()  # RST

    site.client(upload_and_reset)
    # The switch drops the backend connection: the backend never sees a
    # complete request, and the switch carries on serving.
    time.sleep(1)
    assert site.received("cgi") == []
    assert site.client(lambda: get("/cgi-bin/after")).status == 200
    assert wait_for(lambda: site.director(lambda: Client().info().connections) == 0, 30)


def test_unload_with_live_connections(site: Site) -> None:
    n = 1000
    # Idle connections and connections in the middle of a request head, held
    # by a process in the client namespace while the module unloads.
    holder = site.topo.spawn(
        site.topo.client.ns,
        ["python3", "-c",
         "import socket,time\n"
         f"s=[socket.create_connection(('10.0.0.1',80)) for _ in range({n})]\n"
         "[x.sendall(b'GET /cgi-bin/x HTTP/1.1\\r\\nHost: x\\r\\n') for x in s[::2]]\n"
         "time.sleep(600)"],
        "holder.out",
    )  # fmt: skip
    try:
        assert wait_for(lambda: site.director(lambda: Client().info().connections) >= n, 300)
        subprocess.run(["rmmod", "ktcpvs"], check=True)
        subprocess.run(["insmod", KO], check=True)
    finally:
        stop(holder)
    info = site.director(lambda: Client().info())
    assert info.connections == 0 and info.allocations == 0


def test_status_shows_the_running_configuration(site: Site) -> None:
    out = site.topo.exec(site.topo.director.ns, "l7ctl", "status").stdout
    assert "service web listen 10.0.0.1:80" in out
    assert "pool images scheduler wlc" in out
    assert "server 10.0.1.11:80 weight 3 up" in out
    assert "site.rules" in out


def test_malformed_blob_is_refused_and_the_running_config_stays(site: Site) -> None:
    from l7ctl.errors import L7ctlError

    def push(blob: bytes) -> str:
        with Client() as c:
            before = c.info().generation
            try:
                c.push_config(blob)
            except L7ctlError as e:
                assert c.info().generation == before
                return str(e)
            return "accepted"

    good = site.director(lambda: Client().running_config())
    assert good is not None
    blob = bytearray(good[0])
    assert "applying the configuration failed" in site.director(lambda: push(b"\0" * 64))
    # total length, section count, a section offset, a section count
    for word in (2, 4, 10, 13):
        bad = bytearray(blob)
        bad[4 * word : 4 * word + 4] = b"\xff\xff\xff\x7f"
        assert site.director(lambda bad=bytes(bad): push(bad)) != "accepted"
    assert site.director(lambda: push(bytes(blob[:-4]))) != "accepted"  # truncated
    # still serving with the old configuration
    assert site.client(lambda: get("/cgi-bin/still")).backend == "cgi"
    assert site.director(lambda: Client().running_config()) == good


def test_server_set_down_and_up(site: Site) -> None:
    def images_backends(n: int) -> set[str]:
        return {site.client(lambda i=i: get(f"/s{i}.png")).backend or "?" for i in range(n)}

    site.director(lambda: Client().server_set("images", "10.0.1.12:80", state="down"))
    try:
        assert images_backends(6) == {"img1"}
        status = site.topo.exec(site.topo.director.ns, "l7ctl", "status").stdout
        assert "server 10.0.1.12:80 weight 1 down" in status
    finally:
        site.director(lambda: Client().server_set("images", "10.0.1.12:80", state="up"))
    site.director(lambda: Client().server_set("images", "10.0.1.11:80", weight=0))
    assert images_backends(4) == {"img2"}
    site.apply()  # an apply restores what the file says


def test_server_set_unknown_server_is_an_error(site: Site) -> None:
    from l7ctl.errors import L7ctlError

    def bad() -> str:
        try:
            Client().server_set("images", "10.9.9.9:80", state="down")
        except L7ctlError as e:
            return str(e)
        return "accepted"

    assert site.director(bad) == "no server 10.9.9.9:80 in pool 'images'"


def test_head_then_get_on_one_connection(site: Site) -> None:
    def run() -> list[Response]:
        with connect() as s:
            s.sendall(b"HEAD /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
            out = read_responses(s, 1, head=True)
            s.sendall(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
            return out + read_responses(s, 1)

    head, get_ = site.client(run)
    assert head.status == 200 and head.body == b"" and head.backend == "static"
    assert int(head.headers["content-length"]) == len(b"<h1>static</h1>\n")
    assert get_.body == b"<h1>static</h1>\n"


def test_upgrade_becomes_a_two_way_tunnel(site: Site) -> None:
    srv = flaky_server(
        site,
        " c.recv(65536)\n"
        " c.sendall(b'HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: echo\\r\\n"
        "Connection: Upgrade\\r\\n\\r\\n')\n"
        " while (d := c.recv(65536)):\n"
        "  c.sendall(d.upper())\n"
        " c.close()\n",
    )

    def run() -> tuple[bytes, list[bytes]]:
        with connect() as s:
            s.sendall(b"GET /flaky/ws HTTP/1.1\r\nHost: x\r\nUpgrade: echo\r\n"
                      b"Connection: Upgrade\r\n\r\n")  # fmt: skip
            head = b""
            while b"\r\n\r\n" not in head:
                head += s.recv(1)
            echoes = []
            for word in (b"hello", b"tunnel " * 3000):
                s.sendall(word)
                got = b""
                while len(got) < len(word):
                    got += s.recv(65536)
                echoes.append(got)
            return head, echoes

    try:
        head, echoes = site.client(run)
    finally:
        stop(srv)
    assert head.startswith(b"HTTP/1.1 101 ")
    assert echoes == [b"HELLO", b"TUNNEL " * 3000]


def pool_conns(pool: str) -> int:
    """Backend connections the switch has opened to POOL's servers (this namespace)."""
    return sum(r.conns for r in Client().stats() if r.kind == "server" and r.name == pool)


def test_backend_connections_are_shared_between_client_connections(site: Site) -> None:
    def one_client() -> int:
        with connect() as s:  # keep-alive request, then the client goes away
            s.sendall(b"GET /cgi-bin/share HTTP/1.1\r\nHost: x\r\n\r\n")
            (r,) = read_responses(s, 1)
            return r.status

    before = site.director(lambda: pool_conns("cgi"))
    for _ in range(4):
        assert site.client(one_client) == 200
        time.sleep(0.5)  # the switch parks the backend connection when the client's close comes
    assert len(site.received("cgi")) == 4
    # one backend connection served four client connections
    assert site.director(lambda: pool_conns("cgi")) - before <= 1


def test_new_clients_that_stay_open_share_backend_connections(site: Site) -> None:
    """New keep-alive clients, one after the other, each sending one request
    and then staying open: each one's backend connection goes to the pool as
    its first answer ends, so the next client takes it instead of connecting.
    A burst of new clients opens as many backend connections as requests in
    flight, not one per client (a client that has sent only one request
    does not keep its backend connection for the second after its answer
    that a client in a run of requests keeps).  Their next requests are
    served."""
    n = 8
    director = site.topo.director.ns

    def clients() -> tuple[int, list[int]]:
        socks = []
        try:
            before = in_netns(director, lambda: pool_conns("cgi"))
            for i in range(n):
                s = connect()
                socks.append(s)
                s.sendall(f"GET /cgi-bin/burst{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                (r,) = read_responses(s, 1)
                assert r.status == 200
            opened = in_netns(director, lambda: pool_conns("cgi")) - before
            statuses = []
            for i, s in enumerate(socks):  # their second requests
                s.sendall(f"GET /cgi-bin/again{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                statuses += [r.status for r in read_responses(s, 1)]
            return opened, statuses
        finally:
            for s in socks:
                s.close()

    site.apply(header_timeout="11s")  # a new configuration: its pools start empty
    try:
        opened, statuses = site.client(clients)
    finally:
        site.apply()
    assert statuses == [200] * n
    assert len(site.received("cgi")) == 2 * n
    assert opened == 1  # the pool's one server: one backend connection for them all


def test_client_close_keeps_the_server_connection(site: Site) -> None:
    # A client's "Connection: close" ends the client's connection only: the
    # server never sees it, the answer says close, and the server's connection
    # goes to the idle pool for the next client (as HAProxy and nginx do).
    before = site.director(lambda: pool_conns("cgi"))
    for i in range(5):
        r = site.client(lambda i=i: get(f"/cgi-bin/close{i}"))  # type: ignore[misc]
        assert r.headers.get("connection") == "close"
        raw = echoed(r)
        assert raw.startswith(f"GET /cgi-bin/close{i} HTTP/1.1\r\n")
        assert "connection:" not in raw.lower()
    assert site.director(lambda: pool_conns("cgi")) - before <= 1
    # HTTP/1.0, and a Connection field with more than "close": passed unchanged
    for raw_req in (
        b"GET /cgi-bin/old HTTP/1.0\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /cgi-bin/two HTTP/1.1\r\nHost: x\r\nConnection: close, x-custom\r\n"
        b"X-Custom: 1\r\n\r\n",
    ):
        (r,) = site.client(lambda raw_req=raw_req: exchange(raw_req))  # type: ignore[misc]
        assert echoed(r).startswith(raw_req.decode().split("\r\n\r\n")[0])


def test_bytes_after_a_close_request_get_the_answer_then_the_end(site: Site) -> None:
    # A client that sends more after its "Connection: close" request (a
    # second request behind it, in the same segment or a moment later): it
    # gets the first answer only and then the end of the stream, never a
    # reset before it has read the answer (the switch lingers then; it
    # closes at once only when nothing of the client's waits).
    first = b"GET /cgi-bin/first HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    second = b"GET /cgi-bin/second HTTP/1.1\r\nHost: x\r\n\r\n"

    def run(together: bool) -> tuple[bytes, bool]:
        with connect() as s:
            s.sendall(first + second if together else first)
            if not together:
                s.sendall(second)
            data, reset = b"", False
            try:
                while chunk := s.recv(65536):
                    data += chunk
            except ConnectionResetError:
                reset = True
            return data, reset

    for together in (True, False):
        for _ in range(3):
            data, reset = site.client(lambda t=together: run(t))  # type: ignore[misc]
            assert data.startswith(b"HTTP/1.1 200 OK\r\n"), data
            assert data.count(b"HTTP/1.1 ") == 1, data
            assert b"GET /cgi-bin/first " in data
            assert not reset or together is False, data


def test_client_close_with_a_server_that_says_keep_alive(site: Site) -> None:
    # The server announces keep-alive; the client asked to close: the answer
    # must say close only, and the client's connection ends after it.
    srv = flaky_server(
        site,
        " while c.recv(65536):\n"
        "  c.sendall(b'HTTP/1.1 200 OK\\r\\nConnection: keep-alive\\r\\n"
        "Content-Length: 2\\r\\n\\r\\nok')\n",
    )

    def run() -> bytes:
        with connect() as s:
            s.sendall(b"GET /flaky/ka HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):  # until the switch closes
                data += chunk
            return data

    try:
        answers = [site.client(run) for _ in range(3)]
    finally:
        stop(srv)
    for a in answers:
        assert a == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
