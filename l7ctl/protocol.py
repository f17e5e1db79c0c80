"""The ktcpvs generic netlink protocol (docs/netlink.md): command and
attribute numbers, what the replies mean, and the read-only queries over
l7ctl.rawgenl (no pyroute2: `l7ctl health` runs every few seconds).

The numbers mirror kmod/uapi/ktcpvs.h.  Every failure the operator can act on
is raised as :class:`L7ctlError` with a one-line explanation.
"""

from __future__ import annotations

import errno
import ipaddress
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from l7ctl import rawgenl
from l7ctl.errors import L7ctlError
from l7ctl.rawgenl import NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, AttrTable

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
CMD_TLS_ADOPT = 14  # doit: take a client socket with kernel TLS on it (docs/tls.md)
MCGRP_CONFIG = "config"
MCGRP_LOG = "log"

CHUNK_MAX = 32768
CONFIG_MAX = 8 << 20

OBJ_SERVICE, OBJ_POOL, OBJ_SERVER = 1, 2, 3
ERROR_KINDS = (
    "parse", "header_timeout", "blocked", "redirect", "no_route", "unavailable",
    "connect", "bad_gateway", "backend_timeout", "backend_reset", "client_reset", "limit",
    "source_limit", "retry", "local", "answered", "misdirected",
)  # fmt: skip
STATES = ("up", "drain", "down")
# KTCPVS_A_CHECK_STATE: KTCPVS_CHECK_NONE, _UP, _DOWN
CHECK_STATES = ("none", "up", "down")
SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh")


# The attributes, by number (KTCPVS_A_*): name and type, for l7ctl.rawgenl
# and pyroute2 alike.
ATTRS: AttrTable = (
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
    ("KTCPVS_A_FD", "uint32"),
    ("KTCPVS_A_TLS_NAMES", "cdata"),
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


def refusal(code: int, reason: str, what: str) -> L7ctlError:
    """The error for a request the kernel refused with errno ``code``
    (``reason``: the errno's text and the kernel's message)."""
    if code in (errno.EPERM, errno.EACCES):
        return PermissionDenied(what)
    return L7ctlError(f"{what} failed: {reason}")


def assemble_config(parts: list[Any]) -> tuple[bytes, str] | None:
    """The running compiled configuration and its source file from the
    messages of a KTCPVS_CMD_GET_CONFIG dump (None: nothing runs)."""
    if not parts:
        return None
    size = parts[0].get_attr("KTCPVS_A_CONFIG_SIZE") or 0
    buf = bytearray(size)
    for p in parts:
        off = p.get_attr("KTCPVS_A_OFFSET") or 0
        data = p.get_attr("KTCPVS_A_DATA") or b""
        if off + len(data) > size:
            raise L7ctlError("the running configuration's chunks do not fit its size")
        buf[off : off + len(data)] = data
    return bytes(buf), parts[0].get_attr("KTCPVS_A_SOURCE") or ""


def family_socket(timeout: float) -> rawgenl.Socket:
    """A plain netlink socket bound to the ktcpvs family of the caller's
    network namespace."""
    try:
        return rawgenl.Socket(GENL_NAME, ATTRS, GENL_VERSION, timeout)
    except rawgenl.NetlinkFailure as e:
        if e.code == errno.ENOENT:
            raise ModuleNotLoaded() from None
        raise refusal(e.code, e.reason(), "resolving the ktcpvs netlink family") from None
    except rawgenl.NoAnswer as e:
        raise L7ctlError(f"resolving the ktcpvs netlink family failed: {e}") from None


def adopt_attributes(service: str, names: Sequence[str] | None) -> list[tuple[str, Any]]:
    """KTCPVS_CMD_TLS_ADOPT's attributes but the descriptor: the TLS
    service on SERVICE (ADDR:PORT), the host names of the handshake's
    certificate (Handover.tls_adopt)."""
    attrs: list[tuple[str, Any]] = [("KTCPVS_A_OBJ_ADDR", encode_addr(service))]
    if names is not None:
        attrs.append(("KTCPVS_A_TLS_NAMES", b"".join(n.encode() + b"\0" for n in names)))
    return attrs


class Handover:
    """KTCPVS_CMD_TLS_ADOPT, the TLS daemon's request (one per connection),
    over a plain socket: the standard library only, no pyroute2 in the
    daemon's per-connection path (docs/tls.md)."""

    def __init__(self, timeout: float = 10.0) -> None:
        self._sock = family_socket(timeout)

    def tls_adopt(self, fd: int, service: str, names: Sequence[str] | None = None) -> None:
        """Hand the module a client connection whose TLS handshake is done
        and whose two directions are in kernel TLS: the socket of descriptor
        FD (the caller's), for the TLS service on SERVICE (ADDR:PORT).
        NAMES: the host names of the handshake's certificate (lower case,
        "*." wildcards); a request for another host is answered 421 (None:
        no check).  The caller closes its descriptor afterwards; the
        connection is the module's from here on."""
        attrs = [("KTCPVS_A_FD", fd), *adopt_attributes(service, names)]
        what = "handing over the TLS connection"
        try:
            self._sock.request(CMD_TLS_ADOPT, attrs, NLM_F_REQUEST | NLM_F_ACK)
        except rawgenl.NetlinkFailure as e:
            raise refusal(e.code, e.reason(), what) from None
        except rawgenl.NoAnswer as e:
            raise L7ctlError(f"{what} failed: {e}") from None

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Handover:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Reader:
    """The read-only queries of the ktcpvs family in the caller's network
    namespace: the module's status, the counters, the running configuration,
    the recent access log.  Each waits at most ``timeout`` seconds for the
    kernel's answer."""

    def __init__(self, timeout: float = 10.0) -> None:
        self._sock = family_socket(timeout)

    def _request(
        self, cmd: int, what: str, flags: int = NLM_F_REQUEST, unsupported: str = ""
    ) -> list[Any]:
        try:
            return list(self._sock.request(cmd, flags=flags))
        except rawgenl.NetlinkFailure as e:
            if e.code == errno.EOPNOTSUPP and unsupported:
                raise L7ctlError(unsupported) from None
            raise refusal(e.code, e.reason(), what) from None
        except rawgenl.NoAnswer as e:
            raise L7ctlError(f"{what} failed: {e}") from None

    def info(self) -> Info:
        (reply,) = self._request(CMD_GET_INFO, "reading the module's status")
        return info_from_msg(reply)

    def stats(self) -> list[Counters]:
        """Counters of every service, pool and server of the running configuration."""
        msgs = self._request(CMD_GET_STATS, "reading the counters", NLM_F_REQUEST | NLM_F_DUMP)
        return [counters_from_msg(m) for m in msgs]

    def running_config(self) -> tuple[bytes, str] | None:
        """The running compiled configuration and its source file, or None."""
        what = "reading the running configuration"
        return assemble_config(self._request(CMD_GET_CONFIG, what, NLM_F_REQUEST | NLM_F_DUMP))

    def log_dump(self) -> list[Any]:
        """The messages of a KTCPVS_CMD_GET_LOG dump, each carrying
        KTCPVS_A_LOG_RECORDS (l7ctl.accesslog decodes them)."""
        return self._request(
            CMD_GET_LOG, "reading the access log", NLM_F_REQUEST | NLM_F_DUMP,
            unsupported="this ktcpvs module keeps no access log (too old)",
        )  # fmt: skip

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
