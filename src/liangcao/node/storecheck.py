"""The check a node runs on its store before serving it: is the stored state what the chain says?

A store altered while its node was stopped must not be served as truth. A full audit (``liangcao audit``,
:mod:`liangcao.node.audit`) replays every block from genesis and takes minutes on a large store; this check
takes a fraction of a second to a few seconds and runs at every start (``liangcao node start --check-store``
chooses how much; ``--audit`` runs the full audit first):

``recent`` (the last ``recent_blocks`` blocks)
    each block's row hash against its header bytes, the link to the block before, its transactions and
    receipts against the header's Merkle roots; the block's write set rebuilt from the ``history`` rows and
    hashed onto the previous block's state hash, which must give the header's state hash (the state hash is
    a chain of write-set hashes, so this recomputes the head's state hash from the recent writes); and for
    every key those blocks wrote, the ``state`` row against the key's latest write.
``state`` (the default: ``recent`` and then the whole ``state`` table)
    every ``state`` row against the key's latest write in ``history`` (value and height), and no state row
    without a write: an altered or added state value is found whichever block last wrote it.
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
    lo = max(0, head - n + 1)
    prev: blk.Header | None = None
    if lo > 0:
        r = db.execute("SELECT header FROM blocks WHERE height=?", (lo - 1,)).fetchone()
        prev = blk.Header.from_bytes(bytes(r[0])) if r is not None else None
    written: set[bytes] = set()
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
        for key, value in db.execute("SELECT key, value FROM history WHERE height=? ORDER BY idx", (h,)):
            writes[bytes(key).decode("utf-8", errors="replace")] = None if value is None else bytes(value)
            written.add(bytes(key))
        prev_state = prev.state_hash if prev is not None else blk.ZERO_HASH
        recomputed = blk.chain_state_hash(prev_state, blk.write_set_hash(writes))
        if (h == 0 or prev is not None) and recomputed != header.state_hash:
            found.append(f"history @ {h}: the block's writes do not give its state hash")
        prev = header
        if len(found) >= FINDINGS_MAX:
            return
    for key in sorted(written):
        _key(db, key, found)
        if len(found) >= FINDINGS_MAX:
            return


def _latest(db: sqlite3.Connection, key: bytes) -> tuple[int, bytes | None] | None:
    r = db.execute(
        "SELECT height, value FROM history WHERE key=? ORDER BY height DESC, idx DESC LIMIT 1", (key,)
    ).fetchone()
    return None if r is None else (int(r[0]), None if r[1] is None else bytes(r[1]))


def _key(db: sqlite3.Connection, key: bytes, found: list[str]) -> None:
    latest = _latest(db, key)
    r = db.execute("SELECT value, height FROM state WHERE key=?", (key,)).fetchone()
    name = key.decode("utf-8", errors="replace")
    if latest is None or latest[1] is None:
        if r is not None:
            found.append(f"state @ {name}: present, but its last write deleted it (or it was never written)")
    elif r is None:
        found.append(f"state @ {name}: missing, but written at height {latest[0]}")
    elif bytes(r[0]) != latest[1] or int(r[1]) != latest[0]:
        found.append(f"state @ {name}: differs from its last write (height {latest[0]})")


def _state(db: sqlite3.Connection, found: list[str]) -> None:
    # Every state row against the latest write of its key: one indexed lookup per row.
    rows = db.execute(
        "SELECT s.key FROM state s WHERE (SELECT h.value = s.value AND h.height = s.height FROM history h"
        " WHERE h.key = s.key ORDER BY h.height DESC, h.idx DESC LIMIT 1) IS NOT 1"
        f" LIMIT {FINDINGS_MAX}"
    )
    for (key,) in rows.fetchall():
        if any(f.startswith(f"state @ {bytes(key).decode('utf-8', errors='replace')}:") for f in found):
            continue  # found by the recent check already
        _key(db, bytes(key), found)
        if len(found) >= FINDINGS_MAX:
            return
