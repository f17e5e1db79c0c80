"""l7ctl.rawgenl, the standard-library netlink codec of the read-only queries
(`l7ctl health`), against pyroute2's: the same messages decoded to the same
values, requests pyroute2 reads back as sent, the kernel's refusals with
their extended ack messages, and a real socket to the host kernel's own
generic netlink controller (no module of ours is involved)."""

from __future__ import annotations

import errno
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from l7ctl import protocol, rawgenl
from l7ctl.netlink import ktcpvs_msg

FAMILY_ID = 0x1F

_MAX = {"uint8": 0xFF, "uint16": 0xFFFF, "uint32": 0xFFFF_FFFF, "uint64": (1 << 64) - 1}


def _value(kind: str) -> st.SearchStrategy[Any]:
    if kind in _MAX:
        return st.integers(0, _MAX[kind])
    if kind == "asciiz":
        return st.text(st.characters(blacklist_characters="\0", codec="utf-8"), max_size=40)
    return st.binary(max_size=300)


# every attribute of the family with a type both codecs know, and a value for it
ATTR = st.sampled_from(
    [(n, t) for n, t in protocol.ATTRS if t != "none"]
).flatmap(lambda a: st.tuples(st.just(a[0]), _value(a[1])))  # fmt: skip


def pyroute2_bytes(cmd: int, attrs: list[tuple[str, Any]], seq: int = 7) -> bytes:
    m = ktcpvs_msg()
    m["cmd"] = cmd
    m["version"] = protocol.GENL_VERSION
    m["attrs"] = attrs
    m["header"]["type"] = FAMILY_ID
    m["header"]["sequence_number"] = seq
    m.encode()
    return bytes(m.data)


def pyroute2_decoded(data: bytes) -> ktcpvs_msg:
    m = ktcpvs_msg(data)
    m.decode()
    return m


@settings(max_examples=200, deadline=None)
@given(st.lists(ATTR, max_size=12, unique_by=lambda a: a[0]), st.integers(1, 40))
def test_decodes_what_pyroute2_encodes_as_pyroute2_does(
    attrs: list[tuple[str, Any]], cmd: int
) -> None:
    data = pyroute2_bytes(cmd, attrs)
    (got,) = rawgenl.decode_datagram(data, protocol.ATTRS)
    want = pyroute2_decoded(data)
    assert got.cmd == cmd and got.mtype == FAMILY_ID and got.seq == 7
    for name, _ in protocol.ATTRS[1:]:
        assert got.get_attr(name) == want.get_attr(name), name


@settings(max_examples=200, deadline=None)
@given(st.lists(ATTR, max_size=12, unique_by=lambda a: a[0]))
def test_pyroute2_reads_back_what_is_encoded(attrs: list[tuple[str, Any]]) -> None:
    body = struct.pack("=BBH", 3, 1, 0) + rawgenl.encode_attrs(attrs, protocol.ATTRS)
    data = rawgenl.HDR.pack(rawgenl.HDR.size + len(body), FAMILY_ID, 1, 1, 0) + body
    m = pyroute2_decoded(data)
    for name, value in attrs:
        assert m.get_attr(name) == value, name


def test_several_messages_in_a_datagram_and_truncation() -> None:
    data = pyroute2_bytes(10, [("KTCPVS_A_GENERATION", 5)])
    data += pyroute2_bytes(11, [("KTCPVS_A_SOURCE", "site.rules")])
    assert [(m.cmd, m.attrs) for m in rawgenl.decode_datagram(data, protocol.ATTRS)] == [
        (10, {"KTCPVS_A_GENERATION": 5}),
        (11, {"KTCPVS_A_SOURCE": "site.rules"}),
    ]
    # a message cut short is left out, the ones before it kept
    assert len(rawgenl.decode_datagram(data[:-3], protocol.ATTRS)) == 1
    # an attribute of a type the table does not know (past its end) is left out
    extra = rawgenl.NLA_HDR.pack(8, len(protocol.ATTRS) + 5) + b"abcd"
    raw = pyroute2_bytes(10, [("KTCPVS_A_GENERATION", 5)]) + extra
    raw = struct.pack("=I", len(raw)) + raw[4:]
    (m,) = rawgenl.decode_datagram(raw, protocol.ATTRS)
    assert m.attrs == {"KTCPVS_A_GENERATION": 5}


def error_message(code: int, request: bytes, text: str, *, capped: bool) -> bytes:
    """An NLMSG_ERROR as the kernel sends it with extended acks on."""
    echoed = request[: rawgenl.HDR.size] if capped else request
    tlv = text.encode() + b"\0"
    attr = rawgenl.NLA_HDR.pack(4 + len(tlv), rawgenl.NLMSGERR_ATTR_MSG) + tlv
    attr += bytes(-len(attr) % 4)
    flags = rawgenl.NLM_F_ACK_TLVS | (rawgenl.NLM_F_CAPPED if capped else 0)
    body = struct.pack("=i", -code) + echoed + bytes(-len(echoed) % 4) + attr
    seq = struct.unpack_from("=I", request, 8)[0]
    return rawgenl.HDR.pack(rawgenl.HDR.size + len(body), rawgenl.NLMSG_ERROR, flags, seq, 0) + body


@pytest.mark.parametrize("capped", [True, False])
def test_a_refusal_carries_the_kernels_message(capped: bool) -> None:
    req = pyroute2_bytes(5, [("KTCPVS_A_TXN_ID", 3), ("KTCPVS_A_DATA", b"x" * 33)])
    data = error_message(errno.EINVAL, req, "pool 3: no server", capped=capped)
    off, length, mtype, flags, _ = next(rawgenl.frames(data))
    f = rawgenl._failure(data, off, length, mtype, flags)
    assert f is not None and f.code == errno.EINVAL and f.message == "pool 3: no server"
    assert f.reason() == "Invalid argument: pool 3: no server"
    ack = rawgenl.HDR.pack(36, rawgenl.NLMSG_ERROR, 0x100, 1, 0) + bytes(20)
    assert rawgenl._failure(ack, 0, 36, rawgenl.NLMSG_ERROR, 0x100) is None


def test_the_controller_of_the_host_kernel() -> None:
    """A real request: the controller family resolves itself (id 0x10), a
    family that does not exist is ENOENT, as the Reader needs them."""
    with rawgenl.Socket("nlctrl", rawgenl.CTRL_ATTRS, 1, timeout=5) as s:
        assert s.family_id == rawgenl.GENL_ID_CTRL
    with pytest.raises(rawgenl.NetlinkFailure) as e:
        rawgenl.Socket("l7ctl-test-none", rawgenl.CTRL_ATTRS, 1, timeout=5)
    assert e.value.code == errno.ENOENT
