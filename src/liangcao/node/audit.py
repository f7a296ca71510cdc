"""Audit: re-verify a store from genesis, trusting nothing in it.

Theory of operation
-------------------
The audit reads the database through a read-only connection of its own and checks, in this order:

1. **Storage classes.** SQLite column types are advisory: a BLOB written as TEXT still compares equal once
   decoded, so the storage class (``typeof``) of every column is checked against the schema first.
2. **Blocks, by replay.** Every stored block is replayed into a fresh in-memory state with a fresh runtime:
   the row's hash against its header bytes, canonical header and seal bytes, the link to the previous
   block, time order, the seal's signature and the sealer's right to seal, the transaction rows (order, ids,
   count, tx root), every signature and certificate (by re-execution), every receipt byte for byte and the
   receipt root, the ``consumed`` flags, and the state hash.
3. **Pins from outside the store.** The genesis block's hash must be the pinned genesis (the network
   folder's ``genesis.json`` or ``--genesis-hash``): a store replaced by another chain's is self-consistent,
   so only a pin catches it. A pinned head (``expect_head``) must be present with its hash.
4. **Attestation rows.** Each row must be canonical, name the chain, its row's height and member, carry the
   stored block's hashes, verify, and be signed by a *trusted peer*
   (:meth:`liangcao.contracts.config.Config.attesting_org`) under a configuration in force at that height
   or later (see :func:`_trusted_org` for why not only the one at that height). A row for a height above
   the head means blocks were removed after they were attested.
5. **Evidence from outside the store** (``evidence``: attestations the network holds, e.g. the chain's
   JetStream attestation stream): a trusted attestation of a height the store holds must carry its hashes;
   one of a height above the head *by this node's own peer* (``peer``) proves the node committed a block
   the store no longer has: a rollback. (Another organisation's attestations above the head only show that
   the network is ahead: a stopped node lags honestly, so they are a note, not a finding.)
6. **Meta rows.** Only ``schema_version`` and a consortium peer's ``jetstream_resume`` (its stream position,
   written in the same transaction as each block it commits) exist; the position must be exactly the head's.
7. **Derived tables** (``state``, ``history``, ``events``) row by row against the replay, and no rows for
   blocks that do not exist.

Every difference becomes a :class:`Finding` naming its table and its place (a height and index, a key, a
meta name). An untouched store gives no findings.

What a rollback can and cannot be detected from: an attacker who can write the disk but holds no keys
cannot forge a block or an attestation, but can delete the last blocks together with everything derived
from them, leaving a store that is exactly what the node held earlier (or simply restore an old backup).
Nothing inside such a store contradicts it, and nothing the node signs and keeps on the same disk helps
(signed rows can be deleted as well as blocks). Only evidence held elsewhere does: the network's copies of
this node's attestations, or a head pinned by the operator. The audit therefore finds a careless rollback
from the store alone (attestations or a stream position above the head, rows of missing blocks) and a
careful one only with ``evidence``/``peer`` or ``expect_head``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liangcao import encoding
from liangcao.contracts import config as cfgmod
from liangcao.crypto import keys
from liangcao.crypto.identity import CertCache
from liangcao.errors import LiangcaoError
from liangcao.ledger import block as blk
from liangcao.ledger import executor
from liangcao.ledger.executor import Runtime
from liangcao.ledger.state import MemoryState, Overlay, StateView
from liangcao.ledger.store import SCHEMA_VERSION, Store

#: The meta row a consortium peer writes with every block it commits (``liangcao.node.node.Node``).
RESUME_META = "jetstream_resume"
RESUME_FIELDS = ("height", "resume_seq", "cut_seq", "time_ms")
KNOWN_META = ("schema_version", RESUME_META)
ATTESTATION_FIELDS = frozenset({"chain_id", "height", "block_hash", "state_hash", "cert", "sig"})

_INT, _TEXT, _BLOB = ("integer",), ("text",), ("blob",)
#: table -> (primary key columns, {column: the storage classes the store writes})
COLUMNS: dict[str, tuple[tuple[str, ...], dict[str, tuple[str, ...]]]] = {
    "meta": (("name",), {"name": _TEXT, "value": _TEXT}),
    "blocks": (("height",), {"height": _INT, "hash": _TEXT, "header": _BLOB, "seal": _BLOB}),
    "txs": (("height", "idx"), {"height": _INT, "idx": _INT, "tx_id": _TEXT, "raw": _BLOB, "consumed": _INT}),
    "receipts": (("height", "idx"), {"height": _INT, "idx": _INT, "code": _INT, "receipt": _BLOB}),
    "state": (("key",), {"key": _BLOB, "value": ("blob", "null"), "height": _INT, "idx": _INT}),
    "history": (
        ("key", "height", "idx"),
        {
            "key": _BLOB,
            "height": _INT,
            "idx": _INT,
            "value": ("blob", "null"),
            "prev_height": ("integer", "null"),
            "prev_idx": ("integer", "null"),
            "next_height": ("integer", "null"),
            "next_idx": ("integer", "null"),
        },
    ),
    "events": (
        ("height", "idx", "seq"),
        {"height": _INT, "idx": _INT, "seq": _INT, "contract": _TEXT, "name": _TEXT, "data": _BLOB},
    ),
    "attestations": (("height", "member"), {"height": _INT, "member": _TEXT, "attestation": _BLOB}),
}


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
    head: int = -1  # the last stored height (-1: no blocks)
    genesis_hash: str = ""  # the stored genesis block's hash, from its header bytes
    genesis_pinned: bool = False  # whether it was compared with a genesis given from outside the store
    notes: list[str] = field(default_factory=list)  # facts that are not findings (e.g. the network is ahead)

    @property
    def ok(self) -> bool:
        return not self.findings

    def add(self, table: str, place: str, message: str) -> None:
        self.findings.append(Finding(table, place, message))


@dataclass(frozen=True, slots=True)
class _Block:
    """What later checks need of a replayed block: its hash (of the header bytes), state hash and time."""

    hash: str
    state_hash: str
    time_ms: int


def _b(value: Any) -> bytes | None:
    """A stored BLOB as bytes. A tampered row may hold TEXT or a number instead (reported by the storage
    class check): compare its bytes anyway."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode("utf-8", errors="surrogateescape")
    if isinstance(value, int | float):
        return str(value).encode()
    return bytes(value)


