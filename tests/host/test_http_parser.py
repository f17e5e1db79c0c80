"""Unit tests of the C HTTP parser (kmod/core/http.c) through l7ctl._http.

One test per item of the strictness list of the architecture notes, one per
form the RFC lets us accept, and the routing results (normalized path, host,
keep-alive, framing).  docs/http.md is the prose version of this file.
"""

from __future__ import annotations

import io
import json

import pytest

from l7ctl import httpparse
from l7ctl.httpparse import Limits, Refusal, Request, Response

CRLF = b"\r\n"


def reqs(data: bytes, **kw: object) -> list[Request | Refusal]:
    out = httpparse.parse_requests(data, **kw)  # type: ignore[arg-type]
    # every result is independent of how the bytes arrive
    assert httpparse.parse_requests(data, split=1, **kw) == out  # type: ignore[arg-type]
    return out


def ok(data: bytes, **kw: object) -> Request:
    out = reqs(data, **kw)
    assert len(out) == 1, out
    assert isinstance(out[0], Request), out
    return out[0]


def refused(data: bytes, status: int = 400, error: str | None = None, **kw: object) -> Refusal:
    out = reqs(data, **kw)
    assert out and isinstance(out[-1], Refusal), out
    r = out[-1]
    assert r.status == status, r
    if error is not None:
        assert error in r.error, r
    return r


def get(target: bytes = b"/", *fields: bytes, version: bytes = b"HTTP/1.1") -> bytes:
    head = b"GET " + target + b" " + version + CRLF
    if not any(f.lower().startswith(b"host:") for f in fields) and version == b"HTTP/1.1":
        fields = (b"Host: example.com", *fields)
    return head + b"".join(f + CRLF for f in fields) + CRLF


def post(body_fields: list[bytes], body: bytes = b"") -> bytes:
    head = b"POST /submit HTTP/1.1\r\nHost: example.com\r\n"
    return head + b"".join(f + CRLF for f in body_fields) + CRLF + body


# ---------------------------------------------------------------- framing


def test_content_length_with_transfer_encoding() -> None:
    refused(
        post([b"Content-Length: 5", b"Transfer-Encoding: chunked"], b"0\r\n\r\n"),
        400,
        "Content-Length with Transfer-Encoding",
    )
    refused(
        post([b"Transfer-Encoding: chunked", b"Content-Length: 5"], b"0\r\n\r\n"),
        400,
        "Content-Length with Transfer-Encoding",
    )


@pytest.mark.parametrize(
    "fields",
    [
        [b"Content-Length: 5", b"Content-Length: 6"],
        [b"Content-Length: 5, 6"],
        [b"Content-Length: 5", b"Content-Length: 5, 7"],
    ],
)
def test_differing_content_length(fields: list[bytes]) -> None:
    refused(post(fields, b"hello"), 400, "conflicting Content-Length")


@pytest.mark.parametrize(
    "value",
    [b"+5", b"-5", b"5a", b"", b"0x5", b"5 5", b"5.0", b"5,", b",5", b"1e3", b"\xd9\xa5"],
)
def test_malformed_content_length(value: bytes) -> None:
    refused(post([b"Content-Length: " + value], b"hello"), 400, "Content-Length")


def test_content_length_overflow() -> None:
    refused(post([b"Content-Length: 99999999999999999999"]), 400, "too large")
    refused(post([b"Content-Length: 18446744073709551616"]), 400, "too large")
    # the largest accepted length is 2^62 - 1
    r = reqs(post([b"Content-Length: 4611686018427387903"]))
    assert isinstance(r[0], Refusal) and r[0].error == "incomplete body"
    refused(post([b"Content-Length: 4611686018427387904"]), 400, "too large")


@pytest.mark.parametrize(
    "value",
    [b"gzip, chunked", b"chunked, gzip", b"identity", b"deflate", b"chunked;q=1", b"x"],
)
def test_unknown_transfer_coding_is_501(value: bytes) -> None:
    refused(post([b"Transfer-Encoding: " + value], b"0\r\n\r\n"), 501, "unknown transfer coding")


