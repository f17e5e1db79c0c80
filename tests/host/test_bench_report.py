"""bench/macro/report.py: the per-request figures it derives from raw wrk runs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_report() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_report", ROOT / "bench/macro/report.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_report"] = mod
    spec.loader.exec_module(mod)
    return mod


report = load_report()


def run(rps: float, mean_ms: float, busy_s: float, client_s: float) -> dict[str, Any]:
    secs = 5.0
    return {
        "requests": int(rps * secs),
        "rps": rps,
        "mbps": 0.1,
        "p50_us": mean_ms * 1000,
        "p99_us": mean_ms * 3000,
        "mean_us": mean_ms * 1000,
        "cpu_s": {
            "user": busy_s / 2,
            "system": busy_s / 2,
            "softirq": 0.0,
            "irq": 0.0,
            "idle": 0.0,
            "iowait": 0.0,
            "busy": busy_s,
        },
        "client_cpu_s": {"user": client_s / 2, "system": client_s / 2},
    }


def macro(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    return {
        "systems": list(runs),
        "workloads": {
            "small_keepalive": {
                "title": "t",
                "threads": 2,
                "connections": 32,
                "seconds": 5.0,
                "runs": runs,
            },
        },
    }


def test_in_flight_is_littles_law_over_the_connections() -> None:
    # 32 connections: 640 answers/s at 50 ms each keeps all 32 busy; at 25 ms, half.
    s = report.summarize(
        macro(
            {
                "ktcpvs": [run(640, 25.0, 10.0, 1.0)] * 3,
                "haproxy": [run(640, 50.0, 10.0, 1.0)] * 3,
            }
        )
    )
    systems = s["workloads"]["small_keepalive"]["systems"]
    assert systems["haproxy"]["in_flight"] == pytest.approx(1.0)
    assert systems["ktcpvs"]["in_flight"] == pytest.approx(0.5)


def test_client_cpu_is_per_request_and_median_of_the_repetitions() -> None:
    reps = [run(100, 10.0, 2.0, c) for c in (0.5, 1.0, 4.0)]  # 500 requests each
    s = report.summarize(macro({"ktcpvs": reps}))
    got = s["workloads"]["small_keepalive"]["systems"]["ktcpvs"]["client_cpu_us"]
    assert got == pytest.approx(1.0 / 500 * 1e6)


def test_runs_without_client_time_have_no_client_figure() -> None:
    r = run(100, 10.0, 2.0, 1.0)
    del r["client_cpu_s"]
    s = report.summarize(macro({"ktcpvs": [r]}))
    assert "client_cpu_us" not in s["workloads"]["small_keepalive"]["systems"]["ktcpvs"]


def test_an_https_workload_is_reported_for_the_systems_that_ran_it() -> None:
    """HTTPS runs on the systems terminating TLS only: the others are left
    out of its rows and ratios (not errors), and its targets are reported."""
    m = macro({s: [run(1000, 10.0, 2.0, 1.0)] for s in ("direct", "floor", "ktcpvs", "haproxy")})
    m["systems"] = ["direct", "floor", "ktcpvs", "haproxy", "nginx"]
    m["workloads"]["https_small_close"] = {
        "title": "HTTPS",
        "threads": 2,
        "connections": 32,
        "seconds": 5.0,
        "runs": {
            "ktcpvs": [run(300, 10.0, 5.0, 1.0)],
            "haproxy": [run(200, 10.0, 5.0, 1.0)],
            "nginx": [run(600, 10.0, 5.0, 1.0)],
        },
    }
    s = report.summarize(m)
    w = s["workloads"]["https_small_close"]
    assert w["present"] == ["ktcpvs", "haproxy", "nginx"]
    assert w["ratios"]["ktcpvs"]["to_haproxy"] == pytest.approx(1.5)
    assert w["ratios"]["ktcpvs"]["to_nginx"] == pytest.approx(0.5)
    assert w["ratios"]["ktcpvs"]["cpu_to_haproxy"] == pytest.approx(200 / 300, abs=1e-3)
    text = report.table(s, report.targets(s))
    rows = [ln for ln in text.splitlines() if ln.startswith("https_small_close ")]
    assert [r.split()[1] for r in rows] == ["ktcpvs", "haproxy", "nginx"]
    got = {t["target"]: t["met"] for t in report.targets(s)}
    assert got["ktcpvs / HAProxy req/s, https_small_close"] is True
    assert got["ktcpvs / nginx req/s, https_small_close"] is False
    # no floor and no "nolog" run there: no target against them, not a "no figure"
    https = [t for t in got if t.endswith(", https_small_close")]
    assert not [t for t in https if "floor" in t or "log" in t]
    assert "ktcpvs / floor req/s, small_keepalive" in got
    assert "https_small_close" in report.markdown(s, report.targets(s))


def test_tls_sessions_that_do_not_resume_as_their_port_says_are_flagged() -> None:
    """The HTTPS ports must resume sessions and the full-handshake ports
    must not, or the workloads compare different handshakes."""
    m = {
        "tls": {
            "ktcpvs": "TLSv1.3, TLS_AES_256_GCM_SHA384, X25519, 253 bits, resumed",
            "haproxy": "TLSv1.3, TLS_AES_256_GCM_SHA384, X25519, 253 bits, not resumed",
        },
        "tls_full": {"nginx": "TLSv1.3, TLS_AES_256_GCM_SHA384, X25519, 253 bits, resumed"},
    }
    notes = report.tls_notes(m)
    warnings = [n for n in notes if "WARNING" in n]
    assert warnings == [
        "TLS, haproxy, HTTPS port: WARNING: sessions do not resume",
        "TLS, nginx, full-handshake port: WARNING: sessions resume",
    ]
    assert len(notes) == 5 and report.tls_notes({}) == []


def test_the_daemon_profile_is_reported_per_connection() -> None:
    prof = {
        "handed_over": 100,
        "total_s": 2.0,
        "top": [
            {"function": "~:0(do_handshake)", "calls": 300, "own_s": 1.5, "cumulative_s": 1.5},
            {"function": "tlsd.py:1(_secrets)", "calls": 100, "own_s": 0.5, "cumulative_s": 0.6},
        ],
    }
    lines = report.profile_lines({"tlsd_profile": {"full": prof}})
    assert lines[0] == (
        "tlsd profile (full): 100 connections handed over, 20000 µs of profiled time each"
    )
    assert lines[2].split() == ["15000", "75.0%", "3.00", "~:0(do_handshake)"]
    assert report.profile_lines({}) == []
    got = report.profile_lines({"tlsd_profile": {"resumed": {"error": "x"}}})
    assert got == ["tlsd profile (resumed): x"]


def test_the_daemons_handshake_times_are_reported_by_kind() -> None:
    ms = {"resumed": {"resumed": [float(i) for i in range(1, 11)], "full": [50.0]}}
    lines = report.profile_lines({"tlsd_handshake_ms": ms})
    assert lines == [
        "tlsd (resumed): full handshakes, accept to handover: p50 50.0 ms, p90 50.0 ms, "
        "max 50.0 ms (1)",
        "tlsd (resumed): resumed handshakes, accept to handover: p50 6.0 ms, p90 10.0 ms, "
        "max 10.0 ms (10)",
    ]


def held(total: float, caches: dict[str, float]) -> dict[str, Any]:
    return {
        "connections": 1000,
        "bytes_per_conn": total,
        "slab_per_conn": total,
        "rss_per_conn": 0.0,
        "module_per_conn": caches.get("kt_conn", 0.0),
        "slab_caches": caches,
    }


def test_held_memory_is_broken_down_by_slab_cache() -> None:
    """Per cache the median of the runs (a run that does not name a cache
    counts 0 for it); a row for each cache that moved by 100 bytes per
    connection or more for some system, the largest first."""
    m = macro({"ktcpvs": [run(1000, 10.0, 2.0, 1.0)]})
    m["systems"] = ["direct", "ktcpvs"]
    m["memory"] = {
        "conns_1000": {
            "connections": 1000,
            "runs": {
                "direct": [held(5000, {"TCP": 4600, "filp": 260, "pid": 250}) for _ in range(3)],
                "ktcpvs": [
                    held(6000, {"TCP": 4500, "kt_conn": 1100, "kmalloc-64": 90}),
                    held(6100, {"TCP": 4700, "kt_conn": 1100}),
                    held(6050, {"TCP": 4600, "kt_conn": 1100, "kmalloc-64": 120}),
                ],
            },
        }
    }
    m["memory"]["conns_1000"]["runs"]["direct"][0]["slab_merged"] = {
        "pid": ["eventpoll_epi", "a", "b", "c"]
    }
    s = report.summarize(m)
    got = s["memory"]["conns_1000"]["systems"]["ktcpvs"]["slab_caches"]
    assert got == {"TCP": 4600, "kt_conn": 1100, "kmalloc-64": 90}
    rows = report.cache_rows(s["memory"]["conns_1000"], ["direct", "ktcpvs"])
    assert rows == [
        ["TCP", "4600", "4600"],
        ["kt_conn", "0", "1100"],
        ["filp", "260", "0"],
        ["pid (one cache with eventpoll_epi, a, b, ...)", "250", "0"],
    ]
    md = report.markdown(s, report.targets(s))
    assert "| kt_conn | 0 | 1100 |" in md
    assert "kmalloc-64" not in md  # under 100 bytes for every system
    assert "kt_conn" in report.table(s, report.targets(s))


def test_held_memory_says_how_many_backend_connections_each_hold_added() -> None:
    """The director's connections to the backends opened during the hold (a
    proxy's idle server pool is in the held connections' figure): their
    median per system; blank for runs recorded before the count existed."""
    m = macro({"ktcpvs": [run(1000, 10.0, 2.0, 1.0)]})
    m["systems"] = ["direct", "ktcpvs", "haproxy"]
    pools = {"direct": [0, -2, 0], "ktcpvs": [128, 120, 128]}
    m["memory"] = {
        "conns_1000": {
            "connections": 1000,
            "runs": {
                s: [dict(held(5000, {}), backend_conns=n) for n in ns] for s, ns in pools.items()
            }
            | {"haproxy": [held(6000, {}) for _ in range(3)]},
        }
    }
    s = report.summarize(m)
    got = {x: st.get("backend_conns") for x, st in s["memory"]["conns_1000"]["systems"].items()}
    assert got == {
        "direct": {"median": 0.0, "min": -2.0, "max": 0.0},
        "ktcpvs": {"median": 128.0, "min": 120.0, "max": 128.0},
        "haproxy": None,
    }
    md = report.markdown(s, report.targets(s))
    assert "| 1,000 | ktcpvs | 5000 [5000-5000] | 5000 | 0 | 0 | 128 | 0 |" in md
    assert "| 1,000 | haproxy | 6000 [6000-6000] | 6000 | 0 | 0 |  | 1000 |" in md
    assert "backends" in report.table(s, report.targets(s))


def test_counts_not_run_are_blank_not_errors() -> None:
    """A run without counted runs (run.py --no-counts) shows "-" in the count
    rows; a counted run that failed still shows ERROR."""
    m = macro({"ktcpvs": [run(1000, 10.0, 2.0, 1.0)], "haproxy": [run(500, 10.0, 2.0, 1.0)]})
    m["counts"] = {"workloads": {"small_keepalive": {"haproxy": {"error": "perf failed"}}}}
    s = report.summarize(m)
    present, rows = report.count_rows(s, "small_keepalive")
    assert present == ["ktcpvs", "haproxy"]
    row = next(r for r in rows if r[0] == "context switches")
    assert row[1:] == ["-", "ERROR"]


def test_module_caches_count_the_cache_slub_merged_them_into() -> None:
    """kt_conn merged into user_namespace's cache (like size and flags) shows
    in /proc/slabinfo under that name only: the module-caches figure takes
    that row, not 0 for a name that is not listed."""
    spec = importlib.util.spec_from_file_location("bench_guest", ROOT / "bench/macro/guest.py")
    assert spec and spec.loader
    guest = importlib.util.module_from_spec(spec)
    sys.modules["bench_guest"] = guest  # for its dataclasses
    spec.loader.exec_module(guest)
    merged = {"user_namespace": ["kt_conn"], "kmalloc-64": ["dmaengine-unmap-2"]}
    delta = {"user_namespace": 616.0, "kt_msgs": 2.0, "kmalloc-64": 40.0, "TCP": 2000.0}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(guest.Bench, "slab_merged", staticmethod(lambda names: merged))
        assert guest.Bench.module_delta(delta) == 618.0
