"""``scf.private``: voucher financing on private terms (rate, days, discount, price).

The public ledger shows that a voucher was financed, by which bank, its face (already public) and the
commitment of the terms (``scf.private/~pvt/financing/<voucher>``); the terms live in the ``financing``
collection of the seller (the voucher's holder), the bank and, by the collection's stated policy, the
consortium's regulators. No settlement token moves in this transaction: paying ``payout`` in tokens would
put the price, and with the face the rate, on the public ledger. The price is settled off the token ledger
(through the payments core, or bilaterally) and that settlement is part of the private terms.

Private value (canonical JSON)::

    {"voucher", "bank", "face", "rate_bps", "days", "discount", "payout"}     all money in fen

Rule (:func:`check_terms`, run by the seller's and the bank's peers before they endorse and again when the
terms reach them): ``discount == discount_fen(face, rate_bps, days)`` (actual/360, half up) and
``payout + discount == face``, for the voucher, bank and face the transaction names. The contract cannot
re-run it (it never sees the terms): it requires endorsements by peers of both organisations.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from liangcao.apps.scf.common import VoucherId, discount_fen
from liangcao.contracts.base import Args, Context, Contract, transaction
from liangcao.contracts.private import (
    Collection,
    Endorsements,
    PrivacyCode,
    PrivateRef,
    put_private,
    require_endorsements,
)
from liangcao.domain import Money, OrgId
from liangcao.limits import rate_bps_max

#: the longest financing term the check accepts (ten years)
terms_days_max = 3660
TERMS_FIELDS = frozenset({"voucher", "bank", "face", "rate_bps", "days", "discount", "payout"})


def check_terms(value: Any, args: Mapping[str, Any]) -> str:
    """ "" if ``value`` are consistent financing terms for the public ``args``, else why not."""
    if not isinstance(value, dict) or set(value) != TERMS_FIELDS:
        return f"terms must be an object with exactly {sorted(TERMS_FIELDS)}"
    if value["voucher"] != args.get("voucher") or value["bank"] != args.get("bank"):
        return "the terms name another voucher or bank than the transaction"
    ints = ("face", "rate_bps", "days", "discount", "payout")
    if any(type(value[k]) is not int for k in ints):
        return "face, rate_bps, days, discount and payout are integers (fen, basis points, days)"
    face, rate, days = value["face"], value["rate_bps"], value["days"]
    if face != args.get("face"):
        return "the terms' face is not the voucher's"
    if not 0 <= rate <= rate_bps_max or not 1 <= days <= terms_days_max:
        return f"rate_bps must be 0..{rate_bps_max} and days 1..{terms_days_max}"
    if value["discount"] != discount_fen(face, rate, days):
        return "discount is not face x rate x days / 360 (half up)"
    if value["payout"] + value["discount"] != face:
        return "payout and discount do not add up to the face"
    return ""


FINANCING = Collection("financing", regulator_reads=True, check=check_terms, endorse=True)


def terms(voucher: str, bank: str, face: int, rate_bps: int, days: int) -> dict[str, Any]:
    """Financing terms that pass :func:`check_terms` (what a client puts in the collection)."""
    discount = discount_fen(face, rate_bps, days)
    return {
        "voucher": voucher,
        "bank": bank,
        "face": face,
        "rate_bps": rate_bps,
        "days": days,
        "discount": discount,
        "payout": face - discount,
    }


class FinanceArgs(Args):
    voucher: VoucherId
    bank: OrgId
    face: Money
    private: PrivateRef
    endorsements: Endorsements


class PrivateFinancing(Contract):
    name = "scf.private"
    collections: ClassVar[dict[str, Collection]] = {"financing": FINANCING}

    @transaction
    def finance(self, ctx: Context, args: FinanceArgs) -> dict[str, Any]:
        """Signed by the holder (actor) and the bank: the bank becomes the holder on private terms."""
        if args.private.collection != FINANCING.name or args.private.key != args.voucher:
            ctx.fail(PrivacyCode.UNKNOWN_COLLECTION, "private terms go to collection 'financing', key = the voucher")
        done = ctx.invoke(
            "scf.vouchers", "finance_private", {"voucher": args.voucher, "bank": args.bank, "face": args.face}
        )
        seller = str(done["seller"])
        require_endorsements(ctx, "finance", args, args.endorsements, [seller, args.bank])
        record = put_private(ctx, FINANCING, args.private, [seller, args.bank])
        return {"voucher": args.voucher, "bank": args.bank, "hash": record["hash"], "members": record["members"]}
