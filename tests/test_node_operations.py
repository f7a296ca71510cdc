"""What an operator relies on, in process (an in-memory ordering log; fast): health that tells the truth,
attestations chased until final, an unknown outcome never reported as a refusal, a store altered while
stopped refused, fork alarms bounded, cleared by the operator and not raised again by the same evidence."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from liangcao import encoding, limits
from liangcao.codes import Code
from liangcao.errors import LiangcaoError
from liangcao.ledger import block as blk
from liangcao.ledger import tx as txm
from liangcao.node.genesis import Consortium, create_consortium
from liangcao.node.node import ATT_REPAIR_AFTER_MS, Node, NodeSettings
from liangcao.ordering.jetstream import CutMarker
from liangcao.ordering.memory import LinkStatus, MemoryLink, MemoryLog, PublishUnknown
from liangcao.tokens import WRITE, TokenAuth, new_secret


class Clock:
    def __init__(self) -> None:
        self.t = int(time.time() * 1000)

    def now_ms(self) -> int:
        return self.t


class Net:
    """Three organisations' peers over one in-memory log; nothing runs unless the test steps it."""

    def __init__(self, root: Path, **settings: Any) -> None:
        self.root = root
        self.c: Consortium = create_consortium(3, chain_id=f"ops-{time.time_ns()}", now_ms=int(time.time() * 1000))
        self.clock = Clock()
        self.log = MemoryLog(self.clock.now_ms)
        self.settings = NodeSettings(block_txs_max=50, block_wait_ms=0, verify_workers=1, **settings)
        self.nodes = {org: self.start(org) for org in ("org1", "org2", "org3")}
        self.n = 0

    def start(self, org: str, link: MemoryLink | None = None) -> Node:
        o = self.c.org(org)
        node = Node(
            self.root / f"{org}.sqlite",
            self.c.genesis,
            orderer=o.signer("orderer0"),
            peer=o.signer("peer0"),
            settings=self.settings,
            link=link or MemoryLink(self.log),
        )
        node.clock = self.clock  # type: ignore[assignment]
        node.follow()
        return node

    def link(self, org: str) -> MemoryLink:
        link = self.nodes[org].link
        assert isinstance(link, MemoryLink)
        return link

    def mint(self, k: int = 3) -> list[txm.Tx]:
        admin = self.c.org("org1").signer("admin")
        txs = []
        for _ in range(k):
            self.n += 1
            txs.append(
                txm.build(
                    self.c.chain_id, "demo.wallet", "mint", {"to": "org1/alice", "amount": self.n}, [admin],
                    not_after=self.clock.t + 600_000,
                )
            )  # fmt: skip
        self.nodes["org1"].submit_many([t.raw for t in txs])
        return txs

    def block(self) -> None:
        """Cut what is pending as the next block, and let every peer commit it (no attestation delivered)."""
        height = self.nodes["org1"]._order_position()[0]
        o = self.c.org("org1").signer("orderer0")
        self.log.cut(CutMarker.make(self.c.chain_id, height, self.clock.t, o.member_id, o.key, o.cert))
        for org in self.nodes:
            self.run(org)

    def run(self, org: str) -> None:
        self.link(org).pump()
        self.link(org).deliver(10**6)
        while self.nodes[org].step():
            pass

    def close(self) -> None:
        for n in self.nodes.values():
            n.stop(timeout_s=1)


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    n = Net(tmp_path)
    try:
        yield n
    finally:
        n.close()


def test_missing_attestations_are_fetched_and_ours_re_announced(net: Net) -> None:
    for _ in range(3):
        net.mint()
        net.block()
    a = net.nodes["org1"]
    assert a.head.height == 3 and a.finality.final_upto == 0  # nobody's attestation delivered yet
    net.run("org1")
    assert net.link("org1").fetches == 0  # not before ATT_REPAIR_AFTER_MS
    net.clock.t += ATT_REPAIR_AFTER_MS + 1
    net.run("org1")  # fetches what the log holds for the non-final heights...
    net.run("org1")  # ...and takes them
    assert net.link("org1").fetches == 1 and a.finality.final_upto == 3
    view = a.condition()["finality_status"]
    assert view["nonfinal_blocks"] == 0 and view["oldest_nonfinal_height"] is None


def test_attestations_the_log_did_not_take_are_retried(net: Net) -> None:
    net.log.attestations_down = True  # the attestation stream elects a leader
    net.mint()
    net.block()
    assert net.log.attestations == [] and all(net.link(o).outbox for o in net.nodes)
    assert net.nodes["org1"].condition()["finality_status"]["attestations_unacked"] == 1
    net.log.attestations_down = False
    for org in net.nodes:
        net.run(org)  # the link retries its outbox
    assert len(net.log.attestations) == 3 and not any(net.link(o).outbox for o in net.nodes)


