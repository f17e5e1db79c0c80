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

ACTIONS = ("route", "block", "redirect")


@dataclass(frozen=True)
class Action:
    kind: str  # route block redirect
    pool: str = ""  # route
    status: int = 0  # block, redirect
    location: str = ""  # redirect

    def __str__(self) -> str:
        if self.kind == "route":
            return f"route {self.pool}"
        if self.kind == "block":
            return f"block {self.status}"
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

    def endpoint(self) -> str:
        if self.addr.version == 6:
            return f"[{self.addr}]:{self.port}"
        return f"{self.addr}:{self.port}"


@dataclass(frozen=True)
class Pool:
    name: str
    scheduler: str
    servers: tuple[Server, ...]
    loc: Loc | None = None


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
