"""The real-time edge (``checkout start --edge --edge-realtime``): the edge's event loop in SCHED_FIFO, the
application process in the normal class, and a clear answer where the class is not permitted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from test_checkout_http import Gateway, _app_pids


def _fifo_permitted() -> bool:
    """Whether this machine lets a process of ours enter SCHED_FIFO (root or CAP_SYS_NICE or RLIMIT_RTPRIO)."""
    probe = "import os; os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=30).returncode == 0


def _policy(pid: int) -> int:
    return os.sched_getscheduler(pid) & ~os.SCHED_RESET_ON_FORK


def test_the_edge_runs_in_the_real_time_class_and_the_application_does_not(tmp_path: Path) -> None:
    gw = Gateway(tmp_path / "gw", "--edge", "--edge-realtime").start()
    try:
        assert gw.proc is not None
        assert httpx.get(gw.url + "/v1/health", timeout=5).status_code == 200
        (app,) = _app_pids(gw.home)
        # the application process was started before the edge changed class, and stays normal
        assert _policy(app) == os.SCHED_OTHER
        log = (gw.home / "gateway.log").read_text(errors="replace")
        if _fifo_permitted():
            assert _policy(gw.proc.pid) == os.SCHED_FIFO
            assert os.sched_getparam(gw.proc.pid).sched_priority == 1  # the lowest: nothing else is outranked
            assert os.sched_getscheduler(gw.proc.pid) & os.SCHED_RESET_ON_FORK  # a child would start normal
            assert "stays in the normal class" not in log
        else:
            assert _policy(gw.proc.pid) == os.SCHED_OTHER
            assert "--edge-realtime: the edge stays in the normal class" in log
        # the relay still works in the real-time class: an application answer through the edge
        got = httpx.get(gw.url + "/v1/orders/nope", timeout=5)
        assert got.status_code in (401, 404) and "code" in got.json(), got.text
    finally:
        gw.stop()
    assert not _app_pids(gw.home)


def test_edge_realtime_without_an_edge_is_refused(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "liangcao.cli", "checkout", "start", "--home", str(tmp_path), "--edge-realtime"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "--edge-realtime is for --edge" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
