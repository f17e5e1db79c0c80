"""Generic netlink client for the ktcpvs module (protocol: docs/netlink.md).

The numbers mirror kmod/uapi/ktcpvs.h.  Every failure the operator can act on
is raised as :class:`L7ctlError` with a one-line explanation.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import select
import socket
import struct
from dataclasses import dataclass
from typing import Any

from pyroute2.netlink import NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, genlmsg
from pyroute2.netlink.exceptions import NetlinkError

from l7ctl.errors import L7ctlError
from l7ctl.genl import GenlClient, reason

GENL_NAME = "ktcpvs"
GENL_VERSION = 1
PROTO_VERSION = 1

CMD_GET_INFO = 1
CMD_FLUSH = 2
CMD_CONFIG_BEGIN = 3
CMD_CONFIG_CHUNK = 4
CMD_CONFIG_COMMIT = 5
CMD_CONFIG_ABORT = 6
CMD_GET_STATS = 7
CMD_GET_CONFIG = 8
CMD_SERVER_SET = 9
CMD_NOTIFY = 10
CMD_LOG = 11  # multicast ("log"): access log records
CMD_CHECK = 12  # multicast ("config"): a health check changed a server's state
CMD_GET_LOG = 13  # dump: the namespace's most recent access log records
MCGRP_CONFIG = "config"
MCGRP_LOG = "log"

CHUNK_MAX = 32768
CONFIG_MAX = 8 << 20

OBJ_SERVICE, OBJ_POOL, OBJ_SERVER = 1, 2, 3
ERROR_KINDS = (
    "parse", "header_timeout", "blocked", "redirect", "no_route", "unavailable",
    "connect", "bad_gateway", "backend_timeout", "backend_reset", "client_reset", "limit",
    "source_limit", "retry", "local", "answered",
)  # fmt: skip
STATES = ("up", "drain", "down")
# KTCPVS_A_CHECK_STATE: KTCPVS_CHECK_NONE, _UP, _DOWN
CHECK_STATES = ("none", "up", "down")
SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh")


class ktcpvs_msg(genlmsg):  # type: ignore[misc]
    """A ktcpvs generic netlink message."""

    prefix = "KTCPVS_A_"
    nla_map = (
        ("KTCPVS_A_UNSPEC", "none"),
        ("KTCPVS_A_MODULE_VERSION", "asciiz"),
        ("KTCPVS_A_PROTO_VERSION", "uint32"),
        ("KTCPVS_A_SERVICE_COUNT", "uint32"),
        ("KTCPVS_A_GENERATION", "uint64"),
        ("KTCPVS_A_SOURCE", "asciiz"),
        ("KTCPVS_A_TXN_ID", "uint32"),
        ("KTCPVS_A_CONFIG_SIZE", "uint32"),
        ("KTCPVS_A_OFFSET", "uint32"),
        ("KTCPVS_A_DATA", "cdata"),
        ("KTCPVS_A_CONNECTIONS", "uint32"),
        ("KTCPVS_A_ALLOCS", "uint32"),
        ("KTCPVS_A_OBJ_KIND", "uint8"),
        ("KTCPVS_A_OBJ_NAME", "cdata"),
        ("KTCPVS_A_OBJ_ADDR", "cdata"),
        ("KTCPVS_A_OBJ_POOL", "cdata"),
        ("KTCPVS_A_WEIGHT", "uint32"),
        ("KTCPVS_A_STATE", "uint8"),
        ("KTCPVS_A_COOLDOWN", "uint8"),
        ("KTCPVS_A_ST_CONNS", "uint64"),
        ("KTCPVS_A_ST_ACTIVE", "uint32"),
        ("KTCPVS_A_ST_REQUESTS", "uint64"),
        ("KTCPVS_A_ST_BYTES_IN", "uint64"),
        ("KTCPVS_A_ST_BYTES_OUT", "uint64"),
        ("KTCPVS_A_ST_ERRORS", "cdata"),
        ("KTCPVS_A_PAD", "none"),
        ("KTCPVS_A_SCHED", "uint8"),
        ("KTCPVS_A_ST_SPLICED", "uint64"),
        ("KTCPVS_A_MAX_CONNECTIONS", "uint32"),
        ("KTCPVS_A_CHECK_STATE", "uint8"),
        ("KTCPVS_A_CHECK_LAST", "asciiz"),
        ("KTCPVS_A_CHECK_CHANGES", "uint64"),
        ("KTCPVS_A_LOG_RECORDS", "cdata"),
        ("KTCPVS_A_LOG_DROPPED", "uint64"),
    )


class ModuleNotLoaded(L7ctlError):
    """The ktcpvs generic netlink family does not exist in this kernel."""

    def __init__(self) -> None:
        super().__init__("ktcpvs module not loaded: modprobe ktcpvs")


class PermissionDenied(L7ctlError):
    """The kernel refused a command for lack of CAP_NET_ADMIN."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"permission denied: {what} needs CAP_NET_ADMIN in this network namespace (run as root)"
        )


