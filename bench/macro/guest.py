#!/usr/bin/env python3
"""The macro benchmark, run inside the QEMU guest by bench/macro/guest.sh.

One Python process builds the site in network namespaces (tests/kernel/topology.py),
starts the four backends (nginx), the three proxies (ktcpvs, HAProxy, nginx)
and the floor relay (a `relay raw;` service of the module) on the director,
and drives wrk from the client namespace:

    client 10.0.0.2 --> director 10.0.0.1 :80   ktcpvs   --> images 10.0.1.11, 10.0.1.12
                                          :8081 HAProxy  --> cgi    10.0.2.11
                                          :8082 nginx    --> static 10.0.3.11
                                          :8090 floor    --> images (every byte, no HTTP)
                        (direct: the director only forwards, the client talks to a backend)

HTTPS (the https_* workloads): ktcpvs behind `l7ctl tlsd` on :443 (the handshake in
user space, one worker per CPU, the records in kernel TLS, docs/tls.md), HAProxy on
:8443 and nginx on :8444 terminating TLS themselves; one certificate (ECDSA P-256)
and one cipher (TLS 1.3, TLS_AES_256_GCM_SHA384) for the three.  Those ports resume
sessions from stateless tickets (each system's own keys; wrk offers its last
connection's ticket); a second port of each (:4443, :9443, :9444) issues no ticket
and keeps no session: every handshake there is a full one (https_full_close).

Every run's answers are checked (bench/macro/check.lua: status and pool of
every answer; bulk.lua + curl for the downloads); a run with any error is
recorded as an error, never as throughput.  Each wrk run also reads the
guest's /proc/stat at its start and end (the CPU time of the whole guest).
After the throughput runs, one counted run per system and workload runs wrk
under `perf stat -a` (bench/macro/counters.py), with the TCP counters of
every namespace read before and after.  Results go to OUT/macro.json; the
host (bench/macro/report.py) merges them into build/bench/results.json.

    guest.py CONFIG_JSON      (written by bench/macro/run.py on the host)
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import platform
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests" / "kernel"))
sys.path.insert(0, str(ROOT))

import counters  # noqa: E402
import functime  # noqa: E402
from nsutil import in_netns  # noqa: E402
from topology import Topology, wait_port  # noqa: E402

BACKENDS = {"img1": "10.0.1.11", "img2": "10.0.1.12", "cgi1": "10.0.2.11", "static1": "10.0.3.11"}
POOL_OF = {"img1": "images", "img2": "images", "cgi1": "cgi", "static1": "static"}
VIP = "10.0.0.1"
MODULE_CACHES = ("kt_conn", "kt_msgs")  # the module's own slab caches (its buffers are pages)
# "nolog": ktcpvs with its access log off (bench.rules, service quiet)
# "workq": ktcpvs's service with the module's softirq run off (the module
# parameter fastpath=0: every step in the connection's work item)
PORTS = {"ktcpvs": 80, "workq": 80, "haproxy": 8081, "nginx": 8082, "nolog": 8083, "floor": 8090}
# HTTPS: the systems that terminate TLS, and where: sessions resumed, or never
TLS_PORTS = {"ktcpvs": 443, "haproxy": 8443, "nginx": 8444}
FULL_TLS_PORTS = {"ktcpvs": 4443, "haproxy": 9443, "nginx": 9444}
TLS_CIPHER = "TLS_AES_256_GCM_SHA384"  # OpenSSL's first TLS 1.3 choice, set for the peers
TLS_NAME = "bench.example"  # the certificate's name
SYSTEMS = ("direct", "floor", "ktcpvs", "workq", "nolog", "haproxy", "nginx")
FASTPATH = Path("/sys/module/ktcpvs/parameters/fastpath")
# The floor relays every connection to the images pool whatever it asks for
# (bench.rules); every backend serves the whole site, so its answers come
# from that pool.
FLOOR_POOL = "images"
# Systems whose answers need not come from the pool of their kind: direct
# (one backend answers everything) and the floor (one pool does).
ANY_POOL = ("direct", "floor")
CLK_TCK = os.sysconf("SC_CLK_TCK")
CLONE_NEWNET = 0x40000000
NOFILE = 262144
SMALL = 512  # bytes of the small image
FILES = {"img/small.png": SMALL, "img/photo.jpg": 16384, "files/1m.bin": 1 << 20,
         "files/64m.bin": 64 << 20}  # fmt: skip


# TcpExt counters that say why TCP sent again or where segments were dropped
LOSS_COUNTERS = (
    "TCPTimeouts", "TCPLossProbes", "TCPFastRetrans", "TCPSlowStartRetrans",
    "TCPSpuriousRTOs", "TCPDSACKRecv", "TCPBacklogDrop", "TCPRcvQDrop", "TCPOFODrop",
    "TCPZeroWindowDrop", "TCPMemoryPressures", "ListenDrops", "TCPReqQFullDrop",
)  # fmt: skip


# How long past its duration a wrk run may take before it counts as stalled
# (its own --timeout is 60 s per request; a counted run's perf stat adds its
# setup and teardown).
WRK_GRACE = 240.0


@dataclass
class Workload:
    name: str
    title: str
    path: str
    direct_host: str
    threads: int
    conns: int
    seconds: float
    script: str = "check.lua"
    paths: list[str] = field(default_factory=list)
    headers: list[str] = field(default_factory=list)
    size: int = 0  # bulk: bytes per answer
    tls: bool = False  # HTTPS: the systems of TLS_PORTS only
    full_handshakes: bool = False  # HTTPS where no session resumes (FULL_TLS_PORTS)

    def url(self, system: str) -> str:
        if self.tls:
            port = (FULL_TLS_PORTS if self.full_handshakes else TLS_PORTS)[system]
            return f"https://{VIP}:{port}{self.path}"
        if system == "direct":
            return f"http://{self.direct_host}:80{self.path}"
        return f"http://{VIP}:{PORTS[system]}{self.path}"


def workloads(quick: bool) -> list[Workload]:
    d = 2.0 if quick else 5.0
    mixed = ["/img/small.png", "/cgi-bin/app?q=1", "/img/photo.jpg", "/cgi-bin/search?q=ktcpvs"]
    return [
        Workload("small_keepalive", "small (512 B), keep-alive", "/img/small.png",
                 BACKENDS["img1"], 2, 32, d),
        Workload("small_close", "small (512 B), new connection per request", "/img/small.png",
                 BACKENDS["img1"], 2, 32, d, headers=["Connection: close"]),
        Workload("mixed_keepalive", "mixed images + CGI, keep-alive", "/img/small.png",
                 BACKENDS["img1"], 2, 32, d, paths=mixed),
        Workload("bulk_1m", "1 MiB downloads", "/files/1m.bin", BACKENDS["static1"], 1, 4, d,
                 script="bulk.lua", size=1 << 20),
        Workload("bulk_64m", "64 MiB downloads", "/files/64m.bin", BACKENDS["static1"], 1, 2,
                 d * 2, script="bulk.lua", size=64 << 20),
        # Host: a name of the certificate (ktcpvs answers 421 to any other)
        Workload("https_small_keepalive", "HTTPS, small (512 B), keep-alive", "/img/small.png",
                 BACKENDS["img1"], 2, 32, d, headers=[f"Host: {TLS_NAME}"], tls=True),
        # each wrk connection's first handshake is a full one (32 per run): four
        # times as long, so that they weigh a quarter as much (docs/performance.md)
        Workload("https_small_close", "HTTPS, small (512 B), new connection per request, "
                 "session resumed", "/img/small.png", BACKENDS["img1"], 2, 32, d * 4,
                 headers=["Connection: close", f"Host: {TLS_NAME}"], tls=True),
        Workload("https_full_close", "HTTPS, small (512 B), new connection per request, "
                 "full handshake", "/img/small.png", BACKENDS["img1"], 2, 32, d,
                 headers=["Connection: close", f"Host: {TLS_NAME}"], tls=True,
                 full_handshakes=True),
        Workload("https_bulk_1m", "HTTPS, 1 MiB downloads", "/files/1m.bin", BACKENDS["static1"],
                 1, 4, d, script="bulk.lua", size=1 << 20, headers=[f"Host: {TLS_NAME}"],
                 tls=True),
    ]  # fmt: skip


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def fill(template: Path, dest: Path, **values: object) -> None:
    text = template.read_text()
    for k, v in values.items():
        text = text.replace(f"@{k.upper()}@", str(v))
    dest.write_text(text)


class Bench:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.quick = bool(cfg.get("quick"))
        self.out = ROOT / cfg["out"]
        self.cpus = os.cpu_count() or 1
        self.topo = Topology(backends=BACKENDS)
        self.tmp: Path = self.topo.tmp
        self.tmp.chmod(0o755)
        self.pgids: dict[str, int] = {}
        self.results: dict[str, Any] = {"workloads": {}, "memory": {}, "errors": []}
        # A selection (run.py --systems, --workloads), in the usual order.
        chosen = cfg.get("systems") or SYSTEMS
        self.systems = tuple(s for s in SYSTEMS if s in chosen)
        self.names = cfg.get("workloads") or [w.name for w in workloads(self.quick)]

    def workloads(self) -> list[Workload]:
        return [w for w in workloads(self.quick) if w.name in self.names]

    def systems_for(self, w: Workload) -> tuple[str, ...]:
        """The systems a workload runs on: HTTPS only where TLS is terminated."""
        return tuple(s for s in self.systems if not w.tls or s in TLS_PORTS)

    # -- the site -------------------------------------------------------------

    def sysctls(self) -> None:
        for ns in (
            self.topo.client.ns,
            self.topo.director.ns,
            *(n.ns for n in self.topo.nodes.values()),
        ):
            self.topo.exec(ns, "sysctl", "-qw", "net.core.somaxconn=65535",
                           "net.ipv4.tcp_max_syn_backlog=65535",
                           "net.ipv4.ip_local_port_range=1024 65000",
                           "net.ipv4.tcp_tw_reuse=1")  # fmt: skip

    def docroot(self) -> Path:
        www = self.tmp / "www"
        for rel, size in FILES.items():
            f = www / rel
            f.parent.mkdir(parents=True, exist_ok=True)
            with open(f, "wb") as fh:
                chunk = bytes(range(256)) * 4096  # 1 MiB
                left = size
                while left:
                    fh.write(chunk[: min(left, len(chunk))])
                    left -= min(left, len(chunk))
        return www

    def start_backends(self, www: Path) -> None:
        for name, addr in BACKENDS.items():
            prefix = self.tmp / f"backend-{name}"
            prefix.mkdir()
            conf = prefix / "nginx.conf"
            fill(HERE / "backend-nginx.conf.in", conf, workers=self.cpus, nofile=NOFILE,
                 maxconn=65536, prefix=prefix, addr=addr, docroot=www, pool=POOL_OF[name],
                 name=name)  # fmt: skip
            node = self.topo.nodes[name]
            self.topo.spawn(node.ns, ["nginx", "-c", str(conf), "-p", str(prefix)], f"{name}.out")
            wait_port(node.ns, addr, 80)

    def start_proxies(self) -> None:
        d = self.topo.director.ns
        # ktcpvs and the floor: the module is loaded by tests/guest.sh; apply
        # the rules in the director.
        from l7ctl.apply import apply_file

        # The HTTPS service: bench.rules and a TLS service with the bench's
        # certificate, served by `l7ctl tlsd` (which reads the same file).
        tls = self.tmp / "tls"
        tls.mkdir()
        crt, key, pem = tls / "bench.crt", tls / "bench.key", tls / "bench.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-subj", f"/CN={TLS_NAME}",
             "-addext", f"subjectAltName=DNS:{TLS_NAME}", "-days", "2",
             "-keyout", str(key), "-out", str(crt)],
            check=True, capture_output=True,
        )  # fmt: skip
        key.chmod(0o600)
        pem.write_bytes(crt.read_bytes() + key.read_bytes())  # HAProxy's form
        pem.chmod(0o600)

        # Two TLS services: one whose daemon resumes sessions (its default
        # tickets) and one whose daemon has none (--ticket-lifetime 0).  The
        # module is given both; each daemon reads a file with its own.
        def tls_service(name: str, port: int) -> str:
            return f"""
