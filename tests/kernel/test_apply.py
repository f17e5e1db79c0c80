"""l7ctl apply and the control plane: a 10,000-rule table, raw malformed attributes,
permissions, change notifications, drain under load."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from demo_site import RULES, Site, connect, get, read_responses
from nsutil import in_netns
from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST, genlmsg
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic import GenericNetlinkSocket

from l7ctl import netlink
from l7ctl.apply import apply_file
from l7ctl.netlink import Client, ktcpvs_msg

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]
NRULES = 10_000


# l7ctl health runs during applies, and the bound of one run (keepalived's
# shipped timeout is 10 s; a run takes seconds under emulation)
HEALTH_RUNS = 5
HEALTH_RUN_MAX = 60.0


def big_rules(n: int = NRULES) -> str:
    """The demo pools and n path rules; the last one routes to cgi."""
    head = RULES.format(sched="wlc", header_timeout="10s").split("service web")[0]
    lines = [head, "service web listen 10.0.0.1:80 {"]
    lines += [f'    route images if path prefix "/r{i}/";' for i in range(n - 1)]
    lines += [f'    route cgi if path prefix "/r{n - 1}/";', "    route static;", "}"]
    return "\n".join(lines) + "\n"


# Compiling and pushing 10,000 rules twice took 237 s of a 6.1 guest
# (measured) and more than the default bound (240 s) when a second guest
# shared the host: cut short, its open transaction failed the next tests
# too.  Compiled once, 150 s of a 6.1 guest beside a second one.
@pytest.mark.timeout(600)
def test_many_rules_through_the_multi_chunk_transaction(site: Site) -> None:
    n = NRULES
    path = site.tmp / "big.rules"
    path.write_text(big_rules(n))
    try:
        res = in_netns(site.topo.director.ns, lambda: apply_file(path))
        assert res.changed and res.generation is not None
        assert res.size > 4 * netlink.CHUNK_MAX  # many chunks, well past one attribute
        blob = site.director(lambda: Client().running_config())
        assert blob is not None and len(blob[0]) == res.size and blob[1] == str(path)
        assert site.client(lambda: get(f"/r{n - 1}/last")).backend == "cgi"
        assert site.client(lambda: get("/r17/x")).backend in ("img1", "img2")
        assert site.client(lambda: get("/other")).backend == "static"
        # (that applying an unchanged file changes nothing is checked with
        # small files, test_ipvs.py and test_ipv6.py: compiling 10,000 rules
        # again costs minutes of a guest)
    finally:
        site.apply()


# -- malformed attributes sent raw ------------------------------------------------------


class raw_msg(genlmsg):  # type: ignore[misc]
    """ktcpvs attributes as raw bytes, so a test can send any length."""

    nla_map = (
        (6, "TXN_ID", "cdata"),
        (7, "CONFIG_SIZE", "cdata"),
        (8, "OFFSET", "cdata"),
        (9, "DATA", "cdata"),
        (14, "OBJ_ADDR", "cdata"),
        (15, "OBJ_POOL", "cdata"),
        (16, "WEIGHT", "cdata"),
        (17, "STATE", "cdata"),
        (200, "BOGUS", "cdata"),
    )


def u32(v: int) -> bytes:
    return struct.pack("=I", v)


def raw_errors() -> dict[str, int]:
    """Send malformed CHUNK/COMMIT/SERVER_SET requests; the errno of each."""
    s = GenericNetlinkSocket()
    s.bind("ktcpvs", raw_msg)
    out: dict[str, int] = {}
    txn = b"\0\0\0\0"

    def send(cmd: int, attrs: list[tuple[str, bytes]]) -> list[raw_msg]:
        m = raw_msg()
        m["cmd"] = cmd
        m["version"] = 1
        m["attrs"] = attrs
        return list(s.nlm_request(m, msg_type=s.prid, msg_flags=NLM_F_REQUEST | NLM_F_ACK))

    def probe(name: str, cmd: int, attrs: list[tuple[str, bytes]]) -> None:
        try:
            send(cmd, attrs)
            out[name] = 0
        except NetlinkError as e:
            out[name] = e.code

    try:
        (begin,) = send(netlink.CMD_CONFIG_BEGIN, [("CONFIG_SIZE", u32(64))])
        txn = bytes(begin.get_attr("TXN_ID"))
        addr = netlink.encode_addr("10.0.1.12:80")
        probe(
            "chunk bogus attribute",
            netlink.CMD_CONFIG_CHUNK,
            [("TXN_ID", txn), ("OFFSET", u32(0)), ("DATA", b"x" * 8), ("BOGUS", u32(1))],
        )
        probe(
            "chunk short txn id",
            netlink.CMD_CONFIG_CHUNK,
            [("TXN_ID", b"\1\0"), ("OFFSET", u32(0)), ("DATA", b"x" * 8)],
        )
        probe(
            "chunk empty data",
            netlink.CMD_CONFIG_CHUNK,
            [("TXN_ID", txn), ("OFFSET", u32(0)), ("DATA", b"")],
        )
        probe(
            "chunk oversized data",
            netlink.CMD_CONFIG_CHUNK,
            [("TXN_ID", txn), ("OFFSET", u32(0)), ("DATA", b"x" * 40000)],
        )
        probe(
            "chunk without offset", netlink.CMD_CONFIG_CHUNK, [("TXN_ID", txn), ("DATA", b"x" * 8)]
        )
        probe("commit without txn", netlink.CMD_CONFIG_COMMIT, [])
        probe("commit long txn id", netlink.CMD_CONFIG_COMMIT, [("TXN_ID", txn + b"\0\0\0\0")])
        probe(
            "commit bogus attribute", netlink.CMD_CONFIG_COMMIT, [("TXN_ID", txn), ("BOGUS", b"")]
        )
        probe("commit incomplete", netlink.CMD_CONFIG_COMMIT, [("TXN_ID", txn)])
        probe(
            "server short address",
            netlink.CMD_SERVER_SET,
            [("OBJ_POOL", b"images"), ("OBJ_ADDR", addr[:19]), ("STATE", b"\2")],
        )
        probe(
            "server bad family",
            netlink.CMD_SERVER_SET,
            [("OBJ_POOL", b"images"), ("OBJ_ADDR", b"\7" + addr[1:]), ("STATE", b"\2")],
        )
        probe(
            "server state 3",
            netlink.CMD_SERVER_SET,
            [("OBJ_POOL", b"images"), ("OBJ_ADDR", addr), ("STATE", b"\3")],
        )
        probe(
            "server weight 65536",
            netlink.CMD_SERVER_SET,
            [("OBJ_POOL", b"images"), ("OBJ_ADDR", addr), ("WEIGHT", u32(65536))],
        )
        probe(
            "server nothing to change",
            netlink.CMD_SERVER_SET,
            [("OBJ_POOL", b"images"), ("OBJ_ADDR", addr)],
        )
        probe("server without pool", netlink.CMD_SERVER_SET, [("OBJ_ADDR", addr), ("STATE", b"\2")])
    finally:
        with contextlib.suppress(NetlinkError):  # normally ended by "commit incomplete"
            send(netlink.CMD_CONFIG_ABORT, [("TXN_ID", txn)])
        s.close()
    return out  # fmt: skip


def test_malformed_attributes_sent_raw_are_refused(site: Site) -> None:
    before = site.director(lambda: (Client().running_config(), Client().info().generation))
    errors = site.director(raw_errors)
    assert len(errors) == 15
    # A missing, unknown or unusable attribute is EINVAL; a value outside its
    # policy's range or length is ERANGE (the netlink policy's own answer).
    assert all(e in (errno.EINVAL, errno.ERANGE) for e in errors.values()), errors
    for name in (
        "chunk bogus attribute",
        "chunk short txn id",
        "chunk without offset",
        "commit without txn",
        "commit bogus attribute",
        "commit incomplete",
        "server bad family",
        "server nothing to change",
        "server without pool",
    ):
        assert errors[name] == errno.EINVAL, (name, errors)  # fmt: skip
    after = site.director(lambda: (Client().running_config(), Client().info().generation))
    assert after == before
    stats = site.director(lambda: Client().stats())
    img2 = [o for o in stats if o.kind == "server" and o.address == "10.0.1.12:80"]
    assert [(o.weight, o.state) for o in img2] == [(1, "up")]
    assert site.client(lambda: get("/cgi-bin/ok")).backend == "cgi"


def begin_and_leave(kill: bool) -> None:
    """Open a configuration transaction and go without ending it: the
    process exits (its socket closes with it), or is killed."""
    s = GenericNetlinkSocket()
    s.bind("ktcpvs", raw_msg)
    m = raw_msg()
    m["cmd"] = netlink.CMD_CONFIG_BEGIN
    m["version"] = 1
    m["attrs"] = [("CONFIG_SIZE", u32(64))]
    list(s.nlm_request(m, msg_type=s.prid, msg_flags=NLM_F_REQUEST | NLM_F_ACK))
    if kill:
        os.kill(os.getpid(), signal.SIGKILL)


def test_a_transaction_its_process_left_open_does_not_block_the_next_apply(site: Site) -> None:
    """An apply whose process exits or is killed mid-transaction (Ctrl-C, an
    OOM kill) leaves the running configuration as it was, and the next
    apply goes through at once, not after the 30 s a live owner's open
    transaction is kept from others."""
    try:
        for i, kill in enumerate((False, True)):
            if kill:
                with pytest.raises(EOFError):  # killed: no answer from the child
                    site.director(lambda: begin_and_leave(True))
            else:
                site.director(lambda: begin_and_leave(False))
            res = site.apply(header_timeout=f"{11 + i}s")  # another process
            assert res.changed and res.generation is not None
    finally:
        site.apply()


def test_unprivileged_apply_is_refused(site: Site, tmp_path: Path) -> None:
    d = Path("/tmp") / f"h6-nobody-{site.topo.tag}"
    d.mkdir(exist_ok=True)
    d.chmod(0o755)
    path = d / "site.rules"
    path.write_text(RULES.format(sched="rr", header_timeout="10s"))
    path.chmod(0o644)
    before = site.director(lambda: Client().running_config())
    p = subprocess.run(
        ["ip", "netns", "exec", site.topo.director.ns, *NOBODY, "l7ctl", "apply", str(path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert p.returncode == 1, p
    assert "permission denied" in p.stderr and "CAP_NET_ADMIN" in p.stderr, p.stderr
    assert site.director(lambda: Client().running_config()) == before


# -- notifications ----------------------------------------------------------------------


def notifications_after(action_rules: Path) -> list[tuple[int, int]]:
    """Subscribe to the "config" group, apply a file, return (cmd, generation) received."""
    g = GenericNetlinkSocket()
    g.bind("ktcpvs", ktcpvs_msg)
    group = g.mcast_groups[netlink.MCGRP_CONFIG]
    g.close()
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 16)  # NETLINK_GENERIC
    s.bind((0, 0))
    s.setsockopt(270, 1, group)  # SOL_NETLINK, NETLINK_ADD_MEMBERSHIP
    res = apply_file(action_rules)
    Client().server_set("images", "10.0.1.12:80", weight=2)
    got: list[tuple[int, int]] = []
    deadline = time.monotonic() + 10
    while len(got) < 2 and time.monotonic() < deadline:
        if not select.select([s], [], [], 1.0)[0]:
            continue
        data = s.recv(65536)
        m = ktcpvs_msg(data)
        m.decode()
        got.append((m["cmd"], m.get_attr("KTCPVS_A_GENERATION")))
    s.close()
    assert res.generation is not None
    return [*got, (-1, res.generation)]


def test_notification_after_apply_and_server_set(site: Site) -> None:
    path = site.tmp / "notify.rules"
    path.write_text(RULES.format(sched="rr", header_timeout="10s"))
    try:
        got = site.director(lambda: notifications_after(path))
        (c1, g1), (c2, g2), (_, applied) = got
        assert c1 == netlink.CMD_NOTIFY and c2 == netlink.CMD_NOTIFY, got
        assert g1 == applied and g2 == applied + 1, got
    finally:
        site.apply()


# -- drain under load -------------------------------------------------------------------


def drain_scenario(director_ns: str) -> dict[str, object]:
    """In the client: one request in flight on img2 while img2 is drained."""

    def director(fn):  # type: ignore[no-untyped-def]
        return in_netns(director_ns, fn)

    director(lambda: Client().server_set("images", "10.0.1.11:80", weight=0))
    s = connect()
    s.sendall(b"POST /up.png HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")

    def active() -> int:
        return sum(o.active for o in Client().stats() if o.address == "10.0.1.12:80")

    deadline = time.monotonic() + 20
    while director(active) == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    in_flight = director(active)
    director(lambda: Client().server_set("images", "10.0.1.11:80", weight=3))
    drain = subprocess.run(
        ["ip", "netns", "exec", director_ns, "l7ctl", "server", "set", "images",
         "10.0.1.12:80", "--state", "drain"], capture_output=True, text=True,
    )  # fmt: skip
    others = [get(f"/new{i}.png").backend for i in range(6)]
    s.sendall(b"67890")
    (first,) = read_responses(s, 1)
    s.sendall(b"GET /again.png HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    (second,) = read_responses(s, 1)
    s.close()
    return {
        "in_flight": in_flight, "drain": drain.returncode, "drain_out": drain.stdout,
        "others": others, "first": (first.status, first.backend, first.body),
        "second": second.backend,
    }  # fmt: skip


def test_drain_lets_the_request_in_flight_finish(site: Site) -> None:
    # The request in flight waits at the backend for the rest of its body while
    # the CLI starts (seconds under emulation): the demo's 4 s backend timeout
    # would cut it short.
    slow = RULES.format(sched="wlc", header_timeout="10s").replace("backend 4s", "backend 300s")
    site.apply_text(slow)
    try:
        r = site.client(lambda: drain_scenario(site.topo.director.ns))
        assert r["in_flight"] == 1, r
        assert r["drain"] == 0 and "updated" in str(r["drain_out"]), r
        assert r["others"] == ["img1"] * 6, r
        status, backend, body = r["first"]  # type: ignore[misc]
        assert (status, backend) == (200, "img2") and b"\\r\\n\\r\\n1234567890" in body, r
        assert r["second"] == "img1", r
        st = site.director(lambda: Client().stats())
        assert [o.state for o in st if o.address == "10.0.1.12:80"] == ["drain"]
    finally:
        res = site.apply_text(slow)  # the same file again restores what it says
        st = site.director(lambda: Client().stats())
        site.apply()
    assert res.changed and res.l7_changed, res
    assert any("runtime weight 1 drain -> file weight 1 up" in x for x in res.l7_diff), res
    assert [o.state for o in st if o.address == "10.0.1.12:80"] == ["up"]


def test_health_reads_while_applies_run(site: Site) -> None:
    """`l7ctl health` as keepalived runs it, while configurations are applied
    back to back in the same namespace: every run ends, and says what a run
    without applies says (the configuration is swapped whole, never absent;
    the demo site's pool "empty", weight 0 only, makes that "down").  On
    6.1, one run of the earlier pyroute2-based command begun during an apply
    did not end within 120 s (docs/operations.md)."""
    ns = site.topo.director.ns
    l7ctl = str(Path(sys.executable).parent / "l7ctl")
    argv = ["ip", "netns", "exec", ns, l7ctl, "health", "--json"]
    alone = subprocess.run(argv, capture_output=True, text=True, timeout=HEALTH_RUN_MAX)
    assert '"reason": "no available server in pool empty"' in alone.stdout, alone
    stop = threading.Event()
    applied: list[int] = []

    def applies() -> None:
        k = 0
        while not stop.is_set():
            site.apply(sched=("wlc", "rr")[k % 2])
            applied.append(k)
            k += 1

    worker = threading.Thread(target=applies)
    worker.start()
    runs: list[tuple[float, int, str]] = []
    try:
        for _ in range(HEALTH_RUNS):
            t0 = time.monotonic()
            p = subprocess.run(argv, capture_output=True, text=True, timeout=HEALTH_RUN_MAX)
            runs.append((round(time.monotonic() - t0, 2), p.returncode, p.stdout.strip()))
    finally:
        stop.set()
        worker.join(timeout=300)
        site.apply()
    print(f"health during applies: {len(applied)} applies, runs (s, exit): "
          f"{[(s, rc) for s, rc, _ in runs]}")  # fmt: skip
    assert len(applied) >= 2, "the applies did not overlap the health runs"
    # the verdict and its reason (the pools' counts may move: a cool-down ends)
    want = (alone.returncode, json.loads(alone.stdout)["reason"])
    assert all((rc, json.loads(out)["reason"]) == want for _, rc, out in runs), (want, runs)
