"""Network namespaces joined by veth for kernel tests: client, director, backends.

    client (10.0.0.2) ──veth── director (10.0.0.1, forwards) ──veth── backend 10.0.1.11
                                                             ──veth── backend 10.0.2.11 ...

The director has one veth link per peer; every peer has a /32 address and a
default route through the director, so backends in the same /24 (the demo's
10.0.1.11 and 10.0.1.12) need no bridge.  The director forwards, so the
client can also reach backends directly (the "direct access" reference).

Backends run an echo server (echo_server.py: answers with what it received,
and logs it so a test can prove what did or did not reach a backend) and,
on request, nginx serving a document root.  Topology.down() kills every
process and deletes every namespace, also after a failed test.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).parent
_ids = itertools.count()


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


def wait_port(ns: str, addr: str, port: int, timeout: float = 60.0) -> None:
    """Wait until something listens on addr:port inside namespace ns."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = sh("ip", "netns", "exec", ns, "ss", "-Hltn", f"src {addr}:{port}", check=False)
        if out.stdout.strip():
            return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {addr}:{port} in {ns}")


def v6(addr: str) -> str:
    """The IPv6 address add_ipv6() gives the node with IPv4 address 10.0.c.d: fd00:c::d."""
    _, _, c, d = addr.split(".")
    return str(ipaddress.IPv6Address(f"fd00:{c}::{d}"))


@dataclass
class Node:
    name: str
    ns: str
    addr: str


