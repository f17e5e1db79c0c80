"""Counting the runs of a connection's work item (kt_conn_work) with the
workqueue_execute_start tracepoint: the tests that hold the module to a
number of work items per request or per connection."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TRACING = Path("/sys/kernel/tracing")
EVENT = TRACING / "events/workqueue/workqueue_execute_start/enable"


@contextmanager
def counting_work() -> Iterator[list[int]]:
    """Count executions of kt_conn_work inside the block: out[0] after it."""
    if not (TRACING / "trace").exists():
        subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACING)], check=True)
    (TRACING / "buffer_size_kb").write_text("4096")
    (TRACING / "trace").write_text("")
    EVENT.write_text("1")
    out = [0]
    try:
        yield out
    finally:
        EVENT.write_text("0")
        text = (TRACING / "trace").read_text()
        out[0] = sum(1 for line in text.splitlines() if "function kt_conn_work" in line)
        (TRACING / "trace").write_text("")
