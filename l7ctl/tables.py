"""Encode an IR config into the compiled binary tables the kernel runs.

The format is documented in docs/rules-format.md and mirrored by the
validator in kmod/core/match.c; constants here and in match.h must agree.
Everything is little-endian u32 words.  The encoder also enforces the
bounds the kernel enforces (DFA states, blob size, counts of services,
pools and servers, option values) and raises :class:`TableError`, with the
offending predicate where there is one, when one is exceeded.
"""

from __future__ import annotations

import hashlib
import ipaddress
import struct
from array import array
from collections.abc import Iterable
from dataclasses import dataclass

from l7ctl import automata, ir
from l7ctl import regex as rx

MAGIC = 0x4C52544B  # "KTRL" little-endian
VERSION = 0x00030000  # major 3, minor 0
NONE = 0xFFFFFFFF
MAX_BLOB = 8 << 20
MAX_DFA_STATES = 65535

# Bounds the kernel's validator enforces (KT_RULES_MAX_* in match.h).
MAX_SERVICES = 1024
MAX_POOLS = 16384
MAX_SERVERS = 65536
# The largest value of each service limit (ir.LIMITS); 0 means the default.
LIMIT_MAX = {
    "request-line": 65536,
    "header-size": 1 << 20,
    "headers": 1000,
    "connections": 1_000_000,
    "source-connections": 1_000_000,
    "source-rate": 1_000_000,
    "backlog": 65535,
}
# The largest value of each namespace-wide limit (ir.NS_LIMITS).
NS_LIMIT_MAX = {"connections": 10_000_000}
MAX_TIMEOUT_MS = 24 * 3600 * 1000
# Health checks, persistence, access log and answers (KT_RULES_* in match.h)
CHECK_INTERVAL_RANGE = (100, 3600 * 1000)  # ms
CHECK_TIMEOUT_RANGE = (10, 60 * 1000)  # ms, and at most the interval
CHECK_COUNT_MAX = 100  # rise, fall: 1..100
CHECK_REQUEST_MAX = 1024
CHECK_HOST_MAX = 255
COOKIE_NAME_MAX = 64
PERSIST_TIMEOUT_RANGE = (1000, 24 * 3600 * 1000)  # ms
LOG_SAMPLE_RANGE = (2, 65535)
ANSWER_BODY_MAX = 4096
# the key of the persistence id's hash (persist_id)
PERSIST_KEY = b"ktcpvs-persist"

HDR_WORDS = 8
SECTIONS = ("str", "pool", "server", "service", "rule", "pred", "field", "hash", "dfa", "words")
REC_WORDS = {
    "str": 0,  # bytes
    "pool": 24,
    "server": 10,
    "service": 40,
    "rule": 8,
    "pred": 1,
    "field": 8,
    "hash": 5,
    "dfa": 6,
    "words": 1,
}
DIR_WORDS = 2 * len(SECTIONS)

# field kinds
F_METHOD, F_HOST, F_PATH, F_HEADER, F_COOKIE, F_QUERY, F_SRC4, F_SRC6 = range(1, 9)
FIELD_KIND = {
    "method": F_METHOD,
    "host": F_HOST,
    "path": F_PATH,
    "header": F_HEADER,
    "cookie": F_COOKIE,
    "query": F_QUERY,
}
# actions
A_ROUTE, A_BLOCK, A_REDIRECT, A_ANSWER = 1, 2, 3, 4
ACTION = {"route": A_ROUTE, "block": A_BLOCK, "redirect": A_REDIRECT, "answer": A_ANSWER}
# formula opcodes (insn = op << 28 | arg)
OP_PRED, OP_TRUE, OP_NOT, OP_AND, OP_OR = range(5)
MAX_STACK = 64
SCHED = {s: i for i, s in enumerate(ir.SCHEDULERS)}
STATE = {s: i for i, s in enumerate(ir.STATES)}
# service flags: X-Forwarded-For mode (bits 0, 1); raw relay (bit 2, never
# with an X-Forwarded-For bit)
SVC_XFF = {"off": 0, "append": 1, "replace": 2}
SVC_RAW = 4
SVC_TLS = 8
SVC_XFP = 16
# service record: limits 0..3 at words 9..12, limits 4..6 at words 32..34,
# word 35 log mode, 36 log sample, words 37..39 reserved (0)
SVC_LIMITS_LOW = 4
SVC_RESERVED = 3
POOL_RESERVED = 3  # pool record words 21..23
CHECK_KIND = {k: i for i, k in enumerate(ir.CHECK_KINDS)}
PERSIST_KIND = {k: i for i, k in enumerate(ir.PERSIST_KINDS)}
LOG_MODE = {k: i for i, k in enumerate(ir.LOG_MODES)}


