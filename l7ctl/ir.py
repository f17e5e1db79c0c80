"""The intermediate representation: what a checked .rules file means.

Plain frozen dataclasses, no behaviour beyond formatting.  The compiler
builds it from the AST, :mod:`l7ctl.evaluator` defines its semantics and
:mod:`l7ctl.tables` encodes it for the kernel.

Predicates are deduplicated per service: a service's ``preds`` list is
indexed by predicate id, and conditions refer to predicates by id.  Every
string value is bytes (UTF-8 of what was written); host literals are
lower-cased, header names lower-cased.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

FIELDS = ("method", "host", "path", "header", "cookie", "query", "source")
# exact prefix suffix contains glob regex: string tests; exists: a named
# header/cookie/query parameter is present; cidr: source address in network;
# type: the path's extension is one of ``exts`` (case-insensitive).
OPS = ("exact", "prefix", "suffix", "contains", "glob", "regex", "exists", "cidr", "type")

SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh")
STATES = ("up", "drain", "down")
FORWARDS = ("nat", "dr", "tun")
PROTOS = ("tcp", "udp")


@dataclass(frozen=True)
class Loc:
    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Predicate:
    field: str
    name: bytes  # header/cookie/query name (header: lower-case); else b""
    op: str
    value: bytes = b""  # literal, pattern, CIDR text or MIME text
    exts: tuple[bytes, ...] = ()  # for op "type": lower-case extensions with the dot

    def __str__(self) -> str:
        f = self.field
        if self.name:
            f += ' "' + self.name.decode("utf-8", "replace") + '"'
        v = self.value.decode("utf-8", "replace")
        if self.op == "exists":
            return f + " exists"
        if self.op == "type":
            return f"type {v}"
        if self.op in ("cidr", "type") or self.field == "method":
            return f"{f} {v}"
        return f'{f} {self.op} "{v}"'


@dataclass(frozen=True)
class PredRef:
    id: int


@dataclass(frozen=True)
class Not:
    item: Cond


@dataclass(frozen=True)
class And:
    items: tuple[Cond, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Cond, ...]


@dataclass(frozen=True)
class TrueCond:
    pass


Cond = PredRef | Not | And | Or | TrueCond
TRUE = TrueCond()

ACTIONS = ("route", "block", "redirect", "answer")


def quote_body(body: bytes) -> str:
    """An answer's body as the rules language writes it (escapes of
    :func:`l7ctl.compiler.unescape_body`)."""
    out = []
    for b in body:
        c = chr(b)
        if c == "\n":
            out.append("\\n")
        elif c == "\r":
            out.append("\\r")
        elif c == "\t":
            out.append("\\t")
        elif c in '"\\':
            out.append("\\" + c)
        elif 0x20 <= b < 0x7F:
            out.append(c)
        else:
            out.append(f"\\x{b:02x}")
    return '"' + "".join(out) + '"'


@dataclass(frozen=True)
class Action:
    kind: str  # route block redirect answer
    pool: str = ""  # route
    status: int = 0  # block, redirect, answer
    location: str = ""  # redirect
    body: bytes = b""  # answer

    def __str__(self) -> str:
        if self.kind == "route":
            return f"route {self.pool}"
        if self.kind == "block":
            return f"block {self.status}"
        if self.kind == "answer":
            return f"answer {self.status} {quote_body(self.body)}"
        return f"redirect {self.status} {self.location}"


@dataclass(frozen=True)
class Rule:
    index: int
    action: Action
    cond: Cond
    loc: Loc
    text: str


@dataclass(frozen=True)
class Server:
    addr: IPAddress
    port: int
    weight: int = 1
    state: str = "up"
    loc: Loc | None = None
    id: str = ""  # `id NAME`: the server's identity for persistence

    def endpoint(self) -> str:
        if self.addr.version == 6:
            return f"[{self.addr}]:{self.port}"
        return f"{self.addr}:{self.port}"

    def identity(self) -> str:
        """What the persistence id is derived from: the `id`, else ADDR:PORT."""
        return self.id or self.endpoint()


# Health checks (KT_CHECK_*), persistence (KT_PERSIST_*) and access log
# modes (KT_LOG_*), in the kernel's order.
CHECK_KINDS = ("none", "tcp", "http")
PERSIST_KINDS = ("none", "cookie", "source")
LOG_MODES = ("off", "on", "sample")
# Defaults of a check (HAProxy's meanings): a check every interval, failed
# after timeout; rise passes in a row bring a server up, fall failures in a
# row take it down; an HTTP check passes on a status in expect.
CHECK_INTERVAL_MS = 2000
CHECK_TIMEOUT_MS = 1000
CHECK_RISE = 2
CHECK_FALL = 3
CHECK_EXPECT = (200, 399)
# `persist source;` without a duration: IPVS's default persistence (-p)
PERSIST_SOURCE_MS = 300_000


@dataclass(frozen=True)
class Check:
    """A pool's active health check."""

    kind: str  # "tcp" or "http"
    interval_ms: int = CHECK_INTERVAL_MS
    timeout_ms: int = CHECK_TIMEOUT_MS
    rise: int = CHECK_RISE
    fall: int = CHECK_FALL
    request: str = ""  # http: "METHOD /path"
    host: str = ""  # http: the Host header to send ("": none given)
    expect: tuple[int, int] = CHECK_EXPECT  # http: statuses that pass

    def __str__(self) -> str:
        out = f"check {self.kind}"
        if self.kind == "http":
            out += f' "{self.request}"' + (f' host "{self.host}"' if self.host else "")
            out += f" expect {self.expect[0]}-{self.expect[1]}"
        return (
            out + f" interval {self.interval_ms}ms timeout {self.timeout_ms}ms"
            f" rise {self.rise} fall {self.fall}"
        )


