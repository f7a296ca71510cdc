"""``scf.invoices``: invoices registered once, each able to back at most one instrument.

Only the fields the rules need and a hash of the document are stored; the document stays off-chain.
The invoice key is ``<seller>:<code>-<number>``: a fapiao's code and number are unique nationwide, and
scoping them by the seller who registers them means nobody can pre-register (squat) another seller's
invoice number. The buyer confirms an invoice (``confirm``: it owes the amount, due on a date it names)
before the invoice can enter a factoring pool, so a seller alone never decides what a factor advances on.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from liangcao.apps.scf.common import IsoDate, ScfCode, day_of, iso_of, org_type
from liangcao.codes import Code
from liangcao.contracts.base import Args, Context, Contract, Record, internal, query, transaction
from liangcao.domain import ORG_ID_CHARS, Money, OrgId
from liangcao.limits import invoices_per_instrument_max

CALLERS = ("scf.vouchers", "scf.factoring")
#: ``<seller>:<code>-<number>``.
InvoiceKey = Annotated[str, msgspec.Meta(pattern=rf"^{ORG_ID_CHARS}:[0-9A-Za-z]{{1,20}}-[0-9A-Za-z]{{1,20}}$")]


class Confirmation(Record):
    """The buyer's confirmation: it owes the amount, due on ``due`` (day ``due_day``)."""

    due_day: int
    due: str
    by: str  # the member who confirmed
    height: int


class Invoice(Record):
    """``scf.invoices/inv/<seller>:<code>-<number>``."""

    key: str
    seller: str
    buyer: str
    amount: int
    day: int
    date: str
    doc_hash: str
    used_by: str | None  # the instrument (voucher or pool) it backs
    # None until the buyer confirms; absent (UNSET) in records registered before confirmation existed, and
    # kept absent when such a record is written again, so its bytes stay what they were.
    confirmed: Confirmation | msgspec.UnsetType | None = msgspec.UNSET

    @property
    def confirmation(self) -> Confirmation | None:
        """The buyer's confirmation, if it gave one (a record without the field reads as unconfirmed)."""
        return self.confirmed if isinstance(self.confirmed, Confirmation) else None


class RegisterArgs(Args):
    code: Annotated[str, msgspec.Meta(pattern=r"^[0-9A-Za-z]{1,20}$")]
    number: Annotated[str, msgspec.Meta(pattern=r"^[0-9A-Za-z]{1,20}$")]
    seller: OrgId
    buyer: OrgId
    amount: Money
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
        ctx.require_party(args.seller, code=ScfCode.NOT_PARTY)
        org_type(ctx, args.buyer)
        if args.buyer == args.seller:
            ctx.fail(Code.INVALID_ARGUMENT, "the buyer must differ from the seller")
        key = f"{args.seller}:{args.code}-{args.number}"
        if ctx.exists(f"inv/{key}"):
            ctx.fail(Code.ALREADY_EXISTS, f"invoice {key} is already registered")
        invoice = Invoice(
            key=key,
            seller=args.seller,
            buyer=args.buyer,
            amount=args.amount,
            day=day_of(args.date),
            date=args.date,
            doc_hash=args.doc_hash,
            used_by=None,
            confirmed=None,
        )
        ctx.save(f"inv/{key}", invoice)
        ctx.emit("registered", {"key": key, "seller": args.seller, "buyer": args.buyer, "amount": args.amount})
        return {"key": key}

    @transaction
    def confirm(self, ctx: Context, args: ConfirmArgs) -> Confirmation:
        """The buyer confirms it owes the invoice's amount, due on ``due``; once, and for good."""
        inv = ctx.must_load(Invoice, f"inv/{args.key}", f"invoice {args.key} is not registered")
        signer = ctx.require_party(inv.buyer, code=ScfCode.NOT_PARTY)
        if (earlier := inv.confirmation) is not None:
            ctx.fail(Code.ALREADY_EXISTS, f"invoice {args.key} was already confirmed, due {earlier.due}")
        due = day_of(args.due)
        if due < inv.day:
            ctx.fail(ScfCode.BAD_DATE, f"invoice {args.key} cannot fall due before its date {inv.date}")
        confirmed = Confirmation(due_day=due, due=iso_of(due), by=signer.member_id, height=ctx.height)
        ctx.save(f"inv/{args.key}", inv.replace(confirmed=confirmed))
        ctx.emit("confirmed", {"key": args.key, "buyer": inv.buyer, "amount": inv.amount, "due": iso_of(due)})
        return confirmed

    @internal(callers=CALLERS)
    @transaction
    def bind(self, ctx: Context, args: BindArgs) -> dict[str, int]:
        """Internal: mark invoices as backing ``instrument``; returns their total. Each may be bound once."""
        if len(set(args.keys)) != len(args.keys):
            ctx.fail(Code.INVALID_ARGUMENT, "an invoice is listed twice")
        total = 0
        for key in args.keys:
            inv = ctx.must_load(Invoice, f"inv/{key}", f"invoice {key} is not registered")
            if inv.used_by is not None:
                ctx.fail(ScfCode.INVOICE_USED, f"invoice {key} already backs {inv.used_by}")
            if (inv.seller, inv.buyer) != (args.seller, args.buyer):
                ctx.fail(Code.INVALID_ARGUMENT, f"invoice {key} is from {inv.seller} to {inv.buyer}")
            ctx.save(f"inv/{key}", inv.replace(used_by=args.instrument))
            total += inv.amount
        return {"total": total}

    @query
    def invoice(self, ctx: Context, args: KeyArgs) -> Invoice:
        return ctx.must_load(Invoice, f"inv/{args.key}", f"invoice {args.key} is not registered")
