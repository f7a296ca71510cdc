"""The ledger store's cost per random key, apart from everything else (issue 25: where 10 M trace events went).

Fills a store of the ledger's schema with N ``trace/e/<64 hex>`` keys (``state`` rows, and ``history`` rows
unless ``--no-history``), then times blocks of 12,000 new random keys as the commit thread writes a capture:
an existence lookup per key, the ``history`` rows and the ``state`` rows, in one durable transaction.
Prints the commit's CPU per key (the thread's) and wall time per key, for the second half of the blocks.

    python bench/store_keys.py --keys 10000000 --blocks 30            # with the history key index (schema 1)
    python bench/store_keys.py --keys 10000000 --blocks 30 --no-history  # what schema 2 leaves random

The file is kept (``--path``) so that the variants can be run on the same fill; it takes about 5 GB at 10 M.
"""

from __future__ import annotations

import argparse
import os
import resource
import sqlite3
import time

BLOCK_KEYS = 12_000
VALUE = b"x" * 60  # about an EventRef's canonical bytes

SCHEMA_1 = """
CREATE TABLE IF NOT EXISTS state (key BLOB PRIMARY KEY, value BLOB NOT NULL, height INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS history (key BLOB NOT NULL, height INTEGER NOT NULL, idx INTEGER NOT NULL,
    value BLOB, PRIMARY KEY (key, height, idx));
"""


def key() -> bytes:
    return b"trace/e/" + os.urandom(32).hex().encode()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--blocks", type=int, default=30)
    ap.add_argument("--path", default="store-keys.sqlite")
    ap.add_argument("--no-history", action="store_true", help="leave out the history key index's insert")
    ap.add_argument("--cache-mb", type=int, default=128, help="SQLite's page cache (the node's writer: 128)")
    ap.add_argument("--mmap-mb", type=int, default=0, help="SQLite's memory-mapped reads (0: off)")
    a = ap.parse_args()
    db = sqlite3.connect(a.path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    if db.execute("SELECT COUNT(*) FROM sqlite_master WHERE name='state'").fetchone()[0] == 0:
        db.execute("PRAGMA synchronous=OFF")  # the fill is not what is measured
        db.executescript(SCHEMA_1)
        for h in range(0, a.keys, 100_000):
            rows = [key() for _ in range(min(100_000, a.keys - h))]
            db.execute("BEGIN")
            db.executemany("INSERT INTO state VALUES (?, ?, ?)", [(k, VALUE, 0) for k in rows])
            db.executemany("INSERT INTO history VALUES (?, ?, 0, ?)", [(k, 0, VALUE) for k in rows])
            db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.execute("PRAGMA synchronous=FULL")
    db.execute(f"PRAGMA cache_size=-{a.cache_mb * 1024}")  # negative: KiB
    db.execute(f"PRAGMA mmap_size={a.mmap_mb * 2**20}")
    cpu: list[float] = []
    wall: list[float] = []
    for b in range(a.blocks):
        keys = [key() for _ in range(BLOCK_KEYS)]
        t, c = time.perf_counter(), time.thread_time()
        db.execute("BEGIN IMMEDIATE")
        for k in keys:
            db.execute("SELECT value FROM state WHERE key=?", (k,)).fetchone()
        if not a.no_history:
            db.executemany("INSERT INTO history VALUES (?, ?, 0, ?)", [(k, 1 + b, VALUE) for k in keys])
        db.executemany("INSERT OR REPLACE INTO state VALUES (?, ?, ?)", [(k, VALUE, 1 + b) for k in keys])
        db.execute("COMMIT")
        cpu.append((time.thread_time() - c) / BLOCK_KEYS * 1e6)
        wall.append((time.perf_counter() - t) / BLOCK_KEYS * 1e6)
    half = a.blocks // 2
    print(
        f"{'without' if a.no_history else 'with'} the history key index, {a.keys:,} keys before,"
        f" cache {a.cache_mb} MB, mmap {a.mmap_mb} MB:"
        f" {sum(cpu[half:]) / len(cpu[half:]):.1f} us CPU and {sum(wall[half:]) / len(wall[half:]):.1f} us wall"
        f" per key ({os.cpu_count()} cores, peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB)"
    )
    db.close()


if __name__ == "__main__":
    main()
