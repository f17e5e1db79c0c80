"""``l7ctl check``, ``l7ctl route`` and ``l7ctl test``: thin wrappers over
:mod:`l7ctl.compiler` and :mod:`l7ctl.routing`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from l7ctl.errors import L7ctlError

if TYPE_CHECKING:
    from l7ctl import compiler

# The compiler (lark) and the router are imported by the commands that use
# them: every other l7ctl command, `l7ctl health` above all (run by
# keepalived every few seconds), starts without them.


def _cmd_check(args: argparse.Namespace) -> int:
    from l7ctl import compiler

    res = compiler.compile_file(args.file)
    if args.json:
        out = {
            "ok": res.ok,
            "errors": [d.to_json() for d in res.errors],
            "warnings": [d.to_json() for d in res.warnings],
        }
        if res.ok and res.ir is not None and res.tables is not None:
            out["summary"] = _summary(res)
        print(json.dumps(out, indent=2))
        return 0 if res.ok else 1
    text = res.format()
    if text:
        print(text, file=sys.stderr if not res.ok else sys.stdout)
    if res.ok and res.ir is not None and res.tables is not None:
        s = _summary(res)
        print(
            f"{args.file}: ok: {s['services']} service(s), {s['rules']} rule(s), "
            f"{s['pools']} pool(s), {s['virtuals']} virtual service(s); "
            f"tables {s['table_bytes']} bytes; {len(res.warnings)} warning(s)"
        )
        return 0
    print(
        f"{args.file}: {len(res.errors)} error(s), {len(res.warnings)} warning(s)", file=sys.stderr
    )
    return 1


def _summary(res: compiler.Result) -> dict[str, int]:
    assert res.ir is not None and res.tables is not None
    return {
        "services": len(res.ir.services),
        "rules": sum(len(s.rules) for s in res.ir.services),
        "pools": len(res.ir.pools),
        "virtuals": len(res.ir.virtuals),
        "table_bytes": len(res.tables),
    }


def _cmd_route(args: argparse.Namespace) -> int:
    from l7ctl import routing

    c = routing.load(args.file)
    if args.raw:
        if args.request:
            raise L7ctlError("--raw reads the request from stdin: give no METHOD/URL")
        svc = routing.pick_service(c, args.service)
        req = routing.parse_raw(sys.stdin.buffer.read(), args.client)
    else:
        if len(args.request) == 1:
            method, url = "GET", args.request[0]
        elif len(args.request) == 2:
            method, url = args.request
        else:
            raise L7ctlError("expected [METHOD] URL (or --raw)")
        svc = routing.pick_service(c, args.service)
        req = routing.build_request(
            method, url, args.header, args.client, routing._ep(svc.addr, svc.port)
        )
    ex = routing.route(c, svc, req, args.sni)
    if args.json:
        print(json.dumps(ex.to_json(), indent=2))
    else:
        print(ex.format())
    return 0 if ex.agree else 1


def _cmd_test(args: argparse.Namespace) -> int:
    from l7ctl import routing

    c = routing.load(args.file)
    pools = {p.name for p in c.config.pools}
    cases = routing.parse_cases(args.cases, pools)
    rep = routing.run_cases(c, cases)
    for r in rep.failures:
        where = f"{args.cases}:{r.case.line}"
        if r.error and r.got == "error":
            print(f"FAIL {where}: {r.case.text}\n     error: {r.error}")
            continue
        rule = (
            f" (rule {r.rule.loc.file}:{r.rule.loc.line}: {r.rule.text})"
            if r.rule
            else " (no rule matched)"
        )
        print(f"FAIL {where}: {r.case.text}\n     expected {r.case.expect}, got {r.got}{rule}")
        if r.error:
            print(f"     {r.error}")
    total = len(rep.results)
    nrules = sum(len(s.rules) for s in c.config.services)
    covered = nrules - len(rep.uncovered)
    print(f"{total - len(rep.failures)}/{total} cases passed; rule coverage {covered}/{nrules}")
    for svc, unused in rep.uncovered:
        print(f"  not exercised: {unused.loc.file}:{unused.loc.line}: {unused.text}  [{svc.name}]")
    if args.require_coverage and rep.uncovered:
        return 1
    return 1 if rep.failures else 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    s = sub.add_parser(
        "check",
        help="check a rules file: errors, warnings, compiled size",
        description="Compile FILE (and its includes) and report every error and warning "
        "with file:line:column. Exit 0 when it compiles, 1 otherwise.",
    )
    s.add_argument("file", metavar="FILE")
    s.add_argument("--json", action="store_true", help="print diagnostics as JSON")
    s.set_defaults(func=_cmd_check)

    s = sub.add_parser(
        "route",
        help="show where a request would go, and why",
        description="Parse the request with the switch's C parser and match it with the "
        "kernel's C matcher on FILE's compiled tables; print the matching rule "
        "(file:line), the action and pool, and the tests that made it match.",
    )
    s.add_argument("file", metavar="FILE")
    s.add_argument(
        "request",
        nargs="*",
        metavar="[METHOD] URL",
        help="e.g. GET http://img.example.com/a.png or POST /cgi-bin/x",
    )
    s.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="add a request header (repeatable)",
    )
    s.add_argument("--from", dest="client", metavar="ADDR", help="client address")
    s.add_argument("--service", metavar="NAME", help="service to route in (if several)")
    s.add_argument(
        "--sni",
        metavar="NAME",
        help="a TLS service's handshake name, which chooses the certificate whose names the "
        "host must be (else 421); default: the request's host, as browsers send; '': none",
    )
    s.add_argument("--raw", action="store_true", help="read raw request bytes from stdin")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=_cmd_route)

    s = sub.add_parser(
        "test",
        help="run request -> expected action cases against a rules file",
        description="Each line of CASES is '[METHOD] URL [-H 'N: v']... [--from ADDR] "
        "[--service NAME] [--sni NAME] => EXPECTED' where EXPECTED is POOL, route POOL, "
        "block STATUS, redirect STATUS [LOCATION], answer STATUS, misdirected (421: a TLS "
        "service's host that is not a name of the certificate SNI chose) or none. Reports "
        "failures and the rules no case exercised. Exit 1 on any failure.",
    )
    s.add_argument("file", metavar="FILE")
    s.add_argument("cases", metavar="CASES")
    s.add_argument(
        "--require-coverage", action="store_true", help="also fail when some rule is not exercised"
    )
    s.set_defaults(func=_cmd_test)
