"""Audit: re-verify a store from genesis, trusting nothing in it.

Theory of operation
-------------------
The audit replays every stored block into a fresh in-memory state with a fresh runtime and checks, for
each block: the row's hash against its header bytes, canonical header and seal bytes, the link to the
previous block, time order, the seal's signature and the sealer's right to seal, the transaction rows
(their order, ids and count, the tx root), every signature and certificate (by re-execution), every
receipt byte for byte and the receipt root, the ``consumed`` flags, and the state hash. After the last block it
compares the derived tables (``state``, ``history``, ``events``) row by row with what the replay produced,
and checks that no table holds rows for blocks that do not exist. Every difference becomes a
:class:`Finding` naming its table and its place (a height and index, or a key). An untouched store gives
no findings.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liangcao import encoding
from liangcao.errors import LiangcaoError
from liangcao.ledger import block as blk
from liangcao.ledger import executor
from liangcao.ledger.executor import Runtime
from liangcao.ledger.state import MemoryState, Overlay, StateView
from liangcao.ledger.store import SCHEMA_VERSION, Store


@dataclass(frozen=True, slots=True)
class Finding:
    table: str
    place: str
    message: str

    def __str__(self) -> str:
        return f"{self.table} @ {self.place}: {self.message}"


@dataclass
class AuditReport:
    blocks: int = 0
    txs: int = 0
    findings: list[Finding] = field(default_factory=list)
    complete: bool = True

    @property
    def ok(self) -> bool:
        return not self.findings

    def add(self, table: str, place: str, message: str) -> None:
        self.findings.append(Finding(table, place, message))


def _b(value: Any) -> bytes | None:
    """A stored BLOB as bytes. A tampered row may hold TEXT or a number instead: compare its bytes anyway."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode("utf-8", errors="surrogateescape")
    if isinstance(value, int | float):
        return str(value).encode()
    return bytes(value)


def audit(
    store: Store | Path,
    runtime_factory: Callable[[], Runtime],
    progress: Callable[[int, int], None] | None = None,
) -> AuditReport:
    """Re-verify ``store`` (a Store or a database path) from genesis.

    ``progress(done, total)`` is called after each block. The store is read through a connection of its own
    (read-only): tampered TEXT may not be valid UTF-8, which would make the store's own connection raise,
    and a tampered ``meta`` table must be reported, not refused at opening.
    """
    report = AuditReport()
    path = store.path if isinstance(store, Store) else Path(store)
    if not path.exists():
        report.add("store", str(path), "no such database")
        return report
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    db.text_factory = lambda b: b.decode("utf-8", errors="replace")
    try:
        return _audit(db, runtime_factory, progress, report)
    except sqlite3.Error as exc:  # a file that is not a liangcao ledger at all, or a damaged one
        report.add("store", str(path), f"cannot be read as a liangcao ledger: {exc}")
        report.complete = False
        return report
    except (ValueError, TypeError, KeyError) as exc:  # a column whose type was changed under us
        report.add("store", str(path), f"a stored value has the wrong type: {exc!r}")
        report.complete = False
        return report
    finally:
        db.close()


