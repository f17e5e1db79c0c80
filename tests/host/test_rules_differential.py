"""The C matcher (kmod/core/match.c via l7ctl._match) against the reference
evaluator: same rule chosen, same predicates true, on random rule sets and
random requests, normalized-path cases included."""

from __future__ import annotations

import ipaddress
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rules_helpers import POOLS, _match, c_match_table, compile_ok, needs_match

from l7ctl import evaluator as ev
from l7ctl import routing

pytestmark = needs_match

LIT = st.text(alphabet="ab/.xZ-", max_size=5)
HOSTLIT = st.text(alphabet="ab.xZ-", max_size=5)
GLOB = st.text(alphabet="ab/.*?", max_size=6)
ATOMS = st.sampled_from(
    ["a", "b", "/", "\\.", ".", "[ab]", "[^a]", "\\d", "[a-c]", "x", "Z", "\\w"]
)


def _regex_ext(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    pair = st.tuples(inner, inner)
    return st.one_of(
        pair.map(lambda t: t[0] + t[1]),
        pair.map(lambda t: f"(?:{t[0]}|{t[1]})"),
        inner.map(lambda x: f"(?:{x})*"),
        inner.map(lambda x: f"(?:{x})+"),
        inner.map(lambda x: f"(?:{x})?"),
        inner.map(lambda x: f"(?:{x}){{1,2}}"),
    )


def _regex_body() -> st.SearchStrategy[str]:
    return st.recursive(ATOMS, _regex_ext, max_leaves=5)


@st.composite
def regexes(draw: st.DrawFn) -> str:
    def branch() -> str:
        b = draw(_regex_body())
        return ("^" if draw(st.booleans()) else "") + b + ("$" if draw(st.booleans()) else "")

    r = branch()
    if draw(st.integers(0, 3)) == 0:
        r += "|" + branch()
    if draw(st.integers(0, 4)) == 0:
        r = "(?i)" + r
    return r


def q(s: str) -> str:
    return '"' + s + '"'


OPS = ["exact", "prefix", "suffix", "contains", "glob", "regex"]


@st.composite
def predicates(draw: st.DrawFn) -> str:
    kind = draw(
        st.sampled_from(
            ["host", "path", "path", "method", "type", "header", "cookie", "query", "source"]
        )
    )
    if kind == "method":
        return "method " + draw(st.sampled_from(["GET", "POST", "HEAD", "get"]))
    if kind == "type":
        return "type " + draw(
            st.sampled_from(["image/*", "image/png", "text/css", "application/json"])
        )
    if kind == "source":
        return "source " + draw(
            st.sampled_from(
                [
                    "10.0.0.0/8",
                    "10.1.0.0/16",
                    "10.1.2.3",
                    "192.168.0.0/23",
                    "0.0.0.0/0",
                    "2001:db8::/32",
                    "2001:db8::1",
                    "::/0",
                    "fe80::/10",
                ]
            )
        )
    op = draw(st.sampled_from(OPS))
    if op == "regex":
        val = draw(regexes())
    elif op == "glob":
        val = draw(GLOB)
    else:
        val = draw(HOSTLIT if kind == "host" else LIT)
    if kind in ("host", "path"):
        return f"{kind} {op} {q(val)}"
    name = {
        "header": draw(st.sampled_from(["X-A", "x-b", "Cookie"])),
        "cookie": draw(st.sampled_from(["c1", "C1"])),
        "query": draw(st.sampled_from(["q", "r"])),
    }[kind]
    if draw(st.integers(0, 4)) == 0:
        return f"{kind} {q(name)} exists"
    return f"{kind} {q(name)} {op} {q(val)}"


def _combine(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    pair = st.tuples(inner, inner)
    return st.one_of(
        pair.map(lambda t: f"({t[0]} and {t[1]})"),
        pair.map(lambda t: f"({t[0]} or {t[1]})"),
        inner.map(lambda x: f"not {x}"),
    )


def conds() -> st.SearchStrategy[str]:
    return st.recursive(predicates(), _combine, max_leaves=4)


@st.composite
def rulesets(draw: st.DrawFn) -> str:
    n = draw(st.integers(1, 8))
    lines = []
    for _ in range(n):
        action = draw(
            st.sampled_from(
                ["route a", "route b", "block 403", 'redirect 302 "/x"', 'answer 200 "ok\\n"',
                 'answer 503 ""']
            )
        )  # fmt: skip
        lines.append(f"{action} if {draw(conds())};")
    if draw(st.booleans()):
        lines.append("route c;")
    return POOLS + "service s listen 10.9.9.9:80 {\n" + "\n".join(lines) + "\n}\n"


SEGS = [
    "a",
    "b",
    "x.png",
    "X.JPG",
    "a.css",
    "data.json",
    ".",
    "..",
    "%2e",
    "%2E%2e",
    "%41",
    "%2F",
    "%7e",
    "",
    "ab-Z",
]


@st.composite
def requests(draw: st.DrawFn) -> ev.Request:
    raw = "/" + "/".join(draw(st.lists(st.sampled_from(SEGS), max_size=5)))
    path = ev.normalize_path(raw.encode())
    host = draw(st.text(alphabet="abAB.xz-", max_size=8)).encode()
    method = draw(st.sampled_from([b"GET", b"POST", b"HEAD", b"get", b"PUT"]))
    query = "&".join(
        draw(
            st.lists(
                st.sampled_from(["q=a", "q=", "q", "r=ab/x", "q=xZ", "", "qq=a", "r"]), max_size=3
            )
        )
    )
    headers = draw(
        st.lists(
            st.tuples(
                st.sampled_from([b"X-A", b"x-a", b"X-B", b"Cookie", b"cookie", b"User-Agent"]),
                st.sampled_from(
                    [
                        b"a",
                        b"ab/x",
                        b"c1=a",
                        b"c1=ab; C1=x",
                        b" c1 = a",
                        b"c1=;q=1",
                        b"",
                        b"x.Z",
                        b"c1",
                    ]
                ),
            ),
            max_size=4,
        )
    )
    client = draw(
        st.sampled_from(
            [
                None,
                "10.1.2.3",
                "10.2.0.1",
                "192.168.1.7",
                "8.8.8.8",
                "2001:db8::1",
                "2001:db9::1",
                "fe80::1",
                "::ffff:10.1.2.3",
                "::1",
            ]
        )
    )
    addr = ipaddress.ip_address(client) if client else None
    return ev.Request(method, host, path, query.encode(), tuple(headers), addr)


def _agree(text: str, reqs: list[ev.Request]) -> None:
    res = compile_ok(text)
    assert res.ir is not None and res.tables is not None and _match is not None
    svc = res.ir.services[0]
    table = _match.Table(res.tables)
    compiled = routing.Compiled(res, res.ir, res.tables, table)
    for req in reqs:
        ref = ev.evaluate(svc, req)
        rule, preds = c_match_table(table, 0, req)
        truth = {i for i, t in enumerate(ref.truth) if t}
        assert set(preds) == truth, (req, [str(svc.preds[i]) for i in set(preds) ^ truth])
        assert rule == ref.index, (req, rule, ref.index)
        # and the action the kernel acts on: pool, status, location or answer body
        if ref.rule is not None:
            got = table.result(0, *routing.request_args(req))
            assert routing.same_action(compiled, got, ref.rule), (req, got, ref.rule)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rulesets(), st.lists(requests(), min_size=1, max_size=8))
def test_c_matcher_agrees_with_reference(text: str, reqs: list[ev.Request]) -> None:
    _agree(text, reqs)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("KT_SLOW_TESTS"), reason="set KT_SLOW_TESTS=1")
@settings(max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rulesets(), st.lists(requests(), min_size=1, max_size=8))
def test_c_matcher_agrees_with_reference_long(text: str, reqs: list[ev.Request]) -> None:
    _agree(text, reqs)


def test_normalized_path_cases() -> None:
    res = compile_ok(
        POOLS
        + "service s listen 10.9.9.9:80 {\n"
        + 'route a if path prefix "/admin/";\n'
        + 'route b if path exact "/a%2Fb";\n'
        + "route c;\n}\n"
    )
    assert res.ir is not None and res.tables is not None and _match is not None
    t = _match.Table(res.tables)
    svc = res.ir.services[0]
    for raw, want in [
        (b"/public/../admin/x", 0),
        (b"/%61dmin/x", 0),
        (b"/./admin//x", 0),
        (b"//admin/x", 0),
        (b"/admin%2Fx", 2),
        (b"/a%2fb", 1),
        (b"/a/b", 2),
    ]:
        req = ev.Request(path=ev.normalize_path(raw))
        assert ev.evaluate(svc, req).index == want, raw
        assert c_match_table(t, 0, req)[0] == want, raw
