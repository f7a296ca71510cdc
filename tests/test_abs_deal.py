"""abs.deal: opening, KYC and subscription, eligibility, atomic purchase, collections, the waterfall in its
three orders, triggers, ratings and the investor report, on a real executor and the SCF contracts."""

from __future__ import annotations

from typing import Any

from abs_ledger import (
    AGENCY,
    BANK,
    BANK2,
    CORE_A,
    CORE_B,
    INV1,
    INV2,
    INV3,
    ORIGINATOR,
    REGULATOR,
    SPV,
    SUPPLIER,
    AbsLedger,
    deal_terms,
)
from liangcao.apps.abs.common import AbsCode, interest_fen, pro_rata
from liangcao.apps.scf.common import ScfCode, discount_fen
from liangcao.codes import Code


def fresh_state(led: AbsLedger) -> dict[str, bytes]:
    return dict(led.state.data)


def test_pro_rata_and_interest_are_exact() -> None:
    assert pro_rata(10, [("a", 1), ("b", 1), ("c", 1)]) == [("a", 4), ("b", 3), ("c", 3)]
    assert pro_rata(7, [("b", 2), ("a", 1)]) == [("b", 5), ("a", 2)]
    assert pro_rata(0, [("a", 5)]) == [("a", 0)]
    assert sum(s for _, s in pro_rata(1_000_003, [("x", 3), ("y", 7), ("z", 11)])) == 1_000_003
    assert interest_fen(700_000, 400, 90, "act365") == 6904  # 6904.1 rounded down
    assert interest_fen(200_000, 700, 90, "act360") == 3500


def test_open_refusals_change_nothing() -> None:
    led = AbsLedger()
    before = fresh_state(led)
    bad: list[tuple[int, dict[str, Any]]] = [
        (AbsCode.BAD_TERMS, {"originator": INV1}),  # not a factor
        (AbsCode.BAD_TERMS, {"custodian": CORE_A}),  # not a bank
        (AbsCode.BAD_TERMS, {"payment_dates": [led.date(90), led.date(80)]}),
        (AbsCode.BAD_TERMS, {"revolving_end": led.date(500)}),
        (AbsCode.BAD_TERMS, {"fees": [{"payee": SPV, "what": "fee", "amount": 1}]}),
    ]
    for code, over in bad:
        led.fails(code, "abs.deal", "open", deal_terms(led, **over), SPV, ORIGINATOR, actor=f"{SPV}/admin")
    terms = deal_terms(led)
    terms["tranches"][2]["coupon_bps"] = 100
    led.fails(AbsCode.BAD_TERMS, "abs.deal", "open", terms, SPV, ORIGINATOR, actor=f"{SPV}/admin")
    terms = deal_terms(led)
    terms["tranches"] = [terms["tranches"][1], terms["tranches"][0], terms["tranches"][2]]
    led.fails(AbsCode.BAD_TERMS, "abs.deal", "open", terms, SPV, ORIGINATOR, actor=f"{SPV}/admin")
    led.fails(AbsCode.NOT_PARTY, "abs.deal", "open", deal_terms(led), SPV)  # the originator did not sign
    led.fails(Code.INVALID_ARGUMENT, "abs.deal", "open", {**deal_terms(led), "discount_bps": "5"}, SPV, ORIGINATOR)
    assert fresh_state(led) == before
    led.open_deal()
    led.fails(AbsCode.SPV_BUSY, "abs.deal", "open", deal_terms(led), SPV, ORIGINATOR, actor=f"{SPV}/admin")


def test_subscription_kyc_launch_and_transfer() -> None:
    led = AbsLedger()
    deal = led.open_deal()
    sub = {"deal": deal, "tranche": "senior", "amount": 400_000}
    led.fails(AbsCode.NOT_KYC, "abs.deal", "subscribe", sub, INV1)
    led.fails(AbsCode.NOT_PARTY, "abs.deal", "kyc", {"deal": deal, "org": INV1}, INV1)
    led.fails(AbsCode.BAD_TERMS, "abs.deal", "kyc", {"deal": deal, "org": CORE_A}, SPV)  # not an investor
    led.ok("abs.deal", "kyc", {"deal": deal, "org": INV1}, SPV)
    before = led.balance(INV1)
    led.ok("abs.deal", "subscribe", sub, INV1)
    assert before - led.balance(INV1) == 400_000 and led.balance(SPV) == 400_000
    led.fails(AbsCode.OVERSUBSCRIBED, "abs.deal", "subscribe", {**sub, "amount": 300_001}, INV1)
    led.fails(AbsCode.NOT_SUBSCRIBED, "abs.deal", "launch", {"deal": deal}, SPV)
    # transfers go only to KYC'd investors, and only what the holder holds
    led.fails(AbsCode.NOT_KYC, "abs.deal", "transfer", {**sub, "to": INV2, "amount": 1}, INV1)
    led.ok("abs.deal", "kyc", {"deal": deal, "org": INV2}, SPV)
    led.fails(AbsCode.NOT_ENOUGH_NOTES, "abs.deal", "transfer", {**sub, "to": INV2, "amount": 400_001}, INV1)
    led.ok("abs.deal", "transfer", {**sub, "to": INV2, "amount": 150_000}, INV1)
    holders = led.query("abs.deal", "holders", {"deal": deal, "tranche": "senior"})["holders"]
    assert holders == {INV1: 250_000, INV2: 150_000}


