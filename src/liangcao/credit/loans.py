"""Merchant loans (网商银行 "310"), pure: features from a sales flow, the score, the offer, a loan's
interest and how a repayment is applied. No I/O; ``liangcao.credit.service`` reads the sales from the
payments core and moves the money.

Theory of operation
-------------------
**Features** (integers only) over the merchant's sales flow as of business day ``today``: tenure (days
since the first sale), GMV over the last 30/90/365 days, trend (the last 30 days against the 90-day
monthly average, in bp: 10,000 is flat), volatility (the coefficient of variation of daily sales over the
last 90 days, in bp, with an integer square root), refund and chargeback rates (bp of 90-day GMV), and
the receivable vouchers the merchant holds (an input figure, fen).

**Score** 0..1000 is a points table (``score``): tenure up to 200, GMV level up to 250, trend up to 150,
volatility up to 150, refunds up to 150, chargebacks up to 100. The same history always gives the same
score (nothing random, no floats, no wall clock).

**Decision**: declined below ``SCORE_MIN`` (500), under ``TENURE_DAYS_MIN`` (90) days of trading, with no
sales in 90 days, or with chargebacks above 100 bp. Otherwise the limit is the average monthly GMV times a
multiple by score band (50 % / 100 % / 150 %) plus 70 % of receivables, rounded down to 100 yuan and capped
at ``loan_amount_fen_max``; the daily rate is 5 / 4 / 3 bp by band; the repayment share of each
settlement is 10 %.

**Loan**: interest accrues per day on the outstanding principal at the daily rate (``outstanding * bp //
10000`` per day, rounded down), at ``overdue_rate_bp`` per day after the due day. A repayment (a share of
a settlement, or early repayment of any amount) pays accrued interest first, then principal.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum
from math import isqrt

import msgspec

from liangcao.credit.errors import CreditCode, CreditError, loan_amount_fen_max
from liangcao.errors import InvariantViolation

RULES_VERSION = "credit-310/1"
SCORE_MIN = 500
TENURE_DAYS_MIN = 90
CHARGEBACK_BP_MAX = 100
RECEIVABLES_ADVANCE_BP = 7_000
LIMIT_STEP_FEN = 10_000
DEFAULT_SHARE_BP = 1_000
DEFAULT_TERM_DAYS = 180
OFFER_VALID_DAYS = 7
#: (score at least, limit multiple of monthly GMV in bp, daily rate in bp), best band first.
BANDS: tuple[tuple[int, int, int], ...] = ((850, 15_000, 3), (700, 10_000, 4), (SCORE_MIN, 5_000, 5))


class SaleKind(IntEnum):
    SALE = 1
    REFUND = 2
    CHARGEBACK = 3


class Features(msgspec.Struct, kw_only=True):
    tenure_days: int = 0
    active_days_90: int = 0
    gmv_30: int = 0
    gmv_90: int = 0
    gmv_365: int = 0
    trend_bp: int = 0
    volatility_bp: int = 0
    refund_rate_bp: int = 0
    chargeback_rate_bp: int = 0
    receivables_fen: int = 0
    transfers_read: int = 0


def features(flow: Iterable[tuple[int, SaleKind, int]], today: int, receivables_fen: int = 0) -> Features:
    """Features from ``(day, kind, amount)`` rows (any order); rows after ``today`` are ignored."""
    # Plain locals in the loop: a year of a busy merchant is hundreds of thousands of rows, and the
    # decision's bar is one second.
    sale = SaleKind.SALE
    refund = SaleKind.REFUND
    first = today + 1
    daily = [0] * 90
    f = Features(receivables_fen=receivables_fen)
    refunds = chargebacks = gmv_30 = gmv_90 = gmv_365 = read = 0
    for day, kind, amount in flow:
        read += 1
        age = today - day
        if age < 0:
            continue
        if kind is sale:
            if day < first:
                first = day
            if age < 365:
                gmv_365 += amount
                if age < 90:
                    gmv_90 += amount
                    daily[age] += amount
                    if age < 30:
                        gmv_30 += amount
        elif age < 90:
            if kind is refund:
                refunds += amount
            else:
                chargebacks += amount
    f.transfers_read, f.gmv_30, f.gmv_90, f.gmv_365 = read, gmv_30, gmv_90, gmv_365
    f.tenure_days = 0 if first > today else today - first
    f.active_days_90 = sum(1 for d in daily if d)
    if f.gmv_90:
        f.trend_bp = f.gmv_30 * 3 * 10_000 // f.gmv_90
        mean = f.gmv_90 // 90
        variance = sum((d - mean) ** 2 for d in daily) // 90
        f.volatility_bp = isqrt(variance) * 10_000 // max(mean, 1)
        f.refund_rate_bp = refunds * 10_000 // f.gmv_90
        f.chargeback_rate_bp = chargebacks * 10_000 // f.gmv_90
    return f


def _points(value: int, bands: tuple[tuple[int, int], ...], *, lower_is_better: bool = False) -> int:
    for bound, pts in bands:
        if (value <= bound) if lower_is_better else (value >= bound):
            return pts
    return 0


def score(f: Features) -> int:
    """The points table (module docstring): 0..1000."""
    return (
        _points(f.tenure_days, ((365, 200), (180, 150), (90, 100)))
        + _points(f.gmv_90, ((10_000_000, 250), (3_000_000, 200), (1_000_000, 150), (300_000, 100), (1, 50)))
        + _points(f.trend_bp, ((12_000, 150), (9_000, 120), (7_000, 60)))
        + (
            _points(f.volatility_bp, ((3_000, 150), (6_000, 100), (10_000, 50)), lower_is_better=True)
            if f.gmv_90
            else 0
        )
        + (_points(f.refund_rate_bp, ((200, 150), (500, 100), (1_000, 50)), lower_is_better=True) if f.gmv_90 else 0)
        + (_points(f.chargeback_rate_bp, ((10, 100), (50, 50)), lower_is_better=True) if f.gmv_90 else 0)
    )


class Decision(msgspec.Struct, kw_only=True):
    approved: bool
    score: int
    limit_fen: int
    daily_rate_bp: int
    share_bp: int
    reasons: list[str]
    rules: str = RULES_VERSION


def decide(f: Features) -> Decision:
    """Approve or decline, and on what terms (module docstring)."""
    s = score(f)
    reasons: list[str] = []
    if f.tenure_days < TENURE_DAYS_MIN:
        reasons.append(f"tenure {f.tenure_days} days < {TENURE_DAYS_MIN}")
    if f.gmv_90 == 0:
        reasons.append("no sales in the last 90 days")
    if f.chargeback_rate_bp > CHARGEBACK_BP_MAX:
        reasons.append(f"chargebacks {f.chargeback_rate_bp} bp > {CHARGEBACK_BP_MAX}")
    if s < SCORE_MIN:
        reasons.append(f"score {s} < {SCORE_MIN}")
    if reasons:
        return Decision(approved=False, score=s, limit_fen=0, daily_rate_bp=0, share_bp=0, reasons=reasons)
    multiple, rate = next((m, r) for bound, m, r in BANDS if s >= bound)
    limit = f.gmv_90 // 3 * multiple // 10_000 + f.receivables_fen * RECEIVABLES_ADVANCE_BP // 10_000
    limit = min(limit, loan_amount_fen_max) // LIMIT_STEP_FEN * LIMIT_STEP_FEN
    if limit <= 0:
        return Decision(
            approved=False, score=s, limit_fen=0, daily_rate_bp=0, share_bp=0, reasons=["limit below 100 yuan"]
        )
    return Decision(
        approved=True,
        score=s,
        limit_fen=limit,
        daily_rate_bp=rate,
        share_bp=DEFAULT_SHARE_BP,
        reasons=[f"score {s}: band {multiple // 100} % of monthly GMV at {rate} bp/day"],
    )


class LoanState(IntEnum):
    ACTIVE = 1
    OVERDUE = 2
    REPAID = 3


class Loan(msgspec.Struct, kw_only=True):
    loan_id: str
    merchant: str
    offer_id: str
    principal: int
    daily_rate_bp: int
    overdue_rate_bp: int
    share_bp: int
    start_day: int
    due_day: int
    outstanding: int
    interest: int = 0  # accrued, unpaid
    paid_principal: int = 0
    paid_interest: int = 0
    interest_day: int = 0
    state: LoanState = LoanState.ACTIVE
    ops: int = 0

    @property
    def owed(self) -> int:
        return self.outstanding + self.interest


def accrue_loan(loan: Loan, today: int) -> None:
    """Interest per whole day up to ``today``, rounded down per day; the overdue rate after the due day."""
    if today <= loan.interest_day:
        return
    normal_days = max(0, min(today, loan.due_day) - loan.interest_day)
    overdue_days = (today - loan.interest_day) - normal_days
    loan.interest += normal_days * (loan.outstanding * loan.daily_rate_bp // 10_000)
    loan.interest += overdue_days * (loan.outstanding * loan.overdue_rate_bp // 10_000)
    loan.interest_day = today


def loan_state(loan: Loan, today: int) -> LoanState:
    if loan.owed == 0:
        return LoanState.REPAID
    return LoanState.OVERDUE if today > loan.due_day else LoanState.ACTIVE


def allocate_loan(loan: Loan, amount: int) -> tuple[int, int]:
    """(interest, principal) paid by ``amount``: interest first; refuses more than the loan owes."""
    if loan.state is LoanState.REPAID:
        raise CreditError(CreditCode.LOAN_CLOSED, f"loan {loan.loan_id} is repaid")
    if amount > loan.owed:
        raise CreditError(CreditCode.OVERPAY, f"loan {loan.loan_id} owes {loan.owed} fen, cannot take {amount}")
    interest = min(amount, loan.interest)
    principal = amount - interest
    loan.interest -= interest
    loan.paid_interest += interest
    loan.outstanding -= principal
    loan.paid_principal += principal
    if loan.outstanding < 0 or loan.paid_principal + loan.outstanding != loan.principal:
        raise InvariantViolation(0, f"loan {loan.loan_id}: principal does not add up")
    return interest, principal