def test_a_restarted_peer_re_announces_its_recent_attestations(net: Net) -> None:
    net.log.attestations_down = True
    net.mint()
    net.block()
    net.nodes["org2"].stop(timeout_s=1)  # killed with its outbox: the attestation never reached the log
    net.log.attestations_down = False
    net.nodes["org2"] = net.start("org2")
    atts = [encoding.decode(a) for a in net.log.attestations]
    assert any(blk.check_attestation(a) == "org2/peer0" and a["height"] == 1 for a in atts)  # type: ignore[arg-type]


def test_health_says_degraded_and_why(tmp_path: Path) -> None:
    net = Net(tmp_path, lag_blocks_max=2, lag_messages_max=5, nonfinal_age_ms_max=10_000)
    try:
        for _ in range(4):
            net.mint()
            net.block()
        a = net.nodes["org1"]
        assert a.condition()["status"] == "ok"
        # org3 is stopped; org1 and org2 go on: org3, restarted, is far behind and knows it from attestations
        net.nodes["org3"].stop(timeout_s=1)
        del net.nodes["org3"]
        for _ in range(4):
            net.mint()
            net.block()
        late = net.start("org3", MemoryLink(net.log))
        late.link.cursor = 10**9  # type: ignore[union-attr]  # it takes nothing from the stream yet
        for att in net.log.attestations:
            late.link.deliver_attestation(att)  # type: ignore[union-attr]
        late.step()
        cond = late.condition()
        assert cond["status"] == "degraded" and cond["lag"]["blocks"] == 4 and cond["lag"]["messages"] > 5
        assert any("blocks behind the network" in p for p in cond["problems"])
        assert any("stream messages behind" in p for p in cond["problems"])
        late.stop(timeout_s=1)
        # a block not final for longer than nonfinal_age_ms_max (the ones before are final)
        for att in net.log.attestations:
            net.link("org1").deliver_attestation(att)
        net.run("org1")
        assert a.finality.final_upto == 8
        net.mint()
        net.block()
        net.clock.t += 11_000
        cond = a.condition()
        assert cond["status"] == "degraded" and cond["finality_status"]["oldest_nonfinal_height"] == 9
        assert any("not final after" in p for p in cond["problems"])
    finally:
        net.close()


class Unreachable(MemoryLink):
    def status(self) -> LinkStatus:
        return LinkStatus(connected=False, last_ok_ms=None, stream_last_seq=None, error="connection refused")


class Ambiguous(MemoryLink):
    """The log takes the transaction, but its acknowledgement is lost: the outcome is unknown to the node."""

    def publish_many(self, items: list[tuple[bytes, str]], timeout_s: float = 10.0) -> list[BaseException | None]:
        super().publish_many(items, timeout_s)
        return [PublishUnknown("no acknowledgement in time") for _ in items]