def test_eligibility_rules_each_refuse_and_change_nothing() -> None:
    led = AbsLedger()
    deal = led.launched()
    ok_a = led.voucher(CORE_A, 300_000, 60)
    soon = led.voucher(CORE_A, 10_000, 10)  # due within the 10 days
    other_token = led.voucher(CORE_A, 10_000, 60, bank=BANK2)
    not_held = led.voucher(CORE_A, 10_000, 60, to=SUPPLIER)
    frozen = led.voucher(CORE_B, 10_000, 60)
    led.ok("scf.vouchers", "freeze", {"voucher": frozen}, REGULATOR)
    financed = led.voucher(CORE_B, 10_000, 60)
    led.ok("scf.vouchers", "request_financing", {"voucher": financed, "bank": BANK, "rate_bps": 300}, ORIGINATOR)
    led.ok("scf.vouchers", "accept_financing", {"voucher": financed}, BANK)
    pending = led.voucher(CORE_B, 10_000, 60)
    led.ok("scf.vouchers", "offer", {"voucher": pending, "to": SUPPLIER}, ORIGINATOR)
    big_a = led.voucher(CORE_A, 300_001, 60)  # with ok_a: 600,001 > 60 % of 1,000,000
    before = fresh_state(led)
    for code, vid in [
        (AbsCode.DUE_TOO_SOON, soon),
        (AbsCode.WRONG_TOKEN, other_token),
        (AbsCode.NOT_HELD, not_held),
        (AbsCode.FROZEN, frozen),
        (AbsCode.NOT_HELD, financed),  # the bank holds it now
        (AbsCode.NOT_ACTIVE, pending),
    ]:
        r = led.purchase(deal, [ok_a, vid])  # the good one is refused with it: all or nothing
        assert r["code"] == code, (code, r["code"], r["message"])
    args = {"deal": deal, "vouchers": [ok_a]}
    led.fails(AbsCode.NOT_PARTY, "abs.deal", "offer", args, SPV)  # only the holder offers
    led.fails(AbsCode.NOT_OFFERED, "abs.deal", "purchase", args, SPV)
    led.fails(AbsCode.NOT_OFFERED, "abs.deal", "decline", args, SPV)
    assert fresh_state(led) == before
    # concentration is checked when the SPV buys: the offers stay pending until it declines them
    r = led.purchase(deal, [ok_a, big_a])
    assert r["code"] == AbsCode.CONCENTRATION, r["message"]
    led.fails(AbsCode.NOT_PARTY, "abs.deal", "purchase", args, ORIGINATOR)  # the SPV buys
    led.fails(AbsCode.NOT_PARTY, "abs.deal", "decline", args, ORIGINATOR)
    led.ok("abs.deal", "decline", {"deal": deal, "vouchers": [big_a]}, SPV)
    assert led.query("scf.vouchers", "voucher", {"voucher": big_a})["offer_to"] is None
    assert led.ok("abs.deal", "purchase", args, SPV)["face"] == 300_000
    # a voucher the originator got financed (and bought back) is never eligible
    led.ok("scf.vouchers", "offer", {"voucher": financed, "to": ORIGINATOR}, BANK)
    led.ok("scf.vouchers", "accept", {"voucher": financed}, ORIGINATOR)
    assert led.purchase(deal, [financed])["code"] == AbsCode.FINANCED


