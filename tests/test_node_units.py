"""The solo cutter's decision table and the solo log's bounds (the mempool), without a network."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from conftest import NOW_MS
from liangcao import encoding
from liangcao.codes import Code
from liangcao.errors import TxRejected
from liangcao.ledger import tx as txm
from liangcao.node.genesis import Consortium
from liangcao.node.node import Node, NodeSettings
from liangcao.ordering.solo import Cut, decide


@pytest.mark.parametrize(
    ("pending", "oldest", "now", "stopping", "expected"),
    [
        (0, None, 100, False, Cut(0, -1)),  # nothing pending: wait for something
        (5, 90, 100, False, Cut(0, 10)),  # not yet due: wait the rest of block_wait_ms
        (5, 80, 100, False, Cut(5, 0)),  # due: cut everything
        (12, 99, 100, False, Cut(10, 0)),  # full: cut block_txs_max now
        (5, 99, 100, True, Cut(5, 0)),  # stopping: cut now
    ],
)
def test_cutter_table(pending: int, oldest: int | None, now: int, stopping: bool, expected: Cut) -> None:
    assert decide(pending, oldest, now, block_txs_max=10, block_wait_ms=20, stopping=stopping) == expected


def make(consortium: Consortium, n: int, not_after: int = NOW_MS + 60_000) -> txm.Tx:
    admin = consortium.org("org1").signer("admin")
    return txm.build(
        consortium.chain_id,
        "demo.wallet",
        "mint",
        {"to": "org1/alice", "amount": n + 1},
        [admin],
        not_after=not_after,
        nonce=f"m{n}",
    )


def solo_node(tmp_path: Path, consortium: Consortium, **settings: Any) -> Node:
    return Node(
        tmp_path / "n.sqlite",
        consortium.genesis,
        orderer=consortium.org("org1").signer("orderer0"),
        peer=consortium.org("org1").signer("peer0"),
        settings=NodeSettings(verify_workers=1, **settings),
    )


def test_the_solo_log_dedupes_bounds_and_keeps_order(tmp_path: Path, consortium: Consortium) -> None:
    """The embedded orderer's log is the mempool: one entry per envelope, refused beyond mempool_txs_max
    (nothing remembered of the refused one), cut in admission order, and drained into blocks on stop."""
    n = solo_node(tmp_path, consortium, block_txs_max=2, mempool_txs_max=3, block_wait_ms=60_000)
    n._follow()  # the link, without the commit thread: nothing is cut until stop drains
    # a node's clock is the wall clock (the session-wide NOW_MS may be long past by now)
    txs = [make(consortium, i, not_after=n.clock.now_ms() + 60_000) for i in range(4)]
    assert n.submit(txs[0].raw)[1] == "pending" and n.submit(txs[0].raw)[1] == "pending"
    assert n.pending_count() == 1  # the same envelope twice is one entry
    for t in txs[1:3]:
        n.submit(t.raw)
    with pytest.raises(TxRejected) as info:
        n.submit(txs[3].raw)
    assert info.value.code == Code.MEMPOOL_FULL and "mempool_txs_max=3" in info.value.message
    assert not n.is_pending(txs[3].tx_id) and n.is_pending(txs[2].tx_id)
    n._thread = threading.Thread(target=n._run, daemon=True)
    n._thread.start()
    n.stop()  # drains: three transactions in blocks of at most two, in admission order
    reopened = solo_node(tmp_path, consortium)
    try:
        store = reopened.ledger.store
        assert reopened.head.height == 2
        got = [encoding.sha256_hex(raw) for h in (1, 2) for raw in store.block(h).txs]  # type: ignore[union-attr]
        assert got == [t.envelope_id for t in txs[:3]]
    finally:
        reopened.stop()


def test_clock_starts_at_the_chain_head_and_only_moves_forward() -> None:
    from liangcao.clock import Clock, now_ms

    ahead = now_ms() + 10 * 86_400_000
    clock = Clock(not_before_ms=ahead)
    assert clock.now_ms() >= ahead
    behind = Clock(not_before_ms=0)
    assert behind.offset_ms == 0 and abs(behind.now_ms() - now_ms()) < 1_000
    behind.advance(5_000)
    assert behind.offset_ms == 5_000
    with pytest.raises(ValueError, match="forward"):
        behind.advance(-1)


def test_a_cut_never_outgrows_block_bytes_max(consortium: Consortium, monkeypatch: pytest.MonkeyPatch) -> None:
    from liangcao import limits
    from liangcao.crypto.identity import CertCache
    from liangcao.ledger.chain import check_block_size
    from liangcao.ordering.jetstream import _take_distinct

    txs = [make(consortium, i) for i in range(5)]
    monkeypatch.setattr(limits, "block_bytes_max", len(txs[0].raw) * 2 + 10)
    pending = [(i + 1, t.raw, t if i % 2 else None) for i, t in enumerate(txs)]  # parsed or not: the same
    cuts = []
    while pending:
        take, parsed, pending = _take_distinct(pending, 10, CertCache(), limits.block_bytes_max)
        check_block_size([d for _, d, _ in take])
        assert [p.tx_id for p in parsed if p is not None] == [txm.parse(d).tx_id for _, d, _ in take]
        cuts.append(len(take))
    assert cuts == [2, 2, 1]