def _audit(
    db: sqlite3.Connection,
    runtime_factory: Callable[[], Runtime],
    progress: Callable[[int, int], None] | None,
    report: AuditReport,
) -> AuditReport:
    rt = runtime_factory()
    state = MemoryState()
    last_write: dict[str, int] = {}
    history: dict[tuple[bytes, int, int], bytes | None] = {}
    events: dict[tuple[int, int, int], tuple[str, str, bytes]] = {}

    meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
    if meta != {"schema_version": str(SCHEMA_VERSION)}:
        report.add("meta", "schema_version", f"meta rows are {sorted(meta.items())!r}")

    heights = [int(r[0]) for r in db.execute("SELECT height FROM blocks ORDER BY height")]
    if heights != list(range(len(heights))):
        report.add("blocks", "heights", "block heights are not 0..N without gaps")
    total = len(heights)
    prev: blk.Header | None = None
    chain_id = ""
    tx_total = 0
    for height in heights:
        row = db.execute("SELECT hash, header, seal FROM blocks WHERE height=?", (height,)).fetchone()
        place = f"height {height}"
        hash_col, header_b, seal_b = str(row[0]), _b(row[1]) or b"", _b(row[2]) or b""
        try:
            header = blk.Header.from_bytes(header_b)
        except LiangcaoError as exc:
            report.add("blocks", place, f"header: {exc.message}; replay stopped here")
            report.complete = False
            break
        if encoding.sha256_hex(header_b) != hash_col:
            report.add("blocks", place, "stored hash does not match the header bytes")
        if header.height != height:
            report.add("blocks", place, f"header says height {header.height}")
        if prev is None:
            chain_id = header.chain_id
            if header.prev_hash != blk.ZERO_HASH:
                report.add("blocks", place, "genesis prev_hash is not zero")
            prev_state = blk.ZERO_HASH
        else:
            if header.chain_id != chain_id:
                report.add("blocks", place, f"chain id {header.chain_id!r} differs from genesis {chain_id!r}")
            if header.prev_hash != prev.hash:
                report.add("blocks", place, "prev_hash does not link to the previous block")
            if header.time_ms < prev.time_ms:
                report.add("blocks", place, "block time goes backwards")
            prev_state = prev.state_hash

        tx_rows = db.execute(
            "SELECT idx, tx_id, raw, consumed FROM txs WHERE height=? ORDER BY idx", (height,)
        ).fetchall()
        txs = [_b(r[2]) or b"" for r in tx_rows]
        if [int(r[0]) for r in tx_rows] != list(range(len(tx_rows))):
            report.add("txs", place, "transaction indexes are not 0..n-1")
        if len(txs) != header.tx_count:
            report.add("txs", place, f"{len(txs)} transactions stored, header says {header.tx_count}")
        if blk.tx_root(txs) != header.tx_root:
            report.add("txs", place, "transactions do not hash to the header's tx_root")

        ex = executor.execute(
            state,
            rt,
            chain_id=header.chain_id,
            height=height,
            time_ms=header.time_ms,
            prev_state_hash=prev_state,
            txs=txs,
        )
        for i, r in enumerate(tx_rows):
            if i >= len(ex.tx_ids):
                break
            if str(r[1]) != ex.tx_ids[i]:
                report.add("txs", f"{place} tx {i}", "stored tx_id does not match the transaction bytes")
            if int(r[3]) != int(ex.consumed[i]):
                report.add("txs", f"{place} tx {i}", "consumed flag differs from replay")

        rc_rows = db.execute(
            "SELECT idx, code, receipt FROM receipts WHERE height=? ORDER BY idx", (height,)
        ).fetchall()
        stored_receipts = [_b(r[2]) or b"" for r in rc_rows]
        if blk.tx_root(stored_receipts) != header.receipt_root:
            report.add("receipts", place, "receipts do not hash to the header's receipt_root")
        if len(rc_rows) != len(ex.receipts):
            report.add("receipts", place, f"{len(rc_rows)} receipts stored, replay made {len(ex.receipts)}")
        for i, r in enumerate(rc_rows):
            if i >= len(ex.receipts):
                break
            if int(r[0]) != i:
                report.add("receipts", f"{place} tx {i}", "receipt index out of order")
            if stored_receipts[i] != ex.receipts[i]:
                report.add(
                    "receipts",
                    f"{place} tx {i}",
                    "receipt differs from replay (signature, certificate or execution)",
                )
            if int(r[1]) != ex.codes[i]:
                report.add("receipts", f"{place} tx {i}", f"code column {r[1]} differs from replay {ex.codes[i]}")
        if ex.receipt_root != header.receipt_root:
            report.add("blocks", place, "replayed receipts do not match the header's receipt_root")
        if ex.state_hash != header.state_hash:
            report.add("blocks", place, "replayed state hash differs from the header")

        # Seal: signature, and the sealer's right to seal under the configuration in force.
        seal_view: StateView = state
        if height == 0:
            overlay = Overlay(state)
            overlay.writes.update(ex.writes)
            seal_view = overlay
        try:
            seal = blk.Seal.from_bytes(seal_b)
            rt.check_sealer(seal_view, seal.cert, header.time_ms)
            seal.check(encoding.sha256_hex(header_b))
        except LiangcaoError as exc:
            report.add("blocks", place, f"seal: {exc.message}")

        state.apply(ex.writes, [t for t, c in zip(ex.tx_ids, ex.consumed, strict=True) if c])
        for key in ex.writes:
            last_write[key] = height
        for i, writes in enumerate(ex.tx_writes):
            for key, value in writes.items():
                history[(key.encode(), height, i)] = value
        for i, evs in enumerate(ex.events):
            for s, e in enumerate(evs):
                events[(height, i, s)] = (
                    e["contract"],
                    e["name"],
                    encoding.canonical(e["data"], checked=True),
                )
        prev = header
        tx_total += len(txs)
        report.blocks += 1
        if progress is not None:
            progress(report.blocks, total)
    report.txs = tx_total

    # Rows that belong to no block.
    for table in ("txs", "receipts"):
        (count,) = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
        if count != tx_total and report.complete:
            report.add(table, "rows", f"{count} rows, but the blocks hold {tx_total} transactions")

    if not report.complete:
        return report
    _check_attestations(db, report)
    _compare_state(db, state, last_write, report)
    _compare_history(db, history, report)
    _compare_events(db, events, report)
    return report


