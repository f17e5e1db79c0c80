"""The rules compiler: files -> AST -> semantic checks -> IR -> binary tables.

Library API::

    res = compile_file("site.rules")
    res.ok, res.errors, res.warnings      # Diagnostics with file:line:column
    res.ir                                # l7ctl.ir.Config (None on errors)
    res.tables                            # bytes for the kernel (None on errors)

Every diagnostic names the position, quotes the offending text and, where
there is something to suggest, carries a hint.  No global state: everything
lives in one :class:`_Compiler` per call.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from l7ctl import ir, mime, tables, tlscert
from l7ctl import regex as rx
from l7ctl import rules_ast as A
from l7ctl.evaluator import normalize_path

MAX_COND_DEPTH = 64
TOKEN_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
STATUS_BLOCK = range(400, 600)
STATUS_REDIRECT = (301, 302, 303, 307, 308)
STATUS_ANSWER = range(200, 600)  # a final status: the switch's answer ends the exchange
ANSWER_NO_BODY = (204, 304)  # statuses HTTP gives no body
ANSWER_ESCAPES = {"n": b"\n", "r": b"\r", "t": b"\t", "\\": b"\\", '"': b'"'}
CHECK_OPTIONS = ("interval", "timeout", "rise", "fall", "host", "expect")
CHECK_HTTP_ONLY = ("host", "expect")
MAX_SERVER_ID = 255
# service limits whose default is "no limit" rather than a module default
UNLIMITED_BY_DEFAULT = ("connections", "source-connections", "source-rate")


@dataclass(frozen=True)
class Diagnostic:
    severity: str  # "error" | "warning"
    pos: A.Pos
    message: str
    text: str = ""  # the offending text, quoted in the output
    hint: str = ""

    def format(self, sources: dict[str, str] | None = None) -> str:
        head = f"{self.pos}: {self.severity}: {self.message}"
        if self.text:
            head += f": '{self.text}'"
        lines = [head]
        src = (sources or {}).get(self.pos.file)
        if src is not None:
            srclines = src.split("\n")
            if 1 <= self.pos.line <= len(srclines):
                line = srclines[self.pos.line - 1].replace("\t", " ")
                lines.append("    " + line)
                width = max(1, (self.pos.end_col or self.pos.col + 1) - self.pos.col)
                width = min(width, max(1, len(line) - self.pos.col + 1))
                lines.append("    " + " " * (self.pos.col - 1) + "^" * width)
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "file": self.pos.file,
            "line": self.pos.line,
            "column": self.pos.col,
            "message": self.message,
            "text": self.text,
            "hint": self.hint,
        }


@dataclass
class Result:
    errors: list[Diagnostic] = field(default_factory=list)
    warnings: list[Diagnostic] = field(default_factory=list)
    ir: ir.Config | None = None
    tables: bytes | None = None
    sources: dict[str, str] = field(default_factory=dict)
    # (service name, predicate id) -> where it was first written
    pred_pos: dict[tuple[str, int], A.Pos] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def diagnostics(self) -> list[Diagnostic]:
        return sorted(
            self.errors + self.warnings, key=lambda d: (d.pos.file, d.pos.line, d.pos.col)
        )

    def format(self) -> str:
        return "\n".join(d.format(self.sources) for d in self.diagnostics())


def compile_file(
    path: str | os.PathLike[str], *, encode: bool = True, tls_files: bool = True
) -> Result:
    """Compile a rules file and its includes.  ``tls_files``: read and check
    the TLS services' certificate and key files (`l7ctl check`, `apply`,
    `tlsd`); without, their names are not known (`l7ctl route`, `test`)."""
    c = _Compiler(tls_files)
    c.load(Path(path), None, [])
    return c.finish(encode)


def compile_text(
    text: str, path: str = "<string>", *, encode: bool = True, tls_files: bool = True
) -> Result:
    c = _Compiler(tls_files)
    c.load_text(text, path, Path(path).parent if path != "<string>" else Path("."), [])
    return c.finish(encode)


def _suggest(word: str, choices: list[str], what: str) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    known = ", ".join(choices[:12]) + (" ..." if len(choices) > 12 else "")
    if close:
        return f"did you mean {close[0]!r}? {what}: {known}"
    return f"{what}: {known}" if choices else f"no {what} are defined"


def parse_endpoint(text: str) -> tuple[ir.IPAddress, int] | str:
    """``1.2.3.4:80``, ``[2001:db8::1]:80``, ``*:80``; or an error string."""
    m = re.fullmatch(r"\[([^\]]*)\]:(\d+)|([^:\[\]]*):(\d+)", text)
    if not m:
        return "expected ADDRESS:PORT (IPv6 as [ADDRESS]:PORT)"
    addr_s = m.group(1) if m.group(1) is not None else m.group(3)
    port_s = m.group(2) if m.group(2) is not None else m.group(4)
    if addr_s == "*":
        addr_s = "0.0.0.0"
    try:
        addr = ipaddress.ip_address(addr_s)
    except ValueError:
        return f"bad address {addr_s!r}"
    port = int(port_s)
    if not 1 <= port <= 65535:
        return f"bad port {port} (1..65535)"
    return addr, port


def parse_duration_ms(text: str, default_unit: str = "s") -> int | None:
    m = re.fullmatch(r"(\d+)(ms|s|m|h)?", text)
    if not m:
        return None
    n = int(m.group(1))
    mult = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}[m.group(2) or default_unit]
    return n * mult


class _Compiler:
    def __init__(self, tls_files: bool = True) -> None:
        self.tls_files = tls_files
        self.res = Result()
        self.items: list[A.Item] = []
        self.files: list[str] = []

    # ---- diagnostics ------------------------------------------------------
    def error(self, pos: A.Pos, msg: str, text: str = "", hint: str = "") -> None:
        self.res.errors.append(Diagnostic("error", pos, msg, text, hint))

    def warn(self, pos: A.Pos, msg: str, text: str = "", hint: str = "") -> None:
        self.res.warnings.append(Diagnostic("warning", pos, msg, text, hint))

    # ---- loading and includes --------------------------------------------------
    def load(self, path: Path, at: A.Include | None, chain: list[Path]) -> None:
        try:
            real = path.resolve()
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            if at is None:
                pos = A.Pos(str(path), 1, 1)
                self.error(pos, f"cannot read {str(path)!r}: {reason}")
            else:
                self.error(
                    at.path.pos,
                    f"cannot include {at.path.text!r}: {reason}",
                    "",
                    f"include paths are relative to the including file ({path})",
                )
            return
        if real in chain:
            names = " -> ".join(str(p.name) for p in [*chain, real])
            assert at is not None
            self.error(at.path.pos, "include cycle", at.path.text, names)
            return
        self.load_text(text, str(path), path.parent, [*chain, real])

    def load_text(self, text: str, name: str, base: Path, chain: list[Path]) -> None:
        self.res.sources[name] = text
        self.files.append(name)
        try:
            f = A.parse_text(text, name)
        except A.SyntaxProblem as e:
            self.error(e.pos, "syntax error: " + e.msg, "", e.hint)
            return
        for item in f.items:
            if isinstance(item, A.Include):
                inc = Path(item.path.text)
                target = inc if inc.is_absolute() else base / inc
                self.load(target, item, chain or [Path(name).resolve()])
            else:
                self.items.append(item)

    # ---- checks --------------------------------------------------------------------
    def finish(self, encode: bool) -> Result:
        if self.res.errors:
            return self.res
        lists = self.check_lists()
        ns_limits = self.check_ns_limits()
        pools = self.check_pools()
        services = self.check_services(pools, lists)
        virtuals = self.check_virtuals()
        self.check_counts(pools, services)
        for name, decl in lists.items():
            if name not in self.used_lists:
                self.warn(decl.name.pos, "list is never used", name)
        used_pools = {r.action.pool for s in services for r in s.rules if r.action.kind == "route"}
        for p in pools.values():
            if p.name not in used_pools:
                self.warn(
                    self.pool_pos[p.name],
                    "pool is never used",
                    p.name,
                    "no rule routes to it; remove it or add a rule",
                )
        if self.res.errors:
            return self.res
        cfg = ir.Config(
            tuple(pools.values()), tuple(services), tuple(virtuals), tuple(self.files), ns_limits
        )
        self.res.ir = cfg
        if encode:
            try:
                self.res.tables = tables.encode(cfg)
            except tables.TableError as e:
                pos = self.res.pred_pos.get((e.service, e.pred)) if e.pred is not None else None
                if pos is None:
                    pos = self.service_pos.get(e.service, A.Pos(self.files[0], 1, 1))
                self.error(pos, str(e), "", e.hint)
                self.res.ir = None
        return self.res

    def check_counts(self, pools: dict[str, ir.Pool], services: list[ir.Service]) -> None:
        """The kernel bounds what one configuration may make it allocate."""
        if len(services) > tables.MAX_SERVICES:
            name = services[tables.MAX_SERVICES].name
            self.error(
                self.service_pos[name],
                "too many services",
                name,
                f"at most {tables.MAX_SERVICES} services in one configuration",
            )
        if len(pools) > tables.MAX_POOLS:
            name = list(pools)[tables.MAX_POOLS]
            self.error(
                self.pool_pos[name],
                "too many pools",
                name,
                f"at most {tables.MAX_POOLS} pools in one configuration",
            )
        n = 0
        for p in pools.values():
            if n + len(p.servers) > tables.MAX_SERVERS:
                s = p.servers[tables.MAX_SERVERS - n]
                pos = A.Pos(s.loc.file, s.loc.line, s.loc.col) if s.loc else self.pool_pos[p.name]
                self.error(
                    pos,
                    "too many servers",
                    s.endpoint(),
                    f"at most {tables.MAX_SERVERS} servers in all pools together",
                )
                break
            n += len(p.servers)

    def check_limit(self, o: A.Option, bounds: dict[str, int], service: bool) -> int | None:
        """The value of one `limit NAME N;` (None after an error)."""
        name = o.name.text
        if name not in bounds:
            if not service and name in ir.LIMITS:
                self.error(
                    o.name.pos,
                    f"'limit {name}' is a service option",
                    name,
                    "put it inside a service block; at file level only 'limit connections N;' "
                    "(the namespace-wide limit) is allowed",
                )
            else:
                what = "limits" if service else "file-level limits"
                self.error(o.name.pos, "unknown limit", name, _suggest(name, list(bounds), what))
            return None
        n = int(o.value.text)
        top = bounds[name]
        if not 1 <= n <= top:
            if not service:
                default = "the default, derived from memory"
            elif name in UNLIMITED_BY_DEFAULT:
                default = "no limit"
            else:
                default = "the module's default"
            self.error(
                o.value.pos,
                "limit out of range",
                o.value.text,
                f"'limit {name}' takes 1..{top}; leave it out for {default}",
            )
            return None
        return n

    def check_ns_limits(self) -> dict[str, int]:
        """File-level `limit` statements: namespace-wide limits."""
        out: dict[str, int] = {}
        first: dict[str, A.Pos] = {}
        for it in self.items:
            if not isinstance(it, A.Option):
                continue
            n = self.check_limit(it, tables.NS_LIMIT_MAX, False)
            if n is None:
                continue
            name = it.name.text
            if name in first:
                self.error(
                    it.pos,
                    f"duplicate 'limit {name}'",
                    it.value.text,
                    f"first set at {first[name]}",
                )
                continue
            first[name] = it.pos
            out[name] = n
        return out

    def check_lists(self) -> dict[str, A.ListDecl]:
        self.used_lists: set[str] = set()
        out: dict[str, A.ListDecl] = {}
        for it in self.items:
            if isinstance(it, A.ListDecl):
                if it.name.text in out:
                    first = out[it.name.text].name.pos
                    self.error(
                        it.name.pos,
                        "duplicate list name",
                        it.name.text,
                        f"first defined at {first}",
                    )
                    continue
                out[it.name.text] = it
        return out

    def check_server(self, s: A.Server, virtual: bool) -> ir.Server | None:
        ep = parse_endpoint(s.endpoint.text)
        if isinstance(ep, str):
            self.error(s.endpoint.pos, "bad server address", s.endpoint.text, ep)
            return None
        weight = 1
        if s.weight is not None:
            weight = int(s.weight.text)
            if weight > 65535:
                self.error(
                    s.weight.pos, "weight out of range", s.weight.text, "weights are 0..65535"
                )
                return None
        state = "up"
        if s.state is not None:
            if virtual:
                self.error(
                    s.state.pos,
                    "state is not supported in virtual services",
                    s.state.text,
                    "use weight 0 to stop sending new connections to an IPVS server",
                )
                return None
            if s.state.text not in ir.STATES:
                self.error(
                    s.state.pos,
                    "unknown server state",
                    s.state.text,
                    _suggest(s.state.text, list(ir.STATES), "states"),
                )
                return None
            state = s.state.text
        sid = ""
        if s.id is not None:
            if virtual:
                self.error(
                    s.id.pos,
                    "id is not supported in virtual services",
                    s.id.text,
                    "a server id names a server for the switch's persistence; IPVS has its own",
                )
                return None
            sid = s.id.text
            if (
                not sid
                or len(sid.encode()) > MAX_SERVER_ID
                or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in sid)
            ):
                self.error(
                    s.id.pos,
                    "bad server id",
                    sid,
                    f"1..{MAX_SERVER_ID} bytes without control characters",
                )
                return None
        loc = _loc(s.pos)
        return ir.Server(ep[0], ep[1], weight, state, loc, sid)

    def check_servers(self, servers: list[A.Server], virtual: bool) -> tuple[ir.Server, ...]:
        out: list[ir.Server] = []
        seen: dict[tuple[ir.IPAddress, int], A.Pos] = {}
        idents: dict[str, A.Pos] = {}
        for s in servers:
            srv = self.check_server(s, virtual)
            if srv is None:
                continue
            key = (srv.addr, srv.port)
            if key in seen:
                self.error(
                    s.endpoint.pos,
                    "duplicate server",
                    s.endpoint.text,
                    f"already listed at {seen[key]}",
                )
                continue
            seen[key] = s.endpoint.pos
            # servers of a pool have distinct identities (what persistence
            # remembers): two equal ids would be one server to a cookie
            ident = srv.identity()
            where = s.id.pos if s.id is not None else s.endpoint.pos
            if not virtual and ident in idents:
                self.error(
                    where,
                    "duplicate server id",
                    ident,
                    f"already the identity of the server at {idents[ident]}; a server's id "
                    "(else its address:port) names it for persistence and must differ within "
                    "a pool",
                )
                continue
            idents[ident] = where
            out.append(srv)
        return tuple(out)

    def check_settings(
        self, settings: list[A.Setting], allowed: tuple[str, ...]
    ) -> dict[str, A.Val]:
        out: dict[str, A.Val] = {}
        for st in settings:
            if st.kind not in allowed:
                self.error(st.pos, f"'{st.kind}' is not allowed here", st.kind)
                continue
            if st.kind in out:
                self.error(
                    st.pos,
                    f"duplicate '{st.kind}'",
                    st.value.text,
                    f"first set at {out[st.kind].pos}",
                )
                continue
            out[st.kind] = st.value
        return out

    def check_scheduler(self, v: A.Val | None) -> str:
        if v is None:
            return "wlc"
        if v.text not in ir.SCHEDULERS:
            self.error(
                v.pos,
                "unknown scheduler",
                v.text,
                _suggest(v.text, list(ir.SCHEDULERS), "schedulers"),
            )
        return v.text

    def check_pools(self) -> dict[str, ir.Pool]:
        out: dict[str, ir.Pool] = {}
        self.pool_pos: dict[str, A.Pos] = {}
        for it in self.items:
            if not isinstance(it, A.PoolDecl):
                continue
            name = it.name.text
            if name in out or name in self.pool_pos:
                self.error(
                    it.name.pos,
                    "duplicate pool name",
                    name,
                    f"first defined at {self.pool_pos[name]}",
                )
                continue
            self.pool_pos[name] = it.name.pos
            st = self.check_settings(it.settings, ("scheduler",))
            sched = self.check_scheduler(st.get("scheduler"))
            servers = self.check_servers(it.servers, False)
            if not it.servers:
                self.warn(it.name.pos, "pool has no servers", name, "requests routed to it get 503")
            elif servers and all(s.state == "down" or s.weight == 0 for s in servers):
                self.warn(
                    it.name.pos,
                    "no server in this pool can take requests",
                    name,
                    "every server is down or has weight 0: requests get 503",
                )
            check = self.check_check(it)
            persist = self.check_persist(it)
            out[name] = ir.Pool(name, sched, servers, _loc(it.pos), check, persist)
        return out

    def check_check(self, it: A.PoolDecl) -> ir.Check | None:
        """A pool's `check tcp|http ...;` (at most one)."""
        for extra in it.checks[1:]:
            self.error(
                extra.pos,
                "duplicate 'check'",
                extra.kind.text,
                f"a pool has at most one check; the first is at {it.checks[0].pos}",
            )
        if not it.checks:
            return None
        c = it.checks[0]
        kind = c.kind.text
        if kind not in ir.CHECK_KINDS[1:]:
            self.error(
                c.kind.pos,
                "unknown check kind",
                kind,
                _suggest(kind, list(ir.CHECK_KINDS[1:]), "kinds") + ' (check http "GET /path";)',
            )
            return None
        ok = True
        request = ""
        if kind == "tcp" and c.request is not None:
            self.error(
                c.request.pos,
                "a TCP check sends no request",
                c.request.text,
                'it only connects; for an HTTP request write check http "GET /health";',
            )
            ok = False
        if kind == "http":
            if c.request is None:
                self.error(
                    c.kind.pos,
                    "an HTTP check needs its request",
                    kind,
                    'write the method and path: check http "GET /health";',
                )
                return None
            request = c.request.text
            m = re.fullmatch(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+) (/[\x21-\x7e]*)", request)
            if m is None or len(request) > tables.CHECK_REQUEST_MAX:
                self.error(
                    c.request.pos,
                    "bad check request",
                    request,
                    'a method, one space and a path starting with "/", visible ASCII only, '
                    f'at most {tables.CHECK_REQUEST_MAX} bytes: "GET /health"',
                )
                ok = False
        vals: dict[str, A.Val] = {}
        for name, value in c.options:
            o = name.text
            if o not in CHECK_OPTIONS:
                self.error(name.pos, "unknown check option", o,
                           _suggest(o, list(CHECK_OPTIONS), "options"))  # fmt: skip
                ok = False
            elif o in CHECK_HTTP_ONLY and kind != "http":
                self.error(name.pos, f"'{o}' is for HTTP checks", o,
                           "a TCP check only connects")  # fmt: skip
                ok = False
            elif o in vals:
                self.error(name.pos, f"duplicate check option '{o}'", value.text,
                           f"first set at {vals[o].pos}")  # fmt: skip
                ok = False
            else:
                vals[o] = value
        interval = self.check_duration(
            vals.get("interval"), ir.CHECK_INTERVAL_MS, tables.CHECK_INTERVAL_RANGE, "interval"
        )
        timeout = self.check_duration(
            vals.get("timeout"),
            min(ir.CHECK_TIMEOUT_MS, interval or ir.CHECK_TIMEOUT_MS),
            tables.CHECK_TIMEOUT_RANGE,
            "timeout",
        )
        rise = self.check_count(vals.get("rise"), ir.CHECK_RISE, "rise")
        fall = self.check_count(vals.get("fall"), ir.CHECK_FALL, "fall")
        if None in (interval, timeout, rise, fall):
            ok = False
        elif timeout is not None and interval is not None and timeout > interval:
            v = vals.get("timeout") or vals["interval"]
            self.error(
                v.pos,
                "check timeout longer than its interval",
                v.text,
                f"the timeout ({timeout} ms) must be at most the interval ({interval} ms)",
            )
            ok = False
        host = ""
        if "host" in vals:
            host = vals["host"].text
            if (
                not host
                or len(host) > tables.CHECK_HOST_MAX
                or not all(0x21 <= ord(ch) <= 0x7E for ch in host)
            ):
                self.error(
                    vals["host"].pos,
                    "bad check host",
                    host,
                    f"a host name without spaces, visible ASCII, at most "
                    f"{tables.CHECK_HOST_MAX} bytes",
                )
                ok = False
        expect = ir.CHECK_EXPECT
        if "expect" in vals:
            v = vals["expect"]
            m = re.fullmatch(r"(\d{3})(?:-(\d{3}))?", v.text)
            lo, hi = (int(m.group(1)), int(m.group(2) or m.group(1))) if m else (0, 0)
            if not 100 <= lo <= hi <= 599:
                self.error(
                    v.pos,
                    "bad check expect",
                    v.text,
                    "a status or a range of statuses from 100 to 599, like 200 or 200-399",
                )
                ok = False
            expect = (lo, hi)
        if not ok:
            return None
        assert interval is not None and timeout is not None and rise is not None
        assert fall is not None
        return ir.Check(kind, interval, timeout, rise, fall, request, host,
                        expect if kind == "http" else (0, 0))  # fmt: skip

    def check_duration(
        self, v: A.Val | None, default: int, bounds: tuple[int, int], what: str
    ) -> int | None:
        if v is None:
            return default
        ms = parse_duration_ms(v.text)
        lo, hi = bounds
        if ms is None or not lo <= ms <= hi:
            self.error(
                v.pos,
                f"bad check {what}",
                v.text,
                f"a duration from {_ms_text(lo)} to {_ms_text(hi)}, like 2s or 500ms",
            )
            return None
        return ms

    def check_count(self, v: A.Val | None, default: int, what: str) -> int | None:
        if v is None:
            return default
        if not v.text.isdigit() or not 1 <= int(v.text) <= tables.CHECK_COUNT_MAX:
            self.error(
                v.pos,
                f"bad check {what}",
                v.text,
                f"a number of checks in a row, 1..{tables.CHECK_COUNT_MAX}",
            )
            return None
        return int(v.text)

    def check_persist(self, it: A.PoolDecl) -> ir.Persist | None:
        """A pool's `persist cookie NAME;` or `persist source [DURATION];`."""
        for extra in it.persists[1:]:
            self.error(
                extra.pos,
                "duplicate 'persist'",
                extra.kind.text,
                f"a pool has at most one persistence; the first is at {it.persists[0].pos}",
            )
        if not it.persists:
            return None
        p = it.persists[0]
        kind, v = p.kind.text, p.value
        if kind == "cookie":
            if v is None:
                self.error(p.kind.pos, "cookie persistence needs the cookie's name", kind,
                           "persist cookie SRVID;")  # fmt: skip
                return None
            if not TOKEN_RE.match(v.text) or len(v.text) > tables.COOKIE_NAME_MAX:
                self.error(
                    v.pos,
                    "bad cookie name",
                    v.text,
                    f"a token of 1..{tables.COOKIE_NAME_MAX} letters, digits and "
                    "!#$%&'*+-.^_`|~ (RFC 6265)",
                )
                return None
            return ir.Persist("cookie", cookie=v.text)
        if kind == "source":
            ms = ir.PERSIST_SOURCE_MS
            if v is not None:
                got = parse_duration_ms(v.text)
                lo, hi = tables.PERSIST_TIMEOUT_RANGE
                if got is None or not lo <= got <= hi:
                    self.error(
                        v.pos,
                        "bad persistence timeout",
                        v.text,
                        "how long a client address sticks to its server: a duration from "
                        "1s to 24h, like 30m (default 5m, as ipvsadm -p)",
                    )
                    return None
                ms = got
            return ir.Persist("source", timeout_ms=ms)
        self.error(
            p.kind.pos,
            "unknown persistence",
            kind,
            _suggest(kind, list(ir.PERSIST_KINDS[1:]), "kinds")
            + " (persist cookie NAME; or persist source 30m;)",
        )
        return None

    def check_virtuals(self) -> list[ir.Virtual]:
        out: list[ir.Virtual] = []
        seen: dict[tuple[str, ir.IPAddress, int], A.Pos] = {}
        for it in self.items:
            if not isinstance(it, A.VirtualDecl):
                continue
            proto = it.proto.text
            if proto not in ir.PROTOS:
                self.error(
                    it.proto.pos, "unknown protocol", proto, "virtual services are 'tcp' or 'udp'"
                )
                continue
            ep = parse_endpoint(it.endpoint.text)
            if isinstance(ep, str):
                self.error(it.endpoint.pos, "bad virtual service address", it.endpoint.text, ep)
                continue
            key = (proto, ep[0], ep[1])
            if key in seen:
                self.error(
                    it.endpoint.pos,
                    "duplicate virtual service",
                    it.endpoint.text,
                    f"first defined at {seen[key]}",
                )
                continue
            seen[key] = it.endpoint.pos
            st = self.check_settings(it.settings, ("scheduler", "forward", "persistence"))
            sched = self.check_scheduler(st.get("scheduler"))
            fwd = st.get("forward")
            forward = "nat"
            if fwd is not None:
                if fwd.text not in ir.FORWARDS:
                    self.error(
                        fwd.pos,
                        "unknown forwarding method",
                        fwd.text,
                        _suggest(fwd.text, list(ir.FORWARDS), "methods"),
                    )
                forward = fwd.text
            persistence = 0
            pv = st.get("persistence")
            if pv is not None:
                ms = parse_duration_ms(pv.text)
                if ms is None or ms % 1000 or ms // 1000 > 0x7FFFFFFF:
                    self.error(
                        pv.pos, "bad persistence timeout", pv.text, "whole seconds, e.g. 300 or 5m"
                    )
                else:
                    persistence = ms // 1000
            servers = self.check_servers(it.servers, True)
            if forward != "tun":
                self.check_families(it, ep[0].version, forward)
            if not it.servers:
                self.warn(it.endpoint.pos, "virtual service has no servers", it.endpoint.text)
            out.append(
                ir.Virtual(proto, ep[0], ep[1], sched, forward, persistence, servers, _loc(it.pos))
            )
        return out

    def check_families(self, it: A.VirtualDecl, version: int, forward: str) -> None:
        """IPVS forwards by NAT or DR only to servers of the service's address family."""
        for s in it.servers:
            ep = parse_endpoint(s.endpoint.text)
            if isinstance(ep, str) or ep[0].version == version:
                continue
            self.error(
                s.endpoint.pos,
                f"IPv{ep[0].version} server in an IPv{version} virtual service",
                s.endpoint.text,
                f"IPVS cannot forward to another address family with 'forward {forward}'; "
                "only 'forward tun' can",
            )

    # ---- services and rules -------------------------------------------------------------
    def check_services(
        self, pools: dict[str, ir.Pool], lists: dict[str, A.ListDecl]
    ) -> list[ir.Service]:
        out: list[ir.Service] = []
        self.service_pos: dict[str, A.Pos] = {}
        listens: dict[tuple[ir.IPAddress, int], A.Pos] = {}
        self.lists = lists
        for it in self.items:
            if not isinstance(it, A.ServiceDecl):
                continue
            name = it.name.text
            if name in self.service_pos:
                self.error(
                    it.name.pos,
                    "duplicate service name",
                    name,
                    f"first defined at {self.service_pos[name]}",
                )
                continue
            self.service_pos[name] = it.name.pos
            ep = parse_endpoint(it.listen.text)
            if isinstance(ep, str):
                self.error(it.listen.pos, "bad listen address", it.listen.text, ep)
                continue
            if ep in listens:
                self.error(
                    it.listen.pos,
                    "another service listens on this address",
                    it.listen.text,
                    f"see {listens[ep]}",
                )
                continue
            listens[ep] = it.listen.pos
            opts = self.check_options(it.options)
            svc = _ServiceBuilder(self, name, pools)
            for r in it.rules:
                svc.rule(r)
            certificates = self.check_tls(it, opts)
            if opts.relay is not None:
                self.check_raw(it, opts)
            elif not it.rules:
                self.warn(it.name.pos, "service has no rules", name, "every request gets 404")
            rules = tuple(svc.rules)
            _Analysis(self, rules, svc.preds, svc.rule_pos).run()
            for (sname, pid), pos in svc.pred_pos.items():
                self.res.pred_pos[(sname, pid)] = pos
            out.append(
                ir.Service(
                    name,
                    ep[0],
                    ep[1],
                    rules,
                    tuple(svc.preds),
                    opts.limits,
                    opts.timeouts,
                    opts.xff,
                    _loc(it.pos),
                    raw=opts.relay is not None,
                    log=opts.log,
                    log_sample=opts.log_sample,
                    tls=it.tls is not None,
                    certificates=certificates,
                    xfp=opts.xfp,
                )
            )
        return out

    def check_tls(self, it: A.ServiceDecl, opts: _Options) -> tuple[ir.Certificate, ...]:
        """A TLS service's certificates (read when ``tls_files``); nothing
        of TLS in a plain service."""
        if it.tls is None:
            for c in it.certificates:
                self.error(
                    c.pos,
                    "certificate in a service that is not HTTPS",
                    it.listen.text,
                    f"write 'service {it.name.text} listen {it.listen.text} tls {{'",
                )
            if opts.xfp_at is not None:
                self.error(
                    opts.xfp_at,
                    "x-forwarded-proto in a service that is not HTTPS",
                    it.name.text,
                    "only a TLS service ('listen ADDRESS tls') sets X-Forwarded-Proto: https",
                )
            return ()
        if opts.relay is not None:
            self.error(
                opts.relay.pos,
                "relay raw in a TLS service",
                it.name.text,
                "a TLS service switches HTTP requests; raw relaying is for plain services",
            )
        if not it.certificates:
            self.error(
                it.tls,
                "TLS service without a certificate",
                it.name.text,
                'add \'certificate "FILE" key "FILE";\' (one per certificate, chosen by SNI)',
            )
        out: list[ir.Certificate] = []
        seen: dict[str, A.Pos] = {}
        for c in it.certificates:
            base = Path(c.pos.file).parent if c.pos.file != "<string>" else Path(".")
            cert = (base / c.cert.text).absolute()
            key = (base / c.key.text).absolute()
            names: tuple[str, ...] = ()
            if self.tls_files:
                try:
                    info = tlscert.inspect(cert, key)
                except tlscert.CertError as e:
                    val = c.key if e.which == "key" else c.cert
                    self.error(val.pos, e.message, val.text, e.hint)
                    continue
                names = info.names
                for w in info.warnings:
                    self.warn(c.pos, w, c.cert.text)
                for n in names:
                    if n in seen:
                        self.warn(
                            c.cert.pos,
                            "a name of two certificates",
                            n,
                            f"SNI {n} picks the first, at {seen[n]}",
                        )
                    seen.setdefault(n, c.cert.pos)
            out.append(ir.Certificate(str(cert), str(key), names, _loc(c.pos)))
        return tuple(out)

    def check_raw(self, it: A.ServiceDecl, opts: _Options) -> None:
        """A raw service (`relay raw;`) reads no HTTP: its one rule is an
        unconditional route, and no option about requests may be set."""
        assert opts.relay is not None
        why = "a raw service relays bytes without reading HTTP"
        for o in opts.written:
            key = o.kind
            if o.kind == "limit" and o.name.text in ir.RAW_REFUSED_LIMITS:
                key = f"limit {o.name.text}"
            elif o.kind == "timeout" and o.name.text in ir.RAW_REFUSED_TIMEOUTS:
                key = f"timeout {o.name.text}"
            elif o.kind != "x-forwarded-for":
                continue
            self.error(
                o.pos,
                "option not allowed in a raw service",
                key,
                f"{why}; remove it, or remove 'relay raw;' (at {opts.relay.pos})",
            )
        for i, r in enumerate(it.rules):
            if i:
                self.error(
                    r.pos,
                    "more than one rule in a raw service",
                    r.text,
                    "a raw service has exactly one rule, an unconditional 'route POOL;'",
                )
            elif r.action != "route":
                self.error(
                    r.pos,
                    f"'{r.action}' in a raw service",
                    r.text,
                    f"{why}: its only rule is an unconditional 'route POOL;'",
                )
            elif r.cond is not None:
                self.error(
                    r.cond.pos,
                    "condition in a raw service",
                    r.text,
                    f"{why}: every connection takes its one route; write 'route {r.target.text};'",
                )
        if not it.rules:
            self.error(
                opts.relay.pos,
                "raw service without a route",
                it.name.text,
                "a raw service needs exactly one rule, an unconditional 'route POOL;'",
            )

    def check_options(self, opts: list[A.Option]) -> _Options:
        out = _Options()
        limits, timeouts = out.limits, out.timeouts
        xff = "off"
        first: dict[str, A.Pos] = {}

        def once(o: A.Option, key: str) -> bool:
            if key in first:
                self.error(o.pos, f"duplicate '{key}'", o.value.text, f"first set at {first[key]}")
                return False
            first[key] = o.pos
            out.written.append(o)
            return True

        for o in opts:
            if o.kind == "limit":
                n = self.check_limit(o, tables.LIMIT_MAX, True)
                if n is not None and once(o, f"limit {o.name.text}"):
                    limits[o.name.text] = n
            elif o.kind == "timeout":
                if o.name.text not in ir.TIMEOUTS:
                    self.error(
                        o.name.pos,
                        "unknown timeout",
                        o.name.text,
                        _suggest(o.name.text, list(ir.TIMEOUTS), "timeouts"),
                    )
                    continue
                ms = parse_duration_ms(o.value.text)
                if ms is None or not 1 <= ms <= tables.MAX_TIMEOUT_MS:
                    self.error(
                        o.value.pos,
                        "bad timeout",
                        o.value.text,
                        "a duration from 1ms to 24h, like 500ms, 30s, 5m",
                    )
                    continue
                if once(o, f"timeout {o.name.text}"):
                    timeouts[o.name.text] = ms
            elif o.kind == "log":
                mode, has_n = o.name.text, o.value.pos != o.name.pos
                if mode not in ir.LOG_MODES:
                    self.error(
                        o.name.pos,
                        "unknown log mode",
                        mode,
                        "log on; (every request, the default), log off; or log sample N; "
                        "(one request in N)",
                    )
                    continue
                if mode == "sample":
                    lo, hi = tables.LOG_SAMPLE_RANGE
                    if not has_n or not lo <= int(o.value.text) <= hi:
                        self.error(
                            o.value.pos,
                            "bad log sample",
                            o.value.text if has_n else mode,
                            f"log sample N; logs one request in N, N from {lo} to {hi}",
                        )
                        continue
                elif has_n:
                    self.error(
                        o.value.pos,
                        f"'log {mode}' takes no number",
                        o.value.text,
                        "only 'log sample N;' has one",
                    )
                    continue
                if once(o, "log"):
                    out.log = mode
                    out.log_sample = int(o.value.text) if mode == "sample" else 0
            elif o.kind == "x-forwarded-proto":
                if o.value.text not in ("on", "off"):
                    self.error(
                        o.value.pos,
                        "expected 'on' or 'off'",
                        o.value.text,
                        "x-forwarded-proto on; sets X-Forwarded-Proto: https towards the "
                        "servers, in place of any the client sent",
                    )
                    continue
                if once(o, "x-forwarded-proto"):
                    out.xfp = o.value.text == "on"
                    out.xfp_at = o.pos
            elif o.kind == "relay":
                if o.value.text not in ir.RELAY_MODES:
                    self.error(
                        o.value.pos,
                        "unknown relay mode",
                        o.value.text,
                        "the only mode is 'raw' (no HTTP: every byte to one route, for "
                        "benchmarks); without 'relay' a service switches HTTP requests",
                    )
                    continue
                if once(o, "relay"):
                    out.relay = o
            else:
                mode = "append" if o.value.text == "on" else o.value.text
                if mode not in ir.XFF_MODES:
                    self.error(
                        o.value.pos,
                        "expected 'append', 'replace' or 'off'",
                        o.value.text,
                        "append keeps the client's X-Forwarded-For fields and adds one, replace "
                        "drops them and adds one; 'on' is a synonym of append",
                    )
                    continue
                if once(o, "x-forwarded-for"):
                    xff = mode
        out.xff = xff
        return out


