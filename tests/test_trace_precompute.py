"""Captures executed with their per-event work done ahead (issue 25, scale) give the same chain as without.

A node with worker processes decodes each EPCIS event of an admitted capture, finds its facts and recomputes
its CBV hash id before the block is executed (``liangcao.apps.trace.anchor.precompute``, started by
``Node._precompute``); the contract takes those outcomes only for the very arguments they were computed
from. These tests run the same blocks on a peer that has the outcomes (computed in real worker processes)
and on one that has none, and compare every receipt and state hash; the node test replays a real node's
blocks on a fresh peer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Replica
from liangcao.apps.trace.anchor import PRECOMPUTED, Precomputed, TraceCode, precompute, precompute_many
from liangcao.bench.trace import documents
from liangcao.codes import Code
from liangcao.ledger import tx as txm
from liangcao.node.node import Node, NodeSettings
from liangcao.node.verify import Workers
from liangcao.trace import capture
from trace_ledger import BRAND, BRAND_PREFIX, CUSTOMS, FIXTURES, LOGISTICS, MAJORITY, TRACE, WAREHOUSE

NOW = int(time.time() * 1000)
CONTEXT = json.dumps(["https://ref.gs1.org/standards/epcis/epcis-context.jsonld"])


@pytest.fixture(scope="module")
def pool() -> Iterator[Workers]:
    workers = Workers(1, in_flight_max=1000)
    yield workers
    workers.close()


def _tx(who: str, args: dict[str, Any], nonce: str, time_ms: int) -> txm.Tx:
    org, _, member = who.partition("/")
    return txm.build(TRACE.chain_id, "trace", "capture", args, [TRACE.org(org).signer(member or "admin")],
                     not_after=time_ms + 600_000, nonce=nonce)  # fmt: skip


def _blocks(time_ms: int) -> list[list[txm.Tx]]:
    """Blocks of captures: the bench's workload in both layouts, GS1's examples (their own contexts, declared
    eventIDs, every event type), a duplicate, and captures that fail on an event (too deep, malformed, no
    time, a context that is not JSON) after events that succeeded."""
    gov = [TRACE.org(o).signer("admin") for o in MAJORITY]
    setup = [
        txm.build(TRACE.chain_id, "trace", "assign_prefix", {"prefix": BRAND_PREFIX, "org": BRAND}, gov,
                  not_after=time_ms + 600_000, nonce="p"),
        txm.build(TRACE.chain_id, "trace", "set_policy", {"org_type": "customs", "own": False, "steps": ["*"]}, gov,
                  not_after=time_ms + 600_000, nonce="s"),
    ]  # fmt: skip
    bench: list[txm.Tx] = []
    for k, (org, data) in enumerate(zip((BRAND, LOGISTICS, WAREHOUSE), documents(0, 12).values(), strict=True)):
        p = capture.prepare(data)
        bench += capture.sign(p, capture.pack(p), TRACE.org(org).signer("admin"), TRACE.chain_id, time_ms + 600_000,
                              compact=k != 1)  # fmt: skip
    examples: list[txm.Tx] = []
    for path in sorted(FIXTURES.glob("gs1-examples/**/*.jsonld"))[:12]:
        try:
            p = capture.prepare(path.read_bytes())
        except capture.CaptureRefused:
            continue
        examples += capture.sign(p, capture.pack(p), TRACE.org(CUSTOMS).signer("admin"), TRACE.chain_id,
                                 time_ms + 600_000, compact=True)  # fmt: skip
    ok = json.dumps({"type": "ObjectEvent", "eventTime": "2026-11-02T00:00:00Z", "eventTimeZoneOffset": "+00:00",
                     "epcList": ["urn:epc:id:sgtin:0614141.107346.900"], "action": "OBSERVE",
                     "bizStep": "inspecting"})  # fmt: skip
    deep = '{"type": "ObjectEvent", "x": ' + "[" * 40 + "]" * 40 + "}"
    bad = [
        _tx(CUSTOMS, {"events": [ok, ok], "context": CONTEXT, "compact": True}, "dup", time_ms),
        _tx(
            CUSTOMS, {"events": [ok.replace("900", "901"), deep], "context": CONTEXT, "compact": True}, "deep", time_ms
        ),
        _tx(
            CUSTOMS,
            {
                "events": [ok.replace("900", "902"), '{"type": "ObjectEvent", "eventTime": 5}'],
                "context": CONTEXT,
                "compact": True,
            },
            "time",
            time_ms,
        ),
        _tx(CUSTOMS, {"events": [ok.replace("900", "903"), "[1, 2"], "context": CONTEXT}, "json", time_ms),
        _tx(CUSTOMS, {"events": [ok.replace("900", "904")], "context": "{nope"}, "ctx", time_ms),
        _tx(
            CUSTOMS, {"events": [ok.replace("900", "905")], "context": CONTEXT, "ignore": ["eventTime"]}, "ig", time_ms
        ),
    ]
    return [setup, bench[: len(bench) // 2], bench[len(bench) // 2 :] + bench[:2], examples, bad]


def _fill(pool: Workers, txs: list[txm.Tx]) -> None:
    """What ``Node._precompute`` does at admission, for these transactions, in real worker processes."""
    jobs = []
    for tx in txs:
        if tx.contract == "trace" and tx.method == "capture":
            a = tx.args
            future = pool.offload(precompute, a.get("context", ""), a.get("ignore", []), a["events"])
            assert future is not None
            jobs.append((tx, future))
    for tx, future in jobs:
        a = tx.args
        PRECOMPUTED.put(tx.tx_id, a.get("context", ""), a.get("ignore", []), a["events"], future.result())


def test_a_peer_with_the_work_done_ahead_and_one_without_agree(pool: Workers) -> None:
    ahead, plain = Replica(TRACE), Replica(TRACE)
    PRECOMPUTED.clear()
    hits = PRECOMPUTED.hits
    codes: list[int] = []
    for txs in _blocks(ahead.time_ms):
        raws = [t.raw for t in txs]
        _fill(pool, txs)
        a = ahead.apply(raws)
        PRECOMPUTED.clear()  # the other peer computes everything itself
        b = plain.apply(raws)
        assert a.receipts == b.receipts
        assert a.state_hash == b.state_hash
        assert ahead.state.data == plain.state.data
        codes += [int(json.loads(r)["code"]) for r in a.receipts]
    assert PRECOMPUTED.hits - hits > 84  # the bench's 84 events and GS1's examples were taken from the workers
    # the failures are the contract's own, found on the peer that had nothing for those events
    assert codes.count(int(TraceCode.TOO_DEEP)) == 1
    assert codes.count(int(TraceCode.BAD_EVENT)) == 3
    assert codes.count(int(Code.DUPLICATE_TX)) == 2  # the two transactions of the bench's workload sent again
    assert codes.count(0) == len(codes) - 6


def test_an_entry_for_other_arguments_is_not_taken() -> None:
    cache = Precomputed(txs_max=2)
    events = [json.dumps({"type": "ObjectEvent", "eventTime": "2026-11-02T00:00:00Z", "eventTimeZoneOffset": "+00:00",
                          "epcList": ["urn:epc:id:sgtin:0614141.107346.1"], "action": "OBSERVE"})]  # fmt: skip
    packed = precompute(CONTEXT, [], events)
    assert packed[0] is not None and packed[0][0].startswith("ni:///sha-256;")
    from liangcao.apps.trace.anchor import CaptureArgs

    cache.put("t1", CONTEXT, [], events, packed)
    assert cache.take("t1", CaptureArgs(events=events, context=CONTEXT, ignore=["eventTime"])) is None  # gone, too
    cache.put("t1", CONTEXT, [], events, packed)
    assert cache.take("t1", CaptureArgs(events=[events[0] + " "], context=CONTEXT)) is None
    cache.put("t1", CONTEXT, [], events, packed)
    got = cache.take("t1", CaptureArgs(events=events, context=CONTEXT))
    assert got is not None and got[0] is not None and got[0][0] == packed[0][0]
    # as a worker hands them over (pickled per capture): the same outcomes, facts with lists as the contract's
    (pickled,) = precompute_many([(CONTEXT, [], events)])
    cache.put("t1", CONTEXT, [], events, pickled)
    again = cache.take("t1", CaptureArgs(events=events, context=CONTEXT))
    assert again == got and again is not None and again[0] is not None and isinstance(again[0][2].ids, list)
    for k in range(3):  # bounded: the oldest goes
        cache.put(f"t{k}", CONTEXT, [], events, packed)
    assert cache.take("t0", CaptureArgs(events=events, context=CONTEXT)) is None
    # a context or an event that fails gives nothing: the contract finds the failure itself
    assert precompute("{nope", [], events) == [None]
    assert precompute(CONTEXT, [], ["[" * 40 + "]" * 40, "{}"]) == [None, None]


def test_a_node_precomputes_at_admission_and_a_replay_agrees(tmp_path: Path) -> None:
    now = int(time.time() * 1000)
    node = Node(tmp_path / "n.sqlite", TRACE.genesis, orderer=TRACE.org("org1").signer("orderer0"),
                peer=TRACE.org("org1").signer("peer0"),
                settings=NodeSettings(verify_workers=2, precompute_workers=1, block_wait_ms=300))  # fmt: skip
    PRECOMPUTED.clear()
    hits = PRECOMPUTED.hits
    node.start()
    try:
        # A spawned worker takes a second or more to start on a loaded machine: every capture was executed
        # before any outcome came back (CI saw no hit at all). Warm it, and let blocks wait long enough for
        # the outcomes: this test is about their being taken and agreeing, not about racing the commit thread.
        warm = node.ahead.offload(precompute_many, [])
        assert warm is not None and warm.result(timeout=120) == []
        for txs in _blocks(now):
            results = node.submit_many([t.raw for t in txs])
            assert all(not isinstance(r, Exception) for r in results), results
            deadline = time.time() + 60
            while (node.pending_count() or node._admitted) and time.time() < deadline:
                time.sleep(0.01)
            assert not node.pending_count()
        assert node.failed is None
        height = node.head.height
        store = node.ledger.store
        blocks = [(store.header(h), store.block_txs(h)) for h in range(1, height + 1)]
    finally:
        node.stop()
    assert PRECOMPUTED.hits > hits  # the workers' outcomes were taken
    PRECOMPUTED.clear()
    replay = Replica(TRACE)
    for header, raws in blocks:
        assert header is not None
        replay.time_ms = header.time_ms
        ex = replay.apply(raws)
        assert ex.state_hash == header.state_hash


def test_the_bench_prepares_into_spool_files_read_back_in_order(tmp_path: Path) -> None:
    """The trace bench's client holds ids, not transactions: each preparing process writes a spool file."""
    from liangcao.bench.trace import Spool, _prepare_spool
    from liangcao.node.home import init_network

    c = init_network(tmp_path, 3, org_types=["brand", "logistics", "warehouse"])
    n_events, ids = _prepare_spool(str(tmp_path), 5, 3, c.chain_id, NOW + 600_000, True, str(tmp_path / "s.bin"))
    assert n_events == 21 and len(ids) == 3  # seven events a case; one transaction per organisation's document
    spool = Spool(tmp_path / "s.bin", n_events, ids)
    batches = list(spool.batches(2))
    assert [len(b) for b in batches] == [2, 1]
    txs = [txm.parse(raw) for b in batches for raw in b]
    assert [t.tx_id for t in txs] == ids
    assert all(t.args["compact"] is True for t in txs)
    assert sum(len(t.args["events"]) for t in txs) == 21


def test_a_dead_worker_leaves_the_work_to_the_commit_thread() -> None:
    """A worker process that dies never stops admission or the commit thread: offloading declines."""
    workers = Workers(1)
    try:
        first = workers.offload(precompute, CONTEXT, [], [])
        assert first is not None and first.result(timeout=60) == []
        pool = workers._pool
        assert pool is not None
        for proc in list(pool._processes.values()):
            proc.kill()
        deadline = time.time() + 30
        while (future := workers.offload(precompute, CONTEXT, [], [])) is not None and time.time() < deadline:
            with pytest.raises(Exception):  # noqa: B017 (BrokenProcessPool, whichever way the pool learns it)
                future.result(timeout=30)
        assert future is None
    finally:
        workers.close()
