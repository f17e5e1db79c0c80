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

from topology import Topology


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
