"""Merge the macro benchmark's raw runs with the micro-benchmarks, print the
table, write build/bench/results.json and draw build/bench/chart.png.

Per workload and system: the median, min and max over the repetitions of
requests/s, throughput (MB/s), p50 and p99 latency; per held-connection
count: memory per connection.  A figure with any failed repetition (a non-2xx
answer, a wrong pool, a socket error, a short body) is reported as an error
with its messages and no numbers.  Ratios are of medians: to HAProxy and to
direct access, within this one run.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

SYSTEMS = ("direct", "ktcpvs", "haproxy", "nginx")
COLORS = {"direct": "#888888", "ktcpvs": "#d62728", "haproxy": "#1f77b4", "nginx": "#2ca02c"}
BULK = ("bulk_1m", "bulk_64m")

Stat = dict[str, float]


def stat(values: list[float]) -> Stat:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize_runs(
    runs: list[dict[str, Any]], keys: dict[str, tuple[str, float]]
) -> dict[str, Any]:
    errors = [r["error"] for r in runs if "error" in r]
    if errors or not runs:
        return {"error": errors or ["no runs"], "runs": len(runs)}
    out: dict[str, Any] = {"runs": len(runs)}
    for name, (key, scale) in keys.items():
        out[name] = stat([float(r[key]) * scale for r in runs])
    return out


def ratio(a: dict[str, Any], b: dict[str, Any], key: str) -> float | None:
    if key not in a or key not in b or not b[key]["median"]:
        return None
    return round(float(a[key]["median"]) / float(b[key]["median"]), 3)


def summarize(macro: dict[str, Any]) -> dict[str, Any]:
    workloads: dict[str, Any] = {}
    for wname, w in macro.get("workloads", {}).items():
        systems = {
            s: summarize_runs(
                w["runs"].get(s, []),
                {
                    "rps": ("rps", 1.0),
                    "mbps": ("mbps", 1.0),
                    "p50_ms": ("p50_us", 1e-3),
                    "p99_ms": ("p99_us", 1e-3),
                },
            )
            for s in SYSTEMS
        }
        key = "mbps" if wname in BULK else "rps"
        ratios = {
            s: {
                "to_haproxy": ratio(systems[s], systems["haproxy"], key),
                "to_direct": ratio(systems[s], systems["direct"], key),
            }
            for s in SYSTEMS
        }
        workloads[wname] = {
            "title": w["title"],
            "threads": w["threads"],
            "connections": w["connections"],
            "seconds": w["seconds"],
            "figure": key,
            "systems": systems,
            "ratios": ratios,
        }
    memory: dict[str, Any] = {}
    for mname, m in macro.get("memory", {}).items():
        systems = {
            s: summarize_runs(
                m["runs"].get(s, []),
                {
                    "bytes_per_conn": ("bytes_per_conn", 1.0),
                    "slab_per_conn": ("slab_per_conn", 1.0),
                    "rss_per_conn": ("rss_per_conn", 1.0),
                    "module_per_conn": ("module_per_conn", 1.0),
                },
            )
            for s in SYSTEMS
        }
        direct = systems["direct"].get("bytes_per_conn")
        for s in SYSTEMS:
            if direct and "bytes_per_conn" in systems[s]:
                systems[s]["over_direct_per_conn"] = (
                    systems[s]["bytes_per_conn"]["median"] - direct["median"]
                )
        ratios = {}
        for s in SYSTEMS:
            a, h = (
                systems[s].get("over_direct_per_conn"),
                systems["haproxy"].get("over_direct_per_conn"),
            )
            ratios[s] = {
                "to_haproxy": round(a / h, 3) if a is not None and h else None,
                "to_direct": ratio(systems[s], systems["direct"], "bytes_per_conn"),
            }
        memory[mname] = {"connections": m["connections"], "systems": systems, "ratios": ratios}
    return {"workloads": workloads, "memory": memory}


def targets(s: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, reported, never asserted."""
    out: list[dict[str, Any]] = []
    w, m = s["workloads"], s["memory"]

    def add(name: str, want: str, value: float | None, ok: bool | None) -> None:
        out.append({"target": name, "want": want, "value": value, "met": ok})

    for wl in ("small_close", "small_keepalive"):
        r = w.get(wl, {}).get("ratios", {}).get("ktcpvs", {}).get("to_haproxy")
        add(f"ktcpvs / HAProxy req/s, {wl}", ">= 2.0", r, None if r is None else r >= 2.0)
    for wl in ("small_keepalive", "mixed_keepalive"):
        r = w.get(wl, {}).get("ratios", {}).get("ktcpvs", {}).get("to_direct")
        add(f"ktcpvs / direct req/s, {wl}", ">= 0.8", r, None if r is None else r >= 0.8)
    for wl in BULK:
        r = w.get(wl, {}).get("ratios", {}).get("ktcpvs", {}).get("to_direct")
        add(f"ktcpvs / direct MB/s, {wl}", ">= 0.9", r, None if r is None else r >= 0.9)
    for mn in m:
        r = m[mn]["ratios"]["ktcpvs"]["to_haproxy"]
        add(
            f"ktcpvs / HAProxy memory per connection (over direct), {mn}",
            "<= 0.25",
            r,
            None if r is None else r <= 0.25,
        )
    return out