class TableError(Exception):
    def __init__(self, service: str, pred: int | None, msg: str, hint: str = "") -> None:
        super().__init__(msg)
        self.service = service
        self.pred = pred
        self.hint = hint


def persist_id(pool: str, server: ir.Server) -> int:
    """A server's persistence id: the 8-byte keyed BLAKE2b of the pool's name,
    a NUL and the server's identity (its `id`, else ADDR:PORT as
    ir.Server.endpoint() writes it), read as a big-endian u64 -- so a
    persistence cookie's value, the id's 16 lower-case hex digits, is the
    digest's hex.  Never 0 (0 becomes 1).  The same file gives the same ids
    on every director."""
    h = hashlib.blake2b(
        pool.encode() + b"\0" + server.identity().encode(), digest_size=8, key=PERSIST_KEY
    )
    return int.from_bytes(h.digest(), "big") or 1


def cookie_value(pool: str, server: ir.Server) -> str:
    """The value of a persistence cookie naming ``server`` of ``pool``."""
    return f"{persist_id(pool, server):016x}"


def fnv1a(data: bytes, fold: bool) -> int:
    h = 0x811C9DC5
    for b in data:
        if fold and 65 <= b <= 90:
            b += 32
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


# ---- condition lowering --------------------------------------------------------


def _depth(c: ir.Cond) -> int:
    if isinstance(c, ir.PredRef | ir.TrueCond):
        return 1
    if isinstance(c, ir.Not):
        return _depth(c.item)
    ds = sorted((_depth(i) for i in c.items), reverse=True)
    return max(d + (1 if k else 0) for k, d in enumerate(ds))


def emit_code(c: ir.Cond, out: list[int]) -> None:
    """Postfix code; children of and/or in decreasing depth (Sethi-Ullman)."""
    if isinstance(c, ir.TrueCond):
        out.append(OP_TRUE << 28)
    elif isinstance(c, ir.PredRef):
        out.append((OP_PRED << 28) | c.id)
    elif isinstance(c, ir.Not):
        emit_code(c.item, out)
        out.append(OP_NOT << 28)
    else:
        op = OP_AND if isinstance(c, ir.And) else OP_OR
        items = sorted(c.items, key=_depth, reverse=True)
        emit_code(items[0], out)
        for it in items[1:]:
            emit_code(it, out)
            out.append(op << 28)


def _weight(p: ir.Predicate) -> int:
    """How often a predicate is expected to be true: triggers prefer rare ones."""
    if p.field == "method" or p.op == "exists":
        return 50
    if p.op in ("prefix", "suffix", "contains") and len(p.value) <= 1:
        return 30
    if p.op == "cidr":
        return 5
    return 1


def trigger(
    c: ir.Cond, preds: tuple[ir.Predicate, ...], neg: bool = False
) -> frozenset[int] | None:
    """A set T of predicates such that the condition can only hold when some
    predicate of T holds; None when no such set exists (the rule must always
    be evaluated)."""
    if isinstance(c, ir.TrueCond):
        return frozenset() if neg else None
    if isinstance(c, ir.PredRef):
        return None if neg else frozenset([c.id])
    if isinstance(c, ir.Not):
        return trigger(c.item, preds, not neg)
    conj = isinstance(c, ir.And) != neg
    subs = [trigger(i, preds, neg) for i in c.items]
    if conj:
        known = [s for s in subs if s is not None]
        if not known:
            return None
        return min(known, key=lambda s: sum(_weight(preds[i]) for i in s))
    if any(s is None for s in subs):
        return None
    return frozenset().union(*(s for s in subs if s is not None))


# ---- automata for one field ---------------------------------------------------


def type_regex(exts: tuple[bytes, ...]) -> rx.Regex:
    alts = tuple(rx.Cat(tuple(rx.Chars(frozenset([b])) for b in e[1:])) for e in exts)
    body = rx.fold_node(rx.Cat((rx.Chars(frozenset(b".")), rx.Alt(alts))))
    return rx.Regex("type", True, (rx.Branch(False, True, body),))


