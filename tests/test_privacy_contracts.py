"""Private data collections in the contracts: commitments in state, endorsements, disclosure (no node)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liangcao import encoding
from liangcao.apps.scf.common import discount_fen
from liangcao.apps.scf.private import check_terms, terms
from liangcao.codes import Code
from liangcao.contracts import private as pv
from liangcao.ledger import block as blk
from scf_ledger import BANK, CORE, REGULATOR, T1, T2, Ledger, mentions, register_invoice


def voucher(led: Ledger, face: int = 100_000_000, days: int = 90, to: str = T1) -> str:
    inv = register_invoice(led, to, CORE, face, f"{1000 + led.n}")
    args = {"to": to, "face": face, "maturity": led.today_iso(days), "invoices": [inv], "settlement_bank": BANK}
    vid = str(led.ok("scf.vouchers", "issue", args, CORE)["voucher"])
    led.ok("scf.vouchers", "accept", {"voucher": vid}, to)
    return vid


def financing_args(
    led: Ledger, vid: str, value: dict[str, Any], salt: bytes, endorsers: tuple[str, ...] = (T1, BANK)
) -> dict[str, Any]:
    args: dict[str, Any] = {
        "voucher": vid,
        "bank": BANK,
        "face": value["face"],
        "private": {"collection": "financing", "key": vid, "hash": pv.commitment_hash(salt, value)},
    }
    digest = pv.endorsement_digest(led.chain_id, "scf.private", "finance", {**args, "endorsements": []})
    peers = [led.consortium.org(o).signer("peer0") for o in endorsers]
    args["endorsements"] = [pv.endorse(p.key, p.cert, digest) for p in peers]
    return args


def test_private_financing_keeps_terms_off_the_ledger() -> None:
    led = Ledger()
    vid = voucher(led)
    value = terms(vid, BANK, 100_000_000, 612, 88)
    salt = pv.new_salt()
    before = dict(led.state.data)
    r = led.run("scf.private", "finance", financing_args(led, vid, value, salt), T1, BANK, actor=f"{T1}/admin")
    assert r.ok, r.message
    assert r.result["members"] == sorted([T1, BANK, REGULATOR])  # the regulator reads by the stated policy
    changed = {k: v for k, v in led.state.data.items() if before.get(k) != v}
    blob = b"".join(k.encode() + v for k, v in changed.items()) + encoding.canonical(dict(r))
    for secret in (b"612", str(value["discount"]).encode(), str(value["payout"]).encode(), salt.hex().encode()):
        assert not mentions(blob, secret)  # neither rate, discount, price nor salt in state or receipt
    v = led.query("scf.vouchers", "voucher", {"voucher": vid})
    assert v["holder"] == BANK and v["financed_by"] == BANK
    c = led.get(pv.state_key("scf.private", "financing", vid))
    assert c["hash"] == pv.commitment_hash(salt, value) and c["tx"] == r.tx_id
    # financed once
    again = financing_args(led, vid, value, pv.new_salt())
    assert not led.run("scf.private", "finance", again, T1, BANK, actor=f"{T1}/admin").ok


def test_endorsements_are_required_and_checked() -> None:
    led = Ledger()
    vid = voucher(led)
    value = terms(vid, BANK, 100_000_000, 500, 60)
    salt = pv.new_salt()
    only_bank = financing_args(led, vid, value, salt, endorsers=(BANK,))
    r = led.run("scf.private", "finance", only_bank, T1, BANK, actor=f"{T1}/admin")
    assert r.code == pv.PrivacyCode.ENDORSEMENT_MISSING
    outsider = financing_args(led, vid, value, salt, endorsers=(T1, T2))
    assert led.run("scf.private", "finance", outsider, T1, BANK, actor=f"{T1}/admin").code == (
        pv.PrivacyCode.ENDORSEMENT_MISSING
    )
    # an endorsement of other arguments (another hash) does not count
    args = financing_args(led, vid, value, salt)
    args["private"]["hash"] = pv.commitment_hash(pv.new_salt(), value)
    assert led.run("scf.private", "finance", args, T1, BANK, actor=f"{T1}/admin").code == (
        pv.PrivacyCode.ENDORSEMENT_INVALID
    )
    # a member's (not a peer's) signature is no endorsement
    args = financing_args(led, vid, value, salt)
    admin = led.consortium.org(T1).signer("admin")
    digest = pv.endorsement_digest(led.chain_id, "scf.private", "finance", {**args, "endorsements": []})
    args["endorsements"][0] = pv.endorse(admin.key, admin.cert, digest)
    assert led.run("scf.private", "finance", args, T1, BANK, actor=f"{T1}/admin").code == (
        pv.PrivacyCode.ENDORSEMENT_INVALID
    )
    assert led.query("scf.vouchers", "voucher", {"voucher": vid})["holder"] == T1  # nothing half-written


def test_check_terms_refuses_inconsistent_terms() -> None:
    args = {"voucher": "V1", "bank": BANK, "face": 1_000_000}
    good = terms("V1", BANK, 1_000_000, 600, 30)
    assert check_terms(good, args) == ""
    assert check_terms({**good, "payout": good["payout"] + 1}, args)
    assert check_terms({**good, "discount": good["discount"] - 1, "payout": good["payout"] + 1}, args)
    assert check_terms({**good, "face": 2_000_000}, args)
    assert check_terms({**good, "rate_bps": 600.0}, args)
    assert check_terms({**good, "extra": 1}, args)


@settings(max_examples=40, deadline=None)
@given(face=st.integers(1, 10**12), rate=st.integers(0, 5000), days=st.integers(1, 3660))
def test_private_terms_conserve_the_face(face: int, rate: int, days: int) -> None:
    t = terms("V1", BANK, face, rate, days)
    assert t["payout"] + t["discount"] == face and t["discount"] == discount_fen(face, rate, days)
    assert 0 <= t["discount"] <= face or rate * days > 3_600_000
    assert check_terms(t, {"voucher": "V1", "bank": BANK, "face": face}) == ""


def test_pdc_commitment_and_disclosure() -> None:
    led = Ledger()
    value = {"note": "price list 2027", "unit_fen": 1234}
    salt = pv.new_salt()
    h = pv.commitment_hash(salt, value)
    ref = {"collection": "bilateral", "key": "k1", "hash": h}
    r = led.run("pdc", "put", {"private": ref, "members": [T1, T2]}, T1)
    assert r.ok and r.event(pv.EVENT)["members"] == [T1, T2]
    assert led.run("pdc", "put", {"private": ref, "members": [T1, T2]}, T1).code == Code.ALREADY_EXISTS
    assert led.run("pdc", "put", {"private": {**ref, "key": "k2"}, "members": [T2]}, T1).code == (
        pv.PrivacyCode.NOT_MEMBER
    )
    bad = {"private": {**ref, "key": "k3"}, "members": [T1, "org99"]}
    assert led.run("pdc", "put", bad, T1).code == pv.PrivacyCode.BAD_MEMBERS
    assert led.query("pdc", "commitment", {"collection": "bilateral", "key": "k1"})["hash"] == h


def test_disclosure_checks_hash_and_inclusion() -> None:
    led = Ledger()
    value = {"premium_fen": 5_500}
    salt = pv.new_salt()
    h = pv.commitment_hash(salt, value)
    other = led.tx(
        "pdc", "put", {"private": {"collection": "bilateral", "key": "x", "hash": "0" * 64}, "members": [T1]}, T1
    )
    mine = led.tx(
        "pdc", "put", {"private": {"collection": "bilateral", "key": "k", "hash": h}, "members": [T1, T2]}, T1
    )
    ex = led.apply([other.raw, mine.raw])
    header = blk.Header(
        chain_id=led.chain_id, height=led.height - 1, prev_hash="0" * 64, time_ms=led.time_ms - 1000,
        tx_count=2, tx_root=ex.tx_root, receipt_root=ex.receipt_root, state_hash=ex.state_hash,
    )  # fmt: skip
    d = {
        "kind": "private_disclosure", "contract": "pdc", "collection": "bilateral", "key": "k",
        "value": value, "salt": salt.hex(), "hash": h,
        "tx_proof": blk.proof_dict([other.raw, mine.raw], 1, header, "tx"),
        "receipt_proof": blk.proof_dict(ex.receipts, 1, header, "receipt"),
    }  # fmt: skip
    assert pv.check_disclosure(d) == (True, "ok")
    assert not pv.check_disclosure({**d, "value": {"premium_fen": 5_501}})[0]  # forged content
    assert not pv.check_disclosure({**d, "salt": pv.new_salt().hex()})[0]  # wrong salt
    assert not pv.check_disclosure({**d, "key": "x"})[0]
    wrong = {**d, "tx_proof": blk.proof_dict([other.raw, mine.raw], 0, header, "tx")}
    assert not pv.check_disclosure(wrong)[0]


@pytest.mark.parametrize("salt", [b"", b"x" * 31, b"x" * 33])
def test_salt_is_32_bytes(salt: bytes) -> None:
    with pytest.raises(Exception) as info:
        pv.commitment_hash(salt, 1)
    assert getattr(info.value, "code", None) == pv.PrivacyCode.BAD_PRIVATE_DATA


def test_collection_declarations_are_bounded() -> None:
    with pytest.raises(ValueError):
        pv.Collection("c", retain_blocks=pv.retain_blocks_max + 1)
    with pytest.raises(ValueError):
        pv.Collection("c", members=tuple(f"org{i}" for i in range(pv.collection_members_max + 1)))
    with pytest.raises(ValueError):
        pv.Collection("c", endorse=True)
    assert pv.Collection("c", retain_blocks=3).retain_blocks == 3
