"""Service limits, the namespace connection limit and X-Forwarded-For modes
(format 2.0): the language, the encoder, and the C validator's bounds on raw
blobs (counts, option values, reserved words, rule statuses, redirect
locations)."""

from __future__ import annotations

import ipaddress
import re
import struct
from pathlib import Path

import pytest
from rules_helpers import POOLS, _match, compile_ok, errors, needs_match

from l7ctl import compiler, ir, tables

ROOT = Path(__file__).resolve().parents[2]

SITE = (
    POOLS
    + """
limit connections 250000;
service s listen 10.0.0.100:80 {
    x-forwarded-for replace;
    limit request-line 4096; limit header-size 32768; limit headers 50;
    limit connections 1000; limit source-connections 20; limit source-rate 100;
    limit backlog 4096;
    timeout header 5s; timeout idle 1m; timeout connect 250ms; timeout backend 24h;
    block 403 if header "User-Agent" contains "sqlmap";
    redirect 301 "https://example.com/new" if path prefix "/old/";
    route a if host "img.example.com";
    route b;
}
service t listen [2001:db8::1]:8080 { x-forwarded-for on; route c; }
service u listen 10.0.0.101:80 { route c; }
"""
)

# service record words (docs/rules-format.md)
W_FLAGS = 8
W_LIMITS = (9, 10, 11, 12, 32, 33, 34)  # in ir.LIMITS order
W_TIMEOUTS = (13, 14, 15, 16)
W_LOG = (35, 36)  # log mode, sample (format 3.0)
W_RESERVED = (37, 38, 39)
# rule record words
R_ACTION, R_POOL, R_STATUS, R_LOC_OFF, R_LOC_LEN = range(5)


@pytest.fixture(scope="module")
def res() -> compiler.Result:
    return compile_ok(SITE)


@pytest.fixture(scope="module")
def blob(res: compiler.Result) -> bytes:
    assert res.tables is not None
    return res.tables


# ---- the language --------------------------------------------------------------------


def test_options_reach_the_ir(res: compiler.Result) -> None:
    cfg = res.ir
    assert cfg is not None
    assert cfg.limits == {"connections": 250000}
    s, t, u = cfg.services
    assert s.xff == "replace" and t.xff == "append" and u.xff == "off"
    assert s.limits == {
        "request-line": 4096,
        "header-size": 32768,
        "headers": 50,
        "connections": 1000,
        "source-connections": 20,
        "source-rate": 100,
        "backlog": 4096,
    }
    assert s.timeouts_ms == {
        "header": 5000,
        "idle": 60000,
        "connect": 250,
        "backend": 24 * 3600 * 1000,
    }
    assert not res.warnings


@pytest.mark.parametrize(
    ("option", "name", "top"),
    [
        ("limit request-line", "request-line", 65536),
        ("limit header-size", "header-size", 1 << 20),
        ("limit headers", "headers", 1000),
        ("limit connections", "connections", 1_000_000),
        ("limit source-connections", "source-connections", 1_000_000),
        ("limit source-rate", "source-rate", 1_000_000),
        ("limit backlog", "backlog", 65535),
    ],
)
def test_limit_bounds(option: str, name: str, top: int) -> None:
    def text(n: int) -> str:
        return POOLS + f"service s listen 1.2.3.4:80 {{\n    {option} {n};\n    route a;\n}}\n"

    for n in (1, top):
        cfg = compile_ok(text(n)).ir
        assert cfg is not None and cfg.services[0].limits == {name: n}
    for n in (0, top + 1):
        (e,) = errors(text(n))
        assert e.message == "limit out of range", e.format()
        assert (e.pos.line, e.pos.col) == (6, 6 + len(option)), e.format()
        assert e.text == str(n)
        assert f"1..{top}" in e.hint
    if name in ("connections", "source-connections", "source-rate"):
        assert "no limit" in errors(text(0))[0].hint


def test_timeouts_at_most_a_day() -> None:
    def text(d: str) -> str:
        return POOLS + f"service s listen 1.2.3.4:80 {{ timeout idle {d}; route a; }}"

    assert compile_ok(text("24h")).ir.services[0].timeouts_ms == {"idle": 86_400_000}  # type: ignore[union-attr]
    assert compile_ok(text("1ms")).ir.services[0].timeouts_ms == {"idle": 1}  # type: ignore[union-attr]
    for d in ("25h", "86400001ms", "1441m", "0s"):
        (e,) = errors(text(d))
        assert e.message == "bad timeout" and e.text == d and "24h" in e.hint, e.format()
        assert e.pos.col == 1 + text(d).split("\n")[-1].index(d)


