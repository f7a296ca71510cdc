"""Three organisations over real nats-servers (JetStream ordering, core NATS for private data): org1 (a bank)
and org2 (a supplier) share private data that org3 (the core enterprise) never receives, byte for byte in
its files, while its state hash equals theirs at every height; a member that lost its private store recovers
it from its peers (refusing by hash the forged values a corrupted peer serves first) and audits clean; a
non-member cannot pull a value; private SCF terms endorsed by both."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from liangcao import encoding
from liangcao.apps.bundle import default_registry
from liangcao.apps.scf.private import terms
from liangcao.contracts import private as pv
from liangcao.contracts.runtime import ContractRuntime
from liangcao.ledger import tx as txm
from liangcao.node.audit import audit
from liangcao.node.genesis import Consortium, create_consortium
from liangcao.node.link import JetStreamLink
from liangcao.node.node import Node, NodeSettings
from liangcao.node.private import PrivateData, close_private, private_of, private_path
from liangcao.ordering.natsserver import NatsCluster

ORGS = ("org1", "org2", "org3")
TYPES = ["bank", "supplier", "core_enterprise"]
MARK = "SECRET-TERMS-"  # every private value carries it: its bytes must never reach org3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    with NatsCluster(tmp_path_factory.mktemp("nats"), 3) as c:
        yield c


@pytest.fixture
def net() -> Consortium:
    return create_consortium(3, org_types=TYPES, chain_id=f"pvt-{time.time_ns()}", now_ms=int(time.time() * 1000))


@pytest.fixture
def nodes(tmp_path: Path, cluster: NatsCluster, net: Consortium) -> Iterator[dict[str, Node]]:
    out: dict[str, Node] = {}
    try:
        for i, org in enumerate(ORGS):
            link = JetStreamLink([cluster.urls[i]], net.chain_id, 3)  # each organisation on its own server
            out[org] = Node(
                tmp_path / f"{org}.sqlite",
                net.genesis,
                orderer=net.org(org).signer("orderer0"),
                peer=net.org(org).signer("peer0"),
                settings=NodeSettings(block_txs_max=200, block_wait_ms=20, verify_workers=1),
                link=link,
            )
            private_of(out[org])
            out[org].start()
        yield out
    finally:
        for n in out.values():
            close_private(n)
            n.stop()


def wait_for(cond: Any, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def build(net: Consortium, contract: str, method: str, args: dict[str, Any], *who: str) -> txm.Tx:
    signers = [net.org(w.split("/")[0]).signer(w.split("/")[1] if "/" in w else "admin") for w in who]
    return txm.build(net.chain_id, contract, method, args, signers, not_after=int(time.time() * 1000) + 120_000)


def run(nodes: dict[str, Node], tx: txm.Tx, via: str = "org1") -> None:
    nodes[via].submit(tx.raw)
    wait_for(lambda: all(n.position(tx.tx_id) is not None for n in nodes.values()))
    _, _, code = nodes[via].position(tx.tx_id) or (0, 0, -1)
    assert code == 0, (tx.contract, tx.method, code)


def same_chain(nodes: dict[str, Node]) -> int:
    wait_for(lambda: len({n.head.height for n in nodes.values()}) == 1)
    top = nodes["org1"].head.height
    for h in range(top + 1):
        hashes = {org: n.ledger.store.header(h) for org, n in nodes.items()}
        assert len({(x.hash, x.state_hash) for x in hashes.values() if x is not None}) == 1, f"height {h}"
    return top


def put_private(net: Consortium, pd: PrivateData, key: str, n: int) -> tuple[dict[str, Any], bytes, txm.Tx]:
    value = {"note": f"{MARK}{n}", "unit_fen": 10_000 + n}
    salt = pv.new_salt()
    h = pd.hand("pdc", "bilateral", key, value, salt, ["org1", "org2"])["hash"]
    args = {"private": {"collection": "bilateral", "key": key, "hash": h}, "members": ["org1", "org2"]}
    return value, salt, build(net, "pdc", "put", args, "org1")


def test_org3_never_receives_private_data_yet_agrees_on_state(
    nodes: dict[str, Node], net: Consortium, tmp_path: Path, cluster: NatsCluster
) -> None:
    pds = {org: private_of(n) for org, n in nodes.items()}
    secrets: list[tuple[str, dict[str, Any], bytes]] = []
    for n in range(12):  # handed to org1's node only: org2 gets each value from org1, peer to peer
        value, salt, tx = put_private(net, pds["org1"], f"k{n}", n)
        run(nodes, tx)
        secrets.append((f"k{n}", value, salt))
    # SCF: org3 issues a voucher to org2, org2 finances it at org1 on private terms endorsed by both
    inv = build(net, "scf.invoices", "register", {"code": "3100", "number": "9", "seller": "org2", "buyer": "org3",
                "amount": 80_000_000, "date": _iso(0), "doc_hash": "cd" * 32}, "org2")  # fmt: skip
    run(nodes, inv)
    invoice_key = "org2:3100-9"
    issue = {
        "to": "org2",
        "face": 80_000_000,
        "maturity": _iso(90),
        "invoices": [invoice_key],
        "settlement_bank": "org1",
    }
    itx = build(net, "scf.vouchers", "issue", issue, "org3")
    run(nodes, itx, "org3")
    vid = _result(nodes["org3"], itx)["voucher"]
    run(nodes, build(net, "scf.vouchers", "accept", {"voucher": vid}, "org2"), "org2")
    value, salt = terms(vid, "org1", 80_000_000, 535, 89), pv.new_salt()
    args: dict[str, Any] = {"voucher": vid, "bank": "org1", "face": 80_000_000, "endorsements": [],
                            "private": {"collection": "financing", "key": vid, "hash": pv.commitment_hash(salt, value)}}  # fmt: skip
    with pytest.raises(Exception) as info:  # org3's node is no member: it neither endorses nor holds the terms
        pds["org3"].endorse("scf.private", "finance", args, value, salt, ["org1", "org2"])
    assert getattr(info.value, "code", None) == pv.PrivacyCode.NOT_MEMBER
    args["endorsements"] = [
        pds[o].endorse("scf.private", "finance", args, value, salt, ["org1", "org2"]) for o in ("org2", "org1")
    ]
    run(nodes, build(net, "scf.private", "finance", args, "org2", "org1"), "org2")
    secrets.append((vid, value, salt))
    top = same_chain(nodes)
    assert top >= 15
    wait_for(lambda: pds["org2"].status()["values"] == 13 and pds["org1"].status()["values"] == 13)
    for k, v, s in secrets[:-1]:
        for org in ("org1", "org2"):
            got = pds[org].read(f"{org}/alice", "pdc", "bilateral", k)
            assert got["value"] == v and got["salt"] == s.hex()
    assert pds["org2"].received >= 12  # the pdc values reached org2 from org1, over NATS
    assert pds["org1"].read("org1/a", "scf.private", "financing", vid)["value"] == value
    assert pds["org1"].alarms == [] and pds["org2"].alarms == []
    # org3: the hash and the members, never the value; nothing in its private store
    seen = pds["org3"].read("org3/carol", "pdc", "bilateral", "k0")
    assert seen["value"] is None and seen["members"] == ["org1", "org2"]
    assert pds["org3"].status()["rows"] == 0
    # a non-member's peer asking a member for a value is refused
    record = pds["org3"].commitment("pdc", "bilateral", "k0")
    assert record is not None and pds["org3"].fetch("pdc", record) is False
    # byte by byte: org3's store files and its nats-server's files hold no cleartext and no salt
    files = [f for f in tmp_path.glob("org3*") if f.is_file()]
    files += [f for f in cluster.nodes[2].dir.rglob("*") if f.is_file()]
    assert any(f.name.startswith("org3.sqlite") for f in files)
    needles = [MARK.encode()] + [s for _, _, s in secrets] + [s.hex().encode() for _, _, s in secrets]
    for f in files:
        data = f.read_bytes()
        assert not [n for n in needles if n in data], f"{f} holds private bytes"
    # the same search finds them where they belong (org2's private store): the check can fail
    theirs = b"".join(f.read_bytes() for f in tmp_path.glob("org2.private.sqlite*") if f.is_file())
    assert MARK.encode() in theirs and secrets[0][2] in theirs
    # the rate is not in org3's ledger (as a JSON value) either
    assert b'"rate_bps":535' not in b"".join(f.read_bytes() for f in tmp_path.glob("org3*") if f.is_file())


def test_a_member_that_lost_its_private_store_recovers_from_peers(
    nodes: dict[str, Node], net: Consortium, tmp_path: Path
) -> None:
    pds = {org: private_of(n) for org, n in nodes.items()}
    handed = []
    for n in range(8):
        value, _salt, tx = put_private(net, pds["org1"], f"r{n}", n)
        run(nodes, tx)
        handed.append((f"r{n}", value))
    wait_for(lambda: pds["org2"].status()["values"] == 8)
    same_chain(nodes)
    close_private(nodes["org2"])  # org2 loses its private store
    for f in nodes["org2"].store_path.parent.glob("org2.private.sqlite*"):
        f.unlink()
    # org1's peer first serves a corrupted store: forged values (and salts) under the right hashes, signed and
    # sealed like honest answers. org2 refuses every one of them by hash.
    close_private(nodes["org1"])
    rogue = PrivateData(nodes["org1"], tmp_path / "forged.private.sqlite")
    try:
        for k, v in handed:
            record = rogue.commitment("pdc", "bilateral", k)
            assert record is not None
            with sqlite3.connect(rogue.store.path) as db:
                db.execute(
                    "INSERT INTO pvt VALUES (?,?,?,?,?,?,?,?,?)",
                    ("pdc", "bilateral", k, record["hash"], encoding.canonical({**v, "unit_fen": 1}),
                     pv.new_salt(), record["height"], record["tx"], 0),
                )  # fmt: skip
        fresh = private_of(nodes["org2"])
        wait_for(lambda: fresh.refused >= 8)
        assert fresh.status()["values"] == 0 and fresh.missing() == 8
    finally:
        rogue.close()
    private_of(nodes["org1"])  # the honest store again: org2's retries now succeed
    wait_for(lambda: fresh.status()["values"] == 8 and fresh.missing() == 0)
    for k, v in handed:
        assert fresh.read("org2/bob", "pdc", "bilateral", k)["value"] == v
    assert fresh.audit() == [] and fresh.alarms == []
    report = audit(nodes["org2"].ledger.store.path, lambda: ContractRuntime(default_registry()))
    assert report.ok, report
    assert private_path(nodes["org2"].store_path).exists()


def _iso(days: int) -> str:
    import datetime as dt

    return (dt.date.today() + dt.timedelta(days=days)).isoformat()


def _result(node: Node, tx: txm.Tx) -> Any:
    pos = node.ledger.store.tx_position(tx.tx_id)
    assert pos is not None
    return encoding.decode(node.ledger.store.receipts(pos[0])[pos[1]])["result"]  # type: ignore[index]
