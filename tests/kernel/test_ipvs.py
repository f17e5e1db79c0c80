"""IPVS virtual services from a rules file: NAT traffic, idempotence, diff, rollback, two tiers."""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
from demo_site import RULES, Response, Site, get, read_responses
from nsutil import in_netns
from topology import stop, wait_port

from l7ctl import ipvs
from l7ctl.apply import ApplyResult, RolledBack, apply_file
from l7ctl.errors import L7ctlError
from l7ctl.netlink import Client

L7 = RULES.format(sched="wlc", header_timeout="10s")
VIRTUAL = """
virtual tcp 10.0.0.1:8443 {{
    scheduler {sched};
    forward nat;
    server 10.0.1.11:80 weight {w};
    server 10.0.1.12:80;
}}
"""


def rules(sched: str = "rr", w: int = 1, extra: str = "") -> str:
    return L7 + VIRTUAL.format(sched=sched, w=w) + extra


@pytest.fixture
def lvs_site(site: Site) -> Iterator[Site]:
    """The demo site; afterwards IPVS is emptied and the demo rules are applied again."""
    try:
        yield site
    finally:
        site.director(lambda: ipvs.Client().flush())
        site.apply()


def apply_text(
    site: Site, text: str, name: str = "lvs.rules", dry_run: bool = False
) -> ApplyResult:
    path = site.tmp / name
    path.write_text(text)
    return in_netns(site.topo.director.ns, lambda: apply_file(path, dry_run=dry_run))


def proc_ip_vs(site: Site) -> str:
    return site.topo.exec(site.topo.director.ns, "cat", "/proc/net/ip_vs").stdout


def ipvs_state(site: Site) -> ipvs.State:
    return site.director(lambda: ipvs.Client().read())  # type: ignore[no-any-return]


def l4_backend(addr: str = "10.0.0.1", port: int = 8443) -> str:
    """One HTTP request on a new connection to the IPVS service; the answering backend."""
    with socket.create_connection((addr, port), timeout=20) as s:
        s.sendall(b"GET /l4 HTTP/1.1\r\nHost: l4.example.com\r\nConnection: close\r\n\r\n")
        (r,) = read_responses(s, 1)
    assert r.status == 200
    return r.backend or "?"


def test_virtual_nat_service_in_proc_and_carrying_traffic(lvs_site: Site) -> None:
    site = lvs_site
    res = apply_text(site, rules())
    assert res.changed and res.virtuals == 1
    assert [op.kind for op in res.ipvs_ops] == ["add-service", "add-dest", "add-dest"]
    text = proc_ip_vs(site)
    # TCP  0A000001:20FB rr  /  -> 0A01010B:0050 Masq 1 ...
    assert re.search(r"TCP\s+0A000001:20FB rr", text), text
    assert re.search(r"->\s+0A00010B:0050\s+Masq\s+1", text), text
    assert re.search(r"->\s+0A00010C:0050\s+Masq\s+1", text), text
    seen = [site.client(l4_backend) for _ in range(4)]
    assert set(seen) == {"img1", "img2"}, seen
    # The request went straight to the backend: no X-Forwarded-For, IPVS only.
    assert any("GET /l4 HTTP/1.1" in r for r in site.received("img1"))
    # and the L7 service still answers
    assert site.client(lambda: get("/cgi-bin/x")).backend == "cgi"


def test_reapply_changes_nothing_for_either_side(lvs_site: Site) -> None:
    site = lvs_site
    apply_text(site, rules())
    before = ipvs_state(site)
    gen = site.director(lambda: Client().info().generation)
    res = apply_text(site, rules())
    assert not res.changed and not res.ipvs_ops and not res.l7_changed
    assert ipvs_state(site) == before
    assert site.director(lambda: Client().info().generation) == gen


def test_dry_run_prints_both_diffs_and_changes_nothing(lvs_site: Site) -> None:
    site = lvs_site
    apply_text(site, rules())
    before = ipvs_state(site)
    blob = site.director(lambda: Client().running_config())
    changed = rules(sched="wlc", w=5).replace(
        "pool static {", "pool extra { server 10.0.3.11:80; }\npool static {"
    )
    # The edit goes to another file: the running configuration's own file
    # must still compile to it for an IR-level diff (an edited file gives a
    # blob-level one).
    res = apply_text(site, changed, name="lvs-next.rules", dry_run=True)
    assert res.changed and res.l7_changed
    lines = res.describe()
    assert "  ~ virtual tcp 10.0.0.1:8443: scheduler rr -> scheduler wlc" in lines, lines
    assert any(
        "server 10.0.1.11:80 weight 1 forward nat -> weight 5 forward nat" in x for x in lines
    )
    assert any(x.strip().startswith("+ pool extra") for x in lines)
    assert ipvs_state(site) == before
    assert site.director(lambda: Client().running_config()) == blob
    # the CLI prints the same diff
    path = site.tmp / "lvs-next.rules"
    out = site.topo.exec(site.topo.director.ns, "l7ctl", "apply", "--dry-run", str(path)).stdout
    assert "IPVS (L4):" in out and "ktcpvs (L7):" in out and "(dry run)" in out, out
    assert "+ pool extra" in out and "scheduler rr -> scheduler wlc" in out, out
    assert ipvs_state(site) == before