@pytest.mark.parametrize(
    ("written", "mode"), [("append", "append"), ("on", "append"), ("replace", "replace"),
                          ("off", "off")]
)  # fmt: skip
def test_x_forwarded_for_modes(written: str, mode: str) -> None:
    res = compile_ok(
        POOLS + f"service s listen 1.2.3.4:80 {{ x-forwarded-for {written}; route a; }}"
    )
    assert res.ir is not None and res.ir.services[0].xff == mode


@pytest.mark.parametrize(
    ("body", "message", "col", "hint"),
    [
        ("x-forwarded-for yes;", "expected 'append', 'replace' or 'off'", 17, "synonym"),
        ("x-forwarded-for on; x-forwarded-for off;", "duplicate 'x-forwarded-for'", 21,
         "first set at t.rules:6:1"),
        ("limit backlog 10; limit backlog 20;", "duplicate 'limit backlog'", 19,
         "first set at t.rules:6:1"),
        ("timeout idle 1s; timeout idle 2s;", "duplicate 'timeout idle'", 18, "first set"),
        ("limit source-rates 5;", "unknown limit", 7, "did you mean 'source-rate'?"),
        ("limit burst 5;", "unknown limit", 7, "source-connections, source-rate, backlog"),
    ],
)  # fmt: skip
def test_option_errors(body: str, message: str, col: int, hint: str) -> None:
    text = POOLS + "service s listen 1.2.3.4:80 {\n" + body + "\nroute a;\n}\n"
    (e,) = errors(text)
    assert e.message == message, e.format()
    assert (e.pos.file, e.pos.line, e.pos.col) == ("t.rules", 6, col), e.format()
    assert hint in e.hint, e.format()
    assert e.format({"t.rules": text}).startswith(f"t.rules:6:{col}: error: {message}")


def test_namespace_connection_limit() -> None:
    for n in (1, 10_000_000):
        cfg = compile_ok(
            f"limit connections {n};\n" + POOLS + "service s listen 1.2.3.4:80 { route a; }"
        ).ir
        assert cfg is not None and cfg.limits == {"connections": n}
    cfg = compile_ok(POOLS + "service s listen 1.2.3.4:80 { route a; }").ir
    assert cfg is not None and cfg.limits == {}


@pytest.mark.parametrize(
    ("stmt", "message", "col", "hint"),
    [
        ("limit connections 10000001;", "limit out of range", 19, "1..10000000"),
        ("limit connections 0;", "limit out of range", 19, "derived from memory"),
        ("limit source-rate 10;", "'limit source-rate' is a service option", 7,
         "inside a service block"),
        ("limit backlog 10;", "'limit backlog' is a service option", 7, "limit connections N"),
        ("limit conections 10;", "unknown limit", 7, "did you mean 'connections'?"),
    ],
)  # fmt: skip
def test_file_level_limit_errors(stmt: str, message: str, col: int, hint: str) -> None:
    text = POOLS + stmt + "\nservice s listen 1.2.3.4:80 { route a; }\n"
    (e,) = errors(text)
    assert e.message == message, e.format()
    assert (e.pos.line, e.pos.col) == (5, col), e.format()
    assert hint in e.hint, e.format()


def test_file_level_limit_once_across_includes(tmp_path: Path) -> None:
    (tmp_path / "limits.rules").write_text("# shared\nlimit connections 100;\n")
    (tmp_path / "site.rules").write_text(
        'include "limits.rules";\n' + POOLS + "limit connections 200;\n"
        "service s listen 1.2.3.4:80 { route a; }\n"
    )
    res = compiler.compile_file(tmp_path / "site.rules")
    (e,) = res.errors
    assert e.message == "duplicate 'limit connections'"
    assert (Path(e.pos.file).name, e.pos.line, e.pos.col) == ("site.rules", 6, 1)
    assert e.hint.startswith("first set at ") and e.hint.endswith("limits.rules:2:1")


def test_limit_is_not_allowed_in_pools() -> None:
    (e,) = errors("pool a { limit connections 5; server 1.1.1.1:80; }")
    assert e.message.startswith("syntax error") and (e.pos.line, e.pos.col) == (1, 10)