@dataclass(frozen=True)
class Info:
    """What KTCPVS_CMD_GET_INFO reports."""

    module_version: str
    proto_version: int
    service_count: int
    generation: int
    connections: int = 0
    allocations: int = 0
    source: str = ""
    max_connections: int = 0
    log_dropped: int = 0  # access log records dropped in this namespace so far


@dataclass(frozen=True)
class Counters:
    """Counters of one service, pool or server (KTCPVS_CMD_GET_STATS)."""

    kind: str  # "service", "pool" or "server"
    name: str  # service or pool name; for a server, its pool
    address: str  # "addr:port" for services and servers, "" for pools
    conns: int
    active: int
    requests: int
    bytes_in: int
    bytes_out: int
    errors: dict[str, int]
    weight: int | None = None
    state: str | None = None
    cooldown: bool = False
    scheduler: str | None = None
    spliced: int = 0  # of bytes_in + bytes_out, those relayed zero-copy
    check: str = "none"  # a server's active check: "none" (no check), "up" or "down"
    check_last: str = ""  # the last check's result: "200", "refused", "timeout", ...
    check_changes: int = 0  # times the check changed the server's state

    @property
    def available(self) -> bool:
        """A server that can take new requests: up, weight > 0, not cooling
        down after failures, and not marked down by its check."""
        return (
            self.kind == "server"
            and self.state == "up"
            and bool(self.weight)
            and not self.cooldown
            and self.check != "down"
        )


def encode_addr(endpoint: str) -> bytes:
    """ADDR:PORT or [ADDR6]:PORT as KTCPVS_A_OBJ_ADDR."""
    host, sep, port_s = endpoint.rpartition(":")
    try:
        if not sep:
            raise ValueError("no port")
        ip = ipaddress.ip_address(host.strip("[]"))
        port = int(port_s)
        if not 0 < port < 65536:
            raise ValueError("port out of range")
    except ValueError as e:
        raise L7ctlError(f"bad server address {endpoint!r}: {e} (want ADDR:PORT)") from None
    raw = ip.packed.ljust(16, b"\0")
    return bytes([ip.version, 0]) + port.to_bytes(2, "big") + raw


def format_addr(raw: bytes) -> str:
    """Decode KTCPVS_A_OBJ_ADDR: family u8, pad u8, port be16, address[16]."""
    family, port = raw[0], int.from_bytes(raw[2:4], "big")
    if family == 4:
        return f"{ipaddress.IPv4Address(raw[4:8])}:{port}"
    return f"[{ipaddress.IPv6Address(raw[4:20])}]:{port}"


def _error(e: NetlinkError, what: str) -> L7ctlError:
    if e.code in (errno.EPERM, errno.EACCES):
        return PermissionDenied(what)
    return L7ctlError(f"{what} failed: {reason(e)}")


