"""Installment plans, pure: the schedule and its rounding rule, fees, penalty interest, repayments,
refunds and the state machine (``liangcao.credit.plans``); and the loan scoring (``liangcao.credit.loans``)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liangcao import codes
from liangcao.credit import loans as L
from liangcao.credit import plans as P
from liangcao.credit.errors import CreditCode, CreditError, installment_amount_fen_max
from liangcao.errors import InvariantViolation


def make(amount: int, periods: int = 6, payer: P.FeePayer = P.FeePayer.SHOPPER, day: int = 100) -> P.Plan:
    return P.make_plan("o", "s", "m", amount, periods, payer, P.DEFAULT_FEE_TABLE, day)


def test_worked_example_1199_yuan_6_periods_merchant_pays() -> None:
    plan = make(119_900, 6, P.FeePayer.MERCHANT)
    assert plan.fee == 5_396  # 119,900 x 450 bp = 5,395.5, rounded half up
    assert [p.principal for p in plan.schedule] == [19_985] + [19_983] * 5  # remainder 2 fen in period 1
    assert [p.fee for p in plan.schedule] == [0] * 6  # interest-free for the shopper
    assert [p.due_day for p in plan.schedule] == [130, 160, 190, 220, 250, 280]


def test_shopper_pays_fee_split_like_principal() -> None:
    plan = make(119_900, 6, P.FeePayer.SHOPPER)
    assert [p.fee for p in plan.schedule] == [5_396 - 5 * 899] + [899] * 5
    assert sum(p.principal + p.fee for p in plan.schedule) == 119_900 + 5_396


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, installment_amount_fen_max),
    st.sampled_from([3, 6, 12]),
    st.sampled_from(list(P.FeePayer)),
)
def test_schedule_always_sums_to_principal_plus_fee(amount: int, periods: int, payer: P.FeePayer) -> None:
    plan = make(amount, periods, payer)
    shopper_fee = plan.fee if payer is P.FeePayer.SHOPPER else 0
    assert sum(p.principal for p in plan.schedule) == amount
    assert sum(p.fee for p in plan.schedule) == shopper_fee
    assert sum(p.principal + p.fee for p in plan.schedule) == amount + shopper_fee
    first, rest = plan.schedule[0], plan.schedule[1:]
    assert all(p.principal == amount // periods for p in rest)
    assert 0 <= first.principal - amount // periods < periods
    assert plan.fee == (amount * P.DEFAULT_FEE_TABLE[periods] + 5_000) // 10_000


@pytest.mark.parametrize("periods", [0, 1, 2, 4, 5, 24, -3, 6.0, "6", None])
def test_unknown_period_count_refused(periods: object) -> None:
    with pytest.raises(CreditError) as e:
        P.make_plan("o", "s", "m", 1_000, periods, P.FeePayer.SHOPPER, P.DEFAULT_FEE_TABLE, 0)  # type: ignore[arg-type]
    assert e.value.code == CreditCode.BAD_PERIODS


def test_fee_table_is_integer_bp_for_3_6_12() -> None:
    assert P.check_fee_table({3: 0, 12: 1_000}) == {3: 0, 12: 1_000}
    for bad in ({}, {4: 100}, {3: 1.5}, {6: -1}, {6: 10_001}):
        with pytest.raises(CreditError) as e:
            P.check_fee_table(bad)  # type: ignore[arg-type]
        assert e.value.code == CreditCode.BAD_RATE_TABLE


def test_penalty_per_overdue_day_rounded_down() -> None:
    plan = make(30_000, 3)  # 10,000 principal + 84 fee per period (fee 750 total: 250 + 250 + 250)
    p1 = plan.schedule[0]
    P.accrue(plan, p1.due_day, 5)  # due today: not overdue yet
    assert p1.penalty == 0
    P.accrue(plan, p1.due_day + 3, 5)
    assert p1.penalty == 3 * ((p1.principal + p1.fee) * 5 // 10_000)
    P.move(plan, "tick", p1.due_day + 3)
    assert plan.state is P.PlanState.OVERDUE and plan.was_overdue


def test_repayment_order_penalty_fee_principal_earliest_first() -> None:
    plan = make(30_000, 3)
    P.accrue(plan, plan.schedule[0].due_day + 10, 5)
    pen = plan.schedule[0].penalty
    alloc = P.allocate_repayment(plan, pen + 1)
    assert (alloc.penalty, alloc.fee, alloc.principal) == (pen, 1, 0)
    with pytest.raises(CreditError) as e:
        P.allocate_repayment(plan, plan.owed() + 1)
    assert e.value.code == CreditCode.OVERPAY


def test_refund_shortens_from_the_last_period_and_returns_merchant_fee() -> None:
    plan = make(119_900, 6, P.FeePayer.MERCHANT)
    P.allocate_repayment(plan, 19_985)  # period 1 paid
    split = P.allocate_refund(plan, 50_000)
    assert split.to_line == 50_000 and split.to_shopper == 0
    assert [p.principal for p in plan.schedule] == [19_985, 19_983, 19_983, 9_949, 0, 0]
    assert [p.cancelled for p in plan.schedule] == [False] * 4 + [True] * 2
    assert split.fee_to_merchant == 5_396 * 50_000 // 119_900
    rest = P.allocate_refund(plan, 69_900)
    assert rest.to_shopper == 19_985  # principal already repaid goes back to the shopper
    assert plan.merchant_fee_returned == 5_396  # a full refund returns the whole fee
    P.move(plan, "refund", 101)
    assert plan.state is P.PlanState.REFUNDED
    with pytest.raises(CreditError) as e:
        P.require(plan, "repay")
    assert e.value.code == CreditCode.PLAN_CLOSED
    with pytest.raises(CreditError) as e:
        P.allocate_refund(plan, 1)
    assert e.value.code == CreditCode.REFUND_EXCEEDS


def test_state_machine_refuses_a_move_it_does_not_list() -> None:
    plan = make(9_000, 3)
    plan.state = P.PlanState.REFUNDED
    with pytest.raises(InvariantViolation):
        P.move(plan, "repay", 100)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(3, 500_000),
    st.sampled_from([3, 6, 12]),
    st.sampled_from(list(P.FeePayer)),
    st.lists(st.tuples(st.sampled_from(["repay", "refund", "days"]), st.integers(1, 200_000)), max_size=12),
)
def test_any_sequence_keeps_plan_invariants(
    amount: int, periods: int, payer: P.FeePayer, ops: list[tuple[str, int]]
) -> None:
    plan = make(amount, periods, payer)
    day = 100
    paid_total = 0
    for op, x in ops:
        if op == "days":
            day += x % 60
            P.accrue(plan, day, 5)
            if (plan.state, "tick") in P.TRANSITIONS:
                P.move(plan, "tick", day)
            continue
        try:
            if op == "repay":
                P.require(plan, "repay")
                paid_total += P.allocate_repayment(plan, min(x, plan.owed())).total
                P.move(plan, "repay", day)
            else:
                P.require(plan, "refund")
                P.allocate_refund(plan, min(x, plan.principal - plan.refunded))
                P.move(plan, "refund", day)
        except CreditError:
            pass
        P.check_plan(plan)
        assert paid_total == sum(p.paid_principal + p.paid_fee + p.paid_penalty for p in plan.schedule)


# ------------------------------------------------------------------------------------------------ scoring


def history(days: int, per_day: int, refunds_every: int = 0, today: int = 1_000) -> list[tuple[int, L.SaleKind, int]]:
    rows = []
    for d in range(days):
        rows.append((today - days + d, L.SaleKind.SALE, per_day + (d % 7) * 100))
        if refunds_every and d % refunds_every == 0:
            rows.append((today - days + d, L.SaleKind.REFUND, per_day // 2))
    return rows


def test_scoring_is_deterministic_and_order_free() -> None:
    rows = history(365, 200_000, refunds_every=10)
    a = L.features(rows, 1_000)
    b = L.features(list(reversed(rows)), 1_000)
    assert a == b and L.decide(a) == L.decide(b)
    assert a.tenure_days == 365 and a.active_days_90 == 89  # days 1..89 ago: today has no sales yet


def test_decline_young_or_chargeback_heavy_merchants() -> None:
    young = L.decide(L.features(history(30, 500_000), 1_000))
    assert not young.approved and any("tenure" in r for r in young.reasons)
    rows = [*history(365, 100_000), (990, L.SaleKind.CHARGEBACK, 2_000_000)]
    assert not L.decide(L.features(rows, 1_000)).approved


def test_offer_limit_grows_with_receivables() -> None:
    f = L.features(history(365, 100_000), 1_000)
    plain = L.decide(f)
    f.receivables_fen = 10_000_000
    more = L.decide(f)
    assert plain.approved and more.limit_fen == plain.limit_fen + 7_000_000


def test_codes_registered_in_range() -> None:
    for c in CreditCode:
        assert 3400 <= c <= 3499
        info = codes.info(c)
        assert info is not None and info.owner == "credit" and info.name == c.name


def test_docs_worked_examples_reproduce() -> None:
    from liangcao.credit.examples import run

    out = run()
    assert out["plan"]["fee"] == 5_396 and out["plan"]["merchant_receives"] == 114_504
    assert [row[2] for row in out["plan"]["schedule"]] == [19_985] + [19_983] * 5
    assert len(out["loan"]["days"]) == 85 and out["loan"]["interest_fen"] == 64_283
    assert out["offer"] == {"score": 970, "limit_fen": 28_450_000, "daily_rate_bp": 3}