def test_compiler_bounds_match_h() -> None:
    """The compiler's and encoder's bounds are the kernel validator's."""
    h = (ROOT / "kmod/core/match.h").read_text()

    def define(name: str) -> int:
        m = re.search(rf"^#define\s+{name}\s+(.+?)\s*(/\*.*)?$", h, re.M)
        assert m, name
        return int(eval(m.group(1).replace("U", ""), {"__builtins__": {}}))

    kernel = {
        "version": define("KT_RULES_VERSION_MAJOR"),
        "services": define("KT_RULES_MAX_SERVICES"),
        "pools": define("KT_RULES_MAX_POOLS"),
        "servers": define("KT_RULES_MAX_SERVERS"),
        "timeout": define("KT_RULES_MAX_TIMEOUT_MS"),
        "ns": {"connections": define("KT_RULES_MAX_NS_CONNS")},
        "limits": {
            "request-line": define("KT_RULES_MAX_REQUEST_LINE"),
            "header-size": define("KT_RULES_MAX_HEADER_SIZE"),
            "headers": define("KT_RULES_MAX_HEADERS"),
            "connections": define("KT_RULES_MAX_CONNS"),
            "source-connections": define("KT_RULES_MAX_CONNS"),
            "source-rate": define("KT_RULES_MAX_SOURCE_RATE"),
            "backlog": define("KT_RULES_MAX_BACKLOG"),
        },
    }
    ours = {
        "version": tables.VERSION >> 16,
        "services": tables.MAX_SERVICES,
        "pools": tables.MAX_POOLS,
        "servers": tables.MAX_SERVERS,
        "timeout": tables.MAX_TIMEOUT_MS,
        "ns": tables.NS_LIMIT_MAX,
        "limits": tables.LIMIT_MAX,
    }
    assert ours == kernel
    assert (kernel["version"], kernel["services"], kernel["pools"], kernel["servers"]) == (
        3,
        1024,
        16384,
        65536,
    )
    # the order of ir.LIMITS is the kernel's KT_LIMIT_* index order
    for i, name in enumerate(ir.LIMITS):
        assert define("KT_LIMIT_" + name.upper().replace("-", "_")) == i
    assert define("KT_LIMIT_COUNT") == len(ir.LIMITS)
    assert define("KT_SERVICE_XFF_APPEND") == tables.SVC_XFF["append"]
    assert define("KT_SERVICE_XFF_REPLACE") == tables.SVC_XFF["replace"]
    assert define("KT_SERVICE_RAW") == tables.SVC_RAW


def test_too_many_services() -> None:
    text = POOLS + "".join(
        f"service s{i} listen 10.1.{i // 250}.{i % 250 + 1}:80 {{ route a; }}\n"
        for i in range(tables.MAX_SERVICES + 1)
    )
    (e,) = errors(text)
    assert e.message == "too many services" and e.text == "s1024"
    assert (e.pos.line, e.pos.col) == (5 + 1024, 9)
    assert "at most 1024 services" in e.hint
    # exactly the bound is fine
    compile_ok(text.rsplit("service s1024", 1)[0])


def test_too_many_pools_and_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    # the real bounds (16384 pools, 65536 servers) take long to parse as text;
    # the raw-blob tests below use them, here the compiler's positions
    monkeypatch.setattr(tables, "MAX_POOLS", 2)
    monkeypatch.setattr(tables, "MAX_SERVERS", 4)
    text = (
        "pool a { server 10.0.0.1:80; server 10.0.0.2:80; }\n"
        "pool b { server 10.0.0.3:80; }\n"
        "pool c { server 10.0.0.4:80;\n  server 10.0.0.5:80; }\n"
        'service s listen 1.2.3.4:80 { route a if host "b"; route b if host "c"; route c; }\n'
    )
    errs = {e.message: e for e in errors(text)}
    assert set(errs) == {"too many pools", "too many servers"}
    p, s = errs["too many pools"], errs["too many servers"]
    assert (p.pos.line, p.pos.col, p.text) == (3, 6, "c") and "at most 2 pools" in p.hint
    assert (s.pos.line, s.pos.col, s.text) == (4, 3, "10.0.0.5:80")
    assert "at most 4 servers in all pools together" in s.hint


# ---- the encoding ----------------------------------------------------------------------


def _section(b: bytes, name: str) -> tuple[int, int]:
    i = tables.SECTIONS.index(name)
    off, cnt = struct.unpack_from("<2I", b, (tables.HDR_WORDS + 2 * i) * 4)
    return off, cnt


def _word(b: bytes, w: int) -> int:
    return int(struct.unpack_from("<I", b, w * 4)[0])


