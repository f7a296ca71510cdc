"""``abs.deal``: a receivable ABS on the consortium chain: pool, notes, waterfall and triggers by contract.

Theory of operation
-------------------
A deal is run by an SPV (the manager's plan: an organisation of type ``spv``, one deal each) with an
originator (a ``factor``), a servicer (any organisation, often the originator) and a custodian (a ``bank``
whose ``scf.tokens`` token is the deal's cash). The SPV and the originator open it together, fixing three
tranches (senior, mezzanine, subordinated: face, fixed coupon in basis points, actual/365 or actual/360,
legal maturity), the payment dates, the revolving period, the fees and taxes paid on each payment date,
the eligibility rules and the trigger levels. The manager KYCs investors; KYC'd investors subscribe in the
custodian's token; when every tranche is fully subscribed the SPV launches the deal and the subscription
money is the cash for purchases.

**Purchases**, in two single-signer transactions (so any client can sign them, with no ``actor``): the
originator ``offer``s eligible scf vouchers it holds to the deal (``scf.vouchers.offer`` to the SPV, invoked
inside the transaction: the voucher is then locked by its pending offer), and the SPV ``purchase``s them:
one transaction accepts the offers (``scf.vouchers.accept``: title moves to the SPV) and pays the price to
the originator in the custodian's token (``scf.tokens.transfer``, the SPV acting), all or nothing. Title
moves *through the vouchers contract's own rules*; no contract writes another's keys. In the same
transaction the voucher is locked in the deal's pool (``scf.vouchers.pool_assign``, pool ``abs:<deal>``,
``abs.deal`` being one of its ``POOL_CALLERS``): the SPV cannot offer, split or finance it on its own. The SPV may ``decline`` an offer instead (``scf.vouchers.reject``). Eligible (checked at
both steps): held by the originator, active with no other pending offer or financing, not frozen, never
financed, in no factoring pool and in no ABS pool ever, settling in the custodian's token, not due within
``due_within_days`` days, and (at purchase) the obligor (the voucher's issuer) stays within
``obligor_limit_bps`` of the notes' face. The price is the face less a discount at ``discount_bps``
(actual/360, rounded half up to the fen, as ``scf``).

**Collections**: the issuer settles a voucher to its holder, the SPV; ``collect`` (anyone) sweeps settled
vouchers into the collections account. An unpaid voucher ``default_days`` after its maturity is a default.

**Waterfall** (``distribute``, signed by the SPV, on or after each payment date, once per date): the
collections (and, once amortising, the unspent purchase cash) are paid in order; the receipt lists each
step's amount due, paid and short, and the payees; paid plus retained equals what was available, to the fen.

* revolving: fees and taxes -> senior interest -> mezzanine interest -> purchases (retained as purchase
  cash, up to the notes' outstanding less the performing pool and the purchase cash) -> subordinated;
* amortising: fees and taxes -> senior interest -> mezzanine interest -> senior principal -> mezzanine
  principal -> subordinated;
* accelerated (sequential pay): fees and taxes -> senior interest -> senior principal -> mezzanine
  interest -> mezzanine principal -> subordinated.

Unpaid fees and interest are carried to the next date (no interest on them). The subordinated tranche has
no coupon: it takes what is left (first as principal, then as residual). A tranche's amount is shared among
its holders by the face they hold (``common.pro_rata``).

**Triggers**, evaluated for every day since the last evaluation by every transaction on the deal (the
servicer's daily ``report``, ``evaluate``, ``collect``, ``purchase``, ``distribute``), from ledger data:

* pool balance: during the revolving period, the performing pool (the face of receivables not yet due)
  at the start of a day is below ``required_bps`` of the notes outstanding for ``breach_days`` consecutive
  days -> early amortisation;
* defaults: the face defaulted, cumulatively, exceeds ``default_rate_max_bps`` of the face ever bought ->
  early amortisation;
* servicer default: no servicer report for more than ``servicer_grace_days`` days, or a regulator
  declares it -> acceleration.

Each fires once, as a ``trigger`` event naming the day its condition first held.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Any, Literal

import msgspec

from liangcao.apps.abs.common import (
    AbsCode,
    abs_breach_days_max,
    abs_collect_page_max,
    abs_default_days_max,
    abs_due_within_days_max,
    abs_fees_max,
    abs_grace_days_max,
    abs_holders_max,
    abs_payment_dates_max,
    abs_pool_assets_max,
    abs_purchase_max,
    interest_fen,
    pro_rata,
)
from liangcao.apps.scf.common import IsoDate, VoucherId, day_of, discount_fen, iso_of, new_id, today
from liangcao.apps.scf.vouchers import Voucher, read_voucher
from liangcao.codes import Code
from liangcao.contracts.base import Args, Context, Contract, Record, query, transaction
from liangcao.contracts.index import Cursor, Index
from liangcao.domain import Money, OrgId
from liangcao.errors import InvariantViolation
from liangcao.limits import rate_bps_max, scf_page_max

DealId = Annotated[str, msgspec.Meta(pattern=r"^D[0-9a-f]{64}$")]
TrancheName = Literal["senior", "mezzanine", "subordinated"]
TRANCHES: tuple[str, ...] = ("senior", "mezzanine", "subordinated")
Status = Literal["offering", "revolving", "amortising", "accelerated"]
Bps = Annotated[int, msgspec.Meta(ge=0, le=10_000)]
Rating = Annotated[str, msgspec.Meta(pattern=r"^[A-D][A-Za-z+-]{0,7}$")]

DEALS = Index("d")  # d/<deal> -> spv
HOLDERS = Index("h")  # h/<deal>/<tranche>/<org> -> face held
UNPAID = ("active", "overdue")


class Tranche(Record):
    """A class of notes: its terms, what was subscribed, its principal outstanding and what it was paid."""

    name: str
    face: int
    coupon_bps: int
    day_count: str
    legal_maturity: str
    legal_maturity_day: int
    subscribed: int = 0
    outstanding: int = 0
    holders: int = 0
    interest_shortfall: int = 0
    interest_paid: int = 0
    principal_paid: int = 0
    residual_paid: int = 0


class Fee(Record):
    """A tax or fee paid on each payment date (``amount`` fen), with what it is still owed."""

    payee: str
    what: str
    amount: int
    shortfall: int = 0
    paid: int = 0


class Trigger(Record):
    kind: str  # pool_balance, default_rate, servicer_default
    day: int
    date: str
    effect: str  # early_amortisation, acceleration


class Deal(Record, kw_only=True):
    """``abs.deal/deal/<id>``: terms, status, accounts and running figures (assets are ``a/<deal>/<id>``)."""

    id: str
    spv: str
    originator: str
    servicer: str
    custodian: str
    status: Status
    tranches: list[Tranche]
    fees: list[Fee]
    payment_dates: list[str]
    payment_days: list[int]
    next_payment: int = 0
    revolving_end: str
    revolving_end_day: int
    due_within_days: int
    obligor_limit_bps: int
    discount_bps: int
    required_bps: int
    breach_days: int
    default_days: int
    default_rate_max_bps: int
    servicer_grace_days: int
    opened_day: int
    launch_day: int | None = None
    period_start_day: int = 0
    # accounts: the SPV's balance in the custodian's token is purchase_cash + collections + what issuers
    # have settled to it and no collect has swept yet
    purchase_cash: int = 0
    collections: int = 0
    # running figures
    subscribed: int = 0
    purchased_face: int = 0
    purchased_price: int = 0
    collected: int = 0
    recoveries: int = 0
    defaulted_face: int = 0
    distributed: int = 0
    # payments to organisations the consortium removed (tokens cannot move to them): kept in the SPV's account
    unclaimed: dict[str, int] = msgspec.field(default_factory=dict)
    missing: int = 0  # cash the books had but the SPV's account did not when a waterfall paid (cash_shortfall)
    assets_in: int = 0
    obligors: dict[str, int] = msgspec.field(default_factory=dict)
    # trigger state
    last_eval_day: int = 0
    breach_since: int | None = None
    last_report_day: int = 0
    triggers: list[Trigger] = msgspec.field(default_factory=list)


class Asset(Record):
    """``abs.deal/a/<deal>/<voucher>``: a receivable in the pool until its collection is swept."""

    id: str
    obligor: str
    face: int
    price: int
    maturity_day: int
    maturity: str
    purchased_day: int
    defaulted_day: int | None = None


class RatingRecord(Record):
    agency: str
    tranche: str
    rating: str
    outlook: str
    date: str


# ---- arguments -------------------------------------------------------------------------------------------
class TrancheTerms(msgspec.Struct, forbid_unknown_fields=True):
    name: TrancheName
    face: Money
    coupon_bps: Annotated[int, msgspec.Meta(ge=0, le=rate_bps_max)]
    day_count: Literal["act365", "act360"]
    legal_maturity: IsoDate


class FeeTerms(msgspec.Struct, forbid_unknown_fields=True):
    payee: OrgId
    what: Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z_]{0,31}$")]
    amount: Money


class OpenArgs(Args):
    spv: OrgId
    originator: OrgId
    servicer: OrgId
    custodian: OrgId
    tranches: Annotated[list[TrancheTerms], msgspec.Meta(min_length=3, max_length=3)]
    payment_dates: Annotated[list[IsoDate], msgspec.Meta(min_length=1, max_length=abs_payment_dates_max)]
    revolving_end: IsoDate
    fees: Annotated[list[FeeTerms], msgspec.Meta(max_length=abs_fees_max)] = msgspec.field(default_factory=list)
    due_within_days: Annotated[int, msgspec.Meta(ge=0, le=abs_due_within_days_max)] = 30
    obligor_limit_bps: Annotated[int, msgspec.Meta(gt=0, le=10_000)] = 10_000
    discount_bps: Annotated[int, msgspec.Meta(ge=0, le=rate_bps_max)] = 0
    required_bps: Bps = 10_000
    breach_days: Annotated[int, msgspec.Meta(ge=1, le=abs_breach_days_max)] = 30
    default_days: Annotated[int, msgspec.Meta(ge=1, le=abs_default_days_max)] = 30
    default_rate_max_bps: Bps = 500
    servicer_grace_days: Annotated[int, msgspec.Meta(ge=1, le=abs_grace_days_max)] = 3


class DealArgs(Args):
    deal: DealId


class KycArgs(Args):
    deal: DealId
    org: OrgId


class SubscribeArgs(Args):
    deal: DealId
    tranche: TrancheName
    amount: Money


class TransferArgs(Args):
    deal: DealId
    tranche: TrancheName
    to: OrgId
    amount: Money


class PurchaseArgs(Args):
    deal: DealId
    vouchers: Annotated[list[VoucherId], msgspec.Meta(min_length=1, max_length=abs_purchase_max)]


class ReportArgs(Args):
    """The servicer's daily figures, compared with the contract's own (``agrees`` in the event)."""

    deal: DealId
    performing: Annotated[int, msgspec.Meta(ge=0, le=10**15)]
    delinquent: Annotated[int, msgspec.Meta(ge=0, le=10**15)]
    defaulted: Annotated[int, msgspec.Meta(ge=0, le=10**15)]


class RateArgs(Args):
    deal: DealId
    tranche: TrancheName
    rating: Rating
    outlook: Literal["stable", "positive", "negative", "watch"] = "stable"


class HoldersArgs(Args):
    deal: DealId
    tranche: TrancheName


class ListArgs(Args):
    after: Cursor = ""
    limit: Annotated[int, msgspec.Meta(ge=1, le=scf_page_max)] = scf_page_max


def tranche_index(name: str) -> int:
    return TRANCHES.index(name)


class AbsDeal(Contract):
    name = "abs.deal"

    # ---- helpers ----------------------------------------------------------------------------------------
    @staticmethod
    def load(ctx: Context, did: str) -> Deal:
        return ctx.must_load(Deal, f"deal/{did}", f"no ABS deal {did}")

    @staticmethod
    def save(ctx: Context, deal: Deal) -> None:
        ctx.save(f"deal/{deal.id}", deal)

    @staticmethod
    def assets(ctx: Context, did: str) -> list[Asset]:
        return [a for _, a in ctx.range(f"a/{did}/", Asset)]

    voucher = staticmethod(read_voucher)

    @staticmethod
    def active_org(ctx: Context, org: str, *types: str) -> None:
        entry = ctx.consortium().orgs.get(org)
        if entry is None or not entry.active:
            ctx.fail(AbsCode.BAD_TERMS, f"{org} is not an active organisation of the consortium")
        if types and str(entry.type) not in types:
            ctx.fail(AbsCode.BAD_TERMS, f"{org} is a {entry.type}, not a {' or '.join(types)}")

    @staticmethod
    def acting(ctx: Context, org: str, what: str) -> None:
        """``org`` signed and is the acting party (tokens move from the actor's account)."""
        ctx.require_party(org, code=AbsCode.NOT_PARTY, message=f"needs the signature of {what} {org}")
        if ctx.signer().org != org:
            ctx.fail(AbsCode.NOT_PARTY, f"{what} {org} must be the acting party (body.actor)")

    @staticmethod
    def pay(ctx: Context, deal: Deal, payee: str, amount: int) -> None:
        if amount > 0:
            ctx.invoke("scf.tokens", "transfer", {"bank": deal.custodian, "to": payee, "amount": amount})

    @staticmethod
    def notes_outstanding(deal: Deal) -> int:
        return sum(t.outstanding for t in deal.tranches)

    @staticmethod
    def performing(assets: list[Asset], day: int) -> int:
        """The performing pool at the start of ``day``: the face of receivables not yet due (nor defaulted)."""
        return sum(
            a.face for a in assets if a.maturity_day > day and (a.defaulted_day is None or a.defaulted_day > day)
        )

    def figures(self, ctx: Context, deal: Deal, assets: list[Asset] | None = None) -> dict[str, Any]:
        """The pool's figures now (a read: no trigger is evaluated here)."""
        assets = self.assets(ctx, deal.id) if assets is None else assets
        now = today(ctx)
        delinquent = defaulted = settled = 0
        for a in assets:
            if a.defaulted_day is not None:
                defaulted += a.face
            elif a.maturity_day <= now:
                if self.voucher(ctx, a.id).status in UNPAID:
                    delinquent += a.face
                else:
                    settled += a.face
        notes = self.notes_outstanding(deal)
        return {
            "performing": self.performing(assets, now),
            "delinquent": delinquent,
            "defaulted": defaulted,
            "settled_uncollected": settled,
            "in_pool": sum(a.face for a in assets),
            "notes_outstanding": notes,
            "required": notes * deal.required_bps // 10_000,
            "cash": deal.purchase_cash + deal.collections,
            "unclaimed": sum(deal.unclaimed.values()),
        }

    def account(self, ctx: Context, deal: Deal) -> int:
        """The SPV's balance in the custodian's token (read from ``scf.tokens``)."""
        return int(ctx.read(f"scf.tokens/bal/{deal.custodian}/{deal.spv}") or 0)

    def uncollected(self, ctx: Context, deal: Deal, assets: list[Asset]) -> int:
        """What issuers have settled to the SPV for receivables of the pool that no ``collect`` has swept."""
        total = 0
        for a in assets:
            v = self.voucher(ctx, a.id)
            if v.status == "settled" and v.holder == deal.spv:
                total += a.face
        return total

    def cash_short(self, ctx: Context, deal: Deal, assets: list[Asset]) -> int:
        """How far the SPV's account is below the deal's books (0 when it backs them)."""
        books = deal.purchase_cash + deal.collections + sum(deal.unclaimed.values())
        return max(0, books + self.uncollected(ctx, deal, assets) - self.account(ctx, deal))

    # ---- triggers ---------------------------------------------------------------------------------------
    def evaluate_days(self, ctx: Context, deal: Deal) -> Deal:
        """Evaluate every day since the last evaluation up to today, from ledger data, and fire what held.

        A day's test uses the state at its start: the state after the last transaction of earlier days,
        which is the state now for every day after the last evaluation (this runs before the transaction
        changes anything). Defaults first (by the day each fell due), then, during the revolving period,
        the run of days the performing pool was below the required level (it only falls between
        transactions, as receivables come due), then the servicer's silence."""
        if deal.status == "offering":
            return deal
        now = today(ctx)
        if now <= deal.last_eval_day:
            return deal
        start = deal.last_eval_day + 1
        fired = {t.kind for t in deal.triggers}
        pending: list[tuple[int, str, str]] = []  # (day, kind, effect)
        assets = self.assets(ctx, deal.id)
        # defaults: unpaid default_days after maturity (a settled voucher waiting for collect is paid), or
        # title lost: the SPV no longer holds the voucher whole (it moved, split or financed it through
        # scf.vouchers with its own signature), a default on the day the contract first sees it
        newly: list[Asset] = []
        lost: set[str] = set()
        for a in assets:
            if a.defaulted_day is not None:
                continue
            v = self.voucher(ctx, a.id)
            if v.holder != deal.spv or v.status == "retired":
                newly.append(a.replace(defaulted_day=now))
                lost.add(a.id)
            elif a.maturity_day + deal.default_days <= now and v.status in UNPAID:
                newly.append(a.replace(defaulted_day=a.maturity_day + deal.default_days))
        newly.sort(key=lambda a: (a.defaulted_day, a.id))
        defaulted = deal.defaulted_face
        for a in newly:
            ctx.save(f"a/{deal.id}/{a.id}", a)
            defaulted += a.face
            day = a.defaulted_day if a.defaulted_day is not None else now
            event = {"deal": deal.id, "voucher": a.id, "face": a.face, "date": iso_of(day)}
            ctx.emit("defaulted", {**event, "title_lost": a.id in lost})
            limit_hit = defaulted * 10_000 > deal.default_rate_max_bps * deal.purchased_face
            if "default_rate" not in fired and limit_hit and not any(p[1] == "default_rate" for p in pending):
                pending.append((max(day, start), "default_rate", "early_amortisation"))
        deal = deal.replace(defaulted_face=defaulted)
        if newly:
            assets = self.assets(ctx, deal.id)
        # the SPV's account below the books (the SPV moved the deal's cash with its own signature): acceleration
        if "cash_shortfall" not in fired and self.cash_short(ctx, deal, assets) > 0:
            pending.append((now, "cash_shortfall", "acceleration"))
        if "servicer_default" not in fired and now > deal.last_report_day + deal.servicer_grace_days:
            pending.append(
                (max(start, deal.last_report_day + deal.servicer_grace_days + 1), "servicer_default", "acceleration")
            )
        # the revolving period ends on its end date or on the first trigger, whichever comes first
        if deal.status == "revolving":
            stop = min([deal.revolving_end_day, *(p[0] for p in pending)])
            last = min(now, stop - 1)
            breach_since = deal.breach_since
            if start <= last:
                required = self.notes_outstanding(deal) * deal.required_bps // 10_000
                if self.performing(assets, start) >= required:
                    breach_since = None  # cured (or never in breach) at the start of ``start``
                    # the performing pool only falls as receivables come due (or default): the first day below
                    falls = {a.maturity_day for a in assets} | {a.defaulted_day for a in assets if a.defaulted_day}
                    for day in sorted(d for d in falls if start < d <= last):
                        if self.performing(assets, day) < required:
                            breach_since = day
                            break
                elif breach_since is None:
                    breach_since = start
                if breach_since is not None and "pool_balance" not in fired:
                    hit = breach_since + deal.breach_days - 1
                    if hit <= last:
                        pending.append((hit, "pool_balance", "early_amortisation"))
                deal = deal.replace(breach_since=breach_since)
            if deal.revolving_end_day <= now:
                pending.append((deal.revolving_end_day, "revolving_end", "amortisation"))
        for day, kind, effect in sorted(pending):
            if kind == "revolving_end":
                if deal.status == "revolving":
                    deal = deal.replace(status="amortising", breach_since=None)
                    ctx.emit("revolving_ended", {"deal": deal.id, "date": iso_of(day)})
                continue
            deal = self.fire(ctx, deal, kind, effect, day)
        return deal.replace(last_eval_day=now)

    def fire(self, ctx: Context, deal: Deal, kind: str, effect: str, day: int) -> Deal:
        trigger = Trigger(kind=kind, day=day, date=iso_of(day), effect=effect)
        status: Status = deal.status
        if effect == "acceleration":
            status = "accelerated"
        elif status == "revolving":
            status = "amortising"
        ctx.emit("trigger", {"deal": deal.id, **trigger.to_value(), "status": status})
        return deal.replace(triggers=[*deal.triggers, trigger], status=status, breach_since=None)

    def evaluated(self, ctx: Context, did: str) -> Deal:
        deal = self.evaluate_days(ctx, self.load(ctx, did))
        self.save(ctx, deal)
        return deal

    # ---- opening and notes -----------------------------------------------------------------------------
    @transaction
    def open(self, ctx: Context, args: OpenArgs) -> dict[str, str]:
        """The SPV and the originator open a deal on the terms given (see the module docstring)."""
        self.active_org(ctx, args.spv, "spv")
        self.active_org(ctx, args.originator, "factor")
        self.active_org(ctx, args.servicer)
        self.active_org(ctx, args.custodian, "bank")
        ctx.require_party(args.spv, code=AbsCode.NOT_PARTY)
        ctx.require_party(args.originator, code=AbsCode.NOT_PARTY)
        if ctx.exists(f"spv/{args.spv}"):
            ctx.fail(AbsCode.SPV_BUSY, f"{args.spv} already runs deal {ctx.get(f'spv/{args.spv}')}")
        if [t.name for t in args.tranches] != list(TRANCHES):
            ctx.fail(AbsCode.BAD_TERMS, "tranches are senior, mezzanine and subordinated, in that order")
        if args.tranches[2].coupon_bps != 0:
            ctx.fail(AbsCode.BAD_TERMS, "the subordinated tranche takes the residual: its coupon_bps is 0")
        now = today(ctx)
        days = [day_of(d) for d in args.payment_dates]
        if days[0] <= now or any(b <= a for a, b in itertools.pairwise(days)):
            ctx.fail(AbsCode.BAD_TERMS, "payment dates are after today and strictly increasing")
        revolving_end = day_of(args.revolving_end)
        if not now < revolving_end <= days[-1]:
            ctx.fail(AbsCode.BAD_TERMS, "the revolving period ends after today and by the last payment date")
        tranches = []
        for t in args.tranches:
            legal = day_of(t.legal_maturity)
            if legal < days[-1]:
                ctx.fail(AbsCode.BAD_TERMS, f"the {t.name} tranche's legal maturity is before the last payment date")
            tranches.append(
                Tranche(
                    name=t.name,
                    face=t.face,
                    coupon_bps=t.coupon_bps,
                    day_count=t.day_count,
                    legal_maturity=iso_of(legal),
                    legal_maturity_day=legal,
                )
            )
        fees = []
        for f in args.fees:
            self.active_org(ctx, f.payee)
            if f.payee == args.spv:
                ctx.fail(AbsCode.BAD_TERMS, "the SPV cannot pay a fee to itself")
            fees.append(Fee(payee=f.payee, what=f.what, amount=f.amount))
        did = new_id(ctx, "D", "deal/{}")
        deal = Deal(
            id=did,
            spv=args.spv,
            originator=args.originator,
            servicer=args.servicer,
            custodian=args.custodian,
            status="offering",
            tranches=tranches,
            fees=fees,
            payment_dates=[iso_of(d) for d in days],
            payment_days=days,
            revolving_end=iso_of(revolving_end),
            revolving_end_day=revolving_end,
            due_within_days=args.due_within_days,
            obligor_limit_bps=args.obligor_limit_bps,
            discount_bps=args.discount_bps,
            required_bps=args.required_bps,
            breach_days=args.breach_days,
            default_days=args.default_days,
            default_rate_max_bps=args.default_rate_max_bps,
            servicer_grace_days=args.servicer_grace_days,
            opened_day=now,
        )
        self.save(ctx, deal)
        ctx.put(f"spv/{args.spv}", did)
        DEALS.add(ctx, did, value=args.spv)
        ctx.emit("opened", {"deal": did, "spv": args.spv, "originator": args.originator})
        return {"deal": did}

    @transaction
    def kyc(self, ctx: Context, args: KycArgs) -> None:
        """The manager (the SPV) records that it has KYC'd an investor (or the originator, for its tranche)."""
        deal = self.load(ctx, args.deal)
        ctx.require_party(deal.spv, code=AbsCode.NOT_PARTY)
        if args.org != deal.originator:
            self.active_org(ctx, args.org, "investor")
        ctx.put(f"k/{deal.id}/{args.org}", True)
        ctx.emit("kyc", {"deal": deal.id, "org": args.org})

    def kycd(self, ctx: Context, deal: Deal, org: str) -> None:
        if not ctx.get(f"k/{deal.id}/{org}"):
            ctx.fail(AbsCode.NOT_KYC, f"{org} has not been KYC'd for deal {deal.id}")
        entry = ctx.consortium().orgs.get(org)
        if entry is None or not entry.active:  # KYC'd once, then removed by the consortium: no longer a member
            ctx.fail(AbsCode.NOT_KYC, f"{org} is not an active organisation of the consortium")

    def hold(self, ctx: Context, deal: Deal, tranche: Tranche, org: str, delta: int) -> Tranche:
        """Change ``org``'s holding by ``delta``, keeping the holder count within ``abs_holders_max``."""
        have = int(HOLDERS.get(ctx, deal.id, tranche.name, org) or 0)
        now = have + delta
        holders = tranche.holders + (1 if have == 0 and now > 0 else 0) - (1 if have > 0 and now == 0 else 0)
        if holders > abs_holders_max:
            ctx.fail(Code.LIMIT_EXCEEDED, f"a tranche has at most abs_holders_max={abs_holders_max} holders")
        if now:
            HOLDERS.add(ctx, deal.id, tranche.name, org, value=now)
        else:
            HOLDERS.remove(ctx, deal.id, tranche.name, org)
        return tranche.replace(holders=holders)

    @staticmethod
    def with_tranche(deal: Deal, tranche: Tranche) -> Deal:
        tranches = list(deal.tranches)
        tranches[tranche_index(tranche.name)] = tranche
        return deal.replace(tranches=tranches)

    @transaction
    def subscribe(self, ctx: Context, args: SubscribeArgs) -> dict[str, int]:
        """A KYC'd investor (acting) subscribes notes at par, paying the SPV in the custodian's token."""
        deal = self.load(ctx, args.deal)
        investor = ctx.signer().org
        ctx.require_party(investor, code=AbsCode.NOT_PARTY)
        if deal.status != "offering":
            ctx.fail(AbsCode.WRONG_STATUS, f"deal {deal.id} is {deal.status}: subscriptions are closed")
        self.kycd(ctx, deal, investor)
        tranche = deal.tranches[tranche_index(args.tranche)]
        if tranche.subscribed + args.amount > tranche.face:
            ctx.fail(
                AbsCode.OVERSUBSCRIBED,
                f"the {tranche.name} tranche has {tranche.face - tranche.subscribed} fen left to subscribe",
            )
        self.pay_in(ctx, deal, args.amount)
        tranche = self.hold(ctx, deal, tranche, investor, args.amount)
        deal = self.with_tranche(deal, tranche.replace(subscribed=tranche.subscribed + args.amount))
        deal = deal.replace(subscribed=deal.subscribed + args.amount, purchase_cash=deal.purchase_cash + args.amount)
        self.save(ctx, deal)
        ctx.emit("subscribed", {"deal": deal.id, "tranche": args.tranche, "investor": investor, "amount": args.amount})
        return {"subscribed": tranche.subscribed + args.amount}

    @staticmethod
    def pay_in(ctx: Context, deal: Deal, amount: int) -> None:
        ctx.invoke("scf.tokens", "transfer", {"bank": deal.custodian, "to": deal.spv, "amount": amount})

    @transaction
    def launch(self, ctx: Context, args: DealArgs) -> None:
        """The SPV closes the offering once every tranche is fully subscribed: the revolving period starts."""
        deal = self.load(ctx, args.deal)
        ctx.require_party(deal.spv, code=AbsCode.NOT_PARTY)
        if deal.status != "offering":
            ctx.fail(AbsCode.WRONG_STATUS, f"deal {deal.id} is already {deal.status}")
        short = [t.name for t in deal.tranches if t.subscribed < t.face]
        if short:
            ctx.fail(AbsCode.NOT_SUBSCRIBED, f"not fully subscribed: {', '.join(short)}")
        now = today(ctx)
        if now >= deal.payment_days[0] or now >= deal.revolving_end_day:
            ctx.fail(AbsCode.WRONG_STATUS, "too late to launch: the first payment date or revolving end has passed")
        deal = deal.replace(
            status="revolving",
            tranches=[t.replace(outstanding=t.face) for t in deal.tranches],
            launch_day=now,
            period_start_day=now,
            last_eval_day=now,
            last_report_day=now,
        )
        self.save(ctx, deal)
        ctx.emit("launched", {"deal": deal.id, "date": iso_of(now), "notes": self.notes_outstanding(deal)})

    @transaction
    def transfer(self, ctx: Context, args: TransferArgs) -> dict[str, int]:
        """A holder (acting) transfers notes to another KYC'd investor (the price is settled between them)."""
        deal = self.load(ctx, args.deal)
        holder = ctx.signer().org
        ctx.require_party(holder, code=AbsCode.NOT_PARTY)
        if args.to == holder:
            ctx.fail(Code.INVALID_ARGUMENT, "cannot transfer notes to their holder")
        self.kycd(ctx, deal, args.to)
        tranche = deal.tranches[tranche_index(args.tranche)]
        have = int(HOLDERS.get(ctx, deal.id, tranche.name, holder) or 0)
        if have < args.amount:
            ctx.fail(AbsCode.NOT_ENOUGH_NOTES, f"{holder} holds {have} fen of {tranche.name} notes")
        tranche = self.hold(ctx, deal, tranche, holder, -args.amount)
        tranche = self.hold(ctx, deal, tranche, args.to, args.amount)
        self.save(ctx, self.with_tranche(deal, tranche))
        ctx.emit(
            "notes_transferred",
            {"deal": deal.id, "tranche": tranche.name, "from": holder, "to": args.to, "amount": args.amount},
        )
        return {"held": have - args.amount}

    # ---- the pool ---------------------------------------------------------------------------------------
    def eligible(self, ctx: Context, deal: Deal, v: Voucher, *, offered: bool) -> None:
        """Refuses, with the first rule it breaks, a voucher the deal may not buy (``offered``: the originator
        has offered it to the deal, so its pending offer is this one)."""
        if ctx.exists(f"r/{v.id}"):
            ctx.fail(AbsCode.IN_POOL, f"voucher {v.id} is (or was) in ABS pool {ctx.get(f'r/{v.id}')}")
        if v.pool is not None:
            ctx.fail(AbsCode.IN_POOL, f"voucher {v.id} is in factoring pool {v.pool}")
        if v.holder != deal.originator:
            ctx.fail(AbsCode.NOT_HELD, f"voucher {v.id} is held by {v.holder}, not the originator")
        if v.frozen:
            ctx.fail(AbsCode.FROZEN, f"voucher {v.id} is frozen")
        if v.financed_by is not None:
            ctx.fail(AbsCode.FINANCED, f"voucher {v.id} was financed by {v.financed_by}")
        ours = offered and v.offer_to == deal.spv and ctx.get(f"o/{deal.id}/{v.id}") is not None
        if v.status != "active" or (v.offer_to is not None and not ours) or v.financing is not None:
            ctx.fail(AbsCode.NOT_ACTIVE, f"voucher {v.id} is {v.status} or has a pending offer or financing")
        if offered and not ours:
            ctx.fail(AbsCode.NOT_OFFERED, f"voucher {v.id} is not offered to deal {deal.id}")
        if v.settlement_bank != deal.custodian:
            ctx.fail(AbsCode.WRONG_TOKEN, f"voucher {v.id} settles in {v.settlement_bank}'s token, not the custodian's")
        if v.maturity_day <= today(ctx) + deal.due_within_days:
            ctx.fail(AbsCode.DUE_TOO_SOON, f"voucher {v.id} is due {v.maturity}, within {deal.due_within_days} days")

    @staticmethod
    def distinct(ctx: Context, vouchers: list[str]) -> None:
        if len(set(vouchers)) != len(vouchers):
            ctx.fail(Code.INVALID_ARGUMENT, "a voucher is named twice")

    @transaction
    def offer(self, ctx: Context, args: PurchaseArgs) -> dict[str, Any]:
        """The originator offers eligible vouchers to the deal (``scf.vouchers.offer`` to the SPV); title moves
        only when the SPV buys them, in the same transaction as the price."""
        deal = self.load(ctx, args.deal)
        ctx.require_party(deal.originator, code=AbsCode.NOT_PARTY)
        if deal.status != "revolving":
            ctx.fail(AbsCode.WRONG_STATUS, f"deal {deal.id} is {deal.status}: it buys receivables only while revolving")
        self.distinct(ctx, args.vouchers)
        face = 0
        for vid in args.vouchers:
            v = self.voucher(ctx, vid)
            self.eligible(ctx, deal, v, offered=False)
            ctx.invoke("scf.vouchers", "offer", {"voucher": vid, "to": deal.spv})
            ctx.put(f"o/{deal.id}/{vid}", v.face)
            face += v.face
        ctx.emit("offered", {"deal": deal.id, "vouchers": args.vouchers, "face": face})
        return {"offered": args.vouchers, "face": face}

    @transaction
    def decline(self, ctx: Context, args: PurchaseArgs) -> None:
        """The SPV declines vouchers offered to the deal (``scf.vouchers.reject``): they stay the originator's."""
        deal = self.load(ctx, args.deal)
        ctx.require_party(deal.spv, code=AbsCode.NOT_PARTY)
        self.distinct(ctx, args.vouchers)
        for vid in args.vouchers:
            if ctx.get(f"o/{deal.id}/{vid}") is None:
                ctx.fail(AbsCode.NOT_OFFERED, f"voucher {vid} is not offered to deal {deal.id}")
            ctx.delete(f"o/{deal.id}/{vid}")
            if self.voucher(ctx, vid).offer_to == deal.spv:
                ctx.invoke("scf.vouchers", "reject", {"voucher": vid})
        ctx.emit("declined", {"deal": deal.id, "vouchers": args.vouchers})

    @transaction
    def purchase(self, ctx: Context, args: PurchaseArgs) -> dict[str, Any]:
        """The SPV (acting) buys vouchers the originator offered: in this one transaction it accepts them
        (``scf.vouchers.accept``: title) and pays their price to the originator in the custodian's token."""
        deal = self.evaluated(ctx, args.deal)
        self.acting(ctx, deal.spv, "the SPV")
        if deal.status != "revolving":
            ctx.fail(AbsCode.WRONG_STATUS, f"deal {deal.id} is {deal.status}: it buys receivables only while revolving")
        self.distinct(ctx, args.vouchers)
        if deal.assets_in + len(args.vouchers) > abs_pool_assets_max:
            ctx.fail(Code.LIMIT_EXCEEDED, f"a pool holds at most abs_pool_assets_max={abs_pool_assets_max} receivables")
        now = today(ctx)
        limit = sum(t.face for t in deal.tranches) * deal.obligor_limit_bps // 10_000
        obligors = dict(deal.obligors)
        bought: list[Asset] = []
        for vid in args.vouchers:
            v = self.voucher(ctx, vid)
            self.eligible(ctx, deal, v, offered=True)
            held = obligors.get(v.issuer, 0) + v.face
            if held > limit:
                ctx.fail(
                    AbsCode.CONCENTRATION,
                    f"obligor {v.issuer} would be {held} fen of the pool, over its limit of {limit}",
                )
            obligors[v.issuer] = held
            price = v.face - discount_fen(v.face, deal.discount_bps, v.maturity_day - now)
            if price < 1:  # a price of nothing or less would book purchase cash the SPV's account never got
                ctx.fail(
                    AbsCode.BAD_PRICE, f"voucher {v.id} would be priced at {price} fen: its discount exceeds its face"
                )
            bought.append(
                Asset(
                    id=v.id,
                    obligor=v.issuer,
                    face=v.face,
                    price=price,
                    maturity_day=v.maturity_day,
                    maturity=v.maturity,
                    purchased_day=now,
                )
            )
        total = sum(a.price for a in bought)
        if total > deal.purchase_cash:
            ctx.fail(AbsCode.NOT_ENOUGH_CASH, f"price {total} exceeds the purchase cash {deal.purchase_cash}")
        for a in bought:  # title, through the vouchers contract's own rules: the SPV accepts the offer
            ctx.invoke("scf.vouchers", "accept", {"voucher": a.id})
            # and locks it in the deal's pool: the SPV can no longer offer, split or finance it on its own
            ctx.invoke(
                "scf.vouchers",
                "pool_assign",
                {"voucher": a.id, "pool": f"abs:{deal.id}", "seller": deal.spv, "factor": deal.spv},
            )
            ctx.delete(f"o/{deal.id}/{a.id}")
            ctx.save(f"a/{deal.id}/{a.id}", a)
            ctx.put(f"r/{a.id}", deal.id)
        self.pay(ctx, deal, deal.originator, total)
        face = sum(a.face for a in bought)
        deal = deal.replace(
            purchase_cash=deal.purchase_cash - total,
            purchased_face=deal.purchased_face + face,
            purchased_price=deal.purchased_price + total,
            assets_in=deal.assets_in + len(bought),
            obligors=dict(sorted(obligors.items())),
        )
        self.save(ctx, deal)
        ctx.emit("purchased", {"deal": deal.id, "vouchers": [a.id for a in bought], "face": face, "price": total})
        return {"face": face, "price": total, "purchase_cash": deal.purchase_cash}

    @transaction
    def collect(self, ctx: Context, args: DealArgs) -> dict[str, Any]:
        """Sweep receivables their issuers have settled (paid to the SPV) into collections (anyone may ask)."""
        ctx.signer()
        deal = self.evaluated(ctx, args.deal)
        swept: list[str] = []
        amount = recovered = 0
        more = False
        obligors = dict(deal.obligors)
        for a in self.assets(ctx, deal.id):
            v = self.voucher(ctx, a.id)
            if v.status != "settled" or v.holder != deal.spv:  # paid to someone else: the SPV got nothing
                continue
            if len(swept) == abs_collect_page_max:
                more = True
                break
            ctx.delete(f"a/{deal.id}/{a.id}")
            left = obligors[a.obligor] - a.face
            if left:
                obligors[a.obligor] = left
            else:
                del obligors[a.obligor]
            amount += a.face
            if a.defaulted_day is not None:
                recovered += a.face
            swept.append(a.id)
            ctx.emit(
                "collected", {"deal": deal.id, "voucher": a.id, "face": a.face, "recovery": a.defaulted_day is not None}
            )
        if not swept:
            ctx.fail(AbsCode.NOTHING_TO_COLLECT, f"no receivable in deal {deal.id}'s pool has been settled")
        deal = deal.replace(
            collections=deal.collections + amount,
            collected=deal.collected + amount,
            recoveries=deal.recoveries + recovered,
            assets_in=deal.assets_in - len(swept),
            obligors=obligors,
        )
        self.save(ctx, deal)
        return {"collected": swept, "amount": amount, "more": more}

    # ---- reports and triggers ---------------------------------------------------------------------------
    @transaction
    def report(self, ctx: Context, args: ReportArgs) -> dict[str, Any]:
        """The servicer's daily report: the contract evaluates the days since the last one, then compares."""
        deal = self.load(ctx, args.deal)
        ctx.require_party(deal.servicer, code=AbsCode.NOT_PARTY)
        if deal.status == "offering":
            ctx.fail(AbsCode.WRONG_STATUS, f"deal {deal.id} has not launched")
        deal = self.evaluate_days(ctx, deal).replace(last_report_day=today(ctx))
        self.save(ctx, deal)
        fig = self.figures(ctx, deal)
        reported = {"performing": args.performing, "delinquent": args.delinquent, "defaulted": args.defaulted}
        agrees = all(fig[k] == v for k, v in reported.items())
        ctx.emit(
            "servicer_report", {"deal": deal.id, "date": iso_of(today(ctx)), "reported": reported, "agrees": agrees}
        )
        return {"figures": fig, "agrees": agrees, "status": deal.status}

    @transaction
    def evaluate(self, ctx: Context, args: DealArgs) -> dict[str, Any]:
        """Anyone may have the contract evaluate the days since the last evaluation (triggers fire as events)."""
        ctx.signer()
        deal = self.evaluated(ctx, args.deal)
        return {"status": deal.status, "figures": self.figures(ctx, deal), "triggers": deal.triggers}

    @transaction
    def declare_servicer_default(self, ctx: Context, args: DealArgs) -> None:
        """A regulator declares the servicer in default: acceleration."""
        ctx.require_party(org_type="regulator")
        deal = self.evaluated(ctx, args.deal)
        if deal.status == "offering":
            ctx.fail(AbsCode.WRONG_STATUS, f"deal {deal.id} has not launched")
        if any(t.kind == "servicer_default" for t in deal.triggers):
            ctx.fail(AbsCode.ALREADY_FIRED, "the servicer default has already fired")
        self.save(ctx, self.fire(ctx, deal, "servicer_default", "acceleration", today(ctx)))

    @transaction
    def rate(self, ctx: Context, args: RateArgs) -> None:
        """A rating agency publishes its rating of a tranche."""
        agency = ctx.require_party(org_type="rating_agency").org
        deal = self.load(ctx, args.deal)
        record = RatingRecord(
            agency=agency, tranche=args.tranche, rating=args.rating, outlook=args.outlook, date=iso_of(today(ctx))
        )
        ctx.save(f"rt/{deal.id}/{args.tranche}/{agency}", record)
        ctx.emit("rated", {"deal": deal.id, **record.to_value()})

    # ---- the waterfall ----------------------------------------------------------------------------------
    def holdings(self, ctx: Context, deal: Deal, tranche: str) -> list[tuple[str, int]]:
        return [(org, int(units)) for org, units in HOLDERS.items(ctx, deal.id, tranche)]

    @transaction
    def distribute(self, ctx: Context, args: DealArgs) -> dict[str, Any]:
        """The waterfall of the next payment date (on or after it), paid by the SPV's account, by contract."""
        deal = self.evaluated(ctx, args.deal)
        self.acting(ctx, deal.spv, "the SPV")
        if deal.status == "offering":
            ctx.fail(AbsCode.WRONG_STATUS, f"deal {deal.id} has not launched")
        if deal.next_payment >= len(deal.payment_days):
            ctx.fail(AbsCode.NOT_PAYMENT_DATE, f"every payment date of deal {deal.id} is done")
        pay_day = deal.payment_days[deal.next_payment]
        if today(ctx) < pay_day:
            ctx.fail(AbsCode.NOT_PAYMENT_DATE, f"the next payment date is {iso_of(pay_day)}")
        days = pay_day - deal.period_start_day
        available = deal.collections
        purchase_cash = deal.purchase_cash
        if deal.status != "revolving":  # amortising: unspent purchase cash pays the notes
            available += purchase_cash
            purchase_cash = 0
        # pay what the account really holds (the SPV may have moved the deal's cash): the purchase cash kept
        # is short first, then what the waterfall has; the shortfall is named in the receipt as missing
        missing = self.cash_short(ctx, deal, self.assets(ctx, deal.id))
        from_purchase = min(missing, purchase_cash)
        purchase_cash -= from_purchase
        available -= missing - from_purchase
        remaining = available
        retained = 0
        steps: list[dict[str, Any]] = []
        tranches = {t.name: t for t in deal.tranches}
        fees = list(deal.fees)
        unclaimed = dict(deal.unclaimed)
        orgs = ctx.consortium().orgs

        def step(name: str, due: int | None, payees: list[tuple[str, int]] | None) -> int:
            nonlocal remaining
            paid = remaining if due is None else min(due, remaining)
            remaining -= paid
            entry: dict[str, Any] = {"step": name, "due": due, "paid": paid}
            if due is not None:
                entry["short"] = due - paid
            if payees is not None:
                shares = pro_rata(paid, payees)
                kept: dict[str, int] = {}
                for org, share in shares:
                    entry_org = orgs.get(org)
                    if share and (entry_org is None or not entry_org.active):
                        # a removed organisation cannot receive tokens: its share is paid (it is no longer
                        # due) but kept for it in the SPV's account, so no holder can block the waterfall
                        kept[org] = share
                        unclaimed[org] = unclaimed.get(org, 0) + share
                    else:
                        self.pay(ctx, deal, org, share)
                entry["payees"] = {org: share for org, share in shares if share}
                if kept:
                    entry["unclaimed"] = kept
            steps.append(entry)
            return paid

        for i, fee in enumerate(fees):
            due = fee.amount + fee.shortfall
            paid = step(f"fee:{fee.what}", due, [(fee.payee, 1)])
            fees[i] = fee.replace(shortfall=due - paid, paid=fee.paid + paid)

        def interest(name: str) -> None:
            t = tranches[name]
            due = interest_fen(t.outstanding, t.coupon_bps, days, t.day_count) + t.interest_shortfall
            paid = step(f"{name}_interest", due, self.holdings(ctx, deal, name))
            tranches[name] = t.replace(interest_shortfall=due - paid, interest_paid=t.interest_paid + paid)

        def principal(name: str) -> None:
            t = tranches[name]
            paid = step(f"{name}_principal", t.outstanding, self.holdings(ctx, deal, name))
            tranches[name] = t.replace(outstanding=t.outstanding - paid, principal_paid=t.principal_paid + paid)

        if deal.status == "accelerated":
            interest("senior")
            principal("senior")
            interest("mezzanine")
            principal("mezzanine")
        else:
            interest("senior")
            interest("mezzanine")
            if deal.status == "revolving":
                performing = self.performing(self.assets(ctx, deal.id), today(ctx))
                need = max(0, sum(t.outstanding for t in tranches.values()) - performing - purchase_cash)
                retained = step("purchases", need, None)  # kept in the SPV's account to buy receivables
                purchase_cash += retained
            else:
                principal("senior")
                principal("mezzanine")
        sub = tranches["subordinated"]
        paid = step("subordinated", None, self.holdings(ctx, deal, "subordinated"))
        to_principal = min(paid, sub.outstanding)
        tranches["subordinated"] = sub.replace(
            outstanding=sub.outstanding - to_principal,
            principal_paid=sub.principal_paid + to_principal,
            residual_paid=sub.residual_paid + paid - to_principal,
        )
        paid_out = available - retained  # the subordinated step took whatever was left: remaining is 0
        held = sum(unclaimed.values()) - sum(deal.unclaimed.values())
        if remaining != 0 or sum(entry["paid"] for entry in steps) != available:
            # every fen of the waterfall is in its receipt, or the commit stops
            raise InvariantViolation(Code.INTERNAL, f"deal {deal.id}: the waterfall does not add up to {available}")
        number = deal.next_payment + 1
        receipt = {
            "deal": deal.id,
            "number": number,
            "date": iso_of(pay_day),
            "status": deal.status,
            "days": days,
            "available": available,
            "paid_out": paid_out,
            "retained": retained,
            "unclaimed": held,
            "missing": missing,
            "steps": steps,
        }
        deal = deal.replace(
            tranches=[tranches[n] for n in TRANCHES],
            fees=fees,
            collections=0,
            purchase_cash=purchase_cash,
            distributed=deal.distributed + paid_out,
            unclaimed=dict(sorted(unclaimed.items())),
            missing=deal.missing + missing,
            next_payment=number,
            period_start_day=pay_day,
        )
        self.save(ctx, deal)
        ctx.put(f"pay/{deal.id}/{number:03d}", receipt)
        # the event names each step's figures; who was paid what is in the stored receipt (pay/<deal>/<n>) and
        # the transaction's result: with abs_holders_max holders the payees could outgrow event_bytes_max
        summary = [{k: v for k, v in entry.items() if k not in ("payees", "unclaimed")} for entry in steps]
        ctx.emit("payment", {**receipt, "steps": summary})
        for t in deal.tranches:
            if t.outstanding and pay_day >= t.legal_maturity_day:
                ctx.emit("legal_maturity_missed", {"deal": deal.id, "tranche": t.name, "outstanding": t.outstanding})
        return receipt

    # ---- read models ------------------------------------------------------------------------------------
    @query
    def deal(self, ctx: Context, args: DealArgs) -> dict[str, Any]:
        """A deal's terms, status, accounts, triggers and its pool's figures now."""
        deal = self.load(ctx, args.deal)
        return {**deal.to_value(), "figures": self.figures(ctx, deal)}

    @query
    def pool(self, ctx: Context, args: DealArgs) -> dict[str, Any]:
        """The pool's receivables (at most ``abs_pool_assets_max``), each with its state now."""
        deal = self.load(ctx, args.deal)
        now = today(ctx)
        out = []
        for a in self.assets(ctx, deal.id):
            if a.defaulted_day is not None:
                state = "defaulted"
            elif a.maturity_day > now:
                state = "performing"
            else:
                state = "delinquent" if self.voucher(ctx, a.id).status in UNPAID else "settled"
            out.append({**a.to_value(), "state": state})
        return {"deal": deal.id, "assets": out}

    @query
    def investor_report(self, ctx: Context, args: DealArgs) -> dict[str, Any]:
        """The investor report: pool composition by obligor, delinquencies and defaults, tranche balances
        with their ratings, triggers and the payment dates done."""
        deal = self.load(ctx, args.deal)
        assets = self.assets(ctx, deal.id)
        fig = self.figures(ctx, deal, assets)
        in_pool = fig["in_pool"]
        by_obligor = [
            {"obligor": o, "face": f, "share_bps": f * 10_000 // in_pool if in_pool else 0}
            for o, f in sorted(deal.obligors.items())
        ]
        now = today(ctx)
        delinquencies = [
            {"voucher": a.id, "obligor": a.obligor, "face": a.face, "days_past_due": now - a.maturity_day}
            for a in assets
            if a.defaulted_day is None and a.maturity_day <= now and self.voucher(ctx, a.id).status in UNPAID
        ]
        tranches = []
        for t in deal.tranches:
            ratings = [r.to_value() for _, r in ctx.range(f"rt/{deal.id}/{t.name}/", RatingRecord)]
            tranches.append(
                {
                    **t.to_value(),
                    "factor_bps": t.outstanding * 10_000 // t.face,
                    "ratings": ratings,
                }
            )
        payments = [v for _, v in ctx.range(f"pay/{deal.id}/")]
        purchased = deal.purchased_face
        return {
            "deal": deal.id,
            "status": deal.status,
            "as_of": iso_of(now),
            "last_evaluated": iso_of(deal.last_eval_day) if deal.launch_day is not None else None,
            "figures": fig,
            "by_obligor": by_obligor,
            "delinquencies": delinquencies,
            "cumulative_default_bps": deal.defaulted_face * 10_000 // purchased if purchased else 0,
            "tranches": tranches,
            "triggers": [t.to_value() for t in deal.triggers],
            "accounts": {"purchase_cash": deal.purchase_cash, "collections": deal.collections},
            "payments": payments,
        }

    @query
    def holders(self, ctx: Context, args: HoldersArgs) -> dict[str, Any]:
        """Who holds a tranche's notes, and how much face each (at most ``abs_holders_max``)."""
        deal = self.load(ctx, args.deal)
        return {"deal": deal.id, "tranche": args.tranche, "holders": dict(self.holdings(ctx, deal, args.tranche))}

    @query
    def deals(self, ctx: Context, args: ListArgs) -> dict[str, Any]:
        """Every deal (id and SPV), a page at a time."""
        entries, cursor = DEALS.page(ctx, after=args.after, limit=args.limit)
        return {"deals": [{"deal": d, "spv": spv} for d, spv in entries], "next": cursor}
