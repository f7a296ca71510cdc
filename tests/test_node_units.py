"""The solo cutter's decision table and the mempool's bounds, without a network."""

from __future__ import annotations

import pytest

from conftest import NOW_MS
from liangcao.codes import Code
from liangcao.errors import TxRejected
from liangcao.ledger import tx as txm
from liangcao.node.genesis import Consortium
from liangcao.node.mempool import Mempool
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


def make(consortium: Consortium, n: int) -> txm.Tx:
    admin = consortium.org("org1").signer("admin")
    return txm.build(
        consortium.chain_id,
        "demo.wallet",
        "mint",
        {"to": "org1/alice", "amount": n + 1},
        [admin],
        not_after=NOW_MS + 60_000,
        nonce=f"m{n}",
    )


def test_mempool_dedupes_bounds_and_keeps_order(consortium: Consortium) -> None:
    clock = [1000]
    pool = Mempool(size_max=3, clock=lambda: clock[0])
    txs = [make(consortium, i) for i in range(4)]
    assert pool.add(txs[0]) and not pool.add(txs[0])  # the same id twice is one entry
    assert pool.add(txs[1]) and pool.add(txs[2])
    with pytest.raises(TxRejected) as info:
        pool.add(txs[3])
    assert info.value.code == Code.MEMPOOL_FULL and "mempool_txs_max=3" in info.value.message
    # not due yet: nothing is cut; due: all, oldest first
    assert pool.take(block_txs_max=10, block_wait_ms=50, timeout_s=0, stopping=lambda: False) == []
    clock[0] += 50
    got = pool.take(block_txs_max=2, block_wait_ms=50, timeout_s=0, stopping=lambda: False)
    assert [t.tx_id for t in got] == [txs[0].tx_id, txs[1].tx_id]
    assert len(pool) == 1 and pool.add(txs[3])


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
    from liangcao.ledger.chain import check_block_size

    txs = [make(consortium, i) for i in range(5)]
    monkeypatch.setattr(limits, "block_bytes_max", len(txs[0].raw) * 2 + 10)
    pool = Mempool(clock=lambda: 10**9)
    for t in txs:
        pool.add(t)
    cuts = []
    while len(pool):
        cut = pool.take(block_txs_max=10, block_wait_ms=0, timeout_s=0, stopping=lambda: True)
        check_block_size([t.raw for t in cut])
        cuts.append(len(cut))
    assert cuts == [2, 2, 1]
