"""The surge simulator's plumbing: the open-loop schedule, and that every process of a run (the gateway and
the load generators) stops when the run is interrupted (SIGTERM; Ctrl-C takes the same path)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from liangcao.checkout.surge import Phase, rate_at, surge_phases


def test_the_schedule_ramps_from_calm_to_ten_times_capacity() -> None:
    phases = surge_phases(5.0)
    assert [p.name for p in phases] == ["calm", "ramp", "midnight", "after"]
    assert rate_at(phases, 100.0, 0.0) == (30.0, "calm")
    assert rate_at(phases, 100.0, 4.0 + 1.5)[0] == pytest.approx(30.0 + (1000.0 - 30.0) / 2)
    assert rate_at(phases, 100.0, 4.0 + 3.0 + 2.0) == (1000.0, "midnight")
    assert rate_at([Phase("x", 1.0, 1.0, 1.0)], 5.0, 2.0) == (0.0, "end")


def descendants(pid: int) -> set[int]:
    out: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                kids = [int(c) for c in (task / "children").read_text().split()]
                out.update(kids)
                todo += kids
        except OSError:
            continue
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_an_interrupted_surge_stops_every_process(tmp_path: Path) -> None:
    """SIGTERM (what ``timeout`` sends) unwinds the run like Ctrl-C (the same ``KeyboardInterrupt`` path)."""
    sig = signal.SIGTERM
    cmd = [sys.executable, "-m", "liangcao.cli", "checkout", "surge", "--capacity", "5", "--seconds", "8"]
    cmd += ["--png", str(tmp_path / "s.png"), "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the gateway and both load generators are up
            seen |= descendants(proc.pid)
            if len(seen) >= 3:
                break
            time.sleep(0.2)
        assert len(seen) >= 3, seen
        time.sleep(1.0)
        seen |= descendants(proc.pid)
        os.kill(proc.pid, sig)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode != 0 and b"interrupted" in err and b"Traceback" not in err
        deadline = time.monotonic() + 10
        while any(alive(p) for p in seen) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in seen if alive(p)]
        assert not (tmp_path / "s.png").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
