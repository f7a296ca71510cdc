"""Hypothesis state machine: random cover business (including forbidden and replayed steps) on a real
in-memory chain, settled by the payout adapter through a real payments engine.

Invariants after every step: reserves plus amounts owed never exceed pledged capital, and equal the open
policies' exposure and the approved claims; each policy is paid at most its exposure and at most once;
premiums and payouts agree between the ledger and the payments core; a refused transaction changes nothing.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from cover_ledger import ADDRESS, COURIER, INSURER, OTHER_ADDRESS, PLATFORM, SKU, WAREHOUSE, CoverChain, return_event
from liangcao.adapters.payout import (
    PAYOUT_CODE,
    PREMIUM_CODE,
    PayoutAdapter,
    clearing_account,
    insurer_account,
    shopper_account,
)
from liangcao.apps.cover.rules import transfer_id
from liangcao.payments import Engine
from liangcao.testing import Receipt

SHOPPERS = ["s1", "s2", "s3", "s4", "s5"]  # five on two devices: some claims are held for review


class ChainLedger:
    """The adapter's ledger port over the in-memory chain: the insurer signs, the real contract decides."""

    def __init__(self, machine: CoverMachine) -> None:
        self.m = machine

    def query(self, contract: str, method: str, args: dict[str, Any]) -> Any:
        return self.m.c.query(contract, method, args)

    def submit(self, contract: str, method: str, args: dict[str, Any]) -> dict[str, Any]:
        return dict(self.m.run(contract, method, args, INSURER))


class CoverMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.c = CoverChain()
        self.c.product("rs", "return_shipping", shopper_returns_max=3)
        self.c.product("pp", "price_protection")
        self.c.product("lr", "local_return")
        self.c.ok("cover", "pledge_capital", {"amount": 100_000}, INSURER)
        self.dir = Path(tempfile.mkdtemp(prefix="cover-machine-"))
        self.engine = Engine(self.dir / "payments", fsync=False)
        self.adapter = PayoutAdapter(ChainLedger(self), self.engine, INSURER)
        self.policies: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []  # cover events not yet handed to the adapter
        self.handled: list[dict[str, Any]] = []
        self.orders = 0
        self.held: set[str] = set()
        for shopper in SHOPPERS[:3]:  # policies of every kind from the start, so claims have something to claim
            self.buy(["rs", "pp", "lr"], 10_000, shopper, "d1")

    def teardown(self) -> None:
        self.engine.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # ---- helpers ------------------------------------------------------------------------------------------
    def cover_state(self) -> dict[str, bytes]:
        return dict(self.c.state.data)  # the whole state: a refusal writes nothing anywhere

    def run(self, contract: str, method: str, args: dict[str, Any], who: str) -> Receipt:
        before = self.cover_state()
        r = self.c.run(contract, method, args, who)
        if r.ok:
            self.events += [e for e in r.events if e["contract"] == "cover"]
            self.held |= {e["data"]["policy"] for e in r.events if e["name"] == "claim_held"}
        else:
            assert self.cover_state() == before, f"refused {method} ({r.code}) changed the state"
        return r

    def policy(self, i: int) -> dict[str, Any]:
        return self.policies[i % len(self.policies)]

    # ---- rules ------------------------------------------------------------------------------------------------
    @rule(amount=st.integers(1, 60_000))
    def pledge(self, amount: int) -> None:
        assert self.run("cover", "pledge_capital", {"amount": amount}, INSURER).ok

    @rule(amount=st.integers(1, 60_000))
    def release(self, amount: int) -> None:
        self.run("cover", "release_capital", {"amount": amount}, INSURER)

    @rule(
        products=st.lists(st.sampled_from(["rs", "pp", "lr"]), min_size=1, max_size=3, unique=True),
        price=st.integers(100, 50_000),
        shopper=st.sampled_from(SHOPPERS),
        device=st.sampled_from(["d1", "d2"]),
    )
    def buy(self, products: list[str], price: int, shopper: str, device: str) -> None:
        self.orders += 1
        args = {"products": products, "order": f"o{self.orders}", "shopper": shopper, "sku": SKU,
                "price_paid": price, "address": ADDRESS, "device": device}  # fmt: skip
        r = self.run("cover", "buy", args, PLATFORM)
        if r.ok:
            self.policies += r.result

    @rule(price=st.integers(50, 50_000), mark=st.sampled_from(["regular", "regular", "flash_sale", "coupon"]))
    def post_price(self, price: int, mark: str) -> None:
        assert self.run("cover", "post_price", {"sku": SKU, "price": price, "mark": mark}, PLATFORM).ok

    @rule(days=st.integers(0, 12))
    def advance(self, days: int) -> None:
        self.c.advance(days=days, hours=1)

    @precondition(lambda self: self.policies)
    @rule(i=st.integers(0, 99), how=st.sampled_from(["right", "right", "elsewhere", "wrong_step", "none"]))
    def claim(self, i: int, how: str) -> None:
        pol = self.policy(i)
        args: dict[str, Any] = {"policy": pol["id"]}
        if pol["kind"] != "price_protection" and how != "none":
            step = "shipping" if pol["kind"] == "return_shipping" else "receiving"
            if how == "wrong_step":
                step = "receiving" if step == "shipping" else "shipping"
            who = COURIER if step == "shipping" else WAREHOUSE
            where = OTHER_ADDRESS if how == "elsewhere" else ADDRESS
            text = return_event(pol["order"], self.c.time_ms, step=step, address=where, rma=f"r{self.c.height}")
            args["event"] = self.c.anchor(text, who)
        self.run("cover", "claim", args, PLATFORM)

    @precondition(lambda self: self.policies)
    @rule(i=st.integers(0, 99))
    def claim_return(self, i: int) -> None:
        """A claim with its proper fact (the pickup at the order's address, or the warehouse's drop-off)."""
        self.claim(i, "right")

    @precondition(lambda self: self.policies)
    @rule(i=st.integers(0, 99), approve=st.booleans())
    def review(self, i: int, approve: bool) -> None:
        held = sorted(self.held)
        pol = held[i % len(held)] if held and i % 4 else self.policy(i)["id"]  # mostly a held one, sometimes any
        if self.run("cover", "review", {"policy": pol, "approve": approve}, INSURER).ok:
            self.held.discard(pol)

    @rule(shopper=st.sampled_from(SHOPPERS), on=st.booleans())
    def flag(self, shopper: str, on: bool) -> None:
        assert self.run("cover", "flag", {"shopper": shopper, "reason": "risk" if on else ""}, PLATFORM).ok

    @precondition(lambda self: self.policies)
    @rule(i=st.integers(0, 99))
    def expire(self, i: int) -> None:
        self.run("cover", "expire", {"policy": self.policy(i)["id"]}, COURIER)

    @precondition(lambda self: self.policies)
    @rule(i=st.integers(0, 99))
    def forged_payout(self, i: int) -> None:
        pol = self.policy(i)
        r = self.run(
            "cover", "record_payout", {"policy": pol["id"], "transfer": transfer_id("premium", pol["id"])}, INSURER
        )
        assert not r.ok

    @precondition(lambda self: self.events)
    @rule(n=st.integers(1, 5))
    def adapter_step(self, n: int) -> None:
        for ev in self.events[:n]:
            self.adapter.handle(ev)
            self.handled.append(ev)
        del self.events[:n]

    @precondition(lambda self: self.handled)
    @rule(i=st.integers(0, 99))
    def adapter_replays(self, i: int) -> None:
        """A crashed adapter runs an event again (its cursor was behind): nothing is paid twice."""
        self.adapter.handle(self.handled[i % len(self.handled)])

    @rule()
    def adapter_restarts(self) -> None:
        self.adapter.settle_due()

    # ---- invariants ---------------------------------------------------------------------------------------------
    @invariant()
    def capital_covers_reserves(self) -> None:
        cap = self.c.capital()
        views = [self.c.query("cover", "policy", {"policy": p["id"]}) for p in self.policies]
        reserved = sum(v["policy"]["exposure"] for v in views if v["policy"]["status"] in ("active", "held"))
        owed = sum(v["claim"]["amount"] for v in views if v["claim"] and v["claim"]["status"] == "approved")
        assert cap["reserved"] + cap["owed"] <= cap["pledged"]
        assert (cap["reserved"], cap["owed"]) == (reserved, owed)
        paid = sum(v["claim"]["amount"] for v in views if v["claim"] and v["claim"]["status"] == "paid")
        assert cap["paid"] == paid
        for v in views:
            if v["claim"]:
                assert 0 < v["claim"]["amount"] <= v["policy"]["exposure"]

    @invariant()
    def money_agrees_with_the_payments_core(self) -> None:
        cap = self.c.capital()
        insurer = self.engine.lookup_accounts([insurer_account(INSURER)])  # [] until the first payment
        credits = sum(a.credits_posted for a in insurer)
        debits = sum(a.debits_posted for a in insurer)
        assert credits == cap["premiums"]  # every premium recorded on the ledger was collected, once
        assert debits == cap["paid"]  # every payout recorded was paid, once
        shoppers = self.engine.lookup_accounts([shopper_account(PLATFORM, s) for s in SHOPPERS])
        assert sum(a.credits_posted for a in shoppers) == debits
        clearing = self.engine.lookup_accounts([clearing_account(PLATFORM)])
        assert sum(a.debits_posted for a in clearing) == credits
        # each policy: at most one payout transfer, never above its exposure
        for p in self.policies:
            found = self.engine.lookup_transfers([int(transfer_id("payout", p["id"]), 16)])
            assert len(found) <= 1
            if found:
                assert found[0].code == PAYOUT_CODE and found[0].amount <= p["exposure"]
            premium = self.engine.lookup_transfers([int(transfer_id("premium", p["id"]), 16)])
            if premium:
                assert premium[0].code == PREMIUM_CODE and premium[0].amount == p["premium"]


CoverMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestCoverMachine = CoverMachine.TestCase
