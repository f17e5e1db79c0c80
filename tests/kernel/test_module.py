"""The module's foundation: load, netlink round trip, policy, permissions, netns, unload."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from nsutil import in_netns
from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST, genlmsg
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic import GenericNetlinkSocket

from l7ctl import __version__, netlink
from l7ctl.netlink import Client, ModuleNotLoaded

ROOT = Path(__file__).resolve().parents[2]
KO = os.environ.get("KTCPVS_KO") or str(ROOT / "build" / "ktcpvs.ko")
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]


class raw_msg(genlmsg):
    """Messages with attributes the kernel must refuse."""

    nla_map = (
        (1, "A_MODULE_VERSION", "asciiz"),
        (200, "A_BOGUS", "uint32"),
    )


def raw_request(cmd: int, attrs: list[tuple[str, object]]) -> None:
    s = GenericNetlinkSocket()
    try:
        s.bind("ktcpvs", raw_msg)
        m = raw_msg()
        m["cmd"] = cmd
        m["version"] = 1
        m["attrs"] = attrs
        s.nlm_request(m, msg_type=s.prid, msg_flags=NLM_F_REQUEST | NLM_F_ACK)
    finally:
        s.close()


@pytest.fixture
def netns() -> Iterator[str]:
    name = "kt-test-ns"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_module_is_loaded_with_its_version() -> None:
    assert "ktcpvs " in Path("/proc/modules").read_text()
    assert Path("/sys/module/ktcpvs/version").read_text().strip() == __version__


def test_info_round_trip() -> None:
    with Client() as c:
        info = c.info()
    assert info.module_version == __version__
    assert info.proto_version == netlink.PROTO_VERSION
    assert info.service_count == 0


def test_status_command_shows_module_and_empty_config() -> None:
    out = subprocess.run(["l7ctl", "status"], capture_output=True, text=True, check=True).stdout
    assert f"ktcpvs module {__version__} (netlink protocol 1)" in out
    assert "no services configured" in out
    js = subprocess.run(["l7ctl", "status", "--json"], capture_output=True, text=True, check=True)
    assert json.loads(js.stdout)["service_count"] == 0


def test_flush_bumps_the_generation() -> None:
    with Client() as c:
        before = c.info().generation
        c.flush()
        assert c.info().generation == before + 1


def test_unprivileged_user_is_refused_configuration_but_may_read() -> None:
    flush = subprocess.run([*NOBODY, "l7ctl", "flush"], capture_output=True, text=True)
    assert flush.returncode == 1
    assert "permission denied" in flush.stderr and "CAP_NET_ADMIN" in flush.stderr
    status = subprocess.run([*NOBODY, "l7ctl", "status"], capture_output=True, text=True)
    assert status.returncode == 0, status.stderr
    assert f"ktcpvs module {__version__}" in status.stdout


def test_policy_refuses_attributes_a_command_does_not_take() -> None:
    with pytest.raises(NetlinkError) as e:
        raw_request(netlink.CMD_GET_INFO, [("A_MODULE_VERSION", "x")])
    assert e.value.code == errno.EINVAL
    with pytest.raises(NetlinkError) as e:
        raw_request(netlink.CMD_GET_INFO, [("A_BOGUS", 1)])
    assert e.value.code == errno.EINVAL


def test_unknown_command_is_refused() -> None:
    with pytest.raises(NetlinkError) as e:
        raw_request(99, [])
    assert e.value.code == errno.EOPNOTSUPP


def test_state_is_per_network_namespace(netns: str) -> None:
    def flush_twice() -> int:
        with Client() as c:
            c.flush()
            c.flush()
            return c.info().generation

    with Client() as c:
        before = c.info().generation
    assert in_netns(netns, flush_twice) == 2  # a fresh namespace starts at 0
    with Client() as c:
        assert c.info().generation == before  # the initial namespace is untouched


def test_unload_and_reload_with_live_namespaces(netns: str) -> None:
    def gen() -> int:
        with Client() as c:
            c.flush()
            return c.info().generation

    assert in_netns(netns, gen) == 1
    subprocess.run(["rmmod", "ktcpvs"], check=True)
    try:
        with pytest.raises(ModuleNotLoaded, match=r"ktcpvs module not loaded: modprobe ktcpvs"):
            Client()
        out = subprocess.run(["l7ctl", "status"], capture_output=True, text=True)
        assert out.returncode == 1
        assert out.stderr.strip() == "l7ctl: ktcpvs module not loaded: modprobe ktcpvs"
    finally:
        subprocess.run(["insmod", str(KO)], check=True)
    assert in_netns(netns, gen) == 1  # state of the reloaded module starts afresh
