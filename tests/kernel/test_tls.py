"""HTTPS through the switch: a TLS client connection handed over by its
acceptor (KTCPVS_CMD_TLS_ADOPT, docs/tls.md) is switched like a plain one.

The acceptor is tests/kernel/tls_acceptor.py in the director's namespace (as
the project's daemon will be): the handshake in user space, both directions
in kernel TLS, then the socket to the module for the demo site's service on
10.0.0.1:80.  Clients are Python's ssl in the client namespace.  The
backends are the demo site's, plain HTTP: what reached them is checked too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from demo_site import (
    VIP,
    Response,
    Site,
    check_routed,
    read_responses,
    self_signed_cert,
    wait_for,
)
from topology import wait_port

from l7ctl import ktls
from l7ctl.errors import L7ctlError
from l7ctl.netlink import Client

HERE = Path(__file__).resolve().parent
T = TypeVar("T")
PORTS = {"1.2": 8442, "1.3": 8443}
SERVICE = f"{VIP}:80"


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    d.chmod(0o755)
    return self_signed_cert(d)


@pytest.fixture(scope="module")
def acceptors(site_session: Site, cert: tuple[Path, Path]) -> Iterator[dict[str, Path]]:
    """One acceptor per TLS version, on the director; their logs."""
    topo = site_session.topo
    procs, logs = [], {}
    for version, port in PORTS.items():
        log = topo.tmp / f"tls-acceptor-{version}.jsonl"
        log.write_text("")
        procs.append(topo.spawn(
            topo.director.ns,
            [sys.executable, str(HERE / "tls_acceptor.py"), "--listen", f"{VIP}:{port}",
             "--service", SERVICE, "--cert", str(cert[0]), "--key", str(cert[1]),
             "--version", version, "--log", str(log)],
            f"tls-acceptor-{version}.out",
        ))  # fmt: skip
        logs[version] = log
    for port in PORTS.values():
        wait_port(topo.director.ns, VIP, port)
    yield logs
    for p in procs:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


@pytest.fixture
def https(site: Site, acceptors: dict[str, Path]) -> dict[str, Path]:
    return acceptors


def handovers(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line]


def tls_connect(version: str, keylog: Path | None = None) -> ssl.SSLSocket:
    """A client connection; an end without close_notify raises SSLEOFError."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if keylog is not None:
        ctx.keylog_filename = str(keylog)
    raw = socket.create_connection((VIP, PORTS[version]), timeout=30)
    return ctx.wrap_socket(raw, server_hostname="www.example.com", suppress_ragged_eofs=False)


def sniffing(fn: Callable[[], T]) -> tuple[T, bytes]:
    """fn() while every frame on the client's link is captured (AF_PACKET,
    in the client's namespace): its result and the frames' bytes."""
    cap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))  # ETH_P_ALL
    cap.bind(("eth0", 0))
    cap.settimeout(0.2)
    frames: list[bytes] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                frames.append(cap.recv(1 << 17))

    t = threading.Thread(target=loop)
    t.start()
    try:
        result = fn()
        time.sleep(0.5)
    finally:
        stop.set()
        t.join()
        cap.close()
    return result, b"".join(frames)


def request(path: str, close: bool = False) -> bytes:
    extra = "Connection: close\r\n" if close else ""
    return f"GET {path} HTTP/1.1\r\nHost: www.example.com\r\n{extra}\r\n".encode()


CYCLE = ["/cgi-bin/a.cgi", "/img/a.png", "/index.html"]


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_keepalive_requests_over_tls_are_routed_each_to_its_pool(
    site: Site, https: dict[str, Path], version: str
) -> None:
    paths = CYCLE * 3

    def run() -> tuple[str | None, list[Response]]:
        with tls_connect(version) as s:
            out: list[Response] = []
            for p in paths:
                s.sendall(request(p))
                out.extend(read_responses(s, 1))
            return s.version(), out

    got_version, answers = site.client(run)
    assert got_version == f"TLSv{version}"
    check_routed(paths, answers)
    assert wait_for(lambda: len(handovers(https[version])) > 0)
    assert all(h["ok"] for h in handovers(https[version])), handovers(https[version])
    # the backends got the plain requests
    cgi = site.received("cgi")
    assert sum(1 for r in cgi if r.startswith("GET /cgi-bin/a.cgi HTTP/1.1\r\n")) == 3


