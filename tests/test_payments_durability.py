"""Durability of the embedded engine: kill -9 under load (snapshots included), torn and corrupt log tails,
snapshots whose every byte is checked, recovery that says what it did, snapshots that do not stall the
writer, and data of the earlier format."""

from __future__ import annotations

import json
import logging
import os
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from pathlib import Path

import pytest

from liangcao.payments import (
    Account,
    AccountFlags,
    Engine,
    FormatTooOld,
    SnapshotCorrupt,
    Transfer,
    TransferFlags,
)
from liangcao.payments.types import CreateTransferResult as R
from liangcao.payments.wal import HEADER_BYTES, MAGIC, WalCorrupt

BATCH = 500


def _writer_script(path: Path, snapshot_every: int = 0) -> str:
    # Accounts 1..50, then batches of BATCH transfers with ids k*BATCH + j; prints "ACK k" once batch k is
    # durable, keeping up to four batches in flight so that the kill lands between write and fsync too.
    return textwrap.dedent(
        f"""
        import sys
        from collections import deque
        from liangcao.payments import Account, Engine, Transfer
        e = Engine({str(path)!r}, snapshot_every={snapshot_every})
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


@pytest.mark.parametrize("snapshot_every", [0, 5])
def test_kill_9_under_load_loses_nothing_acknowledged(tmp_path: Path, snapshot_every: int) -> None:
    # With snapshot_every=5 a snapshot is being written (by a forked child) most of the time the kill lands.
    path = tmp_path / "pay"
    proc = subprocess.Popen(
        [sys.executable, "-c", _writer_script(path, snapshot_every)],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
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


def test_torn_tail_is_cut_and_the_rest_recovered(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "pay"
    digests = _fill(path, 5)
    seg = _segment(path)
    size = seg.stat().st_size
    torn = b"LPWL\x00\x01partial header"
    with open(seg, "ab") as f:
        f.write(torn)  # a crash in the middle of the next write
    with caplog.at_level(logging.WARNING, logger="liangcao.payments"), Engine(path) as e:
        assert e.digest() == digests[-1]
    assert seg.stat().st_size == size  # the torn bytes are cut from the log...
    copy = path / f"{seg.name}.torn-at-{size}"
    assert copy.read_bytes() == torn  # ...but a copy is kept
    (said,) = [r.getMessage() for r in caplog.records if "cut" in r.getMessage()]
    assert f"cut {len(torn)} bytes at byte {size}" in said and "incomplete header" in said and copy.name in said
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


def test_damage_before_valid_records_refuses_to_open(tmp_path: Path) -> None:  # and cuts nothing
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


def _snapshotted(path: Path) -> tuple[Path, str]:
    """An engine folder with a snapshot at seq 2 and one batch after it; the snapshot and the digest."""
    with Engine(path) as e:
        e.create_accounts([Account(1, ledger=1, code=1), Account(2, ledger=1, code=1)])
        e.create_transfers([Transfer(10, 1, 2, 5, ledger=1, code=1)])
        snap = e.snapshot()
        e.create_transfers([Transfer(11, 1, 2, 6, ledger=1, code=1)])
        want = e.digest()
    return snap, want


def test_snapshot_then_log_and_a_damaged_snapshot_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "pay"
    snap, want = _snapshotted(path)
    assert snap.name == "snapshot-0000000000000002.snap"
    assert len(list(path.glob("wal-*.log"))) == 1  # the segment before the snapshot is gone
    with Engine(path) as e:
        assert e.digest() == want
    data = bytearray(snap.read_bytes())
    data[-5] ^= 0xFF
    snap.write_bytes(bytes(data))
    with pytest.raises(SnapshotCorrupt, match="damaged snapshot: its checksum does not match"):
        Engine(path)


def test_every_byte_of_a_snapshot_is_covered(tmp_path: Path) -> None:
    # The reported hole: a snapshot's sequence number sat outside its checksum, so raising it made recovery
    # skip log records. Now any change to any byte of the header (or body) stops the engine, by name.
    snap, want = _snapshotted(tmp_path / "pay")
    good = snap.read_bytes()
    header_end = good.index(b"\n") + 1
    for k in [*range(header_end), header_end, len(good) // 2, len(good) - 1]:
        for new in {good[k] ^ 0x01, ord("5"), ord(" ")} - {good[k]}:
            snap.write_bytes(good[:k] + bytes([new]) + good[k + 1 :])
            with pytest.raises(SnapshotCorrupt):
                Engine(snap.parent).close()
    # The sequence number raised in the header, the checksum recomputed the old (format 1) way: still found.
    forged = good.replace(b"0000000000000002", b"0000000000000003", 1)
    snap.write_bytes(forged)
    with pytest.raises(SnapshotCorrupt):
        Engine(snap.parent)
    snap.write_bytes(good)
    with Engine(snap.parent) as e:
        assert e.digest() == want


def test_a_snapshot_whose_name_disagrees_with_its_header_is_refused(tmp_path: Path) -> None:
    snap, _ = _snapshotted(tmp_path / "pay")
    renamed = snap.with_name("snapshot-0000000000000003.snap")
    snap.rename(renamed)
    with pytest.raises(SnapshotCorrupt, match="covers seq 2 but its name says 3"):
        Engine(snap.parent)


def test_partial_snapshot_files_are_deleted_on_open(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "pay"
    _, want = _snapshotted(path)
    leftovers = [path / "snapshot-0000000000000009-4242.tmp", path / "snapshot-0000000000000001.tmp"]
    for p in leftovers:
        p.write_bytes(b"LPSNAP 2 half a snapsh")
    with caplog.at_level(logging.WARNING, logger="liangcao.payments"), Engine(path) as e:
        assert e.digest() == want
    assert not any(p.exists() for p in leftovers)
    assert sum("partial snapshot" in r.getMessage() for r in caplog.records) == 2


def test_a_crash_between_installing_a_snapshot_and_dropping_segments(tmp_path: Path) -> None:
    path = tmp_path / "pay"
    with Engine(path) as e:
        e.create_accounts([Account(1, ledger=1, code=1), Account(2, ledger=1, code=1)])
        e.create_transfers([Transfer(10, 1, 2, 5, ledger=1, code=1)])
    old = {p.name: p.read_bytes() for p in path.glob("wal-*.log")}
    with Engine(path) as e:
        e.snapshot()
        e.create_transfers([Transfer(11, 1, 2, 6, ledger=1, code=1)])
        want = e.digest()
    for name, data in old.items():  # the old segment is back, as if deleting it had not happened
        (path / name).write_bytes(data)
    with Engine(path) as e:
        assert e.digest() == want


def test_refusals_are_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "pay"
    snap, _ = _snapshotted(path)
    data = bytearray(snap.read_bytes())
    data[12] = ord("9") if data[12] != ord("9") else ord("8")  # a digit of the sequence number
    snap.write_bytes(bytes(data))
    for args in (["lookup", "accounts", "1", "--data", str(path)], ["start", "--data", str(path), "--port", "1"]):
        r = subprocess.run(
            [sys.executable, "-m", "liangcao.cli", "pay", *args], capture_output=True, text=True, timeout=120
        )
        assert r.returncode == 1, r
        assert "Traceback" not in r.stderr
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "damaged snapshot" in lines[0] and snap.name in lines[0], r.stderr


def test_snapshots_do_not_stall_the_writer(tmp_path: Path) -> None:
    # The state is written by a forked child from a copy-on-write image; the writer keeps applying batches.
    path = tmp_path / "pay"
    with Engine(path, fsync=False, snapshot_log_bytes=0) as e:
        e.create_accounts([Account(i, ledger=1, code=1) for i in range(1, 101)])
        n = 0
        for _ in range(60):
            e.create_transfers(
                [Transfer(10**6 + n + j, 1 + j % 100, 1 + (j + 1) % 100, 1, ledger=1, code=1) for j in range(8000)]
            )
            n += 8000
        done = threading.Event()
        took: list[float] = []

        def snap() -> None:
            t0 = time.perf_counter()
            e.snapshot()
            took.append(time.perf_counter() - t0)
            done.set()

        threading.Thread(target=snap).start()
        latencies = []
        k = 0
        while not done.is_set():
            t0 = time.perf_counter()
            e.create_transfers([Transfer(10**8 + k, 1, 2, 1, ledger=1, code=1)])
            latencies.append(time.perf_counter() - t0)
            k += 1
        digest = e.digest()
    assert took and k > 20, (took, k)
    # The writer went on: no batch waited for more than a fraction of the snapshot's time.
    assert max(latencies) < took[0] / 3, (max(latencies), took)
    with Engine(path) as e:
        assert e.digest() == digest
        assert len(e.lookup_transfers([10**8 + k - 1])) == 1


def _v1_record(seq: int, op: int, ts: int, payload: bytes) -> bytes:
    rest = struct.pack("<IBxxxQQ", len(payload), op, seq, ts)  # format 1: the byte after op was zero
    return struct.pack("<II", MAGIC, zlib.crc32(payload, zlib.crc32(rest))) + rest + payload


def test_a_log_written_under_the_earlier_rules_is_refused_with_the_way_out(tmp_path: Path) -> None:
    path = tmp_path / "pay"
    path.mkdir()
    (path / "wal-0000000000000001.log").write_bytes(_v1_record(1, 1, 5, b"[[1,1,1,0,0,0,0,0,0,0,0,0]]"))
    with pytest.raises(FormatTooOld, match="take a snapshot"):
        Engine(path)


def test_a_snapshot_of_the_earlier_format_is_converted(tmp_path: Path) -> None:
    path = tmp_path / "pay"
    path.mkdir()
    closed_v1 = 1 << 4
    accounts = [[1, 1, 1, closed_v1, 0, 0, 0, 0, 0, 0, 0, 10], [2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 11]]
    pending = [20, 1, 2, 0, 1, 1, 2 | 64, 0, 0, 0, 0, 0, 12]  # closes account 1 (format 1 bits)
    bad = [21, 2, 1, 5, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    body = json.dumps(
        [
            13,
            accounts,
            [pending],
            [],
            [[20, 1]],
            [],
            [[58, bad], [36, [22, 1, 2, 1, 7, 1, 0, 0, 0, 0, 0, 0, 0]]],
            [],
            [],
        ]
    ).encode()
    (path / "snapshot-0000000000000004.json").write_bytes(b"4 %d\n" % zlib.crc32(body) + body)
    with Engine(path) as e:
        one, two = e.lookup_accounts([1, 2])
        assert one.flags == AccountFlags.CLOSED and two.flags == 0
        assert e.create_transfers([Transfer(21, 2, 1, 5, ledger=1, code=1)]) == [R.ID_ALREADY_FAILED]  # transient: kept
        assert e.create_transfers([Transfer(22, 2, 1, 5, ledger=1, code=1)]) == [R.CREDIT_ACCOUNT_ALREADY_CLOSED]
        assert e.create_transfers([Transfer(23, pending_id=20, flags=TransferFlags.VOID_PENDING_TRANSFER)]) == [0]
        assert e.lookup_accounts([1])[0].flags == 0
        e.snapshot()
    assert [p.name for p in path.glob("snapshot-*")] == ["snapshot-0000000000000007.snap"]


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


def test_a_snapshot_that_cannot_start_costs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "pay"
    with Engine(path, snapshot_every=2) as e:
        e.create_accounts([Account(1, ledger=1, code=1), Account(2, ledger=1, code=1)])

        def no_fork() -> int:
            raise OSError(12, "Cannot allocate memory")

        monkeypatch.setattr(os, "fork", no_fork)
        for k in range(4):  # every second batch would start a snapshot: the batches are not troubled
            assert e.create_transfers([Transfer(10 + k, 1, 2, 1, ledger=1, code=1)]) == [0]
        with pytest.raises(Exception, match="cannot fork"):
            e.snapshot()
        monkeypatch.undo()
        want = e.digest()
    with Engine(path) as e:
        assert e.digest() == want
