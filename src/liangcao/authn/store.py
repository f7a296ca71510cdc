"""The relying party's durable store: one SQLite database in WAL mode, ``synchronous=FULL``, group commit.

Tables: ``shoppers`` (a random user handle, never the shopper's name, is what authenticators see; the
password-less limit), ``credentials`` (public key, algorithm, AAGUID, attestation format, sign counter, name,
revocation), ``ceremonies`` (every challenge issued, what a payment challenge commits to, when it was
answered, with which verdict), ``evidence`` (the signed bytes of every accepted payment: authenticatorData,
clientDataJSON, signature; anyone holding the public key can check them again) and ``clone_alarms``.

A ceremony is answered once: the answer's verdict and the counter it moved are one transaction, acknowledged
only after it is on disk (fsync). Concurrent writers share a commit: one of them applies everything\nwaiting in one transaction and one fsync (group commit, as the payments engine does), each
caller's statements inside a savepoint so that one caller's failure never undoes another's. Readers use
their own connections (WAL: they never wait for the writer).

One process owns a store (an exclusive lock on ``authn.lock``): the relying party keeps in-flight claims and
sign counters in memory, which a second writer would not see.
"""

from __future__ import annotations

import contextlib
import fcntl
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from liangcao.codes import Code
from liangcao.errors import StoreError

Op = tuple[str, Sequence[Any]]

SCHEMA = """
CREATE TABLE IF NOT EXISTS shoppers (
    shopper TEXT PRIMARY KEY,
    user_handle BLOB NOT NULL UNIQUE,
    passwordless_fen INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS credentials (
    id BLOB PRIMARY KEY,
    shopper TEXT NOT NULL,
    name TEXT NOT NULL,
    public_key BLOB NOT NULL,
    alg INTEGER NOT NULL,
    aaguid TEXT NOT NULL,
    fmt TEXT NOT NULL,
    sign_count INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    last_used_ms INTEGER,
    revoked_ms INTEGER,
    revoked_reason TEXT
);
CREATE INDEX IF NOT EXISTS credentials_shopper ON credentials (shopper);
CREATE TABLE IF NOT EXISTS ceremonies (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    shopper TEXT NOT NULL,
    challenge BLOB NOT NULL,
    device_name TEXT,
    order_id TEXT,
    payee TEXT,
    amount_fen INTEGER,
    currency TEXT,
    nonce BLOB,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    used_ms INTEGER,
    result INTEGER,
    credential_id BLOB
);
-- what the device signed, for every accepted payment (appended: cheaper than growing the ceremony's row)
CREATE TABLE IF NOT EXISTS evidence (
    ceremony_id TEXT NOT NULL,
    authenticator_data BLOB NOT NULL,
    client_data_json BLOB NOT NULL,
    signature BLOB NOT NULL
);
-- A payment answer's verdict, written as one row: the ceremony answered, and if accepted (result 0) the
-- device's counter (max: verdicts may arrive out of the order they were judged in; the durable counter never
-- moves back) and the evidence. A batch of verdicts is then ONE multi-row INSERT, which in autocommit mode is
-- a transaction of its own: the writer gives up the GIL once per batch, not once per statement.
CREATE VIEW IF NOT EXISTS verdicts (
    ceremony_id, used_ms, result, credential_id, sign_count, authenticator_data, client_data_json, signature
) AS SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL WHERE 0;
CREATE TRIGGER IF NOT EXISTS verdicts_record INSTEAD OF INSERT ON verdicts BEGIN
    UPDATE ceremonies SET used_ms = NEW.used_ms, result = NEW.result, credential_id = NEW.credential_id
        WHERE id = NEW.ceremony_id;
    UPDATE credentials SET sign_count = max(sign_count, NEW.sign_count),
        last_used_ms = max(coalesce(last_used_ms, 0), NEW.used_ms)
        WHERE NEW.result = 0 AND id = NEW.credential_id;
    INSERT INTO evidence (ceremony_id, authenticator_data, client_data_json, signature)
        SELECT NEW.ceremony_id, NEW.authenticator_data, NEW.client_data_json, NEW.signature WHERE NEW.result = 0;
END;
CREATE TABLE IF NOT EXISTS clone_alarms (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    credential_id BLOB NOT NULL,
    shopper TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    stored_count INTEGER NOT NULL,
    seen_count INTEGER NOT NULL,
    ceremony_id TEXT NOT NULL
);
"""


class _Waiter:
    __slots__ = ("committed", "error", "lead", "ops", "signal")

    def __init__(self, ops: Sequence[Op]) -> None:
        self.ops = ops
        # released when committed or handed the lead: a bare lock is the cheapest one-shot signal (one futex),
        # and a write waits on it once per payment
        self.signal = threading.Lock()
        self.signal.acquire()
        self.committed = False
        self.lead = False
        self.error: BaseException | None = None


