"""The embedded payments engine: one process, files on disk, nothing acknowledged before it is durable.

``Engine(path)`` recovers (latest snapshot, then the log after it), then takes batches. A batch is encoded
once, decoded back into the engine's own objects, checked for field widths (a batch with a value that does
not fit is refused whole: nothing applied, nothing logged), applied by the single-writer ``Machine`` and
handed to the committer thread; its results are released only after the committer has written and
fsynced it. The committer writes every batch queued since its last fsync in one write and one
``fdatasync`` (group commit), so a caller that keeps several batches in flight (``submit``) overlaps its
next batch with the disk. Because the engine applies exactly the bytes it logs, replay after a crash
rebuilds the same state.

Snapshots never stall the writer. At a batch boundary the writer asks the committer to continue the log
in a new segment after the current sequence number S and forks: the child process holds a copy-on-write
image of the state at S, encodes it and writes ``snapshot-S.tmp`` on the other core while the parent goes
on taking batches. Once the child is done and every record up to S is durable, a helper thread renames
the snapshot into place and deletes the older snapshots and the segments before S + 1. A crash at any
point leaves either the old snapshot with all its segments or the new one with the segments after it.
Snapshots are taken every ``snapshot_log_bytes`` of log (the service's cadence, ``SNAPSHOT_LOG_BYTES``),
every ``snapshot_every`` batches if set, or on demand (``snapshot()``).

A batch applied but not yet durable is visible to queries; if the fsync fails the engine stops for good
(every later call raises), since memory would then be ahead of the disk.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import gc
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import msgspec

from liangcao import limits
from liangcao.codes import Code
from liangcao.payments import snapshot as snapshots
from liangcao.payments.errors import PaymentsError, WalCorrupt
from liangcao.payments.machine import Machine
from liangcao.payments.types import (
    U16_MAX,
    U32_MAX,
    U64_MAX,
    U128_MAX,
    Account,
    AccountBalance,
    AccountFilter,
    QueryFilter,
    Transfer,
    check_accounts,
    check_transfers,
)
from liangcao.payments.wal import OP_CREATE_ACCOUNTS, OP_CREATE_TRANSFERS, OP_PULSE, Wal, encode_record

__all__ = ["SNAPSHOT_LOG_BYTES", "Engine", "PaymentsError"]

#: The service's snapshot cadence: a snapshot after this much log since the last one (about a million
#: plain transfers), which bounds how much log a restart replays.
SNAPSHOT_LOG_BYTES = 64 * 1024 * 1024
#: How long opening waits for the folder's lock to be released by a process on its way out.
LOCK_WAIT_S = 1.0
#: Positions a query examines per hold of the writer's lock (a long scan lets batches in between).
SCAN_CHUNK = 16_384

_ACCOUNTS = msgspec.json.Decoder(list[Account])
_TRANSFERS = msgspec.json.Decoder(list[Transfer])
_encode = msgspec.json.encode
log = logging.getLogger("liangcao.payments")


def check_batch(events: Sequence[Any], kind: str) -> None:
    if len(events) > limits.pay_batch_events_max:
        raise PaymentsError(
            Code.TOO_LARGE,
            f"a batch holds at most pay_batch_events_max={limits.pay_batch_events_max} {kind}, got {len(events)}",
        )


def _widths(obj: Any, fields: tuple[tuple[str, int], ...], what: str) -> None:
    for name, top in fields:
        v = getattr(obj, name)
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= top:
            raise PaymentsError(Code.INVALID_ARGUMENT, f"{what}: {name} must be an integer in 0..{top}, got {v!r}")


def check_limit(limit: int) -> None:
    if limit > limits.pay_query_limit_max:
        raise PaymentsError(
            Code.TOO_LARGE, f"limit must be at most pay_query_limit_max={limits.pay_query_limit_max}, got {limit}"
        )


def check_filter(f: AccountFilter) -> None:
    """Refuse a filter no client could send (values wider than their fields, a limit over the maximum);
    a filter that merely matches nothing is valid and answers nothing."""
    _widths(
        f,
        (
            ("account_id", U128_MAX),
            ("user_data_128", U128_MAX),
            ("user_data_64", U64_MAX),
            ("user_data_32", U32_MAX),
            ("code", U16_MAX),
            ("timestamp_min", U64_MAX),
            ("timestamp_max", U64_MAX),
            ("limit", U32_MAX),
        ),
        "account filter",
    )
    check_limit(f.limit)


def check_query(q: QueryFilter) -> None:
    _widths(
        q,
        (
            ("user_data_128", U128_MAX),
            ("user_data_64", U64_MAX),
            ("user_data_32", U32_MAX),
            ("ledger", U32_MAX),
            ("code", U16_MAX),
            ("timestamp_min", U64_MAX),
            ("timestamp_max", U64_MAX),
            ("limit", U32_MAX),
        ),
        "query filter",
    )
    check_limit(q.limit)


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


class _Rotate:
    """A mark in the commit queue: once everything before it is durable, continue in a new segment."""

    __slots__ = ("done", "next_seq")

    def __init__(self, next_seq: int) -> None:
        self.next_seq = next_seq
        self.done: Future[None] = Future()


class _SnapshotJob:
    __slots__ = ("done", "error", "path", "pid", "pipe", "rotate", "seq", "started")

    def __init__(self, seq: int, pid: int, pipe: int, rotate: _Rotate) -> None:
        self.seq = seq
        self.pid = pid
        self.pipe = pipe
        self.rotate = rotate
        self.started = time.perf_counter()
        self.done = threading.Event()
        self.path: Path | None = None
        self.error: str | None = None


def _lock(path: Path) -> Any:
    """Take the folder's lock, waiting a moment for a process that is exiting (or was just killed)."""
    lockfile = open(path / "LOCK", "a+b")  # noqa: SIM115 - held for the engine's lifetime
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(lockfile.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return lockfile
        except BlockingIOError:
            if time.monotonic() >= deadline:
                lockfile.close()
                raise PaymentsError(Code.NOT_READY, f"{path} is in use by another engine process") from None
            time.sleep(0.02)


def _find_prctl() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# Looked up once, in the parent: a forked child must not dlopen (another thread may hold the loader's lock).
_PRCTL = _find_prctl()


def _die_with_parent() -> None:
    # Linux: the snapshot child gets SIGKILL if the engine's process dies (kill -9 included), so no orphan
    # keeps writing a snapshot nobody will install.
    if _PRCTL is not None:
        _PRCTL(1, 9)  # PR_SET_PDEATHSIG, SIGKILL


class Engine:
    """The embedded backend. Thread-safe: callers may submit from many threads; one applies at a time."""

    def __init__(
        self,
        path: Path | str,
        *,
        clock: Callable[[], int] = time.time_ns,
        fsync: bool = True,
        snapshot_every: int = 0,
        snapshot_log_bytes: int = SNAPSHOT_LOG_BYTES,
    ) -> None:
        """Open (or create) the engine in folder ``path``. Snapshots: after ``snapshot_log_bytes`` of log
        (0: never by size), after ``snapshot_every`` batches (0: never by count), and on ``snapshot()``."""
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._lockfile = _lock(self.path)
        self.clock = clock
        self.snapshot_every = snapshot_every
        self.snapshot_log_bytes = snapshot_log_bytes
        self._wal = Wal(self.path, fsync=fsync)
        try:
            self._clean_partial_snapshots()
            self.machine, self.seq, self._snapshot_path = self._recover()
            self.machine.owns_events = True  # every batch it sees is decoded afresh from the logged bytes
            self._wal.open_for_append(self.seq + 1)
        except BaseException:
            self._lockfile.close()
            raise
        self._snapshot_seq = snapshots.file_seq(self._snapshot_path) if self._snapshot_path else -1
        self._state = threading.Lock()  # the single writer: apply, assign seq, enqueue, in one step
        self._cv = threading.Condition(threading.Lock())
        self._queue: list[_Pending | _Rotate] = []
        self._failed: BaseException | None = None
        self._closing = False
        self._batches_since_snapshot = 0
        self._log_bytes_since_snapshot = 0
        self._job: _SnapshotJob | None = None
        self.snapshots_taken = 0  # installed
        self.snapshots_started = 0
        self.prepare_s = 0.0  # encode, decode and width checks, outside the writer's lock
        self.apply_s = 0.0  # the state machine, inside it
        self.durable_seq = self.seq
        self._committer = threading.Thread(target=self._commit_loop, name="pay-committer", daemon=True)
        self._committer.start()

    # ------------------------------------------------------------------ recovery

    def _clean_partial_snapshots(self) -> None:
        for tmp in sorted(self.path.glob("snapshot-*.tmp")):
            log.warning("%s: deleting a partial snapshot left by a crash while it was written", tmp)
            tmp.unlink()

    def _recover(self) -> tuple[Machine, int, Path | None]:
        found = snapshots.snapshots(self.path)
        newest = found[-1] if found else None
        if newest is not None:
            seq, machine = snapshots.read(newest)
        else:
            seq, machine = 0, Machine()
        machine.owns_events = True
        covered = seq
        for rec in self._wal.replay(seq):
            if rec.seq != seq + 1:
                if newest is None:
                    raise WalCorrupt(
                        f"{self.path}: the log starts at seq {rec.seq}, but no snapshot covers seq 1..{rec.seq - 1}: "
                        "a snapshot or a log segment is missing"
                    )
                raise WalCorrupt(
                    f"{self.path}: {newest.name} covers seq 1..{covered}, but the log after it continues at seq "
                    f"{rec.seq}: a log segment is missing"
                )
            self._apply(machine, rec.op, rec.timestamp, rec.payload)
            seq = rec.seq
        return machine, seq, newest

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
        t0 = time.perf_counter()
        return self._submit(OP_CREATE_ACCOUNTS, _encode_batch(accounts), _ACCOUNTS, t0)

    def submit_transfers(self, transfers: Sequence[Transfer]) -> Future[list[int]]:
        """Queue a batch; the future resolves to its results once it is on disk. Batches apply in call order."""
        check_batch(transfers, "transfers")
        t0 = time.perf_counter()
        return self._submit(OP_CREATE_TRANSFERS, _encode_batch(transfers), _TRANSFERS, t0)

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

    def _submit(self, op: int, payload: bytes, decoder: Any, started: float = 0.0) -> Future[list[int]]:
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
            wrong = check_transfers(events) if op == OP_CREATE_TRANSFERS else check_accounts(events)
            if wrong is not None:
                raise PaymentsError(Code.INVALID_ARGUMENT, f"bad batch, nothing applied: {wrong}")
        future: Future[list[int]] = Future()
        decoded = time.perf_counter()
        with self._state:
            self._check_open()
            applying = time.perf_counter()
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
            applied = time.perf_counter()
            self.prepare_s += decoded - started if started else 0.0
            self.apply_s += applied - applying
            record = encode_record(self.seq, op, ts, payload)
            pending = _Pending(record, results, future)
            with self._cv:
                self._queue.append(pending)
                self._cv.notify()
            self._batches_since_snapshot += 1
            self._log_bytes_since_snapshot += len(record)
            if self._job is None and (
                (self.snapshot_every and self._batches_since_snapshot >= self.snapshot_every)
                or (self.snapshot_log_bytes and self._log_bytes_since_snapshot >= self.snapshot_log_bytes)
            ):
                self._start_snapshot_locked()
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
            start = 0
            for k, item in enumerate(group):
                if isinstance(item, _Rotate):
                    self._commit(group[start:k])  # type: ignore[arg-type]
                    self._rotate(item)
                    start = k + 1
            self._commit(group[start:])  # type: ignore[arg-type]

    def _commit(self, group: list[_Pending]) -> None:
        if not group:
            return
        if self._failed is None:
            try:
                self._wal.append(b"".join(p.record for p in group))
            except BaseException as exc:  # the disk said no: memory is now ahead of it, stop for good
                self._failed = exc
        if self._failed is not None:
            for p in group:
                p.future.set_exception(PaymentsError(Code.NOT_READY, f"not durable: {self._failed}"))
            return
        self.durable_seq += len(group)
        for p in group:
            p.future.set_result(p.results)

    def _rotate(self, mark: _Rotate) -> None:
        if self._failed is None:
            try:
                self._wal.start_segment(mark.next_seq)
            except BaseException as exc:
                self._failed = exc
        if self._failed is not None:
            mark.done.set_exception(PaymentsError(Code.NOT_READY, f"log not rotated: {self._failed}"))
        else:
            mark.done.set_result(None)

    def flush(self) -> None:
        """Wait until everything submitted so far is durable."""
        with self._state:
            future: Future[Any] | None = None
            with self._cv:
                if self._queue:
                    last = self._queue[-1]
                    future = last.done if isinstance(last, _Rotate) else last.future
        if future is not None:
            future.result()

    # ------------------------------------------------------------------ snapshots

    def snapshot(self) -> Path:
        """Take a snapshot now (or join the one under way) and wait until it is installed; its path."""
        with self._state:
            self._check_open()
            job = self._job
            if job is None:
                if self._snapshot_path is not None and self._snapshot_seq == self.seq:
                    return self._snapshot_path  # nothing new since the last one
                job = self._start_snapshot_locked()
        job.done.wait()
        if job.error is not None or job.path is None:
            raise PaymentsError(Code.NOT_READY, f"snapshot at seq {job.seq} failed: {job.error}")
        return job.path

    def _start_snapshot_locked(self) -> _SnapshotJob:
        """At a batch boundary, with the writer's lock held: rotate the log after this seq and fork."""
        seq = self.seq
        rotate = _Rotate(seq + 1)
        with self._cv:
            self._queue.append(rotate)
            self._cv.notify()
        self._batches_since_snapshot = 0
        self._log_bytes_since_snapshot = 0
        parent = os.getpid()
        try:
            read_end, write_end = os.pipe()
            pid = os.fork()
        except OSError as exc:  # no memory or no processes left: no snapshot this time, nothing else lost
            log.error("snapshot at seq %d not started: %s; the log is kept whole", seq, exc)
            job = _SnapshotJob(seq, -1, -1, rotate)
            job.error = f"cannot fork: {exc}"
            job.done.set()
            return job
        if pid == 0:  # the child: a copy-on-write image of the state at seq; write it and leave at once
            code = 0
            try:
                os.close(read_end)
                # Not the folder's lock: once the engine's process is gone, the folder is free at once.
                os.close(self._lockfile.fileno())
                _die_with_parent()
                if os.getppid() != parent:
                    os._exit(1)  # the engine died before the line above: nobody will install this
                os.nice(19)  # the writer comes first: the snapshot takes whatever CPU it leaves
                gc.disable()  # nothing here lives long; do not walk the parent's heap
                snapshots.write(self.path, seq, self.machine.to_snapshot(), tag=str(parent))
            except BaseException as exc:  # reported to the parent through the pipe
                code = 1
                with contextlib.suppress(BaseException):
                    os.write(write_end, f"{type(exc).__name__}: {exc}".encode()[:2000])
            os._exit(code)
        os.close(write_end)
        job = _SnapshotJob(seq, pid, read_end, rotate)
        self._job = job
        self.snapshots_started += 1
        threading.Thread(target=self._finish_snapshot, args=(job,), name="pay-snapshot", daemon=True).start()
        return job

    def _finish_snapshot(self, job: _SnapshotJob) -> None:
        try:
            _, status = os.waitpid(job.pid, 0)
            chunks = []
            while chunk := os.read(job.pipe, 4096):
                chunks.append(chunk)
            os.close(job.pipe)
            tag = str(os.getpid())
            if status != 0:
                job.error = b"".join(chunks).decode(errors="replace") or f"writer process exit status {status}"
            else:
                job.rotate.done.result()  # every record up to job.seq is durable; the log goes on after it
                job.path = snapshots.install(self.path, job.seq, tag=tag)
                for old in snapshots.snapshots(self.path):
                    if snapshots.file_seq(old) < job.seq:
                        old.unlink()
                gone = self._wal.drop_segments_before(job.seq + 1)
                self._snapshot_path, self._snapshot_seq = job.path, job.seq
                self.snapshots_taken += 1
                log.info(
                    "snapshot at seq %d installed in %.2f s (%s); %d log segment(s) dropped",
                    job.seq,
                    time.perf_counter() - job.started,
                    job.path.name,
                    len(gone),
                )
            if job.error is not None:
                with contextlib.suppress(FileNotFoundError):
                    (self.path / snapshots.tmp_name_for(job.seq, tag)).unlink()
                log.error("snapshot at seq %d failed: %s; the log is kept whole", job.seq, job.error)
        except BaseException as exc:  # a failed snapshot costs replay time, never data
            job.error = f"{type(exc).__name__}: {exc}"
            log.error("snapshot at seq %d failed: %s; the log is kept whole", job.seq, job.error)
        finally:
            self._job = None
            job.done.set()

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
        """The account's transfers matching ``f``, in timestamp order (``reversed``: newest first)."""
        check_filter(f)
        return self._scan(
            lambda: self.machine.account_window(f),
            lambda positions, n: self.machine.account_scan(f, positions, n, history=False),
            f.reversed,
            f.limit,
        )

    def get_account_balances(self, f: AccountFilter) -> list[AccountBalance]:
        """The balances after each of the account's transfers matching ``f`` (``HISTORY`` accounts)."""
        check_filter(f)
        return self._scan(
            lambda: self.machine.account_window(f, history=True),
            lambda positions, n: self.machine.account_scan(f, positions, n, history=True),
            f.reversed,
            f.limit,
        )

    def query_accounts(self, q: QueryFilter) -> list[Account]:
        """Accounts whose fields equal every nonzero field of ``q``, in timestamp order."""
        check_query(q)
        return self._scan(
            lambda: self.machine.query_window("accounts", q),
            lambda positions, n: self.machine.query_scan("accounts", q, positions, n),
            q.reversed,
            q.limit,
        )

    def query_transfers(self, q: QueryFilter) -> list[Transfer]:
        """Transfers whose fields equal every nonzero field of ``q``, in timestamp order."""
        check_query(q)
        return self._scan(
            lambda: self.machine.query_window("transfers", q),
            lambda positions, n: self.machine.query_scan("transfers", q, positions, n),
            q.reversed,
            q.limit,
        )

    def _scan(
        self,
        window: Callable[[], tuple[int, int]],
        scan: Callable[[range, int], list[Any]],
        reverse: bool,
        limit: int,
    ) -> list[Any]:
        # Positions below the window's end never move (logs only grow; a failed chain removes only what its
        # own batch added), so a long scan can let the writer in between chunks.
        with self._state:
            lo, hi = window()
        out: list[Any] = []
        for positions in _chunks(lo, hi, reverse):
            with self._state:
                out += scan(positions, limit - len(out))
            if len(out) >= limit:
                break
        return out

    def digest(self) -> str:
        with self._state:
            return self.machine.digest()

    @property
    def snapshot_running(self) -> bool:
        return self._job is not None

    def stats(self) -> dict[str, float]:
        """Where the time went since open (seconds): for the benchmark's breakdown."""
        return {
            "prepare_s": self.prepare_s,
            "apply_s": self.apply_s,
            "write_s": self._wal.write_s,
            "fsync_s": self._wal.fsync_s,
            "syncs": self._wal.syncs,
            "log_bytes": self._wal.bytes_written,
            "snapshots": self.snapshots_started,
            "snapshots_installed": self.snapshots_taken,
        }

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Make everything submitted durable, finish a snapshot under way, stop the committer, release."""
        if self._closing:
            return
        job = self._job
        if job is not None:
            job.done.wait()
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


def _chunks(lo: int, hi: int, reverse: bool) -> Iterator[range]:
    if reverse:
        for end in range(hi, lo, -SCAN_CHUNK):
            yield range(end - 1, max(lo, end - SCAN_CHUNK) - 1, -1)
    else:
        for start in range(lo, hi, SCAN_CHUNK):
            yield range(start, min(hi, start + SCAN_CHUNK))
