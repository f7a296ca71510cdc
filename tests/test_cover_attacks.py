"""Attacks on consumer cover from a hostile shopper, platform, courier or insurer, and on the payout adapter.

Each test is one attack; the ones that broke the capability were written (failing) before its fix. What held
is kept here too, so it keeps holding: forged and reused facts, prices outside the window or from another
platform's feed, a transfer id already taken, a replayed stream, two adapters racing on one claim.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cover_ledger import (
    ADDRESS,
    COURIER,
    INSURER,
    INSURER2,
    OTHER_ADDRESS,
    PLATFORM,
    SKU,
    TYPES,
    CoverChain,
    return_event,
)
from liangcao.adapters.payout import (
    ACCOUNT_CODE,
    LEDGER_CNY,
    AdapterFault,
    PayoutAdapter,
    insurer_account,
    shopper_account,
)
from liangcao.apps.cover.rules import CoverCode, transfer_id
from liangcao.codes import Code
from liangcao.payments import Account, Engine, Transfer
from liangcao.testing import DAY_MS, Chain

OTHER_PLATFORM = "org6"


class SixOrgs(CoverChain):
    """The cover consortium with a second platform (org6), whose price feed is not the policy's."""

    def __init__(self) -> None:
        Chain.__init__(self, [*TYPES, "platform"])


def chain() -> CoverChain:
    c = CoverChain()
    c.ok("cover", "pledge_capital", {"amount": 1_000_000}, INSURER)
    c.product("rs", "return_shipping")
    c.product("pp", "price_protection")
    return c


def cover_state(c: CoverChain) -> dict[str, Any]:
    return {k: v for k, v in c.state.data.items() if k.startswith("cover/")}


class ChainLedger:
    """The adapter's ledger port over the in-memory chain: the insurer signs, the real contract decides."""

    def __init__(self, c: CoverChain, before_query: Any = None) -> None:
        self.c = c
        self.before_query = before_query

    def query(self, contract: str, method: str, args: dict[str, Any]) -> Any:
        view = self.c.query(contract, method, args)
        if self.before_query is not None and method == "policy":
            hook, self.before_query = self.before_query, None
            hook()  # something happens on the ledger after this adapter read the policy
        return view

    def submit(self, contract: str, method: str, args: dict[str, Any]) -> dict[str, Any]:
        return dict(self.c.run(contract, method, args, INSURER))


# ---- the contract ------------------------------------------------------------------------------------------
def test_a_policy_without_premium_is_not_sold() -> None:
    """A rate-only premium rounds to 0 fen on a cheap order: free cover, and the insurer's capital reserved for
    nothing (a platform could lock it all at no cost)."""
    c = chain()
    c.product("rate", "return_shipping", base_fen=0, rate_bps=1, loading_bps=0)
    before = cover_state(c)
    args = {"products": ["rate"], "order": "o", "shopper": "s", "sku": SKU, "price_paid": 1, "address": ADDRESS,
            "device": "d"}  # fmt: skip
    c.fails(CoverCode.BAD_RULE, "cover", "buy", args, PLATFORM)
    assert cover_state(c) == before
    c.buy(["rate"], "o2", price=10_000)  # 1 fen of premium: sold


def test_only_the_policys_platform_claims_price_protection() -> None:
    """A claim is decided once with the lowest price so far: an insurer (or anyone) filing the shopper's price
    protection the moment the price dips by 1 fen would lock the refund at 1 fen before the real drop."""
    c = chain()
    (pp,) = c.buy(["pp"], "o-1")
    c.advance(days=1)
    c.ok("cover", "post_price", {"sku": SKU, "price": 39_899}, PLATFORM)
    before = cover_state(c)
    for who in (INSURER, COURIER):
        c.fails(CoverCode.NOT_PLATFORM, "cover", "claim", {"policy": pp["id"]}, who)
    assert cover_state(c) == before
    c.advance(days=4)
    c.ok("cover", "post_price", {"sku": SKU, "price": 34_900}, PLATFORM)
    assert c.ok("cover", "claim", {"policy": pp["id"]}, f"{PLATFORM}/alice")["amount"] == 5_000  # its people


