"""Ordering on JetStream: the pure block derivation, and a real 3-server nats-server cluster (Debian's
package) on loopback with racing orderers, two independent followers and a server killed with SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import nats
from hypothesis import given, settings
from hypothesis import strategies as st

from liangcao.node.genesis import Consortium
from liangcao.ordering.jetstream import (
    CUT,
    TX,
    BlockDeriver,
    CutMarker,
    CutPolicy,
    DerivedBlock,
    Orderer,
    StreamMessage,
    ensure_stream,
    publish_tx,
    replicas_for,
    subscribe_from,
)
from liangcao.ordering.natsserver import NatsCluster

CHAIN = "lc-test"


def cut(c: Consortium, height: int, t: int = 1000, org: str = "org1") -> bytes:
    s = c.org(org).signer("orderer0")
    return CutMarker.make(CHAIN, height, t, s.member_id, s.key, s.cert).to_bytes()


def derive(
    log: list[tuple[str, bytes]],
    start: int = 1,
    height: int = 1,
    block_txs_max: int = 3,
    after_cut: int = 0,
    last_time_ms: int = 0,
) -> list[DerivedBlock]:
    d = BlockDeriver(
        CHAIN,
        height,
        block_txs_max=block_txs_max,
        verify_cut=lambda m: m.signature_ok() is not None,
        after_cut_seq=after_cut,
        last_time_ms=last_time_ms,
    )
    out = []
    for seq, (kind, data) in enumerate(log, start=1):
        if seq < start:
            continue
        b = d.feed(seq, kind, data)
        if b is not None:
            out.append(b)
    return out


def test_duplicate_empty_foreign_and_forged_cuts_are_ignored(consortium: Consortium) -> None:
    forged = CutMarker.from_bytes(cut(consortium, 2))
    assert forged is not None
    forged_bytes = CutMarker(forged.chain_id, 2, 5, forged.orderer, forged.cert, forged.sig).to_bytes()
    log = [
        (CUT, cut(consortium, 1)),  # empty: ignored, height 1 not consumed
        (TX, b"a"),
        (TX, b"b"),
        (CUT, cut(consortium, 1, 2000)),  # block 1 = a, b
        (CUT, cut(consortium, 1, 2001, "org2")),  # a duplicate from another orderer
        (TX, b"c"),
        (CUT, cut(consortium, 7)),  # not the next height
        (CUT, forged_bytes),  # time edited after signing
        (CUT, b"not a marker"),
        (CUT, cut(consortium, 2, 1500)),  # block 2 = c; its clock is behind: block time stays 2000
    ]
    blocks = derive(log)
    assert [(b.height, b.txs, b.time_ms) for b in blocks] == [(1, (b"a", b"b"), 2000), (2, (b"c",), 2000)]
    assert [b.resume_seq for b in blocks] == [5, 11]


def test_a_full_cut_leaves_the_rest_pending_and_resume_sees_the_same(consortium: Consortium) -> None:
    log = [(TX, bytes([i])) for i in range(5)] + [(CUT, cut(consortium, 1)), (CUT, cut(consortium, 2))]
    blocks = derive(log, block_txs_max=3)
    assert [b.txs for b in blocks] == [(b"\x00", b"\x01", b"\x02"), (b"\x03", b"\x04")]
    assert blocks[0].resume_seq == 4  # the first transaction left pending
    assert derive(log, start=blocks[0].resume_seq, height=2, block_txs_max=3, after_cut=blocks[0].cut_seq) == blocks[1:]


@st.composite
def logs(draw: st.DrawFn) -> list[tuple[str, int, int]]:
    items = []
    for _ in range(draw(st.integers(0, 40))):
        if draw(st.integers(0, 2)):
            items.append((TX, draw(st.integers(0, 10**6)), 0))
        else:
            items.append((CUT, draw(st.integers(0, 6)), draw(st.integers(0, 5000))))
    return items


@settings(max_examples=60, deadline=None)
@given(spec=logs())
def test_any_follower_resuming_anywhere_derives_the_same_blocks(
    consortium: Consortium, spec: list[tuple[str, int, int]]
) -> None:
    log = [(TX, str(v).encode()) if kind == TX else (CUT, cut(consortium, v, t)) for kind, v, t in spec]
    blocks = derive(log)
    assert derive(log) == blocks  # deterministic
    seen = [tx for b in blocks for tx in b.txs]
    assert seen == [d for k, d in log if k == TX][: len(seen)]  # every transaction once, in stream order
    for k, b in enumerate(blocks):
        resumed = derive(log, start=b.resume_seq, height=b.height + 1, after_cut=b.cut_seq, last_time_ms=b.time_ms)
        assert resumed == blocks[k + 1 :]


def test_cluster_orders_through_the_loss_of_one_server(tmp_path: Path, consortium: Consortium) -> None:
    with NatsCluster(tmp_path, 3) as cluster:
        asyncio.run(_cluster_run(cluster, consortium))


async def _connect(urls: list[str]) -> nats.NATS:
    return await nats.connect(servers=urls, max_reconnect_attempts=-1, reconnect_time_wait=0.2, connect_timeout=2)


async def _cluster_run(cluster: NatsCluster, consortium: Consortium) -> None:
    deadline = time.monotonic() + 60
    nc = await _connect(cluster.urls)
    js = nc.jetstream()
    while True:  # the cluster elects its JetStream meta leader after start
        try:
            await ensure_stream(js, CHAIN, replicas_for(3))
            break
        except Exception:
            assert time.monotonic() < deadline, "JetStream cluster never became ready"
            await asyncio.sleep(0.2)

    stop = asyncio.Event()
    # Orderers cut at 20 pending while blocks hold up to 50: they must still count blocks as the peers do.
    policy = CutPolicy(block_txs_max=20, block_wait_ms=20)
    orderers = []
    for org in ("org1", "org2"):
        onc = await _connect(cluster.urls)
        o = Orderer(
            onc.jetstream(),
            CHAIN,
            consortium.org(org).signer("orderer0"),
            next_height=1,
            start_seq=1,
            policy=policy,
            now_ms=lambda: time.time() * 1000,
            derive_txs_max=50,
        )
        orderers.append((onc, o, asyncio.create_task(o.run(stop))))

    followers: list[list[DerivedBlock]] = [[], []]
    subs = []
    for k in range(2):
        fnc = await _connect(cluster.urls)
        d = BlockDeriver(CHAIN, 1, block_txs_max=50)

        def on(m: StreamMessage, d: BlockDeriver = d, out: list[DerivedBlock] = followers[k]) -> None:
            b = d.feed(m.seq, m.kind, m.data, server_ms=m.server_ms)
            if b is not None:
                out.append(b)

        subs.append((fnc, await subscribe_from(fnc.jetstream(), CHAIN, 1, on)))

    acked: list[bytes] = []
    victim = cluster.nodes[2]
    for i in range(600):
        raw = f"tx-{i}".encode()
        while True:
            try:
                await publish_tx(js, CHAIN, raw, f"id-{i}", timeout_s=2)
                acked.append(raw)
                break
            except Exception:  # the connected server died or the stream leader moved: publish again
                assert time.monotonic() < deadline + 60
                await asyncio.sleep(0.1)
        if i == 250:
            os.kill(victim.proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
            victim.proc.wait()  # type: ignore[union-attr]
            victim.proc = None
        if i == 300:  # the same transaction again (a client retrying through another server): stored once
            await publish_tx(js, CHAIN, b"tx-3", "id-3")

    end = time.monotonic() + 60
    while time.monotonic() < end:
        if all(sum(len(b.txs) for b in f) == len(acked) for f in followers):
            break
        await asyncio.sleep(0.1)
    stop.set()
    for onc, _, task in orderers:
        await task
        await onc.close()
    for fnc, sub in subs:
        await sub.unsubscribe()
        await fnc.close()
    await nc.close()

    assert followers[0] == followers[1]
    txs = [tx for b in followers[0] for tx in b.txs]
    assert txs == acked  # each acknowledged transaction exactly once, in publish order
    assert [b.height for b in followers[0]] == list(range(1, len(followers[0]) + 1))
    assert all(len(b.txs) <= 50 for b in followers[0])
    assert sum(o.cuts_published for _, o, _ in orderers) >= len(followers[0])
