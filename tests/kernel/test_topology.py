"""The topology helper itself: namespaces, veth, backends, teardown."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from topology import Topology, read_log


def curl(topo: Topology, url: str) -> subprocess.CompletedProcess[str]:
    return topo.exec(topo.client.ns, "curl", "-sS", "-m", "20", "-D", "-", url)


def test_client_reaches_an_echo_backend_through_the_director(topo: Topology) -> None:
    log = topo.start_echo("b1")
    r = curl(topo, "http://10.0.1.11:8080/hello?x=1")
    assert r.stdout.startswith("HTTP/1.1 200")
    body = json.loads(r.stdout.split("\n\n", 1)[1])  # text mode: CRLF read as LF
    assert body["server"] == "b1"
    assert body["raw"].startswith("GET /hello?x=1 HTTP/1.1\r\n")
    (entry,) = read_log(log)
    assert entry["peer"].startswith("10.0.0.2:")  # routed, not NATed


def test_nginx_backend_serves_files(topo: Topology, tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(b"\x89PNG" + bytes(range(256)) * 40)
    tmp_path.chmod(0o755)
    topo.start_nginx("b2", tmp_path)
    r = topo.exec(topo.client.ns, "curl", "-sS", "-m", "20", "-o", "/dev/null",
                  "-w", "%{http_code} %{size_download}", "http://10.0.2.11/img/a.png")  # fmt: skip
    assert r.stdout == f"200 {4 + 256 * 40}"


def test_teardown_removes_everything() -> None:
    t = Topology(backends={"b1": "10.0.1.11"})
    t.up()
    t.start_echo("b1")
    names = [t.director.ns, t.client.ns, t.nodes["b1"].ns]
    t.down()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(n in listed for n in names)
    assert not t.tmp.exists()
