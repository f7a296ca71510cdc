"""The cover contract: products, capital, policies, claims decided from facts, refusals with their own codes."""

from __future__ import annotations

from cover_ledger import (
    COURIER,
    INSURER,
    OTHER_ADDRESS,
    PLATFORM,
    WAREHOUSE,
    CoverChain,
    return_event,
)
from liangcao.apps.cover.rules import CoverCode, premium_fen, transfer_id
from liangcao.codes import Code


def setup() -> CoverChain:
    c = CoverChain()
    c.ok("cover", "pledge_capital", {"amount": 1_000_000}, INSURER)
    c.product("rs", "return_shipping")
    c.product("pp", "price_protection")
    c.product("lr", "local_return")
    return c


def test_rice_cooker_both_covers_pay_from_facts() -> None:
    c = setup()
    rs, pp = c.buy(["rs", "pp"], "order-1")
    assert rs["premium"] == 80 and pp["premium"] == 100 + 200  # 0.5 % of 399.00
    assert pp["exposure"] == 20_000 and rs["exposure"] == 1_200
    assert c.capital()["reserved"] == 21_200
    # day 5: the price drops (a flash sale first, which does not count), then regularly
    c.advance(days=5)
    c.ok("cover", "post_price", {"sku": "rice-cooker-mi-3l", "price": 29_900, "mark": "flash_sale"}, PLATFORM)
    c.fails(CoverCode.EXCLUDED_PRICE, "cover", "claim", {"policy": pp["id"]}, PLATFORM)
    c.ok("cover", "post_price", {"sku": "rice-cooker-mi-3l", "price": 34_900}, PLATFORM)
    claim = c.ok("cover", "claim", {"policy": pp["id"]}, PLATFORM)
    assert claim["status"] == "approved" and claim["amount"] == 5_000
    assert claim["rule"]["lowest_regular"] == 34_900 and claim["facts"][0]["price"] == 34_900
    # the return is picked up at the order's address by the courier
    eid = c.anchor(return_event("order-1", c.time_ms))
    r = c.run("cover", "claim", {"policy": rs["id"], "event": eid}, PLATFORM)
    assert r.ok and r.result["amount"] == 1_200 and r.result["facts"][0]["event"] == eid
    approved = r.event("claim_approved")
    assert approved["transfer"] == transfer_id("payout", rs["id"])
    cap = c.capital()
    assert (cap["reserved"], cap["owed"]) == (0, 6_200)
    # each claim once
    c.fails(CoverCode.ALREADY_CLAIMED, "cover", "claim", {"policy": rs["id"], "event": eid}, PLATFORM)
    c.fails(CoverCode.ALREADY_CLAIMED, "cover", "claim", {"policy": pp["id"]}, PLATFORM)
    # payouts recorded once, under the derived transfer id only, by the insurer only
    c.fails(CoverCode.WRONG_TRANSFER, "cover", "record_payout", {"policy": rs["id"], "transfer": "0" * 32}, INSURER)
    c.fails(
        CoverCode.NOT_INSURER,
        "cover",
        "record_payout",
        {"policy": rs["id"], "transfer": approved["transfer"]},
        PLATFORM,
    )
    c.ok("cover", "record_payout", {"policy": rs["id"], "transfer": approved["transfer"]}, INSURER)
    c.fails(
        CoverCode.ALREADY_PAID,
        "cover",
        "record_payout",
        {"policy": rs["id"], "transfer": approved["transfer"]},
        INSURER,
    )
    view = c.query("cover", "policy", {"policy": rs["id"]})
    assert view["claim"]["status"] == "paid" and view["payout"]["paid"] and view["policy"]["status"] == "paid"
    cap = c.capital()
    assert (cap["owed"], cap["paid"], cap["pledged"]) == (5_000, 1_200, 1_000_000 - 1_200)
    assert c.query("cover", "due", {"insurer": INSURER})["payouts"] == [{"policy": pp["id"], "amount": 5_000}]


