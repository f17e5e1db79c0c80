"""The automata builders against Python's own string and re semantics, and
the Python path normalizer against the C parser's."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from l7ctl import automata
from l7ctl import evaluator as ev
from l7ctl import regex as rx

WORDS = st.text(alphabet="ab/.Z", max_size=4).map(str.encode)
INPUT = st.text(alphabet="ab/.Zz", max_size=10).map(str.encode)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(WORDS, max_size=5),
    st.lists(WORDS, max_size=5),
    st.lists(WORDS, max_size=5),
    st.lists(INPUT, max_size=6),
)
def test_literal_dfa(
    prefixes: list[bytes], suffixes: list[bytes], contains: list[bytes], inputs: list[bytes]
) -> None:
    P = list(enumerate(prefixes))
    S = [(i + 100, v) for i, v in enumerate(suffixes)]
    C = [(i + 200, v) for i, v in enumerate(contains)]
    d = automata.build_literal_dfa(P, S, C)
    for s in inputs:
        want = {i for i, v in P if s.startswith(v)}
        want |= {i for i, v in S if s.endswith(v)}
        want |= {i for i, v in C if v in s}
        assert automata.run(d, s) == want, s


def test_literal_dfa_fold() -> None:
    d = automata.build_literal_dfa([(0, b"www.")], [(1, b".com")], [(2, b"exa")], fold=True)
    assert automata.run(d, b"WWW.EXAMPLE.COM") == {0, 1, 2}
    assert automata.run(d, b"ww.example.org") == {2}


REGEXES = [
    r"^/api/v[0-9]+/",
    r"\.php[0-9]?$",
    r"(?i)\.(jpg|png)$",
    r"a{2,3}b",
    r"^$",
    r"^(a|b)*c$|x",
    r"[^/]+\.cgi$",
    r"\d\d?",
    r"^(?:ab)+$",
    r"a.c",
    r"",
    r"a|^b|c$",
    r"[\w.-]+@",
]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.text(alphabet="abc/.x0129@ApP", max_size=12).map(str.encode), min_size=1, max_size=10
    )
)
def test_regex_dfa_vs_python_re(inputs: list[bytes]) -> None:
    pats = [(i, rx.parse(r)) for i, r in enumerate(REGEXES)]
    d = automata.build_regex_dfa(pats)
    for s in inputs:
        want = {i for i, r in pats if rx.to_python(r).search(s)}
        assert automata.run(d, s) == want, s


@pytest.mark.parametrize(
    ("pattern", "feature"),
    [
        (r"(a)\1", "back-reference"),
        (r"(?=a)", "lookahead"),
        (r"(?!a)", "negative lookahead"),
        (r"(?<=a)b", "lookbehind"),
        (r"(?P<x>a)", "named group"),
        (r"a\b", "assertion"),
        (r"a^", "anchor"),
        (r"(a$)", "anchor"),
        (r"a++", "possessive"),
        (r"[[:alpha:]]", "POSIX class"),
        (r"(?s)a", "inline flags"),
    ],
)
def test_unsupported_regex_features(pattern: str, feature: str) -> None:
    with pytest.raises(rx.RegexError) as e:
        rx.parse(pattern)
    assert "unsupported regex feature" in e.value.msg and feature in e.value.msg


@pytest.mark.parametrize("pattern", [r"a**", r"(", r")", r"[a", r"*a", r"a{3,2}", r"\x4"])
def test_bad_regexes(pattern: str) -> None:
    with pytest.raises(rx.RegexError):
        rx.parse(pattern)


def test_regex_state_bound() -> None:
    with pytest.raises(automata.AutomatonTooLarge):
        automata.build_regex_dfa([(0, rx.parse("a.{0,30}b.{0,30}c"))], max_states=1000)


def test_glob() -> None:
    g = rx.to_python(rx.glob_to_regex("/img/*.png"))
    assert g.search(b"/img/a.png") and not g.search(b"/img/a/b.png")
    g2 = rx.to_python(rx.glob_to_regex("/img/**.png"))
    assert g2.search(b"/img/a/b.png")


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        (b"/", b"/"),
        (b"/a/./b/../c", b"/a/c"),
        (b"/a//b", b"/a/b"),
        (b"/a/b/", b"/a/b/"),
        (b"/a/b/..", b"/a/"),
        (b"/a/.", b"/a/"),
        (b"/%61%2e%2E/b", b"/a../b"),
        (b"/%2e%2e/x", b"/x"),
        (b"/a%2fb", b"/a%2Fb"),
        (b"/%7e%7Eu", b"/~~u"),
        (b"/%c3%a9", b"/%C3%A9"),
    ],
)
def test_normalize_path(raw: bytes, norm: bytes) -> None:
    assert ev.normalize_path(raw) == norm


try:
    from l7ctl import httpparse
except ImportError:  # pragma: no cover
    httpparse = None  # type: ignore[assignment]

SEG = st.sampled_from(
    ["a", "b", ".", "..", "%2e", "%2E%2e", "%41", "%2f", "%7e", "", "x.png", "%c3%a9", "~"]
)


@pytest.mark.skipif(httpparse is None, reason="l7ctl._http not built")
@settings(max_examples=300, deadline=None)
@given(st.lists(SEG, min_size=1, max_size=6))
def test_normalizer_agrees_with_c_parser(segs: list[str]) -> None:
    assert httpparse is not None
    raw = ("/" + "/".join(segs)).encode()
    msgs = httpparse.parse_requests(b"GET " + raw + b" HTTP/1.1\r\nHost: h\r\n\r\n")
    m = msgs[0]
    if isinstance(m, httpparse.Refusal):  # e.g. ".." above the root
        return
    assert m.path == ev.normalize_path(raw), raw
