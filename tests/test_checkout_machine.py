"""Orders, escrow, confirmation, auto-confirmation and refunds against the payments core (embedded engine and
PostgreSQL): a hypothesis state machine checks, after every step, the balances of every account against a
plain model, that money is conserved, that no order's refunds exceed what was paid, and that each order is
settled (paid out to its merchant) at most once. Retries with the same idempotency key and restarts of the
gateway (and of the embedded engine) are steps too."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from liangcao.checkout import money
from liangcao.checkout.codes import CheckoutCode, CheckoutError
from liangcao.checkout.service import Checkout, Reply
from liangcao.payments import Engine, QueryFilter
from liangcao.payments.postgres import PostgresBackend

BUYERS = ["ann", "bo", "cy"]
MERCHANTS = ["shop1", "shop2"]
FEE_BPS = 250
WINDOW_S = 100
START = 10**6
FUNDS = 50_000


class CheckoutMachine(RuleBasedStateMachine):
    pg_dsn = ""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="lc-checkout-"))
        self.now = START
        self.backend: Any = None
        self.co: Checkout | None = None
        self.keys = 0
        self.orders: dict[str, dict[str, Any]] = {}
        self.wallet = dict.fromkeys(BUYERS, 0)
        self.merchant = dict.fromkeys(MERCHANTS, 0)
        self.fees = 0
        self.last: tuple[Any, ...] | None = None

    def clock(self) -> int:
        return self.now

    def open(self) -> None:
        if self.backend is None:
            if self.pg_dsn:
                self.backend = PostgresBackend(self.pg_dsn)
            else:
                self.backend = Engine(self.dir / "pay", fsync=False)
        self.co = Checkout(self.dir / "co", self.backend, clock_ms=self.clock, fee_bps=FEE_BPS, auto_confirm_s=WINDOW_S)

    @initialize()
    def start(self) -> None:
        if self.pg_dsn:
            self.backend = PostgresBackend(self.pg_dsn)
            self.backend.reset()
        self.open()
        assert self.co is not None
        for b in BUYERS:
            assert self.co.topup(self.key(), b, FUNDS).status == 200
            self.wallet[b] = FUNDS

    def teardown(self) -> None:
        if self.co is not None:
            self.co.close()
        if self.backend is not None:
            self.backend.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def key(self) -> str:
        self.keys += 1
        return f"k{self.keys}"

    def call(self, op: str, *args: Any) -> Reply | CheckoutError:
        key = self.key()
        assert self.co is not None
        try:
            reply: Reply | CheckoutError = getattr(self.co, op)(key, *args)
        except CheckoutError as exc:
            reply = exc
        self.last = (op, key, args, reply)
        return reply

    # ------------------------------------------------------------------------------- rules

    @rule(buyer=st.sampled_from(BUYERS), merchant=st.sampled_from(MERCHANTS), amount=st.integers(1, 30_000))
    def create(self, buyer: str, merchant: str, amount: int) -> None:
        r = self.call("create_order", buyer, merchant, amount)
        assert isinstance(r, Reply) and r.status == 201
        self.orders[r.body["id"]] = {
            "buyer": buyer,
            "merchant": merchant,
            "amount": amount,
            "state": "created",
            "held": 0,
            "refunded": 0,
            "settled": 0,
            "paid_ms": 0,
        }

    def pick(self, data: st.DataObject) -> str | None:
        return data.draw(st.sampled_from(sorted(self.orders))) if self.orders else None

    @precondition(lambda self: self.orders)
    @rule(data=st.data())
    def pay(self, data: st.DataObject) -> None:
        oid = self.pick(data)
        assert oid is not None
        o = self.orders[oid]
        r = self.call("pay", oid)
        if o["state"] != "created":
            assert isinstance(r, CheckoutError) and r.code == CheckoutCode.ORDER_NOT_PAYABLE
        elif self.wallet[o["buyer"]] < o["amount"]:
            assert isinstance(r, Reply) and r.status == 402 and r.body["code"] == CheckoutCode.INSUFFICIENT_FUNDS
        else:
            assert isinstance(r, Reply) and r.status == 200, r
            self.wallet[o["buyer"]] -= o["amount"]
            o.update(state="paid", held=o["amount"], paid_ms=self.now)

    def settle_model(self, o: dict[str, Any]) -> None:
        fee = money.fee_of(o["held"], FEE_BPS)
        self.merchant[o["merchant"]] += o["held"] - fee
        self.fees += fee
        o.update(state="settled", settled=o["held"], held=0)

    @precondition(lambda self: self.orders)
    @rule(data=st.data())
    def confirm(self, data: st.DataObject) -> None:
        oid = self.pick(data)
        assert oid is not None
        o = self.orders[oid]
        r = self.call("confirm", oid)
        if o["state"] != "paid":
            assert isinstance(r, CheckoutError) and r.code == CheckoutCode.ORDER_NOT_CONFIRMABLE
        else:
            assert isinstance(r, Reply) and r.status == 200 and r.body["state"] == "settled", r
            self.settle_model(o)

    @precondition(lambda self: self.orders)
    @rule(data=st.data(), part=st.integers(1, 40_000))
    def refund(self, data: st.DataObject, part: int) -> None:
        oid = self.pick(data)
        assert oid is not None
        o = self.orders[oid]
        amount = max(1, min(part, o["amount"] - o["refunded"])) if data.draw(st.booleans()) else part
        r = self.call("refund", oid, amount)
        if o["state"] not in ("paid", "settled"):
            assert isinstance(r, CheckoutError) and r.code == CheckoutCode.ORDER_NOT_REFUNDABLE
            return
        if o["refunded"] + amount > o["amount"]:
            assert isinstance(r, CheckoutError) and r.code == CheckoutCode.REFUND_EXCEEDS_PAID
            return
        if o["state"] == "settled" and self.merchant[o["merchant"]] < amount:
            assert isinstance(r, Reply) and r.body["code"] == CheckoutCode.MERCHANT_FUNDS_SHORT, r
            return
        assert isinstance(r, Reply) and r.status == 200, r
        if o["state"] == "settled":
            self.merchant[o["merchant"]] -= amount
        else:
            o["held"] -= amount
        self.wallet[o["buyer"]] += amount
        o["refunded"] += amount
        if o["refunded"] == o["amount"]:
            o["state"] = "refunded"

    @precondition(lambda self: self.orders)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        oid = self.pick(data)
        assert oid is not None
        o = self.orders[oid]
        r = self.call("cancel", oid)
        if o["state"] == "created":
            assert isinstance(r, Reply) and r.status == 200
            o["state"] = "cancelled"
        else:
            assert isinstance(r, CheckoutError) and r.code == CheckoutCode.ORDER_NOT_CANCELLABLE

    @rule(seconds=st.integers(1, 150))
    def time_passes(self, seconds: int) -> None:
        self.now += seconds * 1000
        assert self.co is not None
        n = self.co.auto_confirm_due()
        due = [o for o in self.orders.values() if o["state"] == "paid" and o["paid_ms"] + WINDOW_S * 1000 <= self.now]
        assert n == len(due)
        for o in due:
            self.settle_model(o)

    @precondition(lambda self: self.last is not None)
    @rule()
    def retry(self) -> None:
        """The same request with the same key: the first answer again, and nothing moves."""
        assert self.last is not None and self.co is not None
        op, key, args, first = self.last
        try:
            again: Reply | CheckoutError = getattr(self.co, op)(key, *args)
        except CheckoutError as exc:
            again = exc
        if isinstance(first, Reply):
            assert isinstance(again, Reply) and again.replayed
            assert (again.status, again.body) == (first.status, first.body)
        else:  # a refusal before anything moved is not stored: evaluated afresh, and still refused
            assert isinstance(again, CheckoutError) and again.code == first.code

    @rule()
    def restart(self) -> None:
        assert self.co is not None
        self.co.close()
        if not self.pg_dsn:
            self.backend.close()
            self.backend = None
        self.open()

    # -------------------------------------------------------------------------- invariants

    @invariant()
    def balances_agree(self) -> None:
        if self.co is None:
            return
        ids = {money.account_id(money.Kind.BUYER, b): ("b", b) for b in BUYERS}
        ids.update({money.account_id(money.Kind.MERCHANT, m): ("m", m) for m in MERCHANTS})
        ids[money.ESCROW] = ("escrow", "")
        ids[money.FEES] = ("fees", "")
        ids[money.FUNDING] = ("funding", "")
        total_posted = 0
        escrow_held = sum(o["held"] for o in self.orders.values())
        for a in self.backend.lookup_accounts(sorted(ids)):
            kind, name = ids[a.id]
            posted = a.credits_posted - a.debits_posted
            total_posted += posted
            if kind == "b":
                assert posted - a.debits_pending == self.wallet[name], (name, a)
            elif kind == "m":
                assert posted == self.merchant[name]
            elif kind == "escrow":
                assert posted + a.credits_pending == escrow_held
            elif kind == "fees":
                assert posted == self.fees
            elif kind == "funding":
                assert posted == -FUNDS * len(BUYERS)
        assert total_posted == 0  # money is conserved: what left funding is somewhere

    @invariant()
    def orders_agree(self) -> None:
        if self.co is None:
            return
        for oid, o in self.orders.items():
            got = self.co.get_order(oid)
            assert got["state"] == o["state"], (oid, got, o)
            assert got["refunded"] == o["refunded"] <= got["amount"]
            assert got["held"] == o["held"]
            assert got["settled"] == o["settled"]

    @invariant()
    def settled_once(self) -> None:
        if self.co is None or not self.orders:
            return
        payouts = self.backend.query_transfers(QueryFilter(code=int(money.Step.PAYOUT), limit=8000))
        per_order: dict[int, int] = {}
        for t in payouts:
            per_order[t.user_data_128] = per_order.get(t.user_data_128, 0) + 1
        assert all(n == 1 for n in per_order.values())
        settled = sum(1 for o in self.orders.values() if o["settled"] > money.fee_of(o["settled"], FEE_BPS))
        assert len(per_order) == settled


def _run(pg_dsn: str, examples: int) -> None:
    CheckoutMachine.pg_dsn = pg_dsn
    run_state_machine_as_test(
        CheckoutMachine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )


def test_orders_against_the_embedded_engine() -> None:
    _run("", 25)


def test_orders_against_postgresql(pg_dsn: str) -> None:
    _run(pg_dsn, 12)


def test_an_operation_cut_between_intent_and_money_is_finished_once_on_restart(tmp_path: Path) -> None:
    """A crash after the intent was stored and before the money moved (or before its outcome was stored): the
    restart sends the same chain, the retry gets that answer, and a second driver changes nothing."""
    e = Engine(tmp_path / "pay", fsync=False)
    co = Checkout(tmp_path / "co", e)
    co.topup("t", "ann", 10_000)
    oid = co.create_order("o", "ann", "shop", 4_000).body["id"]
    started = co.begin_pay("p", oid)  # intent stored; the process "dies" here
    co.store.close()
    co.batcher.close()
    co = Checkout(tmp_path / "co", e)  # recover() at start drives it
    assert co.get_order(oid)["state"] == "paid"
    r = co.pay("p", oid)
    assert r.replayed and r.status == 200
    assert co.wallet("ann") == {"buyer": "ann", "available": 6_000, "held": 4_000}
    # A refund driven by two drivers (the request and the sweeper) is counted once.
    started = co.begin_refund("r", oid, 1_000)
    co._release("r")  # as if its request thread had died: the sweeper may take it
    assert co.recover() == 1
    again = co.finish(started)
    assert again.replayed and again.body["refunded"] == 1_000
    assert co.get_order(oid)["refunded"] == 1_000 and co.wallet("ann")["available"] == 7_000
    co.close()
    e.close()
