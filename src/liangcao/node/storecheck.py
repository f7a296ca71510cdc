"""The check a node runs on its store before serving it: is the stored state what the chain says?

A store altered while its node was stopped must not be served as truth. A full audit (``liangcao audit``,
:mod:`liangcao.node.audit`) replays every block from genesis and takes minutes on a large store; this check
takes a fraction of a second to a few seconds and runs at every start (``liangcao node start --check-store``
chooses how much; ``--audit`` runs the full audit first):

``recent`` (the last ``recent_blocks`` blocks)
    no row of a transaction, receipt, write or event above the head; each block's row hash against its
    header bytes, the link to the block before, its transactions and receipts against the header's Merkle
    roots; the block's write set rebuilt from the ``history`` rows and
    hashed onto the previous block's state hash, which must give the header's state hash (the state hash is
    a chain of write-set hashes, so this recomputes the head's state hash from the recent writes); and for
    every key those blocks wrote, the ``state`` row against the key's latest write.
``state`` (the default: ``recent`` and then the whole ``state`` table)
    every ``state`` row against the ``history`` row it points at (same key and value, and no later write of
    the key linked from it), and no state row without a write: an altered or added state value is found
    whichever block last wrote it; and every key's last write in ``history`` (no later write linked from it)
    has its state row (a deleted state row, or one moved back to an older write whose link was cut to match).
``off``
    nothing.

What it cannot see: a store whose ``history`` and ``state`` were both rewritten consistently for a key last
written before the recent blocks (only the replay of the audit recomputes those), and a rollback (see
docs/operator.md, "Audit"). Findings are ``table @ place: what``, as the audit words them; the node refuses
to start on any (state and indexes can be rebuilt from the blocks with ``liangcao node rebuild``).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from liangcao.ledger import block as blk

MODES = ("off", "recent", "state")
RECENT_BLOCKS = 64
FINDINGS_MAX = 20


def check_store(path: Path, mode: str = "state", recent_blocks: int = RECENT_BLOCKS) -> list[str]:
    """Findings (empty: the store agrees with its chain as far as ``mode`` looks). Read-only."""
    if mode not in MODES:
        raise ValueError(f"store check must be one of {', '.join(MODES)}")
    if mode == "off" or not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    db.text_factory = lambda b: b.decode("utf-8", errors="replace")
    found: list[str] = []
    try:
        _recent(db, recent_blocks, found)
        if mode == "state" and len(found) < FINDINGS_MAX:
            _state(db, found)
    except (sqlite3.Error, ValueError, TypeError, KeyError) as exc:
        found.append(f"store @ {path}: cannot be checked: {exc!r}")
    finally:
        db.close()
    return found[:FINDINGS_MAX]


def _recent(db: sqlite3.Connection, n: int, found: list[str]) -> None:
    row = db.execute("SELECT MAX(height) FROM blocks").fetchone()
    if row is None or row[0] is None:
        return
    head = int(row[0])
    # Rows above the head belong to no block: each would make the block that reaches its height fail to commit
    # (its own row exists already), and a transaction's would make a genuine one look replayed. One seek each.
    for table in ("txs", "receipts", "history", "events"):
        r = db.execute(f"SELECT height, idx FROM {table} WHERE height > ? LIMIT 1", (head,)).fetchone()
        if r is not None:
            found.append(f"{table} @ {r[0]}: a row of transaction {r[1]} above the head {head}")
    lo = max(0, head - n + 1)
    prev: blk.Header | None = None
    if lo > 0:
        r = db.execute("SELECT header FROM blocks WHERE height=?", (lo - 1,)).fetchone()
        prev = blk.Header.from_bytes(bytes(r[0])) if r is not None else None
    written: dict[bytes, tuple[int, int, bytes | None]] = {}  # key -> its latest write in these blocks
    for h in range(lo, head + 1):
        r = db.execute("SELECT hash, header FROM blocks WHERE height=?", (h,)).fetchone()
        if r is None:
            found.append(f"blocks @ {h}: missing below the head {head}")
            return
        header = blk.Header.from_bytes(bytes(r[1]))
        if header.hash != r[0] or header.height != h:
            found.append(f"blocks @ {h}: the row's hash or height is not its header's")
        if prev is not None and header.prev_hash != prev.hash:
            found.append(f"blocks @ {h}: does not link to block {h - 1}")
        txs = [bytes(t[0]) for t in db.execute("SELECT raw FROM txs WHERE height=? ORDER BY idx", (h,))]
        receipts = [bytes(t[0]) for t in db.execute("SELECT receipt FROM receipts WHERE height=? ORDER BY idx", (h,))]
        if len(txs) != header.tx_count or blk.tx_root(txs) != header.tx_root:
            found.append(f"txs @ {h}: the transactions are not the header's (tx root)")
        if len(receipts) != header.tx_count or blk.tx_root(receipts) != header.receipt_root:
            found.append(f"receipts @ {h}: the receipts are not the header's (receipt root)")
        writes: dict[str, bytes | None] = {}
        for i, key, value in db.execute("SELECT idx, key, value FROM history WHERE height=? ORDER BY idx", (h,)):
            v = None if value is None else bytes(value)
            writes[bytes(key).decode("utf-8", errors="replace")] = v
            written[bytes(key)] = (h, int(i), v)
        prev_state = prev.state_hash if prev is not None else blk.ZERO_HASH
        recomputed = blk.chain_state_hash(prev_state, blk.write_set_hash(writes))
        if (h == 0 or prev is not None) and recomputed != header.state_hash:
            found.append(f"history @ {h}: the block's writes do not give its state hash")
        prev = header
        if len(found) >= FINDINGS_MAX:
            return
    for key in sorted(written):
        _key(db, key, found, written[key])
        if len(found) >= FINDINGS_MAX:
            return


def _latest(db: sqlite3.Connection, key: bytes) -> tuple[int, int, bytes | None] | None:
    """The key's latest write, found from where its state row points, forward along the history's links
    (None if the state row points at no write of the key)."""
    r = db.execute("SELECT height, idx FROM state WHERE key=?", (key,)).fetchone()
    seen: set[tuple[int, int]] = set()
    at = None if r is None else (int(r[0]), int(r[1]))
    while at is not None and at not in seen:  # an altered store may link in a circle
        seen.add(at)
        h = db.execute(
            "SELECT value, next_height, next_idx FROM history WHERE height=? AND idx=? AND key=?", (*at, key)
        ).fetchone()
        if h is None:
            return None
        if h[1] is None:
            return (*at, None if h[0] is None else bytes(h[0]))
        at = (int(h[1]), int(h[2]))
    return None


def _key(
    db: sqlite3.Connection, key: bytes, found: list[str], latest: tuple[int, int, bytes | None] | None = None
) -> None:
    """The key's state row against its latest write (``latest``, when the recent blocks' rows tell it)."""
    if latest is None:
        latest = _latest(db, key)
    r = db.execute("SELECT value, height, idx FROM state WHERE key=?", (key,)).fetchone()
    name = key.decode("utf-8", errors="replace")
    value = None if r is None or r[0] is None else bytes(r[0])
    if latest is None or latest[2] is None:
        if value is not None:
            found.append(f"state @ {name}: present, but its last write deleted it (or it was never written)")
        elif latest is not None and (r is None or (int(r[1]), int(r[2])) != latest[:2]):
            found.append(f"state @ {name}: missing, but written at height {latest[0]}")
    elif r is None or value is None:
        found.append(f"state @ {name}: missing, but written at height {latest[0]}")
    elif value != latest[2] or (int(r[1]), int(r[2])) != latest[:2]:
        found.append(f"state @ {name}: differs from its last write (height {latest[0]})")


def _state(db: sqlite3.Connection, found: list[str]) -> None:
    # Every state row against the write it points at, which must be its key's latest (no write after it):
    # one primary-key lookup per row.
    rows = db.execute(
        "SELECT s.key FROM state s WHERE NOT EXISTS (SELECT 1 FROM history h WHERE h.height = s.height"
        " AND h.idx = s.idx AND h.key = s.key AND h.value IS s.value AND h.next_height IS NULL)"
        f" LIMIT {FINDINGS_MAX}"
    )
    for (key,) in rows.fetchall():
        if any(f.startswith(f"state @ {bytes(key).decode('utf-8', errors='replace')}:") for f in found):
            continue  # found by the recent check already
        before = len(found)
        _key(db, bytes(key), found)
        if len(found) == before:  # its write is not the key's latest, or is not the key's at all
            found.append(f"state @ {bytes(key).decode('utf-8', errors='replace')}: not its key's last write")
        if len(found) >= FINDINGS_MAX:
            return
    _tails(db, found)


def _tails(db: sqlite3.Connection, found: list[str]) -> None:
    """Every key's last write (a history row without a next link) has the key's state row pointing at it.

    Why: the pass above starts from the state rows, so it could not see a state row deleted (the key then reads
    as absent) or a state row moved back to an older write whose forward link was cut to match (a rollback);
    either leaves a last write that no state row points at. Each state row that passed points at a last write of
    its own key, one row per key, so equal counts mean every last write has its row: one pass over ``history``
    in write order, and the rows are looked for only when the counts differ."""
    if len(found) >= FINDINGS_MAX:
        return
    (tails,) = db.execute("SELECT COUNT(*) FROM history WHERE next_height IS NULL").fetchone()
    (rows,) = db.execute("SELECT COUNT(*) FROM state").fetchone()
    if tails == rows:
        return
    orphans = db.execute(
        "SELECT h.key, h.height, h.idx, s.key IS NULL FROM history h LEFT JOIN state s ON s.key = h.key"
        " WHERE h.next_height IS NULL AND (s.key IS NULL OR s.height IS NOT h.height OR s.idx IS NOT h.idx)"
        f" LIMIT {FINDINGS_MAX}"
    )
    for key, h, i, missing in orphans.fetchall():
        name = bytes(key).decode("utf-8", errors="replace")
        if any(f.startswith(f"state @ {name}:") for f in found):
            continue  # its state row was found wrong already
        if missing:
            found.append(f"state @ {name}: missing, but written at height {h}")
        else:
            found.append(
                f"history @ {name} height {h} tx {i}: the key's last write, but its state row points elsewhere"
            )
        if len(found) >= FINDINGS_MAX:
            return