def test_chunked_twice() -> None:
    refused(post([b"Transfer-Encoding: chunked, chunked"], b"0\r\n\r\n"), 400, "twice")
    refused(
        post([b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"], b"0\r\n\r\n"),
        400,
        "twice",
    )


@pytest.mark.parametrize("value", [b"", b"chunked,", b", chunked", b"chunked, ,chunked"])
def test_empty_transfer_coding(value: bytes) -> None:
    refused(post([b"Transfer-Encoding: " + value], b"0\r\n\r\n"), 400, "empty transfer coding")


def test_transfer_encoding_in_http10() -> None:
    data = b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    refused(data, 400, "HTTP/1.0")


@pytest.mark.parametrize(
    "size",
    [b"0x5", b" 5", b"5 ", b"-5", b"", b"g", b"+5", b"5\t", b"1fffffffffffffffff"],
)
def test_bad_chunk_size(size: bytes) -> None:
    refused(post([b"Transfer-Encoding: chunked"], size + b"\r\nhello\r\n0\r\n\r\n"), 400)


def test_chunk_size_overflow() -> None:
    r = refused(post([b"Transfer-Encoding: chunked"], b"10000000000000000\r\n"), 400)
    assert r.error == "chunk size too large"


@pytest.mark.parametrize("after", [b"X\r\n0\r\n\r\n", b"\n0\r\n\r\n", b"\rX0\r\n\r\n"])
def test_missing_crlf_after_chunk_data(after: bytes) -> None:
    refused(
        post([b"Transfer-Encoding: chunked"], b"5\r\nhello" + after),
        400,
        "missing CRLF after chunk data",
    )


# ---------------------------------------------------------------- bare CR / LF


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\n",
        b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\nb\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\nX: b\r\n\r\n",
    ],
)
def test_bare_lf_in_head(data: bytes) -> None:
    refused(data, 400, "bare LF")


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\rHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\rX",
        b"\rGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    ],
)
def test_bare_cr_in_head(data: bytes) -> None:
    refused(data, 400, "bare CR")


def test_bare_cr_inside_value() -> None:
    refused(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400, "bare CR")


@pytest.mark.parametrize(
    "body",
    [
        b"5\nhello\r\n0\r\n\r\n",
        b"5;a=b\nhello\r\n0\r\n\r\n",
        b"5\r\nhello\r\n0\n\r\n",
        b"5\r\nhello\r\n0\r\nX: y\n\r\n",
        b"5\r\nhello\r\n0\r\n\n",
    ],
)
def test_bare_lf_in_chunk_lines(body: bytes) -> None:
    refused(post([b"Transfer-Encoding: chunked"], body), 400, "bare LF")


@pytest.mark.parametrize(
    "body",
    [b"5\rhello\r\n0\r\n\r\n", b"5\r\nhello\r\n0\r\nX: y\rz\r\n\r\n", b"5\r\nhello\r\n0\r\n\rX"],
)
def test_bare_cr_in_chunk_lines(body: bytes) -> None:
    refused(post([b"Transfer-Encoding: chunked"], body), 400)


# ---------------------------------------------------------------- fields


def test_obs_fold() -> None:
    refused(get(b"/", b"X-A: a", b"  b"), 400, "obs-fold")
    refused(get(b"/", b"X-A: a", b"\tb"), 400, "obs-fold")


def test_obs_fold_in_trailer() -> None:
    body = b"0\r\nX: a\r\n b\r\n\r\n"
    refused(post([b"Transfer-Encoding: chunked"], body), 400, "obs-fold")


@pytest.mark.parametrize("name", [b"Host ", b"Host\t", b"X-A "])
def test_whitespace_before_colon(name: bytes) -> None:
    refused(get(b"/", b"Host: a", name + b": v"), 400, "whitespace before colon")


def test_whitespace_before_colon_in_trailer() -> None:
    refused(
        post([b"Transfer-Encoding: chunked"], b"0\r\nX : y\r\n\r\n"), 400, "whitespace before colon"
    )


@pytest.mark.parametrize("first", [b" Host: a", b"\tHost: a"])
def test_whitespace_before_first_field(first: bytes) -> None:
    refused(b"GET / HTTP/1.1\r\n" + first + b"\r\n\r\n", 400, "whitespace before first header")


def test_empty_field_name() -> None:
    refused(get(b"/", b": v"), 400, "empty field name")


@pytest.mark.parametrize(
    "name", [b"X(a)", b"X/a", b"X@a", b'X"a', b"X{a}", b"X\xe9", b"X\x00a", b"X[a]", b"X=a"]
)
def test_non_token_field_name(name: bytes) -> None:
    refused(get(b"/", name + b": v"), 400, "field name")


@pytest.mark.parametrize("ctl", [b"\x00", b"\x01", b"\x08", b"\x0b", b"\x0c", b"\x1f", b"\x7f"])
def test_ctl_in_value(ctl: bytes) -> None:
    refused(get(b"/", b"X-A: a" + ctl + b"b"), 400, "invalid character in field value")
    refused(get(b"/", b"X-A: " + ctl), 400, "invalid character in field value")


def test_ctl_in_trailer_value() -> None:
    refused(
        post([b"Transfer-Encoding: chunked"], b"0\r\nX: a\x00\r\n\r\n"),
        400,
        "invalid character in field value",
    )


# ---------------------------------------------------------------- request line


@pytest.mark.parametrize(
    "line",
    [
        b"GET  / HTTP/1.1",
        b"GET /  HTTP/1.1",
        b"GET / HTTP/1.1 ",
        b" GET / HTTP/1.1",
        b"GET\t/ HTTP/1.1",
        b"GET /\tHTTP/1.1",
        b"GET / http/1.1",
        b"GET / HTTP/1.10",
        b"GET / HTTP/11",
        b"GET / HTTP/1.",
        b"GET / HTTP/a.b",
        b"GET /",
        b"GET / ",
        b"GET",
        b"/ HTTP/1.1",
        b"G(T / HTTP/1.1",
        b"GET / HTTP/1.1 extra",
    ],
)
def test_malformed_request_line(line: bytes) -> None:
    refused(line + b"\r\nHost: a\r\n\r\n", 400)