def _set(b: bytes, word: int, value: int) -> bytes:
    a = bytearray(b)
    struct.pack_into("<I", a, word * 4, value & 0xFFFFFFFF)
    return bytes(a)


def _svc(b: bytes, i: int) -> int:
    """Word index of service record i."""
    off, n = _section(b, "service")
    assert i < n
    return off + i * tables.REC_WORDS["service"]


def _rule(b: bytes, i: int) -> int:
    off, n = _section(b, "rule")
    assert i < n
    return off + i * tables.REC_WORDS["rule"]


def test_format_service_words(blob: bytes) -> None:
    assert tables.REC_WORDS["service"] == 40
    assert _word(blob, 1) == 0x00030000
    assert _word(blob, 5) == 250000 and _word(blob, 6) == _word(blob, 7) == 0
    off, n = _section(blob, "service")
    assert n == 3
    rule_off, _ = _section(blob, "rule")
    assert rule_off - off == 3 * 40  # three 40-word records
    s = _svc(blob, 0)
    assert _word(blob, s + W_FLAGS) == 2  # replace
    assert [_word(blob, s + w) for w in W_LIMITS] == [4096, 32768, 50, 1000, 20, 100, 4096]
    assert [_word(blob, s + w) for w in W_TIMEOUTS] == [5000, 60000, 250, 86_400_000]
    assert [_word(blob, s + w) for w in W_LOG] == [1, 0]  # log on, the default
    assert [_word(blob, s + w) for w in W_RESERVED] == [0] * 3
    assert _word(blob, _svc(blob, 1) + W_FLAGS) == 1  # on = append
    assert _word(blob, _svc(blob, 2) + W_FLAGS) == 0
    assert [_word(blob, _svc(blob, 2) + w) for w in W_LIMITS] == [0] * 7
    # rules: block, redirect, route, route (route status 0, no location)
    rules = [[_word(blob, _rule(blob, i) + k) for k in range(5)] for i in range(4)]
    assert [r[R_ACTION] for r in rules] == [2, 3, 1, 1]
    assert [r[R_STATUS] for r in rules] == [403, 301, 0, 0]
    assert [r[R_POOL] for r in rules[:2]] == [tables.NONE] * 2
    assert [r[R_LOC_LEN] for r in rules] == [0, len("https://example.com/new"), 0, 0]


def test_encoder_refuses_what_the_kernel_would() -> None:
    cfg = compile_ok(SITE).ir
    assert cfg is not None
    svc = cfg.services[0]

    def with_svc(**kw: object) -> ir.Config:
        s = ir.Service(**{**svc.__dict__, **kw})  # type: ignore[arg-type]
        return ir.Config(cfg.pools, (s, *cfg.services[1:]), cfg.virtuals, cfg.files, cfg.limits)

    for bad in (
        with_svc(limits={"backlog": 65536}),
        with_svc(limits={"burst": 1}),
        with_svc(timeouts_ms={"idle": 86_400_001}),
        with_svc(xff="on"),
        ir.Config(cfg.pools, cfg.services, (), (), {"connections": 10_000_001}),
    ):
        with pytest.raises(tables.TableError):
            tables.encode(bad)


# ---- the C validator -------------------------------------------------------------------


def _refused(b: bytes) -> str:
    assert _match is not None
    with pytest.raises(ValueError) as e:
        _match.Table(b)
    return str(e.value)


def _accepted(b: bytes) -> object:
    assert _match is not None
    return _match.Table(b)


@needs_match
def test_validator_reads_the_new_words(blob: bytes) -> None:
    t = _accepted(blob)
    assert t.max_conns == 250000  # type: ignore[attr-defined]
    s = t.service(0)  # type: ignore[attr-defined]
    assert s["flags"] == 2
    assert s["limits"] == (4096, 32768, 50, 1000, 20, 100, 4096)
    assert s["timeouts_ms"] == (5000, 60000, 250, 86_400_000)
    assert t.service(1)["flags"] == 1  # type: ignore[attr-defined]
    assert t.service(2)["limits"] == (0,) * 7  # type: ignore[attr-defined]
    no_limit = compile_ok(POOLS + "service s listen 1.2.3.4:80 { route a; }").tables
    assert no_limit is not None and _word(no_limit, 5) == 0
    assert _accepted(no_limit).max_conns == 0  # type: ignore[attr-defined]


