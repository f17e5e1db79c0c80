"""The eight schedulers checked against their definitions."""

from __future__ import annotations

import pytest
from demo_site import Site, get


def spread(site: Site, paths: list[str]) -> list[str]:
    """The image server that answered each path, one connection per request."""

    def run() -> list[str]:
        return [get(p).backend or "?" for p in paths]

    return site.client(run)  # type: ignore[no-any-return]


@pytest.mark.parametrize("sched", ["rr", "wrr", "lc", "wlc", "dh", "sh", "lblc", "lblcr"])
def test_scheduler_choices(site: Site, sched: str) -> None:
    """images: 10.0.1.11 weight 3 (img1), 10.0.1.12 weight 1 (img2); requests one at a time."""
    site.apply(sched=sched)
    try:
        same = spread(site, ["/same.png"] * 12)
        varied = spread(site, [f"/v{i}/x.png" for i in range(40)])
        again = spread(site, [f"/v{i}/x.png" for i in range(40)])
    finally:
        site.apply()
    n1 = varied.count("img1")
    if sched == "rr":
        assert n1 == 20  # strict alternation
    elif sched in ("wrr", "lc", "wlc"):
        # smooth WRR (wrr), and the tie-break of lc/wlc when nothing is in progress
        assert n1 == 30
    elif sched == "sh":
        assert len(set(same + varied)) == 1  # one client address: one server
    else:
        # dh, lblc, lblcr: a URL sticks to its server; many URLs use both servers
        assert len(set(same)) == 1
        assert 0 < n1 < 40
    if sched in ("dh", "sh"):
        assert again == varied  # pure hashing: the same choices the second time
    # lblc/lblcr keep a key's server in a bounded table (256 buckets, one key each): a key
    # evicted by a colliding key is scheduled afresh, so only `same` is checked for them.
