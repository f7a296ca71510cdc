"""The cover contract's vocabulary: result codes, limits, and the pure rules that price and pay a policy.

Everything here is a pure function of integers and strings (no clock, no floats), so the contract, the
payout adapter and the tests compute the same premium, exposure, refund and transfer id.
"""

from __future__ import annotations

import hashlib
from enum import IntEnum
from typing import Literal

from liangcao import codes

# ---- limits (every bound named *_max, enforced where the value enters) --------------------------------
covers_per_order_max = 4  # policies one checkout buys in one transaction
window_days_max = 90  # the longest claim window a product may declare
exclusions_max = 8  # price marks a product may exclude
prices_per_sku_day_max = 48  # price posts kept per SKU and day (the claim reads at most window+1 days of them)
shopper_returns_max_max = 100  # the highest return-frequency limit a product may set
shared_accounts_max = 64  # accounts remembered per device or address (the bulk-account guard)
page_max = 100  # entries per page of the read models
transfer_attempts_max = 8  # derived transfer ids per payment: each one the payments core refused for good
#: A claim is held for review when more than this many shoppers bought cover from one device...
shared_device_accounts_max = 3
#: ...or for one address (households share an address, so the bound is higher).
shared_address_accounts_max = 5
#: How far a pickup's or drop-off's eventTime may lie ahead of the block time (device clocks drift a little);
#: beyond it the event is a booking, not a fact.
fact_ahead_ms_max = 5 * 60_000
#: The return-frequency guard counts a shopper's paid return claims over this many days.
RETURN_PERIOD_DAYS = 30
DAY_MS = 86_400_000
BPS = 10_000

if not (shared_device_accounts_max < shared_accounts_max and shared_address_accounts_max < shared_accounts_max):
    raise AssertionError("the bulk-account guard must remember more accounts than it tolerates")
if not (prices_per_sku_day_max * (window_days_max + 1) <= 10_000):
    raise AssertionError("a claim reads at most range_results_max price facts")

Kind = Literal["return_shipping", "price_protection", "local_return"]
KINDS: tuple[str, ...] = ("return_shipping", "price_protection", "local_return")
Mark = Literal["regular", "flash_sale", "coupon", "bundle", "livestream"]
#: Org types whose events prove a courier's pickup of a return, and a local return's drop-off.
PICKUP_RECORDERS = ("logistics", "carrier")
DROPOFF_RECORDERS = ("warehouse",)


class CoverCode(IntEnum):
    NOT_INSURER = 2300  # the signer does not act for the insurer the action needs
    NOT_PLATFORM = 2301  # prices and policies are signed by a platform organisation
    OVER_CAPITAL = 2302  # the policy's exposure would take reserves above the insurer's pledged capital
    CAPITAL_IN_USE = 2303  # releasing would leave reserves and amounts owed uncovered
    PRODUCT_CLOSED = 2304  # the product is withdrawn (or not a product of this insurer)
    BAD_RULE = 2305  # a product's rules are inconsistent (no premium, exclusions of the wrong kind)
    NO_FACT = 2306  # the fact the claim needs is not on the ledger (no pickup event, no lower regular price)
    WRONG_FACT = 2307  # the named fact is on the ledger but proves something else (step, order, recorder)
    AFTER_WINDOW = 2308  # the claim, or its fact, falls after the policy's window
    ALREADY_CLAIMED = 2309  # one claim per policy
    EXCLUDED_PRICE = 2310  # the only lower prices are excluded marks (flash sale, coupon, ...)
    TOO_FREQUENT = 2311  # the shopper's return claims reached the product's limit for the period
    ADDRESS_MISMATCH = 2312  # the pickup did not happen at the order's address
    FACT_USED = 2313  # the event already decided another claim
    NOT_OWED = 2314  # nothing is owed on this policy (no approved claim, or the premium is not due)
    ALREADY_PAID = 2315  # the payment is already recorded (a replay of the adapter)
    WRONG_TRANSFER = 2316  # the transfer id is not the one derived from the claim
    HIGH_RISK = 2317  # the shopper's claim ratio is above what the product sells to
    NOT_EXPIRED = 2318  # the window is still open
    NOT_HELD = 2319  # only a claim held for review can be reviewed
    EXISTS = 2320  # a product of that id exists


