"""Generic netlink over a plain socket, with the standard library only.

`l7ctl health` runs every few seconds under keepalived: importing pyroute2
was most of its cost (docs/operations.md has the figures), so the read-only
queries (l7ctl.protocol.Reader) and the multicast subscriptions decode their
messages here.  Requests that change the configuration go through pyroute2
(l7ctl.netlink).

Attributes are decoded by a table of (name, type) pairs in attribute-number
order, the form of pyroute2's nla_map: the ktcpvs family's table
(l7ctl.protocol.ATTRS) serves both.  Types: none, uint8/16/32/64 (host
order), asciiz (a str, up to its NUL) and cdata (bytes).
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import time
from collections.abc import Iterator, Sequence
from typing import Any

AttrTable = Sequence[tuple[str, str]]

NETLINK_GENERIC = 16
SOL_NETLINK = 270
NETLINK_EXT_ACK = 11

NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_CAPPED = 0x100  # in an error: the request echoed is its header only
NLM_F_ACK_TLVS = 0x200  # in an error: extended ack attributes follow

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_MIN_TYPE = 0x10  # below: control messages
NLMSGERR_ATTR_MSG = 1  # the kernel's reason (NL_SET_ERR_MSG)

GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3

# the controller's attributes this module reads and writes
CTRL_ATTRS: AttrTable = (
    ("CTRL_ATTR_UNSPEC", "none"),
    ("CTRL_ATTR_FAMILY_ID", "uint16"),
    ("CTRL_ATTR_FAMILY_NAME", "asciiz"),
)

NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER
HDR = struct.Struct("=IHHII")  # struct nlmsghdr
GENL_HDR = struct.Struct("=BBH")  # struct genlmsghdr
NLA_HDR = struct.Struct("=HH")  # struct nlattr

_INTS = {"uint8": "=B", "uint16": "=H", "uint32": "=I", "uint64": "=Q"}


class NetlinkFailure(Exception):
    """The kernel refused a request: its errno and its own message, if any."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def reason(self) -> str:
        """The errno's text, and the kernel's message when it gave one."""
        text = os.strerror(self.code)
        return f"{text}: {self.message}" if self.message and self.message != text else text


class NoAnswer(Exception):
    """The kernel did not answer within the socket's timeout."""


def _align(n: int) -> int:
    return (n + 3) & ~3


def attributes(data: bytes, off: int, end: int) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of each attribute in data[off:end]; a truncated one ends it."""
    while off + NLA_HDR.size <= end:
        length, kind = NLA_HDR.unpack_from(data, off)
        if length < NLA_HDR.size or off + length > end:
            return
        yield kind & NLA_TYPE_MASK, data[off + NLA_HDR.size : off + length]
        off += _align(length)


def decode_value(kind: str, raw: bytes) -> Any:
    """One attribute's value by its table type (None if it does not fit)."""
    if kind in _INTS:
        fmt = _INTS[kind]
        return struct.unpack_from(fmt, raw)[0] if len(raw) >= struct.calcsize(fmt) else None
    if kind == "asciiz":
        return raw.split(b"\0", 1)[0].decode("utf-8", "replace")
    if kind == "cdata":
        return bytes(raw)
    return None


class Message:
    """One generic netlink message: its command and its attributes by name."""

    __slots__ = ("attrs", "cmd", "flags", "mtype", "seq")

    def __init__(self, mtype: int, flags: int, seq: int, cmd: int, attrs: dict[str, Any]) -> None:
        self.mtype, self.flags, self.seq, self.cmd, self.attrs = mtype, flags, seq, cmd, attrs

    def get_attr(self, name: str) -> Any:
        """The attribute's value, or None when the message does not carry it
        (the accessor pyroute2's messages have, so that decoders take either)."""
        return self.attrs.get(name)


def decode_message(data: bytes, off: int, length: int, table: AttrTable) -> Message:
    """The message of `length` bytes at data[off:]: attributes the table does
    not name, or of a type it does not know, are left out."""
    _, mtype, flags, seq, _ = HDR.unpack_from(data, off)
    cmd = data[off + HDR.size] if length >= HDR.size + GENL_HDR.size else 0
    attrs: dict[str, Any] = {}
    for kind, raw in attributes(data, off + HDR.size + GENL_HDR.size, off + length):
        if 0 < kind < len(table):
            name, typ = table[kind]
            value = decode_value(typ, raw)
            if value is not None:
                attrs[name] = value
    return Message(mtype, flags, seq, cmd, attrs)


def frames(data: bytes) -> Iterator[tuple[int, int, int, int, int]]:
    """(offset, length, type, flags, seq) of each whole message of a datagram."""
    off = 0
    while off + HDR.size <= len(data):
        length, mtype, flags, seq, _ = HDR.unpack_from(data, off)
        if length < HDR.size or off + length > len(data):
            return
        yield off, length, mtype, flags, seq
        off += _align(length)