@pytest.mark.parametrize("junk", [b"z", b"xx", b"HTTP/1.1"])
def test_version_with_junk_before_it_cut_anywhere(junk: bytes) -> None:
    """Regression (found by fuzz_request): with the bytes cut right after
    junk at the start of the version, the whole-word "HTTP/1.x" fast path
    used to match at the resume point and skip the length check."""
    data = b"GET / " + junk + b"HTTP/1.0\r\nHost: a\r\n\r\n"
    whole = httpparse.parse_requests(data)
    assert whole == [Refusal(400, "malformed HTTP version", 6)]
    for cut in range(1, len(data)):
        assert httpparse.parse_requests(data, split=[cut]) == whole, cut


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/1.2", b"HTTP/0.9", b"HTTP/3.0"])
def test_unsupported_version_is_505(version: bytes) -> None:
    refused(b"GET / " + version + b"\r\nHost: a\r\n\r\n", 505, "HTTP version not supported")


def test_h2_preface_is_505() -> None:
    refused(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505)


@pytest.mark.parametrize(
    "target",
    [
        b"/a\\b",
        b'/a"b',
        b"/a<b",
        b"/a>b",
        b"/a{b",
        b"/a|b",
        b"/a^b",
        b"/a`b",
        b"/a#b",
        b"/a\xe9",
        b"/a\x7f",
        b"/a[b",
        b"/a?x=[1]",
    ],
)
def test_invalid_character_in_target(target: bytes) -> None:
    refused(get(target), 400, "invalid character in request target")


@pytest.mark.parametrize("target", [b"/%zz", b"/%4", b"/a%", b"/a%g0", b"/?a=%", b"/?a=%2"])
def test_invalid_percent_encoding(target: bytes) -> None:
    refused(get(target), 400, "invalid percent-encoding")


def test_nul_escape_in_path() -> None:
    refused(get(b"/a%00b"), 400, "%00 in path")
    # the query is not decoded by the switch: %00 there is passed on
    assert ok(get(b"/a?x=%00")).query == b"x=%00"


@pytest.mark.parametrize("target", [b"/..", b"/../a", b"/a/../..", b"/%2e%2e/x", b"/a/./../../b"])
def test_path_climbing_above_root(target: bytes) -> None:
    refused(get(target), 400, "path climbs above root")