def test_capital_bounds_reserves() -> None:
    c = CoverChain()
    c.product("pp", "price_protection")
    c.fails(CoverCode.OVER_CAPITAL, "cover", "buy", {"products": ["pp"], "order": "o", "shopper": "s", "sku": "x",
            "price_paid": 100, "address": "a", "device": "d"}, PLATFORM)  # fmt: skip
    c.ok("cover", "pledge_capital", {"amount": 25_000}, INSURER)
    c.buy(["pp"], "o1")  # 20,000 reserved
    c.fails(CoverCode.OVER_CAPITAL, "cover", "buy", {"products": ["pp"], "order": "o2", "shopper": "s", "sku": "x",
            "price_paid": 39_900, "address": "a", "device": "d"}, PLATFORM)  # fmt: skip
    c.buy(["pp"], "o3", price=5_000)  # price protection never exposes more than the price
    c.fails(CoverCode.CAPITAL_IN_USE, "cover", "release_capital", {"amount": 1}, INSURER)
    c.fails(CoverCode.NOT_INSURER, "cover", "pledge_capital", {"amount": 1}, PLATFORM)


def test_refusals_each_with_its_code_change_nothing() -> None:
    c = setup()
    rs, lr = c.buy(["rs", "lr"], "order-2")
    before = dict(c.state.data)
    c.fails(CoverCode.NO_FACT, "cover", "claim", {"policy": rs["id"]}, PLATFORM)
    c.fails(CoverCode.NO_FACT, "cover", "claim", {"policy": rs["id"], "event": "ni:///sha-256;" + "a" * 64}, PLATFORM)
    assert {k: v for k, v in c.state.data.items() if k.startswith("cover/")} == {
        k: v for k, v in before.items() if k.startswith("cover/")
    }
    wrong_order = c.anchor(return_event("order-9", c.time_ms, rma="x"))
    c.fails(CoverCode.WRONG_FACT, "cover", "claim", {"policy": rs["id"], "event": wrong_order}, PLATFORM)
    by_warehouse = c.anchor(return_event("order-2", c.time_ms, rma="w"), WAREHOUSE)
    c.fails(CoverCode.WRONG_FACT, "cover", "claim", {"policy": rs["id"], "event": by_warehouse}, PLATFORM)
    elsewhere = c.anchor(return_event("order-2", c.time_ms, address=OTHER_ADDRESS, rma="e"))
    c.fails(CoverCode.ADDRESS_MISMATCH, "cover", "claim", {"policy": rs["id"], "event": elsewhere}, PLATFORM)
    # the local return needs the warehouse's receiving event; the courier's shipping one proves nothing
    c.fails(CoverCode.WRONG_FACT, "cover", "claim", {"policy": lr["id"], "event": elsewhere}, PLATFORM)
    dropoff = c.anchor(return_event("order-2", c.time_ms, step="receiving", rma="d"), WAREHOUSE)
    assert c.ok("cover", "claim", {"policy": lr["id"], "event": dropoff}, PLATFORM)["amount"] == 800
    # after the window
    c.advance(days=8)
    late = c.anchor(return_event("order-2", c.time_ms, rma="late"))
    c.fails(CoverCode.AFTER_WINDOW, "cover", "claim", {"policy": rs["id"], "event": late}, PLATFORM)
    c.ok("cover", "expire", {"policy": rs["id"]}, COURIER)
    c.fails(CoverCode.ALREADY_CLAIMED, "cover", "expire", {"policy": rs["id"]}, COURIER)
    assert c.capital()["reserved"] == 0


def test_a_fact_decides_one_claim_and_events_before_the_purchase_prove_nothing() -> None:
    c = setup()
    early = c.anchor(return_event("order-3", c.time_ms, rma="early"))
    (a,) = c.buy(["rs"], "order-3")
    c.fails(CoverCode.WRONG_FACT, "cover", "claim", {"policy": a["id"], "event": early}, PLATFORM)
    eid = c.anchor(return_event("order-3", c.time_ms))
    c.ok("cover", "claim", {"policy": a["id"], "event": eid}, PLATFORM)
    (b,) = c.buy(["rs"], "order-3", sku="other-sku")
    c.fails(CoverCode.FACT_USED, "cover", "claim", {"policy": b["id"], "event": eid}, PLATFORM)
    c.fails(Code.ALREADY_EXISTS, "cover", "buy", {"products": ["rs"], "order": "order-3", "shopper": "s1",
            "sku": "rice-cooker-mi-3l", "price_paid": 1, "address": "a", "device": "d"}, PLATFORM)  # fmt: skip


