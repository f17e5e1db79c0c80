"""Answer "where does this request go?" exactly as the kernel would.

The request is parsed by the switch's own C parser (l7ctl._http, the code
the module runs) and matched by the kernel's C matcher (l7ctl._match) on
the compiled tables.  The reference evaluator runs alongside; if the two
ever disagree that is a bug and is reported as such.

Library API used by ``l7ctl route`` and ``l7ctl test``:

* :func:`load` - compile a rules file or raise L7ctlError.
* :func:`build_request` / :func:`parse_raw` - request views.
* :func:`route` - the decision and its explanation.
* :func:`run_cases` - a cases file, with rule coverage.
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from l7ctl import compiler, ir, tlscert
from l7ctl import evaluator as ev
from l7ctl.errors import L7ctlError


@dataclass
class Compiled:
    result: compiler.Result
    config: ir.Config
    tables: bytes
    table: Any = None  # l7ctl._match.Table, when the extension is built
    # a TLS service's certificate file -> its host names (read when needed)
    cert_names: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def engine(self) -> str:
        return "C matcher" if self.table is not None else "reference evaluator"


def load(path: str) -> Compiled:
    res = compiler.compile_file(path, tls_files=False)
    if not res.ok or res.ir is None or res.tables is None:
        first = res.errors[0] if res.errors else None
        msg = first.format(res.sources).split("\n")[0] if first else "compilation failed"
        more = (
            f" (and {len(res.errors) - 1} more errors; run l7ctl check)"
            if len(res.errors) > 1
            else ""
        )
        raise L7ctlError(msg + more)
    table = None
    try:
        from l7ctl import _match  # type: ignore[attr-defined]
    except ImportError:
        pass
    else:
        try:
            table = _match.Table(res.tables)
        except ValueError as e:  # pragma: no cover - encoder bug
            raise L7ctlError(f"the matcher refused the compiled tables: {e}") from None
    return Compiled(res, res.ir, res.tables, table)


def pick_service(c: Compiled, name: str | None, port: int | None = None) -> ir.Service:
    svcs = c.config.services
    if not svcs:
        raise L7ctlError("the rules file defines no service")
    if name is not None:
        for s in svcs:
            if s.name == name:
                return s
        raise L7ctlError(f"no service {name!r}; services: {', '.join(s.name for s in svcs)}")
    if len(svcs) == 1:
        return svcs[0]
    if port is not None:
        hits = [s for s in svcs if s.port == port]
        if len(hits) == 1:
            return hits[0]
    raise L7ctlError(
        f"several services ({', '.join(s.name for s in svcs)}): choose one with --service"
    )


def _http_parser() -> Any:
    try:
        from l7ctl import httpparse

        return httpparse
    except ImportError:
        return None


def parse_raw(data: bytes, client: str | None = None) -> ev.Request:
    """The request view of raw request bytes, through the C parser."""
    hp = _http_parser()
    if hp is None:
        raise L7ctlError("--raw needs the C parser extension (make ext)")
    msgs = hp.parse_requests(data)
    if not msgs:
        raise L7ctlError("incomplete request: no end of head (a blank line) in the input")
    m = msgs[0]
    if isinstance(m, hp.Refusal):
        raise L7ctlError(
            f"the switch refuses this request with {m.status}: {m.error} (at byte {m.offset})"
        )
    addr = _client(client)
    return ev.Request(m.method, m.host or b"", m.path, m.query or b"", tuple(m.headers), addr)


def _client(client: str | None) -> ir.IPAddress | None:
    if not client:
        return None
    try:
        return ipaddress.ip_address(client)
    except ValueError:
        raise L7ctlError(f"bad client address {client!r}") from None


def build_request(
    method: str, url: str, headers: list[str], client: str | None, default_host: str
) -> ev.Request:
    """``METHOD URL -H 'Name: value'`` as an HTTP/1.1 request, parsed by the
    C parser when available (else by the Python model of it)."""
    hdrs: list[tuple[str, str]] = []
    for h in headers:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            raise L7ctlError(f"bad header {h!r}: expected 'Name: value'")
        hdrs.append((name.strip(), value.strip()))
    target = url
    if not (url.startswith("/") or url.startswith("*") or "://" in url):
        target = "http://" + url  # "img.example.com/a.png"
    has_host = any(n.lower() == "host" for n, _ in hdrs)
    if "://" in target:
        authority = target.split("://", 1)[1].split("/", 1)[0]
        if not has_host:
            hdrs.insert(0, ("Host", authority))
    elif not has_host:
        hdrs.insert(0, ("Host", default_host))
    hp = _http_parser()
    if hp is None:
        return ev.Request.from_url(method, target, hdrs, client)
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in hdrs) + "\r\n"
    try:
        raw = head.encode("utf-8")
    except UnicodeError:  # pragma: no cover
        raise L7ctlError("request is not encodable") from None
    return parse_raw(raw, client)


@dataclass(frozen=True)
class TlsView:
    """A TLS service's handshake as the request's connection had it: the
    SNI sent, the certificate it chose and that certificate's names."""

    sni: str | None
    certificate: str
    names: tuple[str, ...]
    host_ok: bool  # the request's host is one of the names: else 421


