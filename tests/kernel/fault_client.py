"""Clients of the fault test (test_faults.py): scenarios, their generator, their runner.

A scenario is one client connection: one to three requests (sent one after another on a
keep-alive connection, or pipelined), each carrying the plan of the backend that will
answer it (fault_server.Plan, in its target) and the pool it is routed to (the first path
segment), and what the client itself does:

    normal     send everything in random segments, read every answer, close
    halfclose  the same, with a FIN after the last request
    idle       the same, then wait for the switch to close the idle connection
    fin        FIN at byte `at` of what it sends, then read until the switch closes
    close      close() at byte `at` (a reset if answer bytes are unread)
    rst        reset (SO_LINGER 0) at byte `at`
    stall      stop sending at byte `at`, read until the switch closes
    readrst    reset as soon as the first answer byte arrives
    deaf       send everything (pipelined), read nothing for two seconds, close (a reset)

Uploads are Content-Length or chunked bodies of random sizes (up to 1.5 MiB) cut into random
segments, some after `Expect: 100-continue` (the body waits for an answer, or a second); a
last request may be no HTTP at all, or a chunked body with a malformed chunk.
Everything derives from the scenario's seed, so `generate(Random(label))` gives the same
scenario again.  `run_batch` runs scenarios at once, one thread each, in the client's
namespace; every socket is nonblocking and every scenario has a deadline, so a connection
that the switch never ends shows as "hang" instead of wedging the test.
"""

from __future__ import annotations

import errno
import functools
import random
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass, field, replace

from fault_server import ANSWERS, COMPLETE, ENDINGS, Plan, padding, pattern

from l7ctl.httpparse import Refusal, Response, parse_responses

VIP = "10.0.0.1"
CLIENT_ENDS = ("normal", "halfclose", "idle", "fin", "close", "rst", "stall", "readrst", "deaf")
# Answers a well-behaved server may give; what it does after them is in good_then().
GOOD_ACTS = (*COMPLETE, "eof", "eof")
STATUSES = (200, 200, 200, 201, 404, 410, 500)
NO_BODY = (204, 304)  # a faulty backend sends a body with them anyway
EXPECT_WAIT = 1.0  # how long a client waits for an answer to Expect: 100-continue
# Chunks the switch must refuse (400) as soon as their bytes arrive.
BAD_CHUNKS = (b"zz\r\n", b"-5\r\n", b"5 x\r\n", b"0x10\r\n", b"\n", b"3\r\nabcXY", b"3;\r\n")


