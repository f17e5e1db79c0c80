"""The live fuzz test: generated requests, cut into random TCP segments, through the module.

Hypothesis generates valid requests aimed at every rule of a site, and mutations of them that
stress the strictness rules (tests/strategies.py, shared with the host property tests). Each is
sent on a new connection in random segments, and the switch's answer is compared with the
reference:

- the verdict and status of the parser (host-tested against h11 and the RFC list), and
- for an accepted request, the decision of the rules reference evaluator (l7ctl/evaluator.py):
  the request must reach a server of the right pool, which must receive exactly the bytes sent
  (less a lone `Connection: close` of an HTTP/1.1 head, which the switch keeps from the server
  so that its connection can be reused: `to_backend`);
  a block, redirect or no-match must be answered by the switch with that status;
- a refused request must be answered with the parser's status and reach no backend -- unless
  only its chunked body is malformed and its head alone decides a block, redirect or no-match:
  the switch answers those from the head and never reads the body.

Afterwards no connection is left and the module's allocations are back to their baseline.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time

import pytest
from demo_site import VIP, Response, Site, read_responses, wait_for
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from strategies import chunked_bodies, cuts, mutated, names, ows, queries, segment, values

from l7ctl import compiler, httpparse, ir
from l7ctl import evaluator as ev
from l7ctl.httpparse import Refusal, Request
from l7ctl.netlink import Client

FUZZ_RULES = """
pool images { scheduler rr; server 10.0.1.11:80; server 10.0.1.12:80; }
pool cgi    { scheduler lc; server 10.0.2.11:80; }
pool rest   { server 10.0.4.11:8080; }