def decode_datagram(data: bytes, table: AttrTable) -> list[Message]:
    """The family's messages of one datagram (control messages left out)."""
    return [
        decode_message(data, off, length, table)
        for off, length, mtype, _, _ in frames(data)
        if mtype >= NLMSG_MIN_TYPE
    ]


def encode_attrs(attrs: Sequence[tuple[str, Any]], table: AttrTable) -> bytes:
    """Attributes by table name: ints by their type, asciiz from a str (NUL added),
    cdata from bytes."""
    index = {name: (i, typ) for i, (name, typ) in enumerate(table)}
    out = bytearray()
    for name, value in attrs:
        i, typ = index[name]
        if typ in _INTS:
            raw = struct.pack(_INTS[typ], value)
        elif typ == "asciiz":
            raw = str(value).encode() + b"\0"
        else:
            raw = bytes(value)  # cdata: bytes only (a str raises TypeError)
        out += NLA_HDR.pack(NLA_HDR.size + len(raw), i) + raw
        out += bytes(_align(len(out)) - len(out))
    return bytes(out)


def _failure(data: bytes, off: int, length: int, mtype: int, flags: int) -> NetlinkFailure | None:
    """The failure an NLMSG_ERROR or a dump's NLMSG_DONE reports (None: an
    ack, or the end of a dump), with the extended ack's message if any."""
    end = off + length
    pos = off + HDR.size
    if pos + 4 > end:
        return None
    code = -struct.unpack_from("=i", data, pos)[0]
    if not code:
        return None
    message = ""
    pos += 4
    if flags & NLM_F_ACK_TLVS:
        if mtype == NLMSG_ERROR:  # the request echoed: its header only when capped
            if pos + HDR.size > end:
                return NetlinkFailure(code)
            pos += _align(HDR.size if flags & NLM_F_CAPPED else HDR.unpack_from(data, pos)[0])
        for kind, raw in attributes(data, pos, end):
            if kind == NLMSGERR_ATTR_MSG:
                message = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
    return NetlinkFailure(code, message)


class Socket:
    """A socket bound to one generic netlink family of the caller's network
    namespace: request() sends a command and returns the replies, waiting at
    most `timeout` seconds for each datagram."""

    def __init__(self, family: str, table: AttrTable, version: int, timeout: float = 10.0) -> None:
        self.table = table
        self.version = version
        self.timeout = timeout
        self.seq = 0
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        try:
            self.sock.bind((0, 0))
            self.sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
            self.family_id = self._resolve(family)
        except BaseException:
            self.sock.close()
            raise

    def _resolve(self, family: str) -> int:
        """The family's id (NetlinkFailure ENOENT: no such family)."""
        ctrl = (
            ("", "none"),
            ("CTRL_ATTR_FAMILY_ID", "uint16"),
            ("CTRL_ATTR_FAMILY_NAME", "asciiz"),
        )
        payload = encode_attrs([("CTRL_ATTR_FAMILY_NAME", family)], ctrl)
        (reply,) = self._exchange(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 1, payload, NLM_F_REQUEST, ctrl)
        fid = reply.get_attr("CTRL_ATTR_FAMILY_ID")
        if not isinstance(fid, int):
            raise NetlinkFailure(errno.EPROTO, f"no id for the {family} family")
        return fid

    def request(
        self, cmd: int, attrs: Sequence[tuple[str, Any]] = (), flags: int = NLM_F_REQUEST
    ) -> list[Message]:
        """Send one command and return the kernel's replies: one message, every
        message of a dump (NLM_F_DUMP), none for an acknowledged change."""
        payload = encode_attrs(attrs, self.table)
        return self._exchange(self.family_id, cmd, self.version, payload, flags, self.table)

    def _exchange(
        self, mtype: int, cmd: int, version: int, payload: bytes, flags: int, table: AttrTable
    ) -> list[Message]:
        self.seq += 1
        body = GENL_HDR.pack(cmd, version, 0) + payload
        self.sock.send(HDR.pack(HDR.size + len(body), mtype, flags, self.seq, 0) + body)
        out: list[Message] = []
        while True:
            data = self._receive()
            for off, length, typ, fl, seq in frames(data):
                if seq != self.seq:
                    continue  # a late answer to an earlier request
                if typ in (NLMSG_ERROR, NLMSG_DONE):
                    failure = _failure(data, off, length, typ, fl)
                    if failure:
                        raise failure
                    return out  # an ack, or the end of a dump
                out.append(decode_message(data, off, length, table))
                if not fl & NLM_F_MULTI and not flags & NLM_F_ACK:
                    return out  # the one reply of a command without ack
                # (a command with NLM_F_ACK: its reply, then the ack)

    def _receive(self) -> bytes:
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                raise NoAnswer(f"no answer from the kernel within {self.timeout:g} s")
            try:
                return self.sock.recv(1 << 17)
            except InterruptedError:
                continue

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Socket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