def _name(value: Any) -> str:
    return bytes(value).decode(errors="replace") if isinstance(value, bytes | memoryview) else str(value)


def audit(
    store: Store | Path,
    runtime_factory: Callable[[], Runtime],
    progress: Callable[[int, int], None] | None = None,
    *,
    genesis_hash: str | None = None,
    expect_head: tuple[int, str | None] | None = None,
    peer: str | None = None,
    evidence: Iterable[bytes | Mapping[str, Any]] = (),
) -> AuditReport:
    """Re-verify ``store`` (a Store or a database path) from genesis.

    ``genesis_hash``: the chain's genesis block hash, from outside the store (a network folder's
    ``genesis.json``, the consortium's published hash); the store's genesis must be it. ``expect_head``:
    ``(height, block hash or None)`` the store must hold (a head recorded elsewhere). ``evidence``:
    attestations from outside the store (raw bytes or decoded objects), e.g. the chain's attestation stream;
    ``peer``: this node's peer member id, whose attestations above the head prove blocks were removed.

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
    pins = _Pins(genesis_hash.lower() if genesis_hash else None, expect_head, peer, list(evidence))
    try:
        return _audit(db, runtime_factory, progress, report, pins)
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


@dataclass(frozen=True, slots=True)
class _Pins:
    genesis_hash: str | None
    expect_head: tuple[int, str | None] | None
    peer: str | None
    evidence: Sequence[bytes | Mapping[str, Any]]


def _audit(
    db: sqlite3.Connection,
    runtime_factory: Callable[[], Runtime],
    progress: Callable[[int, int], None] | None,
    report: AuditReport,
    pins: _Pins,
) -> AuditReport:
    _check_storage_classes(db, report)
    rt = runtime_factory()
    certs = CertCache()
    state = MemoryState()
    last_write: dict[str, tuple[int, int, bytes | None]] = {}  # every key ever written: its latest write
    history: dict[tuple[bytes, int, int], bytes | None] = {}
    events: dict[tuple[int, int, int], tuple[str, str, bytes]] = {}
    replayed: dict[int, _Block] = {}
    configs: list[tuple[int, cfgmod.Config]] = []  # (first height in force, configuration), ascending

    meta: dict[str, str] = {str(n): str(v) for n, v in db.execute("SELECT name, value FROM meta")}
    heights = [int(r[0]) for r in db.execute("SELECT height FROM blocks ORDER BY height")]
    if heights != list(range(len(heights))):
        report.add("blocks", "heights", "block heights are not 0..N without gaps")
    report.head = heights[-1] if heights else -1
    if not heights:
        report.add("blocks", "height 0", "the store holds no genesis block")
    total = len(heights)
    prev: blk.Header | None = None
    chain_id = ""
    tx_total = 0
    for height in heights:
        row = db.execute("SELECT hash, header, seal FROM blocks WHERE height=?", (height,)).fetchone()
        place = f"height {height}"
        hash_col, header_b, seal_b = str(row[0]), _b(row[1]) or b"", _b(row[2]) or b""
        if height == 0:
            report.genesis_hash = encoding.sha256_hex(header_b)
            if pins.genesis_hash is not None:
                report.genesis_pinned = True
                if report.genesis_hash != pins.genesis_hash:
                    report.add(
                        "blocks",
                        place,
                        f"genesis block {report.genesis_hash} is not the pinned genesis {pins.genesis_hash}: "
                        "the store holds another chain",
                    )
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
        if not configs or cfgmod.version_of(state) != configs[-1][1].version:
            configs.append((height, cfgmod.load(state, certs)))
        for i, writes in enumerate(ex.tx_writes):
            for key, value in writes.items():
                history[(key.encode(), height, i)] = value
                last_write[key] = (height, i, value)
        for i, evs in enumerate(ex.events):
            for s, e in enumerate(evs):
                events[(height, i, s)] = (
                    e["contract"],
                    e["name"],
                    encoding.canonical(e["data"], checked=True),
                )
        replayed[height] = _Block(encoding.sha256_hex(header_b), header.state_hash, header.time_ms)
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

    _check_expected_head(pins.expect_head, replayed, report)
    if not report.complete:
        _check_meta(meta, None, report)
        return report
    trust = _Trust(configs, certs)
    _check_attestations(db, chain_id, replayed, trust, report)
    _check_evidence(pins, chain_id, replayed, trust, report)
    _check_meta(meta, replayed, report)
    _compare_state(db, last_write, report)
    _compare_history(db, history, report)
    _compare_events(db, events, report)
    return report


# ---- storage classes ---------------------------------------------------------------------------------------
def _place(table: str, pk: Sequence[Any]) -> str:
    """A row's place, worded as every other finding about that table words it."""
    v = [_name(x) for x in pk]
    if table == "blocks":
        return f"height {v[0]}"
    if table in ("txs", "receipts"):
        return f"height {v[0]} tx {v[1]}"
    if table == "state":
        return f"key {v[0]}"
    if table == "history":
        return f"key {v[0]} height {v[1]} tx {v[2]}"
    if table == "events":
        return f"height {v[0]} tx {v[1]} event {v[2]}"
    if table == "attestations":
        return f"height {v[0]} by {v[1]}"
    return v[0]


