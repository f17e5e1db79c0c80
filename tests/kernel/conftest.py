"""Kernel tests run only inside the QEMU guest that tests/vm.py boots.

They load nothing themselves on the host: if KTCPVS_IN_VM is not set, the
whole suite stops before a single test runs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from demo_site import BACKENDS, Site
from topology import Topology

from l7ctl.netlink import Client


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("KTCPVS_IN_VM") != "1":
        pytest.exit(
            "tests/kernel run only inside the QEMU guest: use `make kernel-test`", returncode=4
        )


@pytest.fixture
def topo() -> Iterator[Topology]:
    """A client, a director and two echo backends, torn down afterwards."""
    t = Topology(backends={"b1": "10.0.1.11", "b2": "10.0.2.11"})
    try:
        t.up()
        yield t
    finally:
        t.down()


@pytest.fixture(scope="session")
def site_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The demo site (demo_site.py), built once for the whole session."""
    t = Topology(backends=BACKENDS)
    try:
        t.up()
        s = Site(t, tmp_path_factory.mktemp("site"))
        yield s
    finally:
        t.down()


@pytest.fixture
def site(site_session: Site) -> Site:
    """The demo site with its rules applied and its backends' logs emptied."""
    site_session.reset_logs()
    if site_session.director(lambda: Client().info().service_count) == 0:
        site_session.apply()  # first use, or a test reloaded the module
    return site_session
