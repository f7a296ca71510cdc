"""``scf.bills``: electronic commercial bills (电子商业汇票).

Theory of operation
-------------------
A drawer issues a bill naming a payee, an acceptor and a maturity; the acceptor accepts it (a promise to
pay at maturity). The holder endorses it onward, each endorsement signed by both the endorser and the
endorsee; every earlier party stays liable. A bank may discount it (paying the discounted amount in its
settlement token and becoming the holder, atomically) or take it in pledge. On or after maturity the
holder presents it and the acceptor pays the face in settlement tokens, or dishonours it. After a
dishonour the holder may claim recourse against any earlier party (the drawer or an earlier endorser);
that party pays the face and becomes the holder, and may claim in turn against the parties before it.

=============  ===============================  ==============================================
status         entered by                       next
=============  ===============================  ==============================================
issued         issue                            accept
accepted       accept                           endorse, discount, pledge/release, present
presented      present (at or after maturity)   pay, dishonour
paid           pay                              nothing
dishonoured    dishonour                        recourse, honour_recourse
=============  ===============================  ==============================================
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from liangcao.apps.scf.common import (
    IsoDate,
    ScfCode,
    day_of,
    discount_fen,
    iso_of,
    new_id,
    org_type,
    pledged,
    released,
    require_bank,
    today,
    unpledged,
)
from liangcao.codes import Code
from liangcao.contracts.base import Args, Context, Contract, Record, query, transaction
from liangcao.domain import Money, OrgId
from liangcao.limits import endorsements_max, rate_bps_max

BillId = Annotated[str, msgspec.Meta(pattern=r"^B[0-9a-f]{64}$")]
Status = Literal["issued", "accepted", "presented", "paid", "dishonoured"]


class Bill(Record):
    """``scf.bills/b/<id>``: a bill and who is liable on it (the drawer and every endorser)."""

    id: str
    drawer: str
    payee: str
    acceptor: str
    amount: int
    maturity_day: int
    maturity: str
    settlement_bank: str
    holder: str
    endorsers: list[str]  # earlier holders, in order: each stays liable
    status: Status
    pledged_to: str | None
    discounted_by: str | None
    recourse_against: str | None  # the earlier party a dishonoured bill's holder claims against


class IssueArgs(Args):
    payee: OrgId
    acceptor: OrgId
    amount: Money
    maturity: IsoDate
    settlement_bank: OrgId


class BillArgs(Args):
    bill: BillId


class EndorseArgs(Args):
    bill: BillId
    to: OrgId


class DiscountArgs(Args):
    bill: BillId
    bank: OrgId
    rate_bps: Annotated[int, msgspec.Meta(ge=0, le=rate_bps_max)]


class PledgeArgs(Args):
    bill: BillId
    bank: OrgId


class RecourseArgs(Args):
    bill: BillId
    against: OrgId


class Bills(Contract):
    name = "scf.bills"

    @staticmethod
    def load(ctx: Context, bid: str, *statuses: str) -> Bill:
        b = ctx.must_load(Bill, f"b/{bid}", f"no bill {bid}")
        if statuses and b.status not in statuses:
            ctx.fail(ScfCode.NOT_ACTIVE, f"bill {bid} is {b.status}, not {' or '.join(statuses)}")
        return b

    @staticmethod
    def _move(ctx: Context, b: Bill, payer: str, payee: str, amount: int) -> None:
        """Money moves in the bill's settlement token, inside this transaction."""
        ctx.invoke("scf.tokens", "pay", {"bank": b.settlement_bank, "payer": payer, "payee": payee, "amount": amount})

    @staticmethod
    def _save(ctx: Context, b: Bill) -> None:
        ctx.save(f"b/{b.id}", b)

    @transaction
    def issue(self, ctx: Context, args: IssueArgs) -> dict[str, str]:
        drawer = ctx.signer().org
        ctx.require_party(drawer, code=ScfCode.NOT_PARTY)
        org_type(ctx, args.payee)
        org_type(ctx, args.acceptor)
        require_bank(ctx, args.settlement_bank)
        maturity = day_of(args.maturity)
        if maturity <= today(ctx):
            ctx.fail(ScfCode.BAD_DATE, "maturity must be after today")
        if args.payee == drawer:
            ctx.fail(Code.INVALID_ARGUMENT, "the payee must differ from the drawer")
        bid = new_id(ctx, "B", "b/{}")
        bill = Bill(
            id=bid,
            drawer=drawer,
            payee=args.payee,
            acceptor=args.acceptor,
            amount=args.amount,
            maturity_day=maturity,
            maturity=iso_of(maturity),
            settlement_bank=args.settlement_bank,
            holder=args.payee,
            endorsers=[],
            status="issued",
            pledged_to=None,
            discounted_by=None,
            recourse_against=None,
        )
        self._save(ctx, bill)
        ctx.emit(
            "issued",
            {"bill": bid, "drawer": drawer, "payee": args.payee, "acceptor": args.acceptor, "amount": args.amount},
        )
        return {"bill": bid}

    @transaction
    def accept(self, ctx: Context, args: BillArgs) -> None:
        b = self.load(ctx, args.bill, "issued")
        ctx.require_party(b.acceptor, code=ScfCode.NOT_PARTY)
        self._save(ctx, b.replace(status="accepted"))
        ctx.emit("accepted", {"bill": b.id, "acceptor": b.acceptor})

    @transaction
    def endorse(self, ctx: Context, args: EndorseArgs) -> None:
        """Signed by the holder (endorser) and the endorsee; the endorser stays liable."""
        b = self.load(ctx, args.bill, "accepted")
        ctx.require_party(b.holder, code=ScfCode.NOT_PARTY)
        ctx.require_party(args.to, code=ScfCode.NOT_PARTY)
        unpledged(ctx, b, "bill")
        if today(ctx) >= b.maturity_day:
            ctx.fail(ScfCode.MATURED, f"bill {b.id} has matured: present it instead")
        if args.to == b.holder:
            ctx.fail(Code.INVALID_ARGUMENT, "cannot endorse a bill to its holder")
        if len(b.endorsers) >= endorsements_max:
            ctx.fail(Code.LIMIT_EXCEEDED, f"more than endorsements_max={endorsements_max} endorsements")
        self._save(ctx, b.replace(holder=args.to, endorsers=[*b.endorsers, b.holder]))
        ctx.emit("endorsed", {"bill": b.id, "from": b.holder, "to": args.to})

    @transaction
    def discount(self, ctx: Context, args: DiscountArgs) -> dict[str, int]:
        """A bank buys the bill at a discount: pays in its token and becomes the holder, atomically."""
        b = self.load(ctx, args.bill, "accepted")
        ctx.require_party(b.holder, code=ScfCode.NOT_PARTY)
        require_bank(ctx, args.bank)
        ctx.require_party(args.bank, code=ScfCode.NOT_PARTY)
        unpledged(ctx, b, "bill")
        if args.bank != b.settlement_bank:
            ctx.fail(Code.INVALID_ARGUMENT, f"discount with the settlement bank {b.settlement_bank}")
        days = b.maturity_day - today(ctx)
        if days <= 0:
            ctx.fail(ScfCode.MATURED, f"bill {b.id} has matured")
        discount = discount_fen(b.amount, args.rate_bps, days)
        self._move(ctx, b, args.bank, b.holder, b.amount - discount)
        self._save(ctx, b.replace(holder=args.bank, endorsers=[*b.endorsers, b.holder], discounted_by=args.bank))
        ctx.emit("discounted", {"bill": b.id, "seller": b.holder, "bank": args.bank, "discount": discount})
        return {"paid": b.amount - discount, "discount": discount, "days": days}

    @transaction
    def pledge(self, ctx: Context, args: PledgeArgs) -> None:
        b = self.load(ctx, args.bill, "accepted")
        self._save(ctx, pledged(ctx, b, args.bank, "bill"))
        ctx.emit("pledged", {"bill": b.id, "bank": args.bank})

    @transaction
    def release(self, ctx: Context, args: BillArgs) -> None:
        b = self.load(ctx, args.bill)
        self._save(ctx, released(ctx, b, "bill"))
        ctx.emit("released", {"bill": b.id})

    @transaction
    def present(self, ctx: Context, args: BillArgs) -> None:
        b = self.load(ctx, args.bill, "accepted")
        ctx.require_party(b.holder, code=ScfCode.NOT_PARTY)
        unpledged(ctx, b, "bill")
        if today(ctx) < b.maturity_day:
            ctx.fail(ScfCode.NOT_MATURE, f"bill {b.id} matures on {b.maturity}")
        self._save(ctx, b.replace(status="presented"))
        ctx.emit("presented", {"bill": b.id, "holder": b.holder})

    @transaction
    def pay(self, ctx: Context, args: BillArgs) -> None:
        b = self.load(ctx, args.bill, "presented")
        ctx.require_party(b.acceptor, code=ScfCode.NOT_PARTY)
        if b.holder != b.acceptor:
            self._move(ctx, b, b.acceptor, b.holder, b.amount)
        self._save(ctx, b.replace(status="paid"))
        ctx.emit("paid", {"bill": b.id, "by": b.acceptor, "to": b.holder, "amount": b.amount})

    @transaction
    def dishonour(self, ctx: Context, args: BillArgs) -> None:
        b = self.load(ctx, args.bill, "presented")
        ctx.require_party(b.acceptor, code=ScfCode.NOT_PARTY)
        self._save(ctx, b.replace(status="dishonoured"))
        ctx.emit("dishonoured", {"bill": b.id, "acceptor": b.acceptor, "holder": b.holder})

    @transaction
    def recourse(self, ctx: Context, args: RecourseArgs) -> None:
        """The holder of a dishonoured bill claims against the drawer or an earlier endorser."""
        b = self.load(ctx, args.bill, "dishonoured")
        ctx.require_party(b.holder, code=ScfCode.NOT_PARTY)
        liable = [b.drawer, *b.endorsers]
        if args.against not in liable or args.against == b.holder:
            ctx.fail(
                Code.INVALID_ARGUMENT, f"{args.against} is not liable on bill {b.id}: liable are {', '.join(liable)}"
            )
        self._save(ctx, b.replace(recourse_against=args.against))
        ctx.emit("recourse_claimed", {"bill": b.id, "holder": b.holder, "against": args.against})

    @transaction
    def honour_recourse(self, ctx: Context, args: BillArgs) -> None:
        """The party claimed against pays the face and becomes the holder, with recourse against those before it."""
        b = self.load(ctx, args.bill, "dishonoured")
        payer = b.recourse_against
        if payer is None:
            ctx.fail(ScfCode.NO_OFFER, f"no recourse is claimed on bill {b.id}")
        ctx.require_party(payer, code=ScfCode.NOT_PARTY)
        self._move(ctx, b, payer, b.holder, b.amount)
        endorsers = b.endorsers[: b.endorsers.index(payer)] if payer in b.endorsers else []
        status = "paid" if payer == b.drawer and not endorsers else "dishonoured"
        self._save(ctx, b.replace(holder=payer, endorsers=endorsers, recourse_against=None, status=status))
        ctx.emit("recourse_paid", {"bill": b.id, "by": payer, "to": b.holder, "amount": b.amount})

    @query
    def bill(self, ctx: Context, args: BillArgs) -> Bill:
        return self.load(ctx, args.bill)
