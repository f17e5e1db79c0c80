"""HTTPS through the switch: `l7ctl tlsd` accepts on the TLS service's
address, does the handshake, puts the connection in kernel TLS and hands it
to the module (KTCPVS_CMD_TLS_ADOPT, docs/tls.md), which switches it like a
plain one.

The daemon runs in the director's namespace on the demo site's rules plus a
TLS service on 10.0.0.1:443 with two certificates (www.example.com and
api.example.com, chosen by SNI).  Clients are Python's ssl and curl in the
client namespace.  The backends are the demo site's, plain HTTP: what
reached them is checked too.
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
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from demo_site import (
    RULES,
    VIP,
    Response,
    Site,
    check_routed,
    read_responses,
    self_signed_cert,
    wait_for,
)
from topology import wait_port
from worktrace import counting_work

from l7ctl import ktls
from l7ctl.errors import L7ctlError
from l7ctl.netlink import Client
from l7ctl.protocol import Counters

HERE = Path(__file__).resolve().parent
T = TypeVar("T")
PORT = 443
SERVICE = f"{VIP}:{PORT}"
HANDSHAKE_TIMEOUT = 3
PER_SOURCE = 8

TLS_RULES = """
service secure listen 10.0.0.1:443 tls {{
    certificate "{www_crt}" key "{www_key}";
    certificate "{api_crt}" key "{api_key}";
    x-forwarded-for on;
    x-forwarded-proto on;
    timeout backend 4s;
    timeout connect 2s;
    route images if type image/*;
    route cgi    if path prefix "/cgi-bin/" or path suffix ".cgi";
    route static;
}}
"""


@dataclass
class Https:
    certs: dict[str, tuple[Path, Path]]  # by name: certificate, key
    rules: Path
    events: Path
    daemon: subprocess.Popen[bytes]

    def apply(self, site: Site) -> None:
        """The rules with the TLS service, for the module and the daemon."""
        site.apply_text(self.rules.read_text())
        os.kill(self.daemon.pid, signal.SIGHUP)


@pytest.fixture(scope="module")
def https_session(site_session: Site) -> Iterator[Https]:
    topo = site_session.topo
    d = topo.tmp / "tls"
    d.mkdir(exist_ok=True)
    d.chmod(0o755)
    certs = {
        "www": self_signed_cert(d, "www.example.com", "example.com"),
        "api": self_signed_cert(d, "api.example.com", "*.api.example.com"),
    }
    text = RULES.format(sched="wlc", header_timeout="10s") + TLS_RULES.format(
        www_crt=certs["www"][0], www_key=certs["www"][1],
        api_crt=certs["api"][0], api_key=certs["api"][1],
    )  # fmt: skip
    site_session.apply_text(text)
    rules = d / "site-tls.rules"
    rules.write_text(text)
    events = topo.tmp / "tlsd-events.jsonl"
    events.write_text("")
    daemon = topo.spawn(
        topo.director.ns,
        [sys.executable, "-m", "l7ctl", "tlsd", str(rules), "--events", str(events),
         "--handshake-timeout", str(HANDSHAKE_TIMEOUT),
         "--max-handshakes-per-source", str(PER_SOURCE)],
        "tlsd.out",
    )  # fmt: skip
    wait_port(topo.director.ns, VIP, PORT)
    yield Https(certs, rules, events, daemon)
    daemon.send_signal(signal.SIGTERM)
    try:
        daemon.wait(timeout=10)
    finally:
        if daemon.poll() is None:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
        site_session.apply()


@pytest.fixture
def https(site: Site, https_session: Https) -> Https:
    """The site with its TLS service; the daemon's events emptied."""
    https_session.events.write_text("")
    return https_session


def events(h: Https) -> list[dict[str, object]]:
    """The daemon's events: one per connection it ended or handed over."""
    return [json.loads(line) for line in h.events.read_text().splitlines() if line]


def tls_connect(
    version: str, keylog: Path | None = None, name: str | None = "www.example.com"
) -> ssl.SSLSocket:
    """A client connection of TLS VERSION with SNI NAME; an end without
    close_notify raises SSLEOFError."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion[f"TLSv{version.replace('.', '_')}"]
    if keylog is not None:
        ctx.keylog_filename = str(keylog)
    raw = socket.create_connection((VIP, PORT), timeout=30)
    return ctx.wrap_socket(raw, server_hostname=name, suppress_ragged_eofs=False)


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
    site: Site, https: Https, version: str
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
    assert wait_for(lambda: len(events(https)) > 0)
    assert [e["outcome"] for e in events(https)] == ["adopted"], events(https)
    assert events(https)[0]["version"] == f"TLSv{version}"
    # the backends got the plain requests
    cgi = site.received("cgi")
    assert sum(1 for r in cgi if r.startswith("GET /cgi-bin/a.cgi HTTP/1.1\r\n")) == 3


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_a_resumed_session_is_routed_like_a_full_handshake(
    site: Site, https: Https, version: str
) -> None:
    """A client that kept the session ticket of its last connection resumes
    (no certificate sent), again and again (each resumed connection brings
    a new ticket), and its connection is in kernel TLS and switched like any
    other: the record numbers after the daemon's tickets are the kernel's.
    Each connection ends as a browser's may: its last request asks to
    close, and the client reads to the end (close_notify)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion[f"TLSv{version.replace('.', '_')}"]

    def connect(
        session: ssl.SSLSession | None,
    ) -> tuple[bool, ssl.SSLSession | None, list[Response], bytes]:
        raw = socket.create_connection((VIP, PORT), timeout=30)
        with ctx.wrap_socket(raw, server_hostname="www.example.com", session=session) as s:
            out: list[Response] = []
            for i, p in enumerate(CYCLE):
                s.sendall(request(p, close=i == len(CYCLE) - 1))
                out.extend(read_responses(s, 1))
            rest = b""
            while chunk := s.recv(4096):  # to the end, which must be clean
                rest += chunk
            return s.session_reused, s.session, out, rest

    def run() -> tuple[list[tuple[bool, list[Response], bytes]], list[bytes]]:
        # (the sessions stay in the client's namespace: they do not pickle)
        got = []
        ids = []  # the client names a session by its ticket: a new ticket, a new id
        session = None
        for _ in range(4):
            reused, session, answers, rest = connect(session)
            got.append((reused, answers, rest))
            ids.append(session.id if session is not None else b"")
        return got, ids

    got, ids = site.client(run)
    assert [reused for reused, _, _ in got] == [False, True, True, True]
    if version == "1.3":  # (TLS 1.2 keeps the session's id across tickets)
        assert len(set(ids)) == 4, "a resumed connection brought no new ticket"
    for _, answers, rest in got:
        check_routed(CYCLE, answers)
        assert rest == b""
    assert wait_for(lambda: len(events(https)) == 4)
    assert [(e["outcome"], e["resumed"]) for e in events(https)] == [
        ("adopted", False), ("adopted", True), ("adopted", True), ("adopted", True)
    ]  # fmt: skip


def tls_service(site: Site) -> Counters:
    """The TLS service's counters."""
    (svc,) = [
        c
        for c in site.director(lambda: Client().stats())
        if c.kind == "service" and c.name == "secure"
    ]
    return svc


def test_nothing_sent_to_a_tls_client_is_plaintext_on_the_wire(site: Site, https: Https) -> None:
    """The same requests in plain HTTP (the control: the capture sees the
    answers) and over TLS 1.2 and 1.3: no byte of a head or a body the
    switch sent a TLS client appears on the client's link, whether it was
    buffered (heads, small bodies) or passed zero-copy (most of the 256 KiB
    body, whose pages TLS encrypts from: counted spliced)."""
    marker = b"spliced-body-marker-"
    body = marker * (256 * 1024 // len(marker))
    (site.docroot / "doc" / "wire.bin").write_bytes(body)
    paths = ["/index.html", "/cgi-bin/wire-check.cgi", "/doc/wire.bin"]

    def check(got: list[Response], rounds: int) -> None:
        pairs = list(zip(paths * rounds, got, strict=True))
        small = [(p, r) for p, r in pairs if p != paths[2]]
        check_routed([p for p, _ in small], [r for _, r in small])
        assert all(r.status == 200 and r.body == body for p, r in pairs if p == paths[2])

    markers = [b"<h1>static</h1>", b"wire-check", b"HTTP/1.1 200", b"X-Backend", marker]

    def plain() -> list[Response]:
        with socket.create_connection((VIP, 80), timeout=30) as s:
            out: list[Response] = []
            for p in paths:
                s.sendall(request(p))
                out.extend(read_responses(s, 1))
            return out

    def over_tls() -> list[Response]:
        out: list[Response] = []
        for version in ("1.2", "1.3"):
            with tls_connect(version) as s:
                for p in paths:
                    s.sendall(request(p))
                    out.extend(read_responses(s, 1))
        return out

    answers, wire = site.client(lambda: sniffing(plain))
    check(answers, 1)
    assert all(m in wire for m in markers), "the capture does not see plain answers"
    before = tls_service(site)
    answers, wire = site.client(lambda: sniffing(over_tls))
    check(answers, 2)
    assert [m for m in markers if m in wire] == []
    assert tls_service(site).spliced - before.spliced >= 2 * (256 - 16) * 1024


def test_the_switchs_own_close_sends_close_notify(site: Site, https: Https) -> None:
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


def test_a_tls_connections_own_close_queues_no_work(site: Site, https: Https) -> None:
    """TLS 1.3 connections, each with one request that asks to close: the
    switch's close (close_notify, the shutdown, then lingering until the
    client closes) runs in the connection's work, but the socket's state
    changes that only report that close -- the shutdown's own, the client's
    ACK of the FIN -- queue no run of it: 3.6 runs per connection in the 6.1
    guest (the handover's, the answer's, the client's FIN's...), 4.75 when
    they did."""
    n = 20

    def run() -> list[Response]:
        answers = []
        for _ in range(n):
            with tls_connect("1.3") as s:
                s.sendall(request("/index.html", close=True))
                answers.extend(read_responses(s, 1))
                while s.recv(4096):
                    pass
        return answers

    site.client(run)  # the backend connections are made and parked
    with counting_work() as count:
        answers = site.client(run)
    check_routed(["/index.html"] * n, answers)
    print(f"work items for {n} TLS connections that asked to close: {count[0]}")
    assert count[0] <= 4 * n


def test_pipelined_requests_over_tls(site: Site, https: Https) -> None:
    paths = CYCLE * 2

    def run() -> list[Response]:
        with tls_connect("1.3") as s:
            s.sendall(b"".join(request(p) for p in paths))
            return read_responses(s, len(paths))

    check_routed(paths, site.client(run))


def test_a_64_mib_download_over_tls_is_byte_exact_and_spliced(site: Site, https: Https) -> None:
    want = hashlib.sha256(bytes(range(256)) * 4096 * 64).hexdigest()

    def run() -> tuple[int, str, int]:
        with tls_connect("1.3") as s:
            s.sendall(request("/doc/big.bin", close=True))
            (r,) = read_responses(s, 1)
            return r.status, hashlib.sha256(r.body).hexdigest(), len(r.body)

    before = tls_service(site)
    status, digest, n = site.client(run)
    assert (status, n) == (200, 64 << 20)
    assert digest == want
    # zero-copy towards the client: the backend's pages went to TLS by
    # reference, all but the first read's (the head and up to 16 KiB)
    after = tls_service(site)
    assert after.spliced - before.spliced >= (64 << 20) - 16384


def test_an_upload_over_tls_reaches_the_backend_whole(site: Site, https: Https) -> None:
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
    site: Site, https: Https, tmp_path: Path
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

    (first, rest), wire = site.client(lambda: sniffing(run))
    assert first.status == 200 and first.backend == "cgi"
    assert rest == b""
    # on the client's link, both ways: no request, no answer in the clear
    assert [m for m in (b"cgi-bin", b"HTTP/1.1", b"X-Backend") if m in wire] == []
    time.sleep(1)
    cgi = site.received("cgi")
    assert any(r.startswith("GET /cgi-bin/first.cgi ") for r in cgi)
    assert not any("second.cgi" in r for r in cgi)


def test_two_names_on_one_address_are_served_by_sni(site: Site, https: Https) -> None:
    """Each handshake gets the certificate whose names cover the client's
    SNI (exact, or a wildcard for one label); an unknown name or none gets
    the first certificate."""
    der = {k: ssl.PEM_cert_to_DER_cert(c.read_text()) for k, (c, _) in https.certs.items()}
    cases = [
        ("1.3", "www.example.com", "www"),
        ("1.3", "example.com", "www"),
        ("1.3", "api.example.com", "api"),
        ("1.2", "api.example.com", "api"),
        ("1.3", "v2.api.example.com", "api"),
        ("1.3", "a.b.api.example.com", "www"),
        ("1.3", "other.example.net", "www"),
        ("1.2", None, "www"),
    ]

    def run() -> list[tuple[str, int]]:
        out = []
        for version, name, want in cases:
            with tls_connect(version, name=name) as s:
                cert = s.getpeercert(binary_form=True)
                host = f"{want}.example.com"  # a name of the certificate expected
                s.sendall(f"GET /index.html HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                (r,) = read_responses(s, 1)
                out.append((next(k for k, v in der.items() if v == cert), r.status))
        return out

    assert site.client(run) == [(want, 200) for _, _, want in cases]
    assert wait_for(lambda: len(events(https)) == len(cases))
    assert [e["sni"] for e in events(https)] == [name for _, name, _ in cases]


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_curl_verifies_the_certificate_of_its_name_and_is_routed(
    site: Site, https: Https, version: str
) -> None:
    """curl, verifying against each certificate as its only trust anchor:
    the handshake names the right certificate, and the request is routed."""
    out = []
    for key, name in (("www", "www.example.com"), ("api", "api.example.com")):
        r = subprocess.run(
            ["ip", "netns", "exec", site.topo.client.ns, "curl", "-sS", "-m", "30",
             f"--tlsv{version}", "--tls-max", version, "--cacert", str(https.certs[key][0]),
             "--resolve", f"{name}:{PORT}:{VIP}", "-D", "-", "-o", "/dev/null",
             f"https://{name}/img/a.png"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        out.append(r.stdout)
    for head in out:
        assert head.startswith("HTTP/1.1 200")
        assert any(f"x-backend: {b}" in head.lower() for b in ("img1", "img2")), head


def test_x_forwarded_proto_replaces_the_clients(site: Site, https: Https) -> None:
    def run() -> Response:
        with tls_connect("1.3") as s:
            s.sendall(b"GET /cgi-bin/xfp.cgi HTTP/1.1\r\nHost: www.example.com\r\n"
                      b"X-Forwarded-Proto: http\r\nx-forwarded-proto: ftp\r\n\r\n")  # fmt: skip
            (r,) = read_responses(s, 1)
            return r

    r = site.client(run)
    assert r.status == 200 and r.backend == "cgi"
    raw = json.loads(r.body)["raw"]
    fields = [ln for ln in raw.split("\r\n") if ln.lower().startswith("x-forwarded-proto")]
    assert fields == ["X-Forwarded-Proto: https"]


def test_garbage_instead_of_a_client_hello_is_closed_and_reaches_no_backend(
    site: Site, https: Https
) -> None:
    def run() -> list[bytes]:
        out = []
        for junk in (b"GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n" + b"x" * 64,
                     b"\x16\x03\x01\x00\x05\x02" + b"\0" * 64,
                     b"\x16\x03\x01\x00\x30\x01" + b"\0" * 64):  # fmt: skip
            with socket.create_connection((VIP, PORT), timeout=10) as s:
                s.sendall(junk)
                got = b""
                with contextlib.suppress(ConnectionResetError):
                    while chunk := s.recv(4096):
                        got += chunk
                out.append(got)
        return out

    answers, wire = site.client(lambda: sniffing(run))
    assert answers[0] == answers[1] == b""  # closed without a word
    assert not any(b"HTTP/" in a for a in answers)  # the last: a TLS alert at most
    # the capture of the client's link: no answer of any HTTP server in it
    answers_seen = (b"HTTP/1.1 2", b"HTTP/1.1 4", b"HTTP/1.1 5", b"X-Backend")
    assert [m for m in answers_seen if m in wire] == []
    assert wait_for(lambda: len(events(https)) == 3)
    assert [e["outcome"] for e in events(https)] == ["failed"] * 3
    assert "not a TLS ClientHello" in str(events(https)[0]["error"])
    assert site.all_received() == []


def client_hello() -> bytes:
    """A real ClientHello (TLS 1.3), as a client's first flight."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="www.example.com")
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def test_clients_that_stop_mid_handshake_are_dropped_in_bounded_time(
    site: Site, https: Https
) -> None:
    """Clients that send nothing, half a ClientHello, or a whole one and no
    more: each is dropped at the daemon's handshake timeout, no sooner; one
    source may not hold more than its share of handshakes (the next
    connection is reset at once); and a real client is served after."""
    hello = client_hello()
    firsts = [b""] * 3 + [hello[:20]] * 3 + [hello] * 2
    assert len(firsts) == PER_SOURCE

    def run() -> tuple[list[float], str, int]:
        phase = "holding"  # named in the error: CI shows its first line only
        try:
            held = []
            t0 = time.monotonic()
            for first in firsts:
                s = socket.create_connection((VIP, PORT), timeout=HANDSHAKE_TIMEOUT + 10)
                if first:
                    s.sendall(first)
                held.append(s)
            time.sleep(0.5)
            phase = "one over the share"
            # reset at accept: connect() itself fails if the reset comes
            # before the client is back from it (a loaded guest)
            try:
                with socket.create_connection((VIP, PORT), timeout=10) as extra:
                    extra.sendall(hello)
                    over = "served" if extra.recv(4096) else "closed"
            except ConnectionResetError:
                over = "reset"
            phase = "waiting for the drops"
            ended = []
            for s in held:
                with contextlib.suppress(ConnectionResetError):
                    while s.recv(4096):
                        pass
                ended.append(time.monotonic() - t0)
                s.close()
            # the daemon's word that all are gone: its events are written
            # once a handshake's bookkeeping is undone
            wait_for(lambda: [e["outcome"] for e in events(https)].count("timeout") >= PER_SOURCE)
            phase = "a real client after"
            with tls_connect("1.3") as s:
                s.sendall(request("/index.html"))
                (r,) = read_responses(s, 1)
            return ended, over, r.status
        except Exception as e:
            raise RuntimeError(f"{phase}: {e!r}") from e

    try:
        ended, over, status = site.client(run)
    except RuntimeError as e:
        log = (site.topo.tmp / "tlsd.out").read_text().splitlines()[-5:]
        raise AssertionError(f"{e}\nthe daemon's events: {events(https)}\nits log: {log}") from e
    assert over == "reset"
    assert all(HANDSHAKE_TIMEOUT - 0.5 <= t <= HANDSHAKE_TIMEOUT + 3 for t in ended), ended
    assert status == 200
    # the daemon writes the handover's event once the module has taken the
    # connection: the client may have its answer a moment before
    assert wait_for(lambda: len(events(https)) == PER_SOURCE + 2)
    outcomes = [e["outcome"] for e in events(https)]
    assert sorted(outcomes) == sorted(["over-limit"] + ["timeout"] * PER_SOURCE + ["adopted"])
    assert site.all_received() == [] or all("index.html" in r for r in site.all_received())


def misdirected() -> int:
    (svc,) = [c for c in Client().stats() if c.kind == "service" and c.name == "secure"]
    return svc.errors["misdirected"]


def test_a_request_for_a_host_its_certificate_lacks_is_answered_421(
    site: Site, https: Https
) -> None:
    """RFC 9110 15.5.20: the Host (or the absolute-form target's host) must
    be a name of the certificate the handshake chose by SNI (exactly, or by
    a one-label wildcard); other hosts get 421 and reach no backend."""
    cases = [
        ("www.example.com", "Host: www.example.com", 200),
        ("www.example.com", "Host: example.com", 200),  # the same certificate
        ("www.example.com", "Host: WWW.Example.COM.:443", 200),
        ("www.example.com", "Host: api.example.com", 421),
        ("www.example.com", "Host: v1.api.example.com", 421),
        ("api.example.com", "Host: v1.api.example.com", 200),  # *.api.example.com
        ("api.example.com", "Host: x.v1.api.example.com", 421),
        ("api.example.com", "Host: www.example.com", 421),
        ("nowhere.test", "Host: www.example.com", 200),  # no such name: the first cert
        (None, "Host: api.example.com", 421),
    ]

    def run() -> list[int]:
        out = []
        for name, host, _ in cases:
            with tls_connect("1.3", name=name) as s:
                s.sendall(f"GET /cgi-bin/h.cgi HTTP/1.1\r\n{host}\r\n\r\n".encode())
                (r,) = read_responses(s, 1)
                out.append(r.status)
        # the absolute form's host is the request's, whatever Host says
        with tls_connect("1.2", name="www.example.com") as s:
            s.sendall(b"GET https://api.example.com/cgi-bin/h.cgi HTTP/1.1\r\n"
                      b"Host: www.example.com\r\n\r\n")  # fmt: skip
            out.extend(r.status for r in read_responses(s, 1))
        # HTTP/1.0 without a Host: nothing to compare
        with tls_connect("1.3", name="www.example.com") as s:
            s.sendall(b"GET /cgi-bin/h.cgi HTTP/1.0\r\n\r\n")
            out.extend(r.status for r in read_responses(s, 1))
        return out

    before = site.director(misdirected)
    got = site.client(run)
    assert got == [want for _, _, want in cases] + [421, 200]
    assert site.director(misdirected) - before == got.count(421)
    assert len(site.received("cgi")) == got.count(200)


def plain_pair() -> tuple[socket.socket, socket.socket]:
    ls = socket.create_server(("127.0.0.1", 0))
    c = socket.create_connection(ls.getsockname())
    s, _ = ls.accept()
    ls.close()
    return c, s


def test_handovers_the_module_refuses(site: Site, https: Https) -> None:
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
            for names in (["WWW.example.com"], ["a", ""], ["*a.example.com"], ["x" * 254]):
                try:
                    client.tls_adopt(s.fileno(), SERVICE, names)
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

    no_tls, no_tls2, no_fd, *bad_names, pipe = site.director(run)
    assert len(bad_names) == 4
    assert all("host names" in e for e in bad_names), bad_names
    assert "both directions must be in kernel TLS" in no_tls
    assert "both directions must be in kernel TLS" in no_tls2
    assert "not a socket" in no_fd
    assert "not a socket" in pipe


@pytest.mark.parametrize(
    "limit, message",
    [
        ("limit connections 2;", "the service is at its connection limit"),
        ("limit source-connections 2;", "the client is at its source limit"),
    ],
    ids=["service", "source"],
)
def test_handed_over_connections_count_against_the_service_limits(
    site: Site, https: Https, limit: str, message: str
) -> None:
    """A connection the daemon hands over counts like an accepted one: past
    the service's connection limit, or its client address's, the module
    refuses the handover (the daemon closes the connection and says why),
    and once one closes the next is taken."""
    text = https.rules.read_text()
    proto = "    x-forwarded-proto on;\n"
    site.apply_text(text.replace(proto, f"{proto}    {limit}\n"))

    def run() -> tuple[list[int], int]:
        held = [tls_connect("1.3") for _ in range(2)]
        statuses = []
        for s in held:
            s.sendall(request("/index.html"))
            statuses.append(read_responses(s, 1)[0].status)
        over = tls_connect("1.3")
        try:
            over.sendall(request("/index.html"))
            statuses.append(len(over.recv(100)))  # closed unanswered: 0
        except OSError:
            statuses.append(0)
        finally:
            over.close()
        held.pop().close()
        time.sleep(1)
        with tls_connect("1.3") as again:
            again.sendall(request("/index.html"))
            after = read_responses(again, 1)[0].status
        for s in held:
            s.close()
        return statuses, after

    try:
        statuses, after = site.client(run)
    finally:
        site.apply_text(text)
    assert statuses == [200, 200, 0]
    assert after == 200
    assert wait_for(lambda: len(events(https)) >= 4)
    outcomes = [(e["outcome"], e["error"]) for e in events(https)]
    assert outcomes[:2] == [("adopted", "")] * 2, outcomes
    assert outcomes[2][0] == "refused" and message in str(outcomes[2][1]), outcomes
    assert outcomes[3] == ("adopted", ""), outcomes


def test_a_handover_to_no_service_a_plain_one_or_twice_is_refused(site: Site, https: Https) -> None:
    cert = https.certs["www"]

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
            for service in (f"{VIP}:81", f"{VIP}:80", SERVICE, SERVICE):
                try:
                    client.tls_adopt(srv.fileno(), service)
                    out.append("accepted")
                except L7ctlError as e:
                    out.append(str(e))
        srv.close()
        box[0].close()
        return out

    nowhere, plain, first, second = site.director(run)
    assert "no service listens on that address" in nowhere
    assert "not a TLS service" in plain
    assert first == "accepted"
    assert "already taken" in second


# /proc/stat's cpu line, in order (proc(5)).
CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def busy_threads(seconds: float) -> tuple[float, dict[str, float], list[tuple[float, str]]]:
    """The guest's busy share of all CPUs over SECONDS (/proc/stat), that
    share by kind of time (user, system, irq, softirq...), and the threads
    that used CPU meanwhile, busiest first (seconds, name)."""
    tick = os.sysconf("SC_CLK_TCK")

    def stat() -> tuple[list[int], dict[str, tuple[int, str]]]:
        cpu = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        threads = {}
        for t in Path("/proc").glob("[0-9]*/task/[0-9]*/stat"):
            with contextlib.suppress(OSError):
                raw = t.read_text()
                name = raw[raw.index("(") + 1 : raw.rindex(")")]
                f = raw[raw.rindex(")") + 2 :].split()
                threads[str(t)] = (int(f[11]) + int(f[12]), name)
        return cpu, threads

    c0, t0 = stat()
    time.sleep(seconds)
    c1, t1 = stat()
    d = [b - a for a, b in zip(c0, c1, strict=False)]
    total = max(1, sum(d))
    busy = 1 - (d[3] + d[4]) / total  # idle and iowait
    kinds = {k: round(v / total, 2) for k, v in zip(CPU_FIELDS, d, strict=False) if v}
    used = [((v[0] - t0[k][0]) / tick, v[1]) for k, v in t1.items() if k in t0 and v[0] > t0[k][0]]
    return busy, kinds, sorted(used, reverse=True)


def goes_idle(windows: int = 3, seconds: float = 3.0, limit: float = 0.25) -> list[str]:
    """Measure up to WINDOWS windows until one is under LIMIT busy: [] then,
    else what each window saw.  Whatever spins keeps spinning in every
    window; the harness's own bursts (the heartbeat's ps every 30 s) and an
    emulated CPU that the host left waiting pass within one."""
    seen = []
    for _ in range(windows):
        busy, kinds, used = busy_threads(seconds)
        if busy < limit:
            return []
        seen.append(f"{busy:.0%} busy {kinds}: {used[:8]}")
    return seen


@pytest.mark.parametrize("close", [False, True], ids=["keepalive", "close"])
def test_after_wrk_over_https_everything_goes_idle(site: Site, https: Https, close: bool) -> None:
    """wrk over HTTPS (32 connections, keep-alive or a handshake per
    request), then nothing: the service's connections all end, and the
    guest goes idle -- no connection, work item or daemon left spinning."""
    argv = ["ip", "netns", "exec", site.topo.client.ns, "wrk", "-t2", "-c32", "-d3s",
            "--timeout", "10s", "-H", "Host: www.example.com"]  # fmt: skip
    if close:
        argv += ["-H", "Connection: close"]
    r = subprocess.run([*argv, f"https://{VIP}:{PORT}/img/a.png"],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "requests in" in r.stdout and "Non-2xx" not in r.stdout, r.stdout

    def active() -> int:
        (svc,) = [c for c in Client().stats() if c.kind == "service" and c.name == "secure"]
        return svc.active

    assert wait_for(lambda: site.director(active) == 0, timeout=30), site.director(active)
    seen = goes_idle()
    assert not seen, "busy after the clients left, each window: " + "; ".join(seen)


def test_wrk_resumes_every_connection_after_its_first(site: Site, https: Https) -> None:
    """wrk with a new connection per request keeps each connection's
    session (SSL_clear) and offers it on the next: after the first, full
    handshake of each of its connections, every handover is a resumed one.
    (make bench's resumed workload counts on it; a session a client marks
    unusable -- an unclean end -- would show here as full handshakes.)"""
    conns = 4  # in flight at once, within the daemon's share per source
    argv = ["ip", "netns", "exec", site.topo.client.ns, "wrk", "-t2", f"-c{conns}", "-d3s",
            "--timeout", "10s", "-H", "Host: www.example.com", "-H", "Connection: close",
            f"https://{VIP}:{PORT}/index.html"]  # fmt: skip
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Non-2xx" not in r.stdout, r.stdout
    # wrk's exit cuts the connections it had open: those end unadopted
    time.sleep(1)
    adopted = [e for e in events(https) if e["outcome"] == "adopted"]
    full = [e for e in adopted if not e["resumed"]]
    assert len(adopted) > 2 * conns, r.stdout
    assert len(full) == conns, f"{len(full)} full handshakes of {len(adopted)}"


def test_apply_says_the_tls_daemon_reads_the_file_itself(site: Site, https: Https) -> None:
    """l7ctl apply by hand (no change here: a renewed certificate is one)
    reminds that the daemon must be reloaded; under systemd, whose reload
    reaches the daemon, it does not."""
    env = {k: v for k, v in os.environ.items() if k != "INVOCATION_ID"}
    argv = ["ip", "netns", "exec", site.topo.director.ns,
            sys.executable, "-m", "l7ctl", "apply", str(https.rules)]  # fmt: skip
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "no change" in r.stdout
    assert "1 TLS service(s): l7ctl tlsd reads the file itself; reload it" in r.stdout
    env["INVOCATION_ID"] = "0" * 32
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "no change" in r.stdout and "TLS service" not in r.stdout


def test_unload_with_tls_connections_open(site: Site, https: Https) -> None:
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
    https.apply(site)

    # The daemon's netlink socket knew the old module: it opens a new one.
    def again() -> int:
        try:
            with tls_connect("1.3") as s:
                s.sendall(request("/index.html"))
                (r,) = read_responses(s, 1)
                return r.status
        except (ssl.SSLError, OSError):
            return 0

    assert wait_for(lambda: site.client(again) == 200, timeout=10)