def _check_attestations(db: Any, report: AuditReport) -> None:
    hashes: dict[int, tuple[str, str]] = {}
    for h, bh, hd in db.execute("SELECT height, hash, header FROM blocks"):
        try:
            hashes[int(h)] = (str(bh), blk.Header.from_bytes(_b(hd) or b"").state_hash)
        except (LiangcaoError, ValueError, TypeError):
            continue  # the block checks report it
    for height, member, data in db.execute("SELECT height, member, attestation FROM attestations"):
        place = f"height {height} by {member}"
        try:
            att = encoding.decode(_b(data) or b"")
            if not isinstance(att, dict):
                raise LiangcaoError(0, "not an object")
            signer = blk.check_attestation(att)
        except LiangcaoError as exc:
            report.add("attestations", place, f"attestation does not verify: {exc.message}")
            continue
        if signer != member or att["height"] != height:
            report.add("attestations", place, "attestation names another member or height")
        elif (att["block_hash"], att["state_hash"]) != hashes.get(int(height)):
            report.add("attestations", place, "attested hashes differ from the stored block")


def _compare_state(db: Any, state: MemoryState, last_write: dict[str, int], report: AuditReport) -> None:
    stored: dict[bytes, tuple[bytes, int]] = {
        _b(k) or b"": (_b(v) or b"", h) for k, v, h in db.execute("SELECT key, value, height FROM state")
    }
    expected = {k.encode(): (v, last_write[k]) for k, v in state.data.items()}
    for key in sorted(set(stored) | set(expected)):
        name = key.decode(errors="replace")
        if key not in expected:
            report.add("state", f"key {name}", "key is stored but no block wrote it")
        elif key not in stored:
            report.add("state", f"key {name}", "key written by the blocks is missing")
        elif stored[key][0] != expected[key][0]:
            report.add("state", f"key {name}", "value differs from replay")
        elif stored[key][1] != expected[key][1]:
            report.add(
                "state",
                f"key {name}",
                f"height {stored[key][1]} differs from last write at {expected[key][1]}",
            )


def _compare_history(db: Any, expected: dict[tuple[bytes, int, int], bytes | None], report: AuditReport) -> None:
    stored = {(_b(k) or b"", h, i): _b(v) for k, h, i, v in db.execute("SELECT key, height, idx, value FROM history")}
    for pk in sorted(set(stored) | set(expected)):
        place = f"key {pk[0].decode(errors='replace')} height {pk[1]} tx {pk[2]}"
        if pk not in expected:
            report.add("history", place, "history row that no block wrote")
        elif pk not in stored:
            report.add("history", place, "history row missing")
        elif stored[pk] != expected[pk]:
            report.add("history", place, "history value differs from replay")


def _compare_events(db: Any, expected: dict[tuple[int, int, int], tuple[str, str, bytes]], report: AuditReport) -> None:
    stored = {
        (h, i, s): (str(c), str(n), _b(d) or b"")
        for h, i, s, c, n, d in db.execute("SELECT height, idx, seq, contract, name, data FROM events")
    }
    for pk in sorted(set(stored) | set(expected)):
        place = f"height {pk[0]} tx {pk[1]} event {pk[2]}"
        if pk not in expected:
            report.add("events", place, "event row that no receipt holds")
        elif pk not in stored:
            report.add("events", place, "event row missing")
        elif stored[pk] != expected[pk]:
            report.add("events", place, "event differs from replay")
