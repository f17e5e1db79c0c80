"""Rules format 3.0: health checks, persistence, server ids, access log modes
and answer rules -- the language (values, defaults, every error with its
position), the encoding (record words), the persistence id, the C validator
(each refusal with its own reason) and the C matcher's answer result."""

from __future__ import annotations

import hashlib
import struct

import pytest
from rules_helpers import POOLS, _match, compile_ok, errors, needs_match

from l7ctl import evaluator as ev
from l7ctl import ir, routing, tables

SITE = """
pool images {
    scheduler rr;
    check http "GET /health" host "img.example.com" expect 200-299 interval 3s timeout 500ms
        rise 4 fall 5;
    persist cookie SRVID;
    server 10.0.1.11:80 weight 3 id img1;
    server 10.0.1.12:80;
}
pool app { check tcp; persist source 30m; server 10.0.2.11:80; server [2001:db8::2]:8080; }
pool plain { server 10.0.3.11:80; }

service web listen 10.0.0.1:80 {
    log sample 10;
    answer 200 "ok\\n" if path exact "/healthz";
    answer 503 "down \\"for\\" maintenance\\x21" if path prefix "/maint/";
    route images if path prefix "/img/";
    route app if path prefix "/app/";
    route plain;
}
service quiet listen 10.0.0.1:81 { log off; route plain; }
service loud listen 10.0.0.1:82 { route app; }
"""


@pytest.fixture(scope="module")
def site() -> tuple[ir.Config, bytes]:
    res = compile_ok(SITE)
    assert res.ir is not None and res.tables is not None
    return res.ir, res.tables


def pool(cfg: ir.Config, name: str) -> ir.Pool:
    return cfg.pools[cfg.pool_index(name)]


# ---- the language --------------------------------------------------------------------


def test_ir_values(site: tuple[ir.Config, bytes]) -> None:
    cfg, _ = site
    img, app, plain = pool(cfg, "images"), pool(cfg, "app"), pool(cfg, "plain")
    assert img.check == ir.Check(
        "http", 3000, 500, 4, 5, "GET /health", "img.example.com", (200, 299)
    )
    assert img.persist == ir.Persist("cookie", cookie="SRVID")
    assert [s.id for s in img.servers] == ["img1", ""]
    assert [s.identity() for s in img.servers] == ["img1", "10.0.1.12:80"]
    # defaults: interval 2s, timeout 1s, rise 2, fall 3 (a TCP check has no expect)
    assert app.check == ir.Check("tcp", 2000, 1000, 2, 3, "", "", (0, 0))
    assert app.persist == ir.Persist("source", timeout_ms=30 * 60_000)
    assert plain.check is None and plain.persist is None
    web, quiet, loud = cfg.services
    assert (web.log, web.log_sample) == ("sample", 10)
    assert (quiet.log, quiet.log_sample) == ("off", 0)
    assert (loud.log, loud.log_sample) == ("on", 0)  # the default
    a0, a1 = web.rules[0].action, web.rules[1].action
    assert (a0.kind, a0.status, a0.body) == ("answer", 200, b"ok\n")
    assert (a1.status, a1.body) == (503, b'down "for" maintenance!')
    assert str(a0) == 'answer 200 "ok\\n"'


def test_check_defaults_and_short_intervals() -> None:
    cfg = compile_ok(
        POOLS.replace("pool a {", 'pool a { check http "HEAD /" interval 400ms;')
        + "service s listen 1.2.3.4:80 { route a; route b; route c; }"
    ).ir
    assert cfg is not None
    c = cfg.pools[0].check
    # the default timeout (1s) never exceeds a shorter interval
    assert c == ir.Check("http", 400, 400, 2, 3, "HEAD /", "", (200, 399))
    src = compile_ok(POOLS.replace("pool a {", "pool a { persist source;") + "service s listen "
                     "1.2.3.4:80 { route a; route b; route c; }").ir  # fmt: skip
    assert src is not None and src.pools[0].persist == ir.Persist("source", timeout_ms=300_000)


def err(
    pool_body: str = "", svc_body: str = "route a;", where: str = "pool"
) -> tuple[str, int, int]:
    """The single error of a file with this pool statement or service body."""
    text = (
        "pool a {\n" + pool_body + "\nserver 10.0.0.1:80;\n}\n"
        "service s listen 1.2.3.4:80 {\n" + svc_body + "\n}\n"
    )
    (e,) = errors(text)
    return e.message, e.pos.line, e.pos.col


