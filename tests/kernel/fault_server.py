"""A misbehaving backend for the fault test (test_faults.py): one process, many ports.

    fault_server.py --addr 10.0.4.11 --port 8080:script --port 8081:fin ...

Each port has a mode.  `script` reads a request's line and takes what to do from its
target: the last path segment is a Plan (Plan.encode), so every request -- also one that
reaches this server over a backend connection the switch reuses -- carries its own script.
The other modes act on a connection as soon as it is accepted, before reading anything:

    fin      half-close (FIN), then read and discard until the peer closes
    rst      reset (SO_LINGER 0)
    freeze   never read or write; close once the peer has closed
    garbage  send bytes that are not HTTP, then as fin

and `echo` is a well-behaved server: it answers every request 200 with the request's
exact bytes (head and body) as its body.  Once every port listens, the server prints
"ready".

A plan says at what point of its request the server acts -- after the request line
(`line`), after the head (`head`), after `part` bytes of body (`body`), once the whole
request is read (`end`) -- and what it does there (`act`):

    fin, drop, rst, freeze   end the connection: FIN and drain / close() (a reset if bytes
                             are unread) / reset / neither read nor write until the peer closes
    drain                    read everything, never answer
    length, chunked, split,  answer `status` with `size` bytes of pattern(seed, size) framed
    interim, bighead, eof    by Content-Length, chunked (extensions, trailers), Content-Length
                             with the head sent a few bytes at a time, after a 1xx, with a
                             valid head of 16-60 KiB, or close-delimited (no length: the end of
                             the body is the server's FIN)
    short, badchunk          a head, then part of a Content-Length body / a malformed chunk
    partial, garbage, huge   part of a head / bytes that are no HTTP / a head over the switch's
                             limits
    switch                   101 Switching Protocols though nobody asked, then an echo

and after answering (`then`): `next` (read the rest of the request, serve the next one on
the connection -- a keep-alive answer only), `later` (the same, but close the connection a
moment after), or one of the four endings above.  An answer made once the whole request is
read carries `X-Got: SHA256` of the request body's bytes as they arrived (the wire form,
chunk lines included), and every answer carries `X-Plan: TOKEN`, so the client can tell
that the answer it got is the one to its own request.  A request with `Expect:
100-continue` whose body the plan reads gets a 100 Continue after its head.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import random
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

AT = ("line", "head", "body", "end")
ENDINGS = ("fin", "drop", "rst", "freeze")
# Well-formed answers that let a keep-alive connection go on.
COMPLETE = ("length", "chunked", "split", "interim", "bighead")
ANSWERS = (*COMPLETE, "eof", "short", "badchunk",
           "partial", "garbage", "huge", "switch")  # fmt: skip
ACTS = (*ENDINGS, "drain", *ANSWERS)
THENS = ("next", "later", *ENDINGS)
ACCEPT_MODES = ("fin", "rst", "freeze", "garbage")
MODES = ("script", "echo", *ACCEPT_MODES)
PEER_WAIT = 60.0  # the longest a server thread waits for its peer


def pattern(seed: int, n: int) -> bytes:
    """The body of an answer: n bytes that depend on the seed."""
    unit = hashlib.sha256(b"%d" % seed).digest() * 8 + bytes(range(7))  # 263 bytes: a prime
    return (unit * (n // len(unit) + 1))[:n]


@dataclass(frozen=True)
class Plan:
    at: str = "end"
    part: int = 0
    act: str = "length"
    then: str = "next"
    ka: bool = True
    status: int = 200
    size: int = 16
    seed: int = 0

    def encode(self) -> str:
        return (f"{self.at}.{self.part}.{self.act}.{self.then}.{int(self.ka)}."
                f"{self.status}.{self.size}.{self.seed}")  # fmt: skip

    @staticmethod
    def decode(target: bytes) -> Plan:
        """The plan in a request target's last path segment (a plain answer if none)."""
        last = target.split(b"?", 1)[0].rsplit(b"/", 1)[-1].decode("latin-1")
        f = last.split(".")
        if len(f) != 8 or f[0] not in AT or f[2] not in ACTS or f[3] not in THENS:
            return Plan()
        try:
            return Plan(f[0], int(f[1]), f[2], f[3], f[4] == "1", int(f[5]), int(f[6]), int(f[7]))
        except ValueError:
            return Plan()

    @property
    def answers(self) -> bool:
        return self.act in ANSWERS

    @property
    def keep_alive(self) -> bool:
        """The answer, once complete, lets the connection go on."""
        return self.ka and self.act in COMPLETE and (self.then in ("next", "later"))