def _check_storage_classes(db: sqlite3.Connection, report: AuditReport) -> None:
    """Every column holds the storage class the store writes: a BLOB stored as TEXT (or a number) is an
    alteration even where its bytes would compare equal."""
    for table, (pk, columns) in COLUMNS.items():
        for column, allowed in columns.items():
            kinds = ", ".join(f"'{k}'" for k in allowed)
            sql = f"SELECT {', '.join(pk)}, typeof({column}) FROM {table} WHERE typeof({column}) NOT IN ({kinds})"
            for row in db.execute(sql):
                report.add(
                    table,
                    _place(table, row[: len(pk)]),
                    f"column {column} is stored as {row[-1]}, the store writes {' or '.join(allowed)}",
                )


# ---- pins and attestations ---------------------------------------------------------------------------------
def _check_expected_head(
    expect: tuple[int, str | None] | None, replayed: dict[int, _Block], report: AuditReport
) -> None:
    if expect is None:
        return
    height, block_hash = expect
    if height > report.head:
        report.add(
            "blocks",
            f"height {height}",
            f"the pinned head is height {height} but the store ends at height {report.head}: "
            "blocks were removed (rolled back) or the store was restored from an older copy",
        )
    elif block_hash is not None and height in replayed and replayed[height].hash != block_hash.lower():
        report.add(
            "blocks",
            f"height {height}",
            f"block {replayed[height].hash} is not the pinned {block_hash.lower()}: the history was rewritten",
        )