def test_checks_and_persistence_compile_without_warnings() -> None:
    text = (
        POOLS.replace("pool a {", "pool a { check tcp;").replace(
            "pool b {", "pool b { persist source;"
        )
        + 'service s listen 1.2.3.4:80 { route a if path prefix "/a";'
        + ' route b if path prefix "/b"; route c; }'
    )
    res = compile_ok(text)
    assert [d.message for d in res.warnings] == []


@pytest.mark.parametrize(
    ("stmt", "message", "col"),
    [
        ('check http "GET /"; check tcp;', "duplicate 'check'", 21),
        ("check udp;", "unknown check kind", 7),
        ('check tcp "GET /";', "a TCP check sends no request", 11),
        ("check http;", "an HTTP check needs its request", 7),
        ('check http "GET";', "bad check request", 12),
        ('check http "GET health";', "bad check request", 12),
        ('check http "GET /a b";', "bad check request", 12),
        ('check http "G(T /";', "bad check request", 12),
        ('check http "GET  /";', "bad check request", 12),
        ('check http "GET /" bogus 1;', "unknown check option", 20),
        ("check tcp host h;", "syntax error: unexpected 'h'", 16),
        ('check tcp host "h";', "'host' is for HTTP checks", 11),
        ("check tcp expect 200;", "'expect' is for HTTP checks", 11),
        ("check tcp rise 2 rise 3;", "duplicate check option 'rise'", 18),
        ("check tcp interval 99ms;", "bad check interval", 20),
        ("check tcp interval 61m;", "bad check interval", 20),
        ("check tcp timeout 9ms;", "bad check timeout", 19),
        ("check tcp timeout 61s interval 2m;", "bad check timeout", 19),
        ("check tcp interval 1s timeout 2s;", "check timeout longer than its interval", 31),
        ("check tcp interval 500ms timeout 501ms;", "check timeout longer than its interval", 34),
        ("check tcp rise 0;", "bad check rise", 16),
        ("check tcp fall 101;", "bad check fall", 16),
        ("check tcp fall 2s;", "bad check fall", 16),
        ('check http "GET /" host "a b";', "bad check host", 25),
        ('check http "GET /" host "";', "bad check host", 25),
        ('check http "GET /" expect 99;', "bad check expect", 27),
        ('check http "GET /" expect 300-200;', "bad check expect", 27),
        ('check http "GET /" expect 200-600;', "bad check expect", 27),
        ('check http "GET /" expect 2xx;', "bad check expect", 27),
        ("persist cookie A; persist cookie B;", "duplicate 'persist'", 19),
        ("persist sticky;", "unknown persistence", 9),
        ("persist cookie;", "cookie persistence needs the cookie's name", 9),
        ('persist cookie "a=b";', "bad cookie name", 16),
        ("persist cookie " + "c" * 65 + ";", "bad cookie name", 16),
        ('persist cookie "";', "bad cookie name", 16),
        ("persist source 999ms;", "bad persistence timeout", 16),
        ("persist source 25h;", "bad persistence timeout", 16),
        ("persist source x;", "bad persistence timeout", 16),
    ],
)
def test_pool_errors(stmt: str, message: str, col: int) -> None:
    assert err(stmt) == (message, 2, col)


@pytest.mark.parametrize(
    ("body", "message", "col"),
    [
        ("log loud;", "unknown log mode", 5),
        ("log sample;", "bad log sample", 5),
        ("log sample 1;", "bad log sample", 12),
        ("log sample 65536;", "bad log sample", 12),
        ("log on 3;", "'log on' takes no number", 8),
        ("log on; log off;", "duplicate 'log'", 9),
        ('answer 101 "";', "bad status for answer", 8),
        ('answer 100 "";', "bad status for answer", 8),
        ('answer 600 "";', "bad status for answer", 8),
        ('answer 204 "x";', "a 204 answer has no body", 12),
        ('answer 304 "x";', "a 304 answer has no body", 12),
        ('answer 200 "a\\qb";', "unknown escape in answer body", 14),
        ('answer 200 "a\\x4";', "unknown escape in answer body", 14),
        ('answer 200 "' + "x" * 4097 + '";', "answer body too long", 12),
        ('answer 200 "' + "\\n" * 4097 + '";', "answer body too long", 12),
    ],
)
def test_service_errors(body: str, message: str, col: int) -> None:
    assert err("", body + "\nroute a;") == (message, 6, col)


