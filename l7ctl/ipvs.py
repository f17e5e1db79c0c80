"""IPVS virtual services (the rules file's `virtual tcp|udp` blocks) over IPVS's netlink API.

The state of IPVS in a network namespace is read into plain data
(:class:`VService` with its :class:`Dest` list), compared with what a rules
file asks for (:func:`desired`), and changed by a list of :class:`Op` that
:func:`diff` computes: only what differs is added, changed or removed, so a
second apply of the same file sends nothing.

Scope: when a rules file has `virtual` blocks, l7ctl owns the namespace's
whole IPVS table -- services the file does not name are removed, as
`ipvsadm-restore` after `ipvsadm -C` would.  A file without any `virtual`
block leaves IPVS alone (IPVS may then be run by keepalived or ipvsadm);
`l7ctl flush --ipvs` empties it.

The messages are pyroute2's IPVS definitions (pyroute2.netlink.generic.ipvs);
requests are built here with every attribute the kernel wants spelled out.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any

from pyroute2.netlink import NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic import ipvs as nl

from l7ctl import ir
from l7ctl.errors import L7ctlError
from l7ctl.genl import GenlClient

PROTOS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}
PROTO_NAMES = {v: k for k, v in PROTOS.items()}
# IP_VS_CONN_F_* forwarding methods (include/uapi/linux/ip_vs.h).
FORWARDS = {"nat": 0, "local": 1, "tun": 2, "dr": 3}
FORWARD_NAMES = {v: k for k, v in FORWARDS.items()}
FWD_MASK = 0x7
SVC_F_PERSISTENT = 0x1
SVC_FLAGS_MASK = 0xFFFF


def _norm(addr: str | ir.IPAddress) -> str:
    return str(ipaddress.ip_address(str(addr)))


def endpoint(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


@dataclass(frozen=True, order=True)
class Dest:
    """A real server of a virtual service."""

    addr: str
    port: int
    weight: int = 1
    forward: str = "nat"

    @property
    def key(self) -> tuple[str, int]:
        return (self.addr, self.port)

    def __str__(self) -> str:
        return (
            f"server {endpoint(self.addr, self.port)} weight {self.weight} forward {self.forward}"
        )


@dataclass(frozen=True)
class VService:
    """An IPVS virtual service and its real servers."""

    proto: str
    addr: str
    port: int
    scheduler: str = "wlc"
    persistence: int = 0  # seconds, 0 = not persistent
    dests: tuple[Dest, ...] = field(default=())

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.proto, self.addr, self.port)

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.addr else socket.AF_INET

    def name(self) -> str:
        return f"virtual {self.proto} {endpoint(self.addr, self.port)}"

    def settings(self) -> str:
        s = f"scheduler {self.scheduler}"
        if self.persistence:
            s += f" persistence {self.persistence}s"
        return s


State = dict[tuple[str, str, int], VService]


def desired(virtuals: tuple[ir.Virtual, ...] | list[ir.Virtual]) -> State:
    """The IPVS state a rules file's `virtual` blocks ask for."""
    out: State = {}
    for v in virtuals:
        dests = tuple(sorted(Dest(_norm(s.addr), s.port, s.weight, v.forward) for s in v.servers))
        vs = VService(v.proto, _norm(v.addr), v.port, v.scheduler, v.persistence, dests)
        out[vs.key] = vs
    return out


@dataclass(frozen=True)
class Op:
    """One IPVS change: kind is add/set/del of a service or a dest."""

    kind: str  # add-service set-service del-service add-dest set-dest del-dest
    service: VService
    dest: Dest | None = None
    old: VService | Dest | None = None  # for set-*: what it was

    def __str__(self) -> str:
        s = self.service
        if self.kind == "add-service":
            return f"+ {s.name()} {s.settings()}"
        if self.kind == "del-service":
            return f"- {s.name()}"
        if self.kind == "set-service":
            assert isinstance(self.old, VService)
            return f"~ {s.name()}: {self.old.settings()} -> {s.settings()}"
        d = self.dest
        assert d is not None
        if self.kind == "add-dest":
            return f"+ {s.name()}: {d}"
        if self.kind == "del-dest":
            return f"- {s.name()}: server {endpoint(d.addr, d.port)}"
        assert isinstance(self.old, Dest)
        return f"~ {s.name()}: {self.old} -> weight {d.weight} forward {d.forward}"