@needs_match
def test_validator_header(blob: bytes) -> None:
    assert "version" in _refused(_set(blob, 1, 0x00010000))  # a 1.0 blob
    assert "version" in _refused(_set(blob, 1, 0x00020000))  # a 2.0 blob
    _accepted(_set(blob, 1, 0x00030007))  # any minor of major 3
    _accepted(_set(blob, 5, 10_000_000))
    why = _refused(_set(blob, 5, 10_000_001))
    assert why == "namespace connection limit out of range (at most 10000000)"
    for w in (6, 7):
        assert _refused(_set(blob, w, 1)) == "reserved table header word not 0"


@needs_match
def test_validator_service_flags(blob: bytes) -> None:
    s = _svc(blob, 0) + W_FLAGS
    for flags in (0, 1, 2):
        assert _accepted(_set(blob, s, flags)).service(0)["flags"] == flags  # type: ignore[attr-defined]
    assert _refused(_set(blob, s, 3)) == "X-Forwarded-For both append and replace"
    for flags in (0x20, 0x80000000, 4 | 0x20):
        assert _refused(_set(blob, s, flags)) == "unknown service flags"
    # bit 3, HTTPS (tests/host/test_rules_tls.py); bit 4, X-Forwarded-Proto, only with it
    for flags in (8, 8 | 0x10, 8 | 4, 8 | 0x10 | 1):
        assert _accepted(_set(blob, s, flags)).service(0)["flags"] == flags  # type: ignore[attr-defined]
    for flags in (0x10, 0x10 | 4 | 8):
        assert _refused(_set(blob, s, flags)) == "X-Forwarded-Proto on a service that is not HTTPS"
    # bit 2, a raw service (tests/host/test_rules_raw.py), never with X-Forwarded-For
    assert _accepted(_set(blob, s, 4)).service(0)["flags"] == 4  # type: ignore[attr-defined]
    for flags in (5, 6, 7):
        assert _refused(_set(blob, s, flags)) in (
            "X-Forwarded-For on a raw service",
            "X-Forwarded-For both append and replace",
        )


@needs_match
@pytest.mark.parametrize(
    ("k", "top", "name"),
    [
        (0, 65536, "request-line"),
        (1, 1 << 20, "header-size"),
        (2, 1000, "headers"),
        (3, 1_000_000, "connections"),
        (4, 1_000_000, "source-connections"),
        (5, 1_000_000, "source-rate"),
        (6, 65535, "backlog"),
    ],
)
def test_validator_limit_bounds(blob: bytes, k: int, top: int, name: str) -> None:
    w = _svc(blob, 0) + W_LIMITS[k]
    for ok in (0, 1, top):
        assert _accepted(_set(blob, w, ok)).service(0)["limits"][k] == ok  # type: ignore[attr-defined]
    for bad in (top + 1, 0xFFFFFFFF):
        assert _refused(_set(blob, w, bad)) == f"{name} limit out of range (at most {top})"


@needs_match
def test_validator_timeout_bounds(blob: bytes) -> None:
    for k in range(4):
        w = _svc(blob, 1) + W_TIMEOUTS[k]
        _accepted(_set(blob, w, 86_400_000))
        assert _refused(_set(blob, w, 86_400_001)) == "service timeout over 24 hours"


@needs_match
def test_validator_reserved_service_words(blob: bytes) -> None:
    for svc in range(3):
        for w in W_RESERVED:
            assert _refused(_set(blob, _svc(blob, svc) + w, 1)) == "reserved service word not 0", (
                svc,
                w,
            )


@needs_match
def test_validator_rule_statuses(blob: bytes) -> None:
    block, redirect, route = _rule(blob, 0), _rule(blob, 1), _rule(blob, 2)
    for st in (400, 404, 599):
        _accepted(_set(blob, block + R_STATUS, st))
    for st in (0, 200, 302, 399, 600, 999):
        assert _refused(_set(blob, block + R_STATUS, st)) == "block status not 400..599"
    for st in (301, 302, 303, 307, 308):
        _accepted(_set(blob, redirect + R_STATUS, st))
    for st in (0, 300, 304, 305, 306, 309, 403):
        assert (
            _refused(_set(blob, redirect + R_STATUS, st))
            == "redirect status not 301, 302, 303, 307 or 308"
        )
    for st in (1, 200, 404):
        assert _refused(_set(blob, route + R_STATUS, st)) == "route rule with a status"
    # what belongs to other actions
    assert _refused(_set(blob, block + R_POOL, 0)) == "rule has a pool but does not route"
    assert _refused(_set(blob, redirect + R_POOL, 0)) == "rule has a pool but does not route"
    why = "rule has a location but does not redirect"
    assert _refused(_set(blob, route + R_LOC_LEN, 1)) == why
    assert _refused(_set(blob, block + R_LOC_OFF, 1)) == why