@dataclass(frozen=True)
class Req:
    """One request: its framing, its body, its backend's plan and its pool."""

    method: str = "GET"
    framing: str = "none"  # none, length, chunked
    size: int = 0
    version: str = "1.1"
    close: bool = False  # Connection: close
    pool: str = "g"
    plan: Plan = field(default_factory=Plan)
    bad: str = ""  # "", "garbage" (no HTTP), "badchunk" (a malformed chunk)
    seed: int = 0
    pace: tuple[int, float] | None = None  # the body in pieces of so many bytes, so far apart
    expect: bool = False  # Expect: 100-continue
    pad: int = 0  # a large head: header fields of about so many bytes

    @property
    def target(self) -> str:
        return f"/{self.pool}/{self.plan.encode()}"

    def head(self) -> bytes:
        if self.bad == "garbage":
            return b"GET /g/x HTTP/1.1\r\nHost: fault\r\nBad Header: x\r\n\r\n"
        lines = [f"{self.method} {self.target} HTTP/{self.version}", "Host: fault.example"]
        if self.framing == "length":
            lines.append(f"Content-Length: {self.size}")
        elif self.framing == "chunked":
            lines.append("Transfer-Encoding: chunked")
        if self.expect:
            lines.append("Expect: 100-continue")
        if self.pad:
            lines += padding(random.Random(self.seed), self.pad, self.pad)
        if self.close:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def body(self) -> bytes:
        """The body as sent (chunked: the wire form)."""
        return _body(self)

    def _make_body(self) -> bytes:
        if self.bad == "garbage" or self.framing == "none":
            return b""
        data = pattern(self.seed, self.size)
        if self.framing == "length":
            return data
        rng = random.Random(self.seed)
        chunks, pos = [], 0
        while pos < len(data):
            n = min(len(data) - pos, rng.choice((1, 10, 1000, 8000, 65536, 300000)))
            chunks.append(b"%x\r\n" % n + data[pos : pos + n] + b"\r\n")
            pos += n
        if self.bad == "badchunk":  # where a chunk starts: refused as soon as it arrives
            return b"".join(chunks[: rng.randint(0, len(chunks))]) + rng.choice(BAD_CHUNKS)
        trailer = b"X-Trailer: t\r\n" if rng.random() < 0.2 else b""
        return b"".join(chunks) + b"0\r\n" + trailer + b"\r\n"

    def wire(self) -> bytes:
        return self.head() + self.body()

    @property
    def early(self) -> bool:
        """The backend may answer before it has read the whole request."""
        p = self.plan
        return p.at in ("line", "head") or (p.at == "body" and p.part <= len(self.body()))

    @property
    def keeps_connection(self) -> bool:
        """A good answer to it lets the client's connection go on."""
        return (self.plan.keep_alive and not self.early and not self.close and
                self.version == "1.1" and not self.bad and self.pool == "g")  # fmt: skip

    def describe(self) -> str:
        p = self.plan
        body = f"{self.framing}:{self.size}" if self.framing != "none" else "no body"
        bad = f" {self.bad}" if self.bad else ""
        bad += " expect-100" if self.expect else ""
        bad += f" head+{self.pad}" if self.pad else ""
        conn = " close" if self.close else ""
        return (f"{self.method} HTTP/{self.version} {body}{bad}{conn} -> /{self.pool}: "
                f"at {p.at}{f'+{p.part}' if p.at == 'body' else ''} {p.act} then {p.then} "
                f"{'ka' if p.ka else 'close'} {p.status} size {p.size}")  # fmt: skip


@functools.lru_cache(maxsize=64)
def _body(req: Req) -> bytes:
    return req._make_body()


@dataclass(frozen=True)
class Scenario:
    label: str
    reqs: tuple[Req, ...]
    pipelined: bool = False
    end: str = "normal"
    at: int = 0  # offset in the bytes sent, for fin, close, rst, stall
    seed: int = 0

    def stream(self) -> bytes:
        return b"".join(r.wire() for r in self.reqs)

    @property
    def good_client(self) -> bool:
        return self.end in ("normal", "halfclose", "idle") and not any(r.bad for r in self.reqs)

    def stall_in(self) -> tuple[int, bool] | None:
        """(request, in its head) where a stalling client stops; None if it does not."""
        if self.end != "stall":
            return None
        start = 0
        for i, r in enumerate(self.reqs):
            n = len(r.wire())
            if self.at < start + n:
                return i, self.at < start + len(r.head())
            start += n
        return None

    def describe(self) -> str:
        how = "pipelined" if self.pipelined else "one by one"
        at = f" at byte {self.at}" if self.end in ("fin", "close", "rst", "stall") else ""
        lines = [f"scenario {self.label}: client {self.end}{at}, {len(self.reqs)} request(s) {how}"]
        lines += [f"    [{i}] {r.describe()}" for i, r in enumerate(self.reqs)]
        return "\n".join(lines)


# ---- the generator ------------------------------------------------------------------


def _size(rng: random.Random) -> int:
    k = rng.random()
    if k < 0.55:
        return rng.randint(0, 2000)
    if k < 0.9:
        return rng.randint(2000, 128 * 1024)
    return rng.randint(256 * 1024, 1536 * 1024)