@dataclass
class Topology:
    backends: dict[str, str]
    client_addr: str = "10.0.0.2"
    director_addr: str = "10.0.0.1"
    tag: str = field(default_factory=lambda: f"kt{os.getpid() % 10000}x{next(_ids)}")
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="kttopo-")))

    def __post_init__(self) -> None:
        self.director = Node("director", f"{self.tag}-dir", self.director_addr)
        self.client = Node("client", f"{self.tag}-cli", self.client_addr)
        self.nodes = {n: Node(n, f"{self.tag}-{n}", a) for n, a in self.backends.items()}
        self._namespaces: list[str] = []

    # -- building -----------------------------------------------------------

    def _netns(self, ns: str) -> None:
        sh("ip", "netns", "add", ns)
        self._namespaces.append(ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")

    def _link(self, peer: Node, idx: int) -> None:
        dev = f"{self.tag}l{idx}"
        sh("ip", "link", "add", dev, "netns", self.director.ns, "type", "veth",
           "peer", "name", "eth0", "netns", peer.ns)  # fmt: skip
        d, p = self.director.ns, peer.ns
        # Director side: one gateway address per peer subnet, a host route to the peer.
        gw = peer.addr.rsplit(".", 1)[0] + ".1"
        sh("ip", "-n", d, "addr", "add", f"{gw}/32", "dev", dev)
        sh("ip", "-n", d, "link", "set", dev, "up")
        sh("ip", "-n", d, "route", "add", f"{peer.addr}/32", "dev", dev, "src", gw)
        sh("ip", "-n", p, "addr", "add", f"{peer.addr}/32", "dev", "eth0")
        sh("ip", "-n", p, "link", "set", "eth0", "up")
        sh("ip", "-n", p, "route", "add", f"{gw}/32", "dev", "eth0")
        sh("ip", "-n", p, "route", "add", "default", "via", gw, "dev", "eth0")

    def up(self) -> None:
        self._netns(self.director.ns)
        sh("ip", "netns", "exec", self.director.ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self._netns(self.client.ns)
        self._link(self.client, 0)
        for i, node in enumerate(self.nodes.values(), start=1):
            self._netns(node.ns)
            self._link(node, i)

    def add_ipv6(self) -> None:
        """Give every node an IPv6 address beside its IPv4 one: 10.0.c.d -> fd00:c::d.

        The same shape as IPv4: a /128 per peer, the director's gateway address
        fd00:c::1 on the peer's link, the peer's default route through it.  All
        addresses `nodad`, so they are usable at once; the director forwards.
        """
        d = self.director.ns
        self.exec(d, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        peers = [self.client, *self.nodes.values()]
        for idx, peer in enumerate(peers):
            dev, p = f"{self.tag}l{idx}", peer.ns
            addr, gw = v6(peer.addr), v6(peer.addr.rsplit(".", 1)[0] + ".1")
            sh("ip", "-n", d, "-6", "addr", "add", f"{gw}/128", "dev", dev, "nodad")
            sh("ip", "-n", d, "-6", "route", "add", f"{addr}/128", "dev", dev, "src", gw)
            sh("ip", "-n", p, "-6", "addr", "add", f"{addr}/128", "dev", "eth0", "nodad")
            sh("ip", "-n", p, "-6", "route", "add", f"{gw}/128", "dev", "eth0")
            sh("ip", "-n", p, "-6", "route", "add", "default", "via", gw, "dev", "eth0")

    # -- processes ----------------------------------------------------------

    def spawn(self, ns: str, argv: list[str], log: str) -> subprocess.Popen[bytes]:
        with open(self.tmp / log, "wb") as f:
            p = subprocess.Popen(
                ["ip", "netns", "exec", ns, *argv], stdout=f, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self.procs.append(p)
        return p

    def start_echo(self, name: str, port: int = 8080) -> Path:
        """Start the echo server on backend `name`; return its request log."""
        node = self.nodes[name]
        logfile = self.tmp / f"echo-{name}.jsonl"
        self.spawn(
            node.ns,
            [sys.executable, str(HERE / "echo_server.py"), "--name", name,
             "--listen", f"{node.addr}:{port}", "--log", str(logfile)],
            f"echo-{name}.out",
        )  # fmt: skip
        wait_port(node.ns, node.addr, port)
        return logfile

    def start_echo6(self, name: str, port: int = 8080) -> Path:
        """Start an echo server on backend `name`'s IPv6 address (add_ipv6), answering
        as NAME-v6; return its request log."""
        node = self.nodes[name]
        addr = v6(node.addr)
        logfile = self.tmp / f"echo6-{name}.jsonl"
        self.spawn(
            node.ns,
            [sys.executable, str(HERE / "echo_server.py"), "--name", f"{name}-v6",
             "--listen", f"[{addr}]:{port}", "--log", str(logfile)],
            f"echo6-{name}.out",
        )  # fmt: skip
        wait_port(node.ns, f"[{addr}]", port)
        return logfile

    def start_nginx(self, name: str, docroot: Path, port: int = 80) -> None:
        """Start nginx on backend `name` serving docroot."""
        node = self.nodes[name]
        prefix = self.tmp / f"nginx-{name}"
        prefix.mkdir()
        conf = prefix / "nginx.conf"
        conf.write_text(
            f"""daemon off;
user root;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 100000;
    sendfile on;
    default_type application/octet-stream;
    add_header X-Backend {name} always;
    server {{
        listen {node.addr}:{port} reuseport;
        root {docroot};
    }}
}}
"""
        )
        self.spawn(node.ns, ["nginx", "-c", str(conf), "-p", str(prefix)], f"nginx-{name}.out")
        wait_port(node.ns, node.addr, port)

    def exec(self, ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", ns, *argv, check=check)

    # -- teardown -----------------------------------------------------------

    def down(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        self.procs.clear()
        for ns in reversed(self._namespaces):
            sh("ip", "netns", "del", ns, check=False)
        self._namespaces.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)


def stop(p: subprocess.Popen[bytes]) -> None:
    """Kill a process a test started, with its children (nginx's workers), and
    wait for it: once this returns, its sockets are closed, and a server
    started next on the same port binds it itself rather than finding the
    old one still listening."""
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(p.pid) == p.pid:  # its own group (spawn): all of it
                os.killpg(p.pid, signal.SIGKILL)
            else:
                p.kill()
    p.wait()


def read_log(logfile: Path) -> list[dict[str, object]]:
    """The requests an echo server logged, oldest first."""
    if not logfile.exists():
        return []
    text = logfile.read_text()
    # a line the server is still writing is not a record yet
    lines = text.split("\n")[:-1]
    return [json.loads(line) for line in lines if line]
