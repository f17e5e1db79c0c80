"""Persistence, applied by the module (kmod/kt_persist.c; docs/rules.md
"Persistence"), through the live switch: `persist cookie` and `persist source`
on the demo site's img1 (10.0.1.11) and img2 (10.0.1.12), echo servers that
name themselves in X-Backend.  Both pools schedule rr, so without
persistence consecutive requests alternate; `plain` is the control.  Across
both directors of the two-tier topology: tests/kernel/test_ipvs.py.

Then the persistence no rule asks for: a backend connection that the server
authenticated (NTLM, Negotiate) stays its client's.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from demo_site import Site, connect, get, read_responses, wait_for
from nsutil import in_netns
from topology import wait_port

from l7ctl import tables
from l7ctl.apply import apply_file
from l7ctl.compiler import compile_text
from l7ctl.netlink import Client

RULES = """
pool sticky { scheduler rr; persist cookie SRVID; server 10.0.1.11:80 id img1;
              server 10.0.1.12:80; }
pool src { scheduler rr; persist source 2s; server 10.0.1.11:80; server 10.0.1.12:80; }
pool plain { scheduler rr; server 10.0.1.11:80; server 10.0.1.12:80; }
service web listen 10.0.0.1:80 {
    route sticky if path prefix "/sticky/";
    route src if path prefix "/src/";
    route plain;
}
"""
ADDRS = {"img1": "10.0.1.11:80", "img2": "10.0.1.12:80"}


@pytest.fixture
def persist(site: Site) -> Iterator[Site]:
    path = site.tmp / "persist.rules"
    path.write_text(RULES)
    site.director(lambda: apply_file(path))
    try:
        yield site
    finally:
        site.apply()


def cookie_of(pool: str, addr: str) -> str:
    """The cookie value the compiler gives the server at addr of pool."""
    cfg = compile_text(RULES, "persist.rules").ir
    assert cfg is not None
    p = cfg.pools[cfg.pool_index(pool)]
    return tables.cookie_value(pool, next(s for s in p.servers if s.endpoint() == addr))


def request(path: str, headers: str = "") -> tuple[int, str | None, list[str]]:
    """One request on a new connection: status, X-Backend, Set-Cookie values."""
    r = get(path, host="x", extra=headers)
    return r.status, r.backend, r.cookies


def test_cookie_names_the_server_and_keeps_the_client_there(persist: Site) -> None:
    def run() -> list[tuple[int, str | None, list[str]]]:
        first = request("/sticky/a")
        value = first[2][0].split(";")[0].split("=", 1)[1]
        # the cookie among others, on new connections each time
        cookie = f"Cookie: theme=dark; SRVID={value}; lang=en\r\n"
        return [first] + [request(f"/sticky/{i}", cookie) for i in range(8)]

    first, *rest = persist.client(run)
    status, backend, cookies = first
    assert status == 200 and backend in ADDRS
    # the value is the compiler's id of that server (the same on every director)
    assert cookies == [f"SRVID={cookie_of('sticky', ADDRS[backend])}; Path=/; HttpOnly"]
    # every later request goes to it, and no answer sets the cookie again
    assert rest == [(200, backend, [])] * 8
    # the control: rr alternates
    got = persist.client(lambda: [request(f"/plain/{i}")[1] for i in range(4)])
    assert set(got) == {"img1", "img2"}


def test_cookie_of_a_drained_server_goes_elsewhere_and_is_replaced(persist: Site) -> None:
    img1 = cookie_of("sticky", ADDRS["img1"])
    img2 = cookie_of("sticky", ADDRS["img2"])
    persist.director(lambda: Client().server_set("sticky", ADDRS["img1"], state="drain"))
    try:
        got = persist.client(lambda: request("/sticky/x", f"Cookie: SRVID={img1}\r\n"))
        assert got == (200, "img2", [f"SRVID={img2}; Path=/; HttpOnly"])
    finally:
        persist.director(lambda: Client().server_set("sticky", ADDRS["img1"], state="up"))
    assert persist.client(lambda: request("/sticky/x", f"Cookie: SRVID={img1}\r\n"))[1] == "img1"


@pytest.mark.parametrize(
    "value", ["0123456789abcdef", "zz", "", "0123456789ABCDEF0", "0123456789abcde"]
)
def test_a_forged_cookie_gets_a_normal_choice(persist: Site, value: str) -> None:
    ids = {cookie_of("sticky", a): n for n, a in ADDRS.items()}
    assert value.lower() not in ids

    def run() -> list[tuple[int, str | None, list[str]]]:
        return [request(f"/sticky/{i}", f"Cookie: SRVID={value}\r\n") for i in range(4)]

    got = persist.client(run)
    # rr as without the cookie, and each answer names its server afresh
    assert {b for _, b, _ in got} == {"img1", "img2"}
    for status, backend, cookies in got:
        assert status == 200 and backend
        value_set = cookies[0].split(";")[0].split("=", 1)[1]
        assert ids[value_set] == backend


def test_source_keeps_a_client_on_its_server_until_it_is_unavailable(persist: Site) -> None:
    got = persist.client(lambda: [request(f"/src/{i}")[1] for i in range(6)])
    assert len(set(got)) == 1, got
    first = got[0]
    assert first is not None
    other = "img2" if first == "img1" else "img1"
    persist.director(lambda: Client().server_set("src", ADDRS[first], state="drain"))
    try:
        again = persist.client(lambda: [request(f"/src/{i}")[1] for i in range(4)])
        assert again == [other] * 4
    finally:
        persist.director(lambda: Client().server_set("src", ADDRS[first], state="up"))
    # the new choice is what the client keeps now, its old server back or not
    assert persist.client(lambda: [request(f"/src/{i}")[1] for i in range(4)]) == [other] * 4


def test_source_entries_expire(persist: Site) -> None:
    """An entry lasts `persist source 2s` after its last use: within it the
    client stays, after it the scheduler chooses again (rr: the other one)."""
    a = persist.client(lambda: request("/src/e")[1])
    time.sleep(1)
    assert persist.client(lambda: request("/src/e")[1]) == a  # used: 2 s more
    time.sleep(3)
    b = persist.client(lambda: request("/src/e")[1])
    assert b is not None and b != a


# -- connection-based authentication --------------------------------------------------

AUTH_RULES = """
pool one { server 10.0.4.11:80; }
pool two { scheduler rr; server 10.0.4.11:81; server 10.0.4.11:82; }
service web listen 10.0.0.1:80 {
    route two if path prefix "/two/";
    route one;
}
"""

# Each connection's first request is answered with a challenge (the scheme by
# the path), every later one with 200: the connection is what is authenticated.
# Every body names the connection (server port, the switch's port) and counts
# its requests.
AUTH_SERVER = r"""
import socket, threading
def serve(c, port):
    peer, n, buf = c.getpeername()[1], 0, b""
    while True:
        while b"\r\n\r\n" not in buf:
            d = c.recv(65536)
            if not d:
                return
            buf += d
        head, buf = buf.split(b"\r\n\r\n", 1)
        target = head.split(b" ", 2)[1]
        n += 1
        body = b"%d %d %d" % (port, peer, n)
        if n > 1:
            status = b"200 OK\r\n"
        elif b"/basic" in target:
            status = b'401 Unauthorized\r\nWWW-Authenticate: Basic realm="x"\r\n'
        elif b"/proxy" in target:
            status = b"407 Proxy Authentication Required\r\nProxy-Authenticate: Negotiate\r\n"
        else:
            status = b"401 Unauthorized\r\nWWW-Authenticate: NTLM\r\n"
        c.sendall(b"HTTP/1.1 " + status + b"Content-Length: %d\r\n\r\n" % len(body) + body)
