"""A hostile member with its own connection to the consortium's JetStream cluster (real nats-servers on
loopback) publishes straight into the chain's streams, past every node's admission: forged copies, poison
messages, attestations under certificates that do not count, cuts that move time. Every honest peer must
refuse each one, keep committing, and agree with the others byte for byte."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from liangcao import encoding
from liangcao.codes import Code
from liangcao.crypto import keys
from liangcao.ledger import block as blk
from liangcao.ledger import tx as txm
from liangcao.node.genesis import Consortium, create_consortium, make_org
from liangcao.node.link import JetStreamLink
from liangcao.node.node import Node, NodeSettings
from liangcao.ordering.jetstream import CutMarker, publish_cut
from liangcao.ordering.natsserver import NatsCluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    with NatsCluster(tmp_path_factory.mktemp("nats"), 3) as c:
        yield c


@pytest.fixture
def net() -> Consortium:
    return create_consortium(3, chain_id=f"hostile-{time.time_ns()}", now_ms=int(time.time() * 1000))


def make_node(c: Consortium, org: str, root: Path, urls: list[str], wait_ms: int = 20) -> Node:
    return Node(
        root / f"{org}.sqlite",
        c.genesis,
        orderer=c.org(org).signer("orderer0"),
        peer=c.org(org).signer("peer0"),
        settings=NodeSettings(block_txs_max=200, block_wait_ms=wait_ms, verify_workers=1),
        link=JetStreamLink(urls, c.chain_id, 3),
    )


def wait_for(cond: Any, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


class Network:
    def __init__(self, c: Consortium, root: Path, urls: list[str], wait_ms: int = 20) -> None:
        self.c = c
        self.nodes = [make_node(c, org, root, urls, wait_ms) for org in ("org1", "org2", "org3")]
        for n in self.nodes:
            n.start()
        # the attacker: a member organisation's own client connection to the cluster
        self.evil = JetStreamLink(urls, c.chain_id, 3)

    def tx(self, method: str, args: dict[str, Any], *signers: txm.Signer, contract: str = "demo.wallet") -> txm.Tx:
        return txm.build(
            self.c.chain_id, contract, method, args, list(signers), not_after=int(time.time() * 1000) + 600_000
        )

    def code_everywhere(self, raw: bytes) -> int:
        """Wait until every node committed this envelope; its code (the same on every node)."""
        try:
            tx_id = txm.parse(raw).tx_id
        except Exception:
            tx_id = encoding.sha256_hex(raw)  # what the executor records for bytes that are not a transaction
        codes: set[int] = set()

        def seen() -> bool:
            codes.clear()
            for n in self.nodes:
                for h in range(1, n.head.height + 1):
                    raws = n.reader().block_txs(h)
                    if raw in raws:
                        r: Any = encoding.decode(n.reader().receipts(h)[raws.index(raw)])
                        assert r["tx_id"] == tx_id
                        codes.add(r["code"])
                        break
                else:
                    return False
            return True

        wait_for(seen)
        assert len(codes) == 1, codes
        return codes.pop()

    def agree(self) -> None:
        wait_for(lambda: len({n.head.hash for n in self.nodes}) == 1 and not any(n.failed for n in self.nodes))
        assert len({n.head.state_hash for n in self.nodes}) == 1

    def close(self) -> None:
        self.evil.close()
        for n in self.nodes:
            n.stop()


@pytest.fixture
def network(tmp_path: Path, cluster: NatsCluster, net: Consortium) -> Iterator[Network]:
    w = Network(net, tmp_path, cluster.urls)
    yield w
    w.close()


def test_a_forged_copy_in_the_stream_does_not_borrow_the_genuine_verdict(network: Network) -> None:
    c = network.c
    org4 = make_org("org4", "insurer")
    genuine = network.tx("add_org", org4.org_args(), c.org("org1").signer("admin"), contract="consortium")
    env: Any = encoding.decode(genuine.raw)
    env["signatures"].append({"cert": keys.b64(c.org("org2").signer("admin").cert), "sig": keys.b64(b"\x01" * 64)})
    forged = encoding.canonical(env)
    forged_id = encoding.sha256_hex(forged)
    network.evil.publish_tx(forged, forged_id)  # first, straight into the stream
    network.evil.publish_tx(genuine.raw, genuine.envelope_id)
    assert network.code_everywhere(genuine.raw) == Code.QUORUM_NOT_MET  # one admin's vote, not two
    network.agree()
    for n in network.nodes:  # the forged copy was dropped by its signatures: it is in no block
        assert all(forged not in n.reader().block_txs(h) for h in range(1, n.head.height + 1))
    for n in network.nodes:
        assert [o.org_id for o in n._cut_config().orgs.values()] == ["org1", "org2", "org3"]
        for h in range(1, n.head.height + 1):  # no block carries two envelopes of one tx id
            ids = [txm.parse(r).tx_id for r in n.reader().block_txs(h)]
            assert len(ids) == len(set(ids))


def test_poison_messages_are_skipped_and_never_halt_a_peer(
    tmp_path: Path, network: Network, cluster: NatsCluster
) -> None:
    c = network.c
    deep = b"[" * 3000 + b"]" * 3000
    network.evil.publish_tx(deep, "deep")
    network.evil.publish_tx(b"\xff\xfe not json", "junk")
    head = network.nodes[0].head
    peer = c.org("org2").signer("peer0")
    good = blk.make_attestation(peer.key, peer.cert, c.chain_id, head.height, head.hash, head.state_hash)
    for bad in (
        {**good, "height": str(head.height)},  # a string height
        {**good, "height": -1},
        {**good, "block_hash": "zz"},
    ):
        network.evil.publish_attestation(encoding.canonical(bad))
    network.evil.publish_attestation(b"[" * 3000 + b"]" * 3000)
    network.evil.publish_attestation(b"{}")
    t = network.tx("mint", {"to": "org1/alice", "amount": 7}, c.org("org1").signer("admin"))
    network.nodes[1].submit(t.raw)
    assert network.code_everywhere(deep) == Code.VALUE_TOO_DEEP  # recorded, like any malformed transaction
    assert network.code_everywhere(t.raw) == Code.OK
    network.agree()
    wait_for(lambda: all(n.poison_messages >= 5 for n in network.nodes))
    # a peer that restarts reads the same messages again and does not die on them either
    network.nodes[2].stop()
    network.nodes[2] = make_node(c, "org3", tmp_path, cluster.urls)
    network.nodes[2].start()
    t2 = network.tx("mint", {"to": "org1/alice", "amount": 8}, c.org("org1").signer("admin"))
    network.nodes[0].submit(t2.raw)
    assert network.code_everywhere(t2.raw) == Code.OK
    network.agree()


def test_attestations_count_only_from_current_peers_of_members(network: Network) -> None:
    c = network.c
    t = network.tx("mint", {"to": "org1/alice", "amount": 1}, c.org("org1").signer("admin"))
    network.nodes[0].submit(t.raw)
    network.code_everywhere(t.raw)
    network.agree()
    height = network.nodes[0].head.height
    wrong = "ab" * 32
    fake_org2 = make_org("org2", c.org("org2").org_type).signer("peer0")  # self-signed, names org2
    stranger = make_org("org9", "bank").signer("peer0")
    not_a_peer = c.org("org2").signer("alice")  # a real member, but not a peer
    for s in (fake_org2, stranger, not_a_peer):
        att = blk.make_attestation(s.key, s.cert, c.chain_id, height, wrong, wrong)
        network.evil.publish_attestation(encoding.canonical(att))
    # the same outsiders agreeing with the chain do not make anything final either
    org1_head = network.nodes[0].reader().header(height)
    assert org1_head is not None
    for s in (fake_org2, stranger):
        att = blk.make_attestation(s.key, s.cert, c.chain_id, height, org1_head.hash, org1_head.state_hash)
        network.evil.publish_attestation(encoding.canonical(att))
    t2 = network.tx("mint", {"to": "org1/alice", "amount": 2}, c.org("org1").signer("admin"))
    network.nodes[0].submit(t2.raw)
    network.code_everywhere(t2.raw)
    time.sleep(1.0)  # the attestations above were delivered before the block that follows them
    for n in network.nodes:
        assert n.fork_alarms == []
        members = {encoding.decode(a)["cert"] for a in n.reader().attestations(height)}  # type: ignore[index]
        assert keys.b64(fake_org2.cert) not in members and keys.b64(stranger.cert) not in members
    # the real org2 peer saying something else is a fork alarm (the positive control)
    real = c.org("org2").signer("peer0")
    network.evil.publish_attestation(
        encoding.canonical(blk.make_attestation(real.key, real.cert, c.chain_id, height, wrong, wrong))
    )
    wait_for(lambda: all(n.fork_alarms for n in (network.nodes[0], network.nodes[2])))


def test_an_orderer_cannot_move_chain_time(tmp_path: Path, cluster: NatsCluster, net: Consortium) -> None:
    w = Network(net, tmp_path, cluster.urls, wait_ms=2500)  # honest orderers wait 2.5 s before they cut
    try:
        t = w.tx("mint", {"to": "org1/alice", "amount": 1}, net.org("org1").signer("admin"))
        w.evil.publish_tx(t.raw, t.envelope_id)
        o = net.org("org2").signer("orderer0")  # a genuine orderer key of a member organisation
        ahead = int(time.time() * 1000) + 400 * 86_400_000
        marker = CutMarker.make(net.chain_id, w.nodes[0].head.height + 1, ahead, o.member_id, o.key, o.cert)
        w.evil._call(publish_cut(w.evil.js, marker))
        assert w.code_everywhere(t.raw) == Code.OK
        w.agree()
        for n in w.nodes:
            assert abs(n.head.time_ms - time.time() * 1000) < 60_000
            assert not n.clock_alarm
    finally:
        w.close()