def test_answer_body_at_the_bound_and_in_raw_services() -> None:
    cfg = compile_ok(POOLS + 'service s listen 1.2.3.4:80 { answer 200 "' + "x" * 4096 + '"; }').ir
    assert cfg is not None and len(cfg.services[0].rules[0].action.body) == 4096
    (e,) = errors(POOLS + 'service s listen 1.2.3.4:80 { relay raw; answer 200 "x"; }')
    assert e.message == "'answer' in a raw service"


def test_server_id_errors() -> None:
    base = "pool a {{ {} }}\nservice s listen 1.2.3.4:80 {{ route a; }}\n"
    text = base.format("server 10.0.0.1:80 id x; server 10.0.0.2:80 id x;")
    (e,) = errors(text)
    first, second = text.index("id x") + 4, text.rindex("id x") + 4
    assert (e.message, e.pos.line, e.pos.col) == ("duplicate server id", 1, second)
    assert e.hint.startswith(f"already the identity of the server at t.rules:1:{first}")
    # an id equal to another server's address:port is the same identity
    (e,) = errors(base.format('server 10.0.0.1:80; server 10.0.0.2:80 id "10.0.0.1:80";'))
    assert e.message == "duplicate server id"
    (e,) = errors(base.format('server 10.0.0.1:80 id "";'))
    assert (e.message, e.pos.col) == ("bad server id", 32)
    (e,) = errors(base.format('server 10.0.0.1:80 id "a\tb";'))
    assert e.message == "bad server id"
    (e,) = errors("virtual tcp 1.2.3.4:443 { server 10.0.0.1:443 id x; }")
    assert e.message == "id is not supported in virtual services"
    # the same id in two pools is fine: the pool's name is part of the hash
    compile_ok(
        "pool a { server 10.0.0.1:80 id x; }\npool b { server 10.0.0.2:80 id x; }\n"
        'service s listen 1.2.3.4:80 { route a if path prefix "/a"; route b; }\n'
    )


def test_keywords_stay_usable_as_names() -> None:
    cfg = compile_ok(
        "pool check { server 10.0.0.1:80; }\npool log { server 10.0.0.2:80; }\n"
        'service answer listen 1.2.3.4:80 { route check if path prefix "/c"; route log; }\n'
    ).ir
    assert cfg is not None and [p.name for p in cfg.pools] == ["check", "log"]


# ---- the persistence id ------------------------------------------------------------------


def reference_id(pool_name: str, identity: str) -> int:
    d = hashlib.blake2b(
        pool_name.encode() + b"\0" + identity.encode(), digest_size=8, key=b"ktcpvs-persist"
    ).digest()
    return int.from_bytes(d, "big") or 1


def test_persist_id_definition(site: tuple[ir.Config, bytes]) -> None:
    cfg, blob = site
    img = pool(cfg, "images")
    s0, s1 = img.servers
    assert tables.persist_id("images", s0) == reference_id("images", "img1")
    assert tables.persist_id("images", s1) == reference_id("images", "10.0.1.12:80")
    v6 = pool(cfg, "app").servers[1]
    assert tables.persist_id("app", v6) == reference_id("app", "[2001:db8::2]:8080")
    # the cookie's value is the digest's hex
    d = hashlib.blake2b(b"images\0img1", digest_size=8, key=b"ktcpvs-persist").hexdigest()
    assert tables.cookie_value("images", s0) == d and len(d) == 16
    # known values, so that a change of the definition cannot pass unnoticed: a
    # cookie set by one version must still name its server after an upgrade
    assert tables.cookie_value("images", s0) == "ff4f1f2ab1796bcc"
    assert tables.cookie_value("images", s1) == "fd291c6e17fb2178"
    # the id follows the identity, not the address: moving img1 keeps its cookie
    moved = compile_ok(SITE.replace("10.0.1.11:80 weight 3 id img1", "10.9.9.9:81 id img1")).ir
    assert moved is not None
    assert tables.persist_id("images", pool(moved, "images").servers[0]) == tables.persist_id(
        "images", s0
    )
    # same file, same blob: the same ids on every director
    again = compile_ok(SITE).tables
    assert again == blob