class Client(GenlClient):
    """A connection to the ktcpvs family in the caller's network namespace."""

    family = GENL_NAME
    message = ktcpvs_msg
    version = GENL_VERSION

    def missing(self) -> L7ctlError:
        return ModuleNotLoaded()

    def failed(self, e: NetlinkError, what: str) -> L7ctlError:
        return _error(e, what)

    def __enter__(self) -> Client:
        return self

    def info(self) -> Info:
        try:
            (reply,) = self.request(CMD_GET_INFO)
        except NetlinkError as e:
            raise _error(e, "reading the module's status") from None
        return info_from_msg(reply)

    def flush(self) -> None:
        """Drop the namespace's whole configuration."""
        try:
            self.request(CMD_FLUSH, flags=NLM_F_REQUEST | NLM_F_ACK)
        except NetlinkError as e:
            raise _error(e, "flushing the configuration") from None

    def push_config(self, blob: bytes, source: str = "") -> int:
        """Send a compiled configuration in one transaction; return its generation.

        begin -> chunks -> commit: the kernel validates the whole blob at commit
        and swaps it in atomically.  On any failure the transaction is aborted
        and the running configuration is untouched.
        """
        if not blob or len(blob) > CONFIG_MAX:
            raise L7ctlError(f"compiled configuration of {len(blob)} bytes is out of range")
        try:
            (reply,) = self.request(
                CMD_CONFIG_BEGIN,
                [("KTCPVS_A_CONFIG_SIZE", len(blob)), ("KTCPVS_A_SOURCE", source[:255])],
            )
        except NetlinkError as e:
            raise _error(e, "starting a configuration transaction") from None
        txn = reply.get_attr("KTCPVS_A_TXN_ID")
        try:
            for off in range(0, len(blob), CHUNK_MAX):
                self.request(
                    CMD_CONFIG_CHUNK,
                    [("KTCPVS_A_TXN_ID", txn), ("KTCPVS_A_OFFSET", off),
                     ("KTCPVS_A_DATA", blob[off : off + CHUNK_MAX])],
                    flags=NLM_F_REQUEST | NLM_F_ACK,
                )  # fmt: skip
            (done,) = self.request(CMD_CONFIG_COMMIT, [("KTCPVS_A_TXN_ID", txn)])
        except NetlinkError as e:
            with contextlib.suppress(NetlinkError):
                self.request(
                    CMD_CONFIG_ABORT, [("KTCPVS_A_TXN_ID", txn)], flags=NLM_F_REQUEST | NLM_F_ACK
                )
            raise _error(e, "applying the configuration") from None
        return int(done.get_attr("KTCPVS_A_GENERATION"))

    def server_set(
        self, pool: str, endpoint: str, *, weight: int | None = None, state: str | None = None
    ) -> None:
        """Change a running server's weight and/or state (up, drain, down)."""
        attrs: list[tuple[str, Any]] = [
            ("KTCPVS_A_OBJ_POOL", pool.encode()),
            ("KTCPVS_A_OBJ_ADDR", encode_addr(endpoint)),
        ]
        if weight is not None:
            if not 0 <= weight <= 65535:
                raise L7ctlError(f"weight {weight} out of range 0..65535")
            attrs.append(("KTCPVS_A_WEIGHT", weight))
        if state is not None:
            if state not in STATES:
                raise L7ctlError(f"state {state!r}: want one of {', '.join(STATES)}")
            attrs.append(("KTCPVS_A_STATE", STATES.index(state)))
        if weight is None and state is None:
            raise L7ctlError("nothing to change: give --weight and/or --state")
        try:
            self.request(CMD_SERVER_SET, attrs, flags=NLM_F_REQUEST | NLM_F_ACK)
        except NetlinkError as e:
            if e.code == errno.ENOENT:
                raise L7ctlError(f"no server {endpoint} in pool {pool!r}") from None
            raise _error(e, "changing the server") from None

    def running_config(self) -> tuple[bytes, str] | None:
        """The running compiled configuration and its source file, or None."""
        try:
            parts = self.request(CMD_GET_CONFIG, flags=NLM_F_REQUEST | NLM_F_DUMP)
        except NetlinkError as e:
            raise _error(e, "reading the running configuration") from None
        if not parts:
            return None
        size = parts[0].get_attr("KTCPVS_A_CONFIG_SIZE")
        buf = bytearray(size)
        for p in parts:
            off = p.get_attr("KTCPVS_A_OFFSET")
            data = p.get_attr("KTCPVS_A_DATA")
            buf[off : off + len(data)] = data
        return bytes(buf), parts[0].get_attr("KTCPVS_A_SOURCE") or ""

    def stats(self) -> list[Counters]:
        """Counters of every service, pool and server of the running configuration."""
        try:
            msgs = self.request(CMD_GET_STATS, flags=NLM_F_REQUEST | NLM_F_DUMP)
        except NetlinkError as e:
            raise _error(e, "reading the counters") from None
        return [counters_from_msg(m) for m in msgs]

    def log_dump(self) -> list[Any]:
        """The messages of a KTCPVS_CMD_GET_LOG dump, each carrying
        KTCPVS_A_LOG_RECORDS (l7ctl.accesslog decodes them)."""
        try:
            return self.request(CMD_GET_LOG, flags=NLM_F_REQUEST | NLM_F_DUMP)
        except NetlinkError as e:
            if e.code == errno.EOPNOTSUPP:
                raise L7ctlError("this ktcpvs module keeps no access log (too old)") from None
            raise _error(e, "reading the access log") from None

    def group_id(self, name: str) -> int:
        """The id of the family's multicast group ``name``."""
        groups: dict[str, int] = dict(self._sock.mcast_groups)
        if name not in groups:
            raise L7ctlError(f"this ktcpvs module has no {name!r} multicast group (too old)")
        return groups[name]


