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
from liangcao.procs import pid_alive


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
        while any(pid_alive(p) for p in seen) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in seen if pid_alive(p)]
        assert not (tmp_path / "s.png").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("generator", ["c", "python"])
def test_both_load_generators_drive_a_gateway_and_count_every_request(tmp_path: Path, generator: str) -> None:
    """The compiled generator (``loadgen.c``) and the Python one run the same kind of schedule against a real
    gateway (the edge and its application process): every request scheduled is sent and answered, paid
    orders come back 200, and a refused (shed) payment would be counted apart (none at this calm rate)."""
    from liangcao.checkout.surge import MIX, run_load

    phases = [Phase("calm", 2.0, 40.0, 40.0)]
    res = run_load(
        flow=True, phases=phases, base_per_s=1.0, workers=1, timeout_s=5.0, seed=3, root=tmp_path, generator=generator
    )
    assert res.generators == {generator}
    # the compiled generator runs in the real-time class wherever that is permitted (it is asked for by default)
    may = subprocess.run(
        [sys.executable, "-c", "import os; os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))"]
    )
    want = "realtime" if generator == "c" and may.returncode == 0 else "normal"
    assert res.generator_classes == {want}
    rows = [res.stats.get(f"{s}:{k}", [0] * 6) for s in range(3) for k, _ in MIX]
    sent, ok, shed, error, lost, skipped = (sum(r[i] for r in rows) for i in range(6))
    assert 40 <= sent <= 140, sent  # about 80 scheduled (Poisson)
    assert (lost, skipped) == (0, 0) and ok + shed + error == sent
    assert ok >= sent - error and res.count("pay", 1, range(3)) > 0
    assert error == 0  # every request went as its caller (buyer or merchant): none refused 401/403
    assert res.p99_ms(["calm:pay:ok"]) < 5_000
    assert res.lag.get_total_count() == sent
