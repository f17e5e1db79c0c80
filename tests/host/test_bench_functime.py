"""bench/macro/functime.py: time per function from a function_graph trace."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench/macro"))

import functime  # noqa: E402

# The tracer's own layout (funcgraph-proc and funcgraph-tail on, 6.1 and
# 6.12 alike): a softirq run nested in the system call it interrupted, a
# leaf call, the idle tasks of two CPUs at once, a context switch marker, an
# interrupt's arrows, and a return whose entry came before the trace began.
TRACE = """\
# tracer: function_graph
#
# CPU  TASK/PID         DURATION                  FUNCTION CALLS
# |     |    |           |   |                     |   |   |   |
 0)    wrk-512     |               |  tcp_sendmsg() {
 0)    wrk-512     |               |    kt_conn_tasklet [ktcpvs]() {
 0)    wrk-512     |   3.000 us    |      kt_recv [ktcpvs]();
 0)    wrk-512     |               |      kt_http_parse [ktcpvs]() {
 0)    wrk-512     |   1.500 us    |        kt_match [ktcpvs]();
 0)    wrk-512     |   4.250 us    |      } /* kt_http_parse [ktcpvs] */
 0)    wrk-512     | + 10.000 us   |    } /* kt_conn_tasklet [ktcpvs] */
 0)    wrk-512     | + 25.125 us   |  } /* tcp_sendmsg */
 ------------------------------------------
 1)    wrk-512     =>  nginx-40
 ------------------------------------------
 1)   <idle>-0     |               |  kt_conn_tasklet [ktcpvs]() {
 0)   <idle>-0     |               |  kt_conn_tasklet [ktcpvs]() {
 0)   <idle>-0     |   2.000 us    |    kt_recv [ktcpvs]();
 0)   <idle>-0     |   5.000 us    |  } /* kt_conn_tasklet [ktcpvs] */
 1)   <idle>-0     |   1.000 us    |    kt_recv [ktcpvs]();
 1)   <idle>-0     |               |    ==========> |
 1)   <idle>-0     |   6.000 us    |  } /* kt_conn_tasklet [ktcpvs] */
 1)   nginx-40     | ! 150.000 us  |  } /* tcp_recvmsg */
"""


def test_calls_total_and_self_time_per_function() -> None:
    parsed = functime.parse(TRACE)
    t = parsed.times
    assert t["tcp_sendmsg"].calls == 1
    assert t["tcp_sendmsg"].total_ns == 25125
    assert t["tcp_sendmsg"].self_ns == 15125  # less the tasklet run that interrupted it
    assert t["kt_conn_tasklet"].calls == 3
    assert t["kt_conn_tasklet"].total_ns == 10000 + 5000 + 6000
    # 10 - 3 - 4.25, 5 - 2, 6 - 1: each CPU's idle task nests on its own
    assert t["kt_conn_tasklet"].self_ns == 2750 + 3000 + 5000
    assert t["kt_http_parse"].self_ns == 2750
    assert t["kt_match"].total_ns == t["kt_match"].self_ns == 1500
    assert t["kt_recv"].calls == 3
    assert t["kt_recv"].total_ns == 6000
    # the return whose entry is not in the trace is counted, not guessed at
    assert "tcp_recvmsg" not in t
    assert parsed.unmatched == 1


def test_figures_are_per_request() -> None:
    per = functime.per_request(functime.parse(TRACE), 2)
    assert per["kt_conn_tasklet"] == {"calls": 1.5, "total_us": 10.5, "self_us": 5.38}
    assert functime.per_request(functime.parse(TRACE), 0)["kt_recv"]["calls"] == 3


def test_the_report_tabulates_them_per_workload_and_system() -> None:
    sys.path.insert(0, str(ROOT / "bench/macro"))
    import report

    run = {"requests": 2, "rps": 100.0, "functions": functime.per_request(functime.parse(TRACE), 2)}
    macro = {
        "function_times": {
            "problems": ["not traceable here (inlined or absent): kt_route"],
            "workloads": {"mixed_keepalive": {"floor": run, "ktcpvs": dict(run, error="lost")}},
        }
    }
    lines = report.function_lines(macro)
    assert lines[0] == "function times: not traceable here (inlined or absent): kt_route"
    assert "| function | floor | ktcpvs |" in lines
    assert "| requests (rate traced) | 2 (100/s) | 2 (100/s) lost |" in lines
    # the function with the most self time first
    rows = [ln for ln in lines if ln.startswith("| kt_") or ln.startswith("| tcp_")]
    assert rows[0] == "| tcp_sendmsg | 7.6 / 12.6 (0.50) | 7.6 / 12.6 (0.50) |"
