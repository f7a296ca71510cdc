"""A solo node's mempool bounded in bytes (``mempool_bytes_max``) and a prompt stop (``stop_drain_ms_max``)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from liangcao import encoding, limits
from liangcao.codes import Code
from liangcao.errors import TxRejected
from liangcao.ledger import tx as txm
from liangcao.node.genesis import Consortium
from liangcao.node.node import Node, NodeSettings


def mint(consortium: Consortium, n: int, now_ms: int) -> txm.Tx:
    admin = consortium.org("org1").signer("admin")
    return txm.build(
        consortium.chain_id, "demo.wallet", "mint", {"to": "org1/alice", "amount": n + 1}, [admin],
        not_after=now_ms + 120_000, nonce=f"m{n}",
    )  # fmt: skip


def solo_node(path: Path, consortium: Consortium, **settings: Any) -> Node:
    return Node(
        path,
        consortium.genesis,
        orderer=consortium.org("org1").signer("orderer0"),
        peer=consortium.org("org1").signer("peer0"),
        settings=NodeSettings(verify_workers=1, precompute_workers=0, **settings),
    )


def wait_for(cond: Any, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_settings_refuse_a_byte_bound_outside_its_range() -> None:
    assert NodeSettings().mempool_bytes_max == limits.mempool_bytes_max
    for bad in (limits.tx_bytes_max - 1, limits.mempool_bytes_max + 1):
        with pytest.raises(ValueError, match="mempool_bytes_max"):
            NodeSettings(mempool_bytes_max=bad)
    with pytest.raises(ValueError, match="stop_drain_ms_max"):
        NodeSettings(stop_drain_ms_max=-1)


def test_the_mempool_refuses_past_its_bytes_and_takes_again_after_a_commit(
    tmp_path: Path, consortium: Consortium
) -> None:
    """Refused past mempool_bytes_max with MEMPOOL_FULL (nothing kept of the refused one, the rest of the batch
    answered one by one); the bytes are released by the commit, and the refused transaction is taken then and
    committed once."""
    n = solo_node(tmp_path / "n.sqlite", consortium, block_txs_max=1000, block_wait_ms=60_000,
                  mempool_bytes_max=limits.tx_bytes_max)  # fmt: skip
    n._follow()  # the link without the commit thread: nothing is cut until we step
    try:
        now = n.clock.now_ms()
        size = len(mint(consortium, 0, now).raw)
        fits = limits.tx_bytes_max // size
        txs = [mint(consortium, i, now) for i in range(fits + 3)]
        results = n.submit_many([t.raw for t in txs])
        ok = [r for r in results if isinstance(r, tuple)]
        refused = [(t, r) for t, r in zip(txs, results, strict=True) if isinstance(r, TxRejected)]
        assert len(ok) == fits and all(r[1] == "pending" for r in ok)
        assert [t.tx_id for t, _ in refused] == [t.tx_id for t in txs[fits:]]  # in order: the first ones fit
        assert all(r.code == Code.MEMPOOL_FULL and "mempool_bytes_max=65536" in r.message for _, r in refused)
        assert n.pending_count() == fits
        assert n.pending_bytes() == sum(len(t.raw) for t in txs[:fits]) <= limits.tx_bytes_max
        assert not any(n.is_pending(t.tx_id) for t, _ in refused)
        with pytest.raises(TxRejected) as info:  # the same envelope again: still refused, still full
            n.submit(txs[fits].raw)
        assert info.value.code == Code.MEMPOOL_FULL
        assert n.pending_count() == fits

        n._thread = threading.Thread(target=n._run, daemon=True)
        n._thread.start()
        n.link.drain()  # type: ignore[union-attr]  # cut now rather than after block_wait_ms
        wait_for(lambda: n.head.height >= 1 and n.pending_count() == 0)
        assert n.pending_bytes() == 0
        for t, _ in refused:  # room again
            assert n.submit(t.raw)[1] == "pending"
        wait_for(lambda: all(n.position(t.tx_id) is not None for t in txs))
        assert n.pending_bytes() == 0
    finally:
        n.stop()
    reopened = solo_node(tmp_path / "n.sqlite", consortium)
    try:
        store = reopened.ledger.store
        got = [encoding.sha256_hex(raw) for h in range(1, reopened.head.height + 1) for raw in store.block(h).txs]  # type: ignore[union-attr]
        assert sorted(got) == sorted(t.envelope_id for t in txs)  # each exactly once
    finally:
        reopened.stop()


def test_a_stop_is_prompt_and_keeps_everything_committed(tmp_path: Path, consortium: Consortium) -> None:
    """A stop drains for at most stop_drain_ms_max: what was committed before survives, what was only ever
    answered "pending" may be dropped, and it commits when sent again after the restart."""
    path = tmp_path / "n.sqlite"
    n = solo_node(path, consortium, block_txs_max=2, block_wait_ms=0, stop_drain_ms_max=0)
    n._follow()
    now = n.clock.now_ms()
    txs = [mint(consortium, i, now) for i in range(12)]
    assert all(n.submit(t.raw)[1] == "pending" for t in txs[:2])
    deadline = time.monotonic() + 30
    while n.head.height < 1 and time.monotonic() < deadline:
        n.step(timeout_s=0.05, messages_max=512)
    assert all(n.position(t.tx_id) is not None for t in txs[:2])  # reported committed
    assert all(n.submit(t.raw)[1] == "pending" for t in txs[2:])  # only ever told "pending"
    assert n.pending_count() == 10
    n._stopping = True  # the stop's drain, with no time for it (stop_drain_ms_max=0)
    n._thread = threading.Thread(target=n._run, daemon=True)
    n._thread.start()
    t0 = time.monotonic()
    n.stop()
    assert time.monotonic() - t0 < 5
    assert n.dropped_at_stop == 10
    reopened = solo_node(path, consortium, block_wait_ms=0)
    reopened.start()
    try:
        assert reopened.reader().tx_seen(txs[0].tx_id) and reopened.reader().tx_seen(txs[1].tx_id)
        lost = [t for t in txs[2:] if not reopened.reader().tx_seen(t.tx_id)]
        assert len(lost) == n.dropped_at_stop
        for t in lost:  # sent again: committed
            reopened.submit(t.raw)
        wait_for(lambda: all(reopened.reader().tx_seen(t.tx_id) for t in txs))
    finally:
        reopened.stop()


def test_the_solo_log_itself_refuses_past_its_bytes() -> None:
    """The log's own check (the rule; the node's early refusal only saves work): an empty log takes any one
    transaction, then refuses what would pass bytes_max, and takes again once its peer holds less."""
    from liangcao.ordering.solo import SoloLink

    held = [0, 0]  # transactions, bytes: what the peer holds
    got: list[bytes] = []

    def deliver(msg: Any) -> None:
        got.append(msg.data)
        held[0] += 1
        held[1] += len(msg.data)

    link = SoloLink("chain", lambda: 0, pending_max=100, bytes_max=limits.tx_bytes_max)
    link.hold(lambda: held[0], lambda: held[1])
    link.follow_stream(1, deliver)
    big = b"x" * (limits.tx_bytes_max - 10)
    assert link.publish_many([(big, "a"), (b"y" * 20, "b"), (b"z" * 10, "c")]) == [None, _Full, None]  # type: ignore[comparison-overlap]
    assert got == [big, b"z" * 10] and link.holds("a") and not link.holds("b")
    held[:] = [0, 0]  # committed
    assert link.publish_many([(b"y" * 20, "b")]) == [None]
    link.close()


class _FullType:
    def __eq__(self, other: object) -> bool:
        from liangcao.ordering.solo import LogFull

        return isinstance(other, LogFull) and "mempool_bytes_max=65536" in str(other)


_Full = _FullType()


def test_facts_seen_drops_its_oldest_not_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    from collections import OrderedDict

    from liangcao.apps.trace import anchor

    monkeypatch.setattr(anchor, "FACTS_SEEN", OrderedDict())
    monkeypatch.setattr(anchor, "FACTS_SEEN_MAX", 3)
    for n in range(5):
        anchor._remember(f"e{n}", object())  # type: ignore[arg-type]
    assert list(anchor.FACTS_SEEN) == ["e2", "e3", "e4"]


def test_a_full_mempool_refuses_a_whole_batch_before_decoding_it(tmp_path: Path, consortium: Consortium) -> None:
    from liangcao.node.services import NodeServices

    n = solo_node(tmp_path / "n.sqlite", consortium, block_txs_max=1, block_wait_ms=60_000, mempool_txs_max=1)
    n._follow()
    try:
        now = n.clock.now_ms()
        first, second = mint(consortium, 0, now), mint(consortium, 1, now)
        assert n.mempool_full() == "" and n.submit(first.raw)[1] == "pending"
        assert "mempool_txs_max=1" in n.mempool_full()
        services = NodeServices(n)
        try:
            out = services.submit_batch([encoding.decode(second.raw), encoding.decode(first.raw)])
        finally:
            services.trace_index.close()
        assert [r["code"] for r in out] == [Code.MEMPOOL_FULL, Code.MEMPOOL_FULL]
        assert "mempool_txs_max=1" in out[0]["message"]
        assert n.pending_count() == 1 and not n.is_pending(second.tx_id)
    finally:
        n.stop()