@dataclass(frozen=True)
class Persist:
    """A pool's persistence: a cookie naming the server, or the client's address."""

    kind: str  # "cookie" or "source"
    cookie: str = ""  # cookie: its name
    timeout_ms: int = 0  # source: how long an address sticks

    def __str__(self) -> str:
        if self.kind == "cookie":
            return f"persist cookie {self.cookie}"
        return f"persist source {self.timeout_ms}ms"


@dataclass(frozen=True)
class Pool:
    name: str
    scheduler: str
    servers: tuple[Server, ...]
    loc: Loc | None = None
    check: Check | None = None
    persist: Persist | None = None


# Service options: limits and timeouts; 0 or absent = the module's default
# (for connections, source-connections and source-rate: unlimited).  The
# order is the kernel's (KT_LIMIT_*, KT_TIMEOUT_* in kmod/core/match.h).
LIMITS = (
    "request-line",
    "header-size",
    "headers",
    "connections",
    "source-connections",
    "source-rate",
    "backlog",
)
TIMEOUTS = ("header", "idle", "connect", "backend")
# X-Forwarded-For: off, append (keep the client's fields, add one), replace
# (drop the client's fields, add one).
XFF_MODES = ("off", "append", "replace")
# Relay modes: `relay raw;` is the only one written; HTTP switching is the
# default.
RELAY_MODES = ("raw",)
# What a raw service refuses (it reads no HTTP): limits and timeouts about
# requests and their heads.
RAW_REFUSED_LIMITS = ("request-line", "header-size", "headers", "source-rate")
RAW_REFUSED_TIMEOUTS = ("header", "backend")
# File-level limits, for the whole network namespace; absent = the
# module's default (derived from memory).
NS_LIMITS = ("connections",)


@dataclass(frozen=True)
class Service:
    name: str
    addr: IPAddress
    port: int
    rules: tuple[Rule, ...]
    preds: tuple[Predicate, ...]
    limits: dict[str, int] = field(default_factory=dict)
    timeouts_ms: dict[str, int] = field(default_factory=dict)
    xff: str = "off"  # one of XFF_MODES
    loc: Loc | None = None
    # `relay raw;`: no HTTP at all, every byte of a connection relayed to a
    # server of the one rule, an unconditional route (a benchmarking aid)
    raw: bool = False
    log: str = "on"  # one of LOG_MODES
    log_sample: int = 0  # "sample": log one request in this many (2..65535)
    # `listen ADDRESS tls`: HTTPS, handshakes by `l7ctl tlsd` (docs/tls.md);
    # the certificates in the order written, the first the default
    tls: bool = False
    certificates: tuple[Certificate, ...] = ()
    xfp: bool = False  # `x-forwarded-proto on;`


@dataclass(frozen=True)
class Certificate:
    """`certificate "FILE" key "FILE";`: absolute paths, and the names the
    certificate covers (empty when the files were not read)."""

    cert: str
    key: str
    names: tuple[str, ...] = ()
    loc: Loc | None = None


@dataclass(frozen=True)
class Virtual:
    proto: str
    addr: IPAddress
    port: int
    scheduler: str
    forward: str
    persistence: int  # seconds, 0 = none
    servers: tuple[Server, ...]
    loc: Loc | None = None


@dataclass(frozen=True)
class Config:
    pools: tuple[Pool, ...]
    services: tuple[Service, ...]
    virtuals: tuple[Virtual, ...]
    files: tuple[str, ...] = ()
    limits: dict[str, int] = field(default_factory=dict)  # NS_LIMITS

    def pool_index(self, name: str) -> int:
        for i, p in enumerate(self.pools):
            if p.name == name:
                return i
        raise KeyError(name)

    def service(self, name: str) -> Service:
        for s in self.services:
            if s.name == name:
                return s
        raise KeyError(name)
