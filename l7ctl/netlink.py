"""Generic netlink client for the ktcpvs module (protocol: docs/netlink.md).

The numbers mirror kmod/uapi/ktcpvs.h.  Every failure the operator can act on
is raised as :class:`L7ctlError` with a one-line explanation.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST, genlmsg
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic import GenericNetlinkSocket

from l7ctl.errors import L7ctlError

GENL_NAME = "ktcpvs"
GENL_VERSION = 1
PROTO_VERSION = 1

CMD_GET_INFO = 1
CMD_FLUSH = 2


class ktcpvs_msg(genlmsg):  # type: ignore[misc]
    """A ktcpvs generic netlink message."""

    prefix = "KTCPVS_A_"
    nla_map = (
        ("KTCPVS_A_UNSPEC", "none"),
        ("KTCPVS_A_MODULE_VERSION", "asciiz"),
        ("KTCPVS_A_PROTO_VERSION", "uint32"),
        ("KTCPVS_A_SERVICE_COUNT", "uint32"),
        ("KTCPVS_A_GENERATION", "uint64"),
    )


class ModuleNotLoaded(L7ctlError):
    """The ktcpvs generic netlink family does not exist in this kernel."""

    def __init__(self) -> None:
        super().__init__("ktcpvs module not loaded: modprobe ktcpvs")


class PermissionDenied(L7ctlError):
    """The kernel refused a command for lack of CAP_NET_ADMIN."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"permission denied: {what} needs CAP_NET_ADMIN in this network namespace "
            "(run as root)"
        )


@dataclass(frozen=True)
class Info:
    """What KTCPVS_CMD_GET_INFO reports."""

    module_version: str
    proto_version: int
    service_count: int
    generation: int


def _error(e: NetlinkError, what: str) -> L7ctlError:
    if e.code in (errno.EPERM, errno.EACCES):
        return PermissionDenied(what)
    return L7ctlError(f"{what} failed: {e.args[1] if len(e.args) > 1 else e}")


class Client:
    """A connection to the ktcpvs family in the caller's network namespace."""

    def __init__(self) -> None:
        self._sock = GenericNetlinkSocket()
        try:
            self._sock.bind(GENL_NAME, ktcpvs_msg)
        except NetlinkError as e:
            self._sock.close()
            if e.code == errno.ENOENT:
                raise ModuleNotLoaded() from None
            raise _error(e, "resolving the ktcpvs netlink family") from None

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def request(
        self, cmd: int, attrs: list[tuple[str, Any]] | None = None, flags: int = NLM_F_REQUEST
    ) -> list[ktcpvs_msg]:
        """Send one command and return the kernel's reply messages."""
        msg = ktcpvs_msg()
        msg["cmd"] = cmd
        msg["version"] = GENL_VERSION
        msg["attrs"] = attrs or []
        return list(self._sock.nlm_request(msg, msg_type=self._sock.prid, msg_flags=flags))

    def info(self) -> Info:
        try:
            (reply,) = self.request(CMD_GET_INFO)
        except NetlinkError as e:
            raise _error(e, "reading the module's status") from None
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
        )

    def flush(self) -> None:
        """Drop the namespace's whole configuration."""
        try:
            self.request(CMD_FLUSH, flags=NLM_F_REQUEST | NLM_F_ACK)
        except NetlinkError as e:
            raise _error(e, "flushing the configuration") from None