def test_prices_outside_the_window_or_of_another_feed_never_count() -> None:
    """Held: only the policy's platform's posts between purchase and claim, within the window, count."""
    c = SixOrgs()
    c.ok("cover", "pledge_capital", {"amount": 1_000_000}, INSURER)
    c.product("pp", "price_protection")
    c.ok("cover", "post_price", {"sku": SKU, "price": 100}, PLATFORM)  # before the purchase
    (pp,) = c.buy(["pp"], "o-1")
    c.ok("cover", "post_price", {"sku": SKU, "price": 100}, OTHER_PLATFORM)  # another platform's feed
    c.ok("cover", "post_price", {"sku": "other-sku", "price": 100}, PLATFORM)
    c.ok("cover", "post_price", {"sku": SKU, "price": 200, "mark": "coupon"}, PLATFORM)
    c.fails(CoverCode.EXCLUDED_PRICE, "cover", "claim", {"policy": pp["id"]}, PLATFORM)
    c.advance(days=16)
    c.ok("cover", "post_price", {"sku": SKU, "price": 300}, PLATFORM)  # day 16: after the 15-day window
    c.fails(CoverCode.AFTER_WINDOW, "cover", "claim", {"policy": pp["id"]}, PLATFORM)


def test_a_courier_event_for_another_order_address_or_time_proves_nothing() -> None:
    """Held: the pickup must name the order and a return, at the order's address, after the purchase."""
    c = chain()
    early = c.anchor(return_event("o-1", c.time_ms, rma="early"))
    (rs,) = c.buy(["rs"], "o-1")
    (other,) = c.buy(["rs"], "o-2", shopper="s2")
    before = cover_state(c)
    c.fails(CoverCode.WRONG_FACT, "cover", "claim", {"policy": rs["id"], "event": early}, PLATFORM)
    eid = c.anchor(return_event("o-2", c.time_ms, rma="r2"))
    c.fails(CoverCode.WRONG_FACT, "cover", "claim", {"policy": rs["id"], "event": eid}, PLATFORM)
    assert cover_state(c) == before
    assert c.ok("cover", "claim", {"policy": other["id"], "event": eid}, PLATFORM)["amount"] == 1_200
    c.fails(CoverCode.ALREADY_CLAIMED, "cover", "claim", {"policy": other["id"], "event": eid}, PLATFORM)


# ---- the payout adapter ------------------------------------------------------------------------------------
def two_approved_claims(c: CoverChain) -> list[str]:
    policies = []
    for n in (1, 2):
        (rs,) = c.buy(["rs"], f"o-{n}", shopper=f"s{n}")
        eid = c.anchor(return_event(f"o-{n}", c.time_ms, rma=f"r{n}"))
        c.ok("cover", "claim", {"policy": rs["id"], "event": eid}, PLATFORM)
        policies.append(rs["id"])
    return policies


def test_one_refused_payout_does_not_hold_up_the_others(tmp_path: Path) -> None:
    """A transfer id taken in the payments core by something else (or any refusal) stops the adapter loudly,
    but only after every other obligation is settled: one poisoned claim must not starve every shopper."""
    c = chain()
    two_approved_claims(c)
    due = c.query("cover", "due", {"insurer": INSURER})["payouts"]
    poisoned, healthy = due[0]["policy"], due[1]["policy"]
    engine = Engine(tmp_path / "pay", fsync=False)
    try:
        a, b = 7, 8
        engine.create_accounts([Account(id=x, ledger=LEDGER_CNY, code=ACCOUNT_CODE) for x in (a, b)])
        squatter = int(transfer_id("payout", poisoned), 16)
        engine.create_transfers([Transfer(id=squatter, debit_account_id=a, credit_account_id=b, amount=1,
                                          ledger=LEDGER_CNY, code=1)])  # fmt: skip
        adapter = PayoutAdapter(ChainLedger(c), engine, INSURER)
        with pytest.raises(AdapterFault, match=poisoned):
            adapter.settle_due()
        views = {p: c.query("cover", "policy", {"policy": p}) for p in (poisoned, healthy)}
        assert views[healthy]["claim"]["status"] == "paid"
        assert views[poisoned]["claim"]["status"] == "approved"  # left due, for an operator
        (paid,) = engine.lookup_transfers([int(transfer_id("payout", healthy), 16)])
        assert paid.amount == 1_200
        assert c.query("cover", "due", {"insurer": INSURER})["premiums"] == []
        with pytest.raises(AdapterFault):  # a second run stops the same way, and pays nothing twice
            PayoutAdapter(ChainLedger(c), engine, INSURER).settle_due()
        shoppers = {p: views[p]["policy"]["shopper"] for p in views}
        (paid_to,) = engine.lookup_accounts([shopper_account(PLATFORM, shoppers[healthy])])
        assert paid_to.credits_posted == 1_200
        (unpaid,) = engine.lookup_accounts([shopper_account(PLATFORM, shoppers[poisoned])])
        assert unpaid.credits_posted == 0
    finally:
        engine.close()


