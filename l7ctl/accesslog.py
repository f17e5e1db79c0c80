"""`l7ctl log`: the switch's access log, decoded and printed.

The kernel sends access log records in KTCPVS_A_LOG_RECORDS attributes
(kmod/uapi/ktcpvs.h, docs/netlink.md): a run of ``struct ktcpvs_log_rec``,
each followed by its strings (service, pool, host, path, then the name of an
extension method) and zero padding to a multiple of 8 bytes.  They come from
a KTCPVS_CMD_GET_LOG dump (the namespace's most recent records) and, for
``--follow``, from KTCPVS_CMD_LOG messages on the "log" multicast group.

Decoding is defensive: the bytes come from the kernel, but a record that does
not fit its buffer, or claims impossible lengths, is reported as a problem
and decoding of that buffer stops there; nothing here raises on bad input.

Formats: text (one line per record), JSON (one object per line) and the
Apache/nginx "combined" format.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import struct
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

# struct ktcpvs_log_rec, host byte order: the reader is on the same machine.
# Offsets checked against the C header by tests/host/test_ops_cli.py.
REC = struct.Struct("=QQQIIII16s16sHHHBBBBBBHHHHH6x4x")
REC_SIZE = REC.size  # sizeof(struct ktcpvs_log_rec): 104, a multiple of 8
ALIGN = 8
PATH_MAX = 1024  # KTCPVS_LOG_PATH_MAX
# A string longer than this cannot come from a sane record (names are at
# most 255 bytes, a path KTCPVS_LOG_PATH_MAX, a host a header's length).
STRING_MAX = 65535

# KTCPVS_END_*: how an exchange ended
ENDS = ("normal", "client_abort", "server_error", "timeout", "refused", "answered", "local")
# enum kt_http_method (kmod/core/http.h); 0 = an extension method, named by
# the bytes after the path
METHODS = ("", "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")


@dataclass(frozen=True)
class LogRecord:
    """One access log record as the kernel reported it."""

    time_ns: int  # CLOCK_REALTIME of the request's first byte
    client: str  # address
    client_port: int
    server: str  # address, "" when no server was involved
    server_port: int
    service: str
    rule_line: int  # 0: no rule
    pool: str
    method: str  # "" when the request was refused before its method was known
    host: str
    path: str
    version: int  # 10 or 11, 0 unknown
    status: int  # 0: no answer
    bytes_in: int
    bytes_out: int
    connect_us: int
    first_byte_us: int
    total_us: int
    end: str  # one of ENDS, or "end N" for a kind this l7ctl does not know

    @property
    def key(self) -> tuple[int, str, int, int]:
        """What identifies a record across a dump and the multicast stream."""
        return (self.time_ns, self.client, self.client_port, self.total_us)


def _addr(family: int, raw: bytes) -> str | None:
    if family == 4:
        return str(ipaddress.IPv4Address(raw[:4]))
    if family == 6:
        return str(ipaddress.IPv6Address(raw))
    return None


def _text(raw: bytes) -> str:
    """Bytes as text with nothing that could forge a log line: every byte
    outside visible ASCII is written as \\xHH (and a backslash as \\x5c)."""
    return "".join(chr(b) if 0x21 <= b <= 0x7E and b != 0x5C else f"\\x{b:02x}" for b in raw)


def decode(buf: bytes) -> tuple[list[LogRecord], list[str]]:
    """The records in one KTCPVS_A_LOG_RECORDS payload, and the problems found.

    A problem stops decoding of this buffer (the next record's start is then
    unknown); the records before it are returned.
    """
    out: list[LogRecord] = []
    problems: list[str] = []
    off = 0
    n = len(buf)
    while off < n:
        if n - off < REC_SIZE:
            if any(buf[off:]):
                problems.append(
                    f"malformed log record at byte {off}: {n - off} bytes left, "
                    f"a record needs {REC_SIZE}"
                )
            break
        (
            time_ns, bytes_in, bytes_out, connect_us, first_byte_us, total_us, rule_line,
            client_raw, server_raw, client_port, server_port, status, client_family,
            server_family, method_id, end, version, _pad, service_len, pool_len, host_len,
            path_len, method_len,
        ) = REC.unpack_from(buf, off)  # fmt: skip
        lens = (service_len, pool_len, host_len, path_len, method_len)
        strings = sum(lens)
        size = REC_SIZE + (strings + ALIGN - 1) // ALIGN * ALIGN
        client = _addr(client_family, client_raw)
        server = _addr(server_family, server_raw) if server_family else ""
        why = ""
        if off + REC_SIZE + strings > n:
            why = f"its strings ({strings} bytes) run past the end of the buffer"
        elif client is None:
            why = f"bad client address family {client_family}"
        elif server is None:
            why = f"bad server address family {server_family}"
        elif path_len > PATH_MAX:
            why = f"path of {path_len} bytes (at most {PATH_MAX})"
        elif method_id >= len(METHODS):
            why = f"unknown method number {method_id}"
        if why:
            problems.append(f"malformed log record at byte {off}: {why}")
            break
        assert client is not None and server is not None
        p = off + REC_SIZE
        parts = []
        for ln in lens:
            parts.append(buf[p : p + ln])
            p += ln
        service, pool, host, path, ext = parts
        method = METHODS[method_id] if method_id else _text(ext)
        out.append(
            LogRecord(
                time_ns=time_ns,
                client=client,
                client_port=client_port,
                server=server,
                server_port=server_port if server else 0,
                service=_text(service),
                rule_line=rule_line,
                pool=_text(pool),
                method=method,
                host=_text(host),
                path=_text(path),
                version=version,
                status=status,
                bytes_in=bytes_in,
                bytes_out=bytes_out,
                connect_us=connect_us,
                first_byte_us=first_byte_us,
                total_us=total_us,
                end=ENDS[end] if end < len(ENDS) else f"end {end}",
            )
        )
        off += size
    return out, problems


def encode(rec: LogRecord) -> bytes:
    """The kernel's encoding of ``rec`` (for tests and tools that replay logs)."""

    def fam(a: str) -> tuple[int, bytes]:
        if not a:
            return 0, b"\0" * 16
        ip = ipaddress.ip_address(a)
        return ip.version, ip.packed.ljust(16, b"\0")

    cf, ca = fam(rec.client)
    sf, sa = fam(rec.server)
    method_id = METHODS.index(rec.method) if rec.method in METHODS[1:] else 0
    ext = rec.method.encode() if method_id == 0 else b""
    strings = [s.encode() for s in (rec.service, rec.pool, rec.host, rec.path)] + [ext]
    end = ENDS.index(rec.end) if rec.end in ENDS else int(rec.end.split()[-1])
    head = REC.pack(
        rec.time_ns, rec.bytes_in, rec.bytes_out, rec.connect_us, rec.first_byte_us,
        rec.total_us, rec.rule_line, ca, sa, rec.client_port, rec.server_port, rec.status,
        cf, sf, method_id, end, rec.version, 0, *(len(s) for s in strings),
    )  # fmt: skip
    body = b"".join(strings)
    return head + body + b"\0" * (-len(body) % ALIGN)