NETLINK_GENERIC = 16
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_BROADCAST_ERROR = 4
SO_RCVBUFFORCE = 33
NLMSG_MIN_TYPE = 0x10  # below: NOOP, ERROR, DONE, OVERRUN


def parse_messages(data: bytes) -> list[ktcpvs_msg]:
    """The ktcpvs messages in one datagram read from a netlink socket (control
    messages and anything truncated are skipped)."""
    out = []
    off = 0
    while off + 16 <= len(data):
        length, mtype = struct.unpack_from("=IH", data, off)
        if length < 16 or off + length > len(data):
            break
        if mtype >= NLMSG_MIN_TYPE:
            m = ktcpvs_msg(data[off : off + length])
            try:
                m.decode()
            except Exception:  # a message pyroute2 cannot decode is skipped
                pass
            else:
                out.append(m)
        off += (length + 3) & ~3
    return out


class Subscription:
    """A netlink socket that receives one of the family's multicast groups
    ("config" or "log"), in the caller's network namespace."""

    def __init__(self, group: str, what: str, rcvbuf: int = 8 << 20) -> None:
        with Client() as c:
            gid = c.group_id(group)
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        try:
            self.sock.bind((0, 0))
            # a large buffer: records arrive in bursts (root may go past rmem_max)
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
            except PermissionError:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, gid)
            if group == MCGRP_LOG:
                # the kernel learns when this reader had no room, and counts
                # the records it missed as dropped (KTCPVS_A_LOG_DROPPED)
                self.sock.setsockopt(SOL_NETLINK, NETLINK_BROADCAST_ERROR, 1)
        except PermissionError:
            self.sock.close()
            raise PermissionDenied(what) from None
        except OSError as e:
            self.sock.close()
            raise L7ctlError(f"{what} failed: {e.strerror}") from None

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self, timeout: float) -> tuple[list[ktcpvs_msg], bool]:
        """The messages that arrive within ``timeout`` seconds (all that are
        queued once one has), and whether the socket overran its buffer
        (ENOBUFS: the kernel dropped messages for this reader)."""
        msgs: list[ktcpvs_msg] = []
        overrun = False
        wait = timeout
        while select.select([self.sock], [], [], wait)[0]:
            try:
                data = self.sock.recv(1 << 20)
            except OSError as e:
                if e.errno != errno.ENOBUFS:
                    raise
                overrun = True
            else:
                msgs += parse_messages(data)
            wait = 0
        return msgs, overrun

    def close(self) -> None:
        self.sock.close()