def test_persist_id_is_never_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    class Zero:
        def __init__(self, *a: object, **k: object) -> None:
            pass

        def digest(self) -> bytes:
            return b"\0" * 8

    monkeypatch.setattr(tables.hashlib, "blake2b", Zero)
    assert tables.persist_id("p", ir.Server(__import__("ipaddress").ip_address("1.2.3.4"), 80)) == 1


# ---- the encoding ------------------------------------------------------------------------


def section(b: bytes, name: str) -> tuple[int, int]:
    i = tables.SECTIONS.index(name)
    off, cnt = struct.unpack_from("<2I", b, (tables.HDR_WORDS + 2 * i) * 4)
    return off, cnt


def words(b: bytes, sec: str, i: int) -> list[int]:
    off, n = section(b, sec)
    assert i < n
    rw = tables.REC_WORDS[sec]
    return list(struct.unpack_from(f"<{rw}I", b, (off + i * rw) * 4))


def string(b: bytes, off: int, n: int) -> bytes:
    so, _ = section(b, "str")
    return b[so * 4 + off : so * 4 + off + n]


def test_record_words(site: tuple[ir.Config, bytes]) -> None:
    cfg, b = site
    assert struct.unpack_from("<I", b, 4)[0] == 0x00030000
    assert tables.REC_WORDS["pool"] == 24 and tables.REC_WORDS["server"] == 10
    p = words(b, "pool", 0)  # images
    assert p[2:6] == [0, 0, 2, 0]  # rr, servers 0..1, flags
    assert p[6:11] == [2, 3000, 500, 4, 5]
    assert string(b, p[11], p[12]) == b"GET /health"
    assert string(b, p[13], p[14]) == b"img.example.com"
    assert p[15:17] == [200, 299]
    assert p[17] == 1 and string(b, p[18], p[19]) == b"SRVID" and p[20] == 0
    assert p[21:] == [0, 0, 0]
    a = words(b, "pool", 1)  # app: tcp, defaults; source 30m
    assert a[6:17] == [1, 2000, 1000, 2, 3, 0, 0, 0, 0, 0, 0]
    assert a[17:21] == [2, 0, 0, 1_800_000]
    assert words(b, "pool", 2)[6:] == [0] * 18  # plain
    for i, srv in enumerate(pool(cfg, "images").servers):
        w = words(b, "server", i)
        pid = tables.persist_id("images", srv)
        assert w[8] == pid & 0xFFFFFFFF and w[9] == pid >> 32
    s = [words(b, "service", i) for i in range(3)]
    assert [x[35:] for x in s] == [[2, 10, 0, 0, 0], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0]]
    r0, r1 = words(b, "rule", 0), words(b, "rule", 1)
    assert r0[:3] == [4, tables.NONE, 200] and string(b, r0[3], r0[4]) == b"ok\n"
    assert r1[:3] == [4, tables.NONE, 503]
    assert string(b, r1[3], r1[4]) == b'down "for" maintenance!'


def test_empty_answer_body_has_no_string() -> None:
    b = compile_ok(POOLS + 'service s listen 1.2.3.4:80 { answer 204 ""; }').tables
    assert b is not None
    assert words(b, "rule", 0)[:5] == [4, tables.NONE, 204, 0, 0]


def test_encoder_refuses_bad_words(site: tuple[ir.Config, bytes]) -> None:
    cfg, _ = site
    img = pool(cfg, "images")
    assert img.check is not None

    def with_pool(**kw: object) -> ir.Config:
        p = ir.Pool(**{**img.__dict__, **kw})  # type: ignore[arg-type]
        return ir.Config((p, *cfg.pools[1:]), cfg.services, cfg.virtuals, cfg.files, cfg.limits)

    def with_svc(**kw: object) -> ir.Config:
        s = ir.Service(**{**cfg.services[0].__dict__, **kw})  # type: ignore[arg-type]
        return ir.Config(cfg.pools, (s, *cfg.services[1:]), cfg.virtuals, cfg.files, cfg.limits)

    c = img.check
    for bad in (
        with_pool(check=ir.Check(**{**c.__dict__, "timeout_ms": 3001})),
        with_pool(check=ir.Check(**{**c.__dict__, "interval_ms": 99, "timeout_ms": 10})),
        with_pool(check=ir.Check(**{**c.__dict__, "rise": 0})),
        with_pool(check=ir.Check(**{**c.__dict__, "expect": (300, 200)})),
        with_pool(check=ir.Check(**{**c.__dict__, "request": ""})),
        with_pool(check=ir.Check("tcp", request="GET /")),
        with_pool(persist=ir.Persist("cookie")),
        with_pool(persist=ir.Persist("source", timeout_ms=999)),
        with_svc(log="sample", log_sample=1),
        with_svc(log="on", log_sample=5),
        with_svc(log="loud"),
    ):
        with pytest.raises(tables.TableError):
            tables.encode(bad)


