"""`l7ctl status`: the module's version and the namespace's running configuration."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TextIO

from l7ctl import __version__
from l7ctl.protocol import Counters, Info, PermissionDenied, Reader


@dataclass(frozen=True)
class Status:
    info: Info
    objects: list[Counters] = field(default_factory=list)
    # Reading the configuration needs CAP_NET_ADMIN; any user may read info.
    config_readable: bool = True


def read() -> Status:
    """Ask the module for its status in the caller's network namespace."""
    with Reader() as c:
        info = c.info()
        try:
            objects = c.stats() if info.service_count else []
        except PermissionDenied:
            return Status(info, [], False)
    return Status(info, objects)


def format_text(st: Status) -> str:
    info = st.info
    lines = [
        f"ktcpvs module {info.module_version} (netlink protocol {info.proto_version}), "
        f"l7ctl {__version__}",
        f"configuration generation {info.generation}"
        + (f" from {info.source}" if info.source else ""),
    ]
    if info.service_count == 0:
        lines.append("no services configured")
        return "\n".join(lines) + "\n"
    lines.append(f"{info.service_count} service(s), {info.connections} client connection(s)")
    if not st.config_readable:
        lines.append("(the configuration itself needs CAP_NET_ADMIN to read)")
    for o in st.objects:
        if o.kind == "service":
            lines.append(f"service {o.name} listen {o.address}")
        elif o.kind == "pool":
            lines.append(f"pool {o.name} scheduler {o.scheduler}")
        else:
            cool = ", cooling down after failures" if o.cooldown else ""
            lines.append(f"  server {o.address} weight {o.weight} {o.state}{cool}{_check(o)}")
    return "\n".join(lines) + "\n"


def _check(o: Counters) -> str:
    """A server's health check as status shows it ("" without a check)."""
    if o.check == "none":
        return ""
    last = f", last {o.check_last}" if o.check_last else ""
    return f", check {o.check}{last}, {o.check_changes} change(s)"


def run(json_output: bool, out: TextIO) -> int:
    st = read()
    if json_output:
        out.write(json.dumps(asdict(st.info) | {"objects": [asdict(o) for o in st.objects]}) + "\n")
    else:
        out.write(format_text(st))
    return 0
