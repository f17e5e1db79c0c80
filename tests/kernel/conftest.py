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


class _Watchdog:
    """Past the bound: print every thread's stack, then SIGALRM to the main
    thread itself, once; its handler raises TestTimeout in the test, once.
    A process-wide alarm (setitimer) may be taken by any thread, and then
    leaves the main thread blocked where it was; a second alarm would land
    wherever pytest is then (formatting the first one's report takes long
    under emulation) and end the session; and faulthandler's own timed
    dump, which reads other threads' frames without the GIL, was followed by
    a crash of the interpreter that ended a whole boot."""

    def __init__(self, bound: float) -> None:
        self.done = threading.Event()
        self.fired = False
        self.main = threading.main_thread().ident
        self.old = signal.signal(signal.SIGALRM, self.on_alarm)
        self.thread = threading.Thread(target=self.run, args=(bound,), daemon=True)
        self.thread.start()

    def on_alarm(self, signum: int, frame: FrameType | None) -> None:
        if self.fired or self.done.is_set():
            return
        self.fired = True
        raise TestTimeout("the test ran past its time bound (hung?)")

    def run(self, bound: float) -> None:
        if self.done.wait(bound):
            return
        frames = sys._current_frames()
        for t in threading.enumerate():
            if t.ident in frames and t.ident != threading.get_ident():
                stack = "".join(traceback.format_stack(frames[t.ident]))
                print(f"\n--- thread {t.name} at the time bound ---\n{stack}", file=sys.stderr)
        if not self.done.is_set() and self.main is not None:
            signal.pthread_kill(self.main, signal.SIGALRM)

    def cancel(self) -> None:
        self.done.set()
        self.thread.join()
        signal.signal(signal.SIGALRM, self.old)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    mark = item.get_closest_marker("timeout")
    dog = _Watchdog(float(mark.args[0]) if mark else TEST_TIMEOUT)
    try:
        yield
    finally:
        dog.cancel()


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
