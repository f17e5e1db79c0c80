"""`relay raw;`: the floor relay of make bench (KT_SERVICE_RAW, flag bit 2).
The language and its errors, the IR, the encoding, the apply diff, and the
C validator on the flag."""

from __future__ import annotations

import struct

import pytest
from rules_helpers import POOLS, _match, compile_ok, errors, needs_match

from l7ctl import compiler, ir, tables
from l7ctl.apply import ir_diff

RAW = POOLS + "service floor listen 10.0.0.1:8090 {\n    relay raw;\n    route a;\n}\n"
W_FLAGS = 8


def _svc_word(b: bytes, i: int, w: int) -> int:
    k = tables.SECTIONS.index("service")
    off, n = struct.unpack_from("<2I", b, (tables.HDR_WORDS + 2 * k) * 4)
    assert i < n
    return int(struct.unpack_from("<I", b, (off + i * tables.REC_WORDS["service"] + w) * 4)[0])


def _raw(body: str) -> list[compiler.Diagnostic]:
    return errors(POOLS + "service floor listen 10.0.0.1:8090 {\n" + body + "\n}\n")


def test_raw_service_compiles() -> None:
    res = compile_ok(RAW)
    assert res.ir is not None and res.tables is not None
    (s,) = res.ir.services
    assert s.raw and s.xff == "off"
    assert [str(r.action) for r in s.rules] == ["route a"] and s.rules[0].cond == ir.TRUE
    assert _svc_word(res.tables, 0, W_FLAGS) == tables.SVC_RAW == 4
    assert {w.message for w in res.warnings} == {"pool is never used"}  # b and c


def test_raw_with_connection_options() -> None:
    """What concerns connections, not requests, is allowed."""
    res = compile_ok(
        POOLS + "service floor listen 10.0.0.1:8090 { relay raw; limit connections 10; "
        "limit source-connections 2; limit backlog 64; timeout idle 5s; timeout connect 1s; "
        "route b; }"
    )
    assert res.ir is not None and res.tables is not None
    s = res.ir.services[0]
    assert s.raw and s.limits == {"connections": 10, "source-connections": 2, "backlog": 64}
    assert s.timeouts_ms == {"idle": 5000, "connect": 1000}
    assert _svc_word(res.tables, 0, W_FLAGS) == 4


def test_http_services_keep_flag_zero_beside_a_raw_one() -> None:
    res = compile_ok(RAW + "service web listen 10.0.0.1:80 { x-forwarded-for replace; route b; }\n")
    assert res.ir is not None and res.tables is not None
    assert [s.raw for s in res.ir.services] == [True, False]
    assert [_svc_word(res.tables, i, W_FLAGS) for i in (0, 1)] == [4, 2]


@pytest.mark.parametrize(
    ("body", "message", "line", "col", "text"),
    [
        ("relay raw;\nroute a if path prefix \"/x\";", "condition in a raw service", 7, 12,
         'route a if path prefix "/x";'),
        ("relay raw;\nblock 403;", "'block' in a raw service", 7, 1, "block 403;"),
        ('relay raw;\nredirect 301 "/x";', "'redirect' in a raw service", 7, 1,
         'redirect 301 "/x";'),
        ("relay raw;\nroute a;\nroute b;", "more than one rule in a raw service", 8, 1,
         "route b;"),
        ("relay raw;", "raw service without a route", 6, 1, "floor"),
        ("relay raw;\nx-forwarded-for off;\nroute a;", "option not allowed in a raw service", 7,
         1, "x-forwarded-for"),
        ("relay raw;\nx-forwarded-for replace;\nroute a;", "option not allowed in a raw service",
         7, 1, "x-forwarded-for"),
        ("limit headers 10;\nrelay raw;\nroute a;", "option not allowed in a raw service", 6, 1,
         "limit headers"),
        ("relay raw;\nlimit request-line 100;\nroute a;", "option not allowed in a raw service",
         7, 1, "limit request-line"),
        ("relay raw;\nlimit header-size 100;\nroute a;", "option not allowed in a raw service",
         7, 1, "limit header-size"),
        ("relay raw;\nlimit source-rate 100;\nroute a;", "option not allowed in a raw service",
         7, 1, "limit source-rate"),
        ("relay raw;\ntimeout header 1s;\nroute a;", "option not allowed in a raw service", 7, 1,
         "timeout header"),
        ("relay raw;\ntimeout backend 1s;\nroute a;", "option not allowed in a raw service", 7,
         1, "timeout backend"),
        ("relay tcp;\nroute a;", "unknown relay mode", 6, 7, "tcp"),
        ("relay raw;\nrelay raw;\nroute a;", "duplicate 'relay'", 7, 1, "raw"),
    ],
)  # fmt: skip
def test_raw_errors(body: str, message: str, line: int, col: int, text: str) -> None:
    (e,) = _raw(body)
    assert e.message == message, e.format()
    assert (e.pos.file, e.pos.line, e.pos.col) == ("t.rules", line, col), e.format()
    assert e.text == text


