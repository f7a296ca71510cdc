"""The node's EPCIS index of compact captures: derived from committed blocks, outside the world state.

Theory of operation
-------------------
A compact ``trace.capture`` (``liangcao.apps.trace.anchor``) writes one small state record per event
(``trace/e/<hex>``: an :class:`~liangcao.apps.trace.anchor.EventRef` to its transaction); the identifier,
place and time indexes EPCIS queries read are kept here instead, in a SQLite file beside the ledger
(``trace-index.sqlite``), one ``WITHOUT ROWID`` table holding exactly the entries the contract writes for a
capture without the flag (same keys without the ``trace/`` prefix, same values:
``liangcao.apps.trace.anchor.index_entries``). Nothing here is in the state hash: every entry is a pure
function of committed blocks (each capture's events from its transaction, which of them were captured
from its receipt), so every node derives the same index, and deleting the file only costs a re-index.

:meth:`TraceIndex.sync` indexes the blocks committed since the last call, in one SQLite transaction per
batch of blocks that also records the height and block hash reached (a crash loses at most uncommitted
index work, never leaves half a block). A follower **process** (:meth:`TraceIndex.follow`: spawned, it
reads the blocks from the store file itself, read-only, and dies with its node like the signature
verifiers) syncs after every commit, so the index's work (decoding each event, finding its facts, writing
entries on random keys) takes neither the commit thread's interpreter nor its lock. Every read first waits
until the index holds every block committed when it began (:meth:`TraceIndex.catch_up`; a read syncs
itself when there is no follower, or when it has died), so a query always sees every committed block. If
the block at the indexed height is no longer the one indexed (the store was rebuilt on another chain), the
index starts again from empty. Nothing here is acknowledged to anyone: a node killed with SIGKILL loses at
most index work, which the next follower (or read) does again from the blocks.

:class:`TraceView` is what the query side reads (``liangcao.trace.query.Index``): the committed state, with
the index's entries merged into ``trace/i/``, ``trace/l/`` and ``trace/t/`` scans, and an ``EventRef``
expanded into the full record the query side knows (event text and context from the transaction, record
time from the block header), so queries, provenance and proofs work the same on both layouts.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import multiprocessing
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from liangcao import encoding, limits
from liangcao.apps.trace import anchor
from liangcao.apps.trace.anchor import index_roles, ref_id
from liangcao.codes import Code
from liangcao.errors import StoreError
from liangcao.ledger.store import Store
from liangcao.node.verify import _exit_with_parent
from liangcao.trace import facts as fx
from liangcao.trace.facts import facts
from liangcao.trace.hashing import Hasher, hash_of_prehash

log = logging.getLogger("liangcao.node.trace_index")

PREFIX = "trace/"
INDEXED = (PREFIX + "i/", PREFIX + "l/", PREFIX + "t/")
SYNC_BLOCKS_MAX = 64  # blocks indexed per SQLite transaction, and at most (about) this many entries, so that
SYNC_ROWS_MAX = 20_000  # a node catching up keeps its write-ahead log and its memory small
TX_CACHE_MAX = 64  # decoded capture transactions a view keeps (a provenance reads a few events of each)
#: A read waiting for the follower gives up waiting (and indexes itself) when the follower has made no progress
#: for this long: a stuck or dead follower must not stop queries
CATCH_UP_STALL_S_MAX = 30.0
#: The follower's niceness: on a machine whose cores the commit path keeps busy (a bulk capture on two cores),
#: commits go first and the index catches up when they pause (each query still waits for it); with a core to
#: spare it changes nothing
FOLLOWER_NICE = 10
_decimal = msgspec.json.Decoder(float_hook=Decimal)
_json = msgspec.json.Decoder()
_encode = msgspec.json.Encoder(decimal_format="number").encode
_COMPACT = b'"compact":true'
HASH_BYTES = 32
# Values most entries hold (event types, roles, places), stored as one byte below 0x20, which never begins
# JSON text; any other value (a combination such as "epc,child") is stored as its JSON text.
_COMMON = [encoding.canonical(v) for v in (
    "ObjectEvent", "AggregationEvent", "TransactionEvent", "TransformationEvent", "AssociationEvent",
    fx.EPC, fx.CHILD, fx.PARENT, fx.INPUT, fx.OUTPUT, fx.QTY, fx.CHILD_QTY, fx.INPUT_QTY, fx.OUTPUT_QTY,
    fx.READ_POINT, fx.BIZ_LOCATION, f"{fx.READ_POINT},{fx.BIZ_LOCATION}")]  # fmt: skip
_CODE = {v: bytes([n + 1]) for n, v in enumerate(_COMMON)}


_STORED: dict[str, bytes] = {}
_STORED_MAX = 256  # values are event types and role or place combinations: a few dozen


def _stored_value(value: str) -> bytes:
    out = _STORED.get(value)
    if out is None:
        raw = encoding.canonical(value)
        out = _CODE.get(raw, raw)
        if len(_STORED) < _STORED_MAX:
            _STORED[value] = out
    return out


def pack_entry(key: str, value: str) -> tuple[bytes, bytes]:
    """An index entry as stored: the key (under ``trace/``) with its event's 64 hex digits as 32 bytes, which
    sort as the digits do (and every bound a query scans between ends before them), and a common value as
    its one-byte code."""
    head, _, hx = key.rpartition(" ")
    return (head + " ").encode() + bytes.fromhex(hx), _stored_value(value)


def packed_entries(f: fx.Facts, hx: str) -> list[tuple[bytes, bytes]]:
    """``[pack_entry(k, v) for k, v in index_entries(f, hx)]`` built directly: the index follower does this for
    every event, and the two steps through text cost it half its time per event."""
    when = f"{f.time_ms:013d}"
    digest = bytes.fromhex(hx)
    tail = f" {when} ".encode() + digest
    roles, places = index_roles(f)
    out = [(f"t/{when} ".encode() + digest, _stored_value(f.type))]
    out += [(b"i/" + ident.encode() + tail, _stored_value(role)) for ident, role in roles.items()]
    out += [(b"l/" + place.encode() + tail, _stored_value(which)) for place, which in places.items()]
    return out


def unpack_entry(key: bytes, value: bytes) -> tuple[str, bytes]:
    """The full key (``trace/`` included) and JSON value of a stored entry."""
    out = _COMMON[value[0] - 1] if len(value) == 1 and value[0] < 0x20 else value
    return PREFIX + key[:-HASH_BYTES].decode() + key[-HASH_BYTES:].hex(), out


#: The index writer's page cache (bounded; pages are cached as they are touched)
INDEX_CACHE_BYTES = 64 * 1024 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entries (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
"""