def _plan(rng: random.Random, kind: str, req: Req) -> Plan:
    body = len(req.body())
    at = rng.choice(("line", "head", "body", "end", "end", "end"))
    part = rng.randint(0, body + 10)
    status = rng.choice(STATUSES)
    size = rng.randint(0, 3000) if rng.random() < 0.8 else rng.randint(3000, 300000)
    seed = rng.getrandbits(32)
    old = req.version == "1.0"  # no chunked or 1xx answers to HTTP/1.0
    if kind == "good":
        acts = tuple(a for a in GOOD_ACTS if not (old and a in ("chunked", "interim")))
        act = rng.choice(acts)
        ka = act != "eof" and rng.random() < 0.8
        return Plan(at, part, act, "next" if ka else "fin", ka, status, size, seed)
    if kind == "fault":
        acts = tuple(a for a in (*ENDINGS[:3], *ANSWERS) if not (old and a == "interim"))
        act = rng.choice(acts)
        then = rng.choice(("next", "later", *ENDINGS))
        if rng.random() < 0.1:
            status = rng.choice(NO_BODY)
        return Plan(at, part, act, then, rng.random() < 0.7, status, size, seed)
    # "stall": no answer at all, or half a head and then nothing
    act = rng.choice(("freeze", "drain", "partial"))
    return Plan(at, part, act, "freeze", True, status, size, seed)


def stalls(plan: Plan) -> bool:
    """The backend may leave the switch waiting for a head: this request, by answering
    half a head or nothing, or the next one on the connection, after a keep-alive answer
    (the switch reuses the connection for any client)."""
    return plan.act in ("freeze", "drain") or (
        plan.then == "freeze" and (plan.act == "partial" or (plan.ka and plan.act in (
            COMPLETE)))
    )  # fmt: skip


def _request(rng: random.Random, last: bool) -> Req:
    k = rng.random()
    method, framing = ("GET", "none") if k < 0.4 else ("POST", "length") if k < 0.75 else (
        rng.choice(("POST", "PUT")), "chunked")  # fmt: skip
    size = _size(rng) if framing != "none" else 0
    version = "1.0" if last and framing != "chunked" and rng.random() < 0.1 else "1.1"
    close = last and version == "1.1" and rng.random() < 0.2
    bad = ""
    if last and rng.random() < 0.03:
        bad = "garbage"
    elif last and framing == "chunked" and rng.random() < 0.12:
        bad = "badchunk"
    req = Req(method, framing, size, version, close, "g", Plan(), bad, rng.getrandbits(32))
    if framing != "none" and version == "1.1" and bad != "garbage" and rng.random() < 0.15:
        req = replace(req, expect=True)
    if bad != "garbage" and rng.random() < 0.05:
        req = replace(req, pad=rng.randint(10 << 10, 60 << 10))
    k = rng.random()
    if k < 0.40:
        return replace(req, pool="g", plan=_plan(rng, "good", req))
    if k < 0.85:
        plan = _plan(rng, "fault" if k < 0.75 else "stall", req)
        # 504s put a server in a cool-down (then 503): only in the stall pool
        return replace(req, pool="s" if stalls(plan) else "f", plan=plan)
    return replace(req, pool="a/" + rng.choice(("fin", "rst", "garbage", "freeze")))


def generate(label: str) -> Scenario:
    """The scenario named `label` (any string: the same label, the same scenario)."""
    rng = random.Random(label)
    n = rng.choices((1, 2, 3), weights=(60, 25, 15))[0]
    reqs = tuple(_request(rng, i == n - 1) for i in range(n))
    end = rng.choices(CLIENT_ENDS, weights=(38, 10, 5, 10, 8, 8, 11, 5, 5))[0]
    s = Scenario(label, reqs, n > 1 and rng.random() < 0.4, end, 0, rng.getrandbits(32))
    s = replace(s, at=rng.randint(0, len(s.stream()) - 1), pipelined=s.pipelined or end == "deaf")
    # A client that stalls after a head keeps its backend waiting: the switch answers 504
    # and puts the server in a cool-down, so that request goes to the stall pool.
    stall = s.stall_in()
    if stall and not stall[1] and s.reqs[stall[0]].pool in ("g", "f"):
        i = stall[0]
        reqs = (*s.reqs[:i], replace(s.reqs[i], pool="s"), *s.reqs[i + 1 :])
        s = replace(s, reqs=reqs)
    return s