@dataclass
class _Trust:
    configs: list[tuple[int, cfgmod.Config]]
    certs: CertCache

    def judge(self, att: Mapping[str, Any], height: int) -> tuple[str, str | None]:
        """(the signing member, its organisation if it is a trusted peer for ``height``, else None).

        Raises LiangcaoError if the attestation does not verify. One signature check for a trusted one."""
        org = _trusted_org(att, height, self.configs, self.certs)
        if org is None:
            return blk.check_attestation(att), None
        return self.certs.parse(keys.unb64(att["cert"])).member_id, org


def _trusted_org(
    att: Mapping[str, Any], height: int, configs: Sequence[tuple[int, cfgmod.Config]], certs: CertCache
) -> str | None:
    """The organisation whose trusted peer signed ``att`` about ``height``, or None.

    A peer attests a height after committing it, so the configuration in force after that block is the one
    the attestation was made under; a *later* one (up to the head's) counts too, because an organisation
    admitted later runs a node that catches up from genesis and attests every old height it re-executed,
    and its peers' attestations of that history are honest and stored by the others. What never counts is a
    signer that no configuration from that height on trusts: not a peer, not of an active organisation,
    not issued by its current CA, or revoked (a peer revoked at height r keeps its attestations of heights
    before r, loses those at or after r). For a height above the head the head's configuration decides.
    """
    start = 0
    for i, (first, _) in enumerate(configs):
        if first <= height:
            start = i
    for _, cfg in configs[start:]:
        org = cfg.attesting_org(att, certs)
        if org is not None:
            return org
    return None


def _check_attestations(
    db: sqlite3.Connection, chain_id: str, replayed: dict[int, _Block], trust: _Trust, report: AuditReport
) -> None:
    for height, member, data in db.execute("SELECT height, member, attestation FROM attestations"):
        place = f"height {_name(height)} by {_name(member)}"
        raw = _b(data) or b""
        try:
            att = encoding.decode(raw)
            if not isinstance(att, dict) or set(att) != ATTESTATION_FIELDS:
                raise LiangcaoError(0, f"an attestation has exactly the fields {sorted(ATTESTATION_FIELDS)}")
            if encoding.canonical(att) != raw:
                raise LiangcaoError(0, "attestation bytes are not in canonical form")
            signer, org = trust.judge(att, height if isinstance(height, int) else -1)
        except LiangcaoError as exc:
            report.add("attestations", place, f"attestation does not verify: {exc.message}")
            continue
        if att["chain_id"] != chain_id:
            report.add("attestations", place, f"attestation is for chain {att['chain_id']!r}")
            continue
        if signer != member or att["height"] != height:
            report.add("attestations", place, "attestation names another member or height")
            continue
        if not isinstance(height, int) or height < 0:
            report.add("attestations", place, "height is not a block height")
            continue
        block = replayed.get(height)
        if block is None:
            report.add(
                "attestations",
                place,
                f"attests height {height}, above the head {report.head}: blocks were removed after "
                "they were committed and attested (rolled back)",
            )
        elif (att["block_hash"], att["state_hash"]) != (block.hash, block.state_hash):
            report.add("attestations", place, "attested hashes differ from the stored block")
        if org is None:
            report.add(
                "attestations",
                place,
                f"{signer} is not a trusted peer (a current, unrevoked peer of an active organisation) "
                f"under the configuration at height {height} or later",
            )