def diff(current: State, want: State) -> list[Op]:
    """The operations that turn IPVS state `current` into `want`, in a safe order."""
    ops: list[Op] = []
    for key, cur in current.items():
        if key not in want:
            ops.append(Op("del-service", cur))
    for key, new in want.items():
        cur_or_none = current.get(key)
        if cur_or_none is None:
            ops.append(Op("add-service", new))
            ops.extend(Op("add-dest", new, d) for d in new.dests)
            continue
        cur = cur_or_none
        if (cur.scheduler, cur.persistence) != (new.scheduler, new.persistence):
            ops.append(Op("set-service", new, old=cur))
        have = {d.key: d for d in cur.dests}
        wanted = {d.key: d for d in new.dests}
        ops.extend(Op("del-dest", new, d) for k, d in have.items() if k not in wanted)
        for k, d in wanted.items():
            if k not in have:
                ops.append(Op("add-dest", new, d))
            elif have[k] != d:
                ops.append(Op("set-dest", new, d, old=have[k]))
    return ops


def _error(e: NetlinkError, what: str) -> L7ctlError:
    if e.code in (errno.EPERM, errno.EACCES):
        return L7ctlError(
            f"permission denied: {what} needs CAP_NET_ADMIN in this network namespace (run as root)"
        )
    return L7ctlError(f"IPVS: {what} failed: {e.args[1] if len(e.args) > 1 else e}")


