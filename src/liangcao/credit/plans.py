"""Installment plans, pure: the schedule, penalty interest, how a repayment or a refund is applied, the
state machine. No I/O here; ``liangcao.credit.service`` moves the money and stores the records.

Theory of operation
-------------------
A plan splits ``principal`` fen into ``n`` periods (3, 6 or 12: the keys of the fee table). The plan's fee
is ``principal * rate_bp / 10000`` rounded half up to the fen (``fee_fen``). If the shopper pays it, it is
split over the periods like the principal; if the merchant pays it, the merchant pays it whole at checkout
(taken from its settlement) and the shopper's periods carry no fee (interest-free).

**Rounding rule**: an amount ``A`` split over ``n`` periods gives each period ``A // n`` and puts the
remainder ``A % n`` into **period 1** (so period 1 is at most ``n - 1`` fen larger than the others). So the
periods' principal sums exactly to the principal, their fees exactly to the fee.

Period ``k`` (1-based) is due on business day ``start_day + 30 * k``. A period is **overdue** from the day
after its due day while any of its principal or fee is unpaid. **Penalty interest** accrues per whole
overdue day at ``penalty_bp_per_day`` on that period's unpaid principal plus fee; each day's penalty is
rounded down to the fen (``unpaid * bp // 10000`` per day), so a day's penalty on less than
``10000 / bp`` fen is zero. Accrual runs up to "today" before anything changes what is unpaid, so it is exact.

**Repayment** (on time, early or partial) pays, period by period from the earliest: its penalty, then its
fee, then its principal. Paying more than the plan owes today is refused (``OVERPAY``).

**Refund** of ``A`` fen reduces the unpaid principal from the **last** period backwards (the plan gets
shorter). A period whose unpaid principal reaches zero by a refund has its unpaid fee and penalty waived;
if nothing had been paid on it, it is cancelled. The part of a refund above the unpaid principal (principal
the shopper already repaid) goes back to the shopper. A merchant-paid fee is returned pro rata:
``fee * refunded_total // principal`` minus what was already returned, so a full refund returns all of it.

State machine (``TRANSITIONS``)::

    ACTIVE ──(a period falls due unpaid)──> OVERDUE ──(overdue periods repaid)──> ACTIVE
      │  └──────────(all repaid)─────────> PAID_OFF <──(all repaid)──┘   │
      └───(refunds reach the principal)──> REFUNDED <─────────────────────┘  (also from PAID_OFF)

``PAID_OFF`` accepts only refunds; ``REFUNDED`` accepts nothing (``PLAN_CLOSED``).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum

import msgspec

from liangcao.credit.errors import CreditCode, CreditError, rate_bp_max
from liangcao.errors import InvariantViolation

#: Days between due dates (a business "month").
PERIOD_DAYS = 30
#: Fee for a whole plan, in basis points of the principal, by period count (2018 花呗 rates).
DEFAULT_FEE_TABLE: dict[int, int] = {3: 250, 6: 450, 12: 880}
#: Penalty interest per overdue day: 5 bp = 0.05 % a day.
DEFAULT_PENALTY_BP_PER_DAY = 5
PERIOD_COUNTS = (3, 6, 12)


class PlanState(IntEnum):
    ACTIVE = 1
    OVERDUE = 2
    PAID_OFF = 3
    REFUNDED = 4


class FeePayer(IntEnum):
    SHOPPER = 1
    MERCHANT = 2


#: (state, event) -> the states the plan may be in afterwards. An event not listed is refused.
TRANSITIONS: dict[tuple[PlanState, str], frozenset[PlanState]] = {
    (PlanState.ACTIVE, "tick"): frozenset({PlanState.ACTIVE, PlanState.OVERDUE}),
    (PlanState.ACTIVE, "repay"): frozenset({PlanState.ACTIVE, PlanState.PAID_OFF}),
    (PlanState.ACTIVE, "refund"): frozenset(
        {PlanState.ACTIVE, PlanState.OVERDUE, PlanState.PAID_OFF, PlanState.REFUNDED}
    ),
    (PlanState.OVERDUE, "tick"): frozenset({PlanState.OVERDUE}),
    (PlanState.OVERDUE, "repay"): frozenset({PlanState.OVERDUE, PlanState.ACTIVE, PlanState.PAID_OFF}),
    (PlanState.OVERDUE, "refund"): frozenset(
        {PlanState.OVERDUE, PlanState.ACTIVE, PlanState.PAID_OFF, PlanState.REFUNDED}
    ),
    (PlanState.PAID_OFF, "tick"): frozenset({PlanState.PAID_OFF}),
    (PlanState.PAID_OFF, "refund"): frozenset({PlanState.PAID_OFF, PlanState.REFUNDED}),
    (PlanState.REFUNDED, "tick"): frozenset({PlanState.REFUNDED}),
}


class Period(msgspec.Struct, kw_only=True):
    """One installment. ``paid_*`` never exceed their amounts; ``penalty`` is accrued up to ``penalty_day``."""

    n: int
    due_day: int
    principal: int
    fee: int
    penalty: int = 0
    paid_principal: int = 0
    paid_fee: int = 0
    paid_penalty: int = 0
    penalty_day: int = 0
    cancelled: bool = False

    @property
    def unpaid(self) -> int:
        """Principal and fee still owed (penalty apart): what penalty interest accrues on."""
        return self.principal - self.paid_principal + self.fee - self.paid_fee

    @property
    def owed(self) -> int:
        return self.unpaid + self.penalty - self.paid_penalty


class Plan(msgspec.Struct, kw_only=True):
    """An installment plan; the plan id is the order id."""

    plan_id: str
    shopper: str
    merchant: str
    principal: int
    fee: int  # the whole plan's fee, whoever pays it
    fee_payer: FeePayer
    fee_rate_bp: int
    periods: int
    start_day: int
    state: PlanState = PlanState.ACTIVE
    refunded: int = 0
    refunded_to_shopper: int = 0  # the part of refunds above the unpaid principal, paid back to the shopper
    merchant_fee_returned: int = 0
    was_overdue: bool = False
    ops: int = 0  # money operations applied; names the next operation's transfer ids
    schedule: list[Period] = msgspec.field(default_factory=list)

    def owed(self) -> int:
        return sum(p.owed for p in self.schedule)

    def unpaid_principal(self) -> int:
        return sum(p.principal - p.paid_principal for p in self.schedule)


def check_fee_table(table: Mapping[int, int]) -> dict[int, int]:
    """A fee table: period counts among 3/6/12 mapped to integer basis points 0..rate_bp_max."""
    out: dict[int, int] = {}
    if not table:
        raise CreditError(CreditCode.BAD_RATE_TABLE, "the fee table is empty")
    for k, v in table.items():
        if type(k) is not int or k not in PERIOD_COUNTS:
            raise CreditError(CreditCode.BAD_RATE_TABLE, f"period counts are 3, 6 or 12, got {k!r}")
        if type(v) is not int or not 0 <= v <= rate_bp_max:
            raise CreditError(CreditCode.BAD_RATE_TABLE, f"fee rates are integer basis points 0..{rate_bp_max}")
        out[k] = v
    return out


def fee_fen(principal: int, rate_bp: int) -> int:
    """The plan's fee: ``principal * rate_bp / 10000`` rounded half up to the fen."""
    return (principal * rate_bp + 5_000) // 10_000