def _evidence_items(evidence: Sequence[bytes | Mapping[str, Any]]) -> Iterable[tuple[Mapping[str, Any] | None, str]]:
    for item in evidence:
        value: Any
        if isinstance(item, bytes | bytearray):
            try:
                value = encoding.decode(bytes(item))
            except LiangcaoError as exc:
                yield None, exc.message
                continue
        else:
            value = item
        yield (value, "") if isinstance(value, Mapping) else (None, "not an object")


def _check_evidence(
    pins: _Pins, chain_id: str, replayed: dict[int, _Block], trust: _Trust, report: AuditReport
) -> None:
    """Attestations held outside the store, against the store."""
    if not pins.evidence:
        return
    ignored: list[str] = []
    ahead: dict[int, set[str]] = {}
    seen: set[tuple[str, int, str, str]] = set()
    for att, why in _evidence_items(pins.evidence):
        if att is None:
            ignored.append(why)
            continue
        try:
            height, block_hash, state_hash = int(att["height"]), str(att["block_hash"]), str(att["state_hash"])
            if att.get("chain_id") != chain_id:
                ignored.append(f"for chain {att.get('chain_id')!r}")
                continue
            key = (str(att["cert"]), height, block_hash, state_hash)
            if key in seen:
                continue
            seen.add(key)
            member, org = trust.judge(att, height)
        except (KeyError, TypeError, ValueError, LiangcaoError) as exc:
            ignored.append(getattr(exc, "message", str(exc)))
            continue
        if org is None:
            ignored.append(f"{member} is not a trusted peer")
            continue
        block = replayed.get(height)
        if block is not None:
            if (block_hash, state_hash) != (block.hash, block.state_hash):
                report.add(
                    "blocks",
                    f"height {height}",
                    f"{member} attests block {block_hash} with state {state_hash} at this height, the store "
                    "holds another: the store was replaced or rewritten (or that peer forked)",
                )
        elif height > report.head and member == pins.peer:
            report.add(
                "blocks",
                f"height {height}",
                f"this node's peer {member} attested height {height} (network evidence) but the store ends "
                f"at height {report.head}: blocks were removed (rolled back) or an older copy was restored",
            )
        elif height > report.head:
            ahead.setdefault(height, set()).add(member)
    if ahead:
        top = max(ahead)
        who = ", ".join(sorted(ahead[top]))
        tell = "" if pins.peer else " (give this node's peer to tell a rollback from a lag)"
        report.notes.append(
            f"the network has attested up to height {top} ({who}); this store ends at height {report.head}: "
            f"it lags, or was rolled back{tell}"
        )
    if ignored:
        report.notes.append(f"{len(ignored)} attestations of the evidence were ignored (e.g. {ignored[0]})")


# ---- meta -----------------------------------------------------------------------------------------------
def _check_meta(meta: dict[str, str], replayed: dict[int, _Block] | None, report: AuditReport) -> None:
    """Only the rows the code writes: ``schema_version`` and a consortium peer's stream position."""
    for name in sorted(set(meta) - set(KNOWN_META)):
        report.add("meta", name, f"unknown meta row (value {meta[name][:80]!r})")
    version = meta.get("schema_version")
    if version != str(SCHEMA_VERSION):
        report.add("meta", "schema_version", f"schema version is {version!r}, not {SCHEMA_VERSION}")
    if RESUME_META in meta and replayed is not None:
        problem = _resume_problem(meta[RESUME_META], replayed, report.head)
        if problem:
            report.add("meta", RESUME_META, problem)