def test_a_payout_made_in_another_payments_core_is_reported_not_swallowed(tmp_path: Path) -> None:
    """Two adapters of one insurer with different payments cores (a second one started on a fresh folder)
    race on a claim: both pay, one record is answered ALREADY_PAID. That is a double payment, and the adapter
    that made it must stop loudly, not count it as success."""
    c = chain()
    policy = two_approved_claims(c)[0]
    first = Engine(tmp_path / "pay-1", fsync=False)
    second = Engine(tmp_path / "pay-2", fsync=False)
    try:
        winner = PayoutAdapter(ChainLedger(c), first, INSURER)
        from liangcao.adapters.payout import Obligation

        ob = Obligation("payout", policy)
        loser = PayoutAdapter(ChainLedger(c, before_query=lambda: winner.settle(ob)), second, INSURER)
        with pytest.raises(AdapterFault, match="paid twice"):
            loser.settle(ob)
        assert c.query("cover", "policy", {"policy": policy})["claim"]["status"] == "paid"
        # the ledger and the first core agree; the second core holds the extra payment the fault names
        assert first.lookup_transfers([int(transfer_id("payout", policy), 16)])[0].amount == 1_200
        (extra,) = second.lookup_accounts([insurer_account(INSURER)])
        assert extra.debits_posted == 1_200
    finally:
        first.close()
        second.close()


def test_a_replayed_stream_and_duplicate_events_pay_once(tmp_path: Path) -> None:
    """Held: every cover event handed over three times, in order and reversed, pays each obligation once."""
    c = chain()
    two_approved_claims(c)
    engine = Engine(tmp_path / "pay", fsync=False)
    try:
        adapter = PayoutAdapter(ChainLedger(c), engine, INSURER)
        due = c.query("cover", "due", {"insurer": INSURER})
        obligations = [{"contract": "cover", "name": "claim_approved", "data": {"insurer": INSURER, **d}}
                       for d in due["payouts"]]  # fmt: skip
        obligations += [{"contract": "cover", "name": "policy_bought", "data": {"insurer": INSURER, **d}}
                        for d in due["premiums"]]  # fmt: skip
        for ev in [*obligations, *reversed(obligations), *obligations]:
            adapter.handle(ev)
        assert adapter.paid == 4 and adapter.replayed >= 8
        assert c.query("cover", "due", {"insurer": INSURER}) == {"payouts": [], "premiums": []}
        (acct,) = engine.lookup_accounts([insurer_account(INSURER)])
        assert acct.debits_posted == 2 * 1_200
    finally:
        engine.close()


class Crash(BaseException):
    """The adapter process dies here (``kill -9``): nothing after this point of its code runs."""


class Dies:
    """Counts the adapter's calls into the ledger and the payments core; dies before or after call ``at``."""

    def __init__(self, at: int, after: bool) -> None:
        self.at, self.after, self.n = at, after, 0

    def call(self, fn: Any, *args: Any) -> Any:
        self.n += 1
        if self.n == self.at and not self.after:
            raise Crash
        result = fn(*args)
        if self.n == self.at:
            raise Crash  # the call took effect (a transfer durable, a transaction committed), the answer is lost
        return result