def split(amount: int, n: int) -> list[int]:
    """``amount`` over ``n`` periods: ``amount // n`` each, the remainder in period 1."""
    base, rest = divmod(amount, n)
    return [base + rest] + [base] * (n - 1)


def make_plan(
    plan_id: str,
    shopper: str,
    merchant: str,
    principal: int,
    periods: int,
    fee_payer: FeePayer,
    fee_table: Mapping[int, int],
    start_day: int,
) -> Plan:
    """A new plan (the caller has checked ids and amounts); refuses a period count not in the table."""
    if type(periods) is not int or periods not in fee_table:
        raise CreditError(CreditCode.BAD_PERIODS, f"periods must be one of {sorted(fee_table)}, got {periods!r}")
    rate = fee_table[periods]
    fee = fee_fen(principal, rate)
    shopper_fee = fee if fee_payer is FeePayer.SHOPPER else 0
    principals = split(principal, periods)
    fees = split(shopper_fee, periods)
    schedule = [
        Period(
            n=k + 1,
            due_day=start_day + PERIOD_DAYS * (k + 1),
            principal=principals[k],
            fee=fees[k],
            penalty_day=start_day + PERIOD_DAYS * (k + 1),
        )
        for k in range(periods)
    ]
    plan = Plan(
        plan_id=plan_id,
        shopper=shopper,
        merchant=merchant,
        principal=principal,
        fee=fee,
        fee_payer=fee_payer,
        fee_rate_bp=rate,
        periods=periods,
        start_day=start_day,
        schedule=schedule,
    )
    check_plan(plan)
    return plan


def check_plan(plan: Plan) -> None:
    """The plan's invariants; a breach is a programmer error."""
    principal_sum = sum(p.principal for p in plan.schedule) + plan.refunded - plan.refunded_to_shopper
    if principal_sum != plan.principal:
        raise InvariantViolation(0, f"plan {plan.plan_id}: periods' principal {principal_sum} != {plan.principal}")
    for p in plan.schedule:
        if not (0 <= p.paid_principal <= p.principal and 0 <= p.paid_fee <= p.fee and 0 <= p.paid_penalty <= p.penalty):
            raise InvariantViolation(0, f"plan {plan.plan_id}: period {p.n} paid more than it owed")


