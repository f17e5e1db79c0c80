"""The operations commands without a kernel: access log records decoded from
netlink messages built with the same pyroute2 message class the kernel's
replies are parsed with, their three formats, the drop counter, the health
verdict from counters, check state in status/stats/Prometheus, and the pools
a running table routes to."""

from __future__ import annotations

import datetime as dt
import io
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from rules_helpers import POOLS, compile_ok

from l7ctl import accesslog, health, netlink, stats, status, tables
from l7ctl.accesslog import LogRecord
from l7ctl.netlink import Counters, Info, ktcpvs_msg

ROOT = Path(__file__).resolve().parents[2]

REC = LogRecord(
    time_ns=1_785_000_000_123_456_789,
    client="10.0.0.2",
    client_port=40312,
    server="10.0.1.11",
    server_port=80,
    service="web",
    rule_line=12,
    pool="images",
    method="GET",
    host="img.example.com",
    path="/logo.png",
    version=11,
    status=200,
    bytes_in=78,
    bytes_out=5120,
    connect_us=312,
    first_byte_us=1250,
    total_us=1500,
    end="normal",
)


def msg(cmd: int, attrs: list[tuple[str, Any]]) -> bytes:
    """A ktcpvs generic netlink message as the kernel sends it."""
    m = ktcpvs_msg()
    m["cmd"] = cmd
    m["version"] = netlink.GENL_VERSION
    m["attrs"] = attrs
    m["header"]["type"] = 0x1F  # the family's id
    m.encode()
    return bytes(m.data)


# ---- the record layout -------------------------------------------------------------------