def test_raw_error_hints_say_why() -> None:
    (e,) = _raw("relay raw;\nroute a if method GET;")
    assert "without reading HTTP" in e.hint and "route a;" in e.hint
    (e,) = _raw("relay raw;\nx-forwarded-for off;\nroute a;")
    assert "remove 'relay raw;' (at t.rules:6:1)" in e.hint
    (e,) = _raw("relay http;\nroute a;")
    assert "only mode is 'raw'" in e.hint


def test_every_raw_error_is_reported() -> None:
    errs = _raw('relay raw;\nlimit headers 5;\nblock 403;\nroute a if host "x";\nroute b;')
    assert [(e.pos.line, e.message) for e in errs] == [
        (7, "option not allowed in a raw service"),
        (8, "'block' in a raw service"),
        (9, "more than one rule in a raw service"),
        (10, "more than one rule in a raw service"),
    ]


def test_unknown_pool_in_a_raw_service() -> None:
    (e,) = _raw("relay raw;\nroute nosuch;")
    assert e.message == "unknown pool" and (e.pos.line, e.pos.col) == (7, 7)


def test_relay_is_a_keyword_only_in_services() -> None:
    compile_ok(
        "pool relay { server 10.0.0.1:80; }\n"
        "service raw listen 10.0.0.1:80 { relay raw; route relay; }\n"
    )
    (e,) = errors("relay raw;\n")
    assert e.message.startswith("syntax error")


def test_encoder_refuses_a_raw_ir_the_kernel_would_not_run() -> None:
    cfg = compile_ok(RAW).ir
    assert cfg is not None
    svc = cfg.services[0]
    cond = ir.Rule(0, ir.Action("route", pool="a"), ir.PredRef(0), svc.rules[0].loc, "x")
    block = ir.Rule(0, ir.Action("block", status=403), ir.TRUE, svc.rules[0].loc, "x")
    pred = (ir.Predicate("method", b"", "exact", b"GET"),)

    def with_svc(**kw: object) -> ir.Config:
        s = ir.Service(**{**svc.__dict__, **kw})  # type: ignore[arg-type]
        return ir.Config(cfg.pools, (s,), cfg.virtuals, cfg.files, cfg.limits)

    for bad, why in (
        (with_svc(xff="append"), "X-Forwarded-For"),
        (with_svc(rules=()), "exactly one rule"),
        (with_svc(rules=(cond,), preds=pred), "exactly one rule"),
        (with_svc(rules=(block,)), "exactly one rule"),
        (with_svc(rules=(svc.rules[0], svc.rules[0])), "exactly one rule"),
        (with_svc(limits={"headers": 10}), "limit headers"),
        (with_svc(timeouts_ms={"header": 10}), "timeout header"),
    ):
        with pytest.raises(tables.TableError, match=why):
            tables.encode(bad)
    # the same IR without raw encodes
    tables.encode(with_svc(raw=False, xff="append"))


def test_apply_diff_names_the_relay() -> None:
    http = compile_ok(POOLS + "service floor listen 10.0.0.1:8090 { route a; }").ir
    raw = compile_ok(RAW).ir
    assert http is not None and raw is not None
    lines = ir_diff(http, raw)
    assert "- service floor: x-forwarded-for off" in lines
    assert "+ service floor: relay raw" in lines
    assert ir_diff(raw, raw) == []
    empty = ir.Config((), (), ())
    assert "+ service floor listen 10.0.0.1:8090, relay raw, 1 rule(s)" in ir_diff(empty, raw)


@needs_match
def test_validator_accepts_the_raw_flag() -> None:
    assert _match is not None
    res = compile_ok(RAW)
    assert res.tables is not None
    t = _match.Table(res.tables)
    assert t.service(0)["flags"] == 4  # type: ignore[attr-defined]
    # the matcher gives the unconditional route for an empty request, which
    # is what the module asks it for a raw service's connection
    rule, _ = t.match(0, b"", b"", b"", b"", [], None)  # type: ignore[attr-defined]
    assert rule == 0


@needs_match
def test_validator_refuses_raw_with_x_forwarded_for() -> None:
    assert _match is not None
    res = compile_ok(RAW)
    assert res.tables is not None
    k = tables.SECTIONS.index("service")
    off, _ = struct.unpack_from("<2I", res.tables, (tables.HDR_WORDS + 2 * k) * 4)
    for flags, why in (
        (4 | 1, "X-Forwarded-For on a raw service"),
        (4 | 2, "X-Forwarded-For on a raw service"),
        (32, "unknown service flags"),
    ):
        b = bytearray(res.tables)
        struct.pack_into("<I", b, (off + W_FLAGS) * 4, flags)
        with pytest.raises(ValueError, match=why):
            _match.Table(bytes(b))
