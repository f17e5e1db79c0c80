"""Write the seed corpus of the rule-matcher harness (tests/fuzz/corpus/match/).

A seed is ``blob || view || u16 len(view)`` (see fuzz_match.c): the compiled
tables of examples/*.rules and of a few generated rule sets, each with some
request views.  Run from the repository root, with l7ctl importable:

    .venv/bin/python tests/fuzz/make_match_corpus.py
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

from l7ctl import compiler

HERE = Path(__file__).parent
ROOT = HERE / "corpus" / "match"
EXAMPLES = HERE.parent.parent / "examples"

POOLS = """
pool a { server 10.0.0.1:80; }
pool b { scheduler wrr; server 10.0.0.2:80 weight 2; server [2001:db8::2]:80; }
pool c { scheduler sh; server 10.0.0.3:8080 state down; }
"""

GENERATED = [
    POOLS + "service s listen 10.0.0.100:80 { route a; }",
    POOLS
    + """
limit connections 100000;
list exts { ".png" ".gif" ".jpg" }
service s listen 10.0.0.100:80 {
    route a if host "img.example.com" or host "*.cdn.example.com";
    route b if path prefix "/cgi-bin/" or path suffix @exts or path contains "adm";
    route c if path regex "^/api/v[0-9]+/[a-z]*$" and method POST;
    block 403 if header "User-Agent" contains "sqlmap" or cookie "ban" exists;
    redirect 301 "https://example.com/" if query "old" "1" or source 10.0.0.0/8;
    route a if type image/* and not source 2001:db8::/32;
    route b if header "X-Api" prefix "v2" and cookie "s" "abc" and query "q" exists;
    route c if host suffix ".org" or path glob "/x/*/y?.html";
    route c;
}
service t listen [2001:db8::1]:8080 {
    x-forwarded-for replace;
    limit source-connections 16; limit source-rate 50; limit backlog 4096;
    route b if host suffix ".org" and not (method GET or method HEAD);
    redirect 308 "https://t.example/" if path exact "/old";
    route a;
}
""",
    # format 3.0: health checks, persistence, server ids, access log modes, answers
    POOLS
    + """
pool d {
    scheduler rr;
    check http "GET /health" host "d.example.com" expect 200-299 interval 500ms timeout 200ms
        rise 3 fall 2;
    persist cookie SRVID;
    server 10.0.1.1:80 id d1;
    server 10.0.1.2:80 id "d two";
}
pool e { check tcp interval 1h timeout 60s rise 100 fall 100; persist source 24h;
         server [2001:db8::e]:8080; }
pool f { check http "OPTIONS /" expect 100-599; persist source; server 10.0.1.3:80; }
service s listen 10.0.0.100:80 {
    log sample 65535;
    answer 200 "ok\\n" if path exact "/healthz";
    answer 503 "" if path prefix "/maint/";
    answer 204 "" if method OPTIONS;
    route d if path prefix "/d/";
    route e if path prefix "/e/";
    route f;
}
service t listen 10.0.0.100:81 { log off; answer 599 "\\x00\\xff body"; }
service u listen 10.0.0.100:82 { log sample 2; route a; }
""",
    POOLS
    + "service s listen 10.0.0.100:80 {\n"
    + "".join(
        f'    route {"abc"[i % 3]} if path prefix "/p{i:03d}/" or host "h{i}.example.com";\n'
        for i in range(60)
    )
    + '    route a if path regex "(a|b)*c[0-9]{2,4}";\n    block 404;\n}\n',
]


def view(
    method: bytes = b"GET",
    host: bytes = b"www.example.com",
    path: bytes = b"/",
    query: bytes | None = None,
    headers: tuple[tuple[bytes, bytes], ...] = (),
    family: int = 0,
    addr: bytes = b"",
) -> bytes:
    cfg = family | (4 if query is None else 0)
    slices = [method, host, path, query or b""]
    for n, v in headers:
        slices += [n, v]
    return bytes([cfg]) + addr.ljust(16, b"\0")[:16] + b"\0".join(slices)


VIEWS = [
    view(),
    view(host=b"img.example.com", path=b"/logo.png"),
    view(host=b"x.cdn.example.com", path=b"/a.gif", family=1, addr=bytes([10, 1, 2, 3])),
    view(method=b"POST", path=b"/api/v2/orders", headers=((b"X-Api", b"v2.1"),)),
    view(headers=((b"User-Agent", b"sqlmap/1.0"), (b"Cookie", b"a=1; ban=yes"))),
    view(path=b"/cgi-bin/search.cgi", query=b"old=1&q=kernel"),
    view(path=b"/admin/x", family=2, addr=bytes.fromhex("20010db8000000000000000000000001")),
    view(path=b"/x/abc/y1.html", family=3, addr=bytes([192, 0, 2, 7])),
    view(host=b"shop.example", path=b"/old-catalogue/item/7", headers=((b"cookie", b"s=abc"),)),
    view(method=b"TRACE", host=b"", path=b"", query=b""),
    view(path=b"/healthz"),
    view(method=b"OPTIONS", path=b"/maint/x"),
    view(path=b"/d/x", headers=((b"Cookie", b"SRVID=0123456789abcdef"),)),
]


def blobs() -> list[bytes]:
    out = []
    for f in sorted(EXAMPLES.glob("*.rules")):
        res = compiler.compile_file(f)
        assert res.ok and res.tables, res.format()
        out.append(res.tables)
    for text in GENERATED:
        res = compiler.compile_text(text, "gen.rules")
        assert res.ok and res.tables, res.format()
        out.append(res.tables)
    return out


def main() -> None:
    ROOT.mkdir(parents=True, exist_ok=True)
    for old in ROOT.iterdir():
        old.unlink()
    n = 0
    for b in blobs():
        for i, v in enumerate(VIEWS):
            # big blobs with two views only: they are slow to mutate
            if len(b) > 16384 and i > 1:
                continue
            seed = b + v + struct.pack("<H", len(v))
            (ROOT / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
            n += 1
    # a truncated blob and an empty one: refused
    b = blobs()[0]
    for seed in (b[: len(b) // 2] + b"\0\0", b"\0\0"):
        (ROOT / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
        n += 1
    print(f"{n} seeds in {ROOT}")


if __name__ == "__main__":
    main()
