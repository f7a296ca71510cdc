"""The durable store: one SQLite database per peer, WAL mode, ``synchronous=FULL``.

Theory of operation
-------------------
A block, its transactions, receipts, state writes and indexes are committed in **one** SQLite
transaction (``commit_block``): a block is wholly there or not at all, and once ``commit_block`` returns
the block survives ``kill -9`` and power loss (FULL sync in WAL mode fsyncs the WAL at every commit).

Tables (keys are UTF-8 BLOBs so that SQLite's byte order equals Python's code point order)::

    meta(name, value)                          chain id, schema version
    blocks(height, hash, header, seal)         the chain: the truth
    txs(height, idx, tx_id, raw, consumed)     transactions; index tx_id -> position
    receipts(height, idx, code, receipt)
    state(key, value, height, idx)             every key's latest write (derived; NULL = deleted)
    history(height, idx, key, value, prev_height, prev_idx, next_height, next_idx)
                                               every write of every key (derived; NULL = delete), each
                                               linked to the key's write before and after it
    events(height, idx, seq, contract, name, data)   (derived)
    attestations(height, member, attestation)  signed (chain, height, block hash, state hash) statements

Everything but ``blocks``, ``txs`` and ``receipts`` is derived and can be rebuilt by replaying blocks
(:meth:`Store.reset_derived` followed by re-committing the derived rows, see ``Ledger.rebuild``).

Why ``history`` is in write order (schema 2)
--------------------------------------------
Most keys are hashes (an EPCIS event's id, a voucher's), so a table in key order takes each block's writes
on random pages: at 10 million trace events every write dirtied a page of its own in ``state``'s key index
and another in ``history``'s, each written twice (the write-ahead log, then the checkpoint), and the commit
thread's cost per event doubled between 300 thousand and 3 million events (measured: docs/benchmarks.md).
``history`` is therefore ordered as blocks write it (height, transaction, key): a block's rows are appended
to its last pages. A key's writes are found through the links instead of a key index: ``state`` holds the
position of the key's latest write (a deleted key keeps its row, value NULL, so that a key written again
links back to its deletion), and each history row the positions of the key's writes before and after it.
A block that only adds keys (captures) thus costs one random page per key (``state``), not two.
"""

from __future__ import annotations