class DyingLedger(ChainLedger):
    def __init__(self, c: CoverChain, dies: Dies) -> None:
        super().__init__(c)
        self.dies = dies

    def query(self, contract: str, method: str, args: dict[str, Any]) -> Any:
        return self.dies.call(super().query, contract, method, args)

    def submit(self, contract: str, method: str, args: dict[str, Any]) -> dict[str, Any]:
        return dict(self.dies.call(super().submit, contract, method, args))


class DyingEngine:
    def __init__(self, engine: Engine, dies: Dies) -> None:
        self.engine, self.dies = engine, dies

    def create_accounts(self, accounts: list[Account]) -> list[int]:
        return list(self.dies.call(self.engine.create_accounts, accounts))

    def create_transfers(self, transfers: list[Transfer]) -> list[int]:
        return list(self.dies.call(self.engine.create_transfers, transfers))


def test_a_kill_at_every_call_of_the_adapter_pays_each_obligation_exactly_once(tmp_path: Path) -> None:
    """The adapter killed before and after each of its calls (a query, an account, a transfer, a record), then
    started again on the same payments core: every premium and payout paid once, ledger and core agree."""
    run = 0

    def story() -> tuple[CoverChain, list[str]]:
        c = chain()
        policies = two_approved_claims(c)
        (pp,) = c.buy(["pp"], "o-3", shopper="s3")
        c.ok("cover", "post_price", {"sku": SKU, "price": 39_000}, PLATFORM)
        c.ok("cover", "claim", {"policy": pp["id"]}, PLATFORM)
        return c, [*policies, pp["id"]]

    at = 1
    while True:
        for after in (False, True):
            run += 1
            c, policies = story()
            folder = tmp_path / f"pay-{run}"
            dies = Dies(at, after)
            engine = Engine(folder, fsync=False)
            try:
                PayoutAdapter(DyingLedger(c, dies), DyingEngine(engine, dies), INSURER).settle_due()
                finished = True
            except Crash:
                finished = False
            finally:
                engine.close()
            engine = Engine(folder, fsync=False)  # the restart, on the same payments core
            try:
                PayoutAdapter(ChainLedger(c), engine, INSURER).settle_due()
                views = [c.query("cover", "policy", {"policy": p}) for p in policies]
                assert all(v["claim"]["status"] == "paid" and v["premium"]["collected"] for v in views)
                payouts = engine.lookup_transfers([int(transfer_id("payout", p), 16) for p in policies])
                premiums = engine.lookup_transfers([int(transfer_id("premium", p), 16) for p in policies])
                assert [t.amount for t in payouts] == [v["claim"]["amount"] for v in views]
                assert [t.amount for t in premiums] == [v["policy"]["premium"] for v in views]
                (insurer,) = engine.lookup_accounts([insurer_account(INSURER)])
                assert insurer.debits_posted == sum(t.amount for t in payouts) == c.capital()["paid"]
                assert insurer.credits_posted == sum(t.amount for t in premiums) == c.capital()["premiums"]
            finally:
                engine.close()
        if finished:
            break  # the first run got through without reaching call ``at``: every call was a kill point
        at += 1
    assert at > 20


class SlowNodeClient:
    """The SDK's surface the adapter uses, over the in-memory chain: the first record commits on the ledger but
    the node answers before it is committed (``wait`` timed out), as a busy node does."""

    def __init__(self, c: CoverChain) -> None:
        self.c, self.slow = c, 1

    def query(self, contract: str, method: str, args: dict[str, Any]) -> Any:
        return self.c.query(contract, method, args)

    def build(self, contract: str, method: str, args: dict[str, Any], signers: list[Any]) -> tuple[str, str, Any]:
        return contract, method, args

    def submit(self, tx: tuple[str, str, Any], *, wait: bool = False) -> dict[str, Any]:
        receipt = self.c.run(*tx, INSURER)
        if self.slow:
            self.slow -= 1
            return {"status": "pending"}
        return {"status": "committed", "receipt": dict(receipt)}

    def events(self, since: int, **kw: Any) -> list[dict[str, Any]]:
        return [{"type": "end"}]


