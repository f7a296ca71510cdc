"""The gateway's own durable state: orders, refunds and idempotency records, in SQLite (WAL).

Money is never here: balances live in the payments core. What is here is what the core cannot know: which
order a transfer belongs to, each order's state, and the first answer given to every idempotency key.

Durability: WAL with ``synchronous=NORMAL`` survives a killed process (``kill -9``: the log is in the OS's
page cache); ``sync_full=True`` survives a power cut too, at one fsync per commit. Either way a payment is
acknowledged only after the payments core has made it durable (it fsyncs), and the intent recorded here
before the money moves lets a restart finish what a crash interrupted, with the same transfer ids.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY,
    buyer TEXT NOT NULL,
    merchant TEXT NOT NULL,
    amount INTEGER NOT NULL,
    currency TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    state INTEGER NOT NULL,
    pay_state INTEGER NOT NULL DEFAULT 0,
    pay_attempt INTEGER NOT NULL DEFAULT 0,
    method TEXT NOT NULL DEFAULT '',
    source_account TEXT NOT NULL DEFAULT '',
    hold_id TEXT NOT NULL DEFAULT '',
    held INTEGER NOT NULL DEFAULT 0,
    refunded INTEGER NOT NULL DEFAULT 0,
    refunds INTEGER NOT NULL DEFAULT 0,
    fee INTEGER NOT NULL DEFAULT 0,
    settled INTEGER NOT NULL DEFAULT 0,
    settle_attempt INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL,
    paid_ms INTEGER NOT NULL DEFAULT 0,
    auto_confirm_ms INTEGER NOT NULL DEFAULT 0,
    settled_ms INTEGER NOT NULL DEFAULT 0,
    busy TEXT NOT NULL DEFAULT '',
    risk TEXT NOT NULL DEFAULT '',
    funding_id TEXT NOT NULL DEFAULT '',  -- the posted transfer out of the source (a hold's post)
    plan_state INTEGER NOT NULL DEFAULT 0  -- a method's record after settlement: 0 none, 1 due, 2 made
);
CREATE INDEX IF NOT EXISTS orders_due ON orders(state, auto_confirm_ms);
CREATE INDEX IF NOT EXISTS orders_merchant ON orders(merchant, settled_ms);
CREATE INDEX IF NOT EXISTS orders_buyer ON orders(buyer, created_ms);
CREATE TABLE IF NOT EXISTS refunds (
    order_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    amount INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    state INTEGER NOT NULL,
    after_settlement INTEGER NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (order_id, seq)
);
CREATE TABLE IF NOT EXISTS idem (
    key TEXT PRIMARY KEY,
    fingerprint BLOB NOT NULL,
    op TEXT NOT NULL,
    order_id TEXT NOT NULL,
    intent TEXT NOT NULL,
    chain BLOB NOT NULL,
    status INTEGER NOT NULL DEFAULT 0,
    body BLOB,
    created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS idem_open ON idem(status) WHERE status = 0;
CREATE TABLE IF NOT EXISTS parties (account_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class Store:
    """One SQLite connection shared by the gateway's threads under one lock (SQLite has one writer anyway)."""

    def __init__(self, path: Path, *, sync_full: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if sync_full else 'NORMAL'}")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction: committed at the end of the block, rolled back (nothing written) on an exception."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def read(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def one(self, sql: str, params: Any = ()) -> sqlite3.Row | None:
        with self._lock:
            row: sqlite3.Row | None = self._db.execute(sql, params).fetchone()
            return row

    def close(self) -> None:
        with self._lock:
            self._db.close()