import sqlite3
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from liangcao import encoding
from liangcao.codes import Code
from liangcao.errors import StoreError
from liangcao.ledger.block import Block, Header, Seal
from liangcao.ledger.executor import Execution

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (
    height INTEGER PRIMARY KEY, hash TEXT NOT NULL, header BLOB NOT NULL, seal BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS txs (
    height INTEGER NOT NULL, idx INTEGER NOT NULL, tx_id TEXT NOT NULL, raw BLOB NOT NULL,
    consumed INTEGER NOT NULL, PRIMARY KEY (height, idx));
CREATE INDEX IF NOT EXISTS txs_by_id ON txs (tx_id);
CREATE TABLE IF NOT EXISTS receipts (
    height INTEGER NOT NULL, idx INTEGER NOT NULL, code INTEGER NOT NULL, receipt BLOB NOT NULL,
    PRIMARY KEY (height, idx));
CREATE TABLE IF NOT EXISTS state (
    key BLOB PRIMARY KEY, value BLOB, height INTEGER NOT NULL, idx INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS history (
    height INTEGER NOT NULL, idx INTEGER NOT NULL, key BLOB NOT NULL, value BLOB,
    prev_height INTEGER, prev_idx INTEGER, next_height INTEGER, next_idx INTEGER,
    PRIMARY KEY (height, idx, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    height INTEGER NOT NULL, idx INTEGER NOT NULL, seq INTEGER NOT NULL, contract TEXT NOT NULL,
    name TEXT NOT NULL, data BLOB NOT NULL, PRIMARY KEY (height, idx, seq));
CREATE INDEX IF NOT EXISTS events_by_name ON events (contract, name, height);
CREATE TABLE IF NOT EXISTS attestations (
    height INTEGER NOT NULL, member TEXT NOT NULL, attestation BLOB NOT NULL, PRIMARY KEY (height, member));
"""

DERIVED_TABLES = ("state", "history", "events")
#: The store's first schema (state without positions, history in key order): derived tables only, so a
#: writer opening such a store re-creates them and :class:`~liangcao.ledger.chain.Ledger` replays the blocks
_SCHEMA_1 = "1"
REBUILD_META = "rebuild_derived"
#: Keys looked up in one statement when a block's writes find their keys' previous writes
_IN_MAX = 500

#: The writer's page cache (SQLite's default is 2 MB). State and history are keyed by hashes, so each block's
#: writes land on random pages of their key indexes; with 2 MB nearly every one is read from the file again,
#: which cost the commit thread about a third of its SQLite time at a million trace events. Bounded: pages
#: are cached as they are touched, up to this, in the writer's process only (readers keep the default).
WRITER_CACHE_BYTES = 128 * 1024 * 1024


#: With a checkpointer (a node's store), the writer checkpoints by itself only when the write-ahead log holds
#: this many pages (1 GiB): the checkpointer keeps it to about one block's pages, this is the bound if it
#: falls behind; and the log file is cut back to ``WAL_BYTES_KEPT`` when it starts over.
WRITER_AUTOCHECKPOINT_PAGES = 262_144
WAL_BYTES_KEPT = 256 * 1024 * 1024
#: Past this size the checkpointer makes the log start over (TRUNCATE: it waits for the writer between two
#: commits and for readers; about one block's pages are left to copy by then). Why: under steady load a
#: passive checkpoint is rarely complete when the next commit begins, so the log never starts over and grows
#: (850 MB at 3 million trace events), and every read looks a page up in a longer log index.
WAL_BYTES_RESTART = 256 * 1024 * 1024


class _Checkpointer:
    """Copies the write-ahead log into the database on a thread of its own, after each commit.

    Why: at every commit SQLite's own checkpoint (on the committing thread) wrote each page of the block a
    second time, into the database file, and waited for that file's fsync: at 3 million trace events a
    quarter of the commit thread's time. Here the commit returns once the log is synced (that is what makes
    it durable) and this thread folds the log into the database while the next block executes; SQLite
    leaves the interpreter lock while it does. PASSIVE: it never blocks the writer or readers."""

    def __init__(self, path: Path) -> None:
        self._wal = Path(f"{path}-wal")
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        # Shorter than the writer's 5 s: a TRUNCATE holds the write lock while it waits for readers, and gives
        # up (to try again after the next commit) long before a commit waiting behind it would fail.
        self._db.execute("PRAGMA busy_timeout=1000")
        self._db.execute("PRAGMA synchronous=FULL")
        self._kick = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="liangcao-ckpt", daemon=True)
        self._thread.start()

    def kick(self) -> None:
        self._kick.set()

    def _run(self) -> None:
        try:
            while not self._stop:
                self._kick.wait(1.0)
                self._kick.clear()
                try:
                    self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    if self._wal.exists() and self._wal.stat().st_size > WAL_BYTES_RESTART:
                        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                except (sqlite3.Error, OSError):  # the writer's own checkpoint (at the page bound) still bounds it
                    continue
        finally:
            # The thread closes its own connection: ``close`` may run on this very thread (a store's finalizer
            # called by a garbage collection that happened to start here), where it cannot wait for it.
            self._db.close()

    def close(self) -> None:
        self._stop = True
        self._kick.set()
        if threading.current_thread() is not self._thread:
            self._thread.join()


class Store:
    """SQLite-backed block store and world state. Thread-safe for one writer and many readers via a lock.

    ``checkpointer``: fold the write-ahead log into the database on a thread of its own (a node's store;
    see :class:`_Checkpointer`), not on the committing thread."""

    def __init__(self, path: str | Path, *, readonly: bool = False, checkpointer: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.lock = threading.RLock()
        #: the first read error execution met (see ``_failed``); a store that faulted is not used again
        self.fault: BaseException | None = None
        self._checkpointer: _Checkpointer | None = None
        try:
            if readonly:
                # Readers (API threads) never write, so they can run beside the single writer (WAL).
                self._db = sqlite3.connect(
                    f"file:{self.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
                )
                self._db.execute("PRAGMA busy_timeout=5000")
                self._check_readable()
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(f"PRAGMA cache_size=-{WRITER_CACHE_BYTES // 1024}")  # negative: KiB
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
            if self.meta("schema_version") == _SCHEMA_1:
                self._upgrade_from_1()
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(Code.INTERNAL, f"cannot open store {self.path}: {exc}") from exc
        version = self.meta("schema_version")
        if version is None:
            self.set_meta("schema_version", str(SCHEMA_VERSION))
        elif version != str(SCHEMA_VERSION):
            raise StoreError(Code.INTERNAL, f"store schema {version} is not the supported {SCHEMA_VERSION}")
        if checkpointer:
            self._db.execute(f"PRAGMA wal_autocheckpoint={WRITER_AUTOCHECKPOINT_PAGES}")
            self._db.execute(f"PRAGMA journal_size_limit={WAL_BYTES_KEPT}")
            self._checkpointer = _Checkpointer(self.path)
            # A store dropped without ``close`` (an owner whose constructor raised after opening it) would leave
            # the thread polling the file, and its connection open, for the rest of the process: stop both when
            # the store is collected. The finalizer holds the checkpointer, never the store.
            self._stop_checkpointer = weakref.finalize(self, self._checkpointer.close)

    def _upgrade_from_1(self) -> None:
        """Schema 1 -> 2: drop the derived tables (re-created empty by the schema) and mark them for a replay
        of the blocks, in one transaction; the replay itself is the ledger's (it needs the contracts)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for table in DERIVED_TABLES:
                self._db.execute(f"DROP TABLE IF EXISTS {table}")
            self._db.execute("DROP INDEX IF EXISTS events_by_name")
            for statement in _SCHEMA.split(";"):  # not executescript: it would commit half of the upgrade
                if statement.strip():
                    self._db.execute(statement)
            self._db.execute("UPDATE meta SET value=? WHERE name='schema_version'", (str(SCHEMA_VERSION),))
            self._db.execute("INSERT OR REPLACE INTO meta(name, value) VALUES (?, '1')", (REBUILD_META,))
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def _check_readable(self) -> None:
        """A reader never upgrades (it cannot write): refuse a store its writer has not upgraded yet, or whose
        replay is unfinished. Why: a schema-1 store answers ``get`` from its old table but fails key histories
        with a raw SQLite error, and a store being replayed would serve part of its state as the whole."""
        try:
            version, pending = self.meta("schema_version"), self.meta(REBUILD_META)
        except sqlite3.OperationalError:  # no meta table: a store its writer has not created yet (nothing to misread)
            return
        problem = ""
        if version is not None and version != str(SCHEMA_VERSION):
            problem = f"is schema {version}, not {SCHEMA_VERSION} (its node upgrades it when it next starts)"
        elif pending is not None:
            problem = "has its state and indexes being replayed from its blocks (its node finishes that at its start)"
        if problem:
            self._db.close()
            raise StoreError(Code.INTERNAL, f"cannot read store {self.path}: it {problem}")

    @property
    def rebuild_needed(self) -> bool:
        """Whether the derived tables must be replayed from the blocks (a store upgraded from schema 1)."""
        return self.meta(REBUILD_META) is not None

    def close(self) -> None:
        if self._checkpointer is not None:
            self._stop_checkpointer()  # the checkpointer's close, once (the finalizer then does nothing)
            self._checkpointer = None
        with self.lock:
            self._db.close()

    @property
    def db(self) -> sqlite3.Connection:
        """The raw connection, for audit and tests. Writers must hold :attr:`lock`."""
        return self._db

    # ---- meta -------------------------------------------------------------------------------------------
    def meta(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE name=?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, name: str, value: str | None) -> None:
        """Set (or with None remove) one meta row."""
        with self.lock:
            if value is None:
                self._db.execute("DELETE FROM meta WHERE name=?", (name,))
            else:
                self._db.execute("INSERT OR REPLACE INTO meta(name, value) VALUES (?, ?)", (name, value))

    # ---- StateView --------------------------------------------------------------------------------------
    # Reads that execution depends on turn an SQLite error into a StoreError (a Fault) and remember it in
    # ``fault``: contract code that swallows the exception still cannot hide it, because the executor checks
    # ``fault`` after every transaction and stops the commit.
    def _failed(self, exc: sqlite3.Error) -> StoreError:
        self.fault = exc
        return StoreError(Code.INTERNAL, f"store read failed: {exc}")

    def get(self, key: str) -> bytes | None:
        try:
            row = self._db.execute("SELECT value FROM state WHERE key=?", (key.encode(),)).fetchone()
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc
        return None if row is None or row[0] is None else bytes(row[0])

    def present(self, keys: list[str]) -> set[str]:
        """The keys among ``keys`` that hold a value, a few hundred to a statement (see ``state.present``)."""
        try:
            return {
                bytes(r[0]).decode()
                for r in self._state_rows("key", [k.encode() for k in keys], " AND value IS NOT NULL")
            }
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc

    def _state_rows(self, columns: str, keys: list[bytes], where: str = "") -> Iterator[Any]:
        """``columns`` of the state rows of ``keys`` (those that have one), ``_IN_MAX`` keys to a statement."""
        for n in range(0, len(keys), _IN_MAX):
            part = keys[n : n + _IN_MAX]
            marks = ",".join("?" * len(part))
            yield from self._db.execute(f"SELECT {columns} FROM state WHERE key IN ({marks}){where}", part)

    def _rows(self, lo: bytes, hi: bytes) -> Iterator[tuple[str, bytes]]:
        try:
            cur = self._db.execute(
                "SELECT key, value FROM state WHERE key >= ? AND key < ? AND value IS NOT NULL ORDER BY key", (lo, hi)
            )
            for key, value in cur:
                yield bytes(key).decode(), bytes(value)
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc

    def range(self, prefix: str) -> Iterator[tuple[str, bytes]]:
        lo = prefix.encode()
        # 0xFF never occurs in UTF-8, so every key with the prefix sorts below prefix + 0xFF.
        return self._rows(lo, lo + b"\xff")

    def scan(self, lo: str, hi: str) -> Iterator[tuple[str, bytes]]:
        """(key, value) with ``lo <= key < hi``, ascending, lazily: a bounded slice of one index."""
        return self._rows(lo.encode(), hi.encode())

    def tx_seen(self, tx_id: str) -> bool:
        try:
            row = self._db.execute("SELECT 1 FROM txs WHERE tx_id=? AND consumed=1 LIMIT 1", (tx_id,)).fetchone()
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc
        return row is not None

    # ---- blocks -----------------------------------------------------------------------------------------
    def height(self) -> int:
        """Height of the last committed block, -1 for an empty store."""
        row = self._db.execute("SELECT MAX(height) FROM blocks").fetchone()
        return -1 if row[0] is None else int(row[0])

    def header(self, height: int) -> Header | None:
        row = self._db.execute("SELECT header FROM blocks WHERE height=?", (height,)).fetchone()
        return None if row is None else Header.from_bytes(bytes(row[0]))

    def head(self) -> Header | None:
        h = self.height()
        return None if h < 0 else self.header(h)

    def block(self, height: int) -> Block | None:
        row = self._db.execute("SELECT header, seal FROM blocks WHERE height=?", (height,)).fetchone()
        if row is None:
            return None
        return Block(Header.from_bytes(bytes(row[0])), Seal.from_bytes(bytes(row[1])), tuple(self.block_txs(height)))

    def block_txs(self, height: int) -> list[bytes]:
        rows = self._db.execute("SELECT raw FROM txs WHERE height=? ORDER BY idx", (height,)).fetchall()
        return [bytes(r[0]) for r in rows]

    def block_tx_ids(self, height: int) -> list[str]:
        rows = self._db.execute("SELECT tx_id FROM txs WHERE height=? ORDER BY idx", (height,)).fetchall()
        return [str(r[0]) for r in rows]

    def receipts(self, height: int) -> list[bytes]:
        rows = self._db.execute("SELECT receipt FROM receipts WHERE height=? ORDER BY idx", (height,)).fetchall()
        return [bytes(r[0]) for r in rows]

    def tx_position(self, tx_id: str) -> tuple[int, int] | None:
        """Where ``tx_id`` sits: the occurrence that consumed it, else the latest occurrence."""
        row = self._db.execute(
            "SELECT height, idx FROM txs WHERE tx_id=? ORDER BY consumed DESC, height DESC, idx DESC LIMIT 1",
            (tx_id,),
        ).fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    def key_history(self, key: str, limit: int = 100) -> list[tuple[int, int, bytes | None]]:
        """The key's last ``limit`` writes, newest first: ``(height, tx index, value or None for a delete)``."""
        k = key.encode()
        row = self._db.execute("SELECT height, idx FROM state WHERE key=?", (k,)).fetchone()
        out: list[tuple[int, int, bytes | None]] = []
        at = None if row is None else (int(row[0]), int(row[1]))
        while at is not None and len(out) < limit:
            found = self._db.execute(
                "SELECT value, prev_height, prev_idx FROM history WHERE height=? AND idx=? AND key=?", (*at, k)
            ).fetchone()
            if found is None:  # a store altered behind the node's back: what the links still reach
                break
            out.append((at[0], at[1], None if found[0] is None else bytes(found[0])))
            before = None if found[1] is None else (int(found[1]), int(found[2]))
            # A key's writes link strictly backwards: a link that does not (an altered store's circle) would
            # repeat writes up to ``limit`` times
            at = before if before is not None and before < at else None
        return out

    def events(
        self,
        contract: str | None = None,
        name: str | None = None,
        from_height: int = 0,
        limit: int = 100,
        to_height: int | None = None,
    ) -> list[dict[str, Any]]:
        """Events in (height, tx, seq) order, optionally of one contract and name, within heights."""
        sql = "SELECT height, idx, seq, contract, name, data FROM events WHERE height >= ? AND height <= ?"
        params: list[Any] = [from_height, to_height if to_height is not None else 2**62]
        if contract is not None:
            sql += " AND contract = ?"
            params.append(contract)
        if name is not None:
            sql += " AND name = ?"
            params.append(name)
        sql += " ORDER BY height, idx, seq LIMIT ?"
        params.append(limit)
        return [
            {"height": h, "idx": i, "seq": s, "contract": c, "name": n, "data": encoding.decode(bytes(d))}
            for h, i, s, c, n, d in self._db.execute(sql, params)
        ]

    # ---- commit -----------------------------------------------------------------------------------------
    def commit_block(
        self, block: Block, execution: Execution, *, derived_only: bool = False, meta: dict[str, str] | None = None
    ) -> None:
        """Write a block and everything it implies in one SQLite transaction (all or nothing, durable).

        ``derived_only`` writes only the derived tables, for rebuilding from blocks already stored;
        ``meta`` entries are written in the same transaction (a consortium peer's stream position).
        """
        h = block.header.height
        with self.lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                if not derived_only:
                    if self.height() != h - 1:
                        raise StoreError(Code.BAD_BLOCK, f"block {h} does not follow the stored head {self.height()}")
                    self._db.execute(
                        "INSERT INTO blocks(height, hash, header, seal) VALUES (?, ?, ?, ?)",
                        (h, block.hash, block.header.canonical(), block.seal.canonical()),
                    )
                    self._db.executemany(
                        "INSERT INTO txs(height, idx, tx_id, raw, consumed) VALUES (?, ?, ?, ?, ?)",
                        [
                            (h, i, execution.tx_ids[i], raw, int(execution.consumed[i]))
                            for i, raw in enumerate(block.txs)
                        ],
                    )
                    self._db.executemany(
                        "INSERT INTO receipts(height, idx, code, receipt) VALUES (?, ?, ?, ?)",
                        [(h, i, execution.codes[i], r) for i, r in enumerate(execution.receipts)],
                    )
                self._write_derived(h, execution)
                for name, value in (meta or {}).items():
                    self._db.execute("INSERT OR REPLACE INTO meta(name, value) VALUES (?, ?)", (name, value))
                self._db.execute("COMMIT")
                if self._checkpointer is not None:
                    self._checkpointer.kick()
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def _write_derived(self, h: int, execution: Execution) -> None:
        # Each write links back to its key's write before it (in this block, else where the state row points)
        # and that one forward to it. Rows: [height, idx, key, value, prev_h, prev_i, next_h, next_i].
        rows: list[list[Any]] = []
        last: dict[bytes, list[Any]] = {}  # key -> its latest row in this block
        for i, writes in enumerate(execution.tx_writes):
            for key, value in writes.items():
                k = key.encode()
                row = [h, i, k, value, None, None, None, None]
                before = last.get(k)
                if before is not None:
                    row[4], row[5] = h, before[1]
                    before[6], before[7] = h, i
                last[k] = row
                rows.append(row)
        firsts = {row[2]: row for row in rows if row[4] is None}  # each key's first write in this block
        relinks: list[tuple[int, int, int, int, bytes]] = []
        for k, ph, pi in self._state_rows("key, height, idx", list(firsts)):
            first = firsts[bytes(k)]
            first[4], first[5] = ph, pi
            relinks.append((first[0], first[1], ph, pi, bytes(k)))
        self._db.executemany(
            "INSERT INTO history(height, idx, key, value, prev_height, prev_idx, next_height, next_idx)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        self._db.executemany("UPDATE history SET next_height=?, next_idx=? WHERE height=? AND idx=? AND key=?", relinks)
        self._db.executemany(
            "INSERT OR REPLACE INTO state(key, value, height, idx) VALUES (?, ?, ?, ?)",
            [(k, row[3], h, row[1]) for k, row in last.items()],
        )
        events = [
            (h, i, s, e["contract"], e["name"], encoding.canonical(e["data"], checked=True))
            for i, evs in enumerate(execution.events)
            for s, e in enumerate(evs)
        ]
        self._db.executemany(
            "INSERT INTO events(height, idx, seq, contract, name, data) VALUES (?, ?, ?, ?, ?, ?)", events
        )

    def add_attestation(self, height: int, member: str, attestation: bytes) -> None:
        with self.lock:
            self._db.execute(
                "INSERT OR REPLACE INTO attestations(height, member, attestation) VALUES (?, ?, ?)",
                (height, member, attestation),
            )

    def add_attestations(self, rows: list[tuple[int, str, bytes]]) -> None:
        """Several ``(height, member, attestation)`` rows in one transaction (one sync for all of them)."""
        if not rows:
            return
        with self.lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(
                    "INSERT OR REPLACE INTO attestations(height, member, attestation) VALUES (?, ?, ?)", rows
                )
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def attestations(self, height: int) -> list[bytes]:
        rows = self._db.execute("SELECT attestation FROM attestations WHERE height=? ORDER BY member", (height,))
        return [bytes(r[0]) for r in rows]

    def attestations_of(self, member: str, heights: list[int]) -> list[tuple[int, bytes]]:
        """``member``'s stored attestations of these heights: ``(height, attestation)``, ascending."""
        out: list[tuple[int, bytes]] = []
        for i in range(0, len(heights), 500):
            part = heights[i : i + 500]
            marks = ",".join("?" * len(part))
            rows = self._db.execute(
                f"SELECT height, attestation FROM attestations WHERE member=? AND height IN ({marks}) ORDER BY height",
                (member, *part),
            )
            out += [(int(h), bytes(a)) for h, a in rows]
        return out

    def attestation_orgs(self, height: int) -> set[str]:
        """The organisations of the members whose attestations of ``height`` are stored (``org/name`` ids)."""
        rows = self._db.execute("SELECT member FROM attestations WHERE height=?", (height,))
        return {str(r[0]).partition("/")[0] for r in rows}

    def final_heights(self, quorum: int) -> list[int]:
        """Heights with stored attestations of at least ``quorum`` organisations, ascending."""
        rows = self._db.execute(
            "SELECT height FROM attestations GROUP BY height"
            " HAVING COUNT(DISTINCT substr(member, 1, instr(member, '/') - 1)) >= ? ORDER BY height",
            (quorum,),
        )
        return [int(r[0]) for r in rows]

    def reset_derived(self) -> None:
        """Empty the derived tables (state and indexes), before rebuilding them from the blocks."""
        with self.lock:
            self._db.execute("BEGIN IMMEDIATE")
            for table in DERIVED_TABLES:
                self._db.execute(f"DELETE FROM {table}")
            # Marked in the same transaction (``Ledger.rebuild`` unmarks it at the end): a rebuild cut short is
            # done again at the next opening, not served as the whole state
            self._db.execute("INSERT OR REPLACE INTO meta(name, value) VALUES (?, '1')", (REBUILD_META,))
            self._db.execute("COMMIT")
