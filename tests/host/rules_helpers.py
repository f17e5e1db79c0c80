"""Shared helpers for the rules tests: compile text, run both engines."""

from __future__ import annotations

import pytest

from l7ctl import compiler, ir
from l7ctl import evaluator as ev

try:
    from l7ctl import _match  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover
    _match = None

needs_match = pytest.mark.skipif(_match is None, reason="l7ctl._match not built (make ext)")

POOLS = """
pool a { server 10.0.0.1:80; }
pool b { server 10.0.0.2:80; }
pool c { server 10.0.0.3:80; }
"""


def compile_ok(text: str, path: str = "t.rules") -> compiler.Result:
    res = compiler.compile_text(text, path)
    assert res.ok, res.format()
    return res


def service(body: str, extra: str = "") -> compiler.Result:
    return compile_ok(POOLS + extra + "service s listen 10.0.0.100:80 {\n" + body + "\n}\n")


def errors(text: str) -> list[compiler.Diagnostic]:
    return compiler.compile_text(text, "t.rules").errors


def warnings(text: str) -> list[compiler.Diagnostic]:
    res = compiler.compile_text(text, "t.rules")
    assert res.ok, res.format()
    return res.warnings


def c_match(tables: bytes, svc: int, req: ev.Request) -> tuple[int, list[int]]:
    assert _match is not None
    t = _match.Table(tables)
    return c_match_table(t, svc, req)


def c_match_table(t: object, svc: int, req: ev.Request) -> tuple[int, list[int]]:
    client = req.client.packed if req.client is not None else None
    rule, preds = t.match(  # type: ignore[attr-defined]
        svc, req.method, req.host, req.path, req.query, list(req.headers), client
    )
    return rule, preds


def decide(res: compiler.Result, req: ev.Request) -> int:
    assert res.ir is not None
    return ev.evaluate(res.ir.services[0], req).index


def unused(_: ir.Config) -> None:  # keep ir imported for type users
    pass
