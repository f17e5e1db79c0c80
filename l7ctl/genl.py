"""What the ktcpvs and IPVS clients share: one generic netlink family, bound once."""

from __future__ import annotations

import errno
from types import TracebackType
from typing import Any, ClassVar

from pyroute2.netlink import NLM_F_REQUEST, genlmsg
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic import GenericNetlinkSocket

from l7ctl.errors import L7ctlError
from l7ctl.rawgenl import NetlinkFailure


def reason(e: NetlinkError) -> str:
    """What the kernel said: the errno's text, and its own message when it gave one."""
    msg = e.args[1] if len(e.args) > 1 else ""
    return NetlinkFailure(e.code, str(msg or "")).reason()


class GenlClient:
    """A socket bound to one generic netlink family in the caller's network namespace.

    Subclasses name the family and its message class, and say what a missing
    family and a failed command mean to the operator.
    """

    family: ClassVar[str]
    message: ClassVar[type[genlmsg]]
    version: ClassVar[int] = 1

    def __init__(self) -> None:
        # extended acks: a refusal carries the kernel's reason (NL_SET_ERR_MSG)
        self._sock = GenericNetlinkSocket(ext_ack=True)
        try:
            self._sock.bind(self.family, self.message)
        except NetlinkError as e:
            self._sock.close()
            if e.code == errno.ENOENT:
                raise self.missing() from None
            raise self.failed(e, f"resolving the {self.family} netlink family") from None

    def missing(self) -> L7ctlError:
        """The error when the family is not registered (its module not loaded)."""
        return L7ctlError(f"netlink family {self.family} not found")

    def failed(self, e: NetlinkError, what: str) -> L7ctlError:
        """The error for a command the kernel refused."""
        return L7ctlError(f"{what} failed: {reason(e)}")

    def request(
        self, cmd: int, attrs: list[tuple[str, Any]] | None = None, flags: int = NLM_F_REQUEST
    ) -> list[Any]:
        """Send one command and return the kernel's reply messages."""
        msg = self.message()
        msg["cmd"] = cmd
        msg["version"] = self.version
        msg["attrs"] = attrs or []
        return list(self._sock.nlm_request(msg, msg_type=self._sock.prid, msg_flags=flags))

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> GenlClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
