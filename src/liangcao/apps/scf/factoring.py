"""``scf.factoring``: factoring pools (账速融 style), a revolving advance against a pool of receivables.

Theory of operation
-------------------
A factor (a bank) and a seller open a pool together, fixing an advance rate (basis points) and a credit
line (fen). The pool's settlement token is the factor's own: every advance, repayment and collection moves
in it, never in a token someone else picks. The seller assigns receivables to it: vouchers it holds that
settle in that token (the factor becomes their holder, so at maturity the issuer pays the factor) and
registered invoices their buyer has confirmed (bound to the pool, so they can never back anything else;
the asset falls due on the date the buyer confirmed, and the buyer pays the factor through
``collect_invoice``). At any time the seller may draw an advance, paid at once in the factor's token, as
long as the amount advanced stays within ``min(credit line, advance_rate x eligible balance)``. An asset is *eligible* while it is in
the pool, not yet due and not frozen: maturing assets thereby leave the eligible balance on their own, and
the seller replaces them by assigning new ones. ``sweep`` collects the vouchers that were settled (up to
``sweep_page_max`` a transaction; sweep again for the rest): each collection first pays down the advance, and the factor passes the surplus to the seller in the same
transaction. A voucher may be withdrawn (replaced) while it is not due, if what remains still covers the
advance. A receivable is in at most one pool, ever: a voucher carries its pool, an invoice its binding.

============  ====================================  ===============================================
action        signed by                              rule
============  ====================================  ===============================================
open          seller and factor (a bank)            advance rate <= 100 %, credit line > 0
assign        seller                                seller holds the voucher (active, not financed,
                                                    not frozen, not due, settles in the factor's
                                                    token) or sold the invoice, which its buyer
                                                    confirmed (the due date is the buyer's)
draw          seller                                advanced + amount <= capacity
repay         seller                                amount <= advanced
withdraw      seller                                a not-due voucher; capacity still >= advanced
collect_inv.  the invoice's buyer                   pays the invoice amount to the factor, in the
                                                    factor's token
sweep         anyone                                settled vouchers are collected
close         seller or factor                      no new assets or draws; collection goes on
============  ====================================  ===============================================

Invariants: ``advanced`` never exceeds the credit line; it exceeds ``advance_rate x eligible`` only after
assets matured (never because of a draw or a withdrawal); no voucher or invoice is in two pools.

Private terms (``open_private`` / ``draw_private``)
---------------------------------------------------
A pool may instead keep its terms between the seller and the factor: ``{seller, factor, advance_rate_bps,
credit_line, fee_bps}`` go to the private collection ``terms`` (members: seller, factor and, by the
collection's stated policy, the consortium's regulators); the pool's public record shows ``terms`` (the
commitment's key, ``scf.factoring/~pvt/terms/<key>``) and ``advance_rate_bps = credit_line = 0``, so the
public ``draw`` refuses it. The draw rule needs the private rate and line, which a non-member peer never
sees: ``draw_private`` carries the figures the rule was checked on (``advanced``, ``eligible``) and the
endorsements of the seller's and the factor's peers, which ran :func:`check_pool_terms` (``advanced +
amount <= min(credit_line, advance_rate x eligible)``) before ordering. Every peer still checks what is
public: the endorsements, the commitment named is the pool's, and that the pool has now at least the
endorsed eligible balance and at most the endorsed advance (the rule is monotone in both, so it still
holds). Advances, repayments and collections move in tokens as before: ``advanced`` and the assets'
faces stay public (they are the pool's obligations), so the ratio of an advance to the eligible balance
shows a lower bound of the rate; the rate itself, the line and the fees (charged off the token ledger, as
part of the private terms) are never on the ledger. With an advance outstanding, a voucher leaves a private
pool through ``withdraw_private``, endorsed the same way (the rule with the eligible balance without it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

import msgspec

from liangcao.apps.scf.common import (
    OrgArgs,
    PageLimit,
    ScfCode,
    VoucherId,
    iso_of,
    new_id,
    require_bank,
    today,
)
from liangcao.apps.scf.invoices import Invoice, InvoiceKey
from liangcao.apps.scf.vouchers import read_voucher
from liangcao.codes import Code
from liangcao.contracts.base import Args, Context, Contract, Record, query, transaction
from liangcao.contracts.index import Index
from liangcao.contracts.private import (
    Collection,
    Endorsements,
    PrivacyCode,
    PrivateRef,
    put_private,
    require_endorsements,
)
from liangcao.domain import Money, OrgId
from liangcao.limits import (
    money_fen_max,
    pool_assets_max,
    pool_assign_max,
    pool_tenor_days_max,
    rate_bps_max,
    sweep_page_max,
)

PoolId = Annotated[str, msgspec.Meta(pattern=r"^P[0-9a-f]{64}$")]
POOLS_PAGE = 20  # pools in one page of ``pools`` unless asked otherwise (each reads all its assets)
BY = Index("by")  # by/<org>/<pool> -> "seller" or "factor": the pools an organisation is party to
POOL_TERMS_FIELDS = frozenset({"seller", "factor", "advance_rate_bps", "credit_line", "fee_bps"})


def check_pool_terms(value: Any, args: Mapping[str, Any]) -> str:
    """ "" if ``value`` are valid private pool terms for the public ``args``, else why not.

    For ``open_private`` (args name seller and factor): the terms are theirs and within bounds. For
    ``draw_private`` (args carry ``amount``, ``advanced``, ``eligible``): also the draw rule,
    ``advanced + amount <= min(credit_line, advance_rate_bps x eligible / 10,000)`` (rounded down); for
    ``withdraw_private`` the same with no amount and the eligible balance without the voucher."""
    if not isinstance(value, dict) or set(value) != POOL_TERMS_FIELDS:
        return f"pool terms must be an object with exactly {sorted(POOL_TERMS_FIELDS)}"
    nums = ("advance_rate_bps", "credit_line", "fee_bps")
    if any(type(value[k]) is not int for k in nums):
        return "advance_rate_bps, credit_line and fee_bps are integers (basis points, fen)"
    rate, line = value["advance_rate_bps"], value["credit_line"]
    if not 0 < rate <= 10_000 or not 0 < line <= money_fen_max or not 0 <= value["fee_bps"] <= rate_bps_max:
        return f"advance_rate_bps must be 1..10000, credit_line 1..{money_fen_max} fen, fee_bps 0..{rate_bps_max}"
    if "advanced" not in args:  # the pool's opening: the terms are the signers'
        if value["seller"] != args.get("seller") or value["factor"] != args.get("factor"):
            return "the terms name another seller or factor than the transaction"
        return ""
    # a draw (amount), or a withdrawal (amount 0; eligible is the balance without the voucher)
    amount, advanced, eligible = args.get("amount", 0), args.get("advanced"), args.get("eligible")
    if any(type(x) is not int or x < 0 for x in (amount, advanced, eligible)):
        return "amount, advanced and eligible are integers >= 0 (fen)"
    assert isinstance(amount, int) and isinstance(advanced, int) and isinstance(eligible, int)  # for mypy
    capacity = min(line, eligible * rate // 10_000)
    if advanced + amount > capacity:
        return f"an advance of {amount} on {advanced} advanced exceeds the private capacity for {eligible} eligible"
    return ""


POOL_TERMS = Collection("terms", regulator_reads=True, check=check_pool_terms, endorse=True)


def pool_terms(seller: str, factor: str, advance_rate_bps: int, credit_line: int, fee_bps: int = 0) -> dict[str, Any]:
    """Private pool terms (what a client puts in the collection ``terms``)."""
    return {"seller": seller, "factor": factor, "advance_rate_bps": advance_rate_bps,
            "credit_line": credit_line, "fee_bps": fee_bps}  # fmt: skip


class Pool(Record):
    """``scf.factoring/p/<id>``: a pool's terms and running figures (its assets are ``a/<pool>/<asset>``)."""

    id: str
    seller: str
    factor: str
    token: str  # the factor's own token: every advance, repayment and collection moves in it
    advance_rate_bps: int
    credit_line: int
    advanced: int
    collected: int
    assets_in: int
    status: Literal["open", "closed"]
    opened: str
    # a pool on private terms: the key of its commitment ``~pvt/terms/<key>`` (rate and line are then 0)
    terms: str | msgspec.UnsetType = msgspec.UNSET