service fuzz listen 10.0.0.1:80 {
    block 403    if header "User-Agent" contains "sqlmap";
    redirect 302 "https://www.example.com/" if path prefix "/old/";
    route images if type image/*;
    route images if host "img.example.com";
    route cgi    if path prefix "/cgi-bin/" or path suffix ".cgi";
    route cgi    if method POST and path regex "^/api/v[0-9]+/";
    route rest   if not path prefix "/none/";
}
"""
POOLS = {"images": {"img1", "img2"}, "cgi": {"cgi"}, "rest": {"flaky"}}
CLIENT = "10.0.0.2"

path_prefixes = st.sampled_from(
    [
        b"/",
        b"/cgi-bin/",
        b"/api/v1/",
        b"/api/x/",
        b"/old/",
        b"/img/",
        b"/none/",
        b"/a/../cgi-bin/",
        b"/%63gi-bin/",
        b"//img/",
    ]
)
path_suffixes = st.sampled_from([b"", b".png", b".JPG", b".cgi", b".html", b"/"])
host_values = st.sampled_from(
    [b"www.example.com", b"img.example.com", b"IMG.Example.COM:80", b"example.com:8080", b"[::1]"]
)
agents = st.sampled_from([b"curl/8.0", b"sqlmap/1.7", b"Mozilla/5.0 (sqlmap)"])


@st.composite
def site_requests(draw: st.DrawFn) -> bytes:
    """A valid request aimed at the fuzz site's rules."""
    method = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PURGE"]))
    path = draw(path_prefixes) + draw(segment) + draw(path_suffixes)
    query = draw(queries)
    target = path + (b"" if query is None else b"?" + query)
    version = draw(st.sampled_from([b"1.1", b"1.1", b"1.0"]))
    fields = draw(st.lists(st.tuples(names, values), max_size=4))
    if version == b"1.1" or draw(st.booleans()):
        fields.insert(draw(st.integers(0, len(fields))), (b"Host", draw(host_values)))
    if draw(st.booleans()):
        fields.append((b"User-Agent", draw(agents)))
    kind = draw(st.sampled_from(["none", "length", "chunked"] if version == b"1.1" else
                                ["none", "length"]))  # fmt: skip
    body = b""
    if kind == "length":
        body = draw(st.binary(max_size=300))
        fields.append((b"Content-Length", b"%d" % len(body)))
    elif kind == "chunked":
        body, _ = draw(chunked_bodies())
        fields.append((b"Transfer-Encoding", b"chunked"))
    fields.append((b"Connection", b"close"))
    head = method + b" " + target + b" HTTP/" + version + b"\r\n"
    for n, v in fields:
        head += n + b":" + draw(ows) + v + draw(ows) + b"\r\n"
    return head + b"\r\n" + body


def to_backend(data: bytes, req: Request) -> bytes:
    """What the server must receive: data less a lone HTTP/1.1 `Connection: close` line."""
    conn = [v for n, v in req.headers if n.lower() == b"connection"]
    if req.version != "HTTP/1.1" or [v.lower() for v in conn] != [b"close"]:
        return data
    head, rest = data[: req.head_length], data[req.head_length :]
    lines = head.split(b"\r\n")
    kept = [ln for ln in lines if ln.split(b":", 1)[0].lower() != b"connection"]
    assert len(kept) == len(lines) - 1
    return b"\r\n".join(kept) + rest


def head_of_refused_body(data: bytes, refusal: Refusal) -> Request | None:
    """The request head, when the refusal is of the chunked body that follows it."""
    end = data.find(b"\r\n\r\n") + 4
    if end < 4 or refusal.offset < end:
        return None
    msgs = httpparse.parse_requests(data[:end] + b"0\r\n\r\n")
    m = msgs[0] if msgs else None
    if isinstance(m, Request) and m.head_length == end and m.framing == "chunked":
        return m
    return None


def send_in_segments(data: bytes, at: list[int]) -> Response | None:
    """Send data cut at offsets (each piece its own TCP segment), read one response."""
    with socket.create_connection((VIP, 80), timeout=30) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        last = 0
        for cut in [*at, len(data)]:
            if cut > last:
                s.sendall(data[last:cut])
                time.sleep(0.002)
                last = cut
        rs = read_responses(s, 1)
        return rs[0] if rs else None


@pytest.fixture(scope="module")
def fuzz_site(site_session: Site) -> Site:
    site_session.logs["flaky"] = site_session.topo.start_echo("flaky", port=8080)
    site_session.apply_text(FUZZ_RULES)
    return site_session


@pytest.fixture(scope="module")
def reference() -> compiler.Result:
    res = compiler.compile_text(FUZZ_RULES)
    assert res.ok and res.ir is not None
    return res


def allocations(site: Site) -> tuple[int, int]:
    """(live connections, outstanding allocations of the module)."""
    info = site.director(lambda: Client().info())
    return info.connections, info.allocations


@pytest.fixture(scope="module")
def baseline(fuzz_site: Site) -> int:
    assert wait_for(lambda: allocations(fuzz_site)[0] == 0, 60)
    return allocations(fuzz_site)[1]


@given(
    data=st.one_of(site_requests(), mutated(site_requests())),
    split=st.data(),
)
@settings(
    max_examples=120,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
def test_live_switch_agrees_with_the_reference(
    fuzz_site: Site,
    reference: compiler.Result,
    baseline: int,
    data: bytes,
    split: st.DataObject,
) -> None:
    msgs = httpparse.parse_requests(data)
    assume(msgs)
    first = msgs[0]
    # A head or body still waiting for bytes is not a verdict: the switch waits (408 later).
    assume(not (isinstance(first, Refusal) and first.error.startswith("incomplete")))
    if not isinstance(first, Refusal):
        data = data[: first.consumed]
    at = split.draw(cuts(len(data)))
    fuzz_site.reset_logs()

    resp = fuzz_site.client(lambda: send_in_segments(data, at))
    assert resp is not None, "the switch closed without an answer"
    received = fuzz_site.all_received()

    assert reference.ir is not None

    def decide(m: Request) -> ir.Action | None:
        assert reference.ir is not None
        req = ev.Request(m.method, m.host or b"", m.path, m.query or b"",
                         tuple(m.headers), ipaddress.ip_address(CLIENT))  # fmt: skip
        return ev.evaluate(reference.ir.services[0], req).action

    if isinstance(first, Refusal):
        head = head_of_refused_body(data, first)
        head_action = decide(head) if head is not None else None
        if head is None or (head_action is not None and head_action.kind == "route"):
            assert resp.status == first.status, (data, first)
            assert resp.headers.get("connection") == "close"
            assert received == [], "a refused request reached a backend"
            return
        first = head  # answered from the head alone: checked below

    action = decide(first)
    if action is None:
        assert resp.status == 404 and received == []
    elif action.kind == "block":
        assert resp.status == action.status and received == []
    elif action.kind == "redirect":
        assert resp.status == action.status and received == []
        assert resp.headers.get("location") == action.location
    else:
        assert resp.status == 200, (data, resp)
        assert resp.backend in POOLS[action.pool], (data, action, resp.backend)
        want = to_backend(data, first)
        assert json.loads(resp.body)["raw"].encode("latin-1") == want
        assert received == [want.decode("latin-1")]


def test_nothing_left_after_the_fuzz(fuzz_site: Site, baseline: int) -> None:
    # Every connection closed and freed: buffers and connection objects included.
    assert wait_for(lambda: allocations(fuzz_site) == (0, baseline), 60)
    fuzz_site.director(lambda: Client().flush())  # the next test applies the demo site again