@dataclass
class Explanation:
    service: ir.Service
    request: ev.Request
    rule: ir.Rule | None
    true_preds: list[int]
    engine: str
    reference_rule: int = -1
    agree: bool = True
    pool: ir.Pool | None = None
    tls: TlsView | None = None

    @property
    def misdirected(self) -> bool:
        """Answered 421 before any rule: the host is not a name of the
        certificate the handshake chose (RFC 9110 15.5.20)."""
        return self.tls is not None and not self.tls.host_ok

    @property
    def action(self) -> str:
        if self.misdirected:
            return "misdirected 421 (the host is not a name of the certificate)"
        if self.rule is None:
            return "block 404 (no rule matched)"
        return str(self.rule.action)

    def why(self) -> list[str]:
        """The predicates of the matched rule that held."""
        if self.rule is None:
            return []
        used = _pred_ids(self.rule.cond)
        return [str(self.service.preds[i]) for i in self.true_preds if i in used]

    def to_json(self) -> dict[str, Any]:
        r = self.rule
        tls = self.tls
        out: dict[str, Any] = {
            "service": self.service.name,
            "rule": None
            if r is None
            else {"index": r.index, "file": r.loc.file, "line": r.loc.line, "text": r.text},
            "action": None if r is None else r.action.kind,
            "pool": None if r is None or r.action.kind != "route" else r.action.pool,
            "status": 404 if r is None else (r.action.status or None),
            "location": None if r is None or not r.action.location else r.action.location,
            "body": r.action.body.decode("latin-1")
            if r is not None and r.action.kind == "answer"
            else None,
            "why": self.why(),
            "engine": self.engine,
            "agree": self.agree,
            "request": {
                "method": self.request.method.decode("latin-1"),
                "host": self.request.host.decode("latin-1"),
                "path": self.request.path.decode("latin-1"),
                "query": self.request.query.decode("latin-1"),
            },
        }
        if tls is not None:
            out["tls"] = {
                "sni": tls.sni,
                "certificate": tls.certificate,
                "names": list(tls.names),
                "host_ok": tls.host_ok,
            }
        if self.misdirected:
            out.update(rule=None, action="misdirected", pool=None, status=421, why=[])
        return out

    def format(self) -> str:
        q = self.request
        lines = [
            f"request: {q.method.decode('latin-1')} host={q.host.decode('latin-1')!r} "
            f"path={q.path.decode('latin-1')!r}"
            + (f" query={q.query.decode('latin-1')!r}" if q.query else "")
            + (f" from {q.client}" if q.client else ""),
            f"service: {self.service.name} ({_ep(self.service.addr, self.service.port)})",
        ]
        tls = self.tls
        if tls is not None:
            sni = repr(tls.sni) if tls.sni else "none"
            lines.append(f"tls:     SNI {sni} chose {tls.certificate} ({', '.join(tls.names)})")
        if self.misdirected:
            lines.append("rule:    none tried")
            lines.append(
                "action:  421 Misdirected Request: the host is not a name of the certificate "
                "the handshake chose (RFC 9110 15.5.20)"
            )
        elif self.rule is None:
            lines.append("rule:    none matched")
            lines.append("action:  block 404 (the default when no rule matches)")
        else:
            r = self.rule
            lines.append(f"rule:    {r.loc.file}:{r.loc.line}: {r.text}")
            lines.append(f"action:  {r.action}")
            if self.pool is not None:
                srv = ", ".join(
                    s.endpoint()
                    + (f" weight {s.weight}" if s.weight != 1 else "")
                    + (f" ({s.state})" if s.state != "up" else "")
                    for s in self.pool.servers
                )
                lines.append(
                    f"pool:    {self.pool.name} ({self.pool.scheduler}): {srv or 'no servers'}"
                )
            why = self.why()
            if why:
                lines.append("because: " + "; ".join(why))
            elif isinstance(r.cond, ir.TrueCond):
                lines.append("because: the rule has no condition (default)")
            else:
                lines.append("because: its condition holds with none of its tests true (a 'not')")
        lines.append(f"engine:  {self.engine}")
        if not self.agree:
            lines.append(
                f"BUG: the reference evaluator chose rule {self.reference_rule}; please report this"
            )
        return "\n".join(lines)