def test_a_record_not_committed_in_time_is_retried_not_fatal(tmp_path: Path) -> None:
    """A node slower than the adapter's wait is an everyday condition, not an exactly-once breach: the adapter
    follows again (the ledger then says paid, or the core says EXISTS), it does not stop for an operator."""
    import threading

    from liangcao.adapters.payout import Cursor, HttpLedger, follow

    c = chain()
    two_approved_claims(c)
    client = SlowNodeClient(c)
    engine = Engine(tmp_path / "pay", fsync=False)
    try:
        adapter = PayoutAdapter(HttpLedger(client, signer=None), engine, INSURER)
        follow(adapter, client, Cursor(tmp_path / "cursor.json"), threading.Event(), live=False)
        assert c.query("cover", "due", {"insurer": INSURER}) == {"payouts": [], "premiums": []}
        assert adapter.paid == 4
    finally:
        engine.close()


def test_another_platform_cannot_load_or_flag_a_shopper_of_this_one() -> None:
    """Shopper ids are each platform's own pseudonyms: platform B using platform A's id "s1" must not raise
    A's shopper's premium (claim ratio), use up their return limit, or hold their claims with a flag; and an
    insurer's flag holds claims on its own policies, not on another insurer's."""
    c = SixOrgs()
    c.ok("cover", "pledge_capital", {"amount": 1_000_000}, INSURER)
    c.ok("cover", "pledge_capital", {"amount": 1_000_000}, INSURER2)
    c.product("rs", "return_shipping", shopper_returns_max=1)
    c.product("rs-b", "return_shipping", insurer=INSURER2)
    # platform B: a policy and a claim for "its" shopper s1, then a flag on s1
    args = {"products": ["rs"], "order": "b-1", "shopper": "s1", "sku": SKU, "price_paid": 39_900,
            "address": ADDRESS, "device": "dev-b"}  # fmt: skip
    (b1,) = c.ok("cover", "buy", args, OTHER_PLATFORM)
    c.ok("cover", "claim", {"policy": b1["id"], "event": c.anchor(return_event("b-1", c.time_ms, rma="b"))}, COURIER)
    c.ok("cover", "flag", {"shopper": "s1", "reason": "platform B says so"}, OTHER_PLATFORM)
    # platform A's shopper s1: the base premium, a claim within the return limit, not held
    (a1,) = c.buy(["rs"], "a-1", shopper="s1")
    assert a1["premium"] == 80
    claim = c.ok("cover", "claim", {"policy": a1["id"], "event": c.anchor(return_event("a-1", c.time_ms))}, PLATFORM)
    assert claim["status"] == "approved", claim["held"]
    assert c.query("cover", "shopper", {"platform": PLATFORM, "shopper": "s1"})["claims"] == 1
    # insurer 2 flags A's s1: its own policies' claims wait; insurer 1's do not
    c.ok("cover", "flag", {"platform": PLATFORM, "shopper": "s1", "reason": "insurer 2's model"}, INSURER2)
    c.fails(Code.INVALID_ARGUMENT, "cover", "flag", {"platform": PLATFORM, "shopper": "s1", "reason": "x"},
            OTHER_PLATFORM)  # fmt: skip
    (x,) = c.buy(["rs-b"], "a-2", shopper="s1")
    held = c.ok("cover", "claim", {"policy": x["id"], "event": c.anchor(return_event("a-2", c.time_ms, rma="x"))},
                PLATFORM)  # fmt: skip
    assert held["status"] == "held"


def test_an_event_naming_another_insurers_policy_pays_nothing(tmp_path: Path) -> None:
    """A forged or misrouted ``claim_approved`` that says "your insurer" about another insurer's policy: the
    adapter reads the policy on the ledger and pays only its own insurer's obligations, before any transfer."""
    c = chain()
    c.ok("cover", "pledge_capital", {"amount": 1_000_000}, INSURER2)
    c.product("rs-2", "return_shipping", insurer=INSURER2)
    (theirs,) = c.buy(["rs-2"], "o-9")
    eid = c.anchor(return_event("o-9", c.time_ms, rma="r9"))
    c.ok("cover", "claim", {"policy": theirs["id"], "event": eid}, PLATFORM)
    engine = Engine(tmp_path / "pay", fsync=False)
    try:
        adapter = PayoutAdapter(ChainLedger(c), engine, INSURER)
        for name in ("claim_approved", "policy_bought"):
            forged = {"contract": "cover", "name": name, "data": {"insurer": INSURER, "policy": theirs["id"]}}
            assert adapter.handle(forged) == "recorded"
        assert engine.lookup_accounts([insurer_account(INSURER2)]) == []
        assert adapter.paid == 0
    finally:
        engine.close()


