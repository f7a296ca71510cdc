"""The embedded payments engine: one process, files on disk, nothing acknowledged before it is durable.

``Engine(path)`` recovers (latest snapshot, then the log after it), then takes batches. A batch is encoded
once, decoded back into the engine's own objects, applied by the single-writer ``Machine`` and handed to
the committer thread; its results are released only after the committer has written and fsynced it. The
committer writes every batch queued since its last fsync in one write and one ``fdatasync`` (group commit),
so a caller that keeps several batches in flight (``submit``) overlaps its next batch with the disk.
Because the engine applies exactly the bytes it logs, replay after a crash rebuilds the same state.

A batch applied but not yet durable is visible to queries; if the fsync fails the engine stops for good
(every later call raises), since memory would then be ahead of the disk.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import msgspec

from liangcao import limits
from liangcao.codes import Code
from liangcao.errors import LiangcaoError
from liangcao.payments.machine import Machine, Snapshot
from liangcao.payments.types import Account, AccountBalance, AccountFilter, Transfer
from liangcao.payments.wal import OP_CREATE_ACCOUNTS, OP_CREATE_TRANSFERS, OP_PULSE, Wal, WalCorrupt, encode_record

_ACCOUNTS = msgspec.json.Decoder(list[Account])
_TRANSFERS = msgspec.json.Decoder(list[Transfer])
_SNAPSHOT = msgspec.json.Decoder(Snapshot)
_encode = msgspec.json.encode


class PaymentsError(LiangcaoError):
    """A request the payments service refuses as a whole (nothing applied)."""


def check_batch(events: Sequence[Any], kind: str) -> None:
    if len(events) > limits.pay_batch_events_max:
        raise PaymentsError(
            Code.TOO_LARGE,
            f"a batch holds at most pay_batch_events_max={limits.pay_batch_events_max} {kind}, got {len(events)}",
        )


def check_filter(f: AccountFilter) -> None:
    if not 0 < f.limit <= limits.pay_query_limit_max:
        raise PaymentsError(
            Code.INVALID_ARGUMENT, f"limit must be 1..pay_query_limit_max={limits.pay_query_limit_max}, got {f.limit}"
        )
    if f.timestamp_min < 0 or f.timestamp_max < 0:
        raise PaymentsError(Code.INVALID_ARGUMENT, "timestamps must not be negative")


def check_ids(ids: Sequence[int]) -> None:
    if len(ids) > limits.pay_lookup_ids_max:
        raise PaymentsError(
            Code.TOO_LARGE, f"a lookup names at most pay_lookup_ids_max={limits.pay_lookup_ids_max} ids, got {len(ids)}"
        )


def _encode_batch(events: Sequence[Any]) -> bytes:
    try:
        return _encode(events)
    except TypeError as exc:
        raise PaymentsError(Code.INVALID_ARGUMENT, f"bad batch: {exc}") from None


class _Pending:
    __slots__ = ("future", "record", "results", "submitted")

    def __init__(self, record: bytes, results: list[int], future: Future[list[int]]) -> None:
        self.record = record
        self.results = results
        self.future = future
        self.submitted = time.perf_counter()


class Engine:
    """The embedded backend. Thread-safe: callers may submit from many threads; one applies at a time."""

    def __init__(
        self,
        path: Path | str,
        *,
        clock: Callable[[], int] = time.time_ns,
        fsync: bool = True,
        snapshot_every: int = 0,
    ) -> None:
        """Open (or create) the engine in folder ``path``; ``snapshot_every`` batches between snapshots (0: never
        automatically; ``snapshot()`` takes one on demand)."""
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._lockfile = open(self.path / "LOCK", "a+b")  # noqa: SIM115 - held for the engine's lifetime
        try:
            fcntl.flock(self._lockfile.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lockfile.close()
            raise PaymentsError(Code.NOT_READY, f"{self.path} is in use by another engine process") from None
        self.clock = clock
        self.snapshot_every = snapshot_every
        self._wal = Wal(self.path, fsync=fsync)
        try:
            self.machine, self.seq = self._recover()
            self.machine.owns_events = True  # every batch it sees is decoded afresh from the logged bytes
            self._wal.open_for_append(self.seq + 1)
        except BaseException:
            self._lockfile.close()
            raise
        self._state = threading.Lock()  # the single writer: apply, assign seq, enqueue, in one step
        self._cv = threading.Condition(threading.Lock())
        self._queue: list[_Pending] = []
        self._failed: BaseException | None = None
        self._closing = False
        self._batches_since_snapshot = 0
        self.durable_seq = self.seq
        self._committer = threading.Thread(target=self._commit_loop, name="pay-committer", daemon=True)
        self._committer.start()

    # ------------------------------------------------------------------ recovery

    def _snapshots(self) -> list[Path]:
        return sorted(self.path.glob("snapshot-*.json"))

    def _recover(self) -> tuple[Machine, int]:
        machine = Machine(owns_events=True)
        seq = 0
        for snap in reversed(self._snapshots()):
            data = snap.read_bytes()
            head, _, body = data.partition(b"\n")
            try:
                want_seq, want_crc = (int(x) for x in head.split())
            except ValueError:
                continue
            if zlib.crc32(body) != want_crc:
                continue  # a snapshot interrupted before its rename cannot exist; a damaged one is skipped
            machine = Machine.from_snapshot(_SNAPSHOT.decode(body))
            machine.owns_events = True
            seq = want_seq
            break
        for rec in self._wal.replay(seq):
            if rec.seq != seq + 1:
                raise WalCorrupt(f"log jumps from seq {seq} to {rec.seq}: a segment is missing")
            self._apply(machine, rec.op, rec.timestamp, rec.payload)
            seq = rec.seq
        return machine, seq

    @staticmethod
    def _apply(machine: Machine, op: int, ts: int, payload: bytes) -> list[int]:
        if op == OP_CREATE_TRANSFERS:
            return machine.create_transfers(_TRANSFERS.decode(payload), ts)
        if op == OP_CREATE_ACCOUNTS:
            return machine.create_accounts(_ACCOUNTS.decode(payload), ts)
        machine.pulse(ts)
        return []

    # ------------------------------------------------------------------ writes

    def create_accounts(self, accounts: Sequence[Account]) -> list[int]:
        """Create accounts; one result code per account (``CreateAccountResult``), after they are durable."""
        return self.submit_accounts(accounts).result()

    def create_transfers(self, transfers: Sequence[Transfer]) -> list[int]:
        """Apply transfers in order; one result code per transfer (``CreateTransferResult``), once durable."""
        return self.submit_transfers(transfers).result()

    def submit_accounts(self, accounts: Sequence[Account]) -> Future[list[int]]:
        check_batch(accounts, "accounts")
        return self._submit(OP_CREATE_ACCOUNTS, _encode_batch(accounts), _ACCOUNTS)

    def submit_transfers(self, transfers: Sequence[Transfer]) -> Future[list[int]]:
        """Queue a batch; the future resolves to its results once it is on disk. Batches apply in call order."""
        check_batch(transfers, "transfers")
        return self._submit(OP_CREATE_TRANSFERS, _encode_batch(transfers), _TRANSFERS)

    def pulse(self) -> None:
        """Let engine time advance now, expiring pending transfers whose timeout has passed (durably)."""
        self._submit(OP_PULSE, b"[]", None).result()

    def pulse_if_due(self) -> bool:
        """Pulse only if some pending transfer's timeout has passed by the clock (the service calls this)."""
        with self._state:
            heap = self.machine.expiries
            due = bool(heap) and heap[0][0] <= self.clock()
        if due:
            self.pulse()
        return due

    def _submit(self, op: int, payload: bytes, decoder: Any) -> Future[list[int]]:
        if len(payload) > limits.pay_batch_bytes_max:
            raise PaymentsError(
                Code.TOO_LARGE, f"batch is {len(payload)} bytes, over pay_batch_bytes_max={limits.pay_batch_bytes_max}"
            )
        try:
            # What the engine applies is what it logs: its own copies, decoded from the logged bytes (this is
            # also where a float, a string or a bool standing for an integer is refused).
            events: Any = decoder.decode(payload) if decoder is not None else None
        except msgspec.ValidationError as exc:
            raise PaymentsError(Code.INVALID_ARGUMENT, f"bad batch: {exc}") from None
        if events is not None:
            check_batch(events, "events")
        future: Future[list[int]] = Future()
        with self._state:
            self._check_open()
            machine = self.machine
            ts = max(self.clock(), machine.last_timestamp + 1)
            try:
                if op == OP_CREATE_TRANSFERS:
                    results = machine.create_transfers(events, ts)
                elif op == OP_CREATE_ACCOUNTS:
                    results = machine.create_accounts(events, ts)
                else:
                    machine.pulse(ts)
                    results = []
            except BaseException as exc:  # a bug left a batch half applied: refuse everything from now on
                self._failed = exc
                raise
            self.seq += 1
            pending = _Pending(encode_record(self.seq, op, ts, payload), results, future)
            with self._cv:
                self._queue.append(pending)
                self._cv.notify()
            self._batches_since_snapshot += 1
            if self.snapshot_every and self._batches_since_snapshot >= self.snapshot_every:
                self._snapshot_locked()
        return future

    def _check_open(self) -> None:
        if self._failed is not None:
            raise PaymentsError(Code.NOT_READY, f"the engine stopped after a disk error: {self._failed}")
        if self._closing:
            raise PaymentsError(Code.NOT_READY, "the engine is closed")

    def _commit_loop(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closing:
                    self._cv.wait()
                group = self._queue
                self._queue = []
                if not group and self._closing:
                    return
            try:
                self._wal.append(b"".join(p.record for p in group))
            except BaseException as exc:  # the disk said no: memory is now ahead of it, stop for good
                self._failed = exc
                for p in group:
                    p.future.set_exception(PaymentsError(Code.NOT_READY, f"not durable: {exc}"))
                continue
            self.durable_seq += len(group)
            for p in group:
                p.future.set_result(p.results)

    def flush(self) -> None:
        """Wait until everything submitted so far is durable."""
        with self._state:
            future: Future[list[int]] | None = None
            with self._cv:
                if self._queue:
                    future = self._queue[-1].future
        if future is not None:
            future.result()

    # ------------------------------------------------------------------ snapshots

    def snapshot(self) -> Path:
        """Write the whole state to a snapshot file and drop the log segments it covers."""
        with self._state:
            return self._snapshot_locked()

    def _snapshot_locked(self) -> Path:
        self._check_open()
        # Everything up to self.seq must be durable in the log before the snapshot may replace it.
        with self._cv:
            last = self._queue[-1].future if self._queue else None
        if last is not None:
            last.result()
        body = _encode(self.machine.to_snapshot())
        final = self.path / f"snapshot-{self.seq:016d}.json"
        tmp = final.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(f"{self.seq} {zlib.crc32(body)}\n".encode())
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        self._wal.rotate(self.seq + 1, keep_after_seq=self.seq)
        for old in self._snapshots():
            if old != final:
                old.unlink()
        self._batches_since_snapshot = 0
        return final

    # ------------------------------------------------------------------ queries

    def lookup_accounts(self, ids: Sequence[int]) -> list[Account]:
        check_ids(ids)
        with self._state:
            return self.machine.lookup_accounts(ids)

    def lookup_transfers(self, ids: Sequence[int]) -> list[Transfer]:
        check_ids(ids)
        with self._state:
            return self.machine.lookup_transfers(ids)

    def transfer_status(self, transfer_id: int) -> int | None:
        """A pending transfer's ``TransferStatus`` (None for one that was never pending)."""
        with self._state:
            return self.machine.transfer_status(transfer_id)

    def get_account_transfers(self, f: AccountFilter) -> list[Transfer]:
        check_filter(f)
        with self._state:
            return self.machine.get_account_transfers(f)

    def get_account_balances(self, f: AccountFilter) -> list[AccountBalance]:
        check_filter(f)
        with self._state:
            return self.machine.get_account_balances(f)

    def digest(self) -> str:
        with self._state:
            return self.machine.digest()

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Make everything submitted durable, stop the committer and release the folder."""
        if self._closing:
            return
        with self._state, self._cv:
            self._closing = True
            self._cv.notify()
        self._committer.join()
        self._wal.close()
        self._lockfile.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