def _ep(a: ir.IPAddress, port: int) -> str:
    return f"[{a}]:{port}" if a.version == 6 else f"{a}:{port}"


def _pred_ids(c: ir.Cond) -> set[int]:
    if isinstance(c, ir.PredRef):
        return {c.id}
    if isinstance(c, ir.Not):
        return _pred_ids(c.item)
    if isinstance(c, ir.And | ir.Or):
        out: set[int] = set()
        for i in c.items:
            out |= _pred_ids(i)
        return out
    return set()


def svc_index(c: Compiled, svc: ir.Service) -> int:
    return c.config.services.index(svc)


def match(c: Compiled, svc: ir.Service, req: ev.Request) -> tuple[int, list[int]]:
    """Rule index (-1: none) and true predicates, from the C matcher."""
    assert c.table is not None
    client = req.client.packed if req.client is not None else None
    rule, preds = c.table.match(
        svc_index(c, svc), req.method, req.host, req.path, req.query, list(req.headers), client
    )
    return int(rule), [int(p) for p in preds]


def tls_view(c: Compiled, svc: ir.Service, req: ev.Request, sni: str | None) -> TlsView | None:
    """For a TLS service, the certificate SNI chooses (the daemon's choice,
    tlscert.pick) and whether the request's host is one of its names (the
    module's check, made only when the request names a host).  Reads each
    certificate file once; L7ctlError if one cannot be read."""
    if not svc.tls or not svc.certificates:
        return None
    names = []
    for cert in svc.certificates:
        if cert.cert not in c.cert_names:
            try:
                c.cert_names[cert.cert] = tlscert.cert_names(Path(cert.cert))
            except tlscert.CertError as e:
                raise L7ctlError(
                    f"service {svc.name}: {e.message} (the certificate's names decide "
                    "which hosts are answered 421)"
                ) from None
        names.append(c.cert_names[cert.cert])
    i = tlscert.pick(names, sni)
    host = req.host.decode("latin-1")
    ok = not host or tlscert.host_ok(names[i], host)
    return TlsView(sni, svc.certificates[i].cert, names[i], ok)


def route(c: Compiled, svc: ir.Service, req: ev.Request, sni: str | None = None) -> Explanation:
    """Where REQ goes in SVC.  For a TLS service, SNI is the name the
    client's handshake sent ("": none); by default the request's host, as
    browsers send."""
    if sni is None:
        sni = req.host.decode("latin-1")
    tls = tls_view(c, svc, req, sni or None)
    if tls is not None and not tls.host_ok:
        return Explanation(svc, req, None, [], c.engine, tls=tls)
    ref = ev.evaluate(svc, req)
    if c.table is not None:
        idx, preds = match(c, svc, req)
    else:
        idx = ref.index
        preds = [i for i, t in enumerate(ref.truth) if t]
    rule = svc.rules[idx] if idx >= 0 else None
    pool = None
    if rule is not None and rule.action.kind == "route":
        pool = c.config.pools[c.config.pool_index(rule.action.pool)]
    agree = ref.index == idx
    if c.table is not None and rule is not None:
        agree = agree and same_action(
            c, c.table.result(svc_index(c, svc), *request_args(req)), rule
        )
    return Explanation(svc, req, rule, sorted(preds), c.engine, ref.index, agree, pool, tls)


def request_args(req: ev.Request) -> tuple[Any, ...]:
    client = req.client.packed if req.client is not None else None
    return (req.method, req.host, req.path, req.query, list(req.headers), client)


def same_action(c: Compiled, res: dict[str, Any], rule: ir.Rule) -> bool:
    """Whether the C matcher's result (struct kt_match_result) is what the
    rule says: its action, pool, status, location or answer body."""
    from l7ctl import tables

    a = rule.action
    if res["action"] != tables.ACTION[a.kind] or res["line"] != rule.loc.line:
        return False
    if a.kind == "route":
        return bool(res["pool"] == c.config.pool_index(a.pool))
    if res["status"] != a.status:
        return False
    if a.kind == "redirect":
        return bool(res["location"] == a.location.encode())
    if a.kind == "answer":
        return bool(res["body"] == a.body and res["location"] == b"")
    return True


# ---- l7ctl test ---------------------------------------------------------------------