# ---- the C validator ---------------------------------------------------------------------


def _set(b: bytes, word: int, value: int) -> bytes:
    a = bytearray(b)
    struct.pack_into("<I", a, word * 4, value & 0xFFFFFFFF)
    return bytes(a)


def _at(b: bytes, sec: str, i: int, k: int) -> int:
    off, _ = section(b, sec)
    return off + i * tables.REC_WORDS[sec] + k


def refused(b: bytes) -> str:
    assert _match is not None
    with pytest.raises(ValueError) as e:
        _match.Table(b)
    return str(e.value)


def accepted(b: bytes) -> object:
    assert _match is not None
    return _match.Table(b)


def set_string(b: bytes, off: int, new: bytes) -> bytes:
    so, _ = section(b, "str")
    at = so * 4 + off
    return b[:at] + new + b[at + len(new) :]


@needs_match
def test_validator_views(site: tuple[ir.Config, bytes]) -> None:
    cfg, b = site
    t = accepted(b)
    p = t.pool(0)  # type: ignore[attr-defined]
    assert p["check"] == {
        "kind": 2, "interval_ms": 3000, "timeout_ms": 500, "rise": 4, "fall": 5,
        "request": b"GET /health", "host": b"img.example.com", "expect_lo": 200,
        "expect_hi": 299,
    }  # fmt: skip
    assert p["persist"] == {"kind": 1, "cookie": b"SRVID", "source_timeout_ms": 0}
    assert [s["id"] for s in p["servers"]] == [
        tables.persist_id("images", s) for s in pool(cfg, "images").servers
    ]
    assert t.pool(1)["persist"] == {"kind": 2, "cookie": b"", "source_timeout_ms": 1_800_000}  # type: ignore[attr-defined]
    assert t.pool(2)["check"]["kind"] == 0  # type: ignore[attr-defined]
    assert [(t.service(i)["log_mode"], t.service(i)["log_sample"]) for i in range(3)] == [  # type: ignore[attr-defined]
        (2, 10),
        (0, 0),
        (1, 0),
    ]


CHECK_WHY = {
    "kind": "bad health check kind",
    "interval": "health check interval out of range (100 ms .. 1 h)",
    "timeout": "health check timeout out of range (10 ms .. 60 s)",
    "longer": "health check timeout longer than its interval",
    "rise": "health check rise out of range (1..100)",
    "fall": "health check fall out of range (1..100)",
    "request": "bad health check request (METHOD /path, visible ASCII, at most 1024 bytes)",
    "host": "bad health check host (visible ASCII, at most 255 bytes)",
    "expect": "health check expect not 100 <= low <= high <= 599",
    "none": "health check words of a pool without a check not 0",
    "tcp": "TCP health check with a request, host or expect",
}