@dataclass
class _Options:
    """A service's options as checked: values, and the statements kept."""

    limits: dict[str, int] = field(default_factory=dict)
    timeouts: dict[str, int] = field(default_factory=dict)
    xff: str = "off"
    relay: A.Option | None = None  # `relay raw;`
    written: list[A.Option] = field(default_factory=list)
    xfp: bool = False
    xfp_at: A.Pos | None = None  # where x-forwarded-proto was written
    log: str = "on"
    log_sample: int = 0


def _ms_text(ms: int) -> str:
    for unit, n in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % n == 0:
            return f"{ms // n}{unit}"
    return f"{ms}ms"


def _loc(p: A.Pos) -> ir.Loc:
    return ir.Loc(p.file, p.line, p.col)


class _ServiceBuilder:
    """Turns one service's rules into IR, interning predicates."""

    def __init__(self, c: _Compiler, name: str, pools: dict[str, ir.Pool]) -> None:
        self.c = c
        self.name = name
        self.pools = pools
        self.preds: list[ir.Predicate] = []
        self.ids: dict[ir.Predicate, int] = {}
        self.pred_pos: dict[tuple[str, int], A.Pos] = {}
        self.rules: list[ir.Rule] = []
        self.rule_pos: list[A.Pos] = []
        self.regex_cache: dict[str, rx.Regex] = {}

    def intern(self, p: ir.Predicate, pos: A.Pos) -> ir.PredRef:
        i = self.ids.get(p)
        if i is None:
            i = len(self.preds)
            self.ids[p] = i
            self.preds.append(p)
            self.pred_pos[(self.name, i)] = pos
        return ir.PredRef(i)

    def rule(self, r: A.Rule) -> None:
        c = self.c
        t = r.target
        if r.action == "route":
            if t.text not in self.pools:
                c.error(
                    t.pos, "unknown pool", t.text, _suggest(t.text, sorted(self.pools), "pools")
                )
                return
            action = ir.Action("route", pool=t.text)
        elif r.action == "answer":
            answer = self.answer(r)
            if answer is None:
                return
            action = answer
        else:
            status = int(t.text)
            if r.action == "block" and status not in STATUS_BLOCK:
                c.error(
                    t.pos,
                    "bad status for block",
                    t.text,
                    "block takes a 4xx or 5xx status, e.g. 403",
                )
                return
            if r.action == "redirect" and status not in STATUS_REDIRECT:
                c.error(
                    t.pos,
                    "bad status for redirect",
                    t.text,
                    "redirect takes 301, 302, 303, 307 or 308",
                )
                return
            loc = ""
            if r.location is not None:
                loc = r.location.text
                if not loc or any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in loc):
                    c.error(
                        r.location.pos,
                        "bad redirect location",
                        loc,
                        "a non-empty URL without spaces or control characters",
                    )
                    return
            action = ir.Action(r.action, status=status, location=loc)
        cond: ir.Cond = ir.TRUE
        if r.cond is not None:
            got = self.cond(r.cond)
            if got is None:
                return
            cond = got
            depth = cond_depth(cond)
            if depth > MAX_COND_DEPTH:
                c.error(
                    r.pos, "condition nested too deeply", "", f"at most {MAX_COND_DEPTH} levels"
                )
                return
        self.rules.append(ir.Rule(len(self.rules), action, cond, _loc(r.pos), r.text))
        self.rule_pos.append(r.pos)

    def answer(self, r: A.Rule) -> ir.Action | None:
        """`answer STATUS "BODY"`: a final status, a body of at most
        tables.ANSWER_BODY_MAX bytes (escapes: see unescape_body)."""
        c = self.c
        t = r.target
        status = int(t.text)
        if status not in STATUS_ANSWER:
            c.error(
                t.pos,
                "bad status for answer",
                t.text,
                "answer takes a final status, 200..599 (the switch ends the exchange with it)",
            )
            return None
        assert r.location is not None
        body = unescape_body(c, r.location)
        if body is None:
            return None
        if len(body) > tables.ANSWER_BODY_MAX:
            c.error(
                r.location.pos,
                "answer body too long",
                f"{len(body)} bytes",
                f"at most {tables.ANSWER_BODY_MAX} bytes; serve larger content from a pool",
            )
            return None
        if body and status in ANSWER_NO_BODY:
            c.error(
                r.location.pos,
                f"a {status} answer has no body",
                r.location.text,
                f'HTTP sends no body with {status}: write answer {status} "";',
            )
            return None
        return ir.Action("answer", status=status, body=body)

    def cond(self, n: A.Cond) -> ir.Cond | None:
        if isinstance(n, A.Not):
            inner = self.cond(n.item)
            return None if inner is None else ir.Not(inner)
        if isinstance(n, A.And | A.Or):
            items = [self.cond(i) for i in n.items]
            if any(i is None for i in items):
                return None
            flat: list[ir.Cond] = []
            cls = ir.And if isinstance(n, A.And) else ir.Or
            for i in items:
                assert i is not None
                if isinstance(i, cls):
                    flat.extend(i.items)
                else:
                    flat.append(i)
            return cls(tuple(flat))
        return self.pred(n)

    def values(self, p: A.Pred) -> list[A.Val] | None:
        v = p.values
        if v is None:
            return []
        if isinstance(v, A.ListRef):
            decl = self.c.lists.get(v.name.text)
            if decl is None:
                self.c.error(
                    v.name.pos,
                    "unknown list",
                    v.name.text,
                    _suggest(v.name.text, sorted(self.c.lists), "lists"),
                )
                return None
            self.c.used_lists.add(v.name.text)
            if not decl.items:
                self.c.error(
                    v.name.pos, "list is empty", v.name.text, f"defined at {decl.name.pos}"
                )
                return None
            return list(decl.items)
        return list(v)

    def pred(self, p: A.Pred) -> ir.Cond | None:
        c = self.c
        vals = self.values(p)
        if vals is None:
            return None
        fld = p.field.text
        name = b""
        if p.name is not None:
            if not p.name.text:
                c.error(p.name.pos, f"empty {fld} name", '""')
                return None
            if fld == "header" and not TOKEN_RE.match(p.name.text):
                c.error(
                    p.name.pos,
                    "bad header name",
                    p.name.text,
                    "header names are tokens: letters, digits and !#$%&'*+-.^_`|~",
                )
                return None
            name = p.name.text.lower().encode() if fld == "header" else p.name.text.encode()
        op = p.op.text if p.op is not None else None
        refs: list[ir.Cond] = []
        if fld in ("header", "cookie", "query") and (op == "exists" or (op is None and not vals)):
            return self.intern(ir.Predicate(fld, name, "exists"), p.pos)
        for v in vals:
            got = self.one(p, fld, name, op, v)
            if got is None:
                return None
            refs.append(got)
        return refs[0] if len(refs) == 1 else ir.Or(tuple(refs))

    def one(self, p: A.Pred, fld: str, name: bytes, op: str | None, v: A.Val) -> ir.Cond | None:
        c = self.c
        if fld == "method":
            if not TOKEN_RE.match(v.text):
                c.error(v.pos, "bad method", v.text, "methods are tokens like GET or PROPFIND")
                return None
            if v.text != v.text.upper() and v.text.upper() in (
                "GET",
                "HEAD",
                "POST",
                "PUT",
                "DELETE",
                "OPTIONS",
                "PATCH",
                "CONNECT",
                "TRACE",
            ):
                c.warn(
                    v.pos, "methods are case-sensitive", v.text, f"did you mean {v.text.upper()}?"
                )
            return self.intern(ir.Predicate("method", b"", "exact", v.text.encode()), v.pos)
        if fld == "type":
            exts = mime.extensions(v.text)
            if exts is None:
                c.error(
                    v.pos,
                    "unknown MIME type",
                    v.text,
                    _suggest(v.text.lower(), mime.known(), "known types"),
                )
                return None
            return self.intern(
                ir.Predicate(
                    "path",
                    b"",
                    "type",
                    v.text.lower().encode(),
                    tuple(b"." + e.encode() for e in exts),
                ),
                v.pos,
            )
        if fld == "source":
            try:
                net = ipaddress.ip_network(v.text, strict=False)
            except ValueError:
                c.error(
                    v.pos,
                    "bad address or network",
                    v.text,
                    "an address or CIDR like 10.0.0.0/8 or 2001:db8::/32",
                )
                return None
            if str(net.network_address) != v.text.split("/")[0] and "/" in v.text:
                c.error(v.pos, "network has host bits set", v.text, f"did you mean {net}?")
                return None
            return self.intern(ir.Predicate("source", b"", "cidr", str(net).encode()), v.pos)
        # string fields: host path header cookie query
        if op is None:
            op = "glob" if fld == "host" and "*" in v.text else "exact"
        text = v.text
        if fld == "host" and op != "regex":
            if text != text.lower():
                text = text.lower()
            if ":" in text and not text.startswith("["):
                c.warn(
                    v.pos,
                    "host is matched without the port",
                    v.text,
                    "the port is stripped before matching; remove ':PORT'",
                )
        if op == "regex":
            try:
                r = rx.parse(text)
            except rx.RegexError as e:
                c.error(v.pos_at(e.pos), "bad regex: " + e.msg, text, e.hint)
                return None
            self.regex_cache[text] = r
            if fld == "host" and re.search(r"(?<!\\)[A-Z]", text) and not r.icase:
                c.warn(
                    v.pos,
                    "host is lower-cased before matching; "
                    "upper-case letters in this regex never match",
                    text,
                )
        if fld == "path" and op in ("exact", "prefix") and text:
            if not text.startswith("/"):
                c.warn(
                    v.pos,
                    "paths start with '/'; this never matches an origin-form request",
                    text,
                    f'did you mean "/{text}"?',
                )
            else:
                norm = normalize_path(text.encode()).decode("utf-8", "replace")
                if norm != text and not (op == "prefix" and text.endswith("/.")):
                    c.warn(
                        v.pos,
                        "the matcher sees normalized paths; this value is never seen as written",
                        text,
                        f'write it normalized: "{norm}"',
                    )
        return self.intern(ir.Predicate(fld, name, op, text.encode()), v.pos)


