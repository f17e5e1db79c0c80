"""The KTCPVS demo, run inside the QEMU guest by `make demo`.

Builds the images-vs-CGI site of examples/images-vs-cgi.rules in network
namespaces, applies the rules with `l7ctl apply` on the director, sends a
burst of mixed requests from the client over keep-alive connections, shows
where each one went, and ends with `l7ctl stats`.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "kernel"))

from demo_site import connect, read_responses  # noqa: E402
from nsutil import in_netns  # noqa: E402
from topology import Topology  # noqa: E402

RULES = ROOT / "examples" / "images-vs-cgi.rules"
BACKENDS = {"img1": "10.0.1.11", "img2": "10.0.1.12", "cgi": "10.0.2.11", "static": "10.0.3.11"}
BURST = [
    "/", "/img/logo.png", "/cgi-bin/search.cgi?q=ktcpvs", "/photos/cat.JPG", "/about.html",
    "/app/cart.cgi", "/img/banner.webp", "/cgi-bin/env", "/css/site.css", "/img/icon.gif",
]  # fmt: skip


def step(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m", flush=True)


def sh(ns: str, *argv: str) -> None:
    print(f"[{ns.split('-')[-1]}]$ {' '.join(argv)}", flush=True)
    subprocess.run(["ip", "netns", "exec", ns, *argv], check=False)


def burst() -> list[tuple[str, int, str]]:
    out = []
    for conn in range(3):  # three keep-alive connections, every request routed afresh
        with connect() as s:
            for path in BURST:
                host = "img.example.com" if conn == 2 and path == "/" else "www.example.com"
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                (r,) = read_responses(s, 1)
                out.append((f"{host}{path}", r.status, r.backend or "?"))
    return out


def main() -> int:
    topo = Topology(backends=BACKENDS)
    tmp = Path(tempfile.mkdtemp(prefix="ktdemo-"))
    tmp.chmod(0o755)
    www = tmp / "www"
    for path in BURST:  # every file the burst asks the nginx servers for
        f = www / path.lstrip("/").split("?")[0]
        if path.endswith("/"):
            f = f / "index.html"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"KTCPVS demo: " + path.encode() + b"\n" + bytes(2000))
    try:
        step("the site: client, director, image/CGI/static servers in namespaces")
        topo.up()
        for name in ("img1", "img2", "static"):
            topo.start_nginx(name, www)
        topo.start_echo("cgi", port=80)
        for n, a in BACKENDS.items():
            print(f"  {n:<7} {a}")

        step(f"l7ctl check {RULES.relative_to(ROOT)}")
        sh(topo.director.ns, "l7ctl", "check", str(RULES))
        step(f"l7ctl apply {RULES.relative_to(ROOT)}  (in the director's namespace)")
        sh(topo.director.ns, "l7ctl", "apply", str(RULES))

        step("a burst of mixed requests from the client, over keep-alive connections")
        results = in_netns(topo.client.ns, burst)
        print(f"  {'request':<48} {'status':>6}  backend")
        for req, status, backend in results:
            print(f"  {req:<48} {status:>6}  {backend}")
        bad = [r for r in results if r[1] != 200]
        print(f"  {len(results)} requests, {len(bad)} not 200")

        step("l7ctl stats  (in the director's namespace)")
        sh(topo.director.ns, "l7ctl", "stats")
        return 1 if bad else 0
    finally:
        topo.down()


if __name__ == "__main__":
    sys.exit(main())
