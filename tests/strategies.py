"""Hypothesis strategies for HTTP requests, shared by the host property tests
(tests/host/test_http_props.py) and the live fuzz test in the guest
(tests/kernel/test_live_fuzz.py): valid requests of every framing, and
mutations of them that stress the strictness rules.
"""

from __future__ import annotations

from hypothesis import assume
from hypothesis import strategies as st

ALPHA = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
DIGIT = b"0123456789"
TCHAR = ALPHA + DIGIT + b"!#$%&'*+-.^_`|~"
PCHAR = ALPHA + DIGIT + b"-._~!$&'()*+,;=:@"
VCHAR = bytes(range(0x21, 0x7F)) + bytes(range(0x80, 0x100))
HEX = b"0123456789abcdefABCDEF"


def _bytes(alphabet: bytes, min_size: int = 0, max_size: int = 12) -> st.SearchStrategy[bytes]:
    return st.lists(st.sampled_from(list(alphabet)), min_size=min_size, max_size=max_size).map(
        bytes
    )


tokens = _bytes(TCHAR, 1, 10)
pct = st.tuples(st.sampled_from(list(HEX)), st.sampled_from(list(HEX))).map(
    lambda t: b"%" + bytes(t)
)
segment_part = st.one_of(_bytes(PCHAR, 1, 6), pct, st.sampled_from([b".", b"..", b"%2e"]))
segment = st.lists(segment_part, max_size=4).map(b"".join)
paths = st.lists(segment, min_size=1, max_size=5).map(lambda s: b"/" + b"/".join(s))
queries = st.none() | st.lists(st.one_of(_bytes(PCHAR + b"/?", 1, 8), pct), max_size=3).map(
    b"".join
)
reserved_names = {b"host", b"content-length", b"transfer-encoding"}
names = tokens.filter(lambda n: n.lower() not in reserved_names)
field_words = _bytes(VCHAR, 1, 8)
values = st.lists(
    st.tuples(field_words, st.sampled_from([b" ", b"\t", b"  ", b" \t"])), max_size=3
).map(lambda ws: b"".join(w + s for w, s in ws).rstrip(b" \t"))
ows = st.sampled_from([b"", b" ", b"\t", b" \t "])
hosts = st.tuples(
    st.lists(_bytes(ALPHA + DIGIT + b"-", 1, 8), min_size=1, max_size=3).map(b".".join),
    st.none() | st.integers(0, 65535),
).map(lambda hp: hp[0] + (b"" if hp[1] is None else b":%d" % hp[1]))
methods = st.one_of(st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"PATCH"]), tokens)


def _nondot(path: bytes) -> bool:
    segs = path.replace(b"%2e", b".").replace(b"%2E", b".").split(b"/")
    return b"%00" not in path and all(s not in (b".", b"..") for s in segs)


@st.composite
def chunked_bodies(draw: st.DrawFn) -> tuple[bytes, int]:
    chunks = draw(st.lists(st.binary(min_size=1, max_size=20), max_size=4))
    out = b""
    for c in chunks:
        size = b"%x" % len(c)
        if draw(st.booleans()):
            size = size.upper().rjust(draw(st.integers(1, 4)), b"0")
        ext = draw(st.sampled_from([b"", b";a", b";a=b", b';name="q v"']))
        out += size + ext + b"\r\n" + c + b"\r\n"
    out += b"0\r\n"
    for n, v in draw(st.lists(st.tuples(names, values), max_size=2)):
        out += n + b": " + v + b"\r\n"
    return out + b"\r\n", sum(len(c) for c in chunks)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(methods)
    path = draw(paths)
    assume(_nondot(path))
    query = draw(queries)
    target = path + (b"" if query is None else b"?" + query)
    version = draw(st.sampled_from([b"1.0", b"1.1"]))
    fields = draw(st.lists(st.tuples(names, values), max_size=6))
    if version == b"1.1" or draw(st.booleans()):
        pos = draw(st.integers(0, len(fields)))
        fields.insert(pos, (draw(st.sampled_from([b"Host", b"host", b"HOST"])), draw(hosts)))
    body = b""
    kind = draw(
        st.sampled_from(["none", "length", "chunked"] if version == b"1.1" else ["none", "length"])
    )
    if kind == "length":
        body = draw(st.binary(max_size=40))
        fields.append((b"Content-Length", b"%d" % len(body)))
    elif kind == "chunked":
        body, _ = draw(chunked_bodies())
        fields.append((b"Transfer-Encoding", b"chunked"))
    head = method + b" " + target + b" HTTP/" + version + b"\r\n"
    for n, v in fields:
        head += n + b":" + draw(ows) + v + draw(ows) + b"\r\n"
    return head + b"\r\n" + body


INTERESTING = [
    b"\r",
    b"\n",
    b" ",
    b"\t",
    b"\x00",
    b":",
    b"%",
    b"/",
    b".",
    b"0",
    b"a",
    b"\x7f",
    b"\xe9",
    b",",
    b";",
    b"\r\n",
    b"\r\n ",
    b"?",
    b"#",
    b"\\",
]


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        if op == "insert" or not data:
            data[pos:pos] = draw(st.sampled_from(INTERESTING))
        elif op == "delete":
            del data[min(pos, len(data) - 1)]
        else:
            data[min(pos, len(data) - 1)] = draw(st.sampled_from(INTERESTING))[0]
    return bytes(data)


def cuts(n: int) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(0, n), max_size=8).map(sorted)
