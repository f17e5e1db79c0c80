"""The reference evaluator: what a compiled rule set *means*.

Written for clarity, not speed: every predicate is evaluated directly on the
request with Python's bytes methods and ``re``; rules are tried in order and
the first whose condition holds wins.  The C matcher must agree with this on
every rule set and request (tests/host/test_rules_differential.py).

Request view (what both sides see; the kernel fills the same from its parser):

* ``method`` - as sent (case-sensitive).
* ``host`` - from the absolute-form URI or the Host header, port removed;
  compared ASCII-lower-cased.
* ``path`` - the *normalized* path (see :func:`normalize_path`), without the
  query.
* ``query`` - the raw query string (after ``?``, not decoded).
* ``headers`` - name/value pairs as parsed (values without surrounding OWS).
* ``client`` - the client's address; IPv4-mapped IPv6 counts as IPv4.

Field semantics:

* header NAME: name compared case-insensitively; with several such headers
  a predicate holds if it holds for any of them.
* cookie NAME: every ``Cookie`` header is split at ``;``, each piece trimmed
  of spaces/tabs, pieces without ``=`` ignored, split at the first ``=``;
  name compared exactly; any matching cookie counts.
* query NAME: the raw query split at ``&``, each piece split at the first
  ``=`` (no ``=``: empty value); name compared exactly, raw (no %-decoding).
* type T: the path ends, case-insensitively, with ``.EXT`` for an extension
  of T in :mod:`l7ctl.mime`.
* glob: ``*`` = any run of bytes other than ``/``, ``**`` = any run,
  ``?`` = one byte other than ``/``; must match the whole value.  In host
  patterns ``*`` and ``?`` may also match ``/`` (hosts never contain one), so
  ``*.example.com`` means "ends with .example.com".
* regex: search semantics (see :mod:`l7ctl.regex`).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass, field

from l7ctl import ir
from l7ctl import regex as rx

UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = b"0123456789abcdefABCDEF"


def _pct_normalize(raw: bytes) -> bytes:
    out = bytearray()
    i = 0
    n = len(raw)
    while i < n:
        c = raw[i]
        if c == 0x25 and i + 2 < n and raw[i + 1] in _HEX and raw[i + 2] in _HEX:
            v = int(raw[i + 1 : i + 3], 16)
            if v in UNRESERVED:
                out.append(v)
            else:
                out += b"%" + raw[i + 1 : i + 3].upper()
            i += 3
            continue
        out.append(c)
        i += 1
    return bytes(out)


def remove_dot_segments(path: bytes) -> bytes:
    """RFC 3986 section 5.2.4."""
    inp = path
    out: list[bytes] = []
    while inp:
        if inp.startswith(b"../"):
            inp = inp[3:]
        elif inp.startswith(b"./") or inp.startswith(b"/./"):
            inp = inp[2:]
        elif inp == b"/.":
            inp = b"/"
        elif inp.startswith(b"/../"):
            inp = inp[3:]
            if out:
                out.pop()
        elif inp == b"/..":
            inp = b"/"
            if out:
                out.pop()
        elif inp in (b".", b".."):
            inp = b""
        else:
            j = inp.find(b"/", 1)
            if j < 0:
                j = len(inp)
            out.append(inp[:j])
            inp = inp[j:]
    return b"".join(out)


def normalize_path(raw: bytes, merge_slashes: bool = True) -> bytes:
    """RFC 3986 section 6, exactly as the C parser does it (kmod/core/http.c):
    decode %-escapes of unreserved characters (others, ``%2F`` included, stay
    encoded with upper-case hex), remove dot segments after decoding, and
    merge runs of ``/`` (except a trailing one) when ``merge_slashes``.
    ``..`` above the root stays at the root (the parser refuses such a
    request with 400 before routing).  Applied to the path only."""
    p = _pct_normalize(raw)
    if not p.startswith(b"/"):
        return remove_dot_segments(p)
    segs = p.split(b"/")[1:]
    out = bytearray()
    for k, seg in enumerate(segs):
        last = k == len(segs) - 1
        start = len(out)
        if seg == b".":
            if last:
                out += b"/"
        elif seg == b"..":
            del out[max(out.rfind(b"/", 0, start), 0) :]
            if last:
                out += b"/"
        elif seg == b"" and merge_slashes and not last:
            pass
        else:
            out += b"/" + seg
    return bytes(out) or b"/"


def _canon_client(a: ir.IPAddress | None) -> ir.IPAddress | None:
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        return a.ipv4_mapped
    return a


@dataclass(frozen=True)
class Request:
    method: bytes = b"GET"
    host: bytes = b""
    path: bytes = b"/"
    query: bytes = b""
    headers: tuple[tuple[bytes, bytes], ...] = ()
    client: ir.IPAddress | None = None

    @classmethod
    def from_url(
        cls,
        method: str,
        url: str,
        headers: list[tuple[str, str]] | None = None,
        client: str | None = None,
    ) -> Request:
        """Build the request view for ``METHOD URL`` the way the switch does:
        host from an absolute URL, else from the Host header; normalized path."""
        hdrs = [(n.encode(), v.strip(" \t").encode()) for n, v in headers or []]
        raw = url.encode()
        host = b""
        m = re.match(rb"(?i)^https?://([^/?#]*)", raw)
        if m:
            host = m.group(1).rsplit(b"@", 1)[-1]
            raw = raw[m.end() :] or b"/"
            if not any(n.lower() == b"host" for n, _ in hdrs):
                hdrs.insert(0, (b"Host", m.group(1)))
        else:
            for n, v in hdrs:
                if n.lower() == b"host":
                    host = v
                    break
        raw = raw.split(b"#", 1)[0]
        path, _, query = raw.partition(b"?")
        addr = ipaddress.ip_address(client) if client else None
        return cls(
            method.encode(),
            strip_port(host).lower(),
            normalize_path(path),
            query,
            tuple(hdrs),
            addr,
        )


def strip_port(host: bytes) -> bytes:
    if host.startswith(b"["):
        end = host.find(b"]")
        return host[: end + 1] if end >= 0 else host
    return host.split(b":", 1)[0]


def cookies(req: Request) -> list[tuple[bytes, bytes]]:
    out = []
    for n, v in req.headers:
        if n.lower() != b"cookie":
            continue
        for piece in v.split(b";"):
            piece = piece.strip(b" \t")
            if b"=" not in piece:
                continue
            name, _, val = piece.partition(b"=")
            out.append((name, val))
    return out


def query_params(req: Request) -> list[tuple[bytes, bytes]]:
    out = []
    for piece in req.query.split(b"&"):
        if not piece:
            continue
        name, _, val = piece.partition(b"=")
        out.append((name, val))
    return out


@functools.lru_cache(maxsize=4096)
def _glob_re(glob: bytes, host: bool = False) -> re.Pattern[bytes]:
    if host:
        glob = glob.replace(b"**", b"*")
        return re.compile(
            b"".join(
                b".*" if c == b"*" else b"." if c == b"?" else re.escape(c)
                for c in (glob[i : i + 1] for i in range(len(glob)))
            ),
            re.DOTALL,
        )
    out = []
    i = 0
    while i < len(glob):
        c = glob[i : i + 1]
        if c == b"*":
            if glob[i + 1 : i + 2] == b"*":
                out.append(b".*")
                i += 2
                continue
            out.append(b"[^/]*")
        elif c == b"?":
            out.append(b"[^/]")
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile(b"".join(out), re.DOTALL)


@functools.lru_cache(maxsize=4096)
def _regex(pattern: bytes) -> re.Pattern[bytes]:
    return rx.to_python(rx.parse(pattern.decode("utf-8")))


def string_test(op: str, value: bytes, s: bytes, host: bool = False) -> bool:
    if op == "exact":
        return s == value
    if op == "prefix":
        return s.startswith(value)
    if op == "suffix":
        return s.endswith(value)
    if op == "contains":
        return value in s
    if op == "glob":
        return _glob_re(value, host).fullmatch(s) is not None
    if op == "regex":
        return _regex(value).search(s) is not None
    raise ValueError(op)


def pred_true(p: ir.Predicate, req: Request) -> bool:
    f = p.field
    if f == "method":
        return req.method == p.value
    if f == "host":
        return string_test(p.op, p.value, req.host.lower(), host=True)
    if f == "path":
        if p.op == "type":
            low = req.path.lower()
            return any(low.endswith(e) for e in p.exts)
        return string_test(p.op, p.value, req.path)
    if f == "source":
        c = _canon_client(req.client)
        if c is None:
            return False
        net = ipaddress.ip_network(p.value.decode())
        return c.version == net.version and c in net
    if f == "header":
        vals = [v for n, v in req.headers if n.lower() == p.name]
    elif f == "cookie":
        vals = [v for n, v in cookies(req) if n == p.name]
    elif f == "query":
        vals = [v for n, v in query_params(req) if n == p.name]
    else:
        raise ValueError(f)
    if p.op == "exists":
        return bool(vals)
    return any(string_test(p.op, p.value, v) for v in vals)


def cond_true(c: ir.Cond, truth: list[bool]) -> bool:
    if isinstance(c, ir.TrueCond):
        return True
    if isinstance(c, ir.PredRef):
        return truth[c.id]
    if isinstance(c, ir.Not):
        return not cond_true(c.item, truth)
    if isinstance(c, ir.And):
        return all(cond_true(i, truth) for i in c.items)
    return any(cond_true(i, truth) for i in c.items)


@dataclass(frozen=True)
class Decision:
    """The first matching rule (None: no rule matched -> 404) and, for
    explanations, which predicates held."""

    rule: ir.Rule | None
    truth: tuple[bool, ...] = field(default=())

    @property
    def action(self) -> ir.Action | None:
        return self.rule.action if self.rule else None

    @property
    def index(self) -> int:
        return self.rule.index if self.rule else -1


def evaluate(svc: ir.Service, req: Request) -> Decision:
    truth = [pred_true(p, req) for p in svc.preds]
    for r in svc.rules:
        if cond_true(r.cond, truth):
            return Decision(r, tuple(truth))
    return Decision(None, tuple(truth))