class Asset(Record, kw_only=True):  # kw_only spelled out for mypy: a required field follows an optional one
    """``scf.factoring/a/<pool>/<id>``: a voucher or a confirmed invoice in a pool, until collected."""

    id: str
    kind: Literal["voucher", "invoice"]
    face: int
    maturity_day: int
    buyer: str | msgspec.UnsetType = msgspec.UNSET  # an invoice's buyer, who pays it (a voucher has none)
    maturity: str


class OpenArgs(Args):
    seller: OrgId
    factor: OrgId
    advance_rate_bps: Annotated[int, msgspec.Meta(gt=0, le=10_000)]
    credit_line: Money


class AssignArgs(Args):
    pool: PoolId
    vouchers: Annotated[list[VoucherId], msgspec.Meta(max_length=pool_assign_max)] = msgspec.field(default_factory=list)
    invoices: Annotated[list[InvoiceKey], msgspec.Meta(max_length=pool_assign_max)] = msgspec.field(
        default_factory=list
    )


class AmountArgs(Args):
    pool: PoolId
    amount: Money


class WithdrawArgs(Args):
    pool: PoolId
    voucher: VoucherId


class CollectInvoiceArgs(Args):
    pool: PoolId
    invoice: InvoiceKey


class PoolArgs(Args):
    pool: PoolId