# ---- the runner -------------------------------------------------------------------


@dataclass
class Outcome:
    received: bytes = b""
    ended: str = ""  # eof, reset, self (the client ended it), hang, refused
    elapsed: float = 0.0
    sent: int = 0


def segments(req: Req, seed: int) -> list[tuple[bytes, float]]:
    """req's bytes as (segment, pause before it): the head in up to 4 pieces, the body
    in pieces of random sizes."""
    rng = random.Random(seed)
    head, body = req.head(), req.body()
    gate = [(b"", -1.0)] if req.expect and body else []  # wait for an answer first
    if req.pace:
        n, pause = req.pace
        return [(head, 0.0), *gate] + [(body[i : i + n], pause) for i in range(0, len(body), n)]
    cuts = sorted(rng.sample(range(1, len(head)), min(rng.randint(0, 3), len(head) - 1)))
    out = [(head[a:b], rng.choice((0.0, 0.001, 0.005)))
           for a, b in zip([0, *cuts], [*cuts, len(head)], strict=True)]  # fmt: skip
    out += gate
    pos = 0
    while pos < len(body):
        n = rng.choice((1, 100, 1460, 4096, 16384, 65536, 65536))
        out.append((body[pos : pos + n], rng.choice((0.0, 0.0, 0.0, 0.001, 0.005, 0.02))))
        pos += n
    return out


def progress(data: bytes) -> tuple[int, bool]:
    """(final answers complete in data, the connection ends after them)."""
    done, ends = 0, False
    for m in parse_responses(data):
        if isinstance(m, Refusal):
            return done, ends or not m.error.startswith("incomplete")
        if m.framing in ("close", "tunnel"):
            return done, True
        if m.status >= 200:
            done += 1
            ends = ends or not m.keep_alive
    return done, ends


def _reset(s: socket.socket) -> None:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def prepare(sc: Scenario) -> list[list[tuple[bytes, float]]]:
    """The scenario's bytes, request by request, as segments() cuts them."""
    rng = random.Random(sc.seed)
    return [segments(r, rng.getrandbits(32)) for r in sc.reqs]