def unescape_body(c: _Compiler, v: A.Val) -> bytes | None:
    """An answer's body: the string's UTF-8 bytes with the escapes \\n \\r \\t
    \\\\ \\" and \\xHH interpreted (other strings of the language are raw)."""
    out = bytearray()
    text = v.text
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "\\":
            out += ch.encode()
            i += 1
            continue
        nxt = text[i + 1 : i + 2]
        if nxt in ANSWER_ESCAPES:
            out += ANSWER_ESCAPES[nxt]
            i += 2
        elif nxt == "x" and re.fullmatch(r"[0-9A-Fa-f]{2}", text[i + 2 : i + 4]):
            out.append(int(text[i + 2 : i + 4], 16))
            i += 4
        else:
            c.error(
                v.pos_at(i, 2),
                "unknown escape in answer body",
                text[i : i + 2],
                "an answer's body knows \\n \\r \\t \\\\ \\\" and \\xHH",
            )
            return None
    return bytes(out)


def cond_depth(c: ir.Cond) -> int:
    """Evaluation stack depth of the postfix code :mod:`tables` emits."""
    if isinstance(c, ir.PredRef | ir.TrueCond):
        return 1
    if isinstance(c, ir.Not):
        return cond_depth(c.item)
    ds = sorted((cond_depth(i) for i in c.items), reverse=True)
    # children in decreasing depth order: child k runs with k values below it
    return max(d + (1 if k else 0) for k, d in enumerate(ds))


