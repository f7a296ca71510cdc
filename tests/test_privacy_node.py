"""A node's private data on one (solo) node: hand-over, commit, member and non-member reads, forged values
refused by hash, retention purge, disclosure checked by ``liangcao verify-proof``, recovery scan."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from liangcao.contracts import private as pv
from liangcao.errors import LiangcaoError
from liangcao.ledger import tx as txm
from liangcao.node.genesis import Consortium, create_consortium
from liangcao.node.node import Committed, Node, NodeSettings
from liangcao.node.private import PrivateData, close_private, private_of, private_path


@pytest.fixture
def net() -> Consortium:
    types = ["bank", "supplier", "core_enterprise"]  # org1 (the node) is the bank
    return create_consortium(3, org_types=types, chain_id=f"pvt-{time.time_ns()}", now_ms=int(time.time() * 1000))


@pytest.fixture
def node(tmp_path: Path, net: Consortium) -> Iterator[Node]:
    n = Node(
        tmp_path / "org1.sqlite",
        net.genesis,
        orderer=net.org("org1").signer("orderer0"),
        peer=net.org("org1").signer("peer0"),
        settings=NodeSettings(block_txs_max=100, block_wait_ms=5, verify_workers=1),
    )
    n.start()
    yield n
    close_private(n)
    n.stop()


def commit(node: Node, tx: txm.Tx) -> None:
    """Submit and wait until every listener heard the block (the private data service listens first)."""
    heard = threading.Event()

    def listener(info: Committed) -> None:
        if tx.tx_id in info.tx_ids:
            heard.set()

    node.listeners.append(listener)
    try:
        node.submit(tx.raw)
        assert heard.wait(30), "not committed"
    finally:
        node.listeners.remove(listener)


def put(net: Consortium, key: str, h: str, members: list[str], collection: str = "bilateral") -> txm.Tx:
    return txm.build(
        net.chain_id, "pdc", "put", {"private": {"collection": collection, "key": key, "hash": h}, "members": members},
        [net.org("org1").signer("admin")], not_after=int(time.time() * 1000) + 60_000,
    )  # fmt: skip


def test_member_reads_value_non_member_sees_hash(node: Node, net: Consortium, tmp_path: Path) -> None:
    pd = private_of(node)
    value: dict[str, Any] = {"price_fen": 987_654_321, "sku": "CONFIDENTIAL-SKU-7"}
    salt = pv.new_salt()
    with pytest.raises(LiangcaoError) as info:  # org1's node is no member: it refuses to hold the value
        pd.hand("pdc", "bilateral", "k0", value, salt, ["org2", "org3"])
    assert info.value.code == pv.PrivacyCode.NOT_MEMBER
    h = pd.hand("pdc", "bilateral", "k1", value, salt, ["org1", "org2"])["hash"]
    assert pd.status()["transient"] == 1
    tx = put(net, "k1", h, ["org1", "org2"])
    commit(node, tx)
    mine = pd.read("org1/alice", "pdc", "bilateral", "k1")
    assert mine["value"] == value and mine["salt"] == salt.hex() and mine["hash"] == h and mine["tx"] == tx.tx_id
    # a record org1 is no member of: naming other members does not make its node hold the value
    v3, s3 = {"x": "not for org1"}, pv.new_salt()
    tx3 = txm.build(net.chain_id, "pdc", "put", {"private": {"collection": "bilateral", "key": "k3",
                    "hash": pv.commitment_hash(s3, v3)}, "members": ["org2"]}, [net.org("org2").signer("admin")],
                    not_after=int(time.time() * 1000) + 60_000)  # fmt: skip
    commit(node, tx3)
    with pytest.raises(LiangcaoError) as info:
        pd.hand("pdc", "bilateral", "k3", v3, s3, ["org1", "org2"])
    assert info.value.code == pv.PrivacyCode.NOT_MEMBER and pd.status()["transient"] == 0
    theirs = pd.read("org3/bob", "pdc", "bilateral", "k1")
    assert theirs["value"] is None and theirs["exists"] and not theirs["member"] and "salt" not in theirs
    assert theirs["hash"] == h and theirs["members"] == ["org1", "org2"]
    # a forged value (other content, or the right content with another salt) is refused by hash
    for forged, s in (({**value, "price_fen": 1}, salt), (value, pv.new_salt())):
        with pytest.raises(LiangcaoError) as info:
            pd.hand("pdc", "bilateral", "k1", forged, s, ["org1", "org2"])
        assert info.value.code == pv.PrivacyCode.HASH_MISMATCH
        record = pd.commitment("pdc", "bilateral", "k1")
        assert record is not None and not pd.store.put(record, "pdc", forged, s)
    assert pd.read("org1/alice", "pdc", "bilateral", "k1")["value"] == value
    # the shared state and the blocks hold no cleartext and no salt
    for f in tmp_path.glob("org1.sqlite*"):
        data = f.read_bytes()
        assert b"CONFIDENTIAL-SKU-7" not in data and salt not in data and salt.hex().encode() not in data


def test_disclosure_verifies_offline(node: Node, net: Consortium, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from liangcao.cli import app

    pd = private_of(node)
    value = {"premium_fen": 12_345, "policy": "P-1"}
    salt = pv.new_salt()
    h = pd.hand("pdc", "bilateral", "p1", value, salt, ["org1", "org3"])["hash"]
    commit(node, put(net, "p1", h, ["org1", "org3"]))
    with pytest.raises(LiangcaoError) as info:
        pd.disclosure("org2/eve", "pdc", "bilateral", "p1")
    assert info.value.code == pv.PrivacyCode.NOT_MEMBER
    d = pd.disclosure("org1/alice", "pdc", "bilateral", "p1")
    assert pv.check_disclosure(d) == (True, "ok")
    good, bad = tmp_path / "d.json", tmp_path / "forged.json"
    good.write_text(json.dumps(d))
    bad.write_text(json.dumps({**d, "value": {"premium_fen": 1, "policy": "P-1"}}))
    runner = CliRunner()
    r = runner.invoke(app, ["verify-proof", str(good)])
    assert r.exit_code == 0 and "private value verifies" in r.output, r.output
    r = runner.invoke(app, ["verify-proof", str(bad)])
    assert r.exit_code != 0 and "do not hash" in r.output, r.output


def test_retention_purges_value_keeps_hash(node: Node, net: Consortium) -> None:
    pd = private_of(node)
    value = {"temp": "ephemeral-secret-XYZ"}
    salt = pv.new_salt()
    h = pd.hand("pdc", "ephemeral", "e1", value, salt, ["org1", "org2"])["hash"]
    commit(node, put(net, "e1", h, ["org1", "org2"], "ephemeral"))
    assert pd.read("org1/a", "pdc", "ephemeral", "e1")["value"] == value
    for i in range(3):  # three more blocks: retention (3 blocks) is over
        v, s = {"n": i}, pv.new_salt()
        commit(node, put(net, f"f{i}", pd.hand("pdc", "bilateral", f"f{i}", v, s, ["org1"])["hash"], ["org1"]))
    deadline = time.monotonic() + 10  # the purge runs in the commit listener, just after the block is reported
    while not pd.read("org1/a", "pdc", "ephemeral", "e1").get("purged") and time.monotonic() < deadline:
        time.sleep(0.01)
    got = pd.read("org1/a", "pdc", "ephemeral", "e1")
    assert got["value"] is None and got["purged"] and got["hash"] == h
    row = pd.store.get("pdc", "ephemeral", "e1", h)
    assert row is not None and row.purged and row.hash == h
    files = [private_path(node.store_path), *node.store_path.parent.glob("org1.private.sqlite-*")]
    assert [f.name for f in files if b"ephemeral-secret-XYZ" in f.read_bytes()] == []  # overwritten, not unlinked


def test_a_lost_private_store_is_noticed(node: Node, net: Consortium) -> None:
    pd = private_of(node)
    value, salt = {"a": 1}, pv.new_salt()
    commit(
        node, put(net, "r1", pd.hand("pdc", "bilateral", "r1", value, salt, ["org1", "org2"])["hash"], ["org1", "org2"])
    )
    close_private(node)
    private_path(node.store_path).unlink()
    fresh = PrivateData(node)
    try:
        assert fresh.missing() == 1  # a solo node has no one to ask: the scan says what is lacking
        assert fresh.read("org1/a", "pdc", "bilateral", "r1")["available"] is False
        fresh.hand("pdc", "bilateral", "r1", value, salt, ["org1", "org2"])  # the submitter hands it again
        assert fresh.read("org1/a", "pdc", "bilateral", "r1")["value"] == value and fresh.missing() == 0
    finally:
        fresh.close()


def test_a_member_rechecks_endorsed_terms_and_raises_an_alarm(node: Node, net: Consortium) -> None:
    """Endorsers that signed inconsistent terms (here: their keys used without the check) are caught by every
    member when the terms reach it: the write commits (no peer can re-execute it), the members raise an alarm."""
    import datetime as dt

    from liangcao.apps.scf.private import terms

    pd = private_of(node)
    today = dt.date.today()

    def run(contract: str, method: str, args: dict[str, Any], *orgs: str) -> Any:
        signers = [net.org(o).signer("admin") for o in orgs]
        tx = txm.build(net.chain_id, contract, method, args, signers, not_after=int(time.time() * 1000) + 60_000)
        commit(node, tx)
        pos = node.ledger.store.tx_position(tx.tx_id)
        assert pos is not None
        receipt: Any = json.loads(node.ledger.store.receipts(pos[0])[pos[1]])
        assert receipt["code"] == 0, receipt
        return receipt["result"]

    inv = run("scf.invoices", "register", {"code": "3100", "number": "1", "seller": "org2", "buyer": "org3",
              "amount": 9_000_000, "date": today.isoformat(), "doc_hash": "ef" * 32}, "org2")["key"]  # fmt: skip
    issue = {"to": "org2", "face": 9_000_000, "maturity": (today + dt.timedelta(days=30)).isoformat(),
             "invoices": [inv], "settlement_bank": "org1"}  # fmt: skip
    vid = run("scf.vouchers", "issue", issue, "org3")["voucher"]
    run("scf.vouchers", "accept", {"voucher": vid}, "org2")
    bad = {**terms(vid, "org1", 9_000_000, 300, 29), "payout": 8_000_000}  # does not add up to the face
    salt = pv.new_salt()
    args: dict[str, Any] = {"voucher": vid, "bank": "org1", "face": 9_000_000, "endorsements": [],
                            "private": {"collection": "financing", "key": vid, "hash": pv.commitment_hash(salt, bad)}}  # fmt: skip
    with pytest.raises(LiangcaoError) as info:  # an honest endorser refuses
        pd.endorse("scf.private", "finance", args, bad, salt, ["org1", "org2"])
    assert info.value.code == pv.PrivacyCode.CHECK_FAILED
    digest = pv.endorsement_digest(net.chain_id, "scf.private", "finance", args)
    args["endorsements"] = [
        pv.endorse(p.key, p.cert, digest) for p in (net.org(o).signer("peer0") for o in ("org1", "org2"))
    ]
    pd.hand("scf.private", "financing", vid, bad, salt, ["org1", "org2"])
    run("scf.private", "finance", args, "org2", "org1")
    assert [a["key"] for a in pd.alarms] == [vid] and "add up" in pd.alarms[0]["why"]
    assert pd.status()["alarms"] == 1