class Served:
    """The node's API on a loopback port, without starting its commit thread (the test steps the node)."""

    def __init__(self, node: Node, tmp_path: Path) -> None:
        import threading

        import uvicorn

        from liangcao.api.app import create_app
        from liangcao.procs import free_port

        self.auth = TokenAuth(new_secret(tmp_path / f"token-{time.time_ns()}.secret"))
        port = free_port(0)
        self.server = uvicorn.Server(
            uvicorn.Config(create_app(node, self.auth), host="127.0.0.1", port=port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)

    def __enter__(self) -> httpx.Client:
        return self.http

    def __exit__(self, *exc: object) -> None:
        self.http.close()
        self.server.should_exit = True
        self.thread.join(10)


def test_an_unreachable_ordering_service_is_reported_and_measured(net: Net, tmp_path: Path) -> None:
    node = net.start("org2", Unreachable(net.log))  # a second org2 node, on its own store
    try:
        with Served(node, tmp_path) as client:
            h = client.get("/v1/health").json()
            assert h["status"] == "degraded" and h["ordering_status"]["reachable"] is False
            assert "ordering service unreachable (not connected)" in h["problems"]
            m = client.get("/metrics").text
            assert "liangcao_ordering_reachable 0.0" in m and "liangcao_degraded 1.0" in m
            assert "liangcao_oldest_nonfinal_age_seconds" in m and "liangcao_stream_lag_messages" in m
    finally:
        node.stop(timeout_s=1)


def test_an_unknown_outcome_is_never_a_refusal(tmp_path: Path) -> None:
    net = Net(tmp_path)
    try:
        net.nodes["org1"].stop(timeout_s=1)
        node = net.nodes["org1"] = net.start("org1", Ambiguous(net.log))
        admin = net.c.org("org1").signer("admin")
        one, two = (
            txm.build(net.c.chain_id, "demo.wallet", "mint", {"to": "org1/bob", "amount": a}, [admin],
                      not_after=net.clock.t + 600_000)
            for a in (1, 2)
        )  # fmt: skip
        with Served(node, tmp_path) as client:
            r = client.post("/v1/txs", content=one.raw, headers={"Content-Type": "application/json"})
            assert r.status_code == 202 and r.json()["status"] == "unknown", r.text
            assert r.json()["code"] == Code.OUTCOME_UNKNOWN and one.tx_id in r.json()["message"]
            b = client.post("/v1/batch/txs", content=b'{"txs":[' + two.raw + b"]}").json()["results"][0]
            assert b["status"] == "unknown" and b["code"] == Code.OUTCOME_UNKNOWN and b["tx_id"] == two.tx_id
        net.block()  # it was in the log after all: committed
        assert node.reader().tx_seen(one.tx_id) and node.reader().tx_seen(two.tx_id)
    finally:
        net.close()


def test_a_store_altered_while_stopped_is_refused(net: Net, tmp_path: Path) -> None:
    net.mint()
    net.block()
    node = net.nodes["org2"]
    node.stop(timeout_s=1)
    db = sqlite3.connect(tmp_path / "org2.sqlite")
    db.execute("UPDATE state SET value=? WHERE key=?", (b"999999999", b"demo.wallet/balance/org1/alice"))
    db.commit()
    db.close()
    with pytest.raises(LiangcaoError) as exc:
        net.nodes["org2"] = net.start("org2")
    assert exc.value.code == Code.BAD_BLOCK and "disagrees with its chain" in exc.value.message
    assert "state @ demo.wallet/balance/org1/alice" in exc.value.message
    # an old write altered (not in the recent blocks): found by the state pass, missed by 'recent' alone
    from liangcao.node.storecheck import check_store

    assert check_store(tmp_path / "org2.sqlite", "state") and check_store(tmp_path / "org2.sqlite", "off") == []
    del net.nodes["org2"]


def test_an_old_altered_write_is_found_by_the_state_pass(net: Net, tmp_path: Path) -> None:
    from liangcao.node.storecheck import check_store

    net.mint()
    net.block()
    for _ in range(5):  # later blocks write other keys
        admin = net.c.org("org2").signer("admin")
        net.n += 1
        t = txm.build(net.c.chain_id, "demo.wallet", "mint", {"to": "org2/bob", "amount": net.n}, [admin],
                      not_after=net.clock.t + 600_000)  # fmt: skip
        net.nodes["org1"].submit_many([t.raw])
        net.block()
    net.nodes["org3"].stop(timeout_s=1)
    del net.nodes["org3"]
    path = tmp_path / "org3.sqlite"
    db = sqlite3.connect(path)
    db.execute("UPDATE state SET value=? WHERE key=?", (b"1", b"demo.wallet/balance/org1/alice"))
    db.commit()
    db.close()
    assert check_store(path, "recent", recent_blocks=3) == []  # last written before the recent blocks
    found = check_store(path, "state", recent_blocks=3)
    assert found == ["state @ demo.wallet/balance/org1/alice: differs from its last write (height 1)"]


def liar(net: Net, height: int) -> bytes:
    s = net.c.org("org3").signer("peer0")
    head = net.nodes["org1"].reader().header(height)
    assert head is not None
    return encoding.canonical(blk.make_attestation(s.key, s.cert, net.c.chain_id, height, head.hash, "ab" * 32))


def test_fork_alarms_are_bounded_cleared_and_stay_cleared(
    net: Net, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "fork_alarms_max", 3)
    for _ in range(5):
        net.mint()
        net.block()
    a = net.nodes["org1"]
    for h in range(1, 6):
        net.link("org1").deliver_attestation(liar(net, h))
    net.run("org1")
    assert len(a.fork_alarms) == 3 and a.fork_alarms_seen == 5  # bounded; counted
    served = Served(a, tmp_path)
    auth = served.auth
    with served as client:
        h = client.get("/v1/health").json()
        assert h["status"] == "fork" and h["fork_alarm_summary"]["count"] == 3
        assert h["fork_alarm_summary"]["members"] == ["org3/peer0"] and h["fork_alarm_summary"]["truncated"]
        read = {"Authorization": f"Bearer {auth.create('org1/admin')}"}
        assert len(client.get("/v1/fork-alarms", headers=read).json()["alarms"]) == 3
        assert client.post("/v1/fork-alarms/clear", headers=read).status_code == 403  # a read token
        other = {"Authorization": f"Bearer {auth.create('org2/admin', scope=WRITE)}"}
        assert client.post("/v1/fork-alarms/clear", headers=other).status_code == 403  # another organisation's
        mine = {"Authorization": f"Bearer {auth.create('org1/admin', scope=WRITE)}"}
        assert client.post("/v1/fork-alarms/clear", headers=mine).json() == {"cleared": 3}
        assert client.get("/v1/health").json()["status"] == "ok"
    # the same evidence read again (a restart reads the attestation stream from the start): not raised again
    a.stop(timeout_s=1)
    a = net.nodes["org1"] = net.start("org1")
    for h in range(1, 4):
        net.link("org1").deliver_attestation(liar(net, h))
    net.run("org1")
    assert a.fork_alarms == []
    # new evidence is
    net.link("org1").deliver_attestation(liar(net, 4))
    net.run("org1")
    assert [x["height"] for x in a.fork_alarms] == [4]


class Recording(MemoryLink):
    def __init__(self, log: MemoryLog) -> None:
        super().__init__(log)
        self.follows: list[int] = []
        self.stops = 0

    def follow_attestations(self, start_seq: int, on_att: Any) -> None:
        self.follows.append(start_seq)
        super().follow_attestations(start_seq, on_att)

    def stop_attestations(self) -> None:
        self.stops += 1


def test_a_peer_far_behind_sets_attestations_aside_and_reads_them_again(
    net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "early_attestation_heights_max", 4)
    net.nodes["org3"].stop(timeout_s=1)
    del net.nodes["org3"]
    for _ in range(12):
        net.mint(1)
        net.block()
    for org in ("org1", "org2"):  # their attestations reach the log
        net.link(org).pump()
    link = Recording(net.log)
    late = net.nodes["org3"] = net.start("org3", link)
    assert link.follows == [1]
    for i, att in enumerate(net.log.attestations):  # what the subscription delivers, in order, with positions
        late._on_attestation(i + 1, att)
    late.step()
    assert link.stops == 1 and late._att_pause is not None  # the first one too far ahead paused the reading
    seq, height = late._att_pause
    assert height > late.head.height + 4 and late.condition()["lag"]["blocks"] >= 8
    net.run("org3")  # it catches up from the stream...
    assert late.head.height == 12
    net.clock.t += 1000
    late.step()
    assert late._att_pause is None and link.follows == [1, seq]  # ...and reads on from where it stopped


def test_junk_heights_neither_pause_the_reading_nor_fake_a_lag(net: Net) -> None:
    net.mint()
    net.block()
    a = net.nodes["org1"]
    peer = net.c.org("org3").signer("peer0")  # a member's genuine peer key, signing the impossible
    head = a.head
    signed = blk.make_attestation(peer.key, peer.cert, net.c.chain_id, 10**12, head.hash, head.state_hash)
    for raw in (encoding.canonical(signed), b'{"height": 1000000000000}'):
        a._on_attestation(5, raw)
    a.step()
    assert a._att_pause is None and a.network_height <= 1 and a.condition()["status"] == "ok"


def test_a_full_attestation_queue_pauses_the_reading_and_resumes_after_the_last_queued(
    net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    from liangcao.node import node as nodemod

    monkeypatch.setattr(nodemod, "ATT_INBOX_MAX", 4)
    for _ in range(3):
        net.mint(1)
        net.block()
    for org in net.nodes:
        net.link(org).pump()
    net.nodes["org3"].stop(timeout_s=1)
    link = Recording(net.log)
    n = net.nodes["org3"] = net.start("org3", link)
    for i, att in enumerate(net.log.attestations):  # the subscription delivers faster than it is taken
        n._on_attestation(i + 1, att)
    assert link.stops == 1 and n._att_inbox.qsize() == 4 and n._att_flow_seq == 4
    net.clock.t += 1000
    n.step()  # takes what was queued, then reads on from the first one it dropped
    assert link.follows == [1, 5] and n._att_flow_seq is None
    for i, att in enumerate(net.log.attestations[4:], start=4):
        n._on_attestation(i + 1, att)
    net.clock.t += 1000
    n.step()
    n.step()
    assert n.finality.final_upto == 3