def test_claim_ratio_prices_return_shipping_and_frequency_is_limited() -> None:
    c = setup()
    c.product("rs2", "return_shipping", shopper_returns_max=2)
    paid = []
    for n in range(3):
        (p,) = c.buy(["rs2"], f"o{n}", shopper="heavy")
        paid.append(p["premium"])
        eid = c.anchor(return_event(f"o{n}", c.time_ms, rma=f"h{n}", item=n))
        if n < 2:
            c.ok("cover", "claim", {"policy": p["id"], "event": eid}, PLATFORM)
        else:
            c.fails(CoverCode.TOO_FREQUENT, "cover", "claim", {"policy": p["id"], "event": eid}, PLATFORM)
    # no history: the base; after 1 claim of 1 policy: base * (1 + 2.0); after 2 of 2: the same ratio
    assert paid == [80, premium_fen("return_shipping", 80, 0, 20_000, 39_900, 1, 1), 240]
    assert c.query("cover", "shopper", {"platform": PLATFORM, "shopper": "heavy"})["claims"] == 2
    c.advance(days=31)  # the frequency window moves on
    (p,) = c.buy(["rs2"], "o9", shopper="heavy")
    assert p["premium"] == 80 + 107  # 2 claims of 3 policies: 80 x 2.0 x 2/3 = 106.67, half up
    c.ok("cover", "claim", {"policy": p["id"], "event": c.anchor(return_event("o9", c.time_ms, rma="h9"))}, PLATFORM)
    # a product that refuses shoppers who claim more than 90 % of their cover
    c.product("careful", "return_shipping", refuse_ratio_bps=9_000)
    (q,) = c.buy(["careful"], "n0", shopper="new")
    c.ok("cover", "claim", {"policy": q["id"], "event": c.anchor(return_event("n0", c.time_ms, rma="n0"))}, PLATFORM)
    c.fails(CoverCode.HIGH_RISK, "cover", "buy", {"products": ["careful"], "order": "n1", "shopper": "new",
            "sku": "k", "price_paid": 100, "address": "a", "device": "d"}, PLATFORM)  # fmt: skip


def test_bulk_accounts_are_held_for_review() -> None:
    c = setup()
    policies = [c.buy(["rs"], f"b{n}", shopper=f"bulk{n}", device="shared-phone")[0] for n in range(5)]
    eid = c.anchor(return_event("b4", c.time_ms))
    claim = c.ok("cover", "claim", {"policy": policies[4]["id"], "event": eid}, PLATFORM)
    assert claim["status"] == "held" and "device" in claim["held"]
    assert c.capital()["owed"] == 0 and c.query("cover", "due", {"insurer": INSURER})["payouts"] == []
    c.fails(CoverCode.NOT_INSURER, "cover", "review", {"policy": policies[4]["id"], "approve": True}, PLATFORM)
    c.fails(CoverCode.NOT_HELD, "cover", "review", {"policy": policies[0]["id"], "approve": True}, INSURER)
    r = c.run("cover", "review", {"policy": policies[4]["id"], "approve": False}, INSURER)
    assert r.ok and r.result["status"] == "rejected"
    assert c.capital()["reserved"] == 4 * 1_200
    # a risk engine's verdict, through the platform: the shopper's claims wait for the insurer, who approves
    c.fails(CoverCode.NOT_INSURER, "cover", "flag", {"shopper": "s9", "reason": "x"}, COURIER)
    c.ok("cover", "flag", {"shopper": "s9", "reason": "risk: many returns across platforms"}, PLATFORM)
    (p,) = c.buy(["rs"], "f1", shopper="s9")
    held = c.ok(
        "cover", "claim", {"policy": p["id"], "event": c.anchor(return_event("f1", c.time_ms, rma="f"))}, PLATFORM
    )
    assert held["status"] == "held" and "risk" in held["held"]
    r = c.run("cover", "review", {"policy": p["id"], "approve": True}, INSURER)
    assert r.ok and r.event("claim_approved")["amount"] == 1_200 and c.capital()["owed"] == 1_200
    c.ok("cover", "flag", {"shopper": "s9", "reason": ""}, PLATFORM)
    (q,) = c.buy(["rs"], "f2", shopper="s9", address=OTHER_ADDRESS)  # six shoppers share ADDRESS by now
    pickup = c.anchor(return_event("f2", c.time_ms, rma="g", address=OTHER_ADDRESS))
    ok = c.ok("cover", "claim", {"policy": q["id"], "event": pickup}, PLATFORM)
    assert ok["status"] == "approved", ok["held"]