def info_from_msg(reply: Any) -> Info:
    """The Info of a KTCPVS_CMD_GET_INFO reply; a module of another protocol is an error."""
    proto = reply.get_attr("KTCPVS_A_PROTO_VERSION")
    if proto != PROTO_VERSION:
        raise L7ctlError(
            f"ktcpvs module speaks netlink protocol {proto}, this l7ctl speaks "
            f"{PROTO_VERSION}: install matching versions"
        )
    return Info(
        module_version=reply.get_attr("KTCPVS_A_MODULE_VERSION"),
        proto_version=proto,
        service_count=reply.get_attr("KTCPVS_A_SERVICE_COUNT"),
        generation=reply.get_attr("KTCPVS_A_GENERATION"),
        connections=reply.get_attr("KTCPVS_A_CONNECTIONS") or 0,
        allocations=reply.get_attr("KTCPVS_A_ALLOCS") or 0,
        source=reply.get_attr("KTCPVS_A_SOURCE") or "",
        max_connections=reply.get_attr("KTCPVS_A_MAX_CONNECTIONS") or 0,
        log_dropped=reply.get_attr("KTCPVS_A_LOG_DROPPED") or 0,
    )


_KINDS = {OBJ_SERVICE: "service", OBJ_POOL: "pool", OBJ_SERVER: "server"}


def counters_from_msg(m: Any) -> Counters:
    """The Counters of one KTCPVS_CMD_GET_STATS message."""
    kind = _KINDS.get(m.get_attr("KTCPVS_A_OBJ_KIND"), "?")
    raw_err = m.get_attr("KTCPVS_A_ST_ERRORS") or b""
    errs = struct.unpack(f"<{len(raw_err) // 8}Q", raw_err[: len(raw_err) // 8 * 8])
    addr = m.get_attr("KTCPVS_A_OBJ_ADDR")
    name = m.get_attr("KTCPVS_A_OBJ_POOL" if kind == "server" else "KTCPVS_A_OBJ_NAME")
    state = m.get_attr("KTCPVS_A_STATE")
    sched = m.get_attr("KTCPVS_A_SCHED")
    check = m.get_attr("KTCPVS_A_CHECK_STATE")
    return Counters(
        kind=kind,
        name=bytes(name or b"").decode("utf-8", "replace"),
        address=format_addr(addr) if addr else "",
        conns=m.get_attr("KTCPVS_A_ST_CONNS") or 0,
        active=m.get_attr("KTCPVS_A_ST_ACTIVE") or 0,
        requests=m.get_attr("KTCPVS_A_ST_REQUESTS") or 0,
        bytes_in=m.get_attr("KTCPVS_A_ST_BYTES_IN") or 0,
        bytes_out=m.get_attr("KTCPVS_A_ST_BYTES_OUT") or 0,
        errors=dict(zip(ERROR_KINDS, errs, strict=False)),
        weight=m.get_attr("KTCPVS_A_WEIGHT"),
        state=STATES[state] if state is not None and state < 3 else None,
        cooldown=bool(m.get_attr("KTCPVS_A_COOLDOWN")),
        scheduler=SCHEDULERS[sched] if sched is not None and sched < 8 else None,
        spliced=m.get_attr("KTCPVS_A_ST_SPLICED") or 0,
        check=CHECK_STATES[check] if check is not None and check < 3 else "none",
        check_last=m.get_attr("KTCPVS_A_CHECK_LAST") or "",
        check_changes=m.get_attr("KTCPVS_A_CHECK_CHANGES") or 0,
    )
