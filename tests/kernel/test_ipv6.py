"""IPv6: an L7 service on an IPv6 address with IPv6 and IPv4 backends, and an IPv6 IPVS service.

    client 10.0.0.2 / fd00::2 -- director 10.0.0.1 / fd00::1 -- b1 10.0.1.11 / fd00:1::11
                                                              -- b2 10.0.2.11 / fd00:2::11
b1 answers on 10.0.1.11:8080 as "b1" and on [fd00:1::11]:8080 as "b1-v6";
b2 answers on [fd00:2::11]:8080 as "b2-v6".
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from demo_site import Response, read_responses
from nsutil import in_netns
from topology import Topology, read_log, v6

from l7ctl import ipvs
from l7ctl.apply import ApplyResult, apply_file
from l7ctl.netlink import Client

RULES = """
pool six  { scheduler rr; server [fd00:1::11]:8080; server [fd00:2::11]:8080; }
pool four { server 10.0.1.11:8080; }
service web6 listen [fd00::1]:80 {
    x-forwarded-for on;
    route four if path prefix "/four/";
    route four if source fd00::2 and path prefix "/mine/";
    route six;
}
service web4 listen 10.0.0.1:80 {
    x-forwarded-for on;
    route six;
}
"""
VIRTUAL = """
virtual tcp [fd00::1]:8443 {
    scheduler rr;
    forward nat;
    server [fd00:1::11]:8080;
    server [fd00:2::11]:8080;
}
"""


@pytest.fixture
def v6topo(topo: Topology, tmp_path: Path) -> Iterator[Topology]:
    topo.add_ipv6()
    topo.start_echo("b1")
    topo.start_echo6("b1")
    topo.start_echo6("b2")
    try:
        yield topo
    finally:
        in_netns(topo.director.ns, lambda: ipvs.Client().flush())
        in_netns(topo.director.ns, lambda: Client().flush())


def apply(topo: Topology, text: str) -> ApplyResult:
    path = topo.tmp / "v6.rules"
    path.write_text(text)
    return in_netns(topo.director.ns, lambda: apply_file(path))


def fetch(addr: str, port: int, path: str) -> Response:
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect((addr, port))
        s.sendall(
            f"GET {path} HTTP/1.1\r\nHost: v6.example.com\r\nConnection: close\r\n\r\n".encode()
        )
        (r,) = read_responses(s, 1)
    return r


def raw(r: Response) -> str:
    assert r.status == 200, (r.status, r.body[:200])
    return str(json.loads(r.body)["raw"])


def test_addresses_are_as_documented() -> None:
    assert v6("10.0.0.1") == "fd00::1" and v6("10.0.2.11") == "fd00:2::11"


def test_l7_service_on_ipv6_routes_by_content(v6topo: Topology) -> None:
    t = v6topo
    assert apply(t, RULES).changed

    def run() -> list[Response]:
        return [
            *(fetch("fd00::1", 80, f"/p{i}") for i in range(4)),
            fetch("fd00::1", 80, "/four/x"),
            fetch("fd00::1", 80, "/mine/x"),
            fetch("10.0.0.1", 80, "/from-v4"),
        ]

    rs = in_netns(t.client.ns, run)
    six, four, mine, from_v4 = rs[:4], rs[4], rs[5], rs[6]
    assert {r.backend for r in six} == {"b1-v6", "b2-v6"}  # rr over two IPv6 backends
    for r in [*six, four, mine]:
        assert "\r\nX-Forwarded-For: fd00::2\r\n" in raw(r), raw(r)
    assert four.backend == "b1" and mine.backend == "b1"  # an IPv4 backend behind IPv6
    assert raw(four).startswith("GET /four/x HTTP/1.1\r\n")
    assert from_v4.backend in ("b1-v6", "b2-v6")  # an IPv6 backend behind IPv4
    assert "\r\nX-Forwarded-For: 10.0.0.2\r\n" in raw(from_v4)
    # the backends saw the director's IPv6 address as the peer
    peers = [str(e["peer"]) for e in read_log(t.tmp / "echo6-b2.jsonl")]
    assert peers and all(p.startswith("fd00:2::1:") for p in peers), peers
    # a second apply of the same file changes nothing: the kernel's dump of IPv6
    # services and servers compares equal to the compiled file
    assert not apply(t, RULES).changed
    names = {s.name for s in in_netns(t.director.ns, lambda: Client().stats())}
    assert {"web6", "web4", "six", "four"} <= names


def test_ipvs_nat_service_on_ipv6(v6topo: Topology) -> None:
    t = v6topo
    res = apply(t, RULES + VIRTUAL)
    assert res.changed and res.virtuals == 1
    assert [op.kind for op in res.ipvs_ops] == ["add-service", "add-dest", "add-dest"]
    proc = t.exec(t.director.ns, "cat", "/proc/net/ip_vs").stdout
    assert "[fd00:0000:0000:0000:0000:0000:0000:0001]:20FB rr" in proc, proc
    assert re.search(r"-> \[fd00:0001:0000:0000:0000:0000:0000:0011\]:1F90\s+Masq", proc), proc

    def run() -> list[Response]:
        return [fetch("fd00::1", 8443, "/l4") for _ in range(4)]

    rs = in_netns(t.client.ns, run)
    assert {r.backend for r in rs} == {"b1-v6", "b2-v6"}
    # IPVS NAT: the backend sees the client's own address and no X-Forwarded-For
    assert all("X-Forwarded-For" not in raw(r) for r in rs)
    peers = [str(e["peer"]) for e in read_log(t.tmp / "echo6-b2.jsonl")]
    assert peers and all(p.startswith("fd00::2:") for p in peers), peers
    assert not apply(t, RULES + VIRTUAL).changed
