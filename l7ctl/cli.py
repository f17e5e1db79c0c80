"""The l7ctl command line: a thin layer over the library API.

Every command parses its arguments, calls one library function and prints
what it returns.  Errors the user can act on are raised as L7ctlError and
printed as one line on stderr with exit status 1 (2 for usage errors).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from l7ctl import __version__
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
    return 0


def _cmd_parse(args: argparse.Namespace) -> int:
    from l7ctl import httpparse

    return httpparse.run(sys.stdin.buffer.read(), sys.stdout, response=args.response)


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
        "namespace from the module. Needs CAP_NET_ADMIN.",
    )
    s.set_defaults(func=_cmd_flush)

    s = sub.add_parser(
        "parse",
        help="parse raw HTTP bytes from stdin with the switch's own parser",
        description="Read raw bytes on stdin and print one JSON object per pipelined "
        "message (JSON Lines), parsed by the same C parser the kernel runs. "
        "Exit 0 when every message was accepted, 1 otherwise.",
    )
    s.add_argument("--response", action="store_true", help="parse responses, not requests")
    s.set_defaults(func=_cmd_parse)

    # Rules-engine commands (check, route, test) register here.
    try:
        from l7ctl import rulescli
    except ImportError:
        pass
    else:
        rulescli.register(sub)
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
