"""Several organisations, each with its own node and store, ordering through one JetStream cluster of
Debian's nats-server on loopback: the same blocks and state everywhere, attestations and finality, a fork
alarm, restart and catch-up from the stream."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from liangcao.ledger import tx as txm
from liangcao.node.genesis import Consortium, create_consortium
from liangcao.node.link import JetStreamLink
from liangcao.node.node import Node, NodeSettings
from liangcao.ordering.natsserver import NatsCluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    with NatsCluster(tmp_path_factory.mktemp("nats"), 3) as c:
        yield c


@pytest.fixture
def net() -> Consortium:
    # A chain of its own per test: the stream (and so the log) is per chain id.
    return create_consortium(3, chain_id=f"net-{time.time_ns()}", now_ms=int(time.time() * 1000))


def make_node(c: Consortium, org: str, root: Path, urls: list[str]) -> Node:
    link = JetStreamLink(urls, c.chain_id, 3)
    return Node(
        root / f"{org}.sqlite",
        c.genesis,
        orderer=c.org(org).signer("orderer0"),
        peer=c.org(org).signer("peer0"),
        settings=NodeSettings(block_txs_max=200, block_wait_ms=20, verify_workers=1),
        link=link,
    )


def mint(c: Consortium, n: int, start: int = 0) -> list[txm.Tx]:
    admin = c.org("org1").signer("admin")
    not_after = int(time.time() * 1000) + 600_000
    return [
        txm.build(
            c.chain_id, "demo.wallet", "mint", {"to": "org1/alice", "amount": 1 + i}, [admin], not_after=not_after
        )
        for i in range(start, start + n)
    ]


def wait_for(cond: object, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def test_three_organisations_same_blocks_and_finality(tmp_path: Path, cluster: NatsCluster, net: Consortium) -> None:
    nodes = [make_node(net, org, tmp_path, cluster.urls) for org in ("org1", "org2", "org3")]
    for n in nodes:
        n.start()
    try:
        txs = mint(net, 300)
        for k, t in enumerate(txs):
            nodes[k % 3].submit(t.raw)  # clients reach every organisation's node
        nodes[0].submit(txs[0].raw)  # a retry through another node: ordered once
        wait_for(lambda: all(n.reader().tx_seen(t.tx_id) for n in nodes for t in txs[-5:]))
        wait_for(lambda: len({n.head.hash for n in nodes}) == 1)
        heads = [n.head for n in nodes]
        assert len({h.state_hash for h in heads}) == 1
        for t in txs:
            assert nodes[1].reader().tx_position(t.tx_id) == nodes[2].reader().tx_position(t.tx_id)
        # Every block is attested by all three organisations in every store: final by any quorum.
        top = heads[0].height
        wait_for(lambda: all(len(n.reader().attestations(top)) == 3 for n in nodes))
        assert all(not n.fork_alarms for n in nodes)
    finally:
        for n in nodes:
            n.stop()


def test_restart_and_an_empty_store_catch_up_from_the_stream(
    tmp_path: Path, cluster: NatsCluster, net: Consortium
) -> None:
    a = make_node(net, "org1", tmp_path, cluster.urls)
    b = make_node(net, "org2", tmp_path, cluster.urls)
    a.start()
    b.start()
    try:
        first = mint(net, 100)
        for t in first:
            a.submit(t.raw)
        wait_for(lambda: b.reader().tx_seen(first[-1].tx_id))
        b.stop()  # org2's node goes away while the chain moves on
        more = mint(net, 100, start=100)
        for t in more:
            a.submit(t.raw)
        wait_for(lambda: a.reader().tx_seen(more[-1].tx_id))
        b = make_node(net, "org2", tmp_path, cluster.urls)  # same store: resumes where it stopped
        b.start()
        c = make_node(net, "org3", tmp_path, cluster.urls)  # empty store: everything from the stream alone
        c.start()
        try:
            wait_for(lambda: b.head.hash == a.head.hash == c.head.hash)
            assert b.head.state_hash == a.head.state_hash == c.head.state_hash
        finally:
            c.stop()
    finally:
        a.stop()
        b.stop()


def test_a_peer_attesting_another_state_raises_a_fork_alarm(
    tmp_path: Path, cluster: NatsCluster, net: Consortium
) -> None:
    import httpx

    from liangcao.api.server import Server
    from liangcao.encoding import canonical
    from liangcao.ledger import block as blk
    from liangcao.procs import free_port
    from liangcao.tokens import TokenAuth, new_secret

    a = make_node(net, "org1", tmp_path, cluster.urls)
    b = make_node(net, "org2", tmp_path, cluster.urls)
    auth = TokenAuth(new_secret(tmp_path / "secret"))
    port = free_port(0)
    server = Server(a, auth, "127.0.0.1", port)
    thread = server.start_in_thread()  # starts node a
    b.start()
    try:
        txs = mint(net, 20)
        for t in txs:
            a.submit(t.raw)
        wait_for(lambda: b.head.hash == a.head.hash and b.reader().tx_seen(txs[-1].tx_id))
        head = a.head
        url = f"http://127.0.0.1:{port}"
        token = auth.create("org1/admin")
        wait_for(
            lambda: httpx.get(f"{url}/v1/txs/{txs[0].tx_id}", headers={"Authorization": f"Bearer {token}"}).json()[
                "finality"
            ]["final"]
        )
        # org3's peer (a real key of the consortium) signs a different state for a height both hold.
        liar = net.org("org3").signer("peer0")
        att = blk.make_attestation(liar.key, liar.cert, net.chain_id, head.height, head.hash, "ab" * 32)
        assert a.link is not None
        a.link.publish_attestation(canonical(att))
        wait_for(lambda: bool(a.fork_alarms and b.fork_alarms))
        assert a.fork_alarms[0]["member"] == "org3/peer0" and a.fork_alarms[0]["height"] == head.height
        health = httpx.get(f"{url}/v1/health").json()
        assert health["status"] == "fork" and health["ordering"] == "jetstream"
        r = httpx.get(f"{url}/v1/txs/{txs[0].tx_id}", headers={"Authorization": f"Bearer {token}"}).json()
        assert r["finality"]["fork_alarm"] is True and r["finality"]["final"] is False
        assert "liangcao_fork_alarms 1.0" in httpx.get(f"{url}/metrics").text
    finally:
        server.stop_thread(thread)
        b.stop()