REASONS = {200: "OK", 201: "Created", 404: "Not Found", 410: "Gone", 500: "Internal Error"}
GARBAGE = (
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
    b"HTTP/1.1 2OO OK\r\n\r\n",
    b"<html><body>oops</body></html>\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
    b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
    b"HTTP/1.1 200 OK\r\n Folded: x\r\n\r\n",
)
BAD_CHUNKS = (b"zz\r\n", b"5\r\nabcdeXX", b"-1\r\n", b"5 \r\nabcde\r\n", b"5\nabcde\r\n")


def padding(rng: random.Random, low: int, high: int) -> list[str]:
    """Header fields of low to high bytes in all (a large head, well-formed)."""
    n = rng.randint(low, high)
    out: list[str] = []
    while n > 0:
        v = "p" * min(rng.randint(10, 4000), n)
        out.append(f"X-Pad-{len(out)}: {v}")
        n -= len(v) + 12
    return out


def head(plan: Plan, got: str | None, *, framing: str) -> bytes:
    """The answer's head: framing "length", "chunked" or "eof"."""
    lines = [f"HTTP/1.1 {plan.status} {REASONS.get(plan.status, 'Whatever')}",
             f"X-Plan: {plan.encode()}", "Server: fault"]  # fmt: skip
    if plan.act == "bighead":
        lines += padding(random.Random(plan.seed), 16 << 10, 60 << 10)
    if got is not None:
        lines.append(f"X-Got: {got}")
    if framing == "length":
        lines.append(f"Content-Length: {plan.size}")
    elif framing == "chunked":
        lines.append("Transfer-Encoding: chunked")
    if not plan.ka or framing == "eof":
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunked(body: bytes, rng: random.Random) -> bytes:
    out, pos = b"", 0
    while pos < len(body):
        n = min(len(body) - pos, rng.choice((1, 7, 100, 1000, 4096, 70000)))
        ext = b";x=y" if rng.random() < 0.2 else b""
        out += b"%x%s\r\n" % (n, ext) + body[pos : pos + n] + b"\r\n"
        pos += n
    return out + (b"0\r\nX-Trailer: t\r\n\r\n" if rng.random() < 0.2 else b"0\r\n\r\n")