@needs_match
@pytest.mark.parametrize("byte", [b"\r", b"\n", b"\0", b"\t", b"\x1f", b"\x7f", b" "])
@pytest.mark.parametrize("where", [0, 8, -1])
def test_validator_redirect_location_bytes(blob: bytes, byte: bytes, where: int) -> None:
    """The location becomes a field of the switch's own answer: CR or LF would
    end it and start another (header injection)."""
    redirect = _rule(blob, 1)
    loc_off, loc_len = _word(blob, redirect + R_LOC_OFF), _word(blob, redirect + R_LOC_LEN)
    str_off, _ = _section(blob, "str")
    at = str_off * 4 + loc_off + (where % loc_len)
    assert blob[str_off * 4 + loc_off :][:loc_len] == b"https://example.com/new"
    bad = blob[:at] + byte + blob[at + 1 :]
    assert _refused(bad) == "control byte or space in redirect location"


@needs_match
def test_validator_redirect_location_present(blob: bytes) -> None:
    redirect = _rule(blob, 1)
    assert _refused(_set(blob, redirect + R_LOC_LEN, 0)) == "empty redirect location"
    _, nstr = _section(blob, "str")
    assert _refused(_set(blob, redirect + R_LOC_LEN, nstr + 1)) == "string out of range"
    # obs-text (UTF-8) is fine: the compiler accepts it, so does the kernel
    res = compile_ok(POOLS + 'service s listen 1.2.3.4:80 { redirect 302 "/caf\u00e9"; }')
    assert res.tables is not None
    _accepted(res.tables)


def test_compiler_refuses_what_the_validator_refuses() -> None:
    """Statuses and locations: the compiler says so first, at the position."""
    for body, message in (
        ("block 399;", "bad status for block"),
        ("block 600;", "bad status for block"),
        ('redirect 304 "/x";', "bad status for redirect"),
        ('redirect 301 "";', "bad redirect location"),
        ('redirect 301 "/a\tb";', "bad redirect location"),
        ('redirect 301 "/a b";', "bad redirect location"),
    ):
        (e,) = errors(POOLS + "service s listen 1.2.3.4:80 {\n" + body + "\n}\n")
        assert e.message == message and e.pos.line == 6, e.format()


def _config(nservices: int = 1, npools: int = 1, nservers: int = 1) -> ir.Config:
    """An IR with these counts, built directly (the text would be slow to parse)."""
    per = -(-nservers // npools)
    pools = []
    left = nservers
    for p in range(npools):
        n = min(per, left)
        left -= n
        servers = tuple(
            ir.Server(ipaddress.ip_address(0x0A000000 + p * per + i + 1), 80) for i in range(n)
        )
        pools.append(ir.Pool(f"p{p}", "wlc", servers))
    rule = ir.Rule(0, ir.Action("route", pool="p0"), ir.TRUE, ir.Loc("t.rules", 1, 1), "route p0;")
    services = tuple(
        ir.Service(f"s{i}", ipaddress.ip_address(0x0B000000 + i), 80, (rule,), ())
        for i in range(nservices)
    )
    return ir.Config(tuple(pools), services, ())


@needs_match
@pytest.mark.parametrize(
    ("kw", "what", "top"),
    [
        ({"nservices": 1024}, "services", 1024),
        ({"npools": 16384}, "pools", 16384),
        ({"nservers": 65536, "npools": 64}, "servers", 65536),
    ],
)
def test_validator_count_bounds(kw: dict[str, int], what: str, top: int) -> None:
    """What a configuration makes the kernel allocate at commit is bounded:
    at the bound a blob is accepted, one more is refused, however well formed."""
    t = _accepted(tables.encode(_config(**kw)))
    assert (t.nservices, t.npools) == (kw.get("nservices", 1), kw.get("npools", 1))  # type: ignore[attr-defined]
    more = {k: v + 1 if k == "n" + what else v for k, v in kw.items()}
    cfg = _config(**more)
    with pytest.raises(tables.TableError, match=f"too many {what}"):
        tables.encode(cfg)
    assert _refused(tables._encode(cfg)) == f"too many {what} (at most {top})"