def test_unknown_source_is_reported_at_blob_level(lvs_site: Site) -> None:
    site = lvs_site
    # an L7 change, so that the recorded source becomes gone.rules
    res = apply_text(site, rules().replace("backend 4s", "backend 3s"), name="gone.rules")
    assert res.l7_changed
    (site.tmp / "gone.rules").unlink()
    res = apply_text(
        site, rules().replace("timeout backend 4s", "timeout backend 5s"), dry_run=True
    )
    assert res.l7_changed
    assert "unknown source" in res.l7_diff[0] and "first difference at byte" in res.l7_diff[0]


def test_ipvs_failure_rolls_both_sides_back(lvs_site: Site) -> None:
    site = lvs_site
    apply_text(site, rules())
    good_ipvs = ipvs_state(site)
    good_blob = site.director(lambda: Client().running_config())
    # A new L7 rule plus a second virtual service IPVS refuses half-way, after
    # the ktcpvs commit and the first IPVS service went in: its second server
    # is, on this director, a broadcast address (10.0.77.0/24 is on a dummy
    # link), which IPVS refuses as a destination (EINVAL).  The file is valid;
    # only the director's own addresses make it fail, as a real operator's
    # mistake would.
    d = site.topo.director.ns
    site.topo.exec(d, "ip", "link", "add", "ktbrd", "type", "dummy")
    site.topo.exec(d, "ip", "addr", "add", "10.0.77.1/24", "brd", "+", "dev", "ktbrd")
    site.topo.exec(d, "ip", "link", "set", "ktbrd", "up")
    bad = (
        rules(w=2).replace("route static;", 'route cgi if path prefix "/new/";\n    route static;')
        + "virtual tcp 10.0.0.1:9443 { forward nat; server 10.0.1.11:80; server 10.0.77.255:80; }\n"
    )

    def attempt() -> str:
        try:
            apply_file(site.tmp / "bad.rules")
        except RolledBack as e:
            return "rolled back: " + str(e)
        except L7ctlError as e:
            return "error: " + str(e)
        return "applied"

    (site.tmp / "bad.rules").write_text(bad)
    try:
        out = site.director(attempt)
    finally:
        site.topo.exec(d, "ip", "link", "del", "ktbrd")
    assert out.startswith(
        "rolled back: IPVS: + virtual tcp 10.0.0.1:9443: server 10.0.77.255:80"
    ), out
    assert ipvs_state(site) == good_ipvs
    assert site.director(lambda: Client().running_config()) == good_blob
    assert site.client(lambda: get("/new/x")).backend == "static"  # the old rules
    assert {site.client(l4_backend) for _ in range(4)} == {"img1", "img2"}


def test_l7_failure_leaves_ipvs_untouched(lvs_site: Site) -> None:
    site = lvs_site
    apply_text(site, rules())
    good_ipvs = ipvs_state(site)
    # Another process holds 10.0.0.1:82: the ktcpvs commit cannot bind it.
    hold = site.topo.spawn(
        site.topo.director.ns,
        [sys.executable, "-c", "import socket, time; s = socket.socket(); "
         "s.bind(('10.0.0.1', 82)); s.listen(); time.sleep(600)"],
        "hold82.out",
    )  # fmt: skip
    bad = rules(sched="wlc") + "service other listen 10.0.0.1:82 { route static; }\n"

    def attempt() -> str:
        try:
            apply_file(site.tmp / "bad7.rules")
        except L7ctlError as e:
            return str(e)
        return "applied"

    try:
        wait_port(site.topo.director.ns, "10.0.0.1", 82)
        (site.tmp / "bad7.rules").write_text(bad)
        out = site.director(attempt)
    finally:
        stop(hold)
        hold.wait()
    assert "applying the configuration failed" in out, out
    assert ipvs_state(site) == good_ipvs


def test_file_without_virtuals_leaves_ipvs_alone_and_flush_ipvs_empties_it(lvs_site: Site) -> None:
    site = lvs_site
    apply_text(site, rules())
    before = ipvs_state(site)
    assert before
    site.apply()  # the demo rules: no virtual block
    assert ipvs_state(site) == before
    out = site.topo.exec(site.topo.director.ns, "l7ctl", "flush", "--ipvs").stdout
    assert "IPVS virtual services flushed" in out
    assert ipvs_state(site) == {}
    site.apply()


# -- two tiers: IPVS over two ktcpvs directors -----------------------------------------

TIER_RULES = """
pool images { scheduler rr; server 10.0.1.11:80; server 10.0.1.12:80; }
pool cgi    { server 10.0.2.11:80; }
service web listen 0.0.0.0:80 {
    route images if path prefix "/img/";
    route cgi;
}
"""