class PoolsArgs(OrgArgs):
    limit: PageLimit = POOLS_PAGE


class OpenPrivateArgs(Args):
    seller: OrgId
    factor: OrgId
    private: PrivateRef
    endorsements: Endorsements


class WithdrawPrivateArgs(Args):
    pool: PoolId
    voucher: VoucherId
    advanced: Annotated[int, msgspec.Meta(ge=0, le=money_fen_max)]  # the figures the endorsers checked,
    eligible: Annotated[int, msgspec.Meta(ge=0, le=money_fen_max * pool_assets_max)]  # without the voucher
    private: PrivateRef
    endorsements: Endorsements


class DrawPrivateArgs(Args):
    pool: PoolId
    amount: Money
    advanced: Annotated[int, msgspec.Meta(ge=0, le=money_fen_max)]  # the figures the endorsers checked
    eligible: Annotated[int, msgspec.Meta(ge=0, le=money_fen_max * pool_assets_max)]
    private: PrivateRef
    endorsements: Endorsements


class Factoring(Contract):
    name = "scf.factoring"
    collections: ClassVar[dict[str, Collection]] = {"terms": POOL_TERMS}

    # ---- helpers ----------------------------------------------------------------------------------------
    @staticmethod
    def load(ctx: Context, pid: str) -> Pool:
        return ctx.must_load(Pool, f"p/{pid}", f"no factoring pool {pid}")

    @staticmethod
    def save(ctx: Context, pool: Pool) -> None:
        ctx.save(f"p/{pool.id}", pool)

    @staticmethod
    def assets(ctx: Context, pid: str) -> list[Asset]:
        return [a for _, a in ctx.range(f"a/{pid}/", Asset)]

    voucher = staticmethod(read_voucher)

    @classmethod
    def eligible(cls, ctx: Context, asset: Asset) -> bool:
        if asset.maturity_day <= today(ctx):
            return False
        if asset.kind == "voucher":
            v = cls.voucher(ctx, asset.id)
            return v.status == "active" and not v.frozen
        return True

    def position(self, ctx: Context, pool: Pool) -> dict[str, Any]:
        """The pool's figures now: assets, eligible balance, capacity and headroom for a draw."""
        assets = self.assets(ctx, pool.id)
        eligible = sum(a.face for a in assets if self.eligible(ctx, a))
        # Rounded down: the advance a rate allows is never more than the rate says.
        capacity = min(pool.credit_line, eligible * pool.advance_rate_bps // 10_000)
        private = isinstance(pool.terms, str)  # its capacity is the members' to compute
        return {
            **pool.to_value(),
            "assets": assets,
            "in_pool": sum(a.face for a in assets),
            "eligible": eligible,
            "capacity": None if private else capacity,
            "headroom": None if private else max(0, capacity - pool.advanced),
        }

    @staticmethod
    def pay(ctx: Context, bank: str, payer: str, payee: str, amount: int) -> None:
        if amount > 0:
            ctx.invoke("scf.tokens", "pay", {"bank": bank, "payer": payer, "payee": payee, "amount": amount})

    def seller_of(self, ctx: Context, pid: str, *, open_only: bool = False) -> Pool:
        pool = self.load(ctx, pid)
        ctx.require_party(pool.seller, code=ScfCode.NOT_PARTY)
        if open_only and pool.status != "open":
            ctx.fail(ScfCode.NOT_ACTIVE, f"pool {pid} is closed")
        return pool

    def collect(self, ctx: Context, pool: Pool, asset: Asset) -> Pool:
        """An asset was paid to the factor in its own token: pay down the advance, pass the rest on."""
        to_advance = min(pool.advanced, asset.face)
        surplus = asset.face - to_advance
        self.pay(ctx, pool.factor, pool.factor, pool.seller, surplus)
        ctx.delete(f"a/{pool.id}/{asset.id}")
        pool = pool.replace(
            advanced=pool.advanced - to_advance,
            collected=pool.collected + asset.face,
            assets_in=pool.assets_in - 1,
        )
        ctx.emit(
            "collected",
            {"pool": pool.id, "asset": asset.id, "face": asset.face, "repaid": to_advance, "surplus": surplus},
        )
        return pool

    # ---- transactions -----------------------------------------------------------------------------------
    @transaction
    def open(self, ctx: Context, args: OpenArgs) -> dict[str, str]:
        require_bank(ctx, args.factor)
        ctx.require_party(args.factor, code=ScfCode.NOT_PARTY)
        ctx.require_party(args.seller, code=ScfCode.NOT_PARTY)
        if args.seller == args.factor:
            ctx.fail(Code.INVALID_ARGUMENT, "the seller cannot be its own factor")
        pid = new_id(ctx, "P", "p/{}")
        pool = Pool(
            id=pid,
            seller=args.seller,
            factor=args.factor,
            token=args.factor,
            advance_rate_bps=args.advance_rate_bps,
            credit_line=args.credit_line,
            advanced=0,
            collected=0,
            assets_in=0,
            status="open",
            opened=iso_of(today(ctx)),
        )
        self.save(ctx, pool)
        BY.add(ctx, args.seller, pid, value="seller")
        BY.add(ctx, args.factor, pid, value="factor")
        ctx.emit(
            "opened",
            {
                "id": pid,
                "seller": args.seller,
                "factor": args.factor,
                "advance_rate_bps": args.advance_rate_bps,
                "credit_line": args.credit_line,
            },
        )
        return {"pool": pid}

    @transaction
    def assign(self, ctx: Context, args: AssignArgs) -> dict[str, Any]:
        pool = self.seller_of(ctx, args.pool, open_only=True)
        if not args.vouchers and not args.invoices:
            ctx.fail(Code.INVALID_ARGUMENT, "assign at least one voucher or invoice")
        if pool.assets_in + len(args.vouchers) + len(args.invoices) > pool_assets_max:
            ctx.fail(Code.LIMIT_EXCEEDED, f"a pool holds at most pool_assets_max={pool_assets_max} assets")
        now = today(ctx)
        added: list[Asset] = []
        for vid in args.vouchers:
            v = ctx.invoke(
                "scf.vouchers",
                "pool_assign",
                {"voucher": vid, "pool": pool.id, "seller": pool.seller, "factor": pool.factor},
            )
            if v["settlement_bank"] != pool.factor:
                ctx.fail(
                    ScfCode.NOT_ELIGIBLE,
                    f"voucher {vid} settles in {v['settlement_bank']}'s token, not the pool's ({pool.factor})",
                )
            day = v["maturity_day"]
            added.append(Asset(id=vid, kind="voucher", face=v["face"], maturity_day=day, maturity=iso_of(day)))
        for key in args.invoices:
            record = ctx.read(f"scf.invoices/inv/{key}", Invoice)
            if record is None:
                ctx.fail(Code.NOT_FOUND, f"invoice {key} is not registered")
            confirmed = record.confirmation
            if confirmed is None:
                ctx.fail(ScfCode.NOT_CONFIRMED, f"invoice {key} has not been confirmed by its buyer {record.buyer}")
            due = confirmed.due_day
            if not now < due <= now + pool_tenor_days_max:
                ctx.fail(
                    ScfCode.NOT_ELIGIBLE,
                    f"invoice {key} is due {iso_of(due)} (as its buyer confirmed): not after today or more than "
                    f"{pool_tenor_days_max} days ahead",
                )
            ctx.invoke(
                "scf.invoices",
                "bind",
                {"keys": [key], "seller": pool.seller, "buyer": record.buyer, "instrument": pool.id},
            )
            added.append(
                Asset(
                    id=key,
                    kind="invoice",
                    face=record.amount,
                    maturity_day=due,
                    buyer=record.buyer,
                    maturity=iso_of(due),
                )
            )
        for asset in added:
            ctx.save(f"a/{pool.id}/{asset.id}", asset)
        self.save(ctx, pool.replace(assets_in=pool.assets_in + len(added)))
        ctx.emit("assigned", {"pool": pool.id, "assets": [a.id for a in added]})
        return {"assigned": [a.id for a in added], "face": sum(a.face for a in added)}

    @transaction
    def draw(self, ctx: Context, args: AmountArgs) -> dict[str, int]:
        """The seller draws an advance within the pool's headroom; the factor pays in its own token."""
        pool = self.seller_of(ctx, args.pool, open_only=True)
        if isinstance(pool.terms, str):
            ctx.fail(ScfCode.OVER_ADVANCE, f"pool {pool.id} is on private terms: draw with draw_private")
        pos = self.position(ctx, pool)
        if pool.advanced + args.amount > pos["capacity"]:
            ctx.fail(
                ScfCode.OVER_ADVANCE,
                f"advance of {args.amount} exceeds the headroom {pos['headroom']} "
                f"(capacity {pos['capacity']}, advanced {pool.advanced})",
            )
        self.pay(ctx, pool.factor, pool.factor, pool.seller, args.amount)
        self.save(ctx, pool.replace(advanced=pool.advanced + args.amount))
        ctx.emit("advanced", {"pool": pool.id, "amount": args.amount})
        return {"advanced": pool.advanced + args.amount, "headroom": pos["headroom"] - args.amount}

    @transaction
    def repay(self, ctx: Context, args: AmountArgs) -> dict[str, int]:
        pool = self.seller_of(ctx, args.pool)
        if args.amount > pool.advanced:
            ctx.fail(Code.INVALID_ARGUMENT, f"repayment {args.amount} is more than the {pool.advanced} advanced")
        self.pay(ctx, pool.factor, pool.seller, pool.factor, args.amount)
        self.save(ctx, pool.replace(advanced=pool.advanced - args.amount))
        ctx.emit("repaid", {"pool": pool.id, "amount": args.amount})
        return {"advanced": pool.advanced - args.amount}

    @transaction
    def withdraw(self, ctx: Context, args: WithdrawArgs) -> dict[str, int]:
        """The seller takes a voucher back (to replace it, or to use it elsewhere) if the rest still covers."""
        pool = self.seller_of(ctx, args.pool)
        asset = ctx.must_load(Asset, f"a/{pool.id}/{args.voucher}", f"{args.voucher} is not in the pool")
        if not self.eligible(ctx, asset):
            ctx.fail(
                ScfCode.NOT_ELIGIBLE, f"voucher {args.voucher} is due, frozen or settled: it stays until collected"
            )
        if isinstance(pool.terms, str) and pool.advanced > 0:
            ctx.fail(
                ScfCode.OVER_ADVANCE,
                f"pool {pool.id} is on private terms: with an advance, withdraw with withdraw_private",
            )
        ctx.delete(f"a/{pool.id}/{args.voucher}")
        pool = pool.replace(assets_in=pool.assets_in - 1)
        pos = self.position(ctx, pool)
        if pool.advanced > 0 and pool.advanced > pos["capacity"]:
            ctx.fail(
                ScfCode.OVER_ADVANCE,
                f"without {args.voucher} the pool covers {pos['capacity']}, less than the {pool.advanced} advanced",
            )
        ctx.invoke("scf.vouchers", "pool_release", {"voucher": args.voucher, "pool": pool.id, "seller": pool.seller})
        self.save(ctx, pool)
        ctx.emit("withdrawn", {"pool": pool.id, "voucher": args.voucher})
        return {"capacity": pos["capacity"]}

    @transaction
    def collect_invoice(self, ctx: Context, args: CollectInvoiceArgs) -> dict[str, int]:
        """The invoice's buyer pays it to the factor, in the pool's token (the factor's); the pool collects it."""
        pool = self.load(ctx, args.pool)
        asset = ctx.must_load(Asset, f"a/{pool.id}/{args.invoice}", f"{args.invoice} is not in the pool")
        if not isinstance(asset.buyer, str):  # never: collect_invoice names an invoice, which has its buyer
            ctx.fail(ScfCode.NOT_ELIGIBLE, f"{args.invoice} is not an invoice")
        ctx.require_party(asset.buyer, code=ScfCode.NOT_PARTY)
        self.pay(ctx, pool.factor, asset.buyer, pool.factor, asset.face)
        pool = self.collect(ctx, pool, asset)
        self.save(ctx, pool)
        return {"advanced": pool.advanced, "collected": asset.face}

    @transaction
    def sweep(self, ctx: Context, args: PoolArgs) -> dict[str, Any]:
        """Collect vouchers in the pool that their issuer has settled, up to ``sweep_page_max`` (anyone may ask;
        ``more`` says whether another sweep has settled vouchers left to collect)."""
        ctx.signer()
        pool = self.load(ctx, args.pool)
        swept: list[str] = []
        more = False
        for asset in self.assets(ctx, pool.id):
            if asset.kind != "voucher":
                continue
            v = self.voucher(ctx, asset.id)
            if v.status == "settled":
                if len(swept) == sweep_page_max:
                    more = True
                    break
                if v.settlement_bank != pool.factor:  # never admitted by assign; refuse rather than guess
                    ctx.fail(ScfCode.NOT_ELIGIBLE, f"voucher {v.id} settled in another token than the pool's")
                pool = self.collect(ctx, pool, asset)
                swept.append(asset.id)
        if not swept:
            ctx.fail(ScfCode.NOT_ACTIVE, f"nothing in pool {pool.id} has been settled")
        self.save(ctx, pool)
        return {"collected": swept, "advanced": pool.advanced, "more": more}

    @transaction
    def close(self, ctx: Context, args: PoolArgs) -> None:
        """No more assets or draws; what is in the pool is still collected and the advance repaid."""
        pool = self.load(ctx, args.pool)
        if ctx.party(pool.seller) is None:  # the seller or the factor closes it
            ctx.require_party(pool.factor, code=ScfCode.NOT_PARTY)
        if pool.status != "open":
            ctx.fail(ScfCode.NOT_ACTIVE, f"pool {pool.id} is already closed")
        self.save(ctx, pool.replace(status="closed"))
        ctx.emit("closed", {"pool": pool.id})

    @transaction
    def open_private(self, ctx: Context, args: OpenPrivateArgs) -> dict[str, Any]:
        """Signed by the seller and the factor (a bank), endorsed by their peers: a pool whose advance rate,
        credit line and fees are private terms (collection ``terms``); the public pool shows the commitment."""
        require_bank(ctx, args.factor)
        ctx.require_party(args.factor, code=ScfCode.NOT_PARTY)
        ctx.require_party(args.seller, code=ScfCode.NOT_PARTY)
        if args.seller == args.factor:
            ctx.fail(Code.INVALID_ARGUMENT, "the seller cannot be its own factor")
        if args.private.collection != POOL_TERMS.name:
            ctx.fail(PrivacyCode.UNKNOWN_COLLECTION, "private pool terms go to collection 'terms'")
        if ctx.exists(f"~pvt/terms/{args.private.key}"):
            ctx.fail(Code.ALREADY_EXISTS, f"pool terms {args.private.key} are already committed")
        require_endorsements(ctx, "open_private", args, args.endorsements, [args.seller, args.factor])
        pid = new_id(ctx, "P", "p/{}")
        pool = Pool(
            id=pid,
            seller=args.seller,
            factor=args.factor,
            token=args.factor,
            advance_rate_bps=0,
            credit_line=0,
            advanced=0,
            collected=0,
            assets_in=0,
            status="open",
            opened=iso_of(today(ctx)),
            terms=args.private.key,
        )
        self.save(ctx, pool)
        BY.add(ctx, args.seller, pid, value="seller")
        BY.add(ctx, args.factor, pid, value="factor")
        record = put_private(ctx, POOL_TERMS, args.private, [args.seller, args.factor])
        ctx.emit("opened", {"id": pid, "seller": args.seller, "factor": args.factor, "terms": record["hash"]})
        return {"pool": pid, "hash": record["hash"], "members": record["members"]}

    @transaction
    def draw_private(self, ctx: Context, args: DrawPrivateArgs) -> dict[str, int]:
        """The seller draws on a pool on private terms; the seller's and the factor's peers endorsed that the
        advance fits the private capacity for the figures ``advanced`` and ``eligible``."""
        pool = self.seller_of(ctx, args.pool, open_only=True)
        if not isinstance(pool.terms, str):
            ctx.fail(Code.INVALID_ARGUMENT, f"pool {pool.id} is on public terms: draw with draw")
        self.endorsed_terms(ctx, pool, "draw_private", args, args.private, args.endorsements)
        self.still_covered(ctx, pool, args.advanced, args.eligible)
        self.pay(ctx, pool.factor, pool.factor, pool.seller, args.amount)
        self.save(ctx, pool.replace(advanced=pool.advanced + args.amount))
        ctx.emit("advanced", {"pool": pool.id, "amount": args.amount})
        return {"advanced": pool.advanced + args.amount}

    @transaction
    def withdraw_private(self, ctx: Context, args: WithdrawPrivateArgs) -> dict[str, int]:
        """The seller takes a voucher back from a pool on private terms while an advance is outstanding; the
        seller's and the factor's peers endorsed that the rest still covers it (``eligible`` without it)."""
        pool = self.seller_of(ctx, args.pool)
        if not isinstance(pool.terms, str):
            ctx.fail(Code.INVALID_ARGUMENT, f"pool {pool.id} is on public terms: withdraw with withdraw")
        self.endorsed_terms(ctx, pool, "withdraw_private", args, args.private, args.endorsements)
        asset = ctx.must_load(Asset, f"a/{pool.id}/{args.voucher}", f"{args.voucher} is not in the pool")
        if not self.eligible(ctx, asset):
            ctx.fail(
                ScfCode.NOT_ELIGIBLE, f"voucher {args.voucher} is due, frozen or settled: it stays until collected"
            )
        ctx.delete(f"a/{pool.id}/{args.voucher}")
        pool = pool.replace(assets_in=pool.assets_in - 1)
        self.still_covered(ctx, pool, args.advanced, args.eligible)
        ctx.invoke("scf.vouchers", "pool_release", {"voucher": args.voucher, "pool": pool.id, "seller": pool.seller})
        self.save(ctx, pool)
        ctx.emit("withdrawn", {"pool": pool.id, "voucher": args.voucher})
        return {"eligible": int(self.position(ctx, pool)["eligible"])}

    @staticmethod
    def endorsed_terms(
        ctx: Context, pool: Pool, method: str, args: Args, ref: PrivateRef, endorsements: Endorsements
    ) -> None:
        """Stop unless ``ref`` is the pool's own terms and both members' peers endorsed ``args``."""
        committed = ctx.get(f"~pvt/terms/{pool.terms}")
        if not isinstance(committed, dict) or (ref.collection, ref.key, ref.hash) != (
            POOL_TERMS.name, pool.terms, committed.get("hash")
        ):  # fmt: skip
            ctx.fail(PrivacyCode.NO_COMMITMENT, f"the transaction names other terms than pool {pool.id}'s commitment")
        require_endorsements(ctx, method, args, endorsements, [pool.seller, pool.factor])

    def still_covered(self, ctx: Context, pool: Pool, advanced: int, eligible: int) -> None:
        """The endorsers checked the rule on ``advanced`` and ``eligible``; it is monotone in both, so it still
        holds with at least that eligible balance and at most that advance now."""
        now = self.position(ctx, pool)["eligible"]
        if now < eligible or pool.advanced > advanced:
            ctx.fail(
                ScfCode.OVER_ADVANCE,
                f"the pool changed since the endorsement (eligible {now} < {eligible} or advanced "
                f"{pool.advanced} > {advanced}): endorse again",
            )

    # ---- read models ------------------------------------------------------------------------------------
    @query
    def pool(self, ctx: Context, args: PoolArgs) -> dict[str, Any]:
        return self.position(ctx, self.load(ctx, args.pool))

    @query
    def pools(self, ctx: Context, args: PoolsArgs) -> dict[str, Any]:
        """Pools an organisation is the seller or the factor of, with their figures now, a page at a time."""
        entries, cursor = BY.page(ctx, args.org, after=args.after, limit=args.limit)
        return {"pools": [self.position(ctx, self.load(ctx, pid)) for pid, _ in entries], "next": cursor}
