"""``liangcao trace bench``: a small run through the real CLI, a real node process and its workers.

The figures are not judged here (``docs/benchmarks.md`` keeps them); only that every event was captured and
found again, the JSON has the fields the issue names with the timeline and the restart, and nothing is left
running.
"""

from __future__ import annotations

import json
import subprocess
import sys


def test_a_small_run_captures_everything_and_times_a_restart() -> None:
    before = _bench_processes()
    cmd = [sys.executable, "-m", "liangcao.cli", "trace", "bench", "--events", "700", "--lookups", "10"]
    out = subprocess.run([*cmd, "--restart", "--json"], capture_output=True, timeout=300)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    r = json.loads(out.stdout.decode().strip().splitlines()[-1])
    assert r["events"] == 700 and r["txs"] >= 11 and r["failed_in_sample"] == 0 and r["layout"] == "compact"
    assert r["events_per_s"] > 0 and r["events_per_s_queryable"] > 0
    assert 0 < r["lookup_p50_ms"] <= r["lookup_p99_ms"] and r["lookup_events_mean"] == 4.0  # a tin and its case
    assert r["store_bytes_per_event_at_rest"] > 0 and r["node_peak_rss_mb"] > 10
    assert r["restart_s"] is not None and r["restart_s"] > 0
    assert r["timeline"] and r["timeline"][-1]["events"] == 700
    assert "thread:liangcao-commit" in r["timeline"][-1]["cpu_us_per_event"]
    assert _bench_processes() <= before  # the node and its workers stopped with the run


def _bench_processes() -> set[str]:
    """Processes of bench nodes (their command lines name the bench's store folder)."""
    found = subprocess.run(["pgrep", "-f", "liangcao-trace-bench-"], capture_output=True, text=True)
    return set(found.stdout.split())