def answer(plan: Plan, got: str | None) -> list[tuple[bytes, float]]:
    """The bytes of the answer, as (segment, pause before it) pairs."""
    rng = random.Random(plan.seed)
    body = pattern(plan.seed, plan.size)
    act = plan.act
    if act in ("length", "interim", "split", "bighead"):
        h = head(plan, got, framing="length")
        if act == "split":
            segs, pos = [], 0
            while pos < len(h):
                n = rng.randint(1, 3)
                segs.append((h[pos : pos + n], 0.002))
                pos += n
            return [*segs, (body, 0.0)]
        first: list[tuple[bytes, float]] = []
        if act == "interim":
            first = [(rng.choice((b"HTTP/1.1 100 Continue\r\n\r\n",
                                  b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n")),
                      0.0)]  # fmt: skip
        cut = rng.randint(0, len(body))
        return [*first, (h + body[:cut], 0.0), (body[cut:], rng.choice((0.0, 0.01)))]
    if act == "chunked":
        wire = head(plan, got, framing="chunked") + chunked(body, rng)
        cut = rng.randint(0, len(wire))
        return [(wire[:cut], 0.0), (wire[cut:], rng.choice((0.0, 0.01)))]
    if act == "eof":
        return [(head(plan, got, framing="eof") + body, 0.0)]
    if act == "short":
        n = max(plan.size, 2)
        return [(head(replace(plan, size=n), got, framing="length"), 0.0),
                (pattern(plan.seed, n)[: rng.randint(0, n - 1)], 0.0)]  # fmt: skip
    if act == "badchunk":
        good = chunked(body, rng)[:-5]  # without the last chunk
        return [(head(plan, got, framing="chunked") + good, 0.0), (rng.choice(BAD_CHUNKS), 0.01)]
    if act == "partial":
        h = head(plan, got, framing="length")
        return [(h[: rng.randint(1, len(h) - 1)], 0.0)]
    if act == "garbage":
        return [(rng.choice(GARBAGE), 0.0)]
    if act == "huge":
        if rng.random() < 0.5:  # too many fields
            fields = b"".join(b"X-F%d: %s\r\n" % (i, b"v" * 20) for i in range(150))
        else:  # one line over the limit, or a head over 64 KiB
            fields = b"X-Long: " + b"a" * rng.choice((9000, 70000)) + b"\r\n"
        return [(b"HTTP/1.1 200 OK\r\n" + fields + b"Content-Length: 0\r\n\r\n", 0.0)]
    assert act == "switch"
    return [(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: fault\r\nConnection: Upgrade\r\n"
             b"X-Plan: " + plan.encode().encode() + b"\r\n\r\n", 0.0)]  # fmt: skip


class Reader:
    """Buffered reads: lines, a head, a body piece by piece."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.buf = bytearray()
        self.eof = False

    def _more(self) -> bool:
        if self.eof:
            return False
        d = self.conn.recv(1 << 16)
        if not d:
            self.eof = True
            return False
        self.buf += d
        return True

    def line(self) -> bytes | None:
        while (i := self.buf.find(b"\r\n")) < 0:
            if len(self.buf) > 1 << 20 or not self._more():
                return None
        out = bytes(self.buf[: i + 2])
        del self.buf[: i + 2]
        return out

    def take(self, n: int) -> bytes | None:
        """Up to n bytes (at least one), None at the end."""
        if not self.buf and not self._more():
            return None
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


def request_line(r: Reader) -> bytes | None:
    while (line := r.line()) == b"\r\n":
        pass
    return line


def fields(r: Reader, raw: bytearray | None = None) -> dict[bytes, bytes] | None:
    """The head's fields after the request line (names lower-cased), None if cut; the
    lines as they came are added to raw."""
    out: dict[bytes, bytes] = {}
    while (line := r.line()) != b"\r\n":
        if line is None:
            return None
        if raw is not None:
            raw += line
        k, _, v = line.partition(b":")
        out[k.strip().lower()] = v.strip()
    return out


def body(r: Reader, f: dict[bytes, bytes]) -> Iterator[bytes]:
    """The body's bytes as they arrive (chunked: the wire form).  Stops early at EOF
    or at bytes that are no chunked body (the switch never forwards those)."""
    if f.get(b"transfer-encoding", b"").lower().endswith(b"chunked"):
        while True:
            line = r.line()
            if line is None:
                return
            yield line
            try:
                size = int(line.split(b";")[0], 16)
            except ValueError:
                return
            if size == 0:
                while (t := r.line()) is not None:
                    yield t
                    if t == b"\r\n":
                        return
                return
            left = size + 2
            while left:
                d = r.take(left)
                if d is None:
                    return
                left -= len(d)
                yield d
    else:
        try:
            left = int(f.get(b"content-length", b"0"))
        except ValueError:
            return
        while left > 0:
            d = r.take(min(left, 1 << 16))
            if d is None:
                return
            left -= len(d)
            yield d


def drain(conn: socket.socket) -> None:
    conn.settimeout(PEER_WAIT)
    with contextlib.suppress(OSError):
        while conn.recv(1 << 16):
            pass


def end(conn: socket.socket, how: str) -> None:
    """End the connection as `how` says (ENDINGS, or drain)."""
    with contextlib.suppress(OSError):
        if how == "fin":
            conn.shutdown(socket.SHUT_WR)
            drain(conn)
        elif how == "drain":
            drain(conn)
        elif how == "rst":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif how == "freeze":
            p = select.poll()
            p.register(conn, select.POLLRDHUP | select.POLLHUP | select.POLLERR)
            p.poll(PEER_WAIT * 1000)
    conn.close()


def send(conn: socket.socket, segs: list[tuple[bytes, float]]) -> None:
    for data, pause in segs:
        if pause:
            time.sleep(pause)
        if data:
            conn.sendall(data)


def echo(conn: socket.socket, r: Reader) -> None:
    conn.settimeout(PEER_WAIT)
    with contextlib.suppress(OSError):
        if r.buf:
            conn.sendall(bytes(r.buf))
        while d := conn.recv(1 << 16):
            conn.sendall(d)
    conn.close()


class Done(Exception):
    """The connection is over."""


def serve_script(conn: socket.socket) -> None:
    r = Reader(conn)
    try:
        while True:
            serve_one(conn, r)
    except (Done, OSError):
        pass
    finally:
        conn.close()


def serve_one(conn: socket.socket, r: Reader) -> None:
    """One request, by its plan.  Raises Done when the connection is over."""
    line = request_line(r)
    if line is None:
        raise Done
    parts = line.split(b" ")
    plan = Plan.decode(parts[1] if len(parts) > 1 else b"")
    acted = False
    got = hashlib.sha256()

    def act(whole: bool) -> None:
        nonlocal acted
        acted = True
        if plan.act in ENDINGS or plan.act == "drain":
            end(conn, plan.act)
            raise Done
        send(conn, answer(plan, got.hexdigest() if whole else None))
        if plan.act == "switch" and plan.then == "next":
            echo(conn, r)
            raise Done
        if not plan.keep_alive:
            end(conn, "fin" if plan.then in ("next", "later") else plan.then)
            raise Done

    if plan.at == "line":
        act(False)
    f = fields(r)
    if f is None:
        raise Done
    if (plan.at == "head" or (plan.at == "body" and plan.part <= 0)) and not acted:
        act(False)
    if not acted and f.get(b"expect", b"").lower() == b"100-continue":
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")  # go on: the body is wanted
    seen = 0
    for piece in body(r, f):
        got.update(piece)
        seen += len(piece)
        if not acted and plan.at == "body" and seen >= plan.part:
            act(False)
    if r.eof:
        raise Done
    if not acted:
        act(True)
    if plan.then == "later":
        time.sleep(random.Random(plan.seed).uniform(0.0, 1.5))
        raise Done


def serve_echo(conn: socket.socket) -> None:
    r = Reader(conn)
    with contextlib.suppress(OSError):
        while (line := request_line(r)) is not None:
            raw = bytearray(line)
            f = fields(r, raw)
            if f is None:
                break
            raw += b"\r\n"
            for piece in body(r, f):
                raw += piece
            if r.eof:
                break
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(raw) + raw)
    conn.close()


def serve_mode(conn: socket.socket, mode: str) -> None:
    if mode == "script":
        serve_script(conn)
        return
    if mode == "echo":
        serve_echo(conn)
        return
    if mode == "garbage":
        with contextlib.suppress(OSError):
            conn.sendall(GARBAGE[0] + b"garbage\r\n\r\n")
        mode = "fin"
    end(conn, mode)


def listener(addr: str, port: int, mode: str) -> Callable[[], None]:
    srv = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, port))
    srv.listen(1024)

    def loop() -> None:
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=serve_mode, args=(conn, mode), daemon=True).start()

    return loop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--addr", required=True)
    ap.add_argument("--port", action="append", required=True, help="PORT:MODE")
    a = ap.parse_args()
    loops = []
    for spec in a.port:
        port, mode = spec.split(":")
        assert mode in MODES, mode
        loops.append(listener(a.addr, int(port), mode))
    for loop in loops[1:]:
        threading.Thread(target=loop, daemon=True).start()
    print("ready", flush=True)
    loops[0]()


if __name__ == "__main__":
    main()