@needs_match
def test_validator_check_bounds(site: tuple[ir.Config, bytes]) -> None:
    _, b = site

    def img(k: int, v: int) -> bytes:
        return _set(b, _at(b, "pool", 0, k), v)

    for k, ok, bad, why in (
        (6, 1, 3, "kind"),
        (7, 3_600_000, 3_600_001, "interval"),
        (7, 500, 99, "interval"),
        (8, 10, 9, "timeout"),
        (8, 3000, 3001, "longer"),
        (9, 100, 0, "rise"),
        (9, 1, 101, "rise"),
        (10, 100, 0, "fall"),
        (10, 1, 101, "fall"),
        (15, 100, 99, "expect"),
        (16, 599, 600, "expect"),
        (16, 200, 199, "expect"),
        (14, 0, 256, "host"),
        (12, 5, 0, "request"),
        (12, 5, 1025, "request"),
    ):
        if k != 6:
            accepted(img(k, ok))
        assert refused(img(k, bad)) == CHECK_WHY[why], (k, bad)
    # a long timeout needs a longer interval: 60 s is the top
    accepted(img(8, 60_000) if False else _set(img(7, 120_000), _at(b, "pool", 0, 8), 60_000))
    assert refused(_set(img(7, 120_000), _at(b, "pool", 0, 8), 60_001)) == CHECK_WHY["timeout"]
    # kind 1 (tcp) with the HTTP words of this pool
    assert refused(img(6, 1)) == CHECK_WHY["tcp"]
    # a pool without a check carries none of its words
    for k in range(7, 17):
        assert refused(_set(b, _at(b, "pool", 2, k), 1)) == CHECK_WHY["none"], k


@needs_match
@pytest.mark.parametrize(
    "request_line",
    [b"GET  /health", b"GET health!", b"GET\t/health", b"GET /heal\x7fh", b"G@T /health",
     b" GET /healt", b"GET /heal h"],
)  # fmt: skip
def test_validator_check_request_bytes(site: tuple[ir.Config, bytes], request_line: bytes) -> None:
    _, b = site
    p = words(b, "pool", 0)
    assert len(request_line) in (11, 12)
    bad = _set(b, _at(b, "pool", 0, 12), len(request_line))
    bad = set_string(bad, p[11], request_line)
    assert refused(bad) == CHECK_WHY["request"]


@needs_match
def test_validator_check_host_bytes(site: tuple[ir.Config, bytes]) -> None:
    _, b = site
    p = words(b, "pool", 0)
    accepted(set_string(b, p[13], b"img.example:88"))
    for host in (b"img example.co", b"img.example.c\x00m", b"\x80mg.example.com"):
        assert refused(set_string(b, p[13], host[:15])) == CHECK_WHY["host"], host


PERSIST_WHY = {
    "kind": "bad persistence kind",
    "cookie": "bad persistence cookie name (a token of 1..64 bytes)",
    "source": "source persistence timeout out of range (1 s .. 24 h)",
    "none": "persistence words of a pool without persistence not 0",
    "cookie+timeout": "cookie persistence with a source timeout",
    "source+cookie": "source persistence with a cookie name",
}


@needs_match
def test_validator_persistence(site: tuple[ir.Config, bytes]) -> None:
    _, b = site
    img, app = words(b, "pool", 0), words(b, "pool", 1)

    def at(i: int, k: int, v: int, blob: bytes = b) -> bytes:
        return _set(blob, _at(blob, "pool", i, k), v)

    assert refused(at(0, 17, 3)) == PERSIST_WHY["kind"]
    assert refused(at(0, 19, 0)) == PERSIST_WHY["cookie"]
    assert refused(at(0, 19, 65)) == PERSIST_WHY["cookie"]
    assert refused(at(0, 20, 1000)) == PERSIST_WHY["cookie+timeout"]
    for name in (b"SRV;D", b"SR D", b"SR=D", b"S\x00VID", b'"SRV'):
        assert refused(set_string(b, img[18], name)) == PERSIST_WHY["cookie"], name
    accepted(set_string(b, img[18], b"S!#$~"))
    assert refused(at(1, 20, 999)) == PERSIST_WHY["source"]
    assert refused(at(1, 20, 86_400_001)) == PERSIST_WHY["source"]
    accepted(at(1, 20, 1000))
    accepted(at(1, 20, 86_400_000))
    assert refused(at(1, 19, 1)) == PERSIST_WHY["source+cookie"]
    assert refused(at(1, 18, 1)) == PERSIST_WHY["source+cookie"]
    for k in (18, 19, 20):
        assert refused(at(2, k, 1)) == PERSIST_WHY["none"], k
    for k in (21, 22, 23):
        assert refused(at(0, k, 1)) == "reserved pool word not 0", k
    assert app[17] == 2