def test_nothing_sent_to_a_tls_client_is_plaintext_on_the_wire(
    site: Site, https: dict[str, Path]
) -> None:
    """The same requests in plain HTTP (the control: the capture sees the
    answers) and over TLS 1.2 and 1.3: no byte of a head or a body the
    switch sent a TLS client appears on the client's link."""
    paths = ["/index.html", "/cgi-bin/wire-check.cgi"]
    markers = [b"<h1>static</h1>", b"wire-check", b"HTTP/1.1 200", b"X-Backend"]

    def plain() -> list[Response]:
        with socket.create_connection((VIP, 80), timeout=30) as s:
            out: list[Response] = []
            for p in paths:
                s.sendall(request(p))
                out.extend(read_responses(s, 1))
            return out

    def over_tls() -> list[Response]:
        out: list[Response] = []
        for version in PORTS:
            with tls_connect(version) as s:
                for p in paths:
                    s.sendall(request(p))
                    out.extend(read_responses(s, 1))
        return out

    answers, wire = site.client(lambda: sniffing(plain))
    check_routed(paths, answers)
    assert all(m in wire for m in markers), "the capture does not see plain answers"
    answers, wire = site.client(lambda: sniffing(over_tls))
    check_routed(paths * 2, answers)
    assert [m for m in markers if m in wire] == []


def test_the_switchs_own_close_sends_close_notify(site: Site, https: dict[str, Path]) -> None:
    """A request the switch refuses (400, then it closes): the answer, then
    close_notify before the FIN, so the client reads a clean end (an EOF
    without it raises SSLEOFError here)."""

    def run() -> tuple[list[Response], bytes]:
        with tls_connect("1.3") as s:
            s.sendall(b"GET /x HTTP/1.1\r\nHost : x\r\n\r\n")
            answers = read_responses(s, 1)
            rest = b""
            while chunk := s.recv(4096):
                rest += chunk
            return answers, rest

    answers, rest = site.client(run)
    assert [a.status for a in answers] == [400]
    assert rest == b""


def test_pipelined_requests_over_tls(site: Site, https: dict[str, Path]) -> None:
    paths = CYCLE * 2

    def run() -> list[Response]:
        with tls_connect("1.3") as s:
            s.sendall(b"".join(request(p) for p in paths))
            return read_responses(s, len(paths))

    check_routed(paths, site.client(run))


def test_a_64_mib_download_over_tls_is_byte_exact(site: Site, https: dict[str, Path]) -> None:
    want = hashlib.sha256(bytes(range(256)) * 4096 * 64).hexdigest()

    def run() -> tuple[int, str, int]:
        with tls_connect("1.3") as s:
            s.sendall(request("/doc/big.bin", close=True))
            (r,) = read_responses(s, 1)
            return r.status, hashlib.sha256(r.body).hexdigest(), len(r.body)

    status, digest, n = site.client(run)
    assert (status, n) == (200, 64 << 20)
    assert digest == want