def test_purchase_moves_title_and_price_in_one_transaction() -> None:
    led = AbsLedger()
    deal = led.launched()
    va = led.voucher(CORE_A, 300_000, 60)
    vb = led.voucher(CORE_B, 400_000, 120)
    seller = led.balance(ORIGINATOR)
    r = led.purchase(deal, [va, vb])
    assert r.ok
    price = 300_000 - discount_fen(300_000, 500, 60) + 400_000 - discount_fen(400_000, 500, 120)
    assert r["result"] == {"face": 700_000, "price": price, "purchase_cash": 1_000_000 - price}
    assert led.balance(ORIGINATOR) - seller == price
    assert led.balance(SPV) == 1_000_000 - price
    for vid in (va, vb):
        v = led.query("scf.vouchers", "voucher", {"voucher": vid})
        assert (v["holder"], v["offer_to"]) == (SPV, None)
    # at most one pool: not again, and a factoring pool cannot take it from the SPV either
    assert led.purchase(deal, [va])["code"] == AbsCode.IN_POOL
    # not enough cash for the rest
    vc = led.voucher(CORE_B, 200_000, 60)
    vd = led.voucher(CORE_A, 200_000, 60)
    assert led.purchase(deal, [vc, vd])["code"] == AbsCode.NOT_ENOUGH_CASH


def test_a_factoring_pool_asset_is_in_another_pool() -> None:
    led = AbsLedger()
    deal = led.launched()
    vid = led.voucher(CORE_A, 100_000, 60)
    # the originator's receivable assigned to a factoring pool at the custodian (as the seller)
    pool = led.ok(
        "scf.factoring",
        "open",
        {"seller": ORIGINATOR, "factor": BANK, "advance_rate_bps": 8_000, "credit_line": 1_000_000},
        ORIGINATOR,
        BANK,
        actor=f"{ORIGINATOR}/admin",
    )["pool"]
    led.ok("scf.factoring", "assign", {"pool": pool, "vouchers": [vid]}, ORIGINATOR)
    r = led.purchase(deal, [vid])
    assert r["code"] == AbsCode.IN_POOL and "factoring pool" in r["message"]
    # withdrawn from the factoring pool (nothing advanced against it), it is the originator's again: eligible
    led.ok("scf.factoring", "withdraw", {"pool": pool, "voucher": vid}, ORIGINATOR)
    assert led.purchase(deal, [vid]).ok
    assert led.query("scf.vouchers", "voucher", {"voucher": vid})["holder"] == SPV


def collect_settled(led: AbsLedger, deal: str, vid: str, obligor: str) -> None:
    led.ok("scf.vouchers", "settle", {"voucher": vid}, obligor)
    led.ok("abs.deal", "collect", {"deal": deal}, INV1)


def report(led: AbsLedger, deal: str) -> dict[str, Any]:
    fig = led.query("abs.deal", "deal", {"deal": deal})["figures"]
    args = {
        "deal": deal,
        "performing": fig["performing"],
        "delinquent": fig["delinquent"],
        "defaulted": fig["defaulted"],
    }
    return dict(led.ok("abs.deal", "report", args, ORIGINATOR))


def test_revolving_waterfall_retains_for_purchases_then_residual() -> None:
    led = AbsLedger()
    deal = led.launched(servicer_grace_days=31, required_bps=5_000)
    va = led.voucher(CORE_A, 300_000, 60)
    vb = led.voucher(CORE_B, 600_000, 200)
    assert led.purchase(deal, [va, vb]).ok
    cash = led.deal(deal)["purchase_cash"]
    led.advance(days=30)
    report(led, deal)
    led.advance(days=30)
    report(led, deal)
    collect_settled(led, deal, va, CORE_A)
    led.advance(days=30)  # the first payment date (day 90)
    r = led.run("abs.deal", "distribute", {"deal": deal}, SPV)
    assert r.ok, r["message"]
    receipt = r["result"]
    steps = {s["step"]: s for s in receipt["steps"]}
    senior = interest_fen(700_000, 400, 90, "act365")
    mezz = interest_fen(200_000, 700, 90, "act360")
    assert steps["senior_interest"]["payees"] == dict(pro_rata(senior, [(INV1, 400_000), (INV2, 300_000)]))
    assert steps["mezzanine_interest"]["paid"] == mezz
    # the pool must back the notes at par: 1,000,000 - 600,000 performing - purchase cash
    need = 1_000_000 - 600_000 - cash
    assert steps["purchases"]["due"] == need
    left = 300_000 - 800 - senior - mezz
    assert steps["purchases"]["paid"] == min(need, left)
    assert steps["subordinated"]["paid"] == left - min(need, left)
    assert receipt["available"] == 300_000 == receipt["paid_out"] + receipt["retained"]
    assert sum(s["paid"] for s in receipt["steps"]) == receipt["available"]
    led.fails(AbsCode.NOT_PAYMENT_DATE, "abs.deal", "distribute", {"deal": deal}, SPV)


