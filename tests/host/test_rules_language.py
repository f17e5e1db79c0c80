"""The rules language: grammar, semantic checks, diagnostics, IR."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from rules_helpers import POOLS, compile_ok, errors, service, warnings

from l7ctl import compiler, ir

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_issue_example_compiles() -> None:
    res = compile_ok(
        """
pool images { scheduler wlc;  server 10.0.1.11:80 weight 3;  server 10.0.1.12:80; }
pool cgi    { scheduler lc;   server 10.0.2.11:8080; }
pool static { server 10.0.3.11:80; }

service web listen 192.0.2.10:80 {
    route images if type image/*;                        # MIME type from the path's extension
    route images if host "img.example.com";
    route cgi    if path prefix "/cgi-bin/" or path suffix ".cgi";
    route cgi    if method POST and path regex "^/api/v[0-9]+/";
    block 403    if header "User-Agent" contains "sqlmap";
    route static;                                         # default
}

virtual tcp 192.0.2.10:443 { scheduler sh; forward nat; persistence 300; server 10.0.1.11:443; }
"""
    )
    cfg = res.ir
    assert cfg is not None
    assert [p.name for p in cfg.pools] == ["images", "cgi", "static"]
    assert cfg.pools[0].servers[0].weight == 3
    assert cfg.pools[0].scheduler == "wlc"
    svc = cfg.services[0]
    assert (str(svc.addr), svc.port) == ("192.0.2.10", 80)
    assert [r.action.kind for r in svc.rules] == ["route"] * 4 + ["block", "route"]
    assert svc.rules[4].action.status == 403
    assert isinstance(svc.rules[5].cond, ir.TrueCond)
    v = cfg.virtuals[0]
    assert (v.proto, v.scheduler, v.forward, v.persistence) == ("tcp", "sh", "nat", 300)
    assert res.tables and len(res.tables) < 64 * 1024
    assert not res.warnings


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.rules")))
def test_examples_compile_cleanly(name: str) -> None:
    res = compiler.compile_file(EXAMPLES / name)
    assert res.ok, res.format()
    assert not res.warnings, res.format()


def test_ipv6_servers_states_options() -> None:
    res = compile_ok(
        """
pool p { scheduler sh; server [2001:db8::1]:8080 weight 0; server 10.0.0.1:80 state drain;
         server 10.0.0.2:80 state down weight 65535; }
service s listen [::]:8080 {
    limit headers 50; limit header-size 16384; timeout header 5s; timeout backend 2m;
    timeout connect 250ms; x-forwarded-for on;
    route p;
}
virtual udp [2001:db8::53]:53 { scheduler rr; forward dr; server [2001:db8::54]:53 weight 2; }
"""
    )
    cfg = res.ir
    assert cfg is not None
    s = cfg.pools[0].servers
    assert s[0].addr == ipaddress.ip_address("2001:db8::1") and s[0].weight == 0
    assert [x.state for x in s] == ["up", "drain", "down"]
    svc = cfg.services[0]
    assert svc.limits == {"headers": 50, "header-size": 16384}
    assert svc.timeouts_ms == {"header": 5000, "backend": 120000, "connect": 250}
    assert svc.xff == "append"  # 'on' is a synonym of append
    assert cfg.virtuals[0].proto == "udp" and cfg.virtuals[0].forward == "dr"


def test_predicates_and_lists() -> None:
    res = service(
        """
    route a if path suffix @imgs and not header "X-Debug" exists;
    route b if method [GET, HEAD] and (host "*.example.com" or host suffix ".example.org");
    route c if cookie "session" prefix "adm" or query "debug" "1" or source @nets;
    route c if header "accept" regex "(?i)json";
    route a;
""",
        extra='list imgs { ".jpg", ".png" }\nlist nets { 10.0.0.0/8 2001:db8::/32 }\n',
    )
    assert res.ir is not None
    preds = [str(p) for p in res.ir.services[0].preds]
    assert 'path suffix ".jpg"' in preds and 'path suffix ".png"' in preds
    assert 'header "x-debug" exists' in preds
    assert 'host glob "*.example.com"' in preds
    assert 'cookie "session" prefix "adm"' in preds
    assert 'query "debug" exact "1"' in preds
    assert "source 10.0.0.0/8" in preds and "source 2001:db8::/32" in preds
    assert "method GET" in preds and "method HEAD" in preds


def test_predicates_are_interned() -> None:
    res = service('route a if host "x";\nroute b if host "x" and path prefix "/p";\nroute c;')
    assert res.ir is not None
    assert len(res.ir.services[0].preds) == 2


def test_host_literals_are_lowercased() -> None:
    res = service('route a if host "WWW.Example.COM";\nroute b;')
    assert res.ir is not None
    assert res.ir.services[0].preds[0].value == b"www.example.com"


def test_type_expands_to_extensions() -> None:
    res = service("route a if type image/*;\nroute b if type text/css;\nroute c;")
    assert res.ir is not None
    img, css = res.ir.services[0].preds
    assert b".png" in img.exts and b".jpeg" in img.exts and b".css" not in img.exts
    assert css.exts == (b".css",)


def test_include_relative_and_lists(tmp_path: Path) -> None:
    (tmp_path / "inc").mkdir()
    (tmp_path / "inc" / "pools.rules").write_text(POOLS + 'include "lists.rules";\n')
    (tmp_path / "inc" / "lists.rules").write_text('list x { "/a" "/b" }\n')
    (tmp_path / "site.rules").write_text(
        'include "inc/pools.rules";\nservice s listen 1.2.3.4:80 {\n'
        '  route a if path prefix @x;\n  route b if host "h";\n  route c;\n}\n'
    )
    res = compiler.compile_file(tmp_path / "site.rules")
    assert res.ok, res.format()
    assert len(res.ir.files if res.ir else ()) == 3


def test_include_cycle(tmp_path: Path) -> None:
    (tmp_path / "a.rules").write_text('include "b.rules";\n')
    (tmp_path / "b.rules").write_text('include "a.rules";\n')
    res = compiler.compile_file(tmp_path / "a.rules")
    assert len(res.errors) == 1
    e = res.errors[0]
    assert e.message == "include cycle"
    assert "a.rules -> b.rules -> a.rules" in e.hint
    assert e.pos.file.endswith("b.rules") and e.pos.line == 1 and e.pos.col == 9


def test_include_missing(tmp_path: Path) -> None:
    (tmp_path / "a.rules").write_text('\n  include "nope.rules";\n')
    res = compiler.compile_file(tmp_path / "a.rules")
    assert res.errors[0].message.startswith("cannot include 'nope.rules'")
    assert (res.errors[0].pos.line, res.errors[0].pos.col) == (2, 11)


# ---- diagnostics -----------------------------------------------------------------


def one_error(text: str) -> compiler.Diagnostic:
    errs = errors(text)
    assert len(errs) == 1, [e.format() for e in errs]
    return errs[0]


@pytest.mark.parametrize(
    ("body", "message", "col", "hint"),
    [
        ("route imgs;", "unknown pool", 7, "pools: a, b, c"),
        ('route a if path regex "^/x(?=y)";', "unsupported regex feature: lookahead", 27, ""),
        ('route a if path regex "(a)\\1";', "unsupported regex feature: back-reference", 27, ""),
        ('route a if path regex "a(?<=b)";', "unsupported regex feature: lookbehind", 25, ""),
        ('route a if path regex "x{1,999}";', "repetition bound too large", 25, ""),
        ('route a if path regex "[b-a]";', "bad character range", 25, ""),
        ('route a if path regex "(ab";', "missing )", 24, ""),
        ("route a if type image/nope;", "unknown MIME type", 17, "image/"),
        ("route a if source 10.0.0.1/8;", "network has host bits set", 19, "10.0.0.0/8"),
        ("route a if source 300.0.0.0/8;", "bad address or network", 19, ""),
        ("block 200;", "bad status for block", 7, "4xx or 5xx"),
        ('redirect 200 "/x";', "bad status for redirect", 10, "301"),
        ('redirect 301 "a b";', "bad redirect location", 14, ""),
        ("route a if path suffix @none;", "unknown list", 25, ""),
        ('route a if header "a b" exists;', "bad header name", 19, ""),
        ("limit nope 1;", "unknown limit", 7, "limits"),
        ("timeout header 5x;", "syntax error", 17, ""),
        ("x-forwarded-for maybe;", "expected 'append', 'replace' or 'off'", 17, "'on'"),
        ("limit backlog 70000;", "limit out of range", 15, "1..65535"),
    ],
)
def test_errors(body: str, message: str, col: int, hint: str) -> None:
    text = POOLS + "service s listen 1.2.3.4:80 {\n" + body + "\n}\n"
    e = one_error(text)
    assert e.message.startswith(message) or message in e.message, e.format()
    assert e.pos.line == 6, e.format()
    assert e.pos.col == col, e.format()
    assert hint in e.hint
    assert e.pos.file == "t.rules"
    out = e.format({"t.rules": text})
    assert out.startswith(f"t.rules:6:{col}: error: ")
    assert "^" in out


@pytest.mark.parametrize(
    ("text", "message", "line", "col"),
    [
        ("pool a { scheduler fastest; server 1.2.3.4:80; }", "unknown scheduler", 1, 20),
        ("pool a { server 1.2.3.4:0; }", "bad server address", 1, 17),
        ("pool a { server 1.2.3:80; }", "bad server address", 1, 17),
        ("pool a { server 1.2.3.4:80 weight 65536; }", "weight out of range", 1, 35),
        ("pool a { server 1.2.3.4:80 state sleepy; }", "unknown server state", 1, 34),
        ("pool a { server 1.2.3.4:80; server 1.2.3.4:80; }", "duplicate server", 1, 36),
        ("pool a { server 1.2.3.4:80; }\npool a { server 1.2.3.5:80; }", "duplicate pool", 2, 6),
        ("virtual sctp 1.2.3.4:80 { }", "unknown protocol", 1, 9),
        ("virtual tcp 1.2.3.4:80 { forward bridge; }", "unknown forwarding", 1, 34),
        ("virtual tcp 1.2.3.4:80 { server 1.1.1.1:80 state up; }", "state is not supported", 1, 50),
        ("virtual tcp 1.2.3.4:80 { server [fd00::1]:80; }", "IPv6 server in an IPv4 virt", 1, 33),
        (
            "virtual tcp [fd00::1]:80 { forward dr; server 1.1.1.1:80; server [fd00::2]:80; }",
            "IPv4 server in an IPv6 virtual service",
            1,
            47,
        ),
        ("pool a { server 1.2.3.4:80 }", "syntax error: unexpected '}'", 1, 28),
        ('service s listen 1.2.3.4:80 { route "a"; }', "syntax error", 1, 37),
        ("service s listen 1.2.3.4 { }", "bad listen address", 1, 18),
        ("pool a {", "syntax error: unexpected end of file", 1, 9),
        ('service s listen 1.2.3.4:80 { route a if path "x', "syntax error", 1, 47),
    ],
)
def test_errors_outside_services(text: str, message: str, line: int, col: int) -> None:
    errs = errors(text)
    assert errs, text
    e = errs[0]
    assert message in e.message, e.format()
    assert (e.pos.line, e.pos.col) == (line, col), e.format()


def test_mixed_address_families_in_virtual_services() -> None:
    """IPVS refuses NAT and DR to another family at apply; the compiler says so first."""
    text = "virtual tcp 10.0.0.1:80 {\n    forward nat;\n    server [2001:db8::1]:80;\n}\n"
    (e,) = errors(text)
    out = e.format({"t.rules": text})
    assert out.startswith("t.rules:3:12: error: IPv6 server in an IPv4 virtual service"), out
    assert "only 'forward tun' can" in out
    # the default forwarding method is nat
    assert errors("virtual tcp [2001:db8::1]:80 { server 10.0.0.2:80; }")
    # tunnelling may cross families, as IPVS allows
    assert not errors("virtual tcp 10.0.0.1:80 { forward tun; server [2001:db8::1]:80; }")


def test_duplicate_listen_and_service() -> None:
    errs = errors(
        POOLS
        + "service s listen 1.2.3.4:80 { route a; }\n"
        + "service s listen 1.2.3.5:80 { route a; }\n"
        + "service t listen 1.2.3.4:80 { route a; }\n"
    )
    msgs = [e.message for e in errs]
    assert "duplicate service name" in msgs
    assert "another service listens on this address" in msgs


def test_regex_error_column_points_into_string() -> None:
    e = one_error(POOLS + 'service s listen 1.2.3.4:80 {\nroute a if path regex "ab\\"c(?!x)";\n}')
    # the string's quote is at column 23; (?! is at offset 4 of the pattern,
    # 5 in the source because of the \" escape
    assert e.pos.col == 23 + 1 + 5


# ---- warnings --------------------------------------------------------------------


def test_warning_shadowed_prefix() -> None:
    ws = warnings(
        POOLS + 'service s listen 1.2.3.4:80 {\nroute a if path prefix "/img";\n'
        'route b if path prefix "/img/";\nroute c;\n}'
    )
    assert len(ws) == 1
    assert "shadowed by the rule at line 6" in ws[0].message
    assert ws[0].pos.line == 7


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ('host "x.com"', 'host "x.com" and path prefix "/a"'),
        ('path suffix ".cgi"', 'path exact "/a/b.cgi"'),
        ('path contains "adm"', 'path prefix "/admin/"'),
        ("source 10.0.0.0/8", "source 10.1.0.0/16"),
        ('header "X-A" exists', 'header "x-a" prefix "v"'),
        ('path prefix "/a" or path prefix "/b"', 'path prefix "/b/c"'),
        ("method GET", 'method GET and not path prefix "/x"'),
    ],
)
def test_warning_shadowed_cases(first: str, second: str) -> None:
    ws = warnings(
        POOLS + f"service s listen 1.2.3.4:80 {{\nroute a if {first};\nroute b if {second};\n"
        "route c;\n}"
    )
    assert [w.pos.line for w in ws] == [7], [w.format() for w in ws]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ('path prefix "/img/"', 'path prefix "/img"'),
        ('host "x.com" and path prefix "/a"', 'host "x.com"'),
        ("source 10.1.0.0/16", "source 10.0.0.0/8"),
        ('path regex "^/a"', 'path prefix "/a"'),
    ],
)
def test_no_false_shadow_warning(first: str, second: str) -> None:
    ws = warnings(
        POOLS + f"service s listen 1.2.3.4:80 {{\nroute a if {first};\nroute b if {second};\n"
        "route c;\n}"
    )
    assert ws == []


def test_warning_unreachable_after_default() -> None:
    ws = warnings(
        POOLS + 'service s listen 1.2.3.4:80 {\nroute a;\nroute b if host "x";\nroute c;\n}'
    )
    assert len(ws) == 1
    assert "unreachable" in ws[0].message and "and 1 more rule" in ws[0].message


def test_warning_unused_pool_and_list_and_method_case() -> None:
    ws = warnings(
        'list l { "x" }\npool a { server 1.1.1.1:80; }\npool b { server 1.1.1.2:80; }\n'
        "service s listen 1.2.3.4:80 { route a if method get; route a; }"
    )
    msgs = sorted(w.message for w in ws)
    assert msgs == ["list is never used", "methods are case-sensitive", "pool is never used"]


def test_warning_path_not_normalized() -> None:
    ws = warnings(
        POOLS + 'service s listen 1.2.3.4:80 { route a if path prefix "/a/../b"; route b; }'
    )
    ws = [w for w in ws if "normalized" in w.message]
    assert len(ws) == 1 and '"/b"' in ws[0].hint


def test_json_diagnostic() -> None:
    res = compiler.compile_text(POOLS + "service s listen 1.2.3.4:80 { route zz; }", "f.rules")
    d = res.errors[0].to_json()
    assert d == {
        "severity": "error",
        "file": "f.rules",
        "line": 5,
        "column": 37,
        "message": "unknown pool",
        "text": "zz",
        "hint": d["hint"],
    }