def cidr_regex(net: ir.IPNetwork) -> rx.Regex:
    raw = net.network_address.packed
    items: list[rx.Node] = []
    bits = net.prefixlen
    for b in raw:
        if bits >= 8:
            items.append(rx.Chars(frozenset([b])))
            bits -= 8
        elif bits > 0:
            span = 1 << (8 - bits)
            items.append(rx.Chars(frozenset(range(b, b + span))))
            bits = 0
        else:
            break
    return rx.Regex(str(net), False, (rx.Branch(True, False, rx.Cat(tuple(items))),))


@dataclass
class _Field:
    kind: int
    name: bytes
    exists: int = NONE
    exact: dict[bytes, list[int]] | None = None
    prefixes: list[tuple[int, bytes]] | None = None
    suffixes: list[tuple[int, bytes]] | None = None
    contains: list[tuple[int, bytes]] | None = None
    regexes: list[tuple[int, rx.Regex]] | None = None

    def __post_init__(self) -> None:
        self.exact = {}
        self.prefixes, self.suffixes, self.contains, self.regexes = [], [], [], []


def _fields(svc: ir.Service) -> list[_Field]:
    fields: dict[tuple[int, bytes], _Field] = {}

    def get(kind: int, name: bytes = b"") -> _Field:
        f = fields.get((kind, name))
        if f is None:
            f = fields[(kind, name)] = _Field(kind, name)
        return f

    for pid, p in enumerate(svc.preds):
        if p.field == "source":
            net = ipaddress.ip_network(p.value.decode())
            f = get(F_SRC4 if net.version == 4 else F_SRC6)
            assert f.regexes is not None
            f.regexes.append((pid, cidr_regex(net)))
            continue
        f = get(FIELD_KIND[p.field], p.name)
        assert f.exact is not None and f.regexes is not None
        assert f.prefixes is not None and f.suffixes is not None and f.contains is not None
        if p.op == "exists":
            f.exists = pid
        elif p.op == "exact":
            f.exact.setdefault(p.value, []).append(pid)
        elif p.op == "prefix":
            f.prefixes.append((pid, p.value))
        elif p.op == "suffix":
            f.suffixes.append((pid, p.value))
        elif p.op == "contains":
            f.contains.append((pid, p.value))
        elif p.op == "glob":
            host = p.field == "host"
            lit = rx.glob_as_literal(p.value, host)
            if lit is None:
                f.regexes.append((pid, rx.glob_to_regex(p.value.decode("utf-8"), host=host)))
            elif lit[0] == "exact":
                f.exact.setdefault(lit[1], []).append(pid)
            else:
                {"prefix": f.prefixes, "suffix": f.suffixes, "contains": f.contains}[lit[0]].append(
                    (pid, lit[1])
                )
        elif p.op == "regex":
            f.regexes.append((pid, rx.parse(p.value.decode("utf-8"))))
        elif p.op == "type":
            f.regexes.append((pid, type_regex(p.exts)))
        else:  # pragma: no cover
            raise ValueError(p.op)
    return sorted(fields.values(), key=lambda f: (f.kind, f.name))


# ---- the writer ----------------------------------------------------------------