def _body(raw: bytes) -> dict[str, Any]:
    """A committed transaction's body. Plain decoding: the ledger parsed and checked it before committing it
    (``liangcao.ledger.tx.parse`` again would scan the whole text for its depth, a millisecond a capture)."""
    body: dict[str, Any] = _json.decode(raw)["body"]
    return body


class _Args(msgspec.Struct):
    events: list[msgspec.Raw]  # left undecoded: a read needs one event of the 64
    context: str = ""
    ignore: list[str] = msgspec.field(default_factory=list)


class _Body(msgspec.Struct):
    args: _Args


class _Envelope(msgspec.Struct):
    body: _Body


_envelope = msgspec.json.Decoder(_Envelope)


def _capture_args(raw: bytes) -> dict[str, Any]:
    """A committed capture's events (as undecoded JSON strings), context and ignored fields."""
    args = _envelope.decode(raw).body.args
    return {"events": args.events, "context": args.context, "ignore": args.ignore}


def entries_of_block(store: Store, height: int) -> list[tuple[bytes, bytes]]:
    """The index entries of the compact captures committed at ``height`` (keys without ``trace/``)."""
    out: list[tuple[bytes, bytes]] = []
    receipts = store.receipts(height)
    for raw, receipt_raw in zip(store.block_txs(height), receipts, strict=True):
        if _COMPACT not in raw:  # cheap: most transactions are not compact captures
            continue
        receipt = _json.decode(receipt_raw)
        if receipt.get("code") != 0:
            continue
        body = _body(raw)
        args = body["args"]
        if body["contract"] != "trace" or body["method"] != "capture" or args.get("compact") is not True:
            continue
        for text, result in zip(args["events"], receipt.get("result") or [], strict=False):
            if result.get("status") != "captured":
                continue
            hx = str(result["id"])[len("ni:///sha-256;") :][:64]
            f = anchor.FACTS_SEEN.pop(text, None) or facts(_decimal.decode(text), limits.trace_ids_per_event_max)
            out += packed_entries(f, hx)
    return out


