"""`l7ctl health`: is this director fit to serve?  For keepalived's
vrrp_script and MISC_CHECK, and any monitor that reads exit codes.

* 2, down: the module is not loaded, the namespace has no configuration, or
  some pool that a `route` rule sends requests to has no available server;
* 1, degraded: some server of such a pool is down, drained, cooling down
  after failures or marked down by its health check, but every such pool
  still has an available server;
* 0, ok.

A server is available when its state is up, its weight is above 0, it is
not cooling down and its check (if any) does not say down.  Pools no rule
routes to are not looked at.  One line says why; ``--json`` prints the same
as an object.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from l7ctl.errors import L7ctlError
from l7ctl.protocol import Counters, Info

OK, DEGRADED, DOWN = 0, 1, 2
NAMES = {OK: "ok", DEGRADED: "degraded", DOWN: "down"}


@dataclass(frozen=True)
class Health:
    code: int  # OK, DEGRADED or DOWN: the exit status
    reason: str
    pools: dict[str, dict[str, int]] = field(default_factory=dict)  # name -> available, servers

    @property
    def status(self) -> str:
        return NAMES[self.code]

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "code": self.code, "reason": self.reason,
                "pools": self.pools}  # fmt: skip


def _why_not(s: Counters) -> str:
    """Why a server is not available ("" if it is)."""
    if s.state != "up":
        return {"drain": "drained", "down": "down"}.get(s.state or "", "in an unknown state")
    if s.check == "down":
        return "down by its check" + (f" ({s.check_last})" if s.check_last else "")
    if s.cooldown:
        return "cooling down after failures"
    if not s.weight:
        return "weight 0"
    return ""


def decide(info: Info | None, objects: list[Counters], used: set[str] | None) -> Health:
    """The verdict from the module's info (None: the module is not loaded),
    its counters, and the pools route rules use (None: unknown, all pools)."""
    if info is None:
        return Health(DOWN, "ktcpvs module not loaded")
    if info.service_count == 0:
        return Health(DOWN, "no configuration: no service in this namespace")
    servers: dict[str, list[Counters]] = {}
    for o in objects:
        if o.kind == "pool":
            servers.setdefault(o.name, [])
        elif o.kind == "server":
            servers.setdefault(o.name, []).append(o)
    names = sorted(servers) if used is None else sorted(used)
    pools: dict[str, dict[str, int]] = {}
    empty: list[str] = []
    impaired: list[str] = []
    for name in names:
        members = servers.get(name, [])
        avail = [s for s in members if s.available]
        pools[name] = {"available": len(avail), "servers": len(members)}
        if not avail:
            empty.append(name)
        # weight 0 is a choice of the file, not an impairment
        impaired += [
            f"{name} {s.address} {why}"
            for s in members
            if (why := _why_not(s)) and why != "weight 0"
        ]
    if empty:
        return Health(DOWN, "no available server in pool " + ", ".join(empty), pools)
    if impaired:
        return Health(DEGRADED, "; ".join(impaired), pools)
    n = sum(p["servers"] for p in pools.values())
    return Health(
        OK,
        f"{info.service_count} service(s), {len(pools)} pool(s), {n} server(s) available",
        pools,
    )


def read() -> Health:
    """Ask the module of the caller's namespace."""
    from l7ctl import tables
    from l7ctl.protocol import ModuleNotLoaded, Reader

    try:
        with Reader() as c:
            info = c.info()
            if info.service_count == 0:
                return decide(info, [], set())
            objects = c.stats()
            running = c.running_config()
    except ModuleNotLoaded:
        return decide(None, [], None)
    used = tables.route_pools(running[0]) if running is not None else None
    return decide(info, objects, used)


def run(
    out: TextIO,
    *,
    as_json: bool,
    fail_on: str = "degraded",
    reader: Callable[[], Health] = read,
) -> int:
    """Print the verdict; return the exit status (``fail_on`` "down": a
    degraded director exits 0, for checks that must fail only when down)."""
    try:
        h = reader()
    except L7ctlError as e:
        h = Health(DOWN, str(e))
    if as_json:
        out.write(json.dumps(h.to_json()) + "\n")
    else:
        out.write(f"{h.status}: {h.reason}\n")
    if h.code == DEGRADED and fail_on == "down":
        return OK
    return h.code