class _Writer:
    def __init__(self) -> None:
        self.strs = bytearray()
        self.str_ids: dict[bytes, int] = {}
        self.sec: dict[str, list[int]] = {s: [] for s in SECTIONS if s != "str"}
        self.words = self.sec["words"]
        self.words.append(0)  # offset 0: the empty list
        self.lists: dict[tuple[int, ...], int] = {(): 0}

    def string(self, s: bytes) -> tuple[int, int]:
        off = self.str_ids.get(s)
        if off is None:
            off = len(self.strs)
            self.strs += s
            self.str_ids[s] = off
        return off, len(s)

    def lst(self, items: Iterable[int], intern: bool = True) -> int:
        t = tuple(items)
        if intern:
            off = self.lists.get(t)
            if off is not None:
                return off
        off = len(self.words)
        self.words.append(len(t))
        self.words.extend(t)
        if intern:
            self.lists[t] = off
        return off

    def record(self, sec: str, *vals: int) -> int:
        rec = self.sec[sec]
        n = REC_WORDS[sec]
        assert len(vals) == n, (sec, len(vals))
        idx = len(rec) // n
        rec.extend(v & 0xFFFFFFFF for v in vals)
        return idx

    def addr(self, a: ir.IPAddress) -> tuple[int, list[int]]:
        raw = a.packed.ljust(16, b"\0")
        return a.version, list(struct.unpack("<4I", raw))

    def hash(self, entries: dict[bytes, list[int]], fold: bool) -> int:
        n = len(entries)
        nb = 1
        while nb < n:
            nb <<= 1
        buckets: list[list[tuple[bytes, list[int]]]] = [[] for _ in range(nb)]
        for k, v in entries.items():
            key = k.lower() if fold else k
            buckets[fnv1a(key, fold) & (nb - 1)].append((key, v))
        vals = [[self.lst(v) for _, v in b] for b in buckets]
        boff = len(self.words)
        first = 0
        for b in buckets:
            self.words.extend((first, len(b)))
            first += len(b)
        eoff = len(self.words)
        for b, bv in zip(buckets, vals, strict=True):
            for (key, _), lv in zip(b, bv, strict=True):
                so, sl = self.string(key)
                self.words.extend((so, sl, lv))
        return self.record("hash", nb, 1 if fold else 0, boff, eoff, n)

    def dfa(self, d: automata.Dfa) -> int:
        cm = len(self.words)
        self.words.extend(struct.unpack("<64I", d.classmap))
        outs = [(self.lst(v), self.lst(e)) for v, e in zip(d.visit, d.end, strict=True)]
        rows = len(self.words)
        w = self.words
        for (vo, eo), row in zip(outs, d.trans, strict=True):
            w.append(vo)
            w.append(eo)
            w.extend(row)
        return self.record("dfa", d.nstates, d.nclasses, d.start, cm, rows, 0)

    def blob(self, max_conns: int = 0) -> bytes:
        strs = bytes(self.strs) + b"\0" * (-len(self.strs) % 4)
        out = array("I")
        off = HDR_WORDS + DIR_WORDS
        directory: list[int] = []
        body = array("I")
        for s in SECTIONS:
            if s == "str":
                directory += [off, len(self.strs)]
                body.frombytes(strs)
                off += len(strs) // 4
                continue
            data = self.sec[s]
            n = REC_WORDS[s]
            directory += [off, len(data) // n]
            body.extend(data)
            off += len(data)
        total = off * 4
        out.extend([MAGIC, VERSION, total, 0, len(SECTIONS), max_conns, 0, 0])
        out.extend(directory)
        out.extend(body)
        return out.tobytes() if array("I", [1]).tobytes()[0] == 1 else _swap(out)


def _swap(a: array[int]) -> bytes:  # pragma: no cover - big-endian hosts
    b = array("I", a)
    b.byteswap()
    return b.tobytes()


def check_bounds(cfg: ir.Config) -> None:
    """Raise :class:`TableError` for what the kernel's validator would refuse
    in ``cfg``'s counts and options (the compiler reports these first, with
    their positions; this keeps a hand-built IR from reaching the kernel)."""
    nservers = sum(len(p.servers) for p in cfg.pools)
    for what, n, limit in (
        ("services", len(cfg.services), MAX_SERVICES),
        ("pools", len(cfg.pools), MAX_POOLS),
        ("servers", nservers, MAX_SERVERS),
    ):
        if n > limit:
            raise TableError("", None, f"too many {what}: {n} (at most {limit})")
    for k, v in cfg.limits.items():
        if k not in NS_LIMIT_MAX or not 0 <= v <= NS_LIMIT_MAX[k]:
            raise TableError("", None, f"namespace limit {k} {v} out of range")
    for p in cfg.pools:
        _check_pool(p)
    for svc in cfg.services:
        if svc.xff not in SVC_XFF:
            raise TableError(svc.name, None, f"bad x-forwarded-for mode {svc.xff!r}")
        if svc.raw:
            _check_raw(svc)
        for k, v in svc.limits.items():
            if k not in LIMIT_MAX or not 0 <= v <= LIMIT_MAX[k]:
                raise TableError(svc.name, None, f"limit {k} {v} out of range")
        for k, v in svc.timeouts_ms.items():
            if k not in ir.TIMEOUTS or not 0 <= v <= MAX_TIMEOUT_MS:
                raise TableError(svc.name, None, f"timeout {k} {v}ms out of range")
        lo, hi = LOG_SAMPLE_RANGE
        if svc.log not in LOG_MODE or (
            not lo <= svc.log_sample <= hi if svc.log == "sample" else svc.log_sample != 0
        ):
            raise TableError(svc.name, None, f"bad log mode {svc.log} {svc.log_sample}")
        for r in svc.rules:
            a = r.action
            if a.kind == "answer" and (
                not 100 <= a.status <= 599 or a.status == 101 or len(a.body) > ANSWER_BODY_MAX
            ):
                raise TableError(svc.name, None, f"bad answer {a.status}, {len(a.body)} bytes")


def _check_pool(p: ir.Pool) -> None:
    """What the validator checks in a pool's check and persistence words."""
    c = p.check
    if c is not None:
        ok = (
            c.kind in ("tcp", "http")
            and CHECK_INTERVAL_RANGE[0] <= c.interval_ms <= CHECK_INTERVAL_RANGE[1]
            and CHECK_TIMEOUT_RANGE[0] <= c.timeout_ms <= min(CHECK_TIMEOUT_RANGE[1], c.interval_ms)
            and 1 <= c.rise <= CHECK_COUNT_MAX
            and 1 <= c.fall <= CHECK_COUNT_MAX
        )
        if c.kind == "http":
            lo, hi = c.expect
            ok = ok and 0 < len(c.request.encode()) <= CHECK_REQUEST_MAX
            ok = ok and len(c.host.encode()) <= CHECK_HOST_MAX and 100 <= lo <= hi <= 599
        elif c.kind == "tcp":
            ok = ok and not c.request and not c.host
        if not ok:
            raise TableError("", None, f"pool {p.name}: bad check: {c}")
    q = p.persist
    if q is not None:
        lo, hi = PERSIST_TIMEOUT_RANGE
        if not (
            (q.kind == "cookie" and 0 < len(q.cookie.encode()) <= COOKIE_NAME_MAX)
            or (q.kind == "source" and lo <= q.timeout_ms <= hi)
        ):
            raise TableError("", None, f"pool {p.name}: bad persistence: {q}")


def _check_raw(svc: ir.Service) -> None:
    """A raw service: one unconditional route, nothing about HTTP."""
    r = svc.rules
    if len(r) != 1 or r[0].action.kind != "route" or r[0].cond != ir.TRUE:
        raise TableError(svc.name, None, "a raw service has exactly one rule, 'route POOL;'")
    if svc.xff != "off":
        raise TableError(svc.name, None, "a raw service adds no X-Forwarded-For")
    for k in ir.RAW_REFUSED_LIMITS:
        if svc.limits.get(k):
            raise TableError(svc.name, None, f"limit {k} in a raw service")
    for k in ir.RAW_REFUSED_TIMEOUTS:
        if svc.timeouts_ms.get(k):
            raise TableError(svc.name, None, f"timeout {k} in a raw service")


def service_flags(svc: ir.Service) -> int:
    """Word 8 of the service record."""
    return (
        SVC_XFF[svc.xff]
        | (SVC_RAW if svc.raw else 0)
        | (SVC_TLS if svc.tls else 0)
        | (SVC_XFP if svc.xfp else 0)
    )


def encode(cfg: ir.Config) -> bytes:
    """The binary tables for ``cfg``.  Raises :class:`TableError`."""
    check_bounds(cfg)
    return _encode(cfg)


def _encode(cfg: ir.Config) -> bytes:
    """:func:`encode` without :func:`check_bounds`: a blob the kernel may
    refuse (for tests of the validator)."""
    w = _Writer()
    pool_idx = {}
    for p in cfg.pools:
        first = len(w.sec["server"]) // REC_WORDS["server"]
        for s in p.servers:
            fam, a = w.addr(s.addr)
            sid = persist_id(p.name, s)
            w.record(
                "server", fam, *a, s.port, s.weight, STATE[s.state], sid & 0xFFFFFFFF, sid >> 32
            )
        no, nl = w.string(p.name.encode())
        pool_idx[p.name] = w.record(
            "pool",
            no,
            nl,
            SCHED[p.scheduler],
            first,
            len(p.servers),
            0,
            *_check_words(w, p.check),
            *_persist_words(w, p.persist),
            *([0] * POOL_RESERVED),
        )
    for svc in cfg.services:
        _service(w, svc, pool_idx)
    blob = w.blob(cfg.limits.get("connections", 0))
    if len(blob) > MAX_BLOB:
        big = max(cfg.services, key=lambda s: len(s.preds), default=None)
        raise TableError(
            big.name if big else "",
            None,
            f"compiled tables too large: {len(blob)} bytes (limit {MAX_BLOB})",
            "fewer or simpler rules; long literal prefixes and regexes cost the most",
        )
    return blob


def _check_words(w: _Writer, c: ir.Check | None) -> list[int]:
    """Pool words 6..16: kind, interval, timeout, rise, fall, request
    off/len, host off/len, expect low/high."""
    if c is None:
        return [0] * 11
    ro, rl = w.string(c.request.encode()) if c.request else (0, 0)
    ho, hl = w.string(c.host.encode()) if c.host else (0, 0)
    lo, hi = c.expect if c.kind == "http" else (0, 0)
    return [CHECK_KIND[c.kind], c.interval_ms, c.timeout_ms, c.rise, c.fall,
            ro, rl, ho, hl, lo, hi]  # fmt: skip


def _persist_words(w: _Writer, p: ir.Persist | None) -> list[int]:
    """Pool words 17..20: kind, cookie name off/len, source timeout."""
    if p is None:
        return [0] * 4
    if p.kind == "cookie":
        co, cl = w.string(p.cookie.encode())
        return [PERSIST_KIND["cookie"], co, cl, 0]
    return [PERSIST_KIND["source"], 0, 0, p.timeout_ms]


def _service(w: _Writer, svc: ir.Service, pool_idx: dict[str, int]) -> None:
    rule_first = len(w.sec["rule"]) // REC_WORDS["rule"]
    pred_first = len(w.sec["pred"])
    field_first = len(w.sec["field"]) // REC_WORDS["field"]

    # rules and their code
    triggers: list[list[int]] = [[] for _ in svc.preds]
    always: list[int] = []
    for r in svc.rules:
        code: list[int] = []
        emit_code(r.cond, code)
        if _depth(r.cond) > MAX_STACK:
            raise TableError(svc.name, None, "condition nested too deeply")
        coff = len(w.words)
        w.words.extend(code)
        t = trigger(r.cond, svc.preds)
        if t is None:
            always.append(r.index)
        else:
            for pid in t:
                triggers[pid].append(r.index)
        a = r.action
        # the location words: a redirect's location, an answer's body
        if a.kind == "answer":
            lo, ll = w.string(a.body) if a.body else (0, 0)
        else:
            lo, ll = w.string(a.location.encode()) if a.location else (0, 0)
        pool = pool_idx[a.pool] if a.kind == "route" else NONE
        w.record("rule", ACTION[a.kind], pool, a.status, lo, ll, coff, len(code), r.loc.line)
    for trig in triggers:
        w.sec["pred"].append(w.lst(trig, intern=False))
    always_off = w.lst(always, intern=False)

    # fields and automata
    special = {F_METHOD: NONE, F_HOST: NONE, F_PATH: NONE, F_SRC4: NONE, F_SRC6: NONE}
    named: dict[int, dict[bytes, list[int]]] = {F_HEADER: {}, F_COOKIE: {}, F_QUERY: {}}
    for i, f in enumerate(_fields(svc)):
        fold = f.kind == F_HOST
        assert f.exact is not None and f.regexes is not None
        assert f.prefixes is not None and f.suffixes is not None and f.contains is not None
        h = w.hash(f.exact, fold) if f.exact else NONE
        lit = NONE
        if f.prefixes or f.suffixes or f.contains:
            d = automata.build_literal_dfa(f.prefixes, f.suffixes, f.contains, fold)
            if d.nstates > MAX_DFA_STATES:
                pid = (f.prefixes + f.suffixes + f.contains)[0][0]
                raise TableError(
                    svc.name,
                    pid,
                    f"literal automaton for this field has {d.nstates} states "
                    f"(limit {MAX_DFA_STATES})",
                    "too many long prefix/suffix/contains literals on one field",
                )
            lit = w.dfa(d)
        rd = NONE
        if f.regexes:
            rd = w.dfa(_regex_dfa(svc, f.regexes, fold))
        no, nl = w.string(f.name)
        w.record("field", f.kind, f.exists, h, lit, rd, no, nl, 0)
        if f.kind in named:
            named[f.kind][f.name] = [i]
        else:
            special[f.kind] = i
    hn = w.hash(named[F_HEADER], True) if named[F_HEADER] else NONE
    cn = w.hash(named[F_COOKIE], False) if named[F_COOKIE] else NONE
    qn = w.hash(named[F_QUERY], False) if named[F_QUERY] else NONE
    nfields = len(w.sec["field"]) // REC_WORDS["field"] - field_first

    fam, addr = w.addr(svc.addr)
    no, nl = w.string(svc.name.encode())
    limits = [svc.limits.get(k, 0) for k in ir.LIMITS]
    timeouts = [svc.timeouts_ms.get(k, 0) for k in ir.TIMEOUTS]
    w.record(
        "service",
        no,
        nl,
        fam,
        *addr,
        svc.port,
        service_flags(svc),
        *limits[:SVC_LIMITS_LOW],
        *timeouts,
        rule_first,
        len(svc.rules),
        pred_first,
        len(svc.preds),
        field_first,
        nfields,
        always_off,
        special[F_METHOD],
        special[F_HOST],
        special[F_PATH],
        special[F_SRC4],
        special[F_SRC6],
        hn,
        cn,
        qn,
        *limits[SVC_LIMITS_LOW:],
        LOG_MODE[svc.log],
        svc.log_sample if svc.log == "sample" else 0,
        *([0] * SVC_RESERVED),
    )


def _regex_dfa(svc: ir.Service, pats: list[tuple[int, rx.Regex]], fold: bool) -> automata.Dfa:
    try:
        return automata.build_regex_dfa(pats, fold, MAX_DFA_STATES)
    except automata.AutomatonTooLarge as e:
        # find the culprit: the first pattern that is too large alone, else
        # the pattern whose addition crossed the bound
        culprit = pats[-1][0]
        for pid, r in pats:
            try:
                automata.build_regex_dfa([(pid, r)], fold, MAX_DFA_STATES)
            except automata.AutomatonTooLarge:
                culprit = pid
                break
        raise TableError(
            svc.name,
            culprit,
            f"regex automaton too large (more than {e.limit} states)",
            "simplify the regex: avoid unanchored .* in the middle and large bounded repeats",
        ) from None


# ---- reading a blob back --------------------------------------------------------

# pool record words of each major version this reader knows (rules: 8 in both)
_POOL_WORDS = {2: 6, 3: 24}


def route_pools(blob: bytes) -> set[str] | None:
    """The names of the pools some `route` rule of ``blob`` sends requests to,
    or None when ``blob`` is not a rules table this l7ctl can read.  Reads
    only the header, the directory, the pool and rule sections (and the pool
    names); every offset is checked."""
    try:
        if len(blob) < (HDR_WORDS + DIR_WORDS) * 4 or len(blob) % 4:
            return None
        n = len(blob) // 4
        w = struct.unpack(f"<{n}I", blob)
        major = w[1] >> 16
        if w[0] != MAGIC or major not in _POOL_WORDS or w[4] != len(SECTIONS):
            return None
        sect = {s: (w[HDR_WORDS + 2 * i], w[HDR_WORDS + 2 * i + 1]) for i, s in enumerate(SECTIONS)}
        str_off, str_len = sect["str"]
        pool_off, npools = sect["pool"]
        rule_off, nrules = sect["rule"]
        pw, rw = _POOL_WORDS[major], REC_WORDS["rule"]
        if (
            str_off * 4 + str_len > len(blob)
            or pool_off + npools * pw > n
            or rule_off + nrules * rw > n
        ):
            return None
        strs = blob[str_off * 4 : str_off * 4 + str_len]
        used = {w[rule_off + i * rw + 1] for i in range(nrules) if w[rule_off + i * rw] == A_ROUTE}
        out = set()
        for p in used:
            if p >= npools:
                return None
            no, nl = w[pool_off + p * pw], w[pool_off + p * pw + 1]
            if no + nl > str_len:
                return None
            out.add(strs[no : no + nl].decode("utf-8", "replace"))
        return out
    except struct.error:
        return None