class Client(GenlClient):
    """The IPVS generic netlink family in the caller's network namespace."""

    family = nl.GENL_NAME
    message = nl.ipvsmsg
    version = nl.GENL_VERSION

    def missing(self) -> L7ctlError:
        return L7ctlError("IPVS is not available: modprobe ip_vs")

    def failed(self, e: NetlinkError, what: str) -> L7ctlError:
        return _error(e, what)

    def __enter__(self) -> Client:
        return self

    def _request(
        self, cmd: int, attrs: list[tuple[str, Any]], flags: int = NLM_F_REQUEST | NLM_F_ACK
    ) -> list[nl.ipvsmsg]:
        return self.request(cmd, attrs, flags)

    # -- encoding -------------------------------------------------------------

    @staticmethod
    def _svc_key(s: VService) -> list[tuple[str, Any]]:
        return [
            ("IPVS_SVC_ATTR_AF", s.family),
            ("IPVS_SVC_ATTR_PROTOCOL", PROTOS[s.proto]),
            ("IPVS_SVC_ATTR_ADDR", s.addr),
            ("IPVS_SVC_ATTR_PORT", s.port),
        ]

    @classmethod
    def _svc_full(cls, s: VService) -> list[tuple[str, Any]]:
        # The netmask is a mask for IPv4 and a prefix length for IPv6 (a u32
        # the kernel reads raw: 128 is the bytes 80 00 00 00 on x86).
        netmask = "255.255.255.255" if s.family == socket.AF_INET else "128.0.0.0"
        flags = SVC_F_PERSISTENT if s.persistence else 0
        return [
            *cls._svc_key(s),
            ("IPVS_SVC_ATTR_SCHED_NAME", s.scheduler),
            ("IPVS_SVC_ATTR_FLAGS", {"flags": flags, "mask": SVC_FLAGS_MASK}),
            ("IPVS_SVC_ATTR_TIMEOUT", s.persistence),
            ("IPVS_SVC_ATTR_NETMASK", netmask),
        ]

    @staticmethod
    def _dest(d: Dest, full: bool) -> list[tuple[str, Any]]:
        family = socket.AF_INET6 if ":" in d.addr else socket.AF_INET
        attrs: list[tuple[str, Any]] = [
            ("IPVS_DEST_ATTR_ADDR_FAMILY", family),
            ("IPVS_DEST_ATTR_ADDR", d.addr),
            ("IPVS_DEST_ATTR_PORT", d.port),
        ]
        if full:
            attrs += [
                ("IPVS_DEST_ATTR_FWD_METHOD", FORWARDS[d.forward]),
                ("IPVS_DEST_ATTR_WEIGHT", d.weight),
                ("IPVS_DEST_ATTR_U_THRESH", 0),
                ("IPVS_DEST_ATTR_L_THRESH", 0),
            ]
        return attrs

    # -- reading --------------------------------------------------------------

    def read(self) -> State:
        """Every virtual service of the namespace (fwmark services are skipped)."""
        try:
            msgs = self._request(nl.IPVS_CMD_GET_SERVICE, [], NLM_F_REQUEST | NLM_F_DUMP)
        except NetlinkError as e:
            raise _error(e, "reading the virtual services") from None
        out: State = {}
        for m in msgs:
            a = m.get_attr("IPVS_CMD_ATTR_SERVICE")
            proto = PROTO_NAMES.get(a.get_attr("IPVS_SVC_ATTR_PROTOCOL") or 0)
            addr = a.get_attr("IPVS_SVC_ATTR_ADDR")
            if proto is None or addr is None or a.get_attr("IPVS_SVC_ATTR_FWMARK"):
                continue
            flags = (a.get_attr("IPVS_SVC_ATTR_FLAGS") or {}).get("flags", 0)
            persistence = a.get_attr("IPVS_SVC_ATTR_TIMEOUT") if flags & SVC_F_PERSISTENT else 0
            vs = VService(
                proto,
                _norm(addr),
                a.get_attr("IPVS_SVC_ATTR_PORT"),
                a.get_attr("IPVS_SVC_ATTR_SCHED_NAME"),
                int(persistence or 0),
            )
            out[vs.key] = VService(
                vs.proto, vs.addr, vs.port, vs.scheduler, vs.persistence, self._read_dests(vs)
            )
        return out

    def _read_dests(self, s: VService) -> tuple[Dest, ...]:
        try:
            msgs = self._request(
                nl.IPVS_CMD_GET_DEST,
                [("IPVS_CMD_ATTR_SERVICE", {"attrs": self._svc_key(s)})],
                NLM_F_REQUEST | NLM_F_DUMP,
            )
        except NetlinkError as e:
            raise _error(e, f"reading the servers of {s.name()}") from None
        dests = []
        for m in msgs:
            a = m.get_attr("IPVS_CMD_ATTR_DEST")
            fwd = (a.get_attr("IPVS_DEST_ATTR_FWD_METHOD") or 0) & FWD_MASK
            dests.append(
                Dest(
                    _norm(a.get_attr("IPVS_DEST_ATTR_ADDR")),
                    a.get_attr("IPVS_DEST_ATTR_PORT"),
                    a.get_attr("IPVS_DEST_ATTR_WEIGHT"),
                    FORWARD_NAMES.get(fwd, str(fwd)),
                )
            )
        return tuple(sorted(dests))

    # -- changing -------------------------------------------------------------

    def execute(self, op: Op) -> None:
        """Send one operation to the kernel."""
        s = op.service
        svc = ("IPVS_CMD_ATTR_SERVICE", {"attrs": self._svc_key(s)})
        try:
            if op.kind == "add-service":
                self._request(
                    nl.IPVS_CMD_NEW_SERVICE,
                    [("IPVS_CMD_ATTR_SERVICE", {"attrs": self._svc_full(s)})],
                )
            elif op.kind == "set-service":
                self._request(
                    nl.IPVS_CMD_SET_SERVICE,
                    [("IPVS_CMD_ATTR_SERVICE", {"attrs": self._svc_full(s)})],
                )
            elif op.kind == "del-service":
                self._request(nl.IPVS_CMD_DEL_SERVICE, [svc])
            else:
                assert op.dest is not None
                cmd = {
                    "add-dest": nl.IPVS_CMD_NEW_DEST,
                    "set-dest": nl.IPVS_CMD_SET_DEST,
                    "del-dest": nl.IPVS_CMD_DEL_DEST,
                }[op.kind]
                full = op.kind != "del-dest"
                self._request(
                    cmd, [svc, ("IPVS_CMD_ATTR_DEST", {"attrs": self._dest(op.dest, full)})]
                )
        except NetlinkError as e:
            raise _error(e, str(op)) from None

    def apply(self, ops: list[Op]) -> None:
        for op in ops:
            self.execute(op)

    def restore(self, state: State) -> None:
        """Bring IPVS back to `state` (a snapshot taken by read())."""
        self.apply(diff(self.read(), state))

    def flush(self) -> None:
        try:
            self._request(nl.IPVS_CMD_FLUSH, [])
        except NetlinkError as e:
            raise _error(e, "flushing the virtual services") from None