service {name} listen {VIP}:{port} tls {{
    certificate "{crt}" key "{key}";
    x-forwarded-for off;
    timeout idle 300s;
    timeout backend 60s;
    route images if path prefix "/img/";
    route cgi    if path prefix "/cgi-bin/";
    route static;
}}
"""

        site = (HERE / "bench.rules").read_text()
        resumed = tls_service("secure", TLS_PORTS["ktcpvs"])
        full = tls_service("secure_full", FULL_TLS_PORTS["ktcpvs"])
        rules = self.tmp / "bench-tls.rules"
        rules.write_text(site + resumed + full)
        in_netns(d, lambda: apply_file(rules))
        wait_port(d, VIP, PORTS["ktcpvs"])
        for tag, text, extra in (("", resumed, []), ("-full", full, ["--ticket-lifetime", "0"])):
            own = self.tmp / f"tlsd{tag}.rules"
            own.write_text(site + text)
            workers = self.cpus
            prof: list[str] = []
            if self.cfg.get("profile_tlsd"):
                # run.py --profile-tlsd: one worker (cProfile follows no fork)
                prof, workers = ["-m", "cProfile", "-o", str(self.tmp / f"tlsd{tag}.prof")], 1
            if self.cfg.get("tlsd_events") or self.cfg.get("profile_tlsd"):
                extra = [*extra, "--events", str(self.tmp / f"tlsd{tag}-events.jsonl")]
            p = self.topo.spawn(d, [sys.executable, *prof, "-m", "l7ctl", "tlsd", str(own),
                                    "--workers", str(workers),
                                    "--max-handshakes-per-source", "1024", *extra],
                                f"tlsd{tag}.out")  # fmt: skip
            self.pgids[f"tlsd{tag}"] = p.pid
        slow = 600.0 if self.cfg.get("profile_tlsd") else 60.0  # cProfile: a slow start
        wait_port(d, VIP, TLS_PORTS["ktcpvs"], timeout=slow)
        wait_port(d, VIP, FULL_TLS_PORTS["ktcpvs"], timeout=slow)
        wait_port(d, VIP, PORTS["floor"])
        wait_port(d, VIP, PORTS["nolog"])
        prefix = self.tmp / "haproxy"
        prefix.mkdir()
        fill(HERE / "haproxy.cfg.in", prefix / "haproxy.cfg", workers=self.cpus,
             maxconn=100000, prefix=prefix, pem=pem, cipher=TLS_CIPHER)  # fmt: skip
        p = self.topo.spawn(d, ["haproxy", "-db", "-f", str(prefix / "haproxy.cfg")], "haproxy.out")
        self.pgids["haproxy"] = p.pid
        wait_port(d, VIP, PORTS["haproxy"])
        prefix = self.tmp / "nginx-proxy"
        prefix.mkdir()
        fill(HERE / "nginx-proxy.conf.in", prefix / "nginx.conf", workers=self.cpus,
             nofile=NOFILE, maxconn=65536, prefix=prefix, crt=crt, key=key,
             cipher=TLS_CIPHER)  # fmt: skip
        p = self.topo.spawn(d, ["nginx", "-c", str(prefix / "nginx.conf"), "-p", str(prefix)],
                            "nginx-proxy.out")  # fmt: skip
        self.pgids["nginx"] = p.pid
        wait_port(d, VIP, PORTS["nginx"])
        for port in [*TLS_PORTS.values(), *FULL_TLS_PORTS.values()]:
            wait_port(d, VIP, port)
        self.results["tls"] = {s: self.tls_session(TLS_PORTS[s]) for s in TLS_PORTS}
        self.results["tls_full"] = {s: self.tls_session(FULL_TLS_PORTS[s]) for s in FULL_TLS_PORTS}

    def tls_session(self, port: int) -> str:
        """The protocol, cipher and key exchange a client gets from a system's
        HTTPS port, and whether a second connection resumes the first one's
        session (Python's ssl, as wrk does: the ticket kept from a connection
        read to its end, offered on the next)."""
        r = self.topo.exec(self.topo.client.ns, "sh", "-c",
                           f"openssl s_client -brief -connect {VIP}:{port} "
                           f"-servername {TLS_NAME} </dev/null", check=False)  # fmt: skip
        text = r.stdout + r.stderr
        keys = ("Protocol version:", "Ciphersuite:", "Server Temp Key:", "Peer Temp Key:")
        got = [ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith(keys)]
        if not got:
            return f"no session: {text.strip()[-200:]}"
        try:
            reused = in_netns(self.topo.client.ns, lambda: resumes(port))
        except Exception as e:  # a diagnostic: reported, not raised
            return ", ".join(got) + f", resumption not checked: {e}"
        return ", ".join(got) + (", resumed" if reused else ", not resumed")

    def versions(self) -> dict[str, str]:
        def first(*argv: str) -> str:
            r = subprocess.run(argv, capture_output=True, text=True, check=False)
            return (r.stdout + r.stderr).strip().splitlines()[0] if (r.stdout + r.stderr) else "?"

        return {
            "kernel": platform.release(),
            "cpus": str(self.cpus),
            "haproxy": first("haproxy", "-v"),
            "nginx": first("nginx", "-v"),
            "wrk": first("wrk", "-v"),
            "openssl": first("openssl", "version"),
            "ktcpvs": Path("/sys/module/ktcpvs/version").read_text().strip()
            if Path("/sys/module/ktcpvs/version").exists() else "?",
        }  # fmt: skip

    # -- throughput runs ------------------------------------------------------

    @staticmethod
    def fastpath(system: str) -> None:
        """The module's softirq run: off for "workq" only."""
        FASTPATH.write_text("0" if system == "workq" else "1")

    def curl_check(self, w: Workload, system: str) -> str | None:
        """One download with curl: status 200, the static pool (the floor's
        pool for the floor), the full size."""
        self.fastpath(system)
        tls = ["-k", *(a for h in w.headers for a in ("-H", h))] if w.tls else []
        r = self.topo.exec(self.topo.client.ns, "curl", "-sS", "-o", "/dev/null", "-D", "-",
                           "-w", "KTSIZE %{http_code} %{size_download}\n", "--max-time", "120",
                           *tls, w.url(system), check=False)  # fmt: skip
        lines = r.stdout.lower().splitlines()
        size = [ln.split() for ln in lines if ln.startswith("ktsize")]
        if r.returncode != 0 or not size:
            return f"curl failed: {r.stderr.strip()}"
        if size[0][1] != "200" or int(size[0][2]) != w.size:
            return f"curl: status {size[0][1]}, {size[0][2]} bytes (expected 200, {w.size})"
        pool = FLOOR_POOL if system == "floor" else "static"
        if f"x-pool: {pool}" not in [ln.strip() for ln in lines]:
            return f"curl: answer not from the {pool} pool"
        return None

    def wrk_argv(self, w: Workload, system: str) -> list[str]:
        argv = ["wrk", "-t", str(w.threads), "-c", str(w.conns), "-d", f"{int(w.seconds)}s",
                "--timeout", "60s", "-s", str(HERE / w.script)]  # fmt: skip
        for h in w.headers:
            argv += ["-H", h]
        argv.append(w.url(system))
        if w.script == "check.lua":
            expect = "any" if system in ANY_POOL and w.paths else "pool"
            argv += ["--", expect, *w.paths]
        return argv

    def wrk(self, w: Workload, system: str, prefix: list[str] | None = None) -> dict[str, Any]:
        """One checked wrk run (under PREFIX, e.g. perf stat, when given)."""
        self.fastpath(system)
        argv = [*(prefix or []), *self.wrk_argv(w, system)]
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.Popen(["ip", "netns", "exec", self.topo.client.ns, *argv],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)  # fmt: skip
        try:
            stdout, stderr = proc.communicate(timeout=w.seconds + WRK_GRACE)
        except subprocess.TimeoutExpired:
            report = self.stall_report(f"{w.name}-{system}")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return {"error": f"no end after {w.seconds + WRK_GRACE:.0f} s: killed; {report}"}
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        line = [ln for ln in stdout.splitlines() if ln.startswith("KTBENCH ")]
        if proc.returncode != 0 or not line:
            return {"error": f"wrk exited {proc.returncode}: {(stderr or stdout).strip()[-300:]}"}
        res: dict[str, Any] = json.loads(line[0][len("KTBENCH ") :])
        # The guest's CPU time over the run, from the /proc/stat lines wrk read.
        cpu = counters.cpu_delta(res.pop("stat0"), res.pop("stat1"), CLK_TCK)
        res["cpu_s"] = {k: round(v, 3) for k, v in cpu.items()}
        # The client's own CPU time (wrk, and perf in a counted run): the
        # kernel charges softirq work to the task it interrupts, so the work a
        # proxy does in softirq during wrk's system calls shows here.
        res["client_cpu_s"] = {"user": round(ru1.ru_utime - ru0.ru_utime, 3),
                               "system": round(ru1.ru_stime - ru0.ru_stime, 3)}  # fmt: skip
        if res["requests"]:
            res["cpu_us_per_req"] = cpu["busy"] / res["requests"] * 1e6
        errors = {k: v for k, v in res.items()
                  if (k.startswith("err_") or k in ("bad_status", "wrong_pool")) and v}  # fmt: skip
        # Bulk figures are bytes/s (wrk counts every byte read, also of a download
        # still running at the end), so a run too short to finish one 64 MiB
        # answer still measures; other workloads need answers.
        if res["requests"] == 0 and (not w.size or res["bytes"] == 0):
            errors["no_answers"] = 1
        if w.script == "check.lua" and res["checked"] < res["requests"]:
            errors["unchecked"] = res["requests"] - res["checked"]
        if w.size and res["requests"] and res["bytes"] < res["requests"] * w.size:
            errors["short_bodies"] = res["requests"]
        secs = res["duration_us"] / 1e6
        res["rps"] = res["requests"] / secs
        res["mbps"] = res["bytes"] / secs / 1e6
        if errors:
            res["error"] = "answers failed the check: " + ", ".join(
                f"{k}={v}" for k, v in sorted(errors.items())
            )
        return res

    def stall_report(self, tag: str) -> str:
        """A run that did not end (a whole run stopped making progress twice,
        in its counted phase, with no kernel report): what the guest is doing,
        into stall-TAG.txt -- the busiest tasks and their kernel stacks, two
        looks at the softirq counters, the module's connections, every CPU's
        backtrace and the kernel log.  Returns where it went."""
        path = self.out / f"stall-{tag}.txt"
        parts: list[str] = []

        def run(*argv: str) -> None:
            try:
                r = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
                parts.append(f"$ {' '.join(argv)}\n{r.stdout}{r.stderr}")
            except (OSError, subprocess.TimeoutExpired) as e:
                parts.append(f"$ {' '.join(argv)}\n{e}")

        run("ps", "-eo", "pid,stat,pcpu,time,wchan:32,comm", "--sort=-pcpu")
        ps = subprocess.run(["ps", "-eo", "pid=", "--sort=-pcpu"], capture_output=True,
                            text=True, check=False).stdout.split()[:8]  # fmt: skip
        for pid in ps:
            with contextlib.suppress(OSError):
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
                parts.append(f"--- /proc/{pid}/stack ({comm})\n"
                             + Path(f"/proc/{pid}/stack").read_text())  # fmt: skip
        for _ in range(2):
            with contextlib.suppress(OSError):
                parts.append("--- /proc/softirqs\n" + Path("/proc/softirqs").read_text())
            time.sleep(1)
        with contextlib.suppress(OSError):
            Path("/proc/sysrq-trigger").write_text("l")
        run("ip", "netns", "exec", self.topo.director.ns, "ss", "-tanoi")
        run("dmesg")
        path.write_text("\n".join(parts))
        return f"what the guest was doing: {path.name}"

    def warm_up(self, w: Workload, system: str) -> None:
        """A short unrecorded run before a system's first measured one: the
        backend connections a proxy keeps (ktcpvs's parked ones are shared
        by every ktcpvs service of the bench) are open, and the caches warm,
        whichever system ran before."""
        self.wrk(replace(w, seconds=1.0), system)

    def run_throughput(self, reps: int) -> None:
        wls = self.workloads()
        for w in wls:
            self.results["workloads"][w.name] = {
                "title": w.title, "threads": w.threads, "connections": w.conns,
                "seconds": w.seconds, "runs": {s: [] for s in self.systems_for(w)},
            }  # fmt: skip
        for rep in range(reps):
            for w in wls:
                # Each repetition starts with another system, so that none
                # always runs first (with cold backends, pools and caches)
                # or always right after the same neighbour.
                systems = self.systems_for(w)
                k = rep % max(1, len(systems))
                for system in (*systems[k:], *systems[:k]):
                    if rep == 0:
                        self.warm_up(w, system)
                    if w.size and rep == 0:
                        err = self.curl_check(w, system)
                        if err:
                            res: dict[str, Any] = {"error": err}
                            self.results["workloads"][w.name]["runs"][system].append(res)
                            log(f"{w.name:16} {system:8} rep {rep}: ERROR {err}")
                            continue
                    res = self.wrk(w, system)
                    self.results["workloads"][w.name]["runs"][system].append(res)
                    if "error" in res:
                        log(f"{w.name:16} {system:8} rep {rep}: ERROR {res['error']}")
                    else:
                        log(f"{w.name:16} {system:8} rep {rep}: {res['rps']:9.1f} req/s "
                            f"{res['mbps']:8.1f} MB/s p50 {res['p50_us'] / 1000:7.2f} ms "
                            f"p99 {res['p99_us'] / 1000:7.2f} ms")  # fmt: skip
                self.save()

    # -- memory per connection ------------------------------------------------

    @staticmethod
    def slab() -> dict[str, int]:
        """Bytes in use per slab cache (active objects times object size)."""
        caches: dict[str, int] = {}
        for line in Path("/proc/slabinfo").read_text().splitlines()[2:]:
            f = line.split()
            caches[f[0]] = caches.get(f[0], 0) + int(f[1]) * int(f[3])
        return caches

    @staticmethod
    def slab_merged(names: Iterable[str]) -> dict[str, list[str]]:
        """For each of NAMES that SLUB merged with other caches of like size
        and flags (one cache, /proc/slabinfo shows one name), the other
        names it holds, from /sys/kernel/slab's links."""
        root = Path("/sys/kernel/slab")
        by_target: dict[str, list[str]] = {}
        with contextlib.suppress(OSError):
            for p in root.iterdir():
                if p.is_symlink():
                    by_target.setdefault(os.readlink(p), []).append(p.name)
        out = {}
        for n in names:
            with contextlib.suppress(OSError):
                if (root / n).is_symlink():
                    others = sorted(x for x in by_target.get(os.readlink(root / n), []) if x != n)
                    if others:
                        out[n] = others
        return out

    @classmethod
    def module_delta(cls, delta: dict[str, float]) -> float:
        """The part of a slab DELTA (bytes per connection by /proc/slabinfo
        name) in the module's caches: SLUB may have merged one into another
        cache of like size, which /proc/slabinfo lists under that name alone
        (kt_conn was found in user_namespace's); such a row counts whole."""
        merged = cls.slab_merged(delta)
        return sum(
            d
            for name, d in delta.items()
            if name in MODULE_CACHES or any(m in MODULE_CACHES for m in merged.get(name, ()))
        )

    def backend_conns(self) -> int:
        """The director's established connections to a backend: the server
        connections the proxies keep (idle pools, in use), whose sockets a
        held connection's slab figure carries when they were opened (or
        closed) during its hold."""
        out = subprocess.run(
            ["ip", "netns", "exec", self.topo.director.ns, "ss", "-Htn", "state", "established"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        peers = {f"{a}:80" for a in BACKENDS.values()}
        return sum(1 for line in out.splitlines() if peers & set(line.split()))

    def rss(self, system: str) -> int:
        pgid = self.pgids.get(system)
        if pgid is None:
            return 0
        total = 0
        for p in Path("/proc").iterdir():
            if not p.name.isdigit():
                continue
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (p / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[2]) != pgid:
                    continue
                for line in (p / "status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        return total

    def hold(self, system: str, n: int) -> dict[str, Any]:
        self.fastpath(system)
        host = BACKENDS["img1"] if system == "direct" else VIP
        port = 80 if system == "direct" else PORTS[system]
        time.sleep(1.0)
        slab0 = self.slab()
        rss0 = self.rss(system)
        backends0 = self.backend_conns()
        p = subprocess.Popen(
            ["ip", "netns", "exec", self.topo.client.ns, sys.executable, str(HERE / "hold.py"),
             host, str(port), str(n), "/img/small.png", "images"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert p.stdin is not None and p.stdout is not None
        line = p.stdout.readline()
        res: dict[str, Any] = {"connections": n}
        try:
            if not line.startswith("READY "):
                res["error"] = f"hold.py failed: {line.strip()!r}"
                return res
            report = json.loads(line[6:])
            res.update(report)
            if report["bad"]:
                res["error"] = f"{report['bad']} of {n} connections did not get a right answer"
                return res
            time.sleep(2.0)
            slab1 = self.slab()
            rss1 = self.rss(system)
            delta = {c: (slab1.get(c, 0) - slab0.get(c, 0)) / n for c in slab1.keys() | slab0}
            res["slab_per_conn"] = sum(delta.values())
            res["rss_per_conn"] = (rss1 - rss0) / n
            res["module_per_conn"] = self.module_delta(delta)
            # where the slab delta is: the caches that moved by 32 bytes per connection or more
            res["slab_caches"] = {c: round(d, 1) for c, d in delta.items() if abs(d) >= 32}
            res["slab_merged"] = self.slab_merged(res["slab_caches"])
            res["bytes_per_conn"] = res["slab_per_conn"] + res["rss_per_conn"]
            # every proxy's idle server pool lives in the director: what the
            # slab delta holds is the net change over this hold
            res["backend_conns"] = self.backend_conns() - backends0
            return res
        finally:
            p.stdin.close()
            p.wait(timeout=120)
            time.sleep(1.0)

    def run_memory(self) -> None:
        # (connections, repetitions); opening 10,000 connections takes 20-40 s per
        # system under TCG.
        sizes = ((200, 1), (1000, 1)) if self.quick else ((1000, 3), (10000, 3))
        for n, reps in sizes:
            entry: dict[str, Any] = {"connections": n, "runs": {s: [] for s in self.systems}}
            self.results["memory"][f"conns_{n}"] = entry
            for rep in range(reps):
                for system in self.systems:
                    res = self.hold(system, n)
                    entry["runs"][system].append(res)
                    if "error" in res:
                        log(f"hold {n:6} {system:8} rep {rep}: ERROR {res['error']}")
                    else:
                        log(f"hold {n:6} {system:8} rep {rep}: {res['bytes_per_conn']:8.0f} B/conn "
                            f"(slab {res['slab_per_conn']:.0f}, rss {res['rss_per_conn']:.0f}, "
                            f"module caches {res['module_per_conn']:.0f}; opened in "
                            f"{res['seconds']} s)")  # fmt: skip
                self.save()

    # -- event counts ---------------------------------------------------------

    def snmp(self) -> dict[str, dict[str, int]]:
        """The Tcp counters of /proc/net/snmp in every namespace (one child
        process that enters each in turn)."""
        names = {"client": self.topo.client.ns, "director": self.topo.director.ns}
        names.update({n: node.ns for n, node in self.topo.nodes.items()})

        def read_all() -> dict[str, dict[str, int]]:
            libc = ctypes.CDLL(None, use_errno=True)
            out: dict[str, dict[str, int]] = {}
            for name, ns in names.items():
                fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
                try:
                    if libc.setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), f"setns {ns}")
                finally:
                    os.close(fd)
                tcp = [ln.split() for ln in Path("/proc/self/net/snmp").read_text().splitlines()
                       if ln.startswith("Tcp:")]  # fmt: skip
                out[name] = dict(zip(tcp[0][1:], (int(x) for x in tcp[1][1:]), strict=True))
                ext = [ln.split() for ln in Path("/proc/self/net/netstat").read_text().splitlines()
                       if ln.startswith("TcpExt:")]  # fmt: skip
                out[name].update(zip(ext[0][1:], (int(x) for x in ext[1][1:]), strict=True))
            return out

        got: dict[str, dict[str, int]] = in_netns(self.topo.client.ns, read_all)
        return got

    @staticmethod
    def snmp_delta(a: dict[str, dict[str, int]], b: dict[str, dict[str, int]]) -> dict[str, int]:
        keys = ("OutSegs", "InSegs", "RetransSegs", "ActiveOpens", "PassiveOpens")
        out = {f"director:{k}": b["director"][k] - a["director"][k] for k in keys}
        out.update({f"all:{k}": sum(b[n][k] - a[n][k] for n in b) for k in keys})
        # Why segments were sent again, or where they were lost (TcpExt),
        # by namespace: only the counters that moved.
        for n in b:
            for k in LOSS_COUNTERS:
                d = b[n].get(k, 0) - a[n].get(k, 0)
                if d:
                    out[f"{n}:{k}"] = d
        return out

    def run_counts(self) -> None:
        """One run per workload and system under perf stat -a: every event of
        bench/macro/counters.py over the whole guest, from wrk's start to its
        end; TCP segments from every namespace's counters."""
        entry: dict[str, Any] = self.results.setdefault("counts", {})
        entry["method"] = "perf stat -a -x, (counting) around wrk; /proc/net/snmp per namespace"
        problems = counters.setup()
        events = counters.available()
        missing = [e.key for e in counters.EVENTS if e not in events]
        if missing:
            problems.append("not available on this kernel: " + ", ".join(missing))
        entry["problems"] = problems
        entry["events"] = [e.key for e in events]
        for p in problems:
            log(f"counts: {p}")
        out = self.tmp / "perf.txt"
        holder = counters.hold(events)
        time.sleep(2)  # its events open before the idle count starts
        try:
            # What an idle guest counts per second: the background of every figure.
            t0 = time.monotonic()
            r = subprocess.run([*counters.perf_argv(events, out), "--", "sleep", "3"],
                               capture_output=True, text=True, check=False)  # fmt: skip
            if r.returncode != 0:
                entry["error"] = f"perf stat failed: {r.stderr.strip()[-300:]}"
                log(f"counts: {entry['error']}")
                return
            secs = time.monotonic() - t0
            idle = counters.parse(events, out.read_text())
            entry["idle_per_second"] = {k: round(v / secs, 1) for k, v in idle.items()}
            runs: dict[str, Any] = entry.setdefault("workloads", {})
            for w in self.workloads():
                runs[w.name] = {}
                for system in self.systems_for(w):
                    self.warm_up(w, system)
                    out.unlink(missing_ok=True)
                    s0 = self.snmp()
                    res = self.wrk(w, system, [*counters.perf_argv(events, out), "--"])
                    s1 = self.snmp()
                    if "error" not in res:
                        try:
                            res["events"] = counters.parse(events, out.read_text())
                        except OSError as e:
                            res["error"] = f"perf stat wrote nothing: {e}"
                        res["snmp"] = self.snmp_delta(s0, s1)
                    runs[w.name][system] = res
                    if "error" in res:
                        log(f"counts {w.name:16} {system:8}: ERROR {res['error']}")
                    else:
                        n = max(1, res["requests"])
                        ev = res["events"]
                        log(f"counts {w.name:16} {system:8}: {res['requests']} requests; per "
                            f"request {res.get('cpu_us_per_req', 0):.0f} us CPU, "
                            f"{ev.get('syscalls', 0) / n:.1f} syscalls, "
                            f"{ev.get('context_switches', 0) / n:.1f} cs, "
                            f"{ev.get('work_queued', 0) / n:.1f} work items")  # fmt: skip
                    self.save()
        finally:
            counters.release(holder)
            counters.teardown()

    def run_function_times(self) -> None:
        """run.py --function-times: one traced wrk run per workload and
        system (3 s, after a warm-up) under the function_graph tracer on
        functime.FUNCTIONS; per request, each function's calls and its time
        (bench/macro/functime.py says how to read them).  A diagnostic:
        the tracer slows every traced call, so these runs' rates are not
        the throughput phase's."""
        entry: dict[str, Any] = self.results.setdefault("function_times", {})
        traced, problems = functime.setup()
        entry["functions"] = traced
        entry["problems"] = problems
        for p in problems:
            log(f"function times: {p}")
        if not traced:
            return
        runs: dict[str, Any] = entry.setdefault("workloads", {})
        try:
            for w in self.workloads():
                runs[w.name] = {}
                for system in self.systems_for(w):
                    self.warm_up(w, system)
                    functime.start()
                    try:
                        res = self.wrk(replace(w, seconds=3.0), system)
                    finally:
                        text, lost = functime.stop()
                    parsed = functime.parse(text)
                    res["trace_lines"] = text.count("\n")
                    res["lost_events"] = lost
                    res["unmatched_returns"] = parsed.unmatched
                    if lost and "error" not in res:
                        res["error"] = f"the trace lost {lost} events: figures incomplete"
                    res["functions"] = functime.per_request(parsed, res.get("requests", 0))
                    runs[w.name][system] = res
                    top = sorted(res["functions"].items(), key=lambda kv: -kv[1]["self_us"])
                    log(f"function times {w.name:16} {system:8}: {res.get('requests', 0)} "
                        f"requests, {res['trace_lines']} lines; most self time: "
                        + ", ".join(f"{k} {v['self_us']:.0f} us" for k, v in top[:4]))  # fmt: skip
                    self.save()
        finally:
            functime.teardown()

    # -- all ------------------------------------------------------------------

    def save(self) -> None:
        (self.out / "macro.json").write_text(json.dumps(self.results, indent=1))

    def run(self) -> int:
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))
        t0 = time.monotonic()
        self.results["quick"] = self.quick
        self.results["systems"] = list(self.systems)
        self.results["versions"] = self.versions()
        log(f"guest: {self.results['versions']}")
        try:
            self.topo.up()
            self.sysctls()
            www = self.docroot()
            self.start_backends(www)
            self.start_proxies()
            log(f"site up in {time.monotonic() - t0:.0f} s")
            reps = int(self.cfg.get("reps", 1 if self.quick else 3))
            if self.cfg.get("throughput", True):
                self.run_throughput(reps)
            if self.cfg.get("memory", True):
                self.run_memory()
            if self.cfg.get("counts", True):
                self.run_counts()
            if self.cfg.get("function_times"):
                self.run_function_times()
        except Exception:
            self.results["errors"].append(traceback.format_exc())
            log(traceback.format_exc())
        finally:
            if self.cfg.get("profile_tlsd"):
                self.results["tlsd_profile"] = {
                    "resumed": self.tlsd_profile(""),
                    "full": self.tlsd_profile("-full"),
                }
            if self.cfg.get("tlsd_events") or self.cfg.get("profile_tlsd"):
                self.results["tlsd_outcomes"] = {
                    "resumed": self.tlsd_outcomes(""),
                    "full": self.tlsd_outcomes("-full"),
                }
                self.results["tlsd_handshake_ms"] = {
                    "resumed": self.tlsd_handshake_ms(""),
                    "full": self.tlsd_handshake_ms("-full"),
                }
            self.results["guest_seconds"] = round(time.monotonic() - t0, 1)
            self.save()
            with contextlib.suppress(Exception):
                for f in self.tmp.glob("*.out"):
                    shutil.copy(f, self.out / f"log-{f.name}")
            with contextlib.suppress(Exception):
                in_netns(self.topo.director.ns, _flush)
            self.topo.down()
        log(f"done in {time.monotonic() - t0:.0f} s")
        return 1 if self.results["errors"] else 0

    def tlsd_profile(self, tag: str) -> dict[str, Any]:
        """Stop a profiled daemon (TAG "": the resuming port's, "-full": the
        full-handshake port's) and read its profile: the functions with the
        most time of their own, per connection handed over."""
        import pstats

        pid = self.pgids.get(f"tlsd{tag}")
        if pid is None:
            return {"error": "no profiled daemon"}
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        prof = self.tmp / f"tlsd{tag}.prof"
        for _ in range(300):
            if prof.exists() and prof.stat().st_size:
                break
            time.sleep(0.1)
        time.sleep(0.5)
        out = (self.tmp / f"tlsd{tag}.out").read_text(errors="replace")
        stopped = [ln for ln in out.splitlines() if "tlsd: stopped:" in ln]
        conns = int(stopped[-1].split("stopped:")[1].split()[0]) if stopped else 0
        if not prof.exists():
            return {"error": "no profile written", "log": out[-500:]}
        st = pstats.Stats(str(prof))
        rows = []
        for (file, line, fn), (_cc, nc, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
            rows.append({"function": f"{Path(file).name}:{line}({fn})", "calls": nc,
                         "own_s": round(tt, 4), "cumulative_s": round(ct, 4)})  # fmt: skip
        rows.sort(key=lambda r: -float(r["own_s"]))
        total = sum(float(r["own_s"]) for r in rows)
        return {"handed_over": conns, "total_s": round(total, 3), "top": rows[:40]}

    def tlsd_outcomes(self, tag: str) -> dict[str, int]:
        """run.py --tlsd-events: how a daemon's connections ended, counted
        by outcome (resumed or not) and error."""
        outcomes: dict[str, int] = {}
        events = self.tmp / f"tlsd{tag}-events.jsonl"
        for line in events.read_text().splitlines() if events.exists() else []:
            ev = json.loads(line)
            key = f"{ev['outcome']}{' resumed' if ev.get('resumed') else ''}: {ev['error']}"
            outcomes[key] = outcomes.get(key, 0) + 1
        return outcomes

    def tlsd_handshake_ms(self, tag: str) -> dict[str, list[float]]:
        """run.py --tlsd-events: the daemon's time from accept to handover
        (its events' "ms"), by kind of handshake, sorted."""
        out: dict[str, list[float]] = {}
        events = self.tmp / f"tlsd{tag}-events.jsonl"
        for line in events.read_text().splitlines() if events.exists() else []:
            ev = json.loads(line)
            if ev["outcome"] == "adopted" and "ms" in ev:
                out.setdefault("resumed" if ev["resumed"] else "full", []).append(float(ev["ms"]))
        return {k: sorted(v) for k, v in out.items()}


def resumes(port: int) -> bool:
    """Whether a session of VIP:PORT resumes on the next connection."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    req = f"GET /img/small.png HTTP/1.1\r\nHost: {TLS_NAME}\r\nConnection: close\r\n\r\n"
    session = None
    reused = False
    for _ in range(2):
        raw = socket.create_connection((VIP, port), timeout=30)
        with ctx.wrap_socket(raw, server_hostname=TLS_NAME, session=session) as s:
            s.sendall(req.encode())
            with contextlib.suppress(ssl.SSLError, OSError):
                while s.recv(65536):  # to the end: TLS 1.3's tickets come first
                    pass
            session, reused = s.session, bool(s.session_reused)
    return reused


def _flush() -> None:
    from l7ctl.netlink import Client

    with Client() as c:
        c.flush()


def main() -> int:
    cfg = json.loads(Path(sys.argv[1]).read_text())
    return Bench(cfg).run()


if __name__ == "__main__":
    sys.exit(main())
