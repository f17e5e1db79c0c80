"""`l7ctl status`: the module's version and the namespace's configuration."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TextIO

from l7ctl import __version__
from l7ctl.netlink import Client, Info


def read() -> Info:
    """Ask the module for its status in the caller's network namespace."""
    with Client() as c:
        return c.info()


def format_text(info: Info) -> str:
    lines = [
        f"ktcpvs module {info.module_version} (netlink protocol {info.proto_version}), "
        f"l7ctl {__version__}",
        f"configuration generation {info.generation}",
    ]
    if info.service_count == 0:
        lines.append("no services configured")
    else:
        lines.append(f"{info.service_count} service(s) configured")
    return "\n".join(lines) + "\n"


def run(json_output: bool, out: TextIO) -> int:
    info = read()
    if json_output:
        out.write(json.dumps(asdict(info)) + "\n")
    else:
        out.write(format_text(info))
    return 0