def test_pool_balance_trigger_fires_on_the_thirtieth_day() -> None:
    led = AbsLedger()
    deal = led.launched(servicer_grace_days=31, required_bps=5_000)  # required: 500,000
    va = led.voucher(CORE_A, 300_000, 40)
    vb = led.voucher(CORE_B, 300_000, 300)
    assert led.purchase(deal, [va, vb]).ok
    start = led.today
    # va comes due on day 40: from then on the performing pool is 300,000 < 500,000
    for step in (30, 30, 8):  # day 68: 29 days in breach (days 40..68)
        led.advance(days=step)
        r = report(led, deal)
    assert r["status"] == "revolving"
    led.advance(days=1)  # day 69: the 30th day
    receipt = led.run(
        "abs.deal", "report", {"deal": deal, "performing": 0, "delinquent": 0, "defaulted": 0}, ORIGINATOR
    )
    trig = receipt.event("trigger")
    assert trig["kind"] == "pool_balance" and trig["day"] == start + 69
    assert receipt["result"]["agrees"] is False and receipt["result"]["status"] == "amortising"
    assert led.purchase(deal, [led.voucher(CORE_A, 10_000, 100)])["code"] == AbsCode.WRONG_STATUS


def test_a_cured_breach_restarts_the_count() -> None:
    led = AbsLedger()
    deal = led.launched(servicer_grace_days=31, required_bps=5_000)
    va = led.voucher(CORE_A, 300_000, 40)
    vb = led.voucher(CORE_B, 300_000, 300)
    assert led.purchase(deal, [va, vb]).ok
    led.advance(days=30)
    report(led, deal)
    led.advance(days=10)
    led.ok("scf.vouchers", "settle", {"voucher": va}, CORE_A)  # paid when due: no default
    led.advance(days=20)  # 20 days in breach
    assert led.purchase(deal, [led.voucher(CORE_A, 250_000, 200)]).ok  # cured from tomorrow
    assert led.deal(deal)["breach_since"] is not None  # today was tested at its start
    led.advance(days=1)
    report(led, deal)
    assert led.deal(deal)["breach_since"] is None
    led.advance(days=25)
    report(led, deal)
    assert led.deal(deal)["status"] == "revolving" and led.deal(deal)["triggers"] == []


def test_servicer_default_accelerates_and_pays_sequentially() -> None:
    led = AbsLedger()
    deal = led.launched()
    va = led.voucher(CORE_A, 500_000, 40)
    assert led.purchase(deal, [va]).ok
    start = led.today
    led.advance(days=2)
    report(led, deal)  # day 2
    led.advance(days=5)  # silent days 3..7: the 4th silent day (day 6) is the default
    r = led.run("abs.deal", "evaluate", {"deal": deal}, INV3)
    trig = r.event("trigger")
    assert trig["kind"] == "servicer_default" and trig["day"] == start + 6
    assert r["result"]["status"] == "accelerated"
    led.advance(days=40)
    collect_settled(led, deal, va, CORE_A)
    led.advance(days=90 - 47)
    receipt = led.ok("abs.deal", "distribute", {"deal": deal}, SPV)
    order = [s["step"] for s in receipt["steps"]]
    assert order == [
        "fee:custody",
        "fee:tax",
        "senior_interest",
        "senior_principal",
        "mezzanine_interest",
        "mezzanine_principal",
        "subordinated",
    ]
    # accelerated: the unspent purchase cash joins the collections
    assert receipt["available"] == 500_000 + 1_000_000 - (500_000 - discount_fen(500_000, 500, 40))
    assert receipt["retained"] == 0 and receipt["paid_out"] == receipt["available"]
    steps = {s["step"]: s for s in receipt["steps"]}
    assert steps["senior_principal"]["paid"] == 700_000  # the senior notes first, in full
    assert steps["mezzanine_interest"]["paid"] > 0
    # a regulator cannot declare it again
    led.fails(AbsCode.ALREADY_FIRED, "abs.deal", "declare_servicer_default", {"deal": deal}, REGULATOR)


