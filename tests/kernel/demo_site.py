"""The demo site in namespaces: images, CGI and static pools behind ktcpvs.

    client 10.0.0.2 --> director 10.0.0.1:80 (ktcpvs) --> img1 10.0.1.11, img2 10.0.1.12
                                                       --> cgi  10.0.2.11
                                                       --> static 10.0.3.11 (nginx)
                                                       --> flaky 10.0.4.11 (per test)

img1, img2 and cgi run the echo server on port 80 (every request they get
is logged); static runs nginx on a document root with a few files; flaky
runs whatever misbehaving server a test starts.
"""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import h11
from nsutil import in_netns
from topology import Topology, read_log

from l7ctl.apply import ApplyResult, apply_file

BACKENDS = {
    "img1": "10.0.1.11",
    "img2": "10.0.1.12",
    "cgi": "10.0.2.11",
    "static": "10.0.3.11",
    "flaky": "10.0.4.11",  # tests start what they need there
}
VIP = "10.0.0.1"

RULES = """
pool images {{ scheduler {sched}; server 10.0.1.11:80 weight 3; server 10.0.1.12:80; }}
pool cgi    {{ scheduler lc; server 10.0.2.11:80; }}
pool static {{ scheduler rr; server 10.0.3.11:80; }}
pool nowhere {{ server 10.0.2.11:81; }}
pool empty  {{ server 10.0.2.11:80 weight 0; }}
pool flaky  {{ server 10.0.4.11:80; }}

service web listen 10.0.0.1:80 {{
    x-forwarded-for on;
    timeout header {header_timeout};
    timeout backend 4s;
    timeout connect 2s;
    block 403    if header "User-Agent" contains "sqlmap";
    redirect 301 "https://www.example.com/new/" if path prefix "/old/";
    route nowhere if path prefix "/nowhere/";
    route empty  if path prefix "/empty/";
    route flaky  if path prefix "/flaky/";
    route images if type image/*;
    route images if host "img.example.com";
    route cgi    if path prefix "/cgi-bin/" or path suffix ".cgi";
    route static;
}}
"""


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # names lower-case; a repeated field: its last value
    body: bytes
    cookies: list[str] = field(default_factory=list)  # every Set-Cookie value, in order

    @property
    def backend(self) -> str | None:
        return self.headers.get("x-backend")


class Site:
    def __init__(self, topo: Topology, tmp: Path) -> None:
        self.topo = topo
        self.tmp = tmp
        self.logs = {n: topo.start_echo(n, port=80) for n in ("img1", "img2", "cgi")}
        self.docroot = tmp / "www"
        (self.docroot / "doc").mkdir(parents=True)
        (self.docroot / "index.html").write_text("<h1>static</h1>\n")
        (self.docroot / "doc" / "big.bin").write_bytes(bytes(range(256)) * 4096 * 64)  # 64 MiB
        tmp.chmod(0o755)
        topo.start_nginx("static", self.docroot)

    def apply(self, sched: str = "wlc", header_timeout: str = "10s") -> ApplyResult:
        return self.apply_text(RULES.format(sched=sched, header_timeout=header_timeout))

    def apply_text(self, rules: str) -> ApplyResult:
        path = self.tmp / "site.rules"
        path.write_text(rules)
        return in_netns(self.topo.director.ns, lambda: apply_file(path))

    def reset_logs(self) -> None:
        for log in self.logs.values():
            log.write_text("")

    def received(self, name: str) -> list[str]:
        """Raw requests backend `name` received so far."""
        return [str(e["raw"]) for e in read_log(self.logs[name])]

    def all_received(self) -> list[str]:
        return [r for n in self.logs for r in self.received(n)]

    def client(self, fn):  # type: ignore[no-untyped-def]
        return in_netns(self.topo.client.ns, fn)

    def director(self, fn):  # type: ignore[no-untyped-def]
        return in_netns(self.topo.director.ns, fn)


def connect(timeout: float = 30.0) -> socket.socket:
    return socket.create_connection((VIP, 80), timeout=timeout)


def read_responses(s: socket.socket, n: int, head: bool = False) -> list[Response]:
    """Read n responses from s with h11 (a strict client-side parser)."""
    conn = h11.Connection(h11.CLIENT)
    out: list[Response] = []
    # h11 needs to know the requests to frame responses; pretend n GETs.
    for _ in range(n):
        method = "HEAD" if head else "GET"
        conn.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
        conn.send(h11.EndOfMessage())
        status, headers, body, cookies = 0, {}, bytearray(), []
        while True:
            ev = conn.next_event()
            if ev is h11.NEED_DATA:
                data = s.recv(1 << 20)
                conn.receive_data(data)
                if not data:
                    if conn.their_state is h11.SEND_BODY:
                        continue
                    break
                continue
            if isinstance(ev, h11.Response):
                status = ev.status_code
                headers = {k.decode().lower(): v.decode() for k, v in ev.headers}
                cookies = [v.decode() for k, v in ev.headers if k.lower() == b"set-cookie"]
            elif isinstance(ev, h11.Data):
                body += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                out.append(Response(status, headers, bytes(body), cookies))
                break
            elif isinstance(ev, h11.ConnectionClosed):
                return out
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
            break
        conn.start_next_cycle()
    return out


def exchange(raw: bytes, n: int = 1, head: bool = False) -> list[Response]:
    """Send raw bytes on a new connection and read n responses."""
    with connect() as s:
        s.sendall(raw)
        return read_responses(s, n, head)


def get(path: str, host: str = "www.example.com", extra: str = "") -> Response:
    raw = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n".encode()
    (r,) = exchange(raw)
    return r


def check_routed(paths: list[str], answers: list[Response]) -> None:
    """Each answer is 200 from the pool the site's rules route its path to
    (.cgi to cgi, .png to the images, the rest to static's index)."""
    assert len(answers) == len(paths)
    for p, r in zip(paths, answers, strict=True):
        assert r.status == 200, (p, r.status, r.body[:200])
        if p.endswith(".cgi"):
            assert r.backend == "cgi"
        elif p.endswith(".png"):
            assert r.backend in ("img1", "img2")
        else:
            assert r.body == b"<h1>static</h1>\n"


def self_signed_cert(d: Path, name: str = "www.example.com", *alt: str) -> tuple[Path, Path]:
    """A P-256 certificate for NAME (and the names ALT) and its key (mode
    0600), in directory D, as NAME.crt and NAME.key."""
    crt, key = d / f"{name}.crt", d / f"{name}.key"
    san = ",".join(f"DNS:{n}" for n in (name, *alt))
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-subj", f"/CN={name}", "-addext", f"subjectAltName={san}", "-days", "2",
         "-keyout", str(key), "-out", str(crt)],
        check=True, capture_output=True,
    )  # fmt: skip
    key.chmod(0o600)
    return crt, key


def wait_for(pred, timeout: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    return bool(pred())