def run(c, port):
    try:
        serve(c, port)
    except OSError:
        pass
    finally:
        c.close()
def listen(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("10.0.4.11", port))
    s.listen(128)
    while True:
        c, _ = s.accept()
        threading.Thread(target=run, args=(c, port), daemon=True).start()
for port in (81, 82):
    threading.Thread(target=listen, args=(port,), daemon=True).start()
listen(80)
"""


@pytest.fixture
def auth(site: Site) -> Iterator[Site]:
    ns = site.topo.nodes["flaky"].ns
    p = site.topo.spawn(ns, ["python3", "-c", AUTH_SERVER], "auth.out")
    path = site.tmp / "auth.rules"
    path.write_text(AUTH_RULES)
    try:
        for port in (80, 81, 82):
            wait_port(ns, "10.0.4.11", port)
        site.director(lambda: apply_file(path))
        yield site
    finally:
        p.kill()
        p.wait()
        site.apply()


def exchange(s: socket.socket, path: str) -> tuple[int, tuple[int, int], int]:
    """One request on s: the status, the backend connection that answered
    (server port, the switch's port) and how many requests it has served."""
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    (r,) = read_responses(s, 1)
    port, peer, n = map(int, r.body.split())
    return r.status, (port, peer), n


def test_a_connection_the_server_authenticated_stays_its_clients(auth: Site) -> None:
    """NTLM and Negotiate authenticate the connection, not the request: a
    backend connection whose server answered 401 with such a challenge in
    WWW-Authenticate (407 and Proxy-Authenticate alike) becomes its client's
    alone.  It is never parked for another client -- not after the client
    idled past the park delay, not when the client closes (it closes too) --
    and the client's next requests to that pool go to it, not where the
    scheduler would send them (rr alternates).  A Basic challenge, which
    authenticates each request, changes nothing: that connection is pooled."""
    director = auth.topo.director.ns

    def run() -> None:
        with connect() as a:
            st, conn_a, n = exchange(a, "/one/x")
            assert (st, n) == (401, 1)
            time.sleep(1.5)  # idle past the park delay
            with connect() as b:  # another client, scheduled to the same server
                st, conn_b, n = exchange(b, "/one/x")
                assert (st, n) == (401, 1) and conn_b != conn_a
            for i in (2, 3):
                assert exchange(a, "/one/x") == (200, conn_a, i)
            time.sleep(1.5)
            assert exchange(a, "/one/x") == (200, conn_a, 4)
        time.sleep(0.5)  # a closed: its server connection with it
        with connect() as c:
            st, conn_c, n = exchange(c, "/one/x")
            assert (st, n) == (401, 1) and conn_c not in (conn_a, conn_b)

        with connect() as a2:  # rr would move every next request to the other server
            st, conn, n = exchange(a2, "/two/x")
            assert (st, n) == (401, 1)
            for i in (2, 3, 4):
                assert exchange(a2, "/two/x") == (200, conn, i)
            # another pool: the authenticated connection is closed, not parked
            assert exchange(a2, "/one/x")[0] == 401
            st, conn2, n = exchange(a2, "/two/x")
            assert (st, n) == (401, 1) and conn2 != conn

        with connect() as f:  # a proxy's challenge (407), Negotiate
            st, conn_f, n = exchange(f, "/one/proxy")
            assert (st, n) == (407, 1)
            time.sleep(1.5)
            with connect() as g:
                st, conn_g, n = exchange(g, "/one/proxy")
                assert (st, n) == (407, 1) and conn_g != conn_f

        with connect() as d:  # the control: Basic
            st, conn_d, n = exchange(d, "/one/basic")
            assert (st, n) == (401, 1)
        # d closed: once the switch let go of it, its server connection is parked
        assert wait_for(lambda: in_netns(director, lambda: Client().info().connections) == 0, 30)
        with connect() as e:
            assert exchange(e, "/one/basic") == (200, conn_d, 2)

    auth.client(run)