@pytest.mark.parametrize(
    "data, error",
    [
        (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", "asterisk-form only with OPTIONS"),
        (b"CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n", "CONNECT needs authority-form"),
        (b"CONNECT a.com HTTP/1.1\r\nHost: a\r\n\r\n", "missing port"),
        (b"GET a.com:80 HTTP/1.1\r\nHost: a\r\n\r\n", "invalid request target"),
        (b"GET ftp://a.com/ HTTP/1.1\r\nHost: a\r\n\r\n", "invalid request target"),
        (b"GET http://u:p@a.com/ HTTP/1.1\r\nHost: a\r\n\r\n", "userinfo"),
        (b"GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", "empty host"),
        (b"GET http:// HTTP/1.1\r\nHost: a\r\n\r\n", "invalid request target"),
        (b"GET http://a.com:x/ HTTP/1.1\r\nHost: a\r\n\r\n", "invalid port"),
        (b"GET http://[::1/ HTTP/1.1\r\nHost: a\r\n\r\n", "invalid IPv6"),
    ],
)
def test_bad_target_forms(data: bytes, error: str) -> None:
    refused(data, 400, error)


# ---------------------------------------------------------------- Host


def test_http11_requires_host() -> None:
    refused(b"GET / HTTP/1.1\r\n\r\n", 400, "missing Host")
    refused(b"GET http://a.com/ HTTP/1.1\r\n\r\n", 400, "missing Host")


def test_duplicate_host() -> None:
    refused(get(b"/", b"Host: a", b"Host: a"), 400, "duplicate Host")
    refused(get(b"/", b"Host: a", b"host: b", version=b"HTTP/1.0"), 400, "duplicate Host")


@pytest.mark.parametrize(
    "value",
    [
        b"a b",
        b"a/b",
        b"a@b",
        b"%41",
        b"a:65536",
        b"a:123456",
        b"a:-1",
        b"a:8x",
        b"[::1",
        b"[::1]x",
        b"[1:2]",
        b"[::g]",
        b"[1:2:3:4:5:6:7:8:9]",
        b"[1::2::3]",
        b"[::1.2.3]",
        b"[::1.2.3.256]",
        b"[::01.2.3.4]",
        b"[fe80::1%25eth0]",
        b"[v1.x]",
        b"a" * 256,
    ],
)
def test_invalid_host(value: bytes) -> None:
    refused(get(b"/", b"Host: " + value), 400)


@pytest.mark.parametrize(
    "value, host",
    [
        (b"Example.COM", b"example.com"),
        (b"example.com:8080", b"example.com"),
        (b"example.com:", b"example.com"),
        (b"1.2.3.4:80", b"1.2.3.4"),
        (b"[::1]", b"[::1]"),
        (b"[2001:DB8::1]:443", b"[2001:db8::1]"),
        (b"[::ffff:1.2.3.4]", b"[::ffff:1.2.3.4]"),
        (b"[1:2:3:4:5:6:7:8]", b"[1:2:3:4:5:6:7:8]"),
        (b"[1:2:3:4:5:6:7::]", b"[1:2:3:4:5:6:7::]"),
        (b"[1:2:3:4:5:6:1.2.3.4]", b"[1:2:3:4:5:6:1.2.3.4]"),
        (b"xn--bcher-kva.example", b"xn--bcher-kva.example"),
        (b"a_b-c~d", b"a_b-c~d"),
        (b"", b""),
        (b"a" * 255, b"a" * 255),
    ],
)
def test_host_lowercased_without_port(value: bytes, host: bytes) -> None:
    assert ok(get(b"/", b"Host: " + value)).host == host


def test_host_ows_trimmed() -> None:
    assert ok(get(b"/", b"Host: \t A.b \t")).host == b"a.b"


def test_http10_host_optional() -> None:
    r = ok(b"GET / HTTP/1.0\r\n\r\n")
    assert r.host is None and r.version == "HTTP/1.0"


def test_absolute_form_host_takes_precedence() -> None:
    r = ok(b"GET http://WWW.Example.com:8080/a/../b?q HTTP/1.1\r\nHost: other.org\r\n\r\n")
    assert (r.form, r.host, r.path, r.query) == ("absolute", b"www.example.com", b"/b", b"q")


@pytest.mark.parametrize(
    "target, path, query",
    [
        (b"http://a.com", b"/", None),
        (b"HTTPS://a.com?x=1", b"/", b"x=1"),
        (b"http://a.com/", b"/", None),
        (b"http://[::1]:80/x", b"/x", None),
    ],
)
def test_absolute_form(target: bytes, path: bytes, query: bytes | None) -> None:
    r = ok(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (r.path, r.query) == (path, query)


def test_connect_authority_form() -> None:
    r = ok(b"CONNECT Example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    assert (r.form, r.host, r.path, r.framing) == ("authority", b"example.com", b"", "none")


@pytest.mark.parametrize(
    "fields, body",
    [
        (b"Content-Length: 5\r\n", b"hello"),
        (b"Content-Length: 0\r\n", b""),
        (b"content-length: 3, 3\r\n", b"abc"),
        (b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
        (b"Transfer-Encoding: Chunked\r\nX-After: 1\r\n", b"0\r\n\r\n"),
    ],
)
def test_connect_with_content_is_refused(fields: bytes, body: bytes) -> None:
    """RFC 9110 9.3.6: CONNECT has no content.  A parser that reads a body by
    these fields and one that starts the tunnel after the head disagree on
    where the next message starts (h11 reads the body: test_http_props)."""
    head = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n" + fields + b"\r\n"
    r = refused(head + body, 400, "CONNECT with Content-Length or Transfer-Encoding")
    # refused at the end of the head, before any of its bytes is taken as a body
    assert r.offset == len(head) - 2
    # the same in HTTP/1.0 (Content-Length only: TE in 1.0 is refused anyway)
    if fields.startswith(b"Content-Length"):
        refused(head.replace(b"HTTP/1.1", b"HTTP/1.0") + body, 400, "CONNECT with")


def test_other_methods_keep_their_content() -> None:
    # only CONNECT is concerned: a POST or an extension method with a body is fine
    r = ok(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nab")
    assert (r.framing, r.body_length) == ("length", 2)
    r = ok(b"CONNECTX / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nab")
    assert (r.method, r.framing) == (b"CONNECTX", "length")


def test_options_asterisk() -> None:
    r = ok(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
    assert (r.form, r.path, r.target) == ("asterisk", b"*", b"*")


# ---------------------------------------------------------------- accepted forms


@pytest.mark.parametrize("method", [b"PROPFIND", b"M-SEARCH", b"BREW", b"get", b"X!#$%&'*+.^_`|~1"])
def test_extension_methods(method: bytes) -> None:
    r = ok(method + b" / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert r.method == method


def test_obs_text_in_values() -> None:
    r = ok(get(b"/", b"X-Name: caf\xe9 \x80\xff"))
    assert r.headers[-1] == (b"X-Name", b"caf\xe9 \x80\xff")


def test_tabs_in_ows() -> None:
    r = ok(get(b"/", b"X-A:\t \tv a\tl\t \t"))
    assert r.headers[-1] == (b"X-A", b"v a\tl")


def test_empty_value() -> None:
    r = ok(get(b"/", b"X-A:", b"X-B: \t "))
    assert r.headers[-2:] == [(b"X-A", b""), (b"X-B", b"")]


def test_chunk_extensions_and_trailers() -> None:
    body = (
        b'5;name=val;flag ; q="a \\"b\\" c"\r\nhello\r\n'
        b"6 ; x = y\r\n world\r\n"
        b"0;last\r\nX-Trailer: t\r\nX-Other:\tv\r\n\r\n"
    )
    r = ok(post([b"Transfer-Encoding: chunked"], body))
    assert (r.framing, r.body_length, r.consumed) == ("chunked", 11, r.head_length + len(body))


@pytest.mark.parametrize(
    "ext",
    [b";", b"; ", b";=v", b";a=", b';a="x', b";a=b c", b";a b", b';a="\x01"', b";a;", b"; a"],
)
def test_invalid_chunk_extension(ext: bytes) -> None:
    body = b"5" + ext + b"\r\nhello\r\n0\r\n\r\n"
    if ext == b"; a":  # BWS after ';' is allowed
        assert ok(post([b"Transfer-Encoding: chunked"], body)).body_length == 5
        return
    refused(post([b"Transfer-Encoding: chunked"], body), 400)


def test_chunked_case_insensitive_and_upper_hex() -> None:
    body = b"A\r\n0123456789\r\n00\r\n\r\n"
    r = ok(post([b"Transfer-Encoding: ChunKed"], body))
    assert r.body_length == 10


@pytest.mark.parametrize("value, n", [(b"0005", 5), (b"00", 0), (b"5, 5", 5), (b"5,5 ,  5", 5)])
def test_content_length_forms(value: bytes, n: int) -> None:
    r = ok(post([b"Content-Length: " + value], b"x" * n))
    assert (r.framing, r.content_length, r.body_length) == ("length", n, n)


def test_repeated_identical_content_length() -> None:
    r = ok(post([b"Content-Length: 3", b"content-length: 003"], b"abc"))
    assert r.body_length == 3


def test_leading_empty_lines_ignored() -> None:
    r = ok(b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert r.consumed == 4 + 27


def test_trailing_empty_lines_are_not_a_message() -> None:
    assert len(reqs(get() + b"\r\n\r\n")) == 1


# ---------------------------------------------------------------- normalized path


@pytest.mark.parametrize(
    "target, path",
    [
        (b"/", b"/"),
        (b"/a/b/../c", b"/a/c"),
        (b"/a/./b", b"/a/b"),
        (b"/a/b/..", b"/a/"),
        (b"/a/b/.", b"/a/b/"),
        (b"/a/..", b"/"),
        (b"/.", b"/"),
        (b"/./", b"/"),
        (b"/...", b"/..."),
        (b"/..a/a..", b"/..a/a.."),
        (b"/%7euser", b"/~user"),
        (b"/%41%62%2D%2e%5F%7E", b"/Ab-._~"),
        (b"/a%2fb", b"/a%2Fb"),
        (b"/a%2Fb/../c", b"/c"),
        (b"/a/%2e%2E/b", b"/b"),
        (b"/a/.%2e/b", b"/b"),
        (b"/a/%2e/b", b"/a/b"),
        (b"/%c3%a9t%C3%A9", b"/%C3%A9t%C3%A9"),
        (b"/a%20b+c", b"/a%20b+c"),
        (b"/a%3fb%23", b"/a%3Fb%23"),
        (b"/a%25%2e", b"/a%25."),
        (b"//a///b", b"/a/b"),
        (b"/a//../b", b"/b"),
        (b"/a/b//", b"/a/b/"),
        (b"//", b"/"),
        (b"/a/b?c/../d", b"/a/b"),
        (b"/:@!$&'()*+,;=", b"/:@!$&'()*+,;="),
    ],
)
def test_normalized_path(target: bytes, path: bytes) -> None:
    r = ok(get(target))
    assert r.path == path
    assert r.target == target


@pytest.mark.parametrize(
    "target, path",
    [(b"//a///b", b"//a///b"), (b"/a//../b", b"/a/b"), (b"/a//b/..", b"/a//")],
)
def test_normalized_path_without_merging(target: bytes, path: bytes) -> None:
    assert ok(get(target), limits=Limits(merge_slashes=False)).path == path


@pytest.mark.parametrize(
    "target, query",
    [(b"/?", b""), (b"/?a=1&b=%20", b"a=1&b=%20"), (b"/p?a?b/c:@", b"a?b/c:@"), (b"/p", None)],
)
def test_query(target: bytes, query: bytes | None) -> None:
    assert ok(get(target)).query == query


# ---------------------------------------------------------------- keep-alive, upgrade


@pytest.mark.parametrize(
    "version, fields, keep_alive",
    [
        (b"HTTP/1.1", [], True),
        (b"HTTP/1.1", [b"Connection: close"], False),
        (b"HTTP/1.1", [b"Connection: Keep-Alive, CLOSE"], False),
        (b"HTTP/1.1", [b"Connection: foo", b"Connection: bar,close"], False),
        (b"HTTP/1.1", [b"Connection: closed"], True),
        (b"HTTP/1.1", [b"Connection: keep-alive"], True),
        (b"HTTP/1.0", [], False),
        (b"HTTP/1.0", [b"Connection: keep-alive"], True),
        (b"HTTP/1.0", [b"Connection: Keep-Alive"], True),
        (b"HTTP/1.0", [b"Connection: keep-alive, close"], False),
        (b"HTTP/1.0", [b"Connection: keep-alives"], False),
    ],
)
def test_keep_alive(version: bytes, fields: list[bytes], keep_alive: bool) -> None:
    assert ok(get(b"/", *fields, version=version)).keep_alive is keep_alive


def test_upgrade() -> None:
    assert ok(get(b"/", b"Connection: Upgrade", b"Upgrade: websocket")).upgrade
    assert not ok(get(b"/", b"Upgrade: websocket")).upgrade
    assert not ok(get(b"/", b"Connection: upgrade")).upgrade


# ---------------------------------------------------------------- pipelining


def test_pipelined_requests() -> None:
    a = get(b"/a")
    b = post([b"Content-Length: 5"], b"hello")
    c = post([b"Transfer-Encoding: chunked"], b"3\r\nabc\r\n0\r\n\r\n")
    d = get(b"/d", version=b"HTTP/1.0")
    out = reqs(a + b + c + d)
    assert [type(m) for m in out] == [Request] * 4
    assert [m.offset for m in out] == [0, len(a), len(a + b), len(a + b + c)]  # type: ignore[union-attr]
    assert [m.consumed for m in out] == [len(a), len(b), len(c), len(d)]  # type: ignore[union-attr]
    assert [m.body_length for m in out] == [0, 5, 3, 0]  # type: ignore[union-attr]


def test_pipeline_stops_at_first_refusal() -> None:
    a = get(b"/a")
    out = reqs(a + b"GET /b HTTP/1.1\r\n\r\n" + get(b"/c"))
    assert [type(m) for m in out] == [Request, Refusal]
    assert out[1].offset == len(a) + 17  # the final CRLF  # type: ignore[union-attr]


def test_refusal_offsets() -> None:
    assert refused(b"GET / HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n").offset == 28
    assert refused(b"GET /a b HTTP/1.1\r\n\r\n").offset == 8


def test_incomplete_messages() -> None:
    refused(b"GET / HTTP/1.1\r\nHost: a\r\n", 400, "incomplete head")
    refused(post([b"Content-Length: 5"], b"abc"), 400, "incomplete body")
    refused(post([b"Transfer-Encoding: chunked"], b"5\r\nabc"), 400, "incomplete body")
    refused(post([b"Transfer-Encoding: chunked"], b"0\r\n"), 400, "incomplete body")
    assert reqs(b"") == []


# ---------------------------------------------------------------- limits


def test_default_limits() -> None:
    lim = Limits()
    assert (lim.request_line, lim.header_line, lim.fields, lim.head) == (8192, 8192, 100, 65536)


def test_request_line_limit() -> None:
    lim = Limits(request_line=64)
    line = b"GET /" + b"a" * (64 - 14) + b" HTTP/1.1"
    assert len(line) == 64
    ok(line + b"\r\nHost: a\r\n\r\n", limits=lim)
    line = b"GET /" + b"a" * (65 - 14) + b" HTTP/1.1"
    refused(line + b"\r\nHost: a\r\n\r\n", 414, "request line too long", limits=lim)
    # refused as soon as the limit is passed, without waiting for the line end
    refused(b"GET /" + b"a" * 100, 414, limits=lim)


def test_default_request_line_limit() -> None:
    ok(get(b"/" + b"a" * (8192 - 14)))
    refused(get(b"/" + b"a" * (8192 - 13)), 414)


def test_header_line_limit() -> None:
    lim = Limits(header_line=32)
    ok(get(b"/", b"X: " + b"v" * 29), limits=lim)
    refused(get(b"/", b"X: " + b"v" * 30), 431, "header line too long", limits=lim)
    refused(get(b"/", b"X" * 40 + b": v"), 431, "header line too long", limits=lim)
    ok(get(b"/", b"X: " + b"v" * 8189))
    refused(get(b"/", b"X: " + b"v" * 8190), 431)


def test_field_count_limit() -> None:
    fields = [b"X-%d: v" % i for i in range(99)]
    ok(get(b"/", *fields))
    refused(get(b"/", *fields, b"X-last: v"), 431, "too many header fields")
    ok(get(b"/", b"X: 1", b"X: 2"), limits=Limits(fields=3))
    refused(get(b"/", b"X: 1", b"X: 2", b"X: 3"), 431, limits=Limits(fields=3))


def test_head_limit() -> None:
    data = get(b"/", b"X: " + b"v" * 40)
    ok(data, limits=Limits(head=len(data)))
    refused(data, 431, "head too large", limits=Limits(head=len(data) - 1))
    big = get(b"/", *[b"X-%d: " % i + b"v" * 8000 for i in range(9)])
    refused(big, 431, "head too large")


def test_trailer_limits() -> None:
    trailers = b"".join(b"X-%d: v\r\n" % i for i in range(4))
    body = b"0\r\n" + trailers + b"\r\n"
    ok(post([b"Transfer-Encoding: chunked"], body), limits=Limits(fields=4))
    refused(
        post([b"Transfer-Encoding: chunked"], body),
        431,
        "too many trailer fields",
        limits=Limits(fields=3),
    )
    long_tr = b"0\r\nX: " + b"v" * 100 + b"\r\n\r\n"
    refused(
        post([b"Transfer-Encoding: chunked"], long_tr),
        431,
        "trailer line too long",
        limits=Limits(header_line=64),
    )


def test_chunk_line_limit() -> None:
    body = b"5;" + b"a" * 100 + b"\r\nhello\r\n0\r\n\r\n"
    refused(
        post([b"Transfer-Encoding: chunked"], body),
        400,
        "chunk line too long",
        limits=Limits(header_line=64),
    )


# ---------------------------------------------------------------- responses


def resps(data: bytes, **kw: object) -> list[Response | Refusal]:
    out = httpparse.parse_responses(data, **kw)  # type: ignore[arg-type]
    assert httpparse.parse_responses(data, split=1, **kw) == out  # type: ignore[arg-type]
    return out


def resp_ok(data: bytes, **kw: object) -> Response:
    out = resps(data, **kw)
    assert len(out) == 1 and isinstance(out[0], Response), out
    return out[0]


def test_response_content_length() -> None:
    r = resp_ok(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    assert (r.status, r.reason, r.framing, r.body_length, r.keep_alive) == (
        200,
        b"OK",
        "length",
        5,
        True,
    )


def test_response_chunked() -> None:
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    r = resp_ok(data)
    assert (r.framing, r.body_length, r.consumed) == ("chunked", 5, len(data))


def test_response_close_delimited() -> None:
    data = b"HTTP/1.1 200 OK\r\n\r\nhello world\r\n\r\nHTTP/1.1 200 OK\r\n"
    r = resp_ok(data)
    assert (r.framing, r.keep_alive, r.consumed) == ("close", False, len(data))


@pytest.mark.parametrize("status", [204, 304])
def test_response_without_body(status: int) -> None:
    data = b"HTTP/1.1 %d X\r\nContent-Length: 5\r\n\r\n" % status
    out = resps(data + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert [m.framing for m in out] == ["none", "length"]  # type: ignore[union-attr]
    assert out[0].consumed == len(data)  # type: ignore[union-attr]


def test_response_to_head() -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n"
    r = resp_ok(data, request_method=b"HEAD")
    assert (r.framing, r.body_length, r.consumed, r.keep_alive) == ("none", 0, len(data), True)
    r = resp_ok(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", request_method=b"HEAD")
    assert r.framing == "none"


def test_interim_responses() -> None:
    data = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    )
    out = resps(data)
    assert [m.status for m in out] == [100, 103, 200]  # type: ignore[union-attr]
    assert [m.framing for m in out] == ["none", "none", "length"]  # type: ignore[union-attr]


def test_switching_protocols_is_a_tunnel() -> None:
    data = (
        b"HTTP/1.1 101 Switching\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello"
    )
    out = resps(data)
    assert len(out) == 1
    assert (out[0].framing, out[0].upgrade, out[0].keep_alive) == ("tunnel", True, False)  # type: ignore[union-attr]


def test_connect_2xx_is_a_tunnel() -> None:
    head = b"HTTP/1.1 200 Connection established\r\n\r\n"
    r = resp_ok(head + b"xyz", request_method=b"CONNECT")
    assert (r.framing, r.consumed) == ("tunnel", len(head))
    r2 = resps(b"HTTP/1.1 407 Auth\r\nContent-Length: 0\r\n\r\n", request_method=b"CONNECT")
    assert r2[0].framing == "length"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "version, fields, keep_alive",
    [
        (b"HTTP/1.1", b"Content-Length: 0\r\n", True),
        (b"HTTP/1.1", b"Content-Length: 0\r\nConnection: close\r\n", False),
        (b"HTTP/1.0", b"Content-Length: 0\r\n", False),
        (b"HTTP/1.0", b"Content-Length: 0\r\nConnection: keep-alive\r\n", True),
    ],
)
def test_response_keep_alive(version: bytes, fields: bytes, keep_alive: bool) -> None:
    r = resp_ok(version + b" 200 OK\r\n" + fields + b"\r\n")
    assert r.keep_alive is keep_alive


@pytest.mark.parametrize(
    "data",
    [b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n"],
)
def test_response_without_reason(data: bytes) -> None:
    assert resp_ok(data).reason == b""


def test_response_reason_obs_text() -> None:
    r = resp_ok(b"HTTP/1.1 200 \xe9t\xe9 ok\r\nContent-Length: 0\r\n\r\n")
    assert r.reason == b"\xe9t\xe9 ok"


@pytest.mark.parametrize(
    "data, error",
    [
        (b"HTTP/1.1 20 OK\r\n\r\n", "malformed status code"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "malformed status code"),
        (b"HTTP/1.1 099 OK\r\n\r\n", "malformed status code"),
        (b"HTTP/1.1 600 OK\r\n\r\n", "malformed status code"),
        (b"HTTP/2 200 OK\r\n\r\n", "malformed HTTP version"),
        (b"HTTP/2.0 200 OK\r\n\r\n", "HTTP version not supported"),
        (b"HTTP/1.1  200 OK\r\n\r\n", "malformed status code"),
        (b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", "bare LF"),
        (b"HTTP/1.1 200 O\x01K\r\n\r\n", "invalid character in reason phrase"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "malformed Content-Length"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "Content-Length with Transfer-Encoding",
        ),
        (b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "HTTP/1.0"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "unknown transfer coding"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc", "incomplete body"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX", "missing CRLF"),
        (b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", "obs-fold"),
    ],
)
def test_response_refusals_are_502(data: bytes, error: str) -> None:
    out = resps(data)
    assert isinstance(out[-1], Refusal), out
    assert (out[-1].status, error in out[-1].error) == (502, True), out[-1]


# ---------------------------------------------------------------- lookups


def test_header_lookup_case_insensitive() -> None:
    data = get(b"/", b"X-Tag: a", b"x-tag: b", b"X-TAG:c", b"X-Tags: no")
    assert httpparse.header_values(data, b"x-TaG") == [b"a", b"b", b"c"]
    assert httpparse.header_values(data, b"missing") == []


@pytest.mark.parametrize(
    "fields, name, value",
    [
        ([b"Cookie: a=1; b=2"], b"b", b"2"),
        ([b"Cookie: a=1; b=2"], b"a", b"1"),
        ([b'Cookie: a=1;b=2 ;c="q"'], b"c", b'"q"'),
        ([b"Cookie: a=1", b"Cookie: sid=xyz"], b"sid", b"xyz"),
        ([b"Cookie: ab=1; a=2"], b"a", b"2"),
        ([b"Cookie: a=; b=2"], b"a", b""),
        ([b"Cookie: A=1"], b"a", None),
        ([b"Cookie: a"], b"a", None),
        ([b"X-Cookie: a=1"], b"a", None),
        ([b"Cookie: x=a=b"], b"x", b"a=b"),
    ],
)
def test_cookie_lookup(fields: list[bytes], name: bytes, value: bytes | None) -> None:
    assert httpparse.cookie(get(b"/", *fields), name) == value


# ---------------------------------------------------------------- l7ctl parse


def test_run_json_lines() -> None:
    data = (
        b"GET /a/../b%7e?x=1 HTTP/1.1\r\nHost: Ex.COM:80\r\nX: caf\xe9\r\n\r\n"
        b"POST /p HTTP/1.1\r\nHost: e\r\nContent-Length: 2\r\n\r\nhi"
    )
    buf = io.StringIO()
    assert httpparse.run(data, buf) == 0
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert list(lines[0]) == [
        "ok",
        "method",
        "target",
        "path",
        "query",
        "host",
        "version",
        "headers",
        "framing",
        "body_length",
        "keep_alive",
        "consumed",
    ]
    assert lines[0]["path"] == "/b~" and lines[0]["host"] == "ex.com"
    assert lines[0]["headers"][1] == ["X", "caf\u00e9"]
    assert lines[1]["framing"] == "length" and lines[1]["body_length"] == 2
    assert lines[1]["consumed"] == len(data) - lines[0]["consumed"]


def test_run_refusal_is_last() -> None:
    buf = io.StringIO()
    assert httpparse.run(get() + b"GET / HTTP/1.1\r\n\r\n" + get(), buf) == 1
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert len(lines) == 2
    assert lines[1] == {"ok": False, "status": 400, "error": "missing Host", "offset": 53}


def test_run_responses() -> None:
    buf = io.StringIO()
    assert httpparse.run(b"HTTP/1.1 204 No Content\r\n\r\n", buf, response=True) == 0
    line = json.loads(buf.getvalue())
    assert (line["ok"], line["status"], line["framing"]) == (True, 204, "none")


def test_cli_parse(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from l7ctl import cli

    stdin = io.TextIOWrapper(io.BytesIO(get(b"/x")))
    monkeypatch.setattr("sys.stdin", stdin)
    assert cli.main(["parse"]) == 0
    assert json.loads(capsys.readouterr().out)["path"] == "/x"