def test_capital_limits_hold_across_many_policies_and_bad_amounts() -> None:
    """Held: policies fill the pledged capital exactly, then any more is refused whole (also the second
    product of one checkout); reserved capital cannot be released; amounts that are not positive integers of
    at most money_fen_max, and over-long strings, are refused before the contract runs."""
    c = CoverChain()
    c.ok("cover", "pledge_capital", {"amount": 10 * 1_200 + 500}, INSURER)
    c.product("rs", "return_shipping")
    c.product("pp", "price_protection")
    for n in range(10):
        c.buy(["rs"], f"o-{n}", shopper=f"s{n}")
    before = cover_state(c)
    c.fails(CoverCode.OVER_CAPITAL, "cover", "buy", {"products": ["pp", "rs"], "order": "x", "shopper": "s", "sku": SKU,
            "price_paid": 400, "address": ADDRESS, "device": "d"}, PLATFORM)  # fmt: skip
    c.fails(CoverCode.CAPITAL_IN_USE, "cover", "release_capital", {"amount": 501}, INSURER)
    assert cover_state(c) == before
    for bad in (0, -1, True, "100", 10**15 + 1):
        c.fails(Code.INVALID_ARGUMENT, "cover", "pledge_capital", {"amount": bad}, INSURER)
    long = "o" * 201
    c.fails(Code.INVALID_ARGUMENT, "cover", "buy", {"products": ["rs"], "order": long, "shopper": "s", "sku": SKU,
            "price_paid": 400, "address": ADDRESS, "device": "d"}, PLATFORM)  # fmt: skip
    assert cover_state(c) == before
    cap = c.capital()
    assert (cap["reserved"], cap["free"]) == (12_000, 500)
    c.ok("cover", "release_capital", {"amount": 500}, INSURER)


def test_a_pickup_dated_ahead_of_the_ledger_or_declared_in_error_proves_nothing() -> None:
    """A courier's event dated tomorrow (a pickup booked, not made) must not pay today: the claim would be
    paid before the parcel moves. An event that carries an error declaration is retracted by its recorder."""
    c = chain()
    (rs,) = c.buy(["rs"], "o-1")
    ahead = c.anchor(return_event("o-1", c.time_ms + DAY_MS, rma="booked"))
    before = cover_state(c)
    c.fails(CoverCode.WRONG_FACT, "cover", "claim", {"policy": rs["id"], "event": ahead}, PLATFORM)
    retracted = json.loads(return_event("o-1", c.time_ms, rma="oops"))
    retracted["errorDeclaration"] = {"declarationTime": retracted["eventTime"], "reason": "incorrect_data"}
    eid = c.anchor(json.dumps(retracted))
    c.fails(CoverCode.WRONG_FACT, "cover", "claim", {"policy": rs["id"], "event": eid}, PLATFORM)
    assert cover_state(c) == before
    c.advance(days=1)
    assert c.ok("cover", "claim", {"policy": rs["id"], "event": ahead}, PLATFORM)["amount"] == 1_200  # now it is


