"""Factoring pools: assign, draw within advance_rate x eligible and the credit line, maturity, replacement, collection."""

from __future__ import annotations

from typing import Any

from liangcao.apps.scf.common import ScfCode
from liangcao.codes import Code
from scf_ledger import BANK, CORE, DAY_MS, REGULATOR, T1, T2, Ledger, register_invoice


def voucher(led: Ledger, to: str, face: int, days: int, number: str) -> str:
    inv = register_invoice(led, to, CORE, face, number)
    vid = led.ok(
        "scf.vouchers",
        "issue",
        {"to": to, "face": face, "maturity": led.today_iso(days), "invoices": [inv], "settlement_bank": BANK},
        CORE,
    )["voucher"]
    led.ok("scf.vouchers", "accept", {"voucher": vid}, to)
    return str(vid)


def setup() -> tuple[Ledger, str]:
    led = Ledger()
    led.ok("scf.tokens", "issue", {"to": BANK, "amount": 10**12}, BANK)
    led.ok("scf.tokens", "issue", {"to": CORE, "amount": 10**12}, BANK)
    pool = led.ok(
        "scf.factoring",
        "open",
        {"seller": T1, "factor": BANK, "advance_rate_bps": 8_000, "credit_line": 1_000_000},
        T1,
        BANK,
    )["pool"]
    return led, str(pool)


def test_pool_lifecycle() -> None:
    led, pool = setup()
    v30 = voucher(led, T1, 500_000, 30, "f1")
    v60 = voucher(led, T1, 600_000, 60, "f2")
    led.ok("scf.factoring", "assign", {"pool": pool, "vouchers": [v30, v60]}, T1)
    p = led.query("scf.factoring", "pool", {"pool": pool})
    # 80 % of 1,100,000 is 880,000, within the 1,000,000 line
    assert (p["eligible"], p["capacity"], p["headroom"]) == (1_100_000, 880_000, 880_000)
    assert led.query("scf.vouchers", "voucher", {"voucher": v30})["holder"] == BANK
    before = led.balance(T1)
    r = led.run("scf.factoring", "draw", {"pool": pool, "amount": 880_001}, T1)
    assert r["code"] == ScfCode.OVER_ADVANCE and "capacity 880000" in r["message"]
    led.ok("scf.factoring", "draw", {"pool": pool, "amount": 800_000}, T1)
    assert led.balance(T1) - before == 800_000
    # the first voucher matures: it leaves the eligible balance (480,000 capacity < 800,000 advanced)
    led.time_ms += 30 * DAY_MS
    p = led.query("scf.factoring", "pool", {"pool": pool})
    assert (p["eligible"], p["capacity"]) == (600_000, 480_000)
    assert led.run("scf.factoring", "draw", {"pool": pool, "amount": 1}, T1)["code"] == ScfCode.OVER_ADVANCE
    # a matured asset cannot be withdrawn; a new one replaces it
    assert led.run("scf.factoring", "withdraw", {"pool": pool, "voucher": v30}, T1)["code"] == ScfCode.NOT_ELIGIBLE
    v90 = voucher(led, T1, 700_000, 60, "f3")
    led.ok("scf.factoring", "assign", {"pool": pool, "vouchers": [v90]}, T1)
    assert led.query("scf.factoring", "pool", {"pool": pool})["capacity"] == 1_000_000  # the credit line binds
    # withdrawing v60 would leave 560,000 of capacity for 800,000 advanced
    assert led.run("scf.factoring", "withdraw", {"pool": pool, "voucher": v60}, T1)["code"] == ScfCode.OVER_ADVANCE
    # the issuer settles v30: the factor is paid; the sweep pays down the advance with it
    led.ok("scf.vouchers", "settle", {"voucher": v30}, CORE)
    seller_before = led.balance(T1)
    swept = led.ok("scf.factoring", "sweep", {"pool": pool}, REGULATOR)
    assert swept == {"collected": [v30], "advanced": 300_000, "more": False}
    assert led.balance(T1) == seller_before  # all 500,000 went to the advance
    assert led.run("scf.factoring", "sweep", {"pool": pool}, T1)["code"] == ScfCode.NOT_ACTIVE
    # now v60 may leave: 700,000 x 80 % = 560,000 still covers 300,000
    led.ok("scf.factoring", "withdraw", {"pool": pool, "voucher": v60}, T1)
    v = led.query("scf.vouchers", "voucher", {"voucher": v60})
    assert (v["holder"], v["pool"]) == (T1, None)
    # and the seller can use it again (here: finance it at the bank)
    led.ok("scf.vouchers", "request_financing", {"voucher": v60, "bank": BANK, "rate_bps": 500}, T1)
    # the seller repays part; at maturity the rest is collected and the surplus passed on
    led.ok("scf.factoring", "repay", {"pool": pool, "amount": 100_000}, T1)
    led.time_ms += 60 * DAY_MS
    led.ok("scf.vouchers", "settle", {"voucher": v90}, CORE)
    seller_before = led.balance(T1)
    led.ok("scf.factoring", "sweep", {"pool": pool}, T2)
    p = led.query("scf.factoring", "pool", {"pool": pool})
    assert p["advanced"] == 0 and p["assets"] == [] and p["collected"] == 1_200_000
    assert led.balance(T1) - seller_before == 700_000 - 200_000
    led.ok("scf.factoring", "close", {"pool": pool}, BANK)
    assert led.run("scf.factoring", "assign", {"pool": pool, "vouchers": [v60]}, T1)["code"] == ScfCode.NOT_ACTIVE
    assert [q["id"] for q in led.query("scf.factoring", "pools", {"org": T1})["pools"]] == [pool]