def sh(*argv: str) -> None:
    subprocess.run(list(argv), check=True, capture_output=True, text=True)


@pytest.fixture
def two_tier(site: Site) -> Iterator[tuple[Site, list[str]]]:
    """Two ktcpvs directors (10.0.9.1, 10.0.9.2) hanging off the demo director.

        client -> director 10.0.0.1 (IPVS 10.0.0.1:8000, NAT) -> l7a 10.0.9.1:80 -> backends
                                                               -> l7b 10.0.9.2:80 -> backends
    The L7 directors reach the demo backends through the demo director (their
    default route), as the backends answer back the same way.
    """
    d = site.topo.director.ns
    tag = site.topo.tag
    names: list[str] = []
    try:
        for i, addr in enumerate(("10.0.9.1", "10.0.9.2"), start=1):
            ns = f"{tag}-l7{i}"
            sh("ip", "netns", "add", ns)
            names.append(ns)
            dev = f"{tag}t{i}"
            sh("ip", "link", "add", dev, "netns", d, "type", "veth", "peer", "name", "eth0",
               "netns", ns)  # fmt: skip
            sh("ip", "-n", d, "addr", "add", "10.0.9.254/32", "dev", dev)
            sh("ip", "-n", d, "link", "set", dev, "up")
            sh("ip", "-n", d, "route", "add", f"{addr}/32", "dev", dev, "src", "10.0.9.254")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "addr", "add", f"{addr}/32", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "route", "add", "10.0.9.254/32", "dev", "eth0")
            sh("ip", "-n", ns, "route", "add", "default", "via", "10.0.9.254", "dev", "eth0")
        yield site, names
    finally:
        for ns in names:
            with contextlib.suppress(RuntimeError):
                in_netns(ns, lambda: Client().flush())
            subprocess.run(["ip", "netns", "del", ns], check=False)
        site.director(lambda: ipvs.Client().flush())
        site.apply()


def tier_up(site: Site, l7: list[str], rules: str) -> None:
    """The same rules file on both L7 directors; IPVS rr over them at 10.0.0.1:8000."""
    path = site.tmp / "tier.rules"
    path.write_text(rules)
    for ns in l7:
        assert in_netns(ns, lambda: apply_file(path)).changed
    lvs = site.tmp / "lvs-tier.rules"
    lvs.write_text(
        L7 + "virtual tcp 10.0.0.1:8000 { scheduler rr; forward nat;"
        " server 10.0.9.1:80; server 10.0.9.2:80; }\n"
    )
    assert in_netns(site.topo.director.ns, lambda: apply_file(lvs)).changed


def tier_get(path: str, headers: str = "") -> Response:
    """One request through the tier, on a new connection."""
    with socket.create_connection(("10.0.0.1", 8000), timeout=20) as s:
        raw = f"GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n"
        s.sendall(raw.encode())
        (r,) = read_responses(s, 1)
    return r


def served_by_each(l7: list[str]) -> list[int]:
    """Client connections each L7 director's services accepted."""
    return [in_netns(ns, lambda: sum(o.conns for o in Client().stats() if o.kind == "service"))
            for ns in l7]  # fmt: skip


def test_two_tier_ipvs_over_two_ktcpvs_directors(two_tier: tuple[Site, list[str]]) -> None:
    site, l7 = two_tier
    tier_up(site, l7, TIER_RULES)

    def one(path: str) -> str:
        return tier_get(path).backend or "?"

    got = [site.client(lambda i=i: one(f"/img/{i}.png")) for i in range(4)]
    assert set(got) == {"img1", "img2"}, got
    assert {site.client(lambda: one("/cgi-bin/t")) for _ in range(2)} == {"cgi"}
    # each L7 director served half of the six connections (IPVS rr)
    assert served_by_each(l7) == [3, 3]


def test_persistence_cookie_holds_across_both_directors(two_tier: tuple[Site, list[str]]) -> None:
    """`persist cookie`: the value one director sets is followed by the other
    (both applied the same file), so a client keeps its server whichever
    director IPVS hands its connections to."""
    site, l7 = two_tier
    tier_up(
        site, l7, TIER_RULES.replace("{ scheduler rr;", "{ scheduler rr; persist cookie SRVID;")
    )
    first = site.client(lambda: tier_get("/img/a.png"))
    name, _, value = first.headers["set-cookie"].split(";")[0].partition("=")
    assert name == "SRVID" and first.backend in ("img1", "img2")

    def run() -> list[tuple[str | None, str | None]]:
        out = []
        for i in range(6):
            r = tier_get(f"/img/{i}.png", f"Cookie: SRVID={value}\r\n")
            out.append((r.backend, r.headers.get("set-cookie")))
        return out

    assert site.client(run) == [(first.backend, None)] * 6
    assert sorted(served_by_each(l7)) == [3, 4]  # IPVS rr: both directors served