def run(
    sc: Scenario,
    deadline: float,
    addr: tuple[str, int] = (VIP, 80),
    per_req: list[list[tuple[bytes, float]]] | None = None,
) -> Outcome:
    """Play one scenario against the switch; never blocks past `deadline` seconds.
    `per_req`: its bytes, prepared (by prepare()) before the connection opens --
    a client that builds megabytes of body after connecting keeps the switch
    waiting for a head it has not sent (the switch answers 408, rightly)."""
    if per_req is None:
        per_req = prepare(sc)
    out = Outcome()
    t0 = time.monotonic()
    limit = t0 + deadline
    s = socket.socket()
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(5)
    try:
        s.connect(addr)
    except OSError:
        out.ended, out.elapsed = "refused", time.monotonic() - t0
        return out
    s.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_READ)
    queue: list[tuple[bytes, float]] = []  # segments that may go now
    next_req = 0  # the next request whose segments join the queue
    cut = sc.at if sc.end in ("fin", "close", "rst", "stall") else None
    sending = True  # more bytes may go
    buf = bytearray()  # the segment being sent
    received = bytearray()
    due = t0  # when buf may go
    gate: tuple[int, float] | None = None  # Expect: wait for bytes past this, or this long
    deaf_until = limit if sc.end == "deaf" else 0.0  # reads nothing until then
    answered, ends = 0, False

    def finish(how: str) -> Outcome:
        sel.close()
        s.close()
        out.received, out.ended = bytes(received), how
        out.elapsed = time.monotonic() - t0
        return out

    while True:
        now = time.monotonic()
        if now > limit:
            _reset(s)
            return finish("hang")
        if now >= deaf_until > 0:
            return finish("self")  # with unread bytes: a reset
        if sending and cut is not None and out.sent >= cut and not buf:
            sending = False
            if sc.end == "close":
                return finish("self")
            if sc.end == "rst":
                _reset(s)
                return finish("self")
            if sc.end == "fin":
                s.shutdown(socket.SHUT_WR)
        if gate and (len(received) > gate[0] or now >= gate[1]):
            gate = None
        if sending and not buf and not gate:
            # pipelined: every request at once; one by one: after the previous answer
            if (
                not queue
                and next_req < len(sc.reqs)
                and (sc.pipelined or (answered >= next_req and not ends))
            ):
                queue += per_req[next_req]
                next_req += 1
            if queue:
                data, pause = queue.pop(0)
                if pause < 0:
                    gate = (len(received), now + EXPECT_WAIT)
                else:
                    buf += data if cut is None else data[: max(cut - out.sent, 0)]
                    due = now + pause
            elif next_req == len(sc.reqs):  # everything went
                sending = False
                if sc.end == "halfclose":
                    s.shutdown(socket.SHUT_WR)
                if sc.end == "deaf":
                    deaf_until = now + 2.0
        writing = sending and bool(buf) and now >= due
        wait = max(
            min(limit - now, 0.05, due - now if sending and buf and not writing else 0.05), 0
        )
        events = (0 if sc.end == "deaf" else selectors.EVENT_READ) | (
            selectors.EVENT_WRITE if writing else 0
        )
        if not events:
            time.sleep(wait)
            continue
        sel.modify(s, events)
        for _, ev in sel.select(wait):
            if ev & selectors.EVENT_WRITE and buf:
                try:
                    n = s.send(buf)
                    out.sent += n
                    del buf[:n]
                except BlockingIOError:
                    pass
                except OSError:  # the switch closed or reset: read what is left
                    sending = False
                    buf.clear()
                    if sc.end == "deaf":
                        deaf_until = min(deaf_until, now + 2.0)
            if ev & selectors.EVENT_READ:
                try:
                    d = s.recv(1 << 16)
                except BlockingIOError:
                    continue
                except OSError as e:
                    return finish("reset" if e.errno == errno.ECONNRESET else f"error {e}")
                if not d:
                    return finish("eof")
                received += d
                if sc.end == "readrst":
                    _reset(s)
                    return finish("self")
                answered, ends = progress(bytes(received))
                if answered >= len(sc.reqs) and sc.end in ("normal", "halfclose"):
                    return finish("self")


def run_batch(
    scenarios: list[Scenario], deadline: float, addr: tuple[str, int] = (VIP, 80)
) -> list[Outcome]:
    """Run scenarios at once (in the client's namespace), one thread each, every
    scenario's bytes prepared before the first connection opens."""
    results: list[Outcome] = [Outcome() for _ in scenarios]
    prepared = [prepare(sc) for sc in scenarios]

    def one(i: int) -> None:
        try:
            results[i] = run(scenarios[i], deadline, addr, prepared[i])
        except Exception as e:  # a bug of the client itself: show it as such
            results[i] = Outcome(ended=f"client error: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(scenarios))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def answers(data: bytes) -> list[tuple[Response | Refusal, bytes]]:
    """The messages in data, each with its body bytes (decoded if chunked)."""
    out: list[tuple[Response | Refusal, bytes]] = []
    for m in parse_responses(data):
        if isinstance(m, Refusal):
            out.append((m, b""))
            break
        raw = data[m.offset + m.head_length : m.offset + m.consumed]
        out.append((m, dechunk(raw) if m.framing == "chunked" else raw))
    return out


def dechunk(raw: bytes) -> bytes:
    """The data of a chunked body the parser accepted."""
    out, pos = bytearray(), 0
    while True:
        eol = raw.index(b"\r\n", pos)
        size = int(raw[pos:eol].split(b";")[0], 16)
        if not size:
            return bytes(out)
        out += raw[eol + 2 : eol + 2 + size]
        pos = eol + 2 + size + 2
