"""Generic netlink client for the ktcpvs module (protocol: docs/netlink.md):
the commands that change the configuration over pyroute2, the read-only
queries over l7ctl.protocol.Reader, and the multicast subscriptions.

The protocol's numbers and types are l7ctl.protocol's, re-exported here.
Every failure the operator can act on is raised as :class:`L7ctlError` with
a one-line explanation.
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket
from collections.abc import Sequence
from typing import Any

from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST, genlmsg
from pyroute2.netlink.exceptions import NetlinkError

from l7ctl import rawgenl
from l7ctl.errors import L7ctlError
from l7ctl.genl import GenlClient, reason
from l7ctl.protocol import (
    ATTRS,
    CHECK_STATES,
    CHUNK_MAX,
    CMD_CHECK,
    CMD_CONFIG_ABORT,
    CMD_CONFIG_BEGIN,
    CMD_CONFIG_CHUNK,
    CMD_CONFIG_COMMIT,
    CMD_FLUSH,
    CMD_GET_CONFIG,
    CMD_GET_INFO,
    CMD_GET_LOG,
    CMD_GET_STATS,
    CMD_LOG,
    CMD_NOTIFY,
    CMD_SERVER_SET,
    CMD_TLS_ADOPT,
    CONFIG_MAX,
    ERROR_KINDS,
    GENL_NAME,
    GENL_VERSION,
    MCGRP_CONFIG,
    MCGRP_LOG,
    OBJ_POOL,
    OBJ_SERVER,
    OBJ_SERVICE,
    PROTO_VERSION,
    SCHEDULERS,
    STATES,
    Counters,
    Handover,
    Info,
    ModuleNotLoaded,
    PermissionDenied,
    Reader,
    counters_from_msg,
    encode_addr,
    format_addr,
    info_from_msg,
    refusal,
)

# The protocol's names are re-exported: callers import them from here.
__all__ = [
    "ATTRS",
    "CHECK_STATES",
    "CHUNK_MAX",
    "CMD_CHECK",
    "CMD_CONFIG_ABORT",
    "CMD_CONFIG_BEGIN",
    "CMD_CONFIG_CHUNK",
    "CMD_CONFIG_COMMIT",
    "CMD_FLUSH",
    "CMD_GET_CONFIG",
    "CMD_GET_INFO",
    "CMD_GET_LOG",
    "CMD_GET_STATS",
    "CMD_LOG",
    "CMD_NOTIFY",
    "CMD_SERVER_SET",
    "CMD_TLS_ADOPT",
    "CONFIG_MAX",
    "ERROR_KINDS",
    "GENL_NAME",
    "GENL_VERSION",
    "MCGRP_CONFIG",
    "MCGRP_LOG",
    "NETLINK_GENERIC",
    "OBJ_POOL",
    "OBJ_SERVER",
    "OBJ_SERVICE",
    "PROTO_VERSION",
    "SCHEDULERS",
    "STATES",
    "Client",
    "Counters",
    "Handover",
    "Info",
    "ModuleNotLoaded",
    "PermissionDenied",
    "Reader",
    "Subscription",
    "counters_from_msg",
    "encode_addr",
    "format_addr",
    "info_from_msg",
    "ktcpvs_msg",
    "parse_messages",
    "refusal",
]


class ktcpvs_msg(genlmsg):  # type: ignore[misc]
    """A ktcpvs generic netlink message."""

    prefix = "KTCPVS_A_"
    nla_map = ATTRS


def _error(e: NetlinkError, what: str) -> L7ctlError:
    return refusal(e.code, reason(e), what)


class Client(GenlClient):
    """A connection to the ktcpvs family in the caller's network namespace."""

    family = GENL_NAME
    message = ktcpvs_msg
    version = GENL_VERSION

    def __init__(self) -> None:
        super().__init__()
        self._queries: Reader | None = None  # the read-only queries' socket, on first use
        self._handover: Handover | None = None  # TLS handovers' socket, on first use

    def missing(self) -> L7ctlError:
        return ModuleNotLoaded()

    def failed(self, e: NetlinkError, what: str) -> L7ctlError:
        return _error(e, what)

    def __enter__(self) -> Client:
        return self

    def close(self) -> None:
        if self._queries is not None:
            self._queries.close()
        if self._handover is not None:
            self._handover.close()
        super().close()

    def _reader(self) -> Reader:
        if self._queries is None:
            self._queries = Reader()
        return self._queries

    def info(self) -> Info:
        return self._reader().info()

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

    def tls_adopt(self, fd: int, service: str, names: Sequence[str] | None = None) -> None:
        """KTCPVS_CMD_TLS_ADOPT (docs/tls.md): protocol.Handover.tls_adopt."""
        if self._handover is None:
            self._handover = Handover()
        self._handover.tls_adopt(fd, service, names)

    def running_config(self) -> tuple[bytes, str] | None:
        """The running compiled configuration and its source file, or None."""
        return self._reader().running_config()

    def stats(self) -> list[Counters]:
        """Counters of every service, pool and server of the running configuration."""
        return self._reader().stats()

    def log_dump(self) -> list[Any]:
        """The messages of a KTCPVS_CMD_GET_LOG dump (l7ctl.accesslog decodes them)."""
        return self._reader().log_dump()

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


def parse_messages(data: bytes) -> list[rawgenl.Message]:
    """The ktcpvs messages in one datagram read from a netlink socket (control
    messages and anything truncated are skipped)."""
    return rawgenl.decode_datagram(data, ATTRS)


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

    def receive(self, timeout: float) -> tuple[list[rawgenl.Message], bool]:
        """The messages that arrive within ``timeout`` seconds (all that are
        queued once one has), and whether the socket overran its buffer
        (ENOBUFS: the kernel dropped messages for this reader)."""
        msgs: list[rawgenl.Message] = []
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