codes.register(
    CoverCode,
    "cover",
    http={CoverCode.NOT_INSURER: 403, CoverCode.NOT_PLATFORM: 403, CoverCode.ALREADY_PAID: 409, CoverCode.EXISTS: 409},
)


# ---- pure rules ----------------------------------------------------------------------------------------
def half_up(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded half up, in integers (both non-negative)."""
    return (2 * numerator + denominator) // (2 * denominator)


def premium_fen(
    kind: str, base_fen: int, rate_bps: int, loading_bps: int, price_paid: int, policies: int, claims: int
) -> int:
    """The premium of one policy.

    ``base_fen + price_paid * rate_bps / 10^4`` (half up); for return shipping, loaded by the shopper's claim
    ratio (``claims / policies`` of the shopper's earlier return-shipping cover) times ``loading_bps``, as
    insurers price 运费险 per shopper: a shopper who returned every order pays ``1 + loading`` times the base.
    """
    p = base_fen + half_up(price_paid * rate_bps, BPS)
    if kind == "return_shipping" and claims:
        p += half_up(p * loading_bps * claims, BPS * max(policies, 1))
    return p


def claim_ratio_bps(policies: int, claims: int) -> int:
    """A shopper's claims per policy, in basis points (0 with no history)."""
    return claims * BPS // policies if policies else 0


def exposure_fen(kind: str, indemnity_fen: int, price_paid: int) -> int:
    """The most a policy can pay: the fixed indemnity, or for price protection its cap, never above the price."""
    return min(indemnity_fen, price_paid) if kind == "price_protection" else indemnity_fen


def refund_fen(price_paid: int, lowest_regular: int, exposure: int) -> int:
    """Price protection: the price paid minus the lowest regular price, at most the policy's exposure."""
    return max(0, min(price_paid - lowest_regular, exposure))


def transfer_id(purpose: str, policy: str, attempt: int = 0) -> str:
    """The payments-core transfer id for ``purpose`` (``payout`` or ``premium``) of ``policy``: 128 bits as 32
    hex digits, derived, so the adapter that pays twice after a crash names the same transfer (a no-op).

    ``attempt`` (below ``transfer_attempts_max``) names the next id after the payments core refused one for
    good (``id_already_failed``: a refusal such as ``exceeds_credits`` spends the id, as in TigerBeetle). The
    adapter tries them in order and stops at the first one the core holds, so at most one is ever applied."""
    if not 0 <= attempt < transfer_attempts_max:
        raise ValueError(f"attempt {attempt} is outside 0..{transfer_attempts_max - 1}")
    suffix = f"/{attempt}" if attempt else ""  # attempt 0 is the id as it always was
    digest = hashlib.sha256(f"liangcao.cover/{purpose}/{policy}{suffix}".encode()).digest()[:16]
    value = int.from_bytes(digest, "big")
    if value in (0, (1 << 128) - 1):  # the payments core reserves these ids; sha256 reaching them is moot
        value = 1
    return f"{value:032x}"


def transfer_ids(purpose: str, policy: str) -> list[str]:
    """Every id a payment of ``policy`` may be made under, in the order the adapter tries them."""
    return [transfer_id(purpose, policy, k) for k in range(transfer_attempts_max)]


def account_id(party: str) -> int:
    """The payments-core account of a cover party (an insurer, a platform's clearing account, a shopper)."""
    value = int.from_bytes(hashlib.sha256(f"liangcao.cover/account/{party}".encode()).digest()[:16], "big")
    return value if value not in (0, (1 << 128) - 1) else 1


__all__ = [
    "KINDS",
    "CoverCode",
    "account_id",
    "claim_ratio_bps",
    "exposure_fen",
    "premium_fen",
    "refund_fen",
    "transfer_id",
    "transfer_ids",
]