# ---- warnings: unreachable and shadowed rules --------------------------------------

Key = tuple[Any, ...]
MAX_DNF = 32


class _Analysis:
    """Warn about rules no request can reach.  Conservative: a warning means
    the rule is certainly shadowed; silence proves nothing."""

    def __init__(
        self, c: _Compiler, rules: tuple[ir.Rule, ...], preds: list[ir.Predicate], pos: list[A.Pos]
    ) -> None:
        self.c = c
        self.rules = rules
        self.preds = preds
        self.pos = pos

    def dnf(self, cond: ir.Cond, neg: bool = False) -> list[frozenset[Key]] | None:
        if isinstance(cond, ir.TrueCond):
            return [] if neg else [frozenset()]
        if isinstance(cond, ir.PredRef):
            k = self.key(cond.id)
            return [frozenset([("not", k) if neg else k])]
        if isinstance(cond, ir.Not):
            return self.dnf(cond.item, not neg)
        is_or = isinstance(cond, ir.Or) != neg
        parts = [self.dnf(i, neg) for i in cond.items]
        if any(p is None for p in parts):
            return None
        if is_or:
            out = [conj for p in parts if p is not None for conj in p]
            return out if len(out) <= MAX_DNF else None
        acc: list[frozenset[Key]] = [frozenset()]
        for p in parts:
            assert p is not None
            acc = [a | b for a in acc for b in p]
            if len(acc) > MAX_DNF:
                return None
        return acc

    def key(self, pid: int) -> Key:
        p = self.preds[pid]
        return (p.field, p.name, p.op, p.value)

    def implied(self, k: Key) -> set[Key]:
        """Keys of the predicates ``k`` implies, limited to the kinds some
        earlier rule uses (the others cannot be looked up anyway)."""
        if k[0] == "not":
            return {k}
        fld, name, op, val = k
        out: set[Key] = {k}
        present = self.present
        if fld in ("header", "cookie", "query"):
            out.add((fld, name, "exists", b""))
        if op in ("exact", "prefix") and (fld, name, "prefix") in present:
            out.update((fld, name, "prefix", val[:i]) for i in range(len(val) + 1))
        if op in ("exact", "suffix") and (fld, name, "suffix") in present:
            out.update((fld, name, "suffix", val[i:]) for i in range(len(val) + 1))
        if (
            op in ("exact", "prefix", "suffix", "contains")
            and len(val) <= 32
            and (fld, name, "contains") in present
        ):
            out.update(
                (fld, name, "contains", val[i:j])
                for i in range(len(val) + 1)
                for j in range(i, len(val) + 1)
            )
        if op == "cidr" and (fld, name, "cidr") in present:
            net = ipaddress.ip_network(val.decode())
            out.update(
                (fld, name, "cidr", str(net.supernet(new_prefix=n)).encode())
                for n in range(net.prefixlen)
            )
        return out

    def run(self) -> None:
        self.present: set[tuple[Any, ...]] = set()
        index: dict[Key, list[tuple[int, frozenset[Key]]]] = {}
        catch_all: ir.Rule | None = None
        for r in self.rules:
            pos = self.pos[r.index]
            if catch_all is not None:
                n = len(self.rules) - r.index - 1
                more = f" (and {n} more rule{'s' if n != 1 else ''} after it)" if n else ""
                self.c.warn(
                    pos,
                    f"rule is unreachable: the rule at line {catch_all.loc.line} "
                    f"matches every request{more}",
                    r.text,
                    "move it above that rule or remove it",
                )
                return
            d = self.dnf(r.cond)
            if d is None:
                continue
            if not d:  # never true
                self.c.warn(pos, "rule can never match", r.text)
                continue
            if any(not conj for conj in d):
                catch_all = r
                continue
            shadow: list[int] = []
            for conj in d:
                implied: set[Key] = set()
                for k in conj:
                    implied |= self.implied(k)
                found = None
                for k in implied:
                    for ri, aconj in index.get(k, ()):
                        if aconj <= implied and (found is None or ri < found):
                            found = ri
                if found is None:
                    break
                shadow.append(found)
            else:
                first = min(shadow)
                self.c.warn(
                    pos,
                    f"rule is shadowed by the rule at line {self.rules[first].loc.line}: "
                    "every request it matches is matched there first",
                    r.text,
                    "move it above that rule or remove it",
                )
            for conj in d:
                index.setdefault(min(conj, key=repr), []).append((r.index, conj))
                for k in conj:
                    if k[0] != "not":
                        self.present.add(k[:3])