def test_a_receivable_is_in_at_most_one_pool() -> None:
    led, pool = setup()
    other = led.ok(
        "scf.factoring", "open", {"seller": T1, "factor": BANK, "advance_rate_bps": 5_000, "credit_line": 10}, T1, BANK
    )["pool"]
    vid = voucher(led, T1, 1_000, 30, "g1")
    inv = register_invoice(led, T1, T2, 2_000, "g2")
    led.ok("scf.invoices", "confirm", {"key": inv, "due": led.today_iso(20)}, T2)
    led.ok("scf.factoring", "assign", {"pool": pool, "vouchers": [vid], "invoices": [inv]}, T1)
    before = dict(led.state.data)
    for args, code in (
        ({"vouchers": [vid]}, ScfCode.IN_POOL),
        ({"invoices": [inv]}, ScfCode.INVOICE_USED),
    ):
        r = led.run("scf.factoring", "assign", {"pool": other, **args}, T1)
        assert r["code"] == code, r
        assert led.state.data == before
    # a pooled voucher cannot be split, offered or financed by anyone, the factor included
    for method, args, who in [
        ("split", {"voucher": vid, "amounts": [1]}, BANK),
        ("offer", {"voucher": vid, "to": T2}, BANK),
        ("request_financing", {"voucher": vid, "bank": BANK, "rate_bps": 1}, BANK),
    ]:
        assert led.run("scf.vouchers", method, args, who)["code"] == ScfCode.IN_POOL
    # the invoice's buyer pays the factor; the pool collects it (nothing was advanced: all goes to the seller)
    led.ok("scf.tokens", "issue", {"to": T2, "amount": 5_000}, BANK)
    seller_before = led.balance(T1)
    led.ok("scf.factoring", "collect_invoice", {"pool": pool, "invoice": inv}, T2)
    assert led.balance(T1) - seller_before == 2_000
    assert led.run("scf.factoring", "collect_invoice", {"pool": pool, "invoice": inv}, T2)["code"] == Code.NOT_FOUND


def test_forbidden_pool_actions_change_nothing() -> None:
    led, pool = setup()
    vid = voucher(led, T2, 1_000, 30, "h1")
    mine = voucher(led, T1, 1_000, 30, "h2")
    cases: list[tuple[str, dict[str, Any], tuple[str, ...], int]] = [
        ("open", {"seller": T1, "factor": T2, "advance_rate_bps": 1, "credit_line": 1}, (T1, T2), ScfCode.NOT_A_BANK),
        ("open", {"seller": T1, "factor": BANK, "advance_rate_bps": 1, "credit_line": 1}, (T1,), ScfCode.NOT_PARTY),
        (
            "open",
            {"seller": T1, "factor": BANK, "advance_rate_bps": 10_001, "credit_line": 1},
            (T1, BANK),
            Code.INVALID_ARGUMENT,
        ),
        ("assign", {"pool": pool, "vouchers": [vid]}, (T1,), ScfCode.NOT_ELIGIBLE),  # not the seller's voucher
        ("assign", {"pool": pool, "vouchers": [mine]}, (T2,), ScfCode.NOT_PARTY),
        ("assign", {"pool": pool}, (T1,), Code.INVALID_ARGUMENT),
        ("draw", {"pool": pool, "amount": 1}, (T1,), ScfCode.OVER_ADVANCE),  # nothing in the pool yet
        ("draw", {"pool": pool, "amount": 0}, (T1,), Code.INVALID_ARGUMENT),
        ("repay", {"pool": pool, "amount": 1}, (T1,), Code.INVALID_ARGUMENT),
        ("withdraw", {"pool": pool, "voucher": mine}, (T1,), Code.NOT_FOUND),
        ("close", {"pool": pool}, (T2,), ScfCode.NOT_PARTY),
    ]
    for method, args, who, code in cases:
        before = dict(led.state.data)
        r = led.run("scf.factoring", method, args, *who)
        assert r["code"] == code, (method, args, r)
        assert led.state.data == before
