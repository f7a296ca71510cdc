"""Hypothesis state machines over installment plans and merchant loans on the real embedded payments
engine: purchase, repay, early repay, refund, overdue, time passing; sales, settlements, drawdowns.

After every step the core's balances are checked against the service's records: money is conserved
across shopper, merchant, platform and lender accounts, every line's available amount is line minus
outstanding and never below zero, no installment is paid beyond what it owes, and a refusal changes
nothing (neither a balance nor a record)."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from liangcao.credit import loans as L
from liangcao.credit import plans as P
from liangcao.credit.errors import CreditCode, CreditError
from liangcao.credit.service import CreditService, ManualDays, account_id
from liangcao.payments import Engine

SHOPPERS = ("ann", "bo")
MERCHANTS = ("m1", "m2")
KINDS = ("lines", "fee-income", "penalty-income", "loan-capital", "loan-interest", "bank", "buyers")


def net(engine: Any, acct: int) -> int:
    found = engine.lookup_accounts([acct])
    return found[0].credits_posted - found[0].debits_posted if found else 0


class Base(RuleBasedStateMachine):
    #: A PostgreSQL DSN: run on ``PostgresBackend`` instead of the embedded engine.
    dsn: str | None = None

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="credit-sm-"))
        self.clock = ManualDays(20_000)
        self.engine: Any
        if self.dsn is None:
            self.engine = Engine(self.dir / "pay", fsync=False)
        else:
            from liangcao.payments.postgres import PostgresBackend

            self.engine = PostgresBackend(self.dsn)
            self.engine.reset()
        self.s = CreditService(self.engine, self.dir / "credit.db", clock=self.clock, fsync=False)

    def teardown(self) -> None:
        self.s.close()
        self.engine.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def accounts(self) -> list[int]:
        ids = [account_id(k) for k in KINDS]
        for s in SHOPPERS:
            ids += [account_id("line", s), account_id("wallet", s)]
        ids += [account_id("merchant", m) for m in MERCHANTS]
        return ids

    def snapshot(self) -> tuple[list[tuple[int, int]], str]:
        balances = [(a.debits_posted, a.credits_posted) for a in self.engine.lookup_accounts(self.accounts())]
        rows = self.s._db.execute("SELECT kind, key, body FROM records ORDER BY kind, key").fetchall()
        return balances, hashlib.sha256(repr(rows).encode()).hexdigest()

    def refused(self, code: CreditCode, fn: object, *args: object) -> None:
        """``fn(*args)`` must be refused with ``code`` and change nothing."""
        before = self.snapshot()
        try:
            fn(*args)  # type: ignore[operator]
        except CreditError as exc:
            assert exc.code == code, (exc.code, exc.message)
        else:
            raise AssertionError(f"{fn} was not refused")
        assert self.snapshot() == before

    @invariant()
    def ledger_balances(self) -> None:
        # Every account the service uses nets to zero with the others: no money appears or vanishes.
        assert sum(net(self.engine, a) for a in self.accounts()) == 0


class PlansMachine(Base):
    def __init__(self) -> None:
        super().__init__()
        self.orders: list[str] = []
        self.deposits = dict.fromkeys(SHOPPERS, 0)
        self.n = 0

    @rule(
        shopper=st.sampled_from(SHOPPERS),
        merchant=st.sampled_from(MERCHANTS),
        amount=st.integers(1, 150_000),
        periods=st.sampled_from([3, 6, 12]),
        payer=st.sampled_from(["shopper", "merchant"]),
    )
    def buy(self, shopper: str, merchant: str, amount: int, periods: int, payer: str) -> None:
        self.n += 1
        order = f"o{self.n}"
        try:
            plan = self.s.checkout_installments(order, shopper, merchant, amount, periods, payer)
        except CreditError as exc:
            assert exc.code in (CreditCode.LINE_EXCEEDED, CreditCode.LINE_FROZEN), exc
            return
        self.orders.append(order)
        shopper_fee = plan.fee if payer == "shopper" else 0
        assert sum(p.principal + p.fee for p in plan.schedule) == amount + shopper_fee
        # A retried checkout answers the same plan and moves no money.
        before = self.snapshot()
        assert self.s.checkout_installments(order, shopper, merchant, amount, periods, payer) == plan
        assert self.snapshot() == before

    @rule(shopper=st.sampled_from(SHOPPERS), amount=st.integers(1, 100_000))
    def deposit(self, shopper: str, amount: int) -> None:
        self.n += 1
        self.s.deposit(shopper, amount, f"d{self.n}")
        self.deposits[shopper] += amount

    @rule(data=st.data())
    def repay(self, data: st.DataObject) -> None:
        if not self.orders:
            return
        order = data.draw(st.sampled_from(self.orders))
        plan = self.s.plan(order)
        if plan.state in (P.PlanState.PAID_OFF, P.PlanState.REFUNDED):
            self.refused(CreditCode.PLAN_CLOSED, self.s.repay, order, 1)
            return
        owed = plan.owed()
        self.refused(CreditCode.OVERPAY, self.s.repay, order, owed + 1)
        amount = data.draw(st.integers(1, owed))
        wallet = net(self.engine, account_id("wallet", plan.shopper))
        if amount > wallet:
            self.refused(CreditCode.FUNDS_SHORT, self.s.repay, order, amount)
            return
        self.n += 1
        after = self.s.repay(order, amount, request_id=f"r{self.n}")
        # The same request again is answered, not charged again.
        assert self.s.repay(order, amount, request_id=f"r{self.n}") == after
        assert net(self.engine, account_id("wallet", plan.shopper)) == wallet - amount

    @rule(data=st.data())
    def prepay(self, data: st.DataObject) -> None:
        if not self.orders:
            return
        order = data.draw(st.sampled_from(self.orders))
        plan = self.s.plan(order)
        if plan.state in (P.PlanState.ACTIVE, P.PlanState.OVERDUE):
            self.s.deposit(plan.shopper, plan.owed(), f"pre-{order}-{plan.ops}")
            self.deposits[plan.shopper] += plan.owed()
            assert self.s.prepay(order).state is P.PlanState.PAID_OFF

    @rule(data=st.data())
    def refund(self, data: st.DataObject) -> None:
        if not self.orders:
            return
        order = data.draw(st.sampled_from(self.orders))
        plan = self.s.plan(order)
        room = plan.principal - plan.refunded
        if room == 0:
            self.refused(CreditCode.PLAN_CLOSED, self.s.refund, order, 1)
            return
        self.refused(CreditCode.REFUND_EXCEEDS, self.s.refund, order, room + 1)
        amount = data.draw(st.integers(1, room))
        if net(self.engine, account_id("merchant", plan.merchant)) < amount:
            return  # the merchant spent its money: covered by the refusal test elsewhere
        self.n += 1
        self.s.refund(order, amount, refund_id=f"f{self.n}")

    @rule(days=st.integers(0, 45))
    def time_passes(self, days: int) -> None:
        self.clock.advance(days)
        first = self.s.run_day()
        before = self.snapshot()
        again = self.s.run_day()  # collecting twice on one day charges once
        assert again.collected_fen == 0 and self.snapshot() == before
        assert first.day == again.day

    @rule()
    def bad_input(self) -> None:
        self.refused(CreditCode.BAD_AMOUNT, self.s.checkout_installments, "x1", "ann", "m1", 100.0, 3)
        self.refused(CreditCode.BAD_PERIODS, self.s.checkout_installments, "x1", "ann", "m1", 100, 4)
        self.refused(CreditCode.BAD_FEE_PAYER, self.s.checkout_installments, "x1", "ann", "m1", 100, 3, "bank")
        self.refused(CreditCode.BAD_ID, self.s.checkout_installments, "", "ann", "m1", 100, 3)
        self.refused(CreditCode.UNKNOWN_PLAN, self.s.repay, "nope", 1)
        if self.orders:
            self.refused(CreditCode.BAD_AMOUNT, self.s.repay, self.orders[0], 0.5)

    @invariant()
    def books_agree(self) -> None:
        plans = [p for s in SHOPPERS for p in self.s.plans_of(s)]
        for s in SHOPPERS:
            mine = [p for p in plans if p.shopper == s]
            if self.s._get("shopper", s, object) is None:
                continue
            view = self.s.line(s)
            # The line: available (with what a freeze holds) = line - outstanding principal, never overdrawn.
            assert view.available_fen + view.held_fen == view.line_fen - sum(p.unpaid_principal() for p in mine)
            assert view.available_fen >= 0 and view.held_fen >= 0
            line = self.engine.lookup_accounts([account_id("line", s)])[0]
            assert line.debits_posted + line.debits_pending <= line.credits_posted
            # Frozen exactly while a plan is overdue, and then the core holds the line.
            assert view.frozen == any(p.state is P.PlanState.OVERDUE for p in self.s.plans_of(s))
            assert view.frozen or view.held_fen == 0
            event("a line frozen" if view.frozen else "a line open")
            # The shopper paid exactly what the plans record as paid, and got back what refunds returned.
            paid = sum(q.paid_principal + q.paid_fee + q.paid_penalty for p in mine for q in p.schedule)
            back = sum(p.refunded_to_shopper for p in mine)
            assert net(self.engine, account_id("wallet", s)) == self.deposits[s] - paid + back
            for p in mine:
                P.check_plan(p)  # no installment paid beyond what it owes
        for m in MERCHANTS:
            mine = [p for p in plans if p.merchant == m]
            expected = sum(
                p.principal
                - (p.fee if p.fee_payer is P.FeePayer.MERCHANT else 0)
                + p.merchant_fee_returned
                - p.refunded
                for p in mine
            )
            assert net(self.engine, account_id("merchant", m)) == expected
        fees = sum(q.paid_fee for p in plans for q in p.schedule) + sum(
            p.fee - p.merchant_fee_returned for p in plans if p.fee_payer is P.FeePayer.MERCHANT
        )
        assert net(self.engine, account_id("fee-income")) == fees
        assert net(self.engine, account_id("penalty-income")) == sum(q.paid_penalty for p in plans for q in p.schedule)
        self.s.check()


class LoansMachine(Base):
    @initialize()
    def history(self) -> None:
        today = self.clock()
        for i, m in enumerate(MERCHANTS):
            rows = [
                (f"h{d}", today - 200 + d, L.SaleKind.SALE, 300_000 + 5_000 * (d % 5) * (i + 1)) for d in range(200)
            ]
            rows += [(f"r{d}", today - 200 + d, L.SaleKind.REFUND, 10_000) for d in range(0, 200, 20)]
            self.s.import_sales(m, rows)
        self.sales = 0
        self.offers: list[str] = []

    @rule(merchant=st.sampled_from(MERCHANTS), receivables=st.integers(0, 5_000_000))
    def apply(self, merchant: str, receivables: int) -> None:
        a = self.s.apply_loan(merchant, receivables)
        b = self.s.apply_loan(merchant, receivables)
        # Scoring is deterministic for the same history.
        assert (a.score, a.limit_fen, a.daily_rate_bp, a.features) == (
            b.score,
            b.limit_fen,
            b.daily_rate_bp,
            b.features,
        )
        assert a.decided_us < 1_000_000
        if a.approved:
            self.offers.append(b.offer_id)
        else:
            self.refused(CreditCode.LOAN_DECLINED, self.s.draw_loan, b.offer_id, 1)

    @rule(data=st.data())
    def draw(self, data: st.DataObject) -> None:
        if not self.offers:
            return
        offer = self.s.offer(data.draw(st.sampled_from(self.offers)))
        if offer.drawn:
            # A retried draw answers the loan it made (nothing moves); another amount is refused.
            drawn = self.s.loan(f"L-{offer.offer_id}").principal
            before = net(self.engine, account_id("merchant", offer.merchant))
            assert self.s.draw_loan(offer.offer_id, drawn).principal == drawn
            assert net(self.engine, account_id("merchant", offer.merchant)) == before
            self.refused(CreditCode.OFFER_EXPIRED, self.s.draw_loan, offer.offer_id, drawn - 1 or 2)
            return
        if self.clock() > offer.valid_until:
            self.refused(CreditCode.OFFER_EXPIRED, self.s.draw_loan, offer.offer_id, 1)
            return
        self.refused(CreditCode.DRAW_EXCEEDS_OFFER, self.s.draw_loan, offer.offer_id, offer.limit_fen + 1)
        if any(x.state is not L.LoanState.REPAID for x in self.s.merchant_loans(offer.merchant)):
            self.refused(CreditCode.LOAN_OUTSTANDING, self.s.draw_loan, offer.offer_id, 1)
            return
        amount = data.draw(st.integers(1, offer.limit_fen))
        before = net(self.engine, account_id("merchant", offer.merchant))
        self.s.draw_loan(offer.offer_id, amount)
        assert net(self.engine, account_id("merchant", offer.merchant)) == before + amount

    @rule(merchant=st.sampled_from(MERCHANTS), amount=st.integers(1, 2_000_000))
    def sale(self, merchant: str, amount: int) -> None:
        self.sales += 1
        sid = f"s{self.sales}"
        loans = [x for x in self.s.merchant_loans(merchant) if x.state is not L.LoanState.REPAID]
        d = self.s.record_sale(merchant, sid, amount)
        assert d is not None
        if loans:
            assert d.deducted_fen == min(amount * loans[0].share_bp // 10_000, loans[0].owed)
        else:
            assert d.deducted_fen == 0
        before = self.snapshot()
        assert self.s.record_sale(merchant, sid, amount) == d  # a repeated settlement is not taken twice
        assert self.snapshot() == before

    @rule(merchant=st.sampled_from(MERCHANTS), data=st.data())
    def early_repay(self, merchant: str, data: st.DataObject) -> None:
        open_loans = [x for x in self.s.merchant_loans(merchant) if x.state is not L.LoanState.REPAID]
        if not open_loans:
            return
        loan = open_loans[0]
        self.refused(CreditCode.OVERPAY, self.s.repay_loan, loan.loan_id, loan.owed + 1)
        have = net(self.engine, account_id("merchant", merchant))
        amount = data.draw(st.integers(1, loan.owed))
        if amount > have:
            self.refused(CreditCode.MERCHANT_FUNDS_SHORT, self.s.repay_loan, loan.loan_id, amount)
            return
        after = self.s.repay_loan(loan.loan_id, amount)
        if amount == loan.owed:
            assert after.state is L.LoanState.REPAID
            self.refused(CreditCode.LOAN_CLOSED, self.s.repay_loan, loan.loan_id, 1)

    @rule(days=st.integers(0, 120))
    def time_passes(self, days: int) -> None:
        self.clock.advance(days)
        self.s.run_day()

    @invariant()
    def book_agrees(self) -> None:
        if not hasattr(self, "offers"):
            return
        book = self.s.loan_book()
        assert net(self.engine, account_id("loan-capital")) == -book.outstanding_fen
        assert net(self.engine, account_id("loan-interest")) == book.interest_paid_fen
        assert book.drawn_fen == book.outstanding_fen + book.principal_repaid_fen
        for m in MERCHANTS:
            for loan in self.s.merchant_loans(m):
                assert loan.outstanding + loan.paid_principal == loan.principal


_SETTINGS = settings(max_examples=30, stateful_step_count=40, deadline=None, suppress_health_check=list(HealthCheck))
TestPlans = PlansMachine.TestCase
TestPlans.settings = _SETTINGS
TestLoans = LoansMachine.TestCase
TestLoans.settings = _SETTINGS


def test_plans_and_loans_on_postgresql(pg_dsn: str) -> None:
    """The same machines with the money in PostgreSQL (fewer, shorter runs: each batch is a transaction)."""
    few = settings(max_examples=4, stateful_step_count=20, deadline=None, suppress_health_check=list(HealthCheck))
    for machine in (PlansMachine, LoansMachine):
        on_pg = type(f"{machine.__name__}Pg", (machine,), {"dsn": pg_dsn})
        run_state_machine_as_test(on_pg, settings=few)
