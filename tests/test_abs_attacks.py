"""abs.deal under attack: a hostile originator, SPV, investor or servicer tries to double-sell, sneak in an
ineligible receivable, mint cash, oversubscribe, pay twice or early, and tip the triggers off by one day or
one fen. Every refusal must leave the state exactly as it was."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from abs_ledger import BANK, CORE_A, CORE_B, INV1, INV2, INV3, ORIGINATOR, REGULATOR, SPV, SPV2, AbsLedger
from liangcao.apps.abs.common import AbsCode, abs_holders_max, interest_fen, pro_rata
from liangcao.codes import Code
from liangcao.errors import EncodingError


def snapshot(led: AbsLedger) -> dict[str, bytes]:
    return dict(led.state.data)


def report(led: AbsLedger, deal: str) -> dict[str, Any]:
    return dict(
        led.ok("abs.deal", "report", {"deal": deal, "performing": 0, "delinquent": 0, "defaulted": 0}, ORIGINATOR)
    )


def test_a_receivable_cannot_be_sold_into_two_deals() -> None:
    led = AbsLedger()
    d1 = led.launched()
    d2 = led.launched(SPV2)
    v = led.voucher(CORE_A, 100_000, 60)
    # offered to the first deal: the second cannot take it while that offer is pending
    led.ok("abs.deal", "offer", {"deal": d1, "vouchers": [v]}, ORIGINATOR)
    before = snapshot(led)
    led.fails(AbsCode.NOT_ACTIVE, "abs.deal", "offer", {"deal": d2, "vouchers": [v]}, ORIGINATOR)
    led.fails(AbsCode.NOT_ACTIVE, "abs.deal", "purchase", {"deal": d2, "vouchers": [v]}, SPV2)
    assert snapshot(led) == before
    led.ok("abs.deal", "purchase", {"deal": d1, "vouchers": [v]}, SPV)
    before = snapshot(led)
    led.fails(AbsCode.IN_POOL, "abs.deal", "offer", {"deal": d2, "vouchers": [v]}, ORIGINATOR)
    # nor into a factoring pool: the SPV holds it locked in the deal's pool
    opened = led.run(
        "scf.factoring",
        "open",
        {"seller": SPV, "factor": BANK, "advance_rate_bps": 8_000, "credit_line": 1_000_000},
        SPV,
        BANK,
        actor=f"{SPV}/admin",
    )
    if opened.ok:  # whether or not an SPV may sell to a factor, this voucher never goes into its pool
        assign = led.run("scf.factoring", "assign", {"pool": opened["result"]["pool"], "vouchers": [v]}, SPV)
        assert not assign.ok
    assert not led.run("scf.vouchers", "offer", {"voucher": v, "to": INV1}, SPV).ok
    assert not led.run("scf.vouchers", "split", {"voucher": v, "amounts": [1]}, SPV).ok
    led.ok("abs.deal", "evaluate", {"deal": d1}, INV1)  # nothing lost: no default
    assert led.deal(d1)["defaulted_face"] == 0


def test_eligibility_is_checked_again_at_purchase() -> None:
    led = AbsLedger()
    deal = led.launched(servicer_grace_days=31, required_bps=0)
    v = led.voucher(CORE_A, 100_000, 60)
    led.ok("abs.deal", "offer", {"deal": deal, "vouchers": [v]}, ORIGINATOR)
    led.ok("scf.vouchers", "freeze", {"voucher": v}, REGULATOR)
    before = snapshot(led)
    led.fails(AbsCode.FROZEN, "abs.deal", "purchase", {"deal": deal, "vouchers": [v]}, SPV)
    assert snapshot(led) == before
    led.ok("scf.vouchers", "unfreeze", {"voucher": v}, REGULATOR)
    led.advance(days=30)
    report(led, deal)
    led.advance(days=25)  # now due within the deal's 10 days
    report(led, deal)
    before = snapshot(led)
    led.fails(AbsCode.DUE_TOO_SOON, "abs.deal", "purchase", {"deal": deal, "vouchers": [v]}, SPV)
    assert snapshot(led) == before


def test_a_purchase_never_has_a_negative_price() -> None:
    """A steep discount on a long receivable would price it below zero: the SPV's books would gain cash
    that is not in its account (and every later waterfall would fail). The purchase is refused."""
    led = AbsLedger()
    deal = led.launched(discount_bps=10_000)
    v = led.voucher(CORE_A, 100_000, 800)  # 800 days at 100 % a year: the discount exceeds the face
    led.ok("abs.deal", "offer", {"deal": deal, "vouchers": [v]}, ORIGINATOR)
    before = snapshot(led)
    r = led.run("abs.deal", "purchase", {"deal": deal, "vouchers": [v]}, SPV)
    assert r.code == AbsCode.BAD_PRICE, r.message
    assert snapshot(led) == before
    # the SPV's account always backs its books
    d = led.deal(deal)
    assert led.balance(SPV) == d["purchase_cash"] + d["collections"]


def test_hostile_amounts_are_refused_and_change_nothing() -> None:
    led = AbsLedger()
    deal = led.open_deal()
    led.ok("abs.deal", "kyc", {"deal": deal, "org": INV1}, SPV)
    before = snapshot(led)
    for fl in (1.5, 700_000.0):  # a float never even leaves the client: no money is a float
        with pytest.raises(EncodingError):
            led.run("abs.deal", "subscribe", {"deal": deal, "tranche": "senior", "amount": fl}, INV1)
    bad: tuple[object, ...] = (0, -1, "1", True, 10**15 + 1, 2**63 - 1)
    for amount in bad:
        r = led.run("abs.deal", "subscribe", {"deal": deal, "tranche": "senior", "amount": amount}, INV1)
        assert r.code == Code.INVALID_ARGUMENT, (amount, r.code, r.message)
    led.fails(
        AbsCode.OVERSUBSCRIBED, "abs.deal", "subscribe", {"deal": deal, "tranche": "senior", "amount": 700_001}, INV1
    )
    # a non-KYC'd investor cannot subscribe, nor be given notes
    led.fails(AbsCode.NOT_KYC, "abs.deal", "subscribe", {"deal": deal, "tranche": "senior", "amount": 1}, INV3)
    assert snapshot(led) == before
    led.ok("abs.deal", "subscribe", {"deal": deal, "tranche": "senior", "amount": 700_000}, INV1)
    before = snapshot(led)
    led.fails(AbsCode.OVERSUBSCRIBED, "abs.deal", "subscribe", {"deal": deal, "tranche": "senior", "amount": 1}, INV1)
    led.fails(
        AbsCode.NOT_KYC, "abs.deal", "transfer", {"deal": deal, "tranche": "senior", "to": INV2, "amount": 1}, INV1
    )
    assert snapshot(led) == before


def test_no_payment_twice_nor_early() -> None:
    led = AbsLedger()
    deal = led.launched(servicer_grace_days=31, required_bps=0)
    before = snapshot(led)
    led.fails(AbsCode.NOT_PAYMENT_DATE, "abs.deal", "distribute", {"deal": deal}, SPV)
    assert snapshot(led) == before
    for _ in range(2):
        led.advance(days=30)
        report(led, deal)
    led.advance(days=29)  # day 89
    report(led, deal)
    before = snapshot(led)
    led.fails(AbsCode.NOT_PAYMENT_DATE, "abs.deal", "distribute", {"deal": deal}, SPV)
    assert snapshot(led) == before
    led.advance(days=1)
    led.fails(AbsCode.NOT_PARTY, "abs.deal", "distribute", {"deal": deal}, INV1)
    led.ok("abs.deal", "distribute", {"deal": deal}, SPV)
    before = snapshot(led)
    led.fails(AbsCode.NOT_PAYMENT_DATE, "abs.deal", "distribute", {"deal": deal}, SPV)
    assert snapshot(led) == before
    d = led.deal(deal)
    assert led.balance(SPV) == d["purchase_cash"] + d["collections"]


def defaults_at(face_a: int, face_b: int) -> dict[str, Any]:
    """A pool of one short receivable (``face_a``) that defaults and long ones: the default-rate trigger's
    boundary (10 % of the face bought) tested to the fen."""
    led = AbsLedger()
    deal = led.launched(servicer_grace_days=31, required_bps=0, default_rate_max_bps=1_000, obligor_limit_bps=6_000)
    va = led.voucher(CORE_A, face_a, 40)
    vb = led.voucher(CORE_B, face_b, 300)
    vc = led.voucher(CORE_A, 1_000_000 - face_a - face_b, 300)
    assert led.purchase(deal, [va, vb, vc]).ok
    for _ in range(3):  # day 90: va (due day 40) defaulted on day 70
        led.advance(days=30)
        report(led, deal)
    return led.deal(deal)


def test_the_default_rate_trigger_fires_only_over_its_threshold() -> None:
    at = defaults_at(100_000, 500_000)  # exactly 10 %: not over
    assert at["defaulted_face"] == 100_000 and at["triggers"] == [] and at["status"] == "revolving"
    over = defaults_at(100_001, 500_000)  # one fen over
    assert [t["kind"] for t in over["triggers"]] == ["default_rate"]
    assert over["triggers"][0]["day"] == at["launch_day"] + 40 + 30


def test_a_removed_holder_does_not_block_the_waterfall() -> None:
    """The consortium removes an investor (a vote of the members): tokens can no longer move to it. Its share
    of each payment stays in the SPV's account as unclaimed, counted in the receipt; the other holders and
    the senior-to-junior order are paid as before."""
    led = AbsLedger()
    deal = led.launched(servicer_grace_days=31, required_bps=0, revolving_end=led.date(60))  # cash pays the notes
    admins = [f"org{i}" for i in range(1, 8)]  # 7 of 13: a majority
    led.ok("consortium", "remove_org", {"org_id": INV2}, *admins)
    for _ in range(3):
        led.advance(days=30)
        report(led, deal)
    before = led.balance(INV1)
    r = led.run("abs.deal", "distribute", {"deal": deal}, SPV)
    assert r.ok, r.message
    steps = {s["step"]: s for s in r["result"]["steps"]}
    interest = steps["senior_interest"]
    assert interest["paid"] == interest["due"] and set(interest["payees"]) == {INV1, INV2}
    assert interest["unclaimed"] == {INV2: interest["payees"][INV2]}
    paid = {org: sum(s.get("payees", {}).get(org, 0) for s in steps.values()) for org in (INV1, INV2)}
    assert steps["senior_principal"]["paid"] == 700_000 and paid[INV2] == 300_000 + interest["payees"][INV2]
    assert led.balance(INV1) - before == paid[INV1]  # the others are paid as before
    d = led.deal(deal)
    assert d["unclaimed"] == {INV2: paid[INV2]} and r["result"]["unclaimed"] == paid[INV2]
    assert led.balance(SPV) == d["purchase_cash"] + d["collections"] + sum(d["unclaimed"].values())


def test_notes_cannot_be_transferred_to_a_removed_organisation() -> None:
    led = AbsLedger()
    deal = led.launched()
    led.ok("consortium", "remove_org", {"org_id": INV3}, *[f"org{i}" for i in range(1, 8)])
    before = snapshot(led)
    args = {"deal": deal, "tranche": "senior", "to": INV3, "amount": 1}
    led.fails(AbsCode.NOT_KYC, "abs.deal", "transfer", args, INV1, match="not an active")
    assert snapshot(led) == before


@settings(max_examples=200, deadline=None)
@given(
    amount=st.integers(0, 10**15),
    units=st.lists(st.integers(1, 10**15), min_size=1, max_size=abs_holders_max),
)
def test_every_fen_of_a_pro_rata_share_lands_with_a_holder(amount: int, units: list[int]) -> None:
    holdings = [(f"org{i}", u) for i, u in enumerate(units)]
    shares = pro_rata(amount, holdings)
    assert sum(s for _, s in shares) == amount  # conserved to the fen
    total = sum(units)
    for (_, u), (_, s) in zip(holdings, shares, strict=True):
        exact_floor = amount * u // total
        assert exact_floor <= s <= exact_floor + 1  # nobody gets more than a fen over their exact share


@settings(max_examples=200, deadline=None)
@given(
    balance=st.integers(0, 3 * 10**15),
    bps=st.integers(0, 10_000),
    days=st.integers(0, 20_000),
    basis=st.sampled_from(["act365", "act360"]),
)
def test_interest_is_exact_integer_arithmetic_rounded_down(balance: int, bps: int, days: int, basis: str) -> None:
    year = 365 if basis == "act365" else 360
    got = interest_fen(balance, bps, days, basis)
    assert got * 10_000 * year <= balance * bps * days < (got + 1) * 10_000 * year


def test_an_spv_that_drains_its_account_is_caught_and_the_rest_is_paid_by_seniority() -> None:
    """The deal's cash is the SPV's own token account, which it can move with its own signature. The contract
    sees the account below its books the next day (a ``cash_shortfall`` trigger: acceleration, an event every
    party sees), and the waterfall pays what is really there, senior first, the rest named as missing."""
    led = AbsLedger()
    deal = led.launched(servicer_grace_days=31, required_bps=0)
    assert led.run("scf.tokens", "transfer", {"bank": BANK, "to": INV3, "amount": 500_000}, SPV).ok
    led.advance(days=1)
    r = led.run("abs.deal", "report", {"deal": deal, "performing": 0, "delinquent": 0, "defaulted": 0}, ORIGINATOR)
    trig = r.event("trigger")
    assert trig["kind"] == "cash_shortfall" and trig["status"] == "accelerated"
    for step in (30, 30, 29):  # day 90: the first payment date
        led.advance(days=step)
        report(led, deal)
    r = led.run("abs.deal", "distribute", {"deal": deal}, SPV)
    assert r.ok, r.message
    receipt = r["result"]
    assert receipt["missing"] == 500_000 and receipt["available"] == 500_000 == receipt["paid_out"]
    steps = {s["step"]: s for s in receipt["steps"]}
    assert steps["senior_interest"]["short"] == 0
    assert steps["senior_principal"]["paid"] == 500_000 - 800 - steps["senior_interest"]["paid"]
    assert steps["mezzanine_interest"]["paid"] == 0 and steps["subordinated"]["paid"] == 0
    d = led.deal(deal)
    assert led.balance(SPV) == d["purchase_cash"] + d["collections"] == 0
    assert d["subscribed"] + d["collected"] == (
        d["purchased_price"] + d["distributed"] + d["purchase_cash"] + d["collections"] + d["missing"]
    )
