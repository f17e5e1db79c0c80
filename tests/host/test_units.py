"""The systemd units (packaging/*.service.in): systemd accepts them, and the
TLS daemon's goes with the switch's (docs/tls.md)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = ("ktcpvs", "ktcpvs-tlsd")


def unit(name: str, l7ctl: str = "/usr/bin/l7ctl") -> str:
    return (ROOT / "packaging" / f"{name}.service.in").read_text().replace("@L7CTL@", l7ctl)


def settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            k, _, v = line.partition("=")
            out.setdefault(k.strip(), []).append(v.strip())
    return out


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    paths = []
    for name in UNITS:
        p = tmp_path / f"{name}.service"
        p.write_text(unit(name, "/bin/true"))
        paths.append(str(p))
    r = subprocess.run(
        ["systemd-analyze", "verify", *paths], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_the_tls_daemon_starts_stops_and_reloads_with_the_switch() -> None:
    switch, tlsd = settings(unit("ktcpvs")), settings(unit("ktcpvs-tlsd"))
    assert "ktcpvs-tlsd.service" in switch["Wants"]
    assert tlsd["PartOf"] == tlsd["After"] == tlsd["ReloadPropagatedFrom"] == ["ktcpvs.service"]
    assert tlsd["ExecStart"] == ["/usr/bin/l7ctl tlsd /etc/ktcpvs/site.rules --workers 0"]
    assert tlsd["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert tlsd["UMask"] == ["0077"]
    assert tlsd["CapabilityBoundingSet"] == ["CAP_NET_ADMIN CAP_NET_BIND_SERVICE"]
