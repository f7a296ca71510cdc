"""Factoring pools on private terms: the advance rate, credit line and fees in the seller's and the factor's
collection ``terms``, a commitment in the pool's public record, draws endorsed by both members' peers."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liangcao import encoding
from liangcao.apps.scf.common import ScfCode
from liangcao.apps.scf.factoring import check_pool_terms, pool_terms
from liangcao.codes import Code
from liangcao.contracts import private as pv
from liangcao.errors import LiangcaoError
from liangcao.ledger import tx as txm
from liangcao.node.genesis import Consortium
from liangcao.node.node import Node
from liangcao.node.private import private_of
from scf_ledger import BANK, DAY_MS, REGULATOR, T1, T2, Ledger, mentions
from test_privacy_node import commit, net, node  # noqa: F401  (the solo node's fixtures)
from test_scf_factoring import voucher

RATE, LINE, FEE = 7_345, 912_345, 137  # values that appear nowhere else in the run's state or receipts


def endorsed(led: Ledger, method: str, args: dict[str, Any], endorsers: tuple[str, ...] = (T1, BANK)) -> dict[str, Any]:
    digest = pv.endorsement_digest(led.chain_id, "scf.factoring", method, {**args, "endorsements": []})
    peers = [led.consortium.org(o).signer("peer0") for o in endorsers]
    return {**args, "endorsements": [pv.endorse(p.key, p.cert, digest) for p in peers]}


def open_private(led: Ledger, salt: bytes, key: str = "t1") -> tuple[str, dict[str, Any], Any]:
    value = pool_terms(T1, BANK, RATE, LINE, FEE)
    ref = {"collection": "terms", "key": key, "hash": pv.commitment_hash(salt, value)}
    assert check_pool_terms(value, {"seller": T1, "factor": BANK}) == ""
    r = led.run("scf.factoring", "open_private", endorsed(led, "open_private", {"seller": T1, "factor": BANK,
                "private": ref}), T1, BANK)  # fmt: skip
    assert r.ok, r.message
    return str(r.result["pool"]), value, r


def draw_args(led: Ledger, pool: str, value: dict[str, Any], salt: bytes, amount: int) -> dict[str, Any]:
    p = led.query("scf.factoring", "pool", {"pool": pool})
    ref = {"collection": "terms", "key": p["terms"], "hash": pv.commitment_hash(salt, value)}
    return {"pool": pool, "amount": amount, "advanced": p["advanced"], "eligible": p["eligible"], "private": ref}


def setup() -> tuple[Ledger, str, dict[str, Any], bytes, Any]:
    led = Ledger()
    led.ok("scf.tokens", "issue", {"to": BANK, "amount": 10**12}, BANK)
    salt = pv.new_salt()
    pool, value, r = open_private(led, salt)
    return led, pool, value, salt, r


def test_terms_are_only_a_commitment_in_state_and_receipts() -> None:
    led = Ledger()
    led.ok("scf.tokens", "issue", {"to": BANK, "amount": 10**12}, BANK)
    salt = pv.new_salt()
    before = dict(led.state.data)
    pool, value, r = open_private(led, salt)
    assert r.result["members"] == sorted([T1, BANK, REGULATOR])  # the regulator reads by the stated policy
    changed = {k: v for k, v in led.state.data.items() if before.get(k) != v}
    blob = b"".join(k.encode() + v for k, v in changed.items()) + encoding.canonical(dict(r))
    for secret in (str(RATE).encode(), str(LINE).encode(), salt.hex().encode()):
        assert not mentions(blob, secret)  # neither rate, line nor salt in state or receipt
    p = led.query("scf.factoring", "pool", {"pool": pool})
    assert (p["advance_rate_bps"], p["credit_line"], p["capacity"], p["terms"]) == (0, 0, None, "t1")
    c = led.get(pv.state_key("scf.factoring", "terms", "t1"))
    assert c["hash"] == pv.commitment_hash(salt, value) and c["tx"] == r.tx_id
    assert r.event("opened")["terms"] == c["hash"]
    # the same key cannot commit a second pool's terms
    ref = {"collection": "terms", "key": "t1", "hash": pv.commitment_hash(pv.new_salt(), value)}
    again = endorsed(led, "open_private", {"seller": T1, "factor": BANK, "private": ref})
    assert led.run("scf.factoring", "open_private", again, T1, BANK).code == Code.ALREADY_EXISTS


def test_open_requires_both_members_endorsements() -> None:
    led = Ledger()
    value = pool_terms(T1, BANK, RATE, LINE)
    ref = {"collection": "terms", "key": "t9", "hash": pv.commitment_hash(pv.new_salt(), value)}
    args = {"seller": T1, "factor": BANK, "private": ref}
    for endorsers in ((BANK,), (T1, T2)):
        r = led.run("scf.factoring", "open_private", endorsed(led, "open_private", args, endorsers), T1, BANK)
        assert r.code == pv.PrivacyCode.ENDORSEMENT_MISSING
    assert led.get(pv.state_key("scf.factoring", "terms", "t9")) is None  # nothing half-written


def test_private_draw_within_the_private_capacity() -> None:
    led, pool, value, salt, _ = setup()
    v60 = voucher(led, T1, 600_000, 60, "pf1")
    v90 = voucher(led, T1, 700_000, 90, "pf2")
    led.ok("scf.factoring", "assign", {"pool": pool, "vouchers": [v60, v90]}, T1)
    # the public draw cannot use a pool whose capacity is private
    assert led.run("scf.factoring", "draw", {"pool": pool, "amount": 1}, T1).code == ScfCode.OVER_ADVANCE
    capacity = min(LINE, 1_300_000 * RATE // 10_000)  # 912,345: the line binds
    args = draw_args(led, pool, value, salt, capacity + 1)
    assert "exceeds the private capacity" in check_pool_terms(value, args)  # the endorsers refuse it
    ok = draw_args(led, pool, value, salt, 500_000)
    assert check_pool_terms(value, ok) == ""
    before = led.balance(T1)
    assert led.run("scf.factoring", "draw_private", endorsed(led, "draw_private", ok), T1).ok
    assert led.balance(T1) - before == 500_000
    assert led.query("scf.factoring", "pool", {"pool": pool})["advanced"] == 500_000
    # replayed endorsement (its figures are stale: advanced was 0) is refused
    r = led.run("scf.factoring", "draw_private", endorsed(led, "draw_private", ok), T1)
    assert r.code == ScfCode.OVER_ADVANCE and "changed since the endorsement" in r.message
    # endorsements by the seller alone, or of another hash, do not count
    nxt = draw_args(led, pool, value, salt, 100_000)
    assert led.run("scf.factoring", "draw_private", endorsed(led, "draw_private", nxt, (T1,)), T1).code == (
        pv.PrivacyCode.ENDORSEMENT_MISSING
    )
    other = {**nxt, "private": {**nxt["private"], "hash": pv.commitment_hash(pv.new_salt(), value)}}
    assert led.run("scf.factoring", "draw_private", endorsed(led, "draw_private", other), T1).code == (
        pv.PrivacyCode.NO_COMMITMENT
    )
    # the 60-day voucher matures: the endorsed eligible balance is gone, the draw must be endorsed again
    led.time_ms += 61 * DAY_MS
    r = led.run("scf.factoring", "draw_private", endorsed(led, "draw_private", nxt), T1)
    assert r.code == ScfCode.OVER_ADVANCE
    fresh = draw_args(led, pool, value, salt, 100_000)
    assert fresh["eligible"] == 700_000 and "exceeds" in check_pool_terms(value, fresh)  # 514,150 < 600,000
    # a voucher leaves a private pool only while nothing is advanced
    r = led.run("scf.factoring", "withdraw", {"pool": pool, "voucher": v90}, T1)
    assert r.code == ScfCode.OVER_ADVANCE and "private terms" in r.message
    # ... or through withdraw_private, endorsed on the eligible balance without the voucher
    v_new = voucher(led, T1, 1_000_000, 60, "pf3")
    led.ok("scf.factoring", "assign", {"pool": pool, "vouchers": [v_new]}, T1)

    def withdrawal(vid: str, face: int) -> dict[str, Any]:
        d = draw_args(led, pool, value, salt, 0)
        del d["amount"]
        return {**d, "voucher": vid, "eligible": d["eligible"] - face}

    w = withdrawal(v90, 700_000)
    assert w["eligible"] == 1_000_000 and check_pool_terms(value, w) == ""  # 734,500 covers 500,000
    stale = {**w, "eligible": w["eligible"] + 1}  # endorsed on a larger balance than remains
    r = led.run("scf.factoring", "withdraw_private", endorsed(led, "withdraw_private", stale), T1)
    assert r.code == ScfCode.OVER_ADVANCE
    assert led.run("scf.factoring", "withdraw_private", endorsed(led, "withdraw_private", w), T1).ok
    assert led.query("scf.vouchers", "voucher", {"voucher": v90})["holder"] == T1
    last = withdrawal(v_new, 1_000_000)
    assert "exceeds" in check_pool_terms(value, last)  # nothing would cover the 500,000 advanced


def test_check_pool_terms_refuses_bad_terms() -> None:
    good = pool_terms(T1, BANK, 8_000, 1_000_000, 50)
    assert check_pool_terms(good, {"seller": T1, "factor": BANK}) == ""
    assert check_pool_terms(good, {"seller": T2, "factor": BANK})
    for bad in ({**good, "advance_rate_bps": 0}, {**good, "advance_rate_bps": 10_001},
                {**good, "credit_line": 0}, {**good, "credit_line": 1.5}, {**good, "extra": 1}):  # fmt: skip
        assert check_pool_terms(bad, {"seller": T1, "factor": BANK})
    draw = {"amount": 1, "advanced": 0, "eligible": 0}
    assert "exceeds" in check_pool_terms(good, draw)
    assert check_pool_terms(good, {**draw, "amount": -1})


@settings(max_examples=50, deadline=None)
@given(
    rate=st.integers(1, 10_000),
    line=st.integers(1, 10**12),
    eligible=st.integers(0, 10**13),
    advanced=st.integers(0, 10**12),
    amount=st.integers(1, 10**12),
)
def test_endorsed_draws_never_exceed_rate_or_line(
    rate: int, line: int, eligible: int, advanced: int, amount: int
) -> None:
    value = pool_terms(T1, BANK, rate, line)
    ok = check_pool_terms(value, {"amount": amount, "advanced": advanced, "eligible": eligible}) == ""
    assert ok == (advanced + amount <= line and (advanced + amount) * 10_000 <= eligible * rate + 9_999)
    if ok:
        assert advanced + amount <= line and advanced + amount <= eligible * rate // 10_000


# ---- on a node: members read the terms, a non-member sees the hash, endorsement, disclosure ----------------
def test_on_a_node_members_read_outsiders_see_the_hash(node: Node, net: Consortium, tmp_path: Path) -> None:  # noqa: F811
    from typer.testing import CliRunner

    from liangcao.cli import app

    # org1 (the node) is the bank, the factor; org2 (a supplier) the seller; org3 no member
    pd = private_of(node)
    value = pool_terms("org2", "org1", RATE, LINE, FEE)
    salt = pv.new_salt()
    ref = {"collection": "terms", "key": "pool-a", "hash": pv.commitment_hash(salt, value)}
    public = {"seller": "org2", "factor": "org1", "private": ref}
    mine = pd.endorse("scf.factoring", "open_private", {**public, "endorsements": []}, value, salt, ["org2", "org1"])
    digest = pv.endorsement_digest(net.chain_id, "scf.factoring", "open_private", {**public, "endorsements": []})
    seller_peer = net.org("org2").signer("peer0")
    args = {**public, "endorsements": [mine, pv.endorse(seller_peer.key, seller_peer.cert, digest)]}
    signers = [net.org("org2").signer("admin"), net.org("org1").signer("admin")]
    tx = txm.build(net.chain_id, "scf.factoring", "open_private", args, signers,
                   not_after=int(time.time() * 1000) + 60_000)  # fmt: skip
    commit(node, tx)
    raw = node.reader().get("scf.factoring/p/P" + tx.tx_id)
    assert raw is not None and json.loads(raw)["terms"] == "pool-a" and not mentions(raw, str(RATE).encode())
    record = pd.commitment("scf.factoring", "terms", "pool-a")
    assert record is not None and record["tx"] == tx.tx_id and record["members"] == ["org1", "org2"]
    member = pd.read("org1/alice", "scf.factoring", "terms", "pool-a")
    assert member["value"] == value and member["salt"] == salt.hex()
    outsider = pd.read("org3/bob", "scf.factoring", "terms", "pool-a")
    assert outsider["value"] is None and not outsider["member"] and outsider["hash"] == ref["hash"]
    assert "salt" not in outsider
    # the factor's peer refuses to endorse a draw beyond the private capacity (the pool is empty)
    draw = {"pool": "P" + tx.tx_id, "amount": 1, "advanced": 0, "eligible": 0, "private": ref, "endorsements": []}
    with pytest.raises(LiangcaoError) as info:
        pd.endorse("scf.factoring", "draw_private", draw, value, salt, ["org2", "org1"])
    assert info.value.code == pv.PrivacyCode.CHECK_FAILED and "exceeds" in info.value.message
    # disclosure to an outsider, checked offline by the CLI
    d = pd.disclosure("org1/alice", "scf.factoring", "terms", "pool-a")
    good, bad = tmp_path / "d.json", tmp_path / "forged.json"
    good.write_text(json.dumps(d))
    bad.write_text(json.dumps({**d, "value": {**value, "advance_rate_bps": 9_000}}))
    runner = CliRunner()
    r = runner.invoke(app, ["verify-proof", str(good)])
    assert r.exit_code == 0 and "private value verifies" in r.output, r.output
    r = runner.invoke(app, ["verify-proof", str(bad)])
    assert r.exit_code != 0 and "do not hash" in r.output, r.output
    for f in tmp_path.glob("org1.sqlite"):  # the shared store (not the private one) holds no term
        assert str(LINE).encode() not in f.read_bytes()


# ---- through the HTTP API of a served node (org1, the factor) ----------------------------------------------
def test_private_pool_through_the_api(tmp_path_factory: pytest.TempPathFactory) -> None:
    from conftest import Live
    from liangcao.client import Client, ClientError
    from liangcao.client.private import PrivateData
    from liangcao.tokens import WRITE
    from test_privacy_api import _today

    live = Live(tmp_path_factory.mktemp("pvt-pool") / "net", ["bank", "supplier", "core_enterprise"])
    try:
        factor, seller, core = live.signer("org1/admin"), live.signer("org2/admin"), live.signer("org3/admin")
        peer2 = live.signer("org2/peer0")
        with Client(live.url, live.home.auth().create("org1/admin", 1, scope=WRITE)) as c:
            pdata = PrivateData(c)

            def endorse(method: str, args: dict[str, Any], value: Any, salt: bytes) -> dict[str, Any]:
                mine = pdata.endorse("scf.factoring", method, args, value, salt, ["org2", "org1"])
                digest = pv.endorsement_digest(c.chain_id, "scf.factoring", method, args)
                return {**args, "endorsements": [mine, pv.endorse(peer2.key, peer2.cert, digest)]}

            value, salt = pool_terms("org2", "org1", RATE, LINE, FEE), pv.new_salt()
            ref = {"collection": "terms", "key": "api-pool", "hash": pv.commitment_hash(salt, value)}
            args = endorse("open_private", {"seller": "org2", "factor": "org1", "private": ref, "endorsements": []},
                           value, salt)  # fmt: skip
            receipt = c.call("scf.factoring", "open_private", args, [seller, factor])
            assert receipt["code"] == 0, receipt
            pool = receipt["result"]["pool"]
            assert c.call("scf.tokens", "issue", {"to": "org1", "amount": 10**10}, [factor])["code"] == 0
            inv = c.call("scf.invoices", "register", {"code": "3100", "number": "91", "seller": "org2",
                         "buyer": "org3", "amount": 2_000_000, "date": _today(c), "doc_hash": "cd" * 32},
                         [seller])["result"]["key"]  # fmt: skip
            issue = {"to": "org2", "face": 2_000_000, "maturity": _today(c, 60), "invoices": [inv],
                     "settlement_bank": "org1"}  # fmt: skip
            vid = c.call("scf.vouchers", "issue", issue, [core])["result"]["voucher"]
            assert c.call("scf.vouchers", "accept", {"voucher": vid}, [seller])["code"] == 0
            assert c.call("scf.factoring", "assign", {"pool": pool, "vouchers": [vid]}, [seller])["code"] == 0
            p = c.query("scf.factoring", "pool", {"pool": pool})
            assert p["eligible"] == 2_000_000 and p["capacity"] is None
            draw = {"pool": pool, "amount": LINE + 1, "advanced": 0, "eligible": p["eligible"], "private": ref,
                    "endorsements": []}  # fmt: skip
            with pytest.raises(ClientError) as info:  # beyond the line: the factor's node does not endorse
                pdata.endorse("scf.factoring", "draw_private", draw, value, salt, ["org2", "org1"])
            assert info.value.code == pv.PrivacyCode.CHECK_FAILED
            receipt = c.call("scf.factoring", "draw_private", endorse("draw_private", {**draw, "amount": LINE},
                             value, salt), [seller])  # fmt: skip
            assert receipt["code"] == 0, receipt
            assert c.query("scf.factoring", "pool", {"pool": pool})["advanced"] == LINE
            assert pdata.read("scf.factoring", "terms", "api-pool")["value"] == value
        with Client(live.url, live.home.auth().create("org3/carol", 1)) as c:
            seen = PrivateData(c).read("scf.factoring", "terms", "api-pool")
            assert seen["value"] is None and seen["hash"] == ref["hash"] and seen["members"] == ["org1", "org2"]
    finally:
        live.stop()