def _resume_problem(text: str, replayed: dict[int, _Block], head: int) -> str:
    """Why a ``jetstream_resume`` row cannot be what the node wrote with the head block, or "".

    The node writes ``json.dumps({"height", "resume_seq", "cut_seq", "time_ms"})`` of the block it commits
    in that block's own transaction, so the row names the head; the block's time is the derived time, or the
    previous block's if that was later; the stream position after the block is at most one past its cut.
    """
    try:
        r = json.loads(text)
    except ValueError:
        return "stream position is not JSON"
    if (
        not isinstance(r, dict)
        or tuple(r) != RESUME_FIELDS
        or any(type(r[f]) is not int or r[f] < 0 for f in RESUME_FIELDS)
    ):
        return f"stream position is not {{{', '.join(RESUME_FIELDS)}}} of non-negative integers"
    if json.dumps(r) != text:
        return "stream position is not in the form the node writes"
    height = r["height"]
    if height > head:
        return (
            f"stream position is of height {height}, above the head {head}: blocks were removed after they "
            "were committed (rolled back)"
        )
    if height < head:
        return (
            f"stream position is of height {height}, below the head {head}: blocks after it were not "
            "committed from the stream"
        )
    if height < 1 or not 1 <= r["resume_seq"] <= r["cut_seq"] + 1:
        return "stream position is not one a committed block leaves"
    block, before = replayed.get(height), replayed.get(height - 1)
    if block is None or before is None or block.time_ms != max(r["time_ms"], before.time_ms):
        return f"stream position's time {r['time_ms']} is not the head block's"
    return ""


# ---- derived tables ---------------------------------------------------------------------------------------
def _compare_state(db: Any, last_write: dict[str, tuple[int, int, bytes | None]], report: AuditReport) -> None:
    """Every key ever written has its row: its latest write's value (None: deleted) and position."""
    stored: dict[bytes, tuple[bytes | None, int, int]] = {
        _b(k) or b"": (_b(v), h, i) for k, v, h, i in db.execute("SELECT key, value, height, idx FROM state")
    }
    expected = {k.encode(): (v, h, i) for k, (h, i, v) in last_write.items()}
    for key in sorted(set(stored) | set(expected)):
        name = key.decode(errors="replace")
        if key not in expected:
            report.add("state", f"key {name}", "key is stored but no block wrote it")
        elif key not in stored:
            report.add("state", f"key {name}", "key written by the blocks is missing")
        elif stored[key][0] != expected[key][0]:
            report.add("state", f"key {name}", "value differs from replay")
        elif stored[key][1:] != expected[key][1:]:
            report.add(
                "state",
                f"key {name}",
                f"height {stored[key][1]} tx {stored[key][2]} differs from last write at {expected[key][1]}"
                f" tx {expected[key][2]}",
            )


def _compare_history(db: Any, expected: dict[tuple[bytes, int, int], bytes | None], report: AuditReport) -> None:
    """Every write's row, and its links to the key's writes before and after it (what key histories and the
    store check follow)."""
    Link = tuple[int, int] | None
    links: dict[tuple[bytes, int, int], tuple[Link, Link]] = {}
    order = sorted(expected)  # by key, then height and transaction: each key's writes in order
    for n, pk in enumerate(order):
        before = order[n - 1] if n and order[n - 1][0] == pk[0] else None
        after = order[n + 1] if n + 1 < len(order) and order[n + 1][0] == pk[0] else None
        links[pk] = (None if before is None else before[1:], None if after is None else after[1:])
    stored: dict[tuple[bytes, int, int], tuple[bytes | None, Link, Link]] = {}
    for k, h, i, v, ph, pi, nh, ni in db.execute(
        "SELECT key, height, idx, value, prev_height, prev_idx, next_height, next_idx FROM history"
    ):
        stored[(_b(k) or b"", h, i)] = (
            _b(v),
            None if ph is None and pi is None else (ph, pi),
            None if nh is None and ni is None else (nh, ni),
        )
    for pk in sorted(set(stored) | set(expected)):
        place = f"key {pk[0].decode(errors='replace')} height {pk[1]} tx {pk[2]}"
        if pk not in expected:
            report.add("history", place, "history row that no block wrote")
        elif pk not in stored:
            report.add("history", place, "history row missing")
        elif stored[pk][0] != expected[pk]:
            report.add("history", place, "history value differs from replay")
        elif stored[pk][1:] != links[pk]:
            report.add("history", place, "history links differ from replay (the key's writes before and after)")


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
