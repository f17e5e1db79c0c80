#!/usr/bin/env python3
"""Rule matcher micro-benchmark: match time per request with 10, 100, 1,000
and 10,000 rules, compile time and table size.  Writes build/bench/rules.json.

Rule sets are a realistic mix (hosts exact and wildcard, path prefixes and
suffixes, anchored regexes, header tests, method + prefix); each size gets
requests aimed at its own rules plus misses, with the same shape across
sizes, so the ratios compare like with like.  Matching runs in C
(kmod/core/match.c through l7ctl._match, timed inside the extension);
every request's decision is first checked against the reference evaluator.

Targets (issue 4): match(10,000) <= 1.5 x match(10); compile(10,000) <= 5 s;
tables <= 8 MiB.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from l7ctl import compiler  # noqa: E402
from l7ctl import evaluator as ev  # noqa: E402

SIZES = (10, 100, 1000, 10000)
POOLS = "\n".join(f"pool p{i} {{ server 10.0.{i}.1:80; }}" for i in range(8))


def ruleset(n: int, rnd: random.Random) -> tuple[str, list[ev.Request]]:
    rules: list[str] = []
    reqs: list[ev.Request] = []
    for i in range(n):
        pool = f"p{i % 8}"
        k = rnd.random()
        tag = f"{i:05d}"
        if k < 0.30:
            rules.append(f'route {pool} if host "shop{tag}.example.com";')
            reqs.append(ev.Request(host=f"shop{tag}.example.com".encode(), path=b"/index.html"))
        elif k < 0.35:
            rules.append(f'route {pool} if host "*.t{tag}.example.net";')
            reqs.append(ev.Request(host=f"www.t{tag}.example.net".encode(), path=b"/"))
        elif k < 0.65:
            rules.append(f'route {pool} if path prefix "/app{tag}/";')
            reqs.append(ev.Request(host=b"www.example.org", path=f"/app{tag}/page/1".encode()))
        elif k < 0.80:
            rules.append(f'route {pool} if path suffix ".r{tag}.html";')
            reqs.append(ev.Request(host=b"www.example.org", path=f"/docs/a.r{tag}.html".encode()))
        elif k < 0.90:
            rules.append(f'route {pool} if path regex "^/api/v[0-9]+/s{tag}/[a-z]+$";')
            reqs.append(
                ev.Request(
                    method=b"POST", host=b"api.example.org", path=f"/api/v2/s{tag}/items".encode()
                )
            )
        elif k < 0.95:
            rules.append(f'block 403 if header "User-Agent" contains "bot{tag}";')
            reqs.append(
                ev.Request(
                    host=b"www.example.org",
                    path=b"/",
                    headers=((b"User-Agent", f"Mozilla bot{tag}/1.0".encode()),),
                )
            )
        else:
            rules.append(f'route {pool} if method POST and path prefix "/form{tag}";')
            reqs.append(
                ev.Request(
                    method=b"POST", host=b"www.example.org", path=f"/form{tag}/send".encode()
                )
            )
    rules.append("route p0;")
    text = POOLS + "\nservice bench listen 10.255.0.1:80 {\n" + "\n".join(rules) + "\n}\n"
    return text, reqs


def requests_for(reqs: list[ev.Request], rnd: random.Random, count: int) -> list[ev.Request]:
    out = [rnd.choice(reqs) for _ in range(int(count * 0.8))]
    for j in range(count - len(out)):  # misses with the same shape
        out.append(
            ev.Request(
                host=f"miss{j:05d}.example.com".encode(),
                path=f"/app{j:05d}x/page/1".encode(),
                headers=((b"User-Agent", b"Mozilla/5.0 (X11) Firefox/115"),),
            )
        )
    ua = (b"User-Agent", b"Mozilla/5.0 (X11; Linux x86_64) Firefox/115.0")
    acc = (b"Accept", b"text/html,application/xhtml+xml")
    full = []
    for r in out:
        hdrs = r.headers if r.headers else (ua,)
        full.append(
            ev.Request(
                r.method,
                r.host,
                r.path,
                r.query,
                (*hdrs, acc, (b"Cookie", b"sid=abc; lang=en")),
                r.client,
            )
        )
    rnd.shuffle(full)
    return full


def prepare(n: int, seed: int) -> dict[str, object]:
    from l7ctl import _match  # type: ignore[attr-defined]

    rnd = random.Random(seed + n)
    text, targets = ruleset(n, rnd)
    t0 = time.perf_counter()
    res = compiler.compile_text(text, f"bench-{n}.rules")
    compile_s = time.perf_counter() - t0
    assert res.ok and res.ir is not None and res.tables is not None, res.format()[:2000]
    table = _match.Table(res.tables)
    reqs = requests_for(targets, rnd, 256)
    svc = res.ir.services[0]
    for r in reqs:  # correctness first
        rule, _ = table.match(0, r.method, r.host, r.path, r.query, list(r.headers), None)
        assert rule == ev.evaluate(svc, r).index
    tuples = [(r.method, r.host, r.path, r.query, list(r.headers), None) for r in reqs]
    return {
        "table": table,
        "tuples": tuples,
        "result": {
            "rules": n,
            "compile_s": round(compile_s, 3),
            "table_bytes": len(res.tables),
            "predicates": len(svc.preds),
        },
    }


def measure_all(preps: list[dict[str, object]], iterations: int, rounds: int) -> None:
    """Interleave the sizes round by round and keep each size's best time, so
    load changes on a shared machine hit every size alike."""
    best: list[float] = [float("inf")] * len(preps)
    for p in preps:
        p["table"].bench(0, p["tuples"], max(1, iterations // 10))  # type: ignore[attr-defined]
    for _ in range(rounds):
        for i, p in enumerate(preps):
            t = p["table"].bench(0, p["tuples"], iterations)  # type: ignore[attr-defined]
            best[i] = min(best[i], t)
    for p, b in zip(preps, best, strict=True):
        p["result"]["match_ns"] = round(b, 1)  # type: ignore[index]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "build" / "bench" / "rules.json"))
    ap.add_argument("--iterations", type=int, default=400)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    preps = [prepare(n, args.seed) for n in SIZES]
    measure_all(preps, args.iterations, args.rounds)
    results: list[dict[str, float | int]] = [p["result"] for p in preps]  # type: ignore[misc]
    base = results[0]["match_ns"]
    for r in results:
        r["match_ratio"] = round(float(r["match_ns"]) / float(base), 3)
        print(
            f"{r['rules']:>6} rules: match {r['match_ns']:>7.1f} ns ({r['match_ratio']:.2f}x)  "
            f"compile {r['compile_s']:>6.3f} s  tables {r['table_bytes']:>9} bytes"
        )
    big = results[-1]
    targets = {
        "match_ratio_10000_le_1.5": float(big["match_ratio"]) <= 1.5,
        "compile_10000_le_5s": float(big["compile_s"]) <= 5.0,
        "tables_le_8MiB": int(big["table_bytes"]) <= 8 << 20,
    }
    out = {"benchmark": "rules-matcher", "results": results, "targets": targets}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    missed = [name for name, met in targets.items() if not met]
    print(f"targets: {targets}\nwrote {args.out}")
    if missed:
        # reported (here and in results.json), as the macro benchmark's
        # targets are: a missed target must not stop `make bench` before
        # the macro benchmark runs (a busy host missed the 5 s once)
        print(f"targets not met: {', '.join(missed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
