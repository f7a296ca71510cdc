"""Codes, limits and the integer arithmetic of ``abs.deal`` (interest, pro-rata shares).

Every amount is integer fen; every division is stated: interest rounds down to the fen, a pro-rata share
rounds down and the fens left over go one each to the largest remainders (ties: the lower organisation id).
"""

from __future__ import annotations

from enum import IntEnum

from liangcao import codes, limits

# ---- limits (every one enforced by abs.deal) -----------------------------------------------------------
abs_pool_assets_max = 200  # receivables in one deal's pool at once (each evaluation reads them all)
abs_purchase_max = 20  # receivables bought in one purchase transaction
abs_collect_page_max = 64  # settled receivables one collect transaction sweeps
abs_holders_max = 40  # holders of one tranche (a waterfall pays each of them in one transaction)
abs_payment_dates_max = 40  # payment dates of one deal
abs_fees_max = 4  # fee and tax payees of one deal
abs_breach_days_max = 366  # the pool-balance trigger's run of days
abs_default_days_max = 366  # days past maturity before an unpaid receivable is a default
abs_due_within_days_max = 366  # a receivable due within this many days is not eligible
abs_grace_days_max = 31  # days the servicer may go without a report

# A waterfall pays every holder of a tranche up to twice (interest, principal; the subordinated once) and each
# fee payee once, one transfer event each, within one transaction; evaluating first (which can add an event
# per receivable that defaulted) is what ``evaluate`` is for when a pool has many.
if not 5 * abs_holders_max + abs_fees_max + 8 <= limits.events_per_tx_max:
    raise ValueError("a waterfall's events would not fit in events_per_tx_max")
if not 2 * (5 * abs_holders_max + abs_fees_max) + abs_pool_assets_max + 64 <= limits.writes_per_tx_max:
    raise ValueError("a waterfall's writes would not fit in writes_per_tx_max")


class AbsCode(IntEnum):
    NOT_PARTY = 2400  # the signer does not act for the party this action needs (SPV, originator, servicer)
    BAD_TERMS = 2401  # the deal's terms are inconsistent (tranches, dates, fees)
    WRONG_STATUS = 2402  # the deal is not in a status that allows this action
    NOT_KYC = 2403  # the investor has not been KYC'd for the deal by its manager
    OVERSUBSCRIBED = 2404  # the subscription would exceed the tranche's face
    NOT_SUBSCRIBED = 2405  # launch before every tranche is fully subscribed
    NOT_HELD = 2406  # the originator does not hold the receivable
    FROZEN = 2407  # the receivable is frozen by a regulator
    FINANCED = 2408  # the receivable was financed elsewhere (a bank's financing)
    IN_POOL = 2409  # the receivable is (or was) in a pool: an ABS pool or a factoring pool
    DUE_TOO_SOON = 2410  # the receivable is due within the deal's N days
    CONCENTRATION = 2411  # the obligor would exceed its concentration limit
    WRONG_TOKEN = 2412  # the receivable settles in another bank's token than the custodian's
    NOT_ENOUGH_CASH = 2413  # the purchase price exceeds the cash available for purchases
    NOT_PAYMENT_DATE = 2414  # no payment date is due (or every one is done)
    NOTHING_TO_COLLECT = 2415  # no receivable in the pool has been settled
    NOT_ACTIVE = 2416  # the receivable is retired, settled, overdue or has a pending offer or financing
    NOT_ENOUGH_NOTES = 2417  # the holder holds fewer notes than it transfers
    SPV_BUSY = 2418  # an SPV (one plan) runs one deal
    ALREADY_FIRED = 2419  # the trigger has already fired
    NOT_OFFERED = 2420  # the voucher is not offered to the deal by its originator
    BAD_PRICE = 2421  # the discount would leave a receivable's price below one fen (a steep rate, a long tenor)


codes.register(AbsCode, "abs")

DAY_COUNTS = {"act365": 365, "act360": 360}


def interest_fen(balance: int, coupon_bps: int, days: int, day_count: str) -> int:
    """Interest on ``balance`` for ``days`` at ``coupon_bps`` a year, actual/365 or actual/360, rounded down."""
    return balance * coupon_bps * days // (10_000 * DAY_COUNTS[day_count])


def pro_rata(amount: int, holdings: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """``amount`` shared among ``holdings`` (org, units) by units: each share rounded down, then the fens
    left over one each to the largest remainders (ties: the lower org id). The shares sum to ``amount``."""
    total = sum(units for _, units in holdings)
    if amount == 0 or total == 0:
        return [(org, 0) for org, _ in holdings]
    shares = [amount * units // total for _, units in holdings]
    rest = amount - sum(shares)
    order = sorted(range(len(holdings)), key=lambda i: (-(amount * holdings[i][1] % total), holdings[i][0]))
    for i in order[:rest]:
        shares[i] += 1
    return [(org, share) for (org, _), share in zip(holdings, shares, strict=True)]
