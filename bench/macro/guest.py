#!/usr/bin/env python3
"""The macro benchmark, run inside the QEMU guest by bench/macro/guest.sh.

One Python process builds the site in network namespaces (tests/kernel/topology.py),
starts the four backends (nginx), the three proxies (ktcpvs, HAProxy, nginx)
on the director, and drives wrk from the client namespace:

    client 10.0.0.2 --> director 10.0.0.1 :80   ktcpvs   --> images 10.0.1.11, 10.0.1.12
                                          :8081 HAProxy  --> cgi    10.0.2.11
                                          :8082 nginx    --> static 10.0.3.11
                        (direct: the director only forwards, the client talks to a backend)

Every run's answers are checked (bench/macro/check.lua: status and pool of
every answer; bulk.lua + curl for the downloads); a run with any error is
recorded as an error, never as throughput.  Results go to OUT/macro.json;
the host (bench/macro/report.py) merges them into build/bench/results.json.

    guest.py CONFIG_JSON      (written by bench/macro/run.py on the host)
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests" / "kernel"))
sys.path.insert(0, str(ROOT))

from nsutil import in_netns  # noqa: E402
from topology import Topology, wait_port  # noqa: E402

BACKENDS = {"img1": "10.0.1.11", "img2": "10.0.1.12", "cgi1": "10.0.2.11", "static1": "10.0.3.11"}
POOL_OF = {"img1": "images", "img2": "images", "cgi1": "cgi", "static1": "static"}
VIP = "10.0.0.1"
PORTS = {"ktcpvs": 80, "haproxy": 8081, "nginx": 8082}
SYSTEMS = ("direct", "ktcpvs", "haproxy", "nginx")
NOFILE = 262144
SMALL = 512  # bytes of the small image
FILES = {"img/small.png": SMALL, "img/photo.jpg": 16384, "files/1m.bin": 1 << 20,
         "files/64m.bin": 64 << 20}  # fmt: skip


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

    def url(self, system: str) -> str:
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
        # ktcpvs: the module is loaded by tests/guest.sh; apply the rules in the director.
        from l7ctl.apply import apply_file

        rules = HERE / "bench.rules"
        in_netns(d, lambda: apply_file(rules))
        wait_port(d, VIP, PORTS["ktcpvs"])
        prefix = self.tmp / "haproxy"
        prefix.mkdir()
        fill(HERE / "haproxy.cfg.in", prefix / "haproxy.cfg", workers=self.cpus,
             maxconn=100000, prefix=prefix)  # fmt: skip
        p = self.topo.spawn(d, ["haproxy", "-db", "-f", str(prefix / "haproxy.cfg")], "haproxy.out")
        self.pgids["haproxy"] = p.pid
        wait_port(d, VIP, PORTS["haproxy"])
        prefix = self.tmp / "nginx-proxy"
        prefix.mkdir()
        fill(HERE / "nginx-proxy.conf.in", prefix / "nginx.conf", workers=self.cpus,
             nofile=NOFILE, maxconn=65536, prefix=prefix)  # fmt: skip
        p = self.topo.spawn(d, ["nginx", "-c", str(prefix / "nginx.conf"), "-p", str(prefix)],
                            "nginx-proxy.out")  # fmt: skip
        self.pgids["nginx"] = p.pid
        wait_port(d, VIP, PORTS["nginx"])

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
            "ktcpvs": Path("/sys/module/ktcpvs/version").read_text().strip()
            if Path("/sys/module/ktcpvs/version").exists() else "?",
        }  # fmt: skip

    # -- throughput runs ------------------------------------------------------

    def curl_check(self, w: Workload, system: str) -> str | None:
        """One download with curl: status 200, the static pool, the full size."""
        r = self.topo.exec(self.topo.client.ns, "curl", "-sS", "-o", "/dev/null", "-D", "-",
                           "-w", "KTSIZE %{http_code} %{size_download}\n", "--max-time", "120",
                           w.url(system), check=False)  # fmt: skip
        lines = r.stdout.lower().splitlines()
        size = [ln.split() for ln in lines if ln.startswith("ktsize")]
        if r.returncode != 0 or not size:
            return f"curl failed: {r.stderr.strip()}"
        if size[0][1] != "200" or int(size[0][2]) != w.size:
            return f"curl: status {size[0][1]}, {size[0][2]} bytes (expected 200, {w.size})"
        if "x-pool: static" not in [ln.strip() for ln in lines]:
            return "curl: answer not from the static pool"
        return None

    def wrk(self, w: Workload, system: str) -> dict[str, Any]:
        argv = ["wrk", "-t", str(w.threads), "-c", str(w.conns), "-d", f"{int(w.seconds)}s",
                "--timeout", "60s", "-s", str(HERE / w.script)]  # fmt: skip
        for h in w.headers:
            argv += ["-H", h]
        argv.append(w.url(system))
        if w.script == "check.lua":
            expect = "any" if system == "direct" and w.paths else "pool"
            argv += ["--", expect, *w.paths]
        r = self.topo.exec(self.topo.client.ns, *argv, check=False)
        line = [ln for ln in r.stdout.splitlines() if ln.startswith("KTBENCH ")]
        if r.returncode != 0 or not line:
            return {"error": f"wrk exited {r.returncode}: {(r.stderr or r.stdout).strip()[-300:]}"}
        res: dict[str, Any] = json.loads(line[0][len("KTBENCH ") :])
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

    def run_throughput(self, reps: int) -> None:
        wls = workloads(self.quick)
        for w in wls:
            self.results["workloads"][w.name] = {
                "title": w.title, "threads": w.threads, "connections": w.conns,
                "seconds": w.seconds, "runs": {s: [] for s in SYSTEMS},
            }  # fmt: skip
        for rep in range(reps):
            for w in wls:
                for system in SYSTEMS:
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
    def slab() -> tuple[int, dict[str, int]]:
        total, module = 0, {}
        for line in Path("/proc/slabinfo").read_text().splitlines()[2:]:
            f = line.split()
            size = int(f[1]) * int(f[3])
            total += size
            if f[0] in ("kt_conn", "ktcpvs_buf"):
                module[f[0]] = size
        return total, module

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
        host = BACKENDS["img1"] if system == "direct" else VIP
        port = 80 if system == "direct" else PORTS[system]
        time.sleep(1.0)
        slab0, mod0 = self.slab()
        rss0 = self.rss(system)
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
            slab1, mod1 = self.slab()
            rss1 = self.rss(system)
            res["slab_per_conn"] = (slab1 - slab0) / n
            res["rss_per_conn"] = (rss1 - rss0) / n
            res["module_per_conn"] = (sum(mod1.values()) - sum(mod0.values())) / n
            res["bytes_per_conn"] = res["slab_per_conn"] + res["rss_per_conn"]
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
            entry: dict[str, Any] = {"connections": n, "runs": {s: [] for s in SYSTEMS}}
            self.results["memory"][f"conns_{n}"] = entry
            for rep in range(reps):
                for system in SYSTEMS:
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

    # -- profile --------------------------------------------------------------

    def threads_cpu(self) -> dict[str, int]:
        """CPU time (ns, from /proc/PID/task/TID/schedstat) per group of threads."""
        groups: dict[str, int] = {}
        proxy_pg = {pg: name for name, pg in self.pgids.items()}
        for p in Path("/proc").iterdir():
            if not p.name.isdigit():
                continue
            with contextlib.suppress(OSError, IndexError, ValueError):
                pgid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[2])
                for t in (p / "task").iterdir():
                    comm = (t / "comm").read_text().strip()
                    ns = int((t / "schedstat").read_text().split()[0])
                    base = comm.split("/")[0].split(":")[0]
                    if base in ("nginx", "haproxy"):
                        base = (
                            f"{proxy_pg[pgid]} (proxy)" if pgid in proxy_pg else "nginx (backends)"
                        )
                    elif base == "kworker":
                        base = "kworker (ktcpvs work items, other kernel work)"
                    groups[base] = groups.get(base, 0) + ns
        return groups

    def profile(self) -> None:
        """Where the guest's CPU time goes under load, per group of threads.

        perf does not work under TCG: system-wide sampling (perf record -a -e
        cpu-clock) sees only the idle task whatever the load (checked with a busy
        loop), and per-thread sampling of running processes (-u root) got a few
        dozen samples in seconds.  So the profile is the scheduler's own
        accounting: each thread's run time from /proc/PID/task/TID/schedstat
        (nanoseconds, not ticks) over the window, grouped.  ktcpvs's data path
        runs in work items on kworker threads (its socket callbacks only queue
        work), so the kworker share is its cost; softirq work is charged to
        whichever thread was interrupted, ksoftirqd when deferred.
        """
        prof: dict[str, Any] = self.results.setdefault("profile", {})
        prof["method"] = "schedstat run time per thread group over the window (perf unusable)"
        secs = 4 if self.quick else 8
        targets = [("small_keepalive", s) for s in SYSTEMS] + [
            ("small_close", "ktcpvs"),
            ("small_close", "haproxy"),
        ]
        for wname, system in targets:
            w = next(x for x in workloads(self.quick) if x.name == wname)
            w.seconds = secs + 3
            hdrs = [a for h in w.headers for a in ("-H", h)]
            argv = ["wrk", "-t", str(w.threads), "-c", str(w.conns),
                    "-d", f"{int(w.seconds)}s", *hdrs, w.url(system)]  # fmt: skip
            wrk = self.topo.spawn(self.topo.client.ns, argv, f"prof-wrk-{wname}-{system}.out")
            time.sleep(1.5)
            t0, c0 = time.monotonic(), self.threads_cpu()
            time.sleep(secs)
            t1, c1 = time.monotonic(), self.threads_cpu()
            wrk.wait()
            wall = (t1 - t0) * 1e9 * self.cpus
            shares = {g: (c1.get(g, 0) - c0.get(g, 0)) / wall * 100 for g in c1}
            busy = sum(shares.values())
            rows = sorted(((g, v) for g, v in shares.items() if v >= 0.2), key=lambda x: -x[1])
            entry = {"window_s": round(t1 - t0, 2), "cpus": self.cpus,
                     "percent_of_all_cpu": {g: round(v, 1) for g, v in rows},
                     "idle_percent": round(max(0.0, 100 - busy), 1)}  # fmt: skip
            prof[f"{wname}/{system}"] = entry
            top = ", ".join(f"{g} {v:.0f}%" for g, v in rows[:6])
            log(f"profile {wname}/{system}: {top}; idle {entry['idle_percent']}%")
        self.save()

    # -- all ------------------------------------------------------------------

    def save(self) -> None:
        (self.out / "macro.json").write_text(json.dumps(self.results, indent=1))

    def run(self) -> int:
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))
        t0 = time.monotonic()
        self.results["quick"] = self.quick
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
            if self.cfg.get("profile", True):
                self.profile()
        except Exception:
            self.results["errors"].append(traceback.format_exc())
            log(traceback.format_exc())
        finally:
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


def _flush() -> None:
    from l7ctl.netlink import Client

    with Client() as c:
        c.flush()


def main() -> int:
    cfg = json.loads(Path(sys.argv[1]).read_text())
    return Bench(cfg).run()


if __name__ == "__main__":
    sys.exit(main())
