"""Kernel tests run only inside the QEMU guest that tests/vm.py boots.

They load nothing themselves on the host: if KTCPVS_IN_VM is not set, the
whole suite stops before a single test runs.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback
from collections.abc import Generator, Iterator
from pathlib import Path
from types import FrameType

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from demo_site import BACKENDS, Site
from topology import Topology

from l7ctl.netlink import Client

# Seconds one test (its setup, body and teardown) may take before it fails
# as hung; @pytest.mark.timeout(N) gives a longer test its own bound.  A hang
# then costs one test, never the whole boot: the suite goes on, and where
# every thread stood is printed for the report.
TEST_TIMEOUT = float(os.environ.get("KTCPVS_TEST_TIMEOUT", "240"))


class TestTimeout(Exception):
    """A test ran past its bound (TEST_TIMEOUT or its timeout mark)."""


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("KTCPVS_IN_VM") != "1":
        pytest.exit(
            "tests/kernel run only inside the QEMU guest: use `make kernel-test`", returncode=4
        )
    config.addinivalue_line("markers", "timeout(seconds): this test's bound instead of 240 s")


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise TestTimeout("the test ran past its time bound (hung?)")


class _Watchdog:
    """Past the bound: print every thread's stack, then SIGALRM to the main
    thread itself -- again every 10 s while the test goes on.  A process-wide
    alarm (setitimer) may be taken by any thread, and then leaves the main
    thread blocked where it was; and faulthandler's own dump, which reads
    other threads' frames without the GIL, once crashed the interpreter and
    with it the whole suite."""

    def __init__(self, bound: float) -> None:
        self.done = threading.Event()
        self.main = threading.main_thread().ident
        self.thread = threading.Thread(target=self.run, args=(bound,), daemon=True)
        self.thread.start()

    def run(self, bound: float) -> None:
        if self.done.wait(bound):
            return
        frames = sys._current_frames()
        for t in threading.enumerate():
            if t.ident in frames and t.ident != threading.get_ident():
                stack = "".join(traceback.format_stack(frames[t.ident]))
                print(f"\n--- thread {t.name} at the time bound ---\n{stack}", file=sys.stderr)
        while not self.done.is_set() and self.main is not None:
            signal.pthread_kill(self.main, signal.SIGALRM)
            self.done.wait(10)

    def cancel(self) -> None:
        self.done.set()
        self.thread.join()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    mark = item.get_closest_marker("timeout")
    bound = float(mark.args[0]) if mark else TEST_TIMEOUT
    old = signal.signal(signal.SIGALRM, _on_alarm)
    dog = _Watchdog(bound)
    try:
        yield
    finally:
        dog.cancel()
        signal.signal(signal.SIGALRM, old)


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
