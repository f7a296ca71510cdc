"""``liangcao checkout bench``: plain and installment checkouts interleaved through a real gateway process.

A small run through the real CLI (the figures are not judged here, only that both kinds went through the
gateway, every installment order has its plan in the credit service, and the JSON has its fields), and an
interrupted run (SIGTERM, what ``timeout`` sends; Ctrl-C takes the same path) leaves no gateway behind.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "liangcao.cli", "checkout", *args]


def test_a_small_run_reports_both_kinds_with_cores_and_rss() -> None:
    out = subprocess.run(cli("bench", "--n", "40", "--clients", "4", "--json"), capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    r = json.loads(out.stdout.decode().strip().splitlines()[-1])
    assert r["plain_done"] == r["installment_done"] == 40 and r["failed"] == 0
    assert r["plans_recorded"] == 40  # every installment checkout recorded its plan in the credit service
    assert r["plain_checkouts_per_s"] > 0 and r["installment_checkouts_per_s"] > 0
    assert r["cores"] == os.cpu_count() and r["gateway_peak_rss_mb"] > 10
    assert 0 < r["plain_p50_ms"] <= r["plain_p99_ms"] and 0 < r["installment_p50_ms"] <= r["installment_p99_ms"]
    assert "installments" in out.stderr.decode()  # the human summary goes to stderr with --json


def test_bad_options_are_refused() -> None:
    out = subprocess.run(cli("bench", "--n", "0"), capture_output=True, timeout=30)
    assert out.returncode != 0 and b"--n 1.." in out.stdout + out.stderr


def test_an_interrupted_run_stops_its_gateway() -> None:
    proc = subprocess.Popen(cli("bench", "--n", "3000", "--clients", "4", "--json"), stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None
        seen = b""
        deadline = time.monotonic() + 30
        while b"clients" not in seen and time.monotonic() < deadline:
            seen += proc.stderr.readline()
        found = re.search(rb"gateway pid (\d+)", seen)
        assert found, seen
        gateway = int(found.group(1))
        os.kill(gateway, 0)  # running
        time.sleep(0.5)  # in the middle of the checkouts
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 130
        for _ in range(100):
            try:
                os.kill(gateway, 0)
            except ProcessLookupError:
                break
            # a zombie is reaped by its parent, gone now: check its state
            try:
                with open(f"/proc/{gateway}/stat") as f:
                    if f.read().split(") ")[1].startswith("Z"):
                        break
            except OSError:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"gateway {gateway} still running")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
