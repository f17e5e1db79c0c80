"""`l7ctl stats`: counters per service, pool and server, as text, JSON or Prometheus."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import TextIO

from l7ctl.protocol import Counters, Info, Reader


def read() -> list[Counters]:
    with Reader() as c:
        return c.stats()


def read_with_info() -> tuple[Info, list[Counters]]:
    with Reader() as c:
        return c.info(), c.stats()


def _human(n: float) -> str:
    for unit in ("", "K", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.0f}{unit}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}P"


Key = tuple[str, str, str]


def _key(r: Counters) -> Key:
    return (r.kind, r.name, r.address)


def format_text(rows: list[Counters], rates: dict[Key, float] | None = None) -> str:
    head = (
        f"{'object':<34} {'conns':>8} {'active':>7} {'requests':>9} "
        f"{'in':>8} {'out':>8} {'errors':>7}"
    )
    if rates is not None:
        head += f" {'req/s':>8}"
    lines = [head]
    for r in rows:
        if r.kind == "service":
            label = f"service {r.name} {r.address}"
        elif r.kind == "pool":
            label = f"  pool {r.name}"
        else:
            extra = f" w{r.weight} {r.state}" + (" cooldown" if r.cooldown else "")
            if r.check != "none":
                extra += f" check-{r.check}"
            label = f"    {r.address}{extra}"
        line = (
            f"{label:<34} {r.conns:>8} {r.active:>7} {r.requests:>9} "
            f"{_human(r.bytes_in):>8} {_human(r.bytes_out):>8} {sum(r.errors.values()):>7}"
        )
        if rates is not None:
            line += f" {rates.get(_key(r), 0.0):>8.1f}"
        lines.append(line)
        errs = {k: v for k, v in r.errors.items() if v}
        if errs and r.kind == "service":
            lines.append("      errors: " + ", ".join(f"{k} {v}" for k, v in errs.items()))
    return "\n".join(lines) + "\n"


def format_prometheus(rows: list[Counters], info: Info | None = None) -> str:
    out = []
    for name, help_ in (
        ("conns_total", "connections accepted (services) or opened (servers)"),
        ("active", "connections (services) or requests (servers, pools) in progress"),
        ("requests_total", "requests"),
        ("bytes_in_total", "bytes from clients towards servers"),
        ("bytes_out_total", "bytes from servers towards clients"),
        ("spliced_bytes_total", "of bytes in and out, those relayed zero-copy"),
        ("errors_total", "errors by kind"),
    ):
        out.append(f"# HELP ktcpvs_{name} {help_}")
        out.append(f"# TYPE ktcpvs_{name} {'gauge' if name == 'active' else 'counter'}")
        for r in rows:
            labels = f'kind="{r.kind}",name="{r.name}",address="{r.address}"'
            if name == "errors_total":
                for k, v in r.errors.items():
                    out.append(f'ktcpvs_{name}{{{labels},error="{k}"}} {v}')
                continue
            value = {
                "conns_total": r.conns, "active": r.active, "requests_total": r.requests,
                "bytes_in_total": r.bytes_in, "bytes_out_total": r.bytes_out,
                "spliced_bytes_total": r.spliced,
            }[name]  # fmt: skip
            out.append(f"ktcpvs_{name}{{{labels}}} {value}")
    checked = [r for r in rows if r.kind == "server" and r.check != "none"]
    for name, help_, kind in (
        ("server_check_up", "1 while the server's health check says up, 0 while down", "gauge"),
        ("server_check_changes_total", "times the health check changed the server's state",
         "counter"),
    ):  # fmt: skip
        out.append(f"# HELP ktcpvs_{name} {help_}")
        out.append(f"# TYPE ktcpvs_{name} {kind}")
        for r in checked:
            labels = f'pool="{r.name}",address="{r.address}"'
            value = int(r.check == "up") if name == "server_check_up" else r.check_changes
            out.append(f"ktcpvs_{name}{{{labels}}} {value}")
    if info is not None:
        out.append("# HELP ktcpvs_log_dropped_total access log records the kernel dropped")
        out.append("# TYPE ktcpvs_log_dropped_total counter")
        out.append(f"ktcpvs_log_dropped_total {info.log_dropped}")
    return "\n".join(out) + "\n"


def run(out: TextIO, *, as_json: bool, prometheus: bool, watch: float | None) -> int:
    prev: dict[Key, int] | None = None
    last = time.monotonic()
    while True:
        if prometheus:
            info, rows = read_with_info()
            out.write(format_prometheus(rows, info))
            out.flush()
            if not watch:
                return 0
            time.sleep(watch)
            continue
        rows = read()
        if as_json:
            out.write(json.dumps([asdict(r) for r in rows]) + "\n")
        else:
            now = time.monotonic()
            rates = None
            if prev is not None:
                dt = max(now - last, 1e-6)
                rates = {_key(r): (r.requests - prev.get(_key(r), 0)) / dt for r in rows}
            if watch:
                out.write("\x1b[H\x1b[2J")
            out.write(format_text(rows, rates) if rows else "no services configured\n")
            prev = {_key(r): r.requests for r in rows}
            last = now
        out.flush()
        if not watch:
            return 0
        time.sleep(watch)