def accrue(plan: Plan, today: int, penalty_bp_per_day: int) -> None:
    """Penalty interest up to ``today`` on every overdue period (see the module docstring)."""
    for p in plan.schedule:
        if today > p.penalty_day and p.due_day < today:
            unpaid = p.unpaid
            if unpaid > 0:
                p.penalty += (today - p.penalty_day) * (unpaid * penalty_bp_per_day // 10_000)
            p.penalty_day = today


def state_of(plan: Plan, today: int) -> PlanState:
    """The state the plan's figures put it in."""
    if plan.refunded >= plan.principal:
        return PlanState.REFUNDED
    if all(p.owed == 0 for p in plan.schedule):
        return PlanState.PAID_OFF
    if any(p.due_day < today and p.unpaid > 0 for p in plan.schedule):
        return PlanState.OVERDUE
    return PlanState.ACTIVE


def move(plan: Plan, event: str, today: int) -> None:
    """Set the plan's state after ``event``, checking the move is one the state machine allows."""
    new = state_of(plan, today)
    if new not in TRANSITIONS.get((plan.state, event), frozenset()):
        raise InvariantViolation(0, f"plan {plan.plan_id}: {plan.state.name} -{event}-> {new.name} is not allowed")
    if new is PlanState.OVERDUE:
        plan.was_overdue = True
    plan.state = new
    check_plan(plan)


def require(plan: Plan, event: str) -> None:
    """Refuse ``event`` in a state that does not accept it (``PLAN_CLOSED``)."""
    if (plan.state, event) not in TRANSITIONS:
        raise CreditError(
            CreditCode.PLAN_CLOSED, f"plan {plan.plan_id} is {plan.state.name.lower()}: it accepts no {event}"
        )


class Allocation(msgspec.Struct, kw_only=True):
    """How much of a repayment goes to principal, fee and penalty (for the transfers)."""

    principal: int = 0
    fee: int = 0
    penalty: int = 0

    @property
    def total(self) -> int:
        return self.principal + self.fee + self.penalty


def allocate_repayment(plan: Plan, amount: int) -> Allocation:
    """Apply ``amount`` to the plan (penalty, fee, principal, earliest period first); the caller accrued."""
    owed = plan.owed()
    if amount > owed:
        raise CreditError(CreditCode.OVERPAY, f"plan {plan.plan_id} owes {owed} fen, cannot take {amount}")
    left = amount
    out = Allocation()
    for p in plan.schedule:
        take = min(left, p.penalty - p.paid_penalty)
        p.paid_penalty += take
        out.penalty += take
        left -= take
        take = min(left, p.fee - p.paid_fee)
        p.paid_fee += take
        out.fee += take
        left -= take
        take = min(left, p.principal - p.paid_principal)
        p.paid_principal += take
        out.principal += take
        left -= take
    if left:
        raise InvariantViolation(0, f"plan {plan.plan_id}: {left} fen of a repayment had nowhere to go")
    return out


class RefundSplit(msgspec.Struct, kw_only=True):
    """Where a refund's money goes: back onto the line, back to the shopper, and the merchant's fee back."""

    to_line: int = 0
    to_shopper: int = 0
    fee_to_merchant: int = 0


def allocate_refund(plan: Plan, amount: int) -> RefundSplit:
    """Apply a refund of ``amount`` (see the module docstring); refuses refunds above the principal."""
    if plan.refunded + amount > plan.principal:
        raise CreditError(
            CreditCode.REFUND_EXCEEDS,
            f"plan {plan.plan_id}: refunds would reach {plan.refunded + amount} fen, above the principal "
            f"{plan.principal}",
        )
    left = amount
    out = RefundSplit()
    for p in reversed(plan.schedule):
        take = min(left, p.principal - p.paid_principal)
        if take:
            p.principal -= take
            out.to_line += take
            left -= take
            if p.principal == p.paid_principal:
                # The period is settled by the refund: what it still owed in fee and penalty is waived.
                p.fee = p.paid_fee
                p.penalty = p.paid_penalty
                p.cancelled = p.paid_principal == 0 and p.paid_fee == 0 and p.paid_penalty == 0
    # Refunded principal the shopper had already repaid stays "paid" in its period and goes back to them.
    out.to_shopper = left
    plan.refunded_to_shopper += left
    plan.refunded += amount
    if plan.fee_payer is FeePayer.MERCHANT:
        due = plan.fee * plan.refunded // plan.principal
        out.fee_to_merchant = due - plan.merchant_fee_returned
        plan.merchant_fee_returned = due
    return out
