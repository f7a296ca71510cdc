"""``scf.invoices``: invoices registered once, each able to back at most one instrument.

Only the fields the rules need and a hash of the document are stored; the document stays off-chain.
The invoice key is ``<seller>:<code>-<number>``: a fapiao's code and number are unique nationwide, and
scoping them by the seller who registers them means nobody can pre-register (squat) another seller's
invoice number. The buyer confirms an invoice (``confirm``: it owes the amount, due on a date it names)
before the invoice can enter a factoring pool, so a seller alone never decides what a factor advances on.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from liangcao.apps.scf.common import (
    Fen,
    IsoDate,
    OrgId,
    ScfCode,
    acting_for,
    day_of,
    iso_of,
    org_type,
)
from liangcao.codes import Code
from liangcao.contracts.base import Args, Context, Contract, internal, query, transaction
from liangcao.limits import invoices_per_instrument_max

CALLERS = ("scf.vouchers", "scf.factoring")
InvoiceKey = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}:[0-9A-Za-z]{1,20}-[0-9A-Za-z]{1,20}$")]


class RegisterArgs(Args):
    code: Annotated[str, msgspec.Meta(pattern=r"^[0-9A-Za-z]{1,20}$")]
    number: Annotated[str, msgspec.Meta(pattern=r"^[0-9A-Za-z]{1,20}$")]
    seller: OrgId
    buyer: OrgId
    amount: Fen
    date: IsoDate
    doc_hash: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]


class BindArgs(Args):
    keys: Annotated[list[InvoiceKey], msgspec.Meta(min_length=1, max_length=invoices_per_instrument_max)]
    seller: OrgId
    buyer: OrgId
    instrument: str


class KeyArgs(Args):
    key: InvoiceKey


class ConfirmArgs(Args):
    key: InvoiceKey
    due: IsoDate


class Invoices(Contract):
    name = "scf.invoices"

    @transaction
    def register(self, ctx: Context, args: RegisterArgs) -> dict[str, str]:
        acting_for(ctx, args.seller)
        org_type(ctx, args.buyer)
        if args.buyer == args.seller:
            ctx.fail(Code.INVALID_ARGUMENT, "the buyer must differ from the seller")
        key = f"{args.seller}:{args.code}-{args.number}"
        if ctx.get(f"inv/{key}") is not None:
            ctx.fail(Code.ALREADY_EXISTS, f"invoice {key} is already registered")
        ctx.put(
            f"inv/{key}",
            {
                "key": key,
                "seller": args.seller,
                "buyer": args.buyer,
                "amount": args.amount,
                "day": day_of(args.date),
                "date": args.date,
                "doc_hash": args.doc_hash,
                "used_by": None,
                "confirmed": None,
            },
        )
        ctx.emit("registered", {"key": key, "seller": args.seller, "buyer": args.buyer, "amount": args.amount})
        return {"key": key}

    @transaction
    def confirm(self, ctx: Context, args: ConfirmArgs) -> dict[str, Any]:
        """The buyer confirms it owes the invoice's amount, due on ``due``; once, and for good."""
        inv: dict[str, Any] = ctx.must_get(f"inv/{args.key}", f"invoice {args.key} is not registered")
        signer = acting_for(ctx, inv["buyer"])
        if inv.get("confirmed") is not None:
            ctx.fail(Code.ALREADY_EXISTS, f"invoice {args.key} was already confirmed, due {inv['confirmed']['due']}")
        due = day_of(args.due)
        if due < inv["day"]:
            ctx.fail(ScfCode.BAD_DATE, f"invoice {args.key} cannot fall due before its date {inv['date']}")
        confirmed = {"due_day": due, "due": iso_of(due), "by": signer.member_id, "height": ctx.height}
        ctx.put(f"inv/{args.key}", {**inv, "confirmed": confirmed})
        ctx.emit("confirmed", {"key": args.key, "buyer": inv["buyer"], "amount": inv["amount"], "due": iso_of(due)})
        return confirmed

    @internal
    @transaction
    def bind(self, ctx: Context, args: BindArgs) -> dict[str, int]:
        """Internal: mark invoices as backing ``instrument``; returns their total. Each may be bound once."""
        ctx.require_caller(*CALLERS)
        if len(set(args.keys)) != len(args.keys):
            ctx.fail(Code.INVALID_ARGUMENT, "an invoice is listed twice")
        total = 0
        for key in args.keys:
            inv: dict[str, Any] = ctx.must_get(f"inv/{key}", f"invoice {key} is not registered")
            if inv["used_by"] is not None:
                ctx.fail(ScfCode.INVOICE_USED, f"invoice {key} already backs {inv['used_by']}")
            if (inv["seller"], inv["buyer"]) != (args.seller, args.buyer):
                ctx.fail(Code.INVALID_ARGUMENT, f"invoice {key} is from {inv['seller']} to {inv['buyer']}")
            ctx.put(f"inv/{key}", {**inv, "used_by": args.instrument})
            total += int(inv["amount"])
        return {"total": total}

    @query
    def invoice(self, ctx: Context, args: KeyArgs) -> dict[str, Any]:
        inv: dict[str, Any] = ctx.must_get(f"inv/{args.key}", f"invoice {args.key} is not registered")
        return inv