def fmt(st: dict[str, Any], key: str, f: str) -> str:
    if "error" in st:
        return "ERROR"
    return format(st[key]["median"], f)


def rng(st: dict[str, Any], key: str, f: str) -> str:
    if "error" in st:
        return ""
    return f"[{format(st[key]['min'], f)}-{format(st[key]['max'], f)}]"


def table(s: dict[str, Any], tg: list[dict[str, Any]]) -> str:
    lines = []
    hdr = (
        f"{'workload':<17}{'system':<8}{'req/s':>10} {'[min-max]':<19}{'MB/s':>9}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'÷HAProxy':>9}{'÷direct':>9}"
    )
    lines += [hdr, "-" * len(hdr)]
    for wname, w in s["workloads"].items():
        for sys_ in SYSTEMS:
            st, r = w["systems"][sys_], w["ratios"][sys_]
            rh = "" if r["to_haproxy"] is None else f"{r['to_haproxy']:.2f}"
            rd = "" if r["to_direct"] is None else f"{r['to_direct']:.2f}"
            lines.append(
                f"{wname:<17}{sys_:<8}{fmt(st, 'rps', '.0f'):>10} {rng(st, 'rps', '.0f'):<19}"
                f"{fmt(st, 'mbps', '.1f'):>9}{fmt(st, 'p50_ms', '.2f'):>9}"
                f"{fmt(st, 'p99_ms', '.2f'):>9}{rh:>9}{rd:>9}"
            )
            if "error" in st:
                lines.append(f"{'':<25}error: {st['error'][0][:100]}")
    lines.append("")
    hdr = (
        f"{'held conns':<17}{'system':<8}{'B/conn':>9} {'[min-max]':<17}{'slab':>8}{'RSS':>8}"
        f"{'module':>8}{'over direct':>12}{'÷HAProxy':>9}"
    )
    lines += [hdr, "-" * len(hdr)]
    for mname, m in s["memory"].items():
        for sys_ in SYSTEMS:
            st, r = m["systems"][sys_], m["ratios"][sys_]
            over = st.get("over_direct_per_conn")
            lines.append(
                f"{mname:<17}{sys_:<8}{fmt(st, 'bytes_per_conn', '.0f'):>9} "
                f"{rng(st, 'bytes_per_conn', '.0f'):<17}{fmt(st, 'slab_per_conn', '.0f'):>8}"
                f"{fmt(st, 'rss_per_conn', '.0f'):>8}{fmt(st, 'module_per_conn', '.0f'):>8}"
                f"{'' if over is None else format(over, '.0f'):>12}"
                f"{'' if r['to_haproxy'] is None else format(r['to_haproxy'], '.2f'):>9}"
            )
            if "error" in st:
                lines.append(f"{'':<25}error: {st['error'][0][:100]}")
    lines += ["", "targets (reported, not asserted):"]
    for t in tg:
        v = "n/a" if t["value"] is None else f"{t['value']:.2f}"
        met = {True: "met", False: "NOT met", None: "no figure"}[t["met"]]
        lines.append(f"  {t['target']:<66} want {t['want']:<8} got {v:<6} {met}")
    return "\n".join(lines)


