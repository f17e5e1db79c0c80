"""The l7ctl command line: a thin layer over the library API.

Every command parses its arguments, calls one library function and prints
what it returns.  Errors the user can act on are raised as L7ctlError and
printed as one line on stderr with exit status 1 (2 for usage errors).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from l7ctl import __version__, tickets
from l7ctl.errors import L7ctlError

Handler = Callable[[argparse.Namespace], int]


def _cmd_status(args: argparse.Namespace) -> int:
    from l7ctl import status

    return status.run(json_output=args.json, out=sys.stdout)


def _cmd_flush(args: argparse.Namespace) -> int:
    from l7ctl.netlink import Client

    with Client() as c:
        c.flush()
    print("configuration flushed")
    if args.ipvs:
        from l7ctl import ipvs

        with ipvs.Client() as lvs:
            lvs.flush()
        print("IPVS virtual services flushed")
    return 0


def _cmd_apply(args: argparse.Namespace) -> int:
    from l7ctl.apply import apply_file

    res = apply_file(args.file, dry_run=args.dry_run)
    for w in res.warnings:
        print(w, file=sys.stderr)
    what = f"{res.services} service(s)"
    if res.virtuals:
        what += f" and {res.virtuals} IPVS virtual service(s)"
    if not res.changed:
        print(f"{args.file}: no change (ktcpvs and IPVS already run this configuration)")
    else:
        for line in res.describe():
            print(line)
        if args.dry_run:
            print(f"{args.file}: would apply {what}, {res.size} bytes of tables (dry run)")
            return 0
        gen = f", generation {res.generation}" if res.generation is not None else ""
        print(f"{args.file}: applied {what}{gen}")
    # Under systemd (INVOCATION_ID) the unit's reload reaches the daemon itself.
    if res.tls_services and not args.dry_run and "INVOCATION_ID" not in os.environ:
        print(
            f"{args.file}: {res.tls_services} TLS service(s): l7ctl tlsd reads the file itself; "
            "reload it for new listeners and certificates (systemctl reload ktcpvs-tlsd, "
            "or SIGHUP)"
        )
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    from l7ctl.stats import run

    return run(sys.stdout, as_json=args.json, prometheus=args.prometheus, watch=args.watch)


def _cmd_server_set(args: argparse.Namespace) -> int:
    from l7ctl.netlink import Client

    with Client() as c:
        c.server_set(args.pool, args.server, weight=args.weight, state=args.state)
    print(f"pool {args.pool}: server {args.server} updated")
    return 0


def _cmd_health(args: argparse.Namespace) -> int:
    from l7ctl import health

    return health.run(sys.stdout, as_json=args.json, fail_on=args.fail_on)


def _cmd_log(args: argparse.Namespace) -> int:
    from l7ctl import accesslog

    fmt = "json" if args.json else args.format
    return accesslog.run(sys.stdout, follow=args.follow, fmt=fmt)


def _cmd_parse(args: argparse.Namespace) -> int:
    from l7ctl.httpparse import run

    return run(sys.stdin.buffer.read(), sys.stdout, response=args.response)


def _cmd_tlsd(args: argparse.Namespace) -> int:
    from l7ctl import tlsd

    limits = tlsd.Limits(args.handshake_timeout, args.max_handshakes, args.max_per_source)
    workers = args.workers or os.cpu_count() or 1
    events = open(args.events, "a", encoding="utf-8") if args.events else None  # noqa: SIM115
    try:
        ok = tlsd.serve(Path(args.file), limits, events, workers, args.ticket_lifetime)
    finally:
        if events is not None:
            events.close()
    return 0 if ok else 1


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def _count(text: str) -> int:
    n = int(text)
    if not 0 <= n <= 256:
        raise argparse.ArgumentTypeError("from 0 to 256")
    return n


def _ticket_lifetime(text: str) -> int:
    n = int(text)
    if not 0 <= n <= tickets.LIFETIME_MAX:
        raise argparse.ArgumentTypeError(f"from 0 to {tickets.LIFETIME_MAX} seconds")
    return n


def _seconds(text: str) -> float:
    t = float(text)
    if not 0.1 <= t <= 300:
        raise argparse.ArgumentTypeError("from 0.1 to 300 seconds")
    return t


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="l7ctl",
        description="Configure and observe KTCPVS, the in-kernel Layer-7 content switch.",
    )
    p.add_argument("--version", action="version", version=f"l7ctl {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser(
        "status",
        help="show the module version and the running configuration",
        description="Show the ktcpvs module's version, protocol and the configuration "
        "of the current network namespace.",
    )
    s.add_argument("--json", action="store_true", help="print JSON instead of text")
    s.set_defaults(func=_cmd_status)

    s = sub.add_parser(
        "flush",
        help="remove the whole configuration of this network namespace",
        description="Remove every service, pool and rule table of the current network "
        "namespace from the module. IPVS is left alone unless --ipvs is given. "
        "Needs CAP_NET_ADMIN.",
    )
    s.add_argument(
        "--ipvs", action="store_true", help="also remove every IPVS virtual service (ipvsadm -C)"
    )
    s.set_defaults(func=_cmd_flush)

    s = sub.add_parser(
        "apply",
        help="compile a rules file and make it the running configuration",
        description="Compile FILE and push it to the module of this network namespace in "
        "one transaction, and its virtual blocks to IPVS: both end fully on the new "
        "configuration or, on any error, fully on the old one. Applying what already "
        "runs changes nothing. A file with virtual blocks owns the namespace's IPVS "
        "table; a file without leaves IPVS alone.",
    )
    s.add_argument("file", metavar="FILE")
    s.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would change (ktcpvs and IPVS), change nothing",
    )
    s.set_defaults(func=_cmd_apply)

    s = sub.add_parser(
        "stats",
        help="counters per service, pool and server",
        description="Show connections, requests, bytes and errors per service, pool and "
        "server of the running configuration.",
    )
    g = s.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true", help="print JSON")
    g.add_argument("--prometheus", action="store_true", help="Prometheus text format")
    s.add_argument("--watch", type=float, metavar="SECONDS", help="refresh, with rates")
    s.set_defaults(func=_cmd_stats)

    s = sub.add_parser(
        "server",
        help="change a running server without a full apply",
        description="Runtime server control. Changes last until the next apply.",
    )
    ssub = s.add_subparsers(dest="server_command", metavar="ACTION", required=True)
    s = ssub.add_parser(
        "set",
        help="set a server's weight and/or state",
        description="Set the weight (0..65535; 0 quiesces) and/or the state of server "
        "ADDR:PORT of POOL. drain and down take it out of scheduling; requests in "
        "progress finish. Needs CAP_NET_ADMIN.",
    )
    s.add_argument("pool", metavar="POOL")
    s.add_argument("server", metavar="ADDR:PORT")
    s.add_argument("--weight", type=int)
    s.add_argument("--state", choices=["up", "drain", "down"])
    s.set_defaults(func=_cmd_server_set)

    s = sub.add_parser(
        "health",
        help="is this director fit to serve? exit 0 ok, 1 degraded, 2 down",
        description="Judge the switch of this network namespace and print one line saying "
        "why. Exit 2 (down) when the module is not loaded, nothing is configured, or a pool "
        "that a route rule uses has no available server (up, weight > 0, not cooling down, "
        "not down by its check); 1 (degraded) when some server of such a pool is down, "
        "drained, cooling down or down by its check but every such pool has one; 0 (ok) "
        "otherwise. For keepalived's vrrp_script and MISC_CHECK.",
    )
    s.add_argument("--json", action="store_true", help="print JSON")
    s.add_argument(
        "--fail-on",
        choices=["degraded", "down"],
        default="degraded",
        help="'down': exit 0 when only degraded (for checks that must fail only when the "
        "director cannot serve)",
    )
    s.set_defaults(func=_cmd_health)

    s = sub.add_parser(
        "log",
        help="print the access log: recent records, or follow new ones",
        description="Print the access log records the module keeps for this network "
        "namespace (its most recent ones), one per request: time, client, service and rule "
        "line, pool, server, method, host, path, status, bytes in and out, connect, "
        "first-byte and total milliseconds, and how the exchange ended. With --follow, keep "
        "printing new records as they come; records the kernel had to drop are reported on "
        "stderr. Needs CAP_NET_ADMIN.",
    )
    s.add_argument("--follow", "-f", action="store_true", help="keep printing new records")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true", help="one JSON object per line")
    g.add_argument(
        "--format",
        choices=["text", "json", "combined"],
        default="text",
        help="text (default), json, or combined (Apache/nginx combined log format)",
    )
    s.set_defaults(func=_cmd_log)

    s = sub.add_parser(
        "parse",
        help="parse raw HTTP bytes from stdin with the switch's own parser",
        description="Read raw bytes on stdin and print one JSON object per pipelined "
        "message (JSON Lines), parsed by the same C parser the kernel runs. "
        "Exit 0 when every message was accepted, 1 otherwise.",
    )
    s.add_argument("--response", action="store_true", help="parse responses, not requests")
    s.set_defaults(func=_cmd_parse)

    s = sub.add_parser(
        "tlsd",
        help="run the TLS daemon of FILE's HTTPS services",
        description="Listen on the address of every TLS service of FILE ('listen ADDRESS "
        "tls'), do each client's TLS handshake (certificate by SNI, TLS 1.2 and 1.3), put the "
        "connection in kernel TLS and hand it to the module, which switches its requests. "
        "SIGHUP reloads FILE; a file that does not compile changes nothing. Runs until "
        "SIGTERM; ktcpvs-tlsd.service runs it. Needs CAP_NET_ADMIN and the key files.",
    )
    s.add_argument("file", metavar="FILE")
    s.add_argument(
        "--handshake-timeout",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="a handshake not done in this time is dropped (default 10)",
    )
    s.add_argument(
        "--max-handshakes",
        type=_positive,
        default=1024,
        metavar="N",
        help="handshakes in progress at most; more connections are reset (default 1024)",
    )
    s.add_argument(
        "--max-handshakes-per-source",
        dest="max_per_source",
        type=_positive,
        default=32,
        metavar="N",
        help="handshakes in progress from one client address at most (default 32)",
    )
    s.add_argument(
        "--workers",
        type=_count,
        default=1,
        metavar="N",
        help="processes, each listening on every address (SO_REUSEPORT) with its own bounds; "
        "0: one per CPU (default 1)",
    )
    s.add_argument(
        "--ticket-lifetime",
        type=_ticket_lifetime,
        default=tickets.LIFETIME_DEFAULT,
        metavar="SECONDS",
        help="session tickets let a client resume without a full handshake; their key, shared "
        "by the workers, is replaced this often, and a ticket opens until then; 0: no tickets, "
        f"a full handshake every time (default {tickets.LIFETIME_DEFAULT})",
    )
    s.add_argument("--events", metavar="FILE", help="append one JSON line per connection to FILE")
    s.set_defaults(func=_cmd_tlsd)

    # The rules-engine commands: check, route, test.
    from l7ctl.rulescli import register

    register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Handler = args.func
    try:
        return func(args)
    except L7ctlError as e:
        print(f"l7ctl: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