def test_default_rate_trigger_and_ratings_and_report() -> None:
    led = AbsLedger()
    deal = led.launched(servicer_grace_days=31, default_rate_max_bps=3_000)
    va = led.voucher(CORE_A, 300_000, 40)
    vb = led.voucher(CORE_B, 500_000, 120)
    assert led.purchase(deal, [va, vb]).ok
    start = led.today
    led.ok("abs.deal", "rate", {"deal": deal, "tranche": "senior", "rating": "AAA"}, AGENCY)
    led.fails(Code.WRONG_ORG_TYPE, "abs.deal", "rate", {"deal": deal, "tranche": "senior", "rating": "AAA"}, INV1)
    for _ in range(2):
        led.advance(days=30)
        report(led, deal)
    rep = led.query("abs.deal", "investor_report", {"deal": deal})
    assert rep["delinquencies"][0]["voucher"] == va and rep["delinquencies"][0]["days_past_due"] == 20
    led.advance(days=10)  # day 70: va is 30 days past due, unpaid: 300,000 / 800,000 = 37.5 % > 30 %
    r = led.run(
        "abs.deal", "report", {"deal": deal, "performing": 500_000, "delinquent": 0, "defaulted": 300_000}, ORIGINATOR
    )
    assert r["result"]["agrees"] is True
    names = [e["name"] for e in r["events"]]
    assert names.index("defaulted") < names.index("trigger")
    assert r.event("trigger") == {
        "deal": deal,
        "kind": "default_rate",
        "day": start + 70,
        "date": led.date(0),
        "effect": "early_amortisation",
        "status": "amortising",
    }
    rep = led.query("abs.deal", "investor_report", {"deal": deal})
    assert rep["cumulative_default_bps"] == 3_750
    assert rep["tranches"][0]["ratings"][0]["rating"] == "AAA"
    assert rep["by_obligor"] == [
        {"obligor": CORE_A, "face": 300_000, "share_bps": 3_750},
        {"obligor": CORE_B, "face": 500_000, "share_bps": 6_250},
    ]
    # a late payment of a defaulted receivable is a recovery
    led.ok("scf.vouchers", "settle", {"voucher": va}, CORE_A)
    led.ok("abs.deal", "collect", {"deal": deal}, INV2)
    assert led.deal(deal)["recoveries"] == 300_000
    assert led.query("abs.deal", "deals", {})["deals"] == [{"deal": deal, "spv": SPV}]
    assert INV3


def test_pooled_vouchers_are_locked_against_the_spv_itself() -> None:
    """Title sits in the deal's pool (``scf.vouchers.pool_assign``): the SPV cannot offer, split or finance a
    pool voucher with its own signature, so the investors' collateral cannot walk away; the issuer still
    settles it to the SPV, and the contract collects it."""
    led = AbsLedger()
    deal = led.launched(servicer_grace_days=31, default_rate_max_bps=10_000)
    va = led.voucher(CORE_A, 300_000, 60)
    vb = led.voucher(CORE_B, 200_000, 60)
    assert led.purchase(deal, [va, vb]).ok
    before = led.items("scf.vouchers/")
    led.fails(ScfCode.IN_POOL, "scf.vouchers", "split", {"voucher": va, "amounts": [100_000]}, SPV)
    led.fails(ScfCode.IN_POOL, "scf.vouchers", "request_financing", {"voucher": vb, "bank": BANK, "rate_bps": 300}, SPV)
    led.fails(ScfCode.IN_POOL, "scf.vouchers", "offer", {"voucher": va, "to": BANK}, SPV)
    assert led.items("scf.vouchers/") == before
    led.advance(days=1)
    r = led.run("abs.deal", "evaluate", {"deal": deal}, INV1)
    assert not [e for e in r["events"] if e["name"] == "defaulted"]
    assert r["result"]["figures"]["performing"] == 500_000
    led.advance(days=60)
    led.ok("scf.vouchers", "settle", {"voucher": vb}, CORE_B)
    led.ok("abs.deal", "collect", {"deal": deal}, INV1)


def test_the_cli_offers_every_public_action() -> None:
    from typer.testing import CliRunner

    from liangcao.cli import app

    runner = CliRunner()
    out = runner.invoke(app, ["abs", "deal", "--help"], env={"COLUMNS": "200"}).output
    for action in (
        "open",
        "kyc",
        "subscribe",
        "launch",
        "offer",
        "purchase",
        "decline",
        "collect",
        "report",
        "evaluate",
        "distribute",
        "rate",
        "transfer",
        "investor-report",
        "declare-servicer-default",
    ):
        assert f" {action} " in out, action
    out = runner.invoke(app, ["abs", "deal", "purchase", "--help"], env={"COLUMNS": "200"}).output
    assert "--deal" in out and "--vouchers" in out