class Store:
    """The database under ``home``; ``write`` returns once the statements are durable."""

    def __init__(self, home: Path, *, synchronous: str = "FULL") -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError("synchronous is FULL or NORMAL")
        home.mkdir(parents=True, exist_ok=True)
        self.path = home / "authn.sqlite"
        self._lock_file = open(home / "authn.lock", "a+b")  # noqa: SIM115 - held for the store's lifetime
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_file.close()
            raise StoreError(Code.NOT_READY, f"{home} is in use by another relying party process") from None
        self._synchronous = synchronous
        self._writer = self._connect()
        self._writer.executescript(SCHEMA)
        self._cv = threading.Condition(threading.Lock())  # a plain lock: taken twice per payment
        self._pending: list[_Waiter] = []
        self._closing = False
        self._leading = False
        self.commits = 0  # transactions committed and the writes they carried (group commit's batches)
        self.writes = 0
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._local = threading.local()

    def _connect(self) -> sqlite3.Connection:
        # statements cached: the verdicts' INSERT has a text per batch size (up to 64 rows)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, cached_statements=256)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self._synchronous}")
        db.execute("PRAGMA busy_timeout=5000")
        return db

    # ---- reads --------------------------------------------------------------------------------------------
    def _reader(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = self._connect()
            self._local.db = db
            with self._readers_lock:
                self._readers.append(db)
        return db

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._reader().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(Code.NOT_READY, f"authn store read failed: {exc}") from exc

    def row(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        found = self.rows(sql, params)
        return found[0] if found else None

    # ---- writes -------------------------------------------------------------------------------------------
    def write(self, ops: Sequence[Op]) -> None:
        """Apply ``ops`` as one unit, durably; StoreError (a fault) if the database refused them.

        Group commit without a committer thread: the caller that finds no commit running becomes the
        leader and commits everything waiting, its own statements included; callers that arrive meanwhile
        queue and sleep. A leader whose own statements are durable hands the lead to the first waiter, so
        no caller commits for others for long. Uncontended, a write is one transaction on the caller's
        thread, with no hand-off between threads."""
        waiter = _Waiter(ops)
        with self._cv:
            if self._closing:
                raise StoreError(Code.NOT_READY, "authn store is closed")
            self._pending.append(waiter)
            lead = not self._leading
            self._leading = True
        if not lead:
            waiter.signal.acquire()
            lead = waiter.lead
        if lead:
            self._lead(waiter)
        if waiter.error is not None:
            raise StoreError(Code.NOT_READY, f"authn store write failed: {waiter.error}") from waiter.error

    def _lead(self, mine: _Waiter) -> None:
        while True:
            with self._cv:
                batch, self._pending = self._pending, []
                if not batch:
                    self._leading = False
                    if self._closing:
                        self._cv.notify_all()
                    return
            self._commit(self._writer, batch)
            self.commits += 1  # only the leader counts: one at a time
            self.writes += len(batch)
            if mine.committed:
                with self._cv:
                    if not self._pending:
                        self._leading = False
                        if self._closing:  # close() waits for the last commit
                            self._cv.notify_all()
                        return
                    successor = self._pending[0]
                successor.lead = True
                successor.signal.release()
                return

    @classmethod
    def _commit(cls, db: sqlite3.Connection, batch: list[_Waiter]) -> None:
        # Optimistic: every writer's statements in one transaction, no savepoints (their statements almost
        # never fail). If one does, the transaction is rolled back and applied again writer by writer, each
        # in a savepoint, so only the failing writer's statements are left out.
        if len(batch) == 1 and len(batch[0].ops) == 1:
            # one statement is a transaction by itself (autocommit): no BEGIN and COMMIT, each of which would
            # give up the GIL and wait to get it back from a busy thread
            w = batch[0]
            try:
                db.execute(*w.ops[0])
            except sqlite3.Error as exc:
                w.error = exc
            w.committed = True
            w.signal.release()
            return
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                for w in batch:
                    for sql, params in w.ops:
                        db.execute(sql, params)
            except sqlite3.Error:
                if len(batch) == 1:
                    raise
                db.execute("ROLLBACK")
                db.execute("BEGIN IMMEDIATE")
                cls._one_by_one(db, batch)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            for w in batch:
                w.error = w.error or exc
        for w in batch:
            w.committed = True
            w.signal.release()  # the leader's own too: harmless, nobody waits on it

    @staticmethod
    def _one_by_one(db: sqlite3.Connection, batch: list[_Waiter]) -> None:
        for w in batch:
            db.execute("SAVEPOINT one")
            try:
                for sql, params in w.ops:
                    db.execute(sql, params)
            except sqlite3.Error as exc:
                db.execute("ROLLBACK TO one")
                w.error = exc
            db.execute("RELEASE one")

    def close(self) -> None:
        with self._cv:
            self._closing = True
            while self._leading:  # the last commits finish before the connection closes
                self._cv.wait()
        self._writer.close()
        with self._readers_lock:
            for db in self._readers:
                db.close()
            self._readers.clear()
        self._lock_file.close()  # releases the flock