def test_products_rules_are_checked() -> None:
    c = CoverChain()
    c.fails(CoverCode.BAD_RULE, "cover", "publish", {"id": "x", "kind": "local_return", "indemnity_fen": 1,
            "window_days": 1}, INSURER)  # fmt: skip
    c.fails(CoverCode.BAD_RULE, "cover", "publish", {"id": "x", "kind": "price_protection", "indemnity_fen": 1,
            "window_days": 1, "base_fen": 1, "loading_bps": 5}, INSURER)  # fmt: skip
    c.fails(Code.INVALID_ARGUMENT, "cover", "publish", {"id": "x", "kind": "price_protection", "indemnity_fen": "1",
            "window_days": 1, "base_fen": 1}, INSURER)  # fmt: skip
    c.fails(CoverCode.NOT_INSURER, "cover", "publish", {"id": "x", "kind": "local_return", "indemnity_fen": 1,
            "window_days": 1, "base_fen": 1}, PLATFORM)  # fmt: skip
    c.product("x", "local_return")
    c.fails(CoverCode.EXISTS, "cover", "publish", {"id": "x", "kind": "local_return", "indemnity_fen": 1,
            "window_days": 1, "base_fen": 1}, INSURER)  # fmt: skip
    c.fails(CoverCode.NOT_INSURER, "cover", "withdraw", {"id": "x"}, "org5")
    c.ok("cover", "withdraw", {"id": "x"}, INSURER)
    c.ok("cover", "pledge_capital", {"amount": 10_000}, INSURER)
    c.fails(CoverCode.PRODUCT_CLOSED, "cover", "buy", {"products": ["x"], "order": "o", "shopper": "s", "sku": "k",
            "price_paid": 100, "address": "a", "device": "d"}, PLATFORM)  # fmt: skip
    c.fails(CoverCode.NOT_PLATFORM, "cover", "post_price", {"sku": "k", "price": 1}, INSURER)
    assert [p["id"] for p in c.query("cover", "products", {})["products"]] == ["x"]


def test_an_event_anchored_compactly_is_proven_by_its_text() -> None:
    """The trace contract may keep only a reference to the capture's transaction (no text in state): the claim
    then carries the text, and its recomputed hash id must be the anchored one."""
    from liangcao import encoding

    c = setup()
    (rs,) = c.buy(["rs"], "order-c")
    text = return_event("order-c", c.time_ms, rma="c")
    eid = c.anchor(text)
    key = "trace/e/" + eid[len("ni:///sha-256;") :][:64]
    full = c.get(key)
    c.state.data[key] = encoding.canonical({"by": full["by"], "height": full["height"], "n": 0, "tx": full["tx"]})
    c.fails(CoverCode.NO_FACT, "cover", "claim", {"policy": rs["id"], "event": eid}, PLATFORM, match="event_text")
    other = return_event("order-c", c.time_ms, rma="forged")
    c.fails(CoverCode.WRONG_FACT, "cover", "claim", {"policy": rs["id"], "event": eid, "event_text": other}, PLATFORM)
    claim = c.ok("cover", "claim", {"policy": rs["id"], "event": eid, "event_text": text}, PLATFORM)
    assert claim["status"] == "approved" and claim["facts"][0]["org"] == COURIER
