"""Namespaces: independent services per network namespace, IPv6, namespace exit."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from demo_site import read_responses, wait_for
from nsutil import in_netns
from topology import stop

from l7ctl.apply import apply_file
from l7ctl.netlink import Client

HERE = Path(__file__).parent

RULES = """
pool p4 {{ server 127.0.0.1:9000; }}
pool p6 {{ server [::1]:9001; }}
service v4 listen 127.0.0.1:8080 {{ route p4; }}
{extra}
"""
V6 = "service v6 listen [::1]:8081 { route p6; }"


class Ns:
    def __init__(self, name: str, tmp: Path) -> None:
        self.name = name
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        subprocess.run(["ip", "netns", "add", name], check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)

    def echo(self, tag: str, listen: str) -> None:
        log = str(self.tmp / f"{tag}.log")
        server = [sys.executable, str(HERE / "echo_server.py")]
        argv = ["ip", "netns", "exec", self.name, *server]
        self.procs.append(
            subprocess.Popen([*argv, "--name", tag, "--listen", listen, "--log", log])
        )

    def listening(self, host: str, port: int) -> bool:
        """Does a server accept on host:port in this namespace?"""

        def probe() -> bool:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family) as s:
                s.settimeout(2)
                try:
                    s.connect((host, port))
                except OSError:
                    return False
                return True

        return in_netns(self.name, probe)

    def apply(self, extra: str = "") -> None:
        path = self.tmp / f"{self.name}.rules"
        path.write_text(RULES.format(extra=extra))
        in_netns(self.name, lambda: apply_file(path))

    def get(self, host: str, port: int) -> str | None:
        def run() -> str | None:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family) as s:
                s.settimeout(30)
                s.connect((host, port))
                s.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                (r,) = read_responses(s, 1)
                return r.backend

        return in_netns(self.name, run)  # type: ignore[no-any-return]

    def delete(self) -> None:
        for p in self.procs:
            stop(p)
            p.wait()
        subprocess.run(["ip", "netns", "del", self.name], check=False)


@pytest.fixture
def two_ns(tmp_path: Path) -> Iterator[tuple[Ns, Ns]]:
    a, b = Ns("kt-ns-a", tmp_path), Ns("kt-ns-b", tmp_path)
    try:
        for ns in (a, b):
            ns.echo(f"{ns.name}-v4", "127.0.0.1:9000")
            ns.echo(f"{ns.name}-v6", "[::1]:9001")
        # The echo servers start (Python under emulation: seconds when the
        # guest is busy): every one accepts before the test begins.
        for ns in (a, b):
            for host, port in (("127.0.0.1", 9000), ("::1", 9001)):
                up = wait_for(lambda ns=ns, h=host, p=port: ns.listening(h, p), 60)
                assert up, f"{ns.name}: no echo server on port {port}"
        yield a, b
    finally:
        a.delete()
        b.delete()


def allocations() -> int:
    with Client() as c:
        return c.info().allocations


def test_services_are_per_namespace_and_ipv6_works(two_ns: tuple[Ns, Ns]) -> None:
    a, b = two_ns
    base = allocations()
    a.apply(extra=V6)
    b.apply()
    # The same listen address in two namespaces: two independent services.
    assert wait_for(lambda: a.get("127.0.0.1", 8080) == "kt-ns-a-v4", 30)
    assert b.get("127.0.0.1", 8080) == "kt-ns-b-v4"
    assert a.get("::1", 8081) == "kt-ns-a-v6"
    # Flushing one namespace leaves the other serving.
    in_netns(a.name, lambda: Client().flush())
    with pytest.raises(RuntimeError, match="ConnectionRefused"):
        a.get("127.0.0.1", 8080)
    assert b.get("127.0.0.1", 8080) == "kt-ns-b-v4"
    # A namespace's exit closes everything of it, live connections included.
    holder = subprocess.Popen(
        ["ip", "netns", "exec", b.name, "python3", "-c",
         "import socket,time\n"
         "s=[socket.create_connection(('127.0.0.1',8080)) for _ in range(50)]\n"
         "time.sleep(600)"],
    )  # fmt: skip
    assert wait_for(lambda: in_netns(b.name, lambda: Client().info().connections) == 50, 120)
    stop(holder)
    holder.wait()
    b.delete()
    assert wait_for(lambda: allocations() == base, 60)