def test_record_layout_matches_the_uapi_header(tmp_path: Path) -> None:
    """accesslog.REC is struct ktcpvs_log_rec: size and every field's offset,
    read from kmod/uapi/ktcpvs.h by the C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler")
    fields = [
        "time_ns", "bytes_in", "bytes_out", "connect_us", "first_byte_us", "total_us",
        "rule_line", "client", "server", "client_port", "server_port", "status",
        "client_family", "server_family", "method", "end", "version", "pad", "service_len",
        "pool_len", "host_len", "path_len", "method_len",
    ]  # fmt: skip
    src = tmp_path / "layout.c"
    src.write_text(
        '#include <stdio.h>\n#include <stddef.h>\n#include "ktcpvs.h"\n'
        "int main(void) {\n"
        '  printf("%zu\\n", sizeof(struct ktcpvs_log_rec));\n'
        + "".join(f'  printf("%zu\\n", offsetof(struct ktcpvs_log_rec, {f}));\n' for f in fields)
        + "  return 0;\n}\n"
    )
    exe = tmp_path / "layout"
    subprocess.run([cc, "-I", str(ROOT / "kmod/uapi"), "-o", str(exe), str(src)], check=True)
    got = [int(x) for x in subprocess.run([str(exe)], capture_output=True, text=True,
                                          check=True).stdout.split()]  # fmt: skip
    size, offsets = got[0], got[1:]
    assert size == accesslog.REC_SIZE == 104
    # offsets of the Python layout, from its format string
    py: list[int] = []
    off = 0
    for code in ("Q", "Q", "Q", "I", "I", "I", "I", "16s", "16s", "H", "H", "H",
                 "B", "B", "B", "B", "B", "B", "H", "H", "H", "H", "H"):  # fmt: skip
        py.append(off)
        off += {"Q": 8, "I": 4, "H": 2, "B": 1, "16s": 16}[code]
    assert offsets == py


# ---- decoding ----------------------------------------------------------------------------


def test_roundtrip_and_padding() -> None:
    raw = accesslog.encode(REC)
    assert len(raw) % 8 == 0
    assert len(raw) == 104 + 40  # web images img.example.com /logo.png: 37 bytes -> 40
    recs, probs = accesslog.decode(raw + accesslog.encode(REC) + raw)
    assert probs == [] and recs == [REC, REC, REC]


def test_ipv6_extension_method_no_server() -> None:
    r = LogRecord(
        **{**REC.__dict__, "client": "2001:db8::7", "server": "", "server_port": 0,
           "pool": "", "method": "PROPFIND", "status": 403, "end": "refused"}
    )  # fmt: skip
    (got,), probs = accesslog.decode(accesslog.encode(r))
    assert probs == [] and got == r
    line = accesslog.format_text(got)
    assert "[2001:db8::7]:40312 web:12 - - PROPFIND" in line and line.endswith(" 403 "
        "in=78 out=5120 ms=0.3/1.2/1.5 refused")  # fmt: skip


def test_truncated_and_malformed_records_are_reported_not_raised() -> None:
    raw = accesslog.encode(REC)
    # cut inside the strings: the first record is lost, reported
    recs, probs = accesslog.decode(raw[:110])
    assert recs == [] and len(probs) == 1 and "run past the end" in probs[0]
    # a good record, then half a record header
    recs, probs = accesslog.decode(raw + raw[:50])
    assert recs == [REC] and "50 bytes left" in probs[0]
    # bad client family at the second record
    bad = bytearray(raw)
    bad[78] = 9
    recs, probs = accesslog.decode(raw + bytes(bad))
    assert recs == [REC] and f"at byte {len(raw)}" in probs[0] and "family 9" in probs[0]
    # a path longer than the kernel ever sends
    bad = bytearray(raw)
    bad[90:92] = (5000).to_bytes(2, "little")
    assert "path of 5000 bytes" in accesslog.decode(bytes(bad) + b"\0" * 5000)[1][0]
    # unknown method number, unknown end kind
    bad = bytearray(raw)
    bad[80] = 77
    assert "method number 77" in accesslog.decode(bytes(bad))[1][0]
    bad = bytearray(raw)
    bad[81] = 42
    (r,), probs = accesslog.decode(bytes(bad))
    assert probs == [] and r.end == "end 42"
    # trailing zero padding is not a problem
    assert accesslog.decode(raw + b"\0" * 8) == ([REC], [])


def test_strings_cannot_forge_lines() -> None:
    r = LogRecord(**{**REC.__dict__, "path": "/a\nb c\\d", "host": "h\x1b"})
    (got,), _ = accesslog.decode(accesslog.encode(r))
    assert got.path == "/a\\x0ab\\x20c\\x5cd" and got.host == "h\\x1b"
    for f in (accesslog.format_text, accesslog.format_json, accesslog.format_combined):
        assert "\n" not in f(got)


# ---- formats -----------------------------------------------------------------------------


def test_text_format() -> None:
    assert accesslog.format_text(REC) == (
        "2026-07-25T17:20:00.123Z 10.0.0.2:40312 web:12 images 10.0.1.11:80 GET "
        "img.example.com /logo.png 200 in=78 out=5120 ms=0.3/1.2/1.5 normal"
    )


def test_json_format() -> None:
    j = json.loads(accesslog.format_json(REC))
    assert j == {
        "time": "2026-07-25T17:20:00.123Z", "time_ns": REC.time_ns, "client": "10.0.0.2",
        "client_port": 40312, "service": "web", "rule_line": 12, "pool": "images",
        "server": "10.0.1.11", "server_port": 80, "method": "GET", "host": "img.example.com",
        "path": "/logo.png", "version": "HTTP/1.1", "status": 200, "bytes_in": 78,
        "bytes_out": 5120, "connect_ms": 0.312, "first_byte_ms": 1.25, "total_ms": 1.5,
        "end": "normal",
    }  # fmt: skip


def test_combined_format() -> None:
    assert accesslog.format_combined(REC, dt.UTC) == (
        '10.0.0.2 - - [25/Jul/2026:17:20:00 +0000] "GET /logo.png HTTP/1.1" 200 5120 "-" "-"'
    )
    refused = LogRecord(**{**REC.__dict__, "method": "", "status": 400, "bytes_out": 0,
                           "version": 0})  # fmt: skip
    assert accesslog.format_combined(refused, dt.timezone(dt.timedelta(hours=2))) == (
        '10.0.0.2 - - [25/Jul/2026:19:20:00 +0200] "-" 400 - "-" "-"'
    )


# ---- messages, the printer, the drop counter ------------------------------------------


def test_messages_to_lines_and_drops() -> None:
    recs = accesslog.encode(REC) * 2
    data = msg(netlink.CMD_LOG, [("KTCPVS_A_LOG_RECORDS", recs), ("KTCPVS_A_LOG_DROPPED", 5)])
    data += msg(netlink.CMD_LOG, [("KTCPVS_A_LOG_RECORDS", recs[:120]),
                                  ("KTCPVS_A_LOG_DROPPED", 5)])  # fmt: skip
    data += msg(netlink.CMD_LOG, [("KTCPVS_A_LOG_RECORDS", recs), ("KTCPVS_A_LOG_DROPPED", 9)])
    msgs = netlink.parse_messages(data)
    assert [m.cmd for m in msgs] == [netlink.CMD_LOG] * 3
    out, err = io.StringIO(), io.StringIO()
    pr = accesslog.Printer(out, err, "json", dropped=2)
    for got, probs, dropped in accesslog.records_of(msgs):
        pr.records(got)
        pr.problems(probs)
        pr.drop_count(dropped)
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and all(json.loads(x)["pool"] == "images" for x in lines)
    e = err.getvalue().splitlines()
    assert e[0] == "l7ctl: log: 3 record(s) dropped by the kernel (5 in this namespace so far)"
    assert "malformed log record at byte 0" in e[1]
    assert e[2] == "l7ctl: log: 4 record(s) dropped by the kernel (9 in this namespace so far)"
    assert len(e) == 3


def test_parse_messages_skips_control_and_truncated() -> None:
    good = msg(netlink.CMD_LOG, [("KTCPVS_A_LOG_DROPPED", 1)])
    done = (16).to_bytes(4, "little") + (3).to_bytes(2, "little") + b"\0" * 10  # NLMSG_DONE
    assert [m.get_attr("KTCPVS_A_LOG_DROPPED") for m in
            netlink.parse_messages(done + good + good[:20])] == [1]  # fmt: skip


# ---- counters: check state ---------------------------------------------------------------


def server_msg(
    pool: str, ep: str, *, state: int = 0, weight: int = 1, cooldown: int = 0,
    check: int | None = None, last: str = "", changes: int = 0,
) -> Counters:  # fmt: skip
    attrs: list[tuple[str, Any]] = [
        ("KTCPVS_A_OBJ_KIND", netlink.OBJ_SERVER),
        ("KTCPVS_A_OBJ_POOL", pool.encode()),
        ("KTCPVS_A_OBJ_ADDR", netlink.encode_addr(ep)),
        ("KTCPVS_A_WEIGHT", weight),
        ("KTCPVS_A_STATE", state),
        ("KTCPVS_A_COOLDOWN", cooldown),
        ("KTCPVS_A_ST_CONNS", 3),
        ("KTCPVS_A_ST_ACTIVE", 0),
        ("KTCPVS_A_ST_REQUESTS", 7),
        ("KTCPVS_A_ST_BYTES_IN", 100),
        ("KTCPVS_A_ST_BYTES_OUT", 2000),
        ("KTCPVS_A_ST_ERRORS", b"\0" * 8 * len(netlink.ERROR_KINDS)),
    ]
    if check is not None:
        attrs += [("KTCPVS_A_CHECK_STATE", check), ("KTCPVS_A_CHECK_LAST", last),
                  ("KTCPVS_A_CHECK_CHANGES", changes)]  # fmt: skip
    (m,) = netlink.parse_messages(msg(netlink.CMD_GET_STATS, attrs))
    return netlink.counters_from_msg(m)


def pool_obj(name: str) -> Counters:
    attrs: list[tuple[str, Any]] = [
        ("KTCPVS_A_OBJ_KIND", netlink.OBJ_POOL),
        ("KTCPVS_A_OBJ_NAME", name.encode()),
        ("KTCPVS_A_SCHED", 0),
    ]
    (m,) = netlink.parse_messages(msg(netlink.CMD_GET_STATS, attrs))
    return netlink.counters_from_msg(m)


def info(services: int = 1, dropped: int = 0) -> Info:
    attrs: list[tuple[str, Any]] = [
        ("KTCPVS_A_MODULE_VERSION", "0.4.0"),
        ("KTCPVS_A_PROTO_VERSION", netlink.PROTO_VERSION),
        ("KTCPVS_A_SERVICE_COUNT", services),
        ("KTCPVS_A_GENERATION", 4),
        ("KTCPVS_A_LOG_DROPPED", dropped),
    ]
    (m,) = netlink.parse_messages(msg(netlink.CMD_GET_INFO, attrs))
    return netlink.info_from_msg(m)


def test_counters_decode_check_state() -> None:
    s = server_msg("images", "10.0.1.11:80", check=2, last="timeout", changes=3)
    assert (s.check, s.check_last, s.check_changes) == ("down", "timeout", 3)
    assert not s.available
    plain = server_msg("images", "10.0.1.12:80")
    assert plain.check == "none" and plain.available
    assert info(dropped=17).log_dropped == 17


def test_status_and_stats_show_the_check() -> None:
    objs = [
        pool_obj("images"),
        server_msg("images", "10.0.1.11:80", check=2, last="refused", changes=1),
        server_msg("images", "10.0.1.12:80", check=1, last="200", changes=2),
        server_msg("images", "10.0.1.13:80"),
    ]
    text = status.format_text(status.Status(info(), objs))
    assert "server 10.0.1.11:80 weight 1 up, check down, last refused, 1 change(s)" in text
    assert "server 10.0.1.12:80 weight 1 up, check up, last 200, 2 change(s)" in text
    assert "server 10.0.1.13:80 weight 1 up\n" in text
    assert "check-down" in stats.format_text(objs)
    prom = stats.format_prometheus(objs, info(dropped=6))
    assert 'ktcpvs_server_check_up{pool="images",address="10.0.1.11:80"} 0' in prom
    assert 'ktcpvs_server_check_up{pool="images",address="10.0.1.12:80"} 1' in prom
    assert 'ktcpvs_server_check_changes_total{pool="images",address="10.0.1.12:80"} 2' in prom
    assert "10.0.1.13:80" not in prom.split("ktcpvs_server_check_up")[1]
    assert "ktcpvs_log_dropped_total 6" in prom
    assert "# TYPE ktcpvs_server_check_changes_total counter" in prom


# ---- health ------------------------------------------------------------------------------


def test_health_down_when_not_loaded_or_unconfigured() -> None:
    h = health.decide(None, [], None)
    assert h.code == 2 and "not loaded" in h.reason
    h = health.decide(info(services=0), [], set())
    assert h.code == 2 and "no configuration" in h.reason


def test_health_verdicts() -> None:
    up = server_msg("images", "10.0.1.11:80")
    drained = server_msg("images", "10.0.1.12:80", state=1)
    checkdown = server_msg("images", "10.0.1.12:80", check=2, last="timeout")
    cooling = server_msg("cgi", "10.0.2.11:80", cooldown=1)
    w0 = server_msg("cgi", "10.0.2.12:80", weight=0)
    cgi_up = server_msg("cgi", "10.0.2.13:80")
    objs = [pool_obj("images"), up, drained, pool_obj("cgi"), cgi_up]
    h = health.decide(info(), objs, {"images", "cgi"})
    assert h.code == 1 and h.reason == "images 10.0.1.12:80 drained"
    assert h.pools == {"cgi": {"available": 1, "servers": 1},
                       "images": {"available": 1, "servers": 2}}  # fmt: skip
    # the only images server left is down by its check: down
    h = health.decide(info(), [pool_obj("images"), checkdown], {"images"})
    assert h.code == 2 and h.reason == "no available server in pool images"
    # a pool no rule routes to does not count
    h = health.decide(info(), [pool_obj("images"), up, pool_obj("cgi"), cooling], {"images"})
    assert h.code == 0 and h.reason.startswith("1 service(s), 1 pool(s)")
    # ... unless the routed pools are unknown
    h = health.decide(info(), [pool_obj("images"), up, pool_obj("cgi"), cooling], None)
    assert h.code == 2 and "pool cgi" in h.reason
    # weight 0 is not available, but not an impairment either
    h = health.decide(info(), [pool_obj("cgi"), w0, cgi_up], {"cgi"})
    assert h.code == 0
    h = health.decide(info(), [pool_obj("cgi"), w0], {"cgi"})
    assert h.code == 2
    # an empty pool that a rule routes to
    h = health.decide(info(), [pool_obj("cgi")], {"cgi"})
    assert h.code == 2
    assert json.loads(json.dumps(h.to_json()))["status"] == "down"


def test_health_output_and_exit_status() -> None:
    degraded = health.Health(1, "images 10.0.1.12:80 drained", {})
    out = io.StringIO()
    assert health.run(out, as_json=False, reader=lambda: degraded) == 1
    assert out.getvalue() == "degraded: images 10.0.1.12:80 drained\n"
    # for a vrrp_script that must fail only when the director cannot serve
    assert health.run(io.StringIO(), as_json=False, fail_on="down", reader=lambda: degraded) == 0
    down = health.Health(
        2, "no available server in pool cgi", {"cgi": {"available": 0, "servers": 1}}
    )
    out = io.StringIO()
    assert health.run(out, as_json=True, fail_on="down", reader=lambda: down) == 2
    assert json.loads(out.getvalue()) == {"status": "down", "code": 2,
        "reason": "no available server in pool cgi",
        "pools": {"cgi": {"available": 0, "servers": 1}}}  # fmt: skip

    def refused() -> health.Health:
        raise netlink.PermissionDenied("reading the counters")

    out = io.StringIO()
    assert health.run(out, as_json=False, reader=refused) == 2
    assert out.getvalue().startswith("down: permission denied: reading the counters")


def test_route_pools_of_a_compiled_table() -> None:
    res = compile_ok(
        POOLS + "pool spare { server 10.0.0.9:80; }\n"
        "service s listen 10.0.0.100:80 {\n"
        '  route a if path prefix "/a/";\n  block 403 if path prefix "/x/";\n'
        "  route c;\n}\nservice t listen 10.0.0.100:81 { route a; }\n"
    )
    assert res.tables is not None
    assert tables.route_pools(res.tables) == {"a", "c"}
    assert tables.route_pools(res.tables[:100]) is None
    assert tables.route_pools(b"\0" * 200) is None