def test_an_upload_over_tls_reaches_the_backend_whole(site: Site, https: dict[str, Path]) -> None:
    body = os.urandom(1 << 20)

    def run() -> Response:
        with tls_connect("1.2") as s:
            head = (f"POST /cgi-bin/up.cgi HTTP/1.1\r\nHost: www.example.com\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode()  # fmt: skip
            s.sendall(head + body)
            (r,) = read_responses(s, 1)
            return r

    r = site.client(run)
    assert r.status == 200 and r.backend == "cgi"
    raw = json.loads(r.body)["raw"].encode("latin-1")
    assert raw.endswith(body)


def test_a_key_update_ends_the_connection_and_nothing_after_it_is_forwarded(
    site: Site, https: dict[str, Path], tmp_path: Path
) -> None:
    """The client sends a request, then a KeyUpdate record, then a second
    request still under the old key (the client's sending side moved into
    kernel TLS by hand to send them): the module answers the first, ends the
    connection at the KeyUpdate, and the second never reaches a backend."""
    keylog = tmp_path / "client-keys"

    def run() -> tuple[Response, bytes]:
        with tls_connect("1.3", keylog) as s:
            s.sendall(request("/cgi-bin/first.cgi"))
            (first,) = read_responses(s, 1)
            name = s.cipher()
            assert name is not None
            (secret,) = ktls.read_keylog(keylog, "CLIENT_TRAFFIC_SECRET_0").values()
            cipher = ktls.TLS13_CIPHERS[name[0]]
            with socket.socket(fileno=os.dup(s.fileno())) as raw:
                raw.settimeout(30)
                # the request went out as one record: the next is number 1
                ktls.install(raw, ktls.TLS_TX, ktls.tls13_crypto_info(cipher, secret, seq=1))
                rtype = [(ktls.SOL_TLS, ktls.TLS_SET_RECORD_TYPE, bytes([ktls.RECORD_HANDSHAKE]))]
                raw.sendmsg([bytes([24, 0, 0, 1, 0])], rtype)  # KeyUpdate
                raw.sendall(request("/cgi-bin/second.cgi"))
            rest = b""
            try:
                while chunk := s.recv(4096):
                    rest += chunk
            except (ssl.SSLError, OSError):
                pass  # closed or reset: either ends it
            return first, rest

    first, rest = site.client(run)
    assert first.status == 200 and first.backend == "cgi"
    assert rest == b""
    time.sleep(1)
    cgi = site.received("cgi")
    assert any(r.startswith("GET /cgi-bin/first.cgi ") for r in cgi)
    assert not any("second.cgi" in r for r in cgi)


def plain_pair() -> tuple[socket.socket, socket.socket]:
    ls = socket.create_server(("127.0.0.1", 0))
    c = socket.create_connection(ls.getsockname())
    s, _ = ls.accept()
    ls.close()
    return c, s


def test_handovers_the_module_refuses(site: Site) -> None:
    def run() -> list[str]:
        out = []
        c, s = plain_pair()
        with Client() as client, c, s:
            for fd, service in ((s.fileno(), SERVICE), (c.fileno(), SERVICE), (999, SERVICE)):
                try:
                    client.tls_adopt(fd, service)
                    out.append("accepted")
                except L7ctlError as e:
                    out.append(str(e))
            r, w = os.pipe()
            try:
                client.tls_adopt(r, SERVICE)
                out.append("accepted")
            except L7ctlError as e:
                out.append(str(e))
            finally:
                os.close(r)
                os.close(w)
        return out

    no_tls, no_tls2, no_fd, pipe = site.director(run)
    assert "both directions must be in kernel TLS" in no_tls
    assert "both directions must be in kernel TLS" in no_tls2
    assert "not a socket" in no_fd
    assert "not a socket" in pipe


def test_a_handover_to_no_service_or_twice_is_refused(site: Site, cert: tuple[Path, Path]) -> None:
    def run() -> list[str]:
        sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        sctx.load_cert_chain(str(cert[0]), str(cert[1]))
        sctx.minimum_version = sctx.maximum_version = ssl.TLSVersion.TLSv1_2
        sctx.options |= ktls.SSL_OP_ENABLE_KTLS
        cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        cctx.check_hostname = False
        cctx.verify_mode = ssl.CERT_NONE
        ls = socket.create_server(("127.0.0.1", 0))
        c = socket.create_connection(ls.getsockname())
        s, _ = ls.accept()
        ls.close()
        box: list[ssl.SSLSocket] = []
        t = threading.Thread(target=lambda: box.append(cctx.wrap_socket(c)))
        t.start()
        srv = sctx.wrap_socket(s, server_side=True)
        t.join()
        out = []
        with Client() as client:
            for service in (f"{VIP}:81", SERVICE, SERVICE):
                try:
                    client.tls_adopt(srv.fileno(), service)
                    out.append("accepted")
                except L7ctlError as e:
                    out.append(str(e))
        srv.close()
        box[0].close()
        return out

    nowhere, first, second = site.director(run)
    assert "no service listens on that address" in nowhere
    assert first == "accepted"
    assert "already taken" in second


def test_unload_with_tls_connections_open(site: Site, https: dict[str, Path]) -> None:
    """rmmod while TLS clients hold idle keep-alive connections and one is
    in the middle of a download: the module goes, the clients see their
    connections end, and it loads again."""
    ko = os.environ.get("KTCPVS_KO") or str(HERE.parents[1] / "build" / "ktcpvs.ko")

    def run() -> int:
        held = []
        for _ in range(4):
            s = tls_connect("1.3")
            s.sendall(request("/index.html"))
            (r,) = read_responses(s, 1)
            assert r.status == 200
            held.append(s)
        big = tls_connect("1.2")
        big.sendall(request("/doc/big.bin"))
        big.recv(65536)  # the download has started
        subprocess.run(["rmmod", "ktcpvs"], check=True, timeout=120)
        ended = 0
        for s in [*held, big]:
            s.settimeout(30)
            try:
                while s.recv(1 << 20):
                    pass
            except (ssl.SSLError, OSError):
                pass
            ended += 1
            s.close()
        return ended

    try:
        assert site.client(run) == 5
    finally:
        if not Path("/sys/module/ktcpvs").exists():
            subprocess.run(["insmod", ko], check=True)
    assert wait_for(lambda: Path("/sys/module/ktcpvs").exists())
    site.apply()