class TraceIndex:
    """The index file of one node (see the module docstring). Thread-safe: one lock around this process's
    writes; another process's (the follower's) are kept apart by SQLite's own write lock."""

    def __init__(self, path: str | Path, store_path: str | Path) -> None:
        self.path = Path(path)
        self.store_path = Path(store_path)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._closed = False
        self._follower: multiprocessing.process.BaseProcess | None = None
        self._watch: threading.Thread | None = None
        # The sending end of a pipe to the follower: a byte wakes it, closing it stops it (as does this process's
        # death). Not a multiprocessing Event: a follower killed while holding its lock would block every commit.
        self._wake_conn: Any = None
        self._wake_lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # derived: a lost tail is indexed again
            # entries are keyed by identifier, so each block's rows land on random pages: a bounded cache keeps
            # them from being read from the file again at every block (SQLite's default is 2 MB)
            self._db.execute(f"PRAGMA cache_size=-{INDEX_CACHE_BYTES // 1024}")  # negative: KiB
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(Code.INTERNAL, f"cannot open the trace index {self.path}: {exc}") from exc

    # ---- writing ------------------------------------------------------------------------------------------
    def _meta(self, name: str, db: sqlite3.Connection | None = None) -> str | None:
        row = (db or self._db).execute("SELECT value FROM meta WHERE name=?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def indexed_height(self) -> int:
        """The height of the last block indexed (-1: none), as committed to the file by any process."""
        value = self._meta("height", self._reader())
        return -1 if value is None else int(value)

    def sync(self, store: Store) -> int:
        """Index every block ``store`` has committed beyond the last one indexed; the height reached.

        Safe beside another process syncing the same file (a follower, and a read that syncs itself while
        the follower starts): each batch is written under SQLite's write lock after reading the height again,
        so a batch another process wrote meanwhile is skipped, never written twice or backwards."""
        with self._lock:
            done = self._height()
            if done >= 0:
                header = store.header(done)
                if header is None or header.hash != self._meta("hash"):  # another chain in this store now
                    self._db.executescript("DELETE FROM entries; DELETE FROM meta;")
                    done = -1
            head = store.height()
            while done < head:
                upto = done
                rows: list[tuple[bytes, bytes]] = []
                while upto < head and upto - done < SYNC_BLOCKS_MAX and len(rows) < SYNC_ROWS_MAX:
                    upto += 1
                    rows += entries_of_block(store, upto)
                header = store.header(upto)
                if header is None:  # not reachable: heights up to head are committed
                    break
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    now = self._height()
                    if now != done:  # another process indexed meanwhile: go on from where it is
                        self._db.execute("ROLLBACK")
                        done = now
                        continue
                    self._db.executemany("INSERT OR REPLACE INTO entries(key, value) VALUES (?, ?)", rows)
                    self._db.execute("INSERT OR REPLACE INTO meta(name, value) VALUES ('height', ?)", (str(upto),))
                    self._db.execute("INSERT OR REPLACE INTO meta(name, value) VALUES ('hash', ?)", (header.hash,))
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
                done = upto
            return done

    def _height(self) -> int:
        value = self._meta("height")
        return -1 if value is None else int(value)

    def follow(
        self, store_factory: Callable[[], Store] | None = None, alive: Callable[[], bool] = lambda: True
    ) -> None:
        """Start the follower process (once; see the module docstring): it syncs when :meth:`wake` is called
        (after each commit) and every second, until :meth:`close` or until ``alive()`` is false (its node
        stopped; looked at twice a second). It opens the store at ``store_path`` itself (``store_factory`` is
        not used: a store connection cannot cross processes; kept for the callers that pass one)."""
        if self._follower is not None or self._closed:
            return
        ctx = multiprocessing.get_context("spawn")  # the node has threads: never fork
        receive, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=_follow_main,
            args=(str(self.path), str(self.store_path), receive, os.getpid()),
            name="liangcao-trace-index",
            daemon=True,
        )
        proc.start()
        receive.close()  # the follower's end: only it holds it now, so it sees the end when this process goes
        os.set_blocking(send.fileno(), False)  # a wake never waits: a full pipe already holds one
        self._wake_conn = send
        self._follower = proc
        # the commit thread no longer needs to keep each event's facts for an index in this process
        anchor.FACTS_KEEP = False
        anchor.FACTS_SEEN.clear()

        def watch() -> None:
            while not self._closed and alive() and proc.is_alive():
                time.sleep(0.5)
            self._stop_follower()

        self._watch = threading.Thread(target=watch, name="liangcao-trace-index-watch", daemon=True)
        self._watch.start()

    def following(self) -> bool:
        """Whether a follower process is running."""
        proc = self._follower
        return proc is not None and self._wake_conn is not None and proc.is_alive()

    def wake(self, *_: Any) -> None:
        """A block was committed (a node listener): the follower indexes it."""
        send = self._wake_conn
        if send is None:
            return
        # four bytes (an empty message) are written whole or not at all; a full pipe or a dead follower is
        # nothing to wait for
        with contextlib.suppress(OSError, ValueError):
            send.send_bytes(b"")

    def catch_up(self, store: Store) -> int:
        """Return once the index holds every block ``store`` has committed now: waiting for the follower while
        it runs and makes progress, else indexing here (:meth:`sync`). The height indexed."""
        target = store.height()
        done = self.indexed_height()
        last, since, pause = done, time.monotonic(), 0.001
        while done < target and self.following():
            self.wake()
            time.sleep(pause)
            pause = min(0.02, pause * 2)
            done = self.indexed_height()
            if done != last:
                last, since = done, time.monotonic()
            elif time.monotonic() - since > CATCH_UP_STALL_S_MAX:
                log.warning("the trace index follower made no progress for %s s; indexing here", CATCH_UP_STALL_S_MAX)
                break
        if done >= target:
            header = store.header(done)  # the follower resets a file of another chain: it must be ours
            if header is not None and header.hash == self._meta("hash", self._reader()):
                return done
        return self.sync(store)

    def _stop_follower(self) -> None:
        proc = self._follower
        if proc is None:
            return
        anchor.FACTS_KEEP = True
        with self._wake_lock:
            send, self._wake_conn = self._wake_conn, None
        if send is not None:
            send.close()  # the follower reads the end of the pipe, checkpoints and exits
        proc.join(30)
        if proc.is_alive():  # it checkpoints on its way out; past that it is only derived work
            proc.kill()
            proc.join(5)

    def close(self) -> None:
        """Stop the follower and close the file. Idempotent."""
        self._closed = True
        self._stop_follower()
        if self._watch is not None and self._watch is not threading.current_thread():
            self._watch.join(30)
        with self._lock:
            self._db.close()

    # ---- reading ------------------------------------------------------------------------------------------
    def _reader(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA busy_timeout=5000")
            self._local.db = db
        return db

    def scan(self, lo: str, hi: str) -> Iterator[tuple[str, bytes]]:
        """Entries with ``lo <= key < hi`` (full keys, ``trace/`` included), in key order."""
        n = len(PREFIX)
        cur = self._reader().execute(
            "SELECT key, value FROM entries WHERE key >= ? AND key < ? ORDER BY key", (lo[n:].encode(), hi[n:].encode())
        )
        for key, value in cur:
            yield unpack_entry(bytes(key), bytes(value))

    def rscan(self, lo: str, hi: str) -> Iterator[tuple[str, bytes]]:
        """:meth:`scan` in descending key order."""
        n = len(PREFIX)
        cur = self._reader().execute(
            "SELECT key, value FROM entries WHERE key >= ? AND key < ? ORDER BY key DESC",
            (lo[n:].encode(), hi[n:].encode()),
        )
        for key, value in cur:
            yield unpack_entry(bytes(key), bytes(value))

    def get(self, key: str) -> bytes | None:
        head, _, hx = key[len(PREFIX) :].rpartition(" ")
        if len(hx) != 2 * HASH_BYTES:
            return None
        try:
            stored = (head + " ").encode() + bytes.fromhex(hx)
        except ValueError:
            return None
        row = self._reader().execute("SELECT key, value FROM entries WHERE key=?", (stored,)).fetchone()
        return None if row is None else unpack_entry(bytes(row[0]), bytes(row[1]))[1]


def _follow_main(path: str, store_path: str, wakes: Any, parent: int) -> None:
    """The follower process (:meth:`TraceIndex.follow`): index what the node commits until the node closes its
    end of the pipe (or is gone); leave the file checkpointed (without its write-ahead log) on a clean stop."""
    _exit_with_parent(parent, "lc-trace-index")
    with contextlib.suppress(OSError):
        os.nice(FOLLOWER_NICE)
    index = TraceIndex(path, store_path)
    store = Store(store_path, readonly=True)
    try:
        while True:
            try:
                while wakes.poll(0):  # every wake so far: one sync covers them all
                    wakes.recv_bytes()
            except EOFError:  # the node stopped its index
                break
            index.sync(store)
            wakes.poll(1.0)
        index._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        store.close()
        index.close()


class TraceView:
    """The committed state as the EPCIS query side reads it (see the module docstring); anything else is the
    store's (proofs read blocks through it)."""

    def __init__(self, store: Store, index: TraceIndex) -> None:
        self.store = store
        self.index = index
        self._txs: OrderedDict[tuple[int, str], tuple[list[tuple[str, dict[str, Any]]], int]] = OrderedDict()
        index.catch_up(store)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def _indexed(self, lo: str) -> bool:
        return lo.startswith(INDEXED)

    def scan(self, lo: str, hi: str) -> Iterator[tuple[str, bytes]]:
        if not self._indexed(lo):
            return self.store.scan(lo, hi)
        return heapq.merge(self.store.scan(lo, hi), self.index.scan(lo, hi), key=lambda kv: kv[0])

    def rscan(self, lo: str, hi: str) -> Iterator[tuple[str, bytes]]:
        """:meth:`scan` in descending key order."""
        cur = self.store.db.execute(
            "SELECT key, value FROM state WHERE key >= ? AND key < ? AND value IS NOT NULL ORDER BY key DESC",
            (lo.encode(), hi.encode()),
        )
        rows = ((bytes(k).decode(), bytes(v)) for k, v in cur)
        if not self._indexed(lo):
            return rows
        return heapq.merge(rows, self.index.rscan(lo, hi), key=lambda kv: kv[0], reverse=True)

    def range(self, prefix: str) -> Iterator[tuple[str, bytes]]:
        if not self._indexed(prefix):
            return self.store.range(prefix)
        return self.scan(prefix, prefix + "\U0010ffff")

    def get(self, key: str) -> bytes | None:
        raw = self.store.get(key)
        if raw is None and self._indexed(key):
            return self.index.get(key)
        if raw is None or not key.startswith(PREFIX + "e/"):
            return raw
        record = _json.decode(raw)
        if "n" not in record:  # a record of the full layout
            return raw
        return _encode(self._expand(key[len(PREFIX) + 2 :], record))

    def _capture(self, height: int, tx_id: str) -> tuple[list[tuple[str, dict[str, Any]]], int]:
        """The (id, arguments) of the transactions at ``height`` whose id begins with ``tx_id`` (one, but for a
        1-in-2^64 chance) and the block's time, decoded once per view."""
        got = self._txs.get((height, tx_id))
        if got is not None:
            self._txs.move_to_end((height, tx_id))
            return got
        # A seek in the transaction id index (ids are lower-case hex: "g" sorts after every digit); the unary
        # plus keeps the planner off the (height, idx) key, which would read the whole block: 30 times slower.
        rows = self.store.db.execute(
            "SELECT tx_id, raw FROM txs WHERE tx_id >= ? AND tx_id < ? AND +height=? AND +consumed=1",
            (tx_id, tx_id + "g", height),
        ).fetchall()
        header = self.store.header(height)
        if not rows or header is None:
            raise StoreError(Code.INTERNAL, f"trace record points at transaction {tx_id} at {height}, not stored")
        found = [(str(t), _capture_args(bytes(raw))) for t, raw in rows]
        got = (found, header.time_ms)
        self._txs[(height, tx_id)] = got
        if len(self._txs) > TX_CACHE_MAX:
            self._txs.popitem(last=False)
        return got

    def _expand(self, hx: str, ref: dict[str, Any]) -> dict[str, Any]:
        """The full record (``liangcao.apps.trace.anchor.EventRecord``'s fields) of a compact capture's event."""
        found, record_ms = self._capture(int(ref["height"]), str(ref["tx"]))
        n = int(ref["n"])
        if len(found) > 1:  # two transactions of one block share the prefix: the one whose event hashes to hx
            found = [(t, a) for t, a in found if n < len(a.get("events") or []) and _hash_hex(a["events"][n], a) == hx]
        if not found:
            raise StoreError(Code.INTERNAL, f"no transaction at height {ref['height']} holds event {hx}")
        tx_id, args = found[0]
        text = _text(args["events"][n])
        event = _decimal.decode(text)  # anchored, so its facts were found: type and time are all a record needs
        by = str(ref["by"])
        return {"by": by, "context": args.get("context", ""), "event": text, "height": ref["height"], "id": ref_id(hx),
                "ignore": args.get("ignore", []), "org": by.partition("/")[0], "record_ms": record_ms,
                "time_ms": fx.time_ms(event["eventTime"]), "tx": tx_id, "type": event["type"]}  # fmt: skip


def _text(event: msgspec.Raw | str) -> str:
    return event if isinstance(event, str) else str(_json.decode(event))


def _hash_hex(text: msgspec.Raw | str, args: dict[str, Any]) -> str:
    text = _text(text)
    context = _decimal.decode(args["context"]) if args.get("context") else None
    hash_id = hash_of_prehash(Hasher(context, args.get("ignore") or []).event(_decimal.decode(text)))
    return hash_id[len("ni:///sha-256;") :][:64]