def markdown(s: dict[str, Any], tg: list[dict[str, Any]]) -> str:
    """The same figures as the terminal table, as Markdown for docs/performance.md."""
    out = ["| workload | system | req/s median [min-max] | MB/s | p50 ms | p99 ms "
           "| ÷ HAProxy | ÷ direct |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for wname, w in s["workloads"].items():
        for sys_ in SYSTEMS:
            st, r = w["systems"][sys_], w["ratios"][sys_]
            if "error" in st:
                out.append(f"| {wname} | {sys_} | ERROR: {st['error'][0][:80]} | | | | | |")
                continue
            rh = "" if r["to_haproxy"] is None else f"{r['to_haproxy']:.2f}"
            rd = "" if r["to_direct"] is None else f"{r['to_direct']:.2f}"
            out.append(
                f"| {wname} | {sys_} | {fmt(st, 'rps', '.0f')} {rng(st, 'rps', '.0f')} "
                f"| {fmt(st, 'mbps', '.1f')} | {fmt(st, 'p50_ms', '.1f')} "
                f"| {fmt(st, 'p99_ms', '.1f')} | {rh} | {rd} |"
            )
    out += ["", "| held connections | system | bytes/conn median [min-max] | slab | RSS "
            "| module caches | over direct | ÷ HAProxy (over direct) |",
            "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for m in s["memory"].values():
        for sys_ in SYSTEMS:
            st, r = m["systems"][sys_], m["ratios"][sys_]
            if "error" in st:
                out.append(f"| {m['connections']} | {sys_} | ERROR: {st['error'][0][:80]} "
                           "| | | | | |")  # fmt: skip
                continue
            over = st.get("over_direct_per_conn")
            rh = "" if r["to_haproxy"] is None else f"{r['to_haproxy']:.2f}"
            out.append(
                f"| {m['connections']:,} | {sys_} | {fmt(st, 'bytes_per_conn', '.0f')} "
                f"{rng(st, 'bytes_per_conn', '.0f')} | {fmt(st, 'slab_per_conn', '.0f')} "
                f"| {fmt(st, 'rss_per_conn', '.0f')} | {fmt(st, 'module_per_conn', '.0f')} "
                f"| {'' if over is None else format(over, '.0f')} | {rh} |"
            )
    out += ["", "| target | want | got | |", "|---|---|---|---|"]
    for t in tg:
        v = "n/a" if t["value"] is None else f"{t['value']:.2f}"
        met = {True: "met", False: "**not met**", None: "no figure"}[t["met"]]
        out.append(f"| {t['target']} | {t['want']} | {v} | {met} |")
    return "\n".join(out) + "\n"


def chart(s: dict[str, Any], path: Path, note: str) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (make bench-setup): no chart"
    panels: list[tuple[str, dict[str, Any], str, str]] = []
    for _wname, w in s["workloads"].items():
        key = w["figure"]
        panels.append((w["title"], w["systems"], key, "MB/s" if key == "mbps" else "requests/s"))
    for _mname, m in s["memory"].items():
        panels.append(
            (
                f"memory, {m['connections']:,} held connections",
                m["systems"],
                "bytes_per_conn",
                "bytes per connection",
            )
        )
    cols = 4
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    for ax, (title, systems, key, unit) in zip(axes.flat, panels, strict=False):
        xs, meds, lo, hi, colors, labels = [], [], [], [], [], []
        for i, sys_ in enumerate(SYSTEMS):
            st = systems[sys_]
            xs.append(i)
            colors.append(COLORS[sys_])
            if "error" in st or key not in st:
                meds.append(0.0)
                lo.append(0.0)
                hi.append(0.0)
                labels.append("ERROR")
            else:
                meds.append(st[key]["median"])
                lo.append(st[key]["median"] - st[key]["min"])
                hi.append(st[key]["max"] - st[key]["median"])
                labels.append(f"{st[key]['median']:.0f}")
        ax.bar(xs, meds, color=colors, yerr=[lo, hi], capsize=4)
        ax.set_xticks(xs, list(SYSTEMS))
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(unit, fontsize=8)
        ax.tick_params(labelsize=8)
        top = max(meds) or 1.0
        for x, m, lab in zip(xs, meds, labels, strict=True):
            ax.text(x, m + top * 0.02, lab, ha="center", fontsize=7)
    fig.suptitle(f"KTCPVS macro benchmark (median, min-max bars) - {note}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return None


def profile_lines(prof: dict[str, Any] | None) -> list[str]:
    """One line per profiled run: the largest shares of all CPU time."""
    out: list[str] = []
    for key, e in (prof or {}).items():
        if not isinstance(e, dict) or "percent_of_all_cpu" not in e:
            continue
        top = ", ".join(f"{g} {v:.0f}%" for g, v in list(e["percent_of_all_cpu"].items())[:7])
        out.append(f"{key}: {top}; idle {e['idle_percent']:.0f}%")
    return out


def main(macro_path: Path, guest_out: Path, bench: Path) -> None:
    macro = json.loads(macro_path.read_text())
    s = summarize(macro)
    tg = targets(s)
    results: dict[str, Any] = {
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "quick": macro.get("quick"),
            "versions": macro.get("versions"),
            "guest_seconds": macro.get("guest_seconds"),
            "note": "QEMU guest under TCG software emulation, 2 vCPUs: absolute numbers mean "
            "nothing, only ratios within one run",
            "errors": macro.get("errors", []),
        },
        "macro": s,
        "targets": tg,
        "profile": macro.get("profile"),
        "raw": {"workloads": macro.get("workloads"), "memory": macro.get("memory")},
    }
    for micro in ("parser", "rules"):
        p = bench / f"{micro}.json"
        results[micro] = json.loads(p.read_text()) if p.exists() else None
    (bench / "results.json").write_text(json.dumps(results, indent=1))
    prof = profile_lines(macro.get("profile"))
    md = markdown(s, tg) + "\nCPU time by thread group (share of all vCPU time):\n\n"
    (bench / "results.md").write_text(md + "".join(f"- {p}\n" for p in prof))
    print(table(s, tg))
    print("\nCPU time by thread group under load (share of all vCPU time, schedstat):")
    print("\n".join(f"  {p}" for p in prof))
    err = chart(s, bench / "chart.png", "QEMU/TCG, 2 vCPUs: compare ratios only")
    print(
        f"\nbench: {bench / 'results.json'}" + (f"; {err}" if err else f", {bench / 'chart.png'}")
    )
    if macro.get("errors"):
        print(
            "bench: the guest run reported errors:\n" + "\n".join(macro["errors"]), file=sys.stderr
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