def test_an_insurer_short_of_funds_in_the_payments_core_stops_loudly_then_pays_once_when_funded(
    tmp_path: Path,
) -> None:
    """The insurer's account in the payments core may carry a limit (debits must not exceed credits): a payout
    above its funds is refused (``exceeds_credits``), which spends the transfer id for good (TigerBeetle's rule
    for a failure that could succeed later). The adapter stops loudly, pays nothing; once the account is funded,
    the next run pays under the next derived id, exactly once, and the ledger takes that id."""
    from liangcao.payments import AccountFlags

    c = chain()
    (policy,) = two_approved_claims(c)[:1]
    engine = Engine(tmp_path / "pay", fsync=False)
    try:
        funding, insurer = 99, insurer_account(INSURER)
        engine.create_accounts([
            Account(id=funding, ledger=LEDGER_CNY, code=ACCOUNT_CODE),
            Account(id=insurer, ledger=LEDGER_CNY, code=ACCOUNT_CODE, flags=AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS),
        ])  # fmt: skip

        def fund(tid: int, amount: int) -> None:
            t = Transfer(id=tid, debit_account_id=funding, credit_account_id=insurer, amount=amount, ledger=LEDGER_CNY,
                         code=1)  # fmt: skip
            assert engine.create_transfers([t]) == [0]

        fund(1, 1_000)  # with the two premiums (160): 1,160, short of two payouts of 1,200
        with pytest.raises(AdapterFault, match="exceeds_credits"):
            PayoutAdapter(ChainLedger(c), engine, INSURER).settle_due()
        with pytest.raises(AdapterFault):  # run again unfunded: still refused, still nothing paid twice
            PayoutAdapter(ChainLedger(c), engine, INSURER).settle_due()
        fund(2, 5_000)
        adapter = PayoutAdapter(ChainLedger(c), engine, INSURER)
        adapter.settle_due()
        assert c.query("cover", "due", {"insurer": INSURER}) == {"payouts": [], "premiums": []}
        (acct,) = engine.lookup_accounts([insurer])
        assert acct.debits_posted == 2 * 1_200 == c.capital()["paid"]
        view = c.query("cover", "policy", {"policy": policy})
        assert view["claim"]["transfer"] == view["payout"]["transfer"] != transfer_id("payout", policy)
        (paid,) = engine.lookup_transfers([int(view["claim"]["transfer"], 16)])
        assert paid.amount == 1_200
        adapter = PayoutAdapter(ChainLedger(c), engine, INSURER)
        assert adapter.settle_due() == 0 and adapter.paid == 0
    finally:
        engine.close()


def test_the_text_of_a_compact_anchor_cannot_smuggle_fields_past_its_hash() -> None:
    """For a compact anchor the claimant supplies the event's text, context and ignored fields. A pickup made
    elsewhere cannot be moved to the order's address by adding a location source (standard fields are always
    hashed, ``ignore`` reaches extensions only), nor by an ``@context`` of the claimant's; an event anchored by
    a platform proves no pickup. Held."""
    c = chain()
    (rs,) = c.buy(["rs"], "o-1")
    text = return_event("o-1", c.time_ms, address=OTHER_ADDRESS, rma="c")
    r = c.run("trace", "capture", {"events": [text], "compact": True}, COURIER)
    eid = r.result[0]["id"]
    forged = json.loads(text)
    forged["sourceList"] = [{"type": "location", "source": ADDRESS}]
    before = cover_state(c)
    for extra in ({"ignore": ["sourceList"]}, {"context": json.dumps({"sourceList": "https://x.example/"})}):
        args = {"policy": rs["id"], "event": eid, "event_text": json.dumps(forged), **extra}
        c.fails(CoverCode.WRONG_FACT, "cover", "claim", args, PLATFORM)
    forged = {**json.loads(text), "@context": [{"ex": "https://x.example/"}], "readPoint": {"id": ADDRESS}}
    c.fails(CoverCode.WRONG_FACT, "cover", "claim", {"policy": rs["id"], "event": eid,
            "event_text": json.dumps(forged)}, PLATFORM)  # fmt: skip
    c.fails(CoverCode.ADDRESS_MISMATCH, "cover", "claim", {"policy": rs["id"], "event": eid, "event_text": text},
            PLATFORM)  # fmt: skip
    by_platform = c.anchor(return_event("o-1", c.time_ms, rma="p"), PLATFORM)  # the trace contract takes it
    c.fails(CoverCode.WRONG_FACT, "cover", "claim", {"policy": rs["id"], "event": by_platform}, PLATFORM)
    assert cover_state(c) == before
