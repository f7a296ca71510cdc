"""The credit package's stable codes (3400-3499), its one business exception, and its limits.

Every refusal of the credit service is a ``CreditError`` carrying a ``CreditCode``: a number that never
changes meaning once released, registered with ``liangcao.codes`` (so ``name_of`` and ``http_status`` know
it). A refusal changes nothing: the service checks before it writes, and a transfer chain the payments core
refuses is applied by the core as a whole or not at all.

The limits are the package's own (``*_max``), enforced where input enters.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from liangcao import codes
from liangcao.errors import LiangcaoError


class CreditCode(IntEnum):
    """Why the credit service refused (stable numbers; new outcomes get new numbers at the end)."""

    BAD_PERIODS = 3400  # a period count not in the fee table (3, 6, 12 by default)
    BAD_AMOUNT = 3401  # not a positive integer number of fen (floats are refused), or over its *_max
    BAD_FEE_PAYER = 3402  # fee_payer is neither "shopper" nor "merchant"
    BAD_ID = 3403  # an order, shopper, merchant or request id that is empty, too long or not printable
    UNKNOWN_PLAN = 3404
    PLAN_CLOSED = 3405  # the plan is paid off or refunded: nothing more to repay
    ORDER_EXISTS = 3406  # an installment plan exists for this order with other terms
    LINE_EXCEEDED = 3407  # the payments core refused: the purchase is over the shopper's available line
    LINE_FROZEN = 3408  # the shopper has an overdue installment: no new purchase until it is repaid
    OVERPAY = 3409  # a repayment above what the plan or loan still owes
    REFUND_EXCEEDS = 3410  # refunds above the plan's principal
    FUNDS_SHORT = 3411  # the paying account has not enough money (the payments core refused)
    MERCHANT_FUNDS_SHORT = 3412  # the merchant cannot fund the refund
    UNKNOWN_MERCHANT = 3413
    LOAN_DECLINED = 3414  # the offer was a decline: nothing to draw
    UNKNOWN_OFFER = 3415
    OFFER_EXPIRED = 3416  # past its valid_until day, or already drawn
    DRAW_EXCEEDS_OFFER = 3417
    UNKNOWN_LOAN = 3418
    LOAN_CLOSED = 3419  # the loan is repaid
    LOAN_OUTSTANDING = 3420  # the merchant already has a loan running (one at a time)
    BAD_SHARE = 3421  # a repayment share below the offer's or above share_bp_max
    CORE_REFUSED = 3422  # the payments core refused a transfer for a reason not listed above
    BAD_RATE_TABLE = 3423  # a fee-rate table that is not integer basis points for 3/6/12 periods
    BAD_DAY = 3424  # a business day that is not an integer, or before the service's last one
    UNKNOWN_SHOPPER = 3425
    MERCHANT_REGISTERED = 3426  # the merchant is already paid into another payments-core account
    FUNDING_MISMATCH = 3427  # open_plan: the funding transfer is not this amount out of this line, or is taken
    REQUEST_CONFLICT = 3428  # a request id (repayment, refund, deposit, settlement) reused with other parameters
    UNAUTHENTICATED = 3429  # HTTP: no session token, or a malformed, forged, expired one (WWW-Authenticate: Bearer)
    FORBIDDEN = 3430  # HTTP: the token's subject may not act on this shopper, plan, offer or loan


codes.register(
    CreditCode,
    "credit",
    http={
        CreditCode.UNKNOWN_PLAN: 404,
        CreditCode.UNKNOWN_MERCHANT: 404,
        CreditCode.UNKNOWN_OFFER: 404,
        CreditCode.UNKNOWN_LOAN: 404,
        CreditCode.UNKNOWN_SHOPPER: 404,
        CreditCode.MERCHANT_REGISTERED: 409,
        CreditCode.PLAN_CLOSED: 409,
        CreditCode.ORDER_EXISTS: 409,
        CreditCode.LOAN_CLOSED: 409,
        CreditCode.LOAN_OUTSTANDING: 409,
        CreditCode.OFFER_EXPIRED: 409,
        CreditCode.LINE_FROZEN: 403,
        CreditCode.LOAN_DECLINED: 403,
        CreditCode.CORE_REFUSED: 502,
        CreditCode.REQUEST_CONFLICT: 409,
        CreditCode.UNAUTHENTICATED: 401,
        CreditCode.FORBIDDEN: 403,
    },
)


class CreditError(LiangcaoError):
    """A refusal by the credit service; nothing was changed."""

    def __init__(self, code: int, message: str, detail: Any = None) -> None:
        super().__init__(code, message, detail)


# ------------------------------------------------------------------------------------------------ limits

#: The largest installment purchase (50,000.00 yuan), in fen.
installment_amount_fen_max = 5_000_000
#: The largest consumer credit line (50,000.00 yuan).
line_fen_max = 5_000_000
#: The largest merchant loan (1,000,000.00 yuan).
loan_amount_fen_max = 100_000_000
#: The largest single repayment, refund, settlement or deposit (10,000,000.00 yuan).
money_fen_max = 1_000_000_000
#: Ids (orders, shoppers, merchants, requests): 1..64 printable ASCII characters.
id_len_max = 64
#: Ids the service makes from a merchant id (offers ``<merchant>.<day>.<n>``, loans ``L-<offer>``).
ref_len_max = id_len_max + 32
#: A fee rate for a whole plan, or a daily rate, in basis points.
rate_bp_max = 10_000
#: A merchant loan's repayment share of each settlement, in basis points (100 % at most).
share_bp_max = 10_000
#: The smallest plan whose on-time repayment counts in the shopper's history (100.00 yuan): a floor, so
#: tiny plans cannot farm a line (the ``_max`` limits' one ``_min``).
history_plan_fen_min = 10_000
#: The most transfers of a merchant's account read to score it (a year of busy trading).
history_transfers_max = 400_000
#: The most rows a listing answers.
list_rows_max = 1_000
#: How far one call may move the business day (ten years).
days_advance_max = 3_650


def check_money(value: object, what: str, top: int) -> int:
    """``value`` as fen: a positive ``int`` at most ``top``; floats, bools and strings are refused."""
    if type(value) is not int:
        raise CreditError(
            CreditCode.BAD_AMOUNT, f"{what} must be an integer number of fen, got {type(value).__name__} {value!r}"
        )
    if not 0 < value <= top:
        raise CreditError(CreditCode.BAD_AMOUNT, f"{what} must be 1..{top} fen, got {value}")
    return value


def check_id(value: object, what: str, top: int = id_len_max) -> str:
    """An id: 1..``top`` (``id_len_max``) printable ASCII characters without spaces."""
    if not isinstance(value, str) or not 0 < len(value) <= top or not value.isascii():
        raise CreditError(CreditCode.BAD_ID, f"{what} must be 1..{top} ASCII characters, got {value!r}")
    if not value.isprintable() or " " in value:
        raise CreditError(CreditCode.BAD_ID, f"{what} must be printable without spaces, got {value!r}")
    return value