@needs_match
def test_validator_server_id_and_log(site: tuple[ir.Config, bytes]) -> None:
    _, b = site
    zero = _set(_set(b, _at(b, "server", 0, 8), 0), _at(b, "server", 0, 9), 0)
    assert refused(zero) == "server persistence id is 0"
    accepted(_set(_set(b, _at(b, "server", 0, 8), 1), _at(b, "server", 0, 9), 0))
    accepted(_set(_set(b, _at(b, "server", 0, 8), 0), _at(b, "server", 0, 9), 1))
    web = _at(b, "service", 0, 35)
    assert refused(_set(b, web, 3)) == "bad log mode"
    for n in (1, 0, 65536):
        assert refused(_set(b, web + 1, n)) == "log sample out of range (2..65535)"
    accepted(_set(b, web + 1, 2))
    accepted(_set(b, web + 1, 65535))
    quiet = _at(b, "service", 1, 35)
    assert refused(_set(b, quiet + 1, 10)) == "log sample without log mode sample"
    accepted(_set(_set(b, quiet, 2), quiet + 1, 10))
    for k in (37, 38, 39):
        assert refused(_set(b, _at(b, "service", 0, k), 1)) == "reserved service word not 0"


@needs_match
def test_validator_answer_rules() -> None:
    b = compile_ok(
        POOLS + 'service s listen 1.2.3.4:80 { answer 200 "' + "y" * 4096 + '"; }'
    ).tables
    assert b is not None
    r = _at(b, "rule", 0, 0)
    for st in (100, 102, 200, 204, 599):
        accepted(_set(b, r + 2, st))
    for st in (0, 99, 101, 600):
        assert refused(_set(b, r + 2, st)) == "answer status not 100..599 (or 101)", st
    assert refused(_set(b, r + 4, 4097)) == "answer body over 4096 bytes"
    assert refused(_set(b, r + 3, 0x00FFFFFF)) == "string out of range"
    assert refused(_set(b, r + 1, 0)) == "rule has a pool but does not route"
    # an empty body is an answer too
    accepted(_set(_set(b, r + 3, 0), r + 4, 0))
    # a route never carries a body in its location words
    assert refused(_set(_set(b, r, 1), r + 1, 0)) in (
        "route rule with a status",
        "rule has a location but does not redirect",
    )


# ---- matching answers --------------------------------------------------------------------


@needs_match
def test_c_result_of_answers_and_routes(site: tuple[ir.Config, bytes]) -> None:
    cfg, b = site
    assert _match is not None
    t = _match.Table(b)

    def result(path: str, svc: int = 0) -> dict[str, object]:
        return t.result(svc, b"GET", b"h", path.encode(), b"", [], None)  # type: ignore[no-any-return]

    r = result("/healthz")
    assert r == {"rule": 0, "action": 4, "pool": -1, "status": 200, "location": b"",
                 "body": b"ok\n", "line": 15}  # fmt: skip
    r = result("/maint/x")
    assert (r["action"], r["status"], r["body"]) == (4, 503, b'down "for" maintenance!')
    r = result("/img/a")
    assert (r["action"], r["pool"], r["body"], r["location"]) == (1, 0, b"", b"")
    web = cfg.services[0]
    for path in ("/healthz", "/maint/", "/img/", "/app/x", "/other"):
        req = ev.Request(path=path.encode())
        assert result(path)["rule"] == ev.evaluate(web, req).index


@needs_match
def test_route_and_test_commands_know_answers(tmp_path: object) -> None:
    from pathlib import Path

    d = Path(str(tmp_path))
    (d / "site.rules").write_text(SITE)
    c = routing.load(str(d / "site.rules"))
    assert c.table is not None
    svc = routing.pick_service(c, "web")
    ex = routing.route(c, svc, routing.build_request("GET", "/healthz", [], None, "10.0.0.1:80"))
    assert ex.agree
    text = ex.format()
    assert 'action:  answer 200 "ok\\n"' in text and "pool:" not in text
    j = ex.to_json()
    assert (j["action"], j["status"], j["body"]) == ("answer", 200, "ok\n")
    (d / "site.cases").write_text(
        "GET /healthz --service web => answer 200\n"
        "GET /maint/a --service web => answer 503\n"
        "GET /img/x --service web => images\n"
        "GET /healthz --service web => answer 204\n"
    )
    rep = routing.run_cases(c, routing.parse_cases(str(d / "site.cases"), {"images", "app"}))
    assert [r.ok for r in rep.results] == [True, True, True, False]
    assert rep.results[3].got == "answer 200"
