"""Durability of the embedded engine: kill -9 under load, torn and corrupt log tails, snapshots."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from liangcao.payments import Account, Engine, Transfer
from liangcao.payments.wal import HEADER_BYTES, WalCorrupt

BATCH = 500


def _writer_script(path: Path) -> str:
    # Accounts 1..50, then batches of BATCH transfers with ids k*BATCH + j; prints "ACK k" once batch k is
    # durable, keeping up to four batches in flight so that the kill lands between write and fsync too.
    return textwrap.dedent(
        f"""
        import sys
        from collections import deque
        from liangcao.payments import Account, Engine, Transfer
        e = Engine({str(path)!r})
        e.create_accounts([Account(i, ledger=1, code=1) for i in range(1, 51)])
        print("READY", flush=True)
        inflight = deque()
        k = 0
        while True:
            k += 1
            batch = [Transfer(k * {BATCH} + j, 1 + (k + j) % 50, 1 + (k + 2 * j + 1) % 50, 1 + j, ledger=1, code=1)
                     for j in range({BATCH})]
            batch = [t for t in batch if t.debit_account_id != t.credit_account_id]
            inflight.append((k, e.submit_transfers(batch)))
            while len(inflight) > 3:
                n, f = inflight.popleft()
                assert not any(f.result())
                print("ACK", n, flush=True)
        """
    )


def test_kill_9_under_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "pay"
    proc = subprocess.Popen(
        [sys.executable, "-c", _writer_script(path)], stdout=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    assert proc.stdout is not None
    acked: list[int] = []
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        if line.startswith("ACK"):
            acked.append(int(line.split()[1]))
            if len(acked) >= 40:
                break
        assert time.monotonic() < deadline
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()

    def expected(k: int) -> int:
        return len([j for j in range(BATCH) if 1 + (k + j) % 50 != 1 + (k + 2 * j + 1) % 50])

    with Engine(path) as e:
        for k in acked:
            assert len(e.lookup_transfers([k * BATCH + j for j in range(BATCH)])) == expected(k), k
        # A batch submitted but not acknowledged is all there or not there at all: never half.
        for k in range(max(acked) + 1, max(acked) + 50):
            assert len(e.lookup_transfers([k * BATCH + j for j in range(BATCH)])) in (0, expected(k)), k
        # Money is conserved across the crash.
        accounts = e.lookup_accounts(list(range(1, 51)))
        assert sum(a.debits_posted for a in accounts) == sum(a.credits_posted for a in accounts)


def _fill(path: Path, batches: int) -> list[str]:
    digests = []
    with Engine(path) as e:
        e.create_accounts([Account(1, ledger=1, code=1), Account(2, ledger=1, code=1)])
        for k in range(batches):
            assert e.create_transfers([Transfer(100 + k, 1, 2, k + 1, ledger=1, code=1)]) == [0]
            digests.append(e.digest())
    return digests


def _segment(path: Path) -> Path:
    (seg,) = sorted(path.glob("wal-*.log"))
    return seg


def _offsets(seg: Path) -> list[int]:
    data = seg.read_bytes()
    offsets, at = [], 0
    while at < len(data):
        offsets.append(at)
        length = int.from_bytes(data[at + 8 : at + 12], "little")
        at += HEADER_BYTES + length
    return offsets


def test_torn_tail_is_cut_and_the_rest_recovered(tmp_path: Path) -> None:
    path = tmp_path / "pay"
    digests = _fill(path, 5)
    seg = _segment(path)
    size = seg.stat().st_size
    with open(seg, "ab") as f:
        f.write(b"LPWL\x00\x01partial header")  # a crash in the middle of the next write
    with Engine(path) as e:
        assert e.digest() == digests[-1]
    assert seg.stat().st_size == size  # the torn bytes are gone for good
    last = _offsets(seg)[-1]
    with open(seg, "r+b") as f:
        f.truncate(last + HEADER_BYTES + 3)  # the last batch's payload only half written
    with Engine(path) as e:
        assert e.digest() == digests[-2]
        assert e.create_transfers([Transfer(200, 1, 2, 1, ledger=1, code=1)]) == [0]
    with Engine(path) as e:
        assert len(e.lookup_transfers([100, 101, 102, 103, 200])) == 5


def test_a_bad_checksum_at_the_tail_is_a_torn_write(tmp_path: Path) -> None:
    path = tmp_path / "pay"
    digests = _fill(path, 4)
    seg = _segment(path)
    data = bytearray(seg.read_bytes())
    data[-2] ^= 0xFF
    seg.write_bytes(bytes(data))
    with Engine(path) as e:
        assert e.digest() == digests[-2]


def test_damage_before_valid_records_refuses_to_open(tmp_path: Path) -> None:
    path = tmp_path / "pay"
    _fill(path, 5)
    seg = _segment(path)
    data = bytearray(seg.read_bytes())
    middle = _offsets(seg)[2]
    data[middle + HEADER_BYTES + 1] ^= 0xFF
    seg.write_bytes(bytes(data))
    with pytest.raises(WalCorrupt, match="followed by a valid record"):
        Engine(path)
    assert seg.read_bytes() == bytes(data)  # nothing was cut


def test_snapshot_then_log_and_a_damaged_snapshot_is_not_trusted(tmp_path: Path) -> None:
    path = tmp_path / "pay"
    with Engine(path) as e:
        e.create_accounts([Account(1, ledger=1, code=1), Account(2, ledger=1, code=1)])
        e.create_transfers([Transfer(10, 1, 2, 5, ledger=1, code=1)])
        snap = e.snapshot()
        e.create_transfers([Transfer(11, 1, 2, 6, ledger=1, code=1)])
        want = e.digest()
    assert len(list(path.glob("wal-*.log"))) == 1  # the segment before the snapshot is gone
    with Engine(path) as e:
        assert e.digest() == want
    data = bytearray(snap.read_bytes())
    data[-5] ^= 0xFF
    snap.write_bytes(bytes(data))
    with pytest.raises(WalCorrupt, match="segment is missing"):
        Engine(path)


def test_engine_time_survives_restart_even_if_the_clock_goes_back(tmp_path: Path) -> None:
    path = tmp_path / "pay"
    with Engine(path, clock=lambda: 5_000) as e:
        e.create_accounts([Account(1, ledger=1, code=1), Account(2, ledger=1, code=1)])
        e.create_transfers([Transfer(10, 1, 2, 5, ledger=1, code=1)])
        (t,) = e.lookup_transfers([10])
    with Engine(path, clock=lambda: 1_000) as e:
        e.create_transfers([Transfer(11, 1, 2, 5, ledger=1, code=1)])
        (u,) = e.lookup_transfers([11])
    assert u.timestamp > t.timestamp