# ---- formats ---------------------------------------------------------------------------


def _endpoint(addr: str, port: int) -> str:
    if not addr:
        return "-"
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _ms(us: int) -> str:
    return f"{us / 1000:.1f}"


def _iso(time_ns: int) -> str:
    t = dt.datetime.fromtimestamp(time_ns // 1_000_000_000, dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{time_ns // 1_000_000 % 1000:03d}Z"


def format_text(r: LogRecord) -> str:
    """One line: time, client, service:rule line, pool, server, method, host,
    path, status, bytes in and out, connect/first-byte/total ms, how it ended."""
    return " ".join(
        (
            _iso(r.time_ns),
            _endpoint(r.client, r.client_port),
            f"{r.service or '-'}:{r.rule_line}" if r.rule_line else (r.service or "-"),
            r.pool or "-",
            _endpoint(r.server, r.server_port),
            r.method or "-",
            r.host or "-",
            r.path or "-",
            str(r.status) if r.status else "-",
            f"in={r.bytes_in}",
            f"out={r.bytes_out}",
            f"ms={_ms(r.connect_us)}/{_ms(r.first_byte_us)}/{_ms(r.total_us)}",
            r.end,
        )
    )


def to_json(r: LogRecord) -> dict[str, Any]:
    return {
        "time": _iso(r.time_ns),
        "time_ns": r.time_ns,
        "client": r.client,
        "client_port": r.client_port,
        "service": r.service,
        "rule_line": r.rule_line or None,
        "pool": r.pool or None,
        "server": r.server or None,
        "server_port": r.server_port or None,
        "method": r.method or None,
        "host": r.host or None,
        "path": r.path or None,
        "version": f"HTTP/{r.version // 10}.{r.version % 10}" if r.version else None,
        "status": r.status or None,
        "bytes_in": r.bytes_in,
        "bytes_out": r.bytes_out,
        "connect_ms": round(r.connect_us / 1000, 3),
        "first_byte_ms": round(r.first_byte_us / 1000, 3),
        "total_ms": round(r.total_us / 1000, 3),
        "end": r.end,
    }


def format_json(r: LogRecord) -> str:
    return json.dumps(to_json(r), separators=(",", ":"))


def format_combined(r: LogRecord, tz: dt.tzinfo | None = None) -> str:
    """Apache/nginx combined: ``client - - [time] "request" status bytes "-" "-"``.

    The request line holds the normalized path the switch matched (without
    the query); bytes are the response bytes sent to the client ("-" for 0).
    ``tz``: the time zone of the timestamp (None: local time, as Apache)."""
    t = dt.datetime.fromtimestamp(r.time_ns / 1e9, tz or dt.UTC)
    if tz is None:
        t = t.astimezone()
    when = t.strftime("%d/%b/%Y:%H:%M:%S %z")
    if r.method:
        proto = f"HTTP/{r.version // 10}.{r.version % 10}" if r.version else "HTTP/1.1"
        request = f"{r.method} {r.path or '/'} {proto}"
    else:
        request = "-"
    size = str(r.bytes_out) if r.bytes_out else "-"
    status = str(r.status) if r.status else "-"
    return f'{r.client} - - [{when}] "{request}" {status} {size} "-" "-"'


FORMATS = ("text", "json", "combined")


def formatter(name: str) -> Any:
    return {"text": format_text, "json": format_json, "combined": format_combined}[name]


# ---- the command ------------------------------------------------------------------------


@dataclass
class Printer:
    """Writes records, reports problems and the growth of the drop counter."""

    out: TextIO
    err: TextIO
    fmt: str = "text"
    dropped: int | None = None  # the last drop count seen

    def records(self, recs: Iterable[LogRecord]) -> int:
        f = formatter(self.fmt)
        n = 0
        for r in recs:
            self.out.write(f(r) + "\n")
            n += 1
        self.out.flush()
        return n

    def problems(self, probs: Iterable[str]) -> None:
        for p in probs:
            self.err.write(f"l7ctl: log: {p}\n")
        self.err.flush()

    def drop_count(self, total: int | None) -> None:
        """One line on stderr when the kernel's drop counter grew."""
        if total is None:
            return
        if self.dropped is not None and total > self.dropped:
            self.err.write(
                f"l7ctl: log: {total - self.dropped} record(s) dropped by the kernel "
                f"({total} in this namespace so far)\n"
            )
            self.err.flush()
        if self.dropped is None or total > self.dropped:
            self.dropped = total


def records_of(msgs: Iterable[Any]) -> Iterator[tuple[list[LogRecord], list[str], int | None]]:
    """(records, problems, drop count) of each KTCPVS_CMD_LOG / GET_LOG message."""
    for m in msgs:
        raw = m.get_attr("KTCPVS_A_LOG_RECORDS")
        recs, probs = decode(bytes(raw)) if raw else ([], [])
        yield recs, probs, m.get_attr("KTCPVS_A_LOG_DROPPED")


def run(out: TextIO, *, follow: bool, fmt: str = "text", err: TextIO | None = None) -> int:
    """Print the namespace's recent records; with ``follow``, then the new ones."""
    from l7ctl import netlink, protocol

    err = err or sys.stderr
    pr = Printer(out, err, fmt)
    sub = netlink.Subscription(netlink.MCGRP_LOG, "following the access log") if follow else None
    try:
        with protocol.Reader() as c:
            pr.dropped = c.info().log_dropped
            msgs = c.log_dump()
        seen: set[tuple[int, str, int, int]] = set()
        newest = 0
        for recs, probs, _dropped in records_of(msgs):
            pr.records(recs)
            pr.problems(probs)
            for r in recs:
                seen.add(r.key)
                newest = max(newest, r.time_ns)
        if sub is None:
            return 0
        while True:
            msgs, overrun = sub.receive(timeout=1.0)
            if overrun:
                pr.problems(["this reader fell behind: records were lost in its socket buffer"])
            for recs, probs, dropped in records_of(msgs):
                # records the dump already showed may come again: skip them (the
                # dump holds at most KTCPVS_LOG_RING records, so `seen` is bounded)
                fresh = [r for r in recs if r.time_ns > newest or r.key not in seen]
                pr.records(fresh)
                pr.problems(probs)
                pr.drop_count(dropped)
    finally:
        if sub is not None:
            sub.close()