@dataclass
class Case:
    line: int
    text: str
    method: str
    url: str
    headers: list[str]
    client: str | None
    service: str | None
    # normalized: "route POOL" / "block N" / "redirect N [LOC]" / "misdirected" / "none"
    expect: str
    sni: str | None = None  # a TLS service's handshake name; None: the host


@dataclass
class CaseResult:
    case: Case
    got: str
    ok: bool
    rule: ir.Rule | None
    error: str = ""


@dataclass
class TestReport:
    results: list[CaseResult] = field(default_factory=list)
    uncovered: list[tuple[ir.Service, ir.Rule]] = field(default_factory=list)

    @property
    def failures(self) -> list[CaseResult]:
        return [r for r in self.results if not r.ok]


def parse_cases(path: str, pools: set[str]) -> list[Case]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise L7ctlError(f"cannot read {path}: {e.strerror}") from None
    cases = []
    for n, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "=>" not in line:
            raise L7ctlError(f"{path}:{n}: expected 'REQUEST => EXPECTED', got {line!r}")
        req, _, exp = line.rpartition("=>")
        try:
            words = shlex.split(req, comments=False)
        except ValueError as e:
            raise L7ctlError(f"{path}:{n}: {e}") from None
        method, url, headers, client, service = "GET", "", [], None, None
        sni: str | None = None
        pos: list[str] = []
        i = 0
        while i < len(words):
            w = words[i]
            if w in ("-H", "--header", "--from", "--service", "--sni") and i + 1 >= len(words):
                raise L7ctlError(f"{path}:{n}: {w} needs a value")
            if w in ("-H", "--header"):
                headers.append(words[i + 1])
                i += 2
            elif w == "--from":
                client = words[i + 1]
                i += 2
            elif w == "--service":
                service = words[i + 1]
                i += 2
            elif w == "--sni":
                sni = words[i + 1]
                i += 2
            else:
                pos.append(w)
                i += 1
        if len(pos) == 1:
            url = pos[0]
        elif len(pos) == 2:
            method, url = pos
        else:
            raise L7ctlError(f"{path}:{n}: expected [METHOD] URL before '=>'")
        expect = _norm_expect(exp, pools, path, n)
        cases.append(Case(n, line, method, url, headers, client, service, expect, sni))
    return cases


def _norm_expect(exp: str, pools: set[str], path: str, n: int) -> str:
    w = exp.split()
    if not w:
        raise L7ctlError(f"{path}:{n}: nothing expected after '=>'")
    if w[0] == "route" and len(w) == 2:
        return f"route {w[1]}"
    if w[0] in ("block", "redirect") and len(w) >= 2 and w[1].isdigit():
        return " ".join(w[:3])
    if w[0] == "answer" and len(w) == 2 and w[1].isdigit():
        return f"answer {w[1]}"
    if w[0] in ("none", "misdirected") and len(w) == 1:
        return w[0]
    if len(w) == 1 and w[0] in pools:
        return f"route {w[0]}"
    raise L7ctlError(
        f"{path}:{n}: bad expectation {exp.strip()!r}: expected POOL, route POOL, block STATUS, "
        "redirect STATUS [LOCATION], answer STATUS, misdirected (421) or none"
    )


def _got(ex: Explanation, expect: str) -> str:
    if ex.misdirected:
        return "misdirected"
    rule = ex.rule
    if rule is None:
        return "none"
    a = rule.action
    if a.kind == "route":
        return f"route {a.pool}"
    if a.kind == "block":
        return f"block {a.status}"
    if a.kind == "answer":
        return f"answer {a.status}"
    # compare the location only if the case names one
    return (
        f"redirect {a.status} {a.location}" if len(expect.split()) == 3 else f"redirect {a.status}"
    )


def run_cases(c: Compiled, cases: list[Case]) -> TestReport:
    rep = TestReport()
    hit: set[tuple[str, int]] = set()
    for case in cases:
        try:
            url_port = None
            svc = pick_service(c, case.service, url_port)
            req = build_request(
                case.method, case.url, case.headers, case.client, _ep(svc.addr, svc.port)
            )
            ex = route(c, svc, req, case.sni)
        except L7ctlError as e:
            rep.results.append(CaseResult(case, "error", False, None, str(e)))
            continue
        if ex.rule is not None:
            hit.add((svc.name, ex.rule.index))
        got = _got(ex, case.expect)
        ok = got == case.expect and ex.agree
        rep.results.append(
            CaseResult(
                case, got, ok, ex.rule, "" if ex.agree else "C matcher and reference disagree"
            )
        )
    for svc in c.config.services:
        for r in svc.rules:
            if (svc.name, r.index) not in hit:
                rep.uncovered.append((svc, r))
    return rep
