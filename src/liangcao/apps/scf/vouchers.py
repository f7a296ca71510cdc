"""``scf.vouchers``: digital receivable vouchers (like ICBC e信, 云信, Ping An SAS).

Theory of operation
-------------------
A core enterprise issues a voucher to a supplier against registered invoices (face <= their total),
payable on a maturity date. The receiver accepts it. A holder may split a voucher into children (the
parent is retired; children inherit root, issuer and maturity; children plus remainder equal the parent),
offer a voucher to another organisation (which accepts or rejects), or ask a bank to finance it; when the
bank accepts, in one transaction it pays the discounted amount in its settlement token and becomes the
holder. A voucher is financed at most once (its children inherit the mark). At maturity the issuer settles
the root in pages: each settlement transaction pays up to ``settle_page_max`` unpaid leaves exactly their
face, and the root records how much is paid, so settlement always completes however many parts holders
made. After maturity unpaid leaves can be marked overdue (and still be settled). A regulator may freeze and
unfreeze a voucher; a frozen leaf is skipped by settlement (it waits, the others are paid).

What one holder can make is bounded: a root may have at most ``voucher_leaves_max`` leaves, a budget that
each split shares out among the children by face (each child at least one), so a holder can only split
what its own share allows and never uses up another holder's; and a part is at most ``split_depth_max``
splits below its root.

============  =====================================  =======================================
state         how it is entered                      what may happen next
============  =====================================  =======================================
active        issue (offered), accept, split child   split, offer, finance, settle, overdue
retired       split (the parent)                     nothing
overdue       mark_overdue after maturity            settle
settled       settle                                 nothing
============  =====================================  =======================================

Invariant: the faces of a root's leaves (vouchers not retired) always sum to the root's face, and the
root's ``paid`` is the sum of its settled leaves.

A voucher is a :class:`Voucher` record at ``v/<id>``. Read-model indexes (``liangcao.contracts.index``),
kept in step with every write (``save``) so that no read scans all vouchers: ``ih/<holder>/<id>`` and
``il/<root>/<id>`` (unpaid leaves), ``ib/<bank>/<id>`` (financed parts), ``ir/<issuer>/<root>`` and
``im/<day>/<root>`` (roots with something unpaid, by maturity day), and the running totals
``t/held/<org>``, ``t/book/<bank>``, ``t/owed/<bank>``. Every list read is paged (``after`` cursor and
``limit``), so no holder can make a read fail for others by making many parts.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from liangcao.apps.scf.common import (
    IsoDate,
    OrgArgs,
    PageLimit,
    ScfCode,
    VoucherId,
    day_of,
    discount_fen,
    iso_of,
    new_id,
    org_type,
    require_bank,
    today,
)
from liangcao.apps.scf.invoices import InvoiceKey
from liangcao.codes import Code
from liangcao.contracts.base import Args, Context, Contract, Record, internal, query, transaction
from liangcao.contracts.index import Cursor, Index, sync
from liangcao.domain import Money, OrgId
from liangcao.limits import (
    invoices_per_instrument_max,
    rate_bps_max,
    scf_page_max,
    settle_page_max,
    split_children_max,
    split_depth_max,
    tree_nodes_max,
    voucher_leaves_max,
)

MATURITIES_PAGE = 20  # roots in one maturities page unless asked otherwise (each reads its unpaid leaves)
Status = Literal["active", "retired", "overdue", "settled"]


class Financing(Record):
    """A pending request to a bank to finance the voucher, at ``rate_bps`` a year."""

    bank: str
    rate_bps: int


class Voucher(Record):
    """``scf.vouchers/v/<id>``: a root voucher or one of its parts."""

    id: str
    root: str
    parent: str | None
    children: list[str]  # the parts it was split into (then it is retired)
    issuer: str
    holder: str
    offer_to: str | None
    face: int
    maturity_day: int
    maturity: str
    settlement_bank: str
    invoices: list[str]
    status: Status
    financing: Financing | None
    financed_by: str | None  # the bank that financed it (or an ancestor): at most once
    frozen: bool
    pool: str | None
    issued_day: int
    budget: int  # how many leaves this part may still become (its share of voucher_leaves_max)
    paid: int | msgspec.UnsetType = msgspec.UNSET  # only a root keeps what is paid; parts have no such field

    @property
    def paid_fen(self) -> int:
        """What settlement has paid of a root (0 for a part, which keeps no count)."""
        return self.paid if isinstance(self.paid, int) else 0


class IssueArgs(Args):
    to: OrgId
    face: Money
    maturity: IsoDate
    invoices: Annotated[list[InvoiceKey], msgspec.Meta(min_length=1, max_length=invoices_per_instrument_max)]
    settlement_bank: OrgId


class IdArgs(Args):
    voucher: VoucherId


class SplitArgs(Args):
    voucher: VoucherId
    amounts: Annotated[list[Money], msgspec.Meta(min_length=1, max_length=split_children_max)]


class OfferArgs(Args):
    voucher: VoucherId
    to: OrgId


class PrivateFinanceArgs(Args):
    voucher: VoucherId
    bank: OrgId
    face: Money


class FinanceArgs(Args):
    voucher: VoucherId
    bank: OrgId
    rate_bps: Annotated[int, msgspec.Meta(ge=0, le=rate_bps_max)]


class PageArgs(Args):
    """A root voucher and how many of its leaves this transaction handles (settle, mark_overdue)."""

    voucher: VoucherId
    limit: Annotated[int, msgspec.Meta(ge=1, le=settle_page_max)] = settle_page_max


class UntilArgs(Args):
    until: IsoDate
    after: Cursor = ""
    limit: PageLimit = MATURITIES_PAGE


class ListArgs(Args):
    after: Cursor = ""
    limit: PageLimit = scf_page_max


class PoolAssignArgs(Args):
    voucher: VoucherId
    pool: str
    seller: OrgId
    factor: OrgId


class PoolReleaseArgs(Args):
    voucher: VoucherId
    pool: str
    seller: OrgId


#: The contracts that hold vouchers in pools: a pooled voucher cannot be offered, split, financed or pooled again
#: (``movable``) until its pool releases it. Receivable ABS pools lock their vouchers the same way.
POOL_CALLERS = ("scf.factoring", "abs.deal")


def read_voucher(ctx: Context, vid: str) -> Voucher:
    """A voucher read from another contract (a pool holding it): NOT_FOUND if there is none."""
    v = ctx.read(f"scf.vouchers/v/{vid}", Voucher)
    if v is None:
        ctx.fail(Code.NOT_FOUND, f"no voucher {vid}")
    return v


PRIVATE_CALLERS = ("scf.private",)
UNPAID = ("active", "overdue")
HELD = Index("ih")  # ih/<holder>/<id> -> face: unpaid parts by holder
LEAVES = Index("il")  # il/<root>/<id> -> {holder, face}: a root's unpaid leaves
BOOK = Index("ib")  # ib/<bank>/<id> -> face: parts a bank financed (not retired)
ROOTS = Index("ir")  # ir/<issuer>/<root> -> face
MATURING = Index("im")  # im/<day, 7 digits>/<root> -> outstanding: roots with something unpaid


def share_budget(budget: int, faces: list[int]) -> list[int]:
    """A parent's leaf budget shared among its children: one each, the rest by face (rounded down), and
    what rounding leaves over to the largest child. The shares always sum to ``budget``."""
    spare = budget - len(faces)
    total = sum(faces)
    shares = [1 + spare * face // total for face in faces]
    shares[faces.index(max(faces))] += budget - sum(shares)
    return shares


class Vouchers(Contract):
    name = "scf.vouchers"

    # ---- helpers ----------------------------------------------------------------------------------------
    @staticmethod
    def load(ctx: Context, vid: str) -> Voucher:
        return ctx.must_load(Voucher, f"v/{vid}", f"no voucher {vid}")

    @staticmethod
    def index_entries(v: Voucher) -> dict[str, Any]:
        """The read-model index entries (key -> value) a voucher record implies (see the module docstring)."""
        out: dict[str, Any] = {}
        if v.status in UNPAID:
            out[HELD.key(v.holder, v.id)] = v.face
            out[LEAVES.key(v.root, v.id)] = {"holder": v.holder, "face": v.face}
        if v.financed_by is not None and v.status != "retired":
            out[BOOK.key(v.financed_by, v.id)] = v.face
        if v.id == v.root:
            out[ROOTS.key(v.issuer, v.id)] = v.face
            if v.paid_fen < v.face:
                out[MATURING.key(f"{v.maturity_day:07d}", v.id)] = v.face - v.paid_fen
        return out

    @classmethod
    def index_keys(cls, v: Voucher) -> set[str]:
        return set(cls.index_entries(v))

    @staticmethod
    def totals(v: Voucher) -> dict[str, int]:
        """What a voucher adds to the running totals: held by its holder, financed and owed to its bank."""
        out: dict[str, int] = {}
        if v.status in UNPAID:
            out[f"t/held/{v.holder}"] = v.face
        if v.financed_by is not None and v.status != "retired":
            out[f"t/book/{v.financed_by}"] = v.face
            if v.status != "settled":
                out[f"t/owed/{v.financed_by}"] = v.face
        return out

    def save(self, ctx: Context, new: Voucher, old: Voucher | None = None) -> None:
        """Write a voucher and keep its indexes and totals in step, so read models never scan every voucher."""
        ctx.save(f"v/{new.id}", new)
        sync(ctx, self.index_entries(old) if old is not None else {}, self.index_entries(new))
        delta = dict(self.totals(new))
        for key, amount in (self.totals(old) if old is not None else {}).items():
            delta[key] = delta.get(key, 0) - amount
        for key in sorted(delta):
            if delta[key]:
                total = int(ctx.get(key) or 0) + delta[key]
                if total:
                    ctx.put(key, total)
                else:
                    ctx.delete(key)

    def unpaid_leaves(self, ctx: Context, root: str) -> list[str]:
        """Ids of a root's unpaid leaves, in key order (at most ``voucher_leaves_max``: the split budget)."""
        return [vid for vid, _ in LEAVES.items(ctx, root)]

    def held(self, ctx: Context, vid: str) -> Voucher:
        """A voucher its holder acts on: signed by the holder, and movable."""
        v = self.load(ctx, vid)
        ctx.require_party(v.holder, code=ScfCode.NOT_PARTY)
        self.movable(ctx, v)
        return v

    @staticmethod
    def movable(ctx: Context, v: Voucher) -> None:
        """The checks every holder action shares: active, no pending offer or financing, not frozen or pooled."""
        if v.frozen:
            ctx.fail(ScfCode.FROZEN, f"voucher {v.id} is frozen")
        if v.pool is not None:
            ctx.fail(ScfCode.IN_POOL, f"voucher {v.id} is assigned to factoring pool {v.pool}")
        if v.status != "active" or v.offer_to is not None or v.financing is not None:
            ctx.fail(ScfCode.NOT_ACTIVE, f"voucher {v.id} is {v.status} or has a pending offer or financing")
        if today(ctx) >= v.maturity_day:
            ctx.fail(ScfCode.MATURED, f"voucher {v.id} has matured")

    # ---- issue and move ---------------------------------------------------------------------------------
    @transaction
    def issue(self, ctx: Context, args: IssueArgs) -> dict[str, Any]:
        issuer = ctx.require_party(org_type="core_enterprise").org
        org_type(ctx, args.to)
        require_bank(ctx, args.settlement_bank)
        maturity = day_of(args.maturity)
        if maturity <= today(ctx):
            ctx.fail(ScfCode.BAD_DATE, "maturity must be after today")
        vid = new_id(ctx, "V", "v/{}")
        bound = ctx.invoke(
            "scf.invoices", "bind", {"keys": args.invoices, "seller": args.to, "buyer": issuer, "instrument": vid}
        )
        if args.face > bound["total"]:
            ctx.fail(ScfCode.FACE_EXCEEDS_INVOICES, f"face {args.face} exceeds the invoices' total {bound['total']}")
        v = Voucher(
            id=vid,
            root=vid,
            parent=None,
            children=[],
            issuer=issuer,
            holder=issuer,
            offer_to=args.to,
            face=args.face,
            maturity_day=maturity,
            maturity=iso_of(maturity),
            settlement_bank=args.settlement_bank,
            invoices=args.invoices,
            status="active",
            financing=None,
            financed_by=None,
            frozen=False,
            pool=None,
            issued_day=today(ctx),
            budget=voucher_leaves_max,
            paid=0,
        )
        self.save(ctx, v)
        ctx.emit("issued", {"voucher": vid, "issuer": issuer, "to": args.to, "face": args.face, "maturity": v.maturity})
        return {"voucher": vid}

    @transaction
    def offer(self, ctx: Context, args: OfferArgs) -> None:
        """The holder offers the whole voucher to another organisation, which must accept it."""
        v = self.held(ctx, args.voucher)
        org_type(ctx, args.to)
        if args.to == v.holder:
            ctx.fail(Code.INVALID_ARGUMENT, "cannot offer a voucher to its holder")
        self.save(ctx, v.replace(offer_to=args.to), v)
        ctx.emit("offered", {"voucher": v.id, "from": v.holder, "to": args.to, "face": v.face})

    @transaction
    def accept(self, ctx: Context, args: IdArgs) -> None:
        v = self.load(ctx, args.voucher)
        if v.offer_to is None:
            ctx.fail(ScfCode.NO_OFFER, f"voucher {v.id} is not offered to anyone")
        ctx.require_party(v.offer_to, code=ScfCode.NOT_PARTY)
        if v.frozen:
            ctx.fail(ScfCode.FROZEN, f"voucher {v.id} is frozen")
        self.save(ctx, v.replace(holder=v.offer_to, offer_to=None), v)
        ctx.emit("accepted", {"voucher": v.id, "holder": v.offer_to, "face": v.face})

    @transaction
    def reject(self, ctx: Context, args: IdArgs) -> None:
        v = self.load(ctx, args.voucher)
        if v.offer_to is None:
            ctx.fail(ScfCode.NO_OFFER, f"voucher {v.id} is not offered to anyone")
        ctx.require_party(v.offer_to, code=ScfCode.NOT_PARTY)
        self.save(ctx, v.replace(offer_to=None), v)
        ctx.emit("rejected", {"voucher": v.id, "by": v.offer_to})

    @transaction
    def split(self, ctx: Context, args: SplitArgs) -> dict[str, Any]:
        """Children of the given amounts plus, if anything is left, a remainder child; all kept by the holder."""
        v = self.held(ctx, args.voucher)
        total = sum(args.amounts)
        if total > v.face:
            ctx.fail(ScfCode.BAD_SPLIT, f"amounts sum to {total}, more than the face {v.face}")
        amounts = [*args.amounts, v.face - total] if total < v.face else list(args.amounts)
        if len(amounts) < 2:
            ctx.fail(ScfCode.BAD_SPLIT, "a split makes at least two children")
        if len(amounts) > split_children_max:
            ctx.fail(ScfCode.BAD_SPLIT, f"more than split_children_max={split_children_max} children")
        if v.id.count(".") >= split_depth_max:
            ctx.fail(Code.LIMIT_EXCEEDED, f"voucher {v.id} is split_depth_max={split_depth_max} splits deep")
        if len(amounts) > v.budget:
            ctx.fail(
                Code.LIMIT_EXCEEDED,
                f"voucher {v.id} may become at most {v.budget} parts "
                f"(its share by face of voucher_leaves_max={voucher_leaves_max})",
            )
        children = []
        for i, (amount, budget) in enumerate(zip(amounts, share_budget(v.budget, amounts), strict=True), start=1):
            cid = f"{v.id}.{i}"
            if ctx.exists(f"v/{cid}"):
                ctx.fail(Code.ALREADY_EXISTS, f"{cid} already exists")
            # a part inherits everything but its place and face; only the root keeps what is paid
            child = v.replace(
                id=cid, parent=v.id, children=[], face=amount, offer_to=None, budget=budget, paid=msgspec.UNSET
            )
            self.save(ctx, child)
            children.append(cid)
        self.save(ctx, v.replace(status="retired", children=children), v)
        ctx.emit("split", {"voucher": v.id, "children": children, "amounts": amounts})
        return {"children": children}

    # ---- financing --------------------------------------------------------------------------------------
    @transaction
    def request_financing(self, ctx: Context, args: FinanceArgs) -> None:
        v = self.held(ctx, args.voucher)
        if v.financed_by is not None:
            ctx.fail(ScfCode.ALREADY_FINANCED, f"voucher {v.id} was already financed by {v.financed_by}")
        require_bank(ctx, args.bank)
        self.save(ctx, v.replace(financing=Financing(bank=args.bank, rate_bps=args.rate_bps)), v)
        ctx.emit(
            "financing_requested",
            {"voucher": v.id, "holder": v.holder, "bank": args.bank, "rate_bps": args.rate_bps},
        )

    @transaction
    def accept_financing(self, ctx: Context, args: IdArgs) -> dict[str, int]:
        """The bank pays the discounted amount and becomes the holder, atomically."""
        v = self.load(ctx, args.voucher)
        req = v.financing
        if req is None:
            ctx.fail(ScfCode.NO_OFFER, f"no financing was requested for voucher {v.id}")
        bank = req.bank
        ctx.require_party(bank, code=ScfCode.NOT_PARTY)
        if v.frozen:
            ctx.fail(ScfCode.FROZEN, f"voucher {v.id} is frozen")
        if v.financed_by is not None:
            ctx.fail(ScfCode.ALREADY_FINANCED, f"voucher {v.id} was already financed")
        days = v.maturity_day - today(ctx)
        if days <= 0:
            ctx.fail(ScfCode.MATURED, f"voucher {v.id} has matured")
        discount = discount_fen(v.face, req.rate_bps, days)
        payout = v.face - discount
        ctx.invoke("scf.tokens", "pay", {"bank": bank, "payer": bank, "payee": v.holder, "amount": payout})
        self.save(ctx, v.replace(holder=bank, financing=None, financed_by=bank), v)
        ctx.emit(
            "financed",
            {
                "voucher": v.id,
                "seller": v.holder,
                "bank": bank,
                "face": v.face,
                "days": days,
                "rate_bps": req.rate_bps,
                "discount": discount,
                "paid": payout,
            },
        )
        return {"paid": payout, "discount": discount, "days": days}

    @internal(callers=PRIVATE_CALLERS)
    @transaction
    def finance_private(self, ctx: Context, args: PrivateFinanceArgs) -> dict[str, Any]:
        """Internal (``scf.private``): the bank becomes the holder on private terms; no token moves here
        (the price would reveal the rate), the terms and their settlement live in a private collection."""
        v = self.held(ctx, args.voucher)
        if v.financed_by is not None:
            ctx.fail(ScfCode.ALREADY_FINANCED, f"voucher {v.id} was already financed by {v.financed_by}")
        require_bank(ctx, args.bank)
        ctx.require_party(args.bank, code=ScfCode.NOT_PARTY)
        if v.face != args.face:
            ctx.fail(Code.INVALID_ARGUMENT, f"voucher {v.id} has face {v.face}, not {args.face}")
        if v.maturity_day - today(ctx) <= 0:
            ctx.fail(ScfCode.MATURED, f"voucher {v.id} has matured")
        self.save(ctx, v.replace(holder=args.bank, financing=None, financed_by=args.bank), v)
        ctx.emit("financed_privately", {"voucher": v.id, "seller": v.holder, "bank": args.bank, "face": v.face})
        return {"seller": v.holder, "maturity_day": v.maturity_day}

    @transaction
    def cancel_financing(self, ctx: Context, args: IdArgs) -> None:
        v = self.load(ctx, args.voucher)
        if v.financing is None:
            ctx.fail(ScfCode.NO_OFFER, f"no financing was requested for voucher {v.id}")
        if ctx.party(v.holder) is None:  # the holder withdraws its request, or the bank declines it
            ctx.require_party(v.financing.bank, code=ScfCode.NOT_PARTY)
        self.save(ctx, v.replace(financing=None), v)

    # ---- factoring pools (called by scf.factoring inside its own transactions) ---------------------------
    @internal(callers=POOL_CALLERS)
    @transaction
    def pool_assign(self, ctx: Context, args: PoolAssignArgs) -> dict[str, Any]:
        """Internal: assign a voucher the seller holds to a factor's pool; the factor becomes the holder."""
        v = self.load(ctx, args.voucher)
        if v.pool is not None:
            ctx.fail(ScfCode.IN_POOL, f"voucher {v.id} is already in factoring pool {v.pool}")
        if v.holder != args.seller:
            ctx.fail(ScfCode.NOT_ELIGIBLE, f"voucher {v.id} is held by {v.holder}, not {args.seller}")
        self.movable(ctx, v)
        if v.financed_by is not None:
            ctx.fail(ScfCode.ALREADY_FINANCED, f"voucher {v.id} was already financed by {v.financed_by}")
        self.save(ctx, v.replace(holder=args.factor, pool=args.pool), v)
        ctx.emit("pooled", {"voucher": v.id, "pool": args.pool, "seller": args.seller, "factor": args.factor})
        return {
            "face": v.face,
            "maturity_day": v.maturity_day,
            "settlement_bank": v.settlement_bank,
            "issuer": v.issuer,
        }

    @internal(callers=POOL_CALLERS)
    @transaction
    def pool_release(self, ctx: Context, args: PoolReleaseArgs) -> None:
        """Internal: a voucher leaves its pool and goes back to the seller."""
        v = self.load(ctx, args.voucher)
        if v.pool != args.pool:
            ctx.fail(ScfCode.NOT_ELIGIBLE, f"voucher {v.id} is not in pool {args.pool}")
        if v.status != "active" or v.frozen or v.offer_to is not None or v.financing is not None:
            ctx.fail(ScfCode.NOT_ELIGIBLE, f"voucher {v.id} cannot leave the pool while {v.status}")
        self.save(ctx, v.replace(holder=args.seller, pool=None), v)
        ctx.emit("unpooled", {"voucher": v.id, "pool": args.pool, "seller": args.seller})

    # ---- maturity ---------------------------------------------------------------------------------------
    def matured_root(self, ctx: Context, vid: str) -> Voucher:
        root = self.load(ctx, vid)
        if root.root != root.id:
            ctx.fail(Code.INVALID_ARGUMENT, f"name the root voucher {root.root}, not a part of it")
        return root

    @transaction
    def settle(self, ctx: Context, args: PageArgs) -> dict[str, Any]:
        """At maturity the issuer pays unpaid leaves exactly their face: up to ``limit`` a transaction.

        Resumable: each page pays the next unpaid leaves (a paid leaf is never paid again) and adds to the
        root's ``paid``; ``remaining`` says what is still unpaid and ``done`` when nothing is. A frozen
        leaf is skipped until a regulator unfreezes it; the others are paid."""
        root = self.matured_root(ctx, args.voucher)
        ctx.require_party(root.issuer, code=ScfCode.NOT_PARTY)
        if today(ctx) < root.maturity_day:
            ctx.fail(ScfCode.NOT_MATURE, f"voucher {root.id} matures on {root.maturity}")
        payments: list[dict[str, Any]] = []
        frozen = []
        for lid in self.unpaid_leaves(ctx, root.id):
            if len(payments) == args.limit:
                break
            leaf = self.load(ctx, lid)
            if leaf.frozen:
                frozen.append(lid)
                continue
            holder = leaf.holder
            if holder != root.issuer:
                ctx.invoke(
                    "scf.tokens",
                    "pay",
                    {"bank": root.settlement_bank, "payer": root.issuer, "payee": holder, "amount": leaf.face},
                )
            self.save(ctx, leaf.replace(status="settled", offer_to=None, financing=None), leaf)
            payment = {"voucher": lid, "holder": holder, "amount": leaf.face}
            ctx.emit("paid", {"root": root.id, **payment})
            payments.append(payment)
        if not payments:
            if frozen:
                ctx.fail(ScfCode.FROZEN, f"every unpaid leaf of {root.id} is frozen: unfreeze before settling")
            ctx.fail(ScfCode.NOT_ACTIVE, f"voucher {root.id} is already settled")
        amount = sum(p["amount"] for p in payments)
        root = self.load(ctx, root.id)  # the root itself may have been the leaf just paid
        paid = root.paid_fen + amount
        self.save(ctx, root.replace(paid=paid), root)
        remaining = root.face - paid
        summary = {"voucher": root.id, "leaves": len(payments), "amount": amount, "paid": paid}
        ctx.emit("settled", {**summary, "remaining": remaining, "done": remaining == 0})
        return {"payments": payments, "paid": paid, "remaining": remaining, "done": remaining == 0, "frozen": frozen}

    @transaction
    def mark_overdue(self, ctx: Context, args: PageArgs) -> dict[str, Any]:
        """After maturity anyone may mark unpaid active leaves overdue, up to ``limit`` a transaction."""
        root = self.matured_root(ctx, args.voucher)
        ctx.signer()
        if today(ctx) <= root.maturity_day:
            ctx.fail(ScfCode.NOT_MATURE, f"voucher {root.id} is not past its maturity {root.maturity}")
        marked: list[str] = []
        more = False
        for lid in self.unpaid_leaves(ctx, root.id):
            leaf = self.load(ctx, lid)
            if leaf.status != "active":
                continue
            if len(marked) == args.limit:
                more = True
                break
            self.save(ctx, leaf.replace(status="overdue"), leaf)
            ctx.emit("overdue", {"root": root.id, "voucher": lid, "holder": leaf.holder, "face": leaf.face})
            marked.append(lid)
        if not marked:
            ctx.fail(ScfCode.NOT_ACTIVE, "no active leaf to mark overdue")
        return {"overdue": marked, "more": more}

    @transaction
    def freeze(self, ctx: Context, args: IdArgs) -> None:
        ctx.require_party(org_type="regulator")
        v = self.load(ctx, args.voucher)
        if v.status in ("retired", "settled"):
            ctx.fail(ScfCode.NOT_ACTIVE, f"voucher {v.id} is {v.status}")
        self.save(ctx, v.replace(frozen=True), v)
        ctx.emit("frozen", {"voucher": v.id})

    @transaction
    def unfreeze(self, ctx: Context, args: IdArgs) -> None:
        ctx.require_party(org_type="regulator")
        v = self.load(ctx, args.voucher)
        self.save(ctx, v.replace(frozen=False), v)
        ctx.emit("unfrozen", {"voucher": v.id})

    # ---- read models ------------------------------------------------------------------------------------
    @query
    def voucher(self, ctx: Context, args: IdArgs) -> Voucher:
        return self.load(ctx, args.voucher)

    @query
    def tree(self, ctx: Context, args: IdArgs) -> dict[str, Any]:
        """The whole split tree from the root, with holders, faces and financing at every node, and at the
        root what is paid and what remains (at most 2 x voucher_leaves_max - 1 nodes)."""
        root = self.load(ctx, self.load(ctx, args.voucher).root)
        seen = 0

        def node(v: Voucher) -> dict[str, Any]:
            nonlocal seen
            seen += 1
            if seen > tree_nodes_max:
                ctx.fail(Code.LIMIT_EXCEEDED, f"voucher tree larger than tree_nodes_max={tree_nodes_max}")
            return {
                "id": v.id,
                "holder": v.holder,
                "face": v.face,
                "status": v.status,
                "financed_by": v.financed_by,
                "frozen": v.frozen,
                "offer_to": v.offer_to,
                "maturity": v.maturity,
                "children": [node(self.load(ctx, c)) for c in v.children],
            }

        return {**node(root), "paid": root.paid_fen, "remaining": root.face - root.paid_fen}

    @query
    def portfolio(self, ctx: Context, args: OrgArgs) -> dict[str, Any]:
        """Vouchers an organisation holds now (active or overdue), a page at a time; ``total`` is all of them."""
        entries, cursor = HELD.page(ctx, args.org, after=args.after, limit=args.limit)
        held = [self.load(ctx, vid) for vid, _ in entries]
        total = int(ctx.get(f"t/held/{args.org}") or 0)
        return {"org": args.org, "vouchers": held, "total": total, "next": cursor}

    @query
    def financed_book(self, ctx: Context, args: OrgArgs) -> dict[str, Any]:
        """Voucher parts a bank financed (not retired), a page at a time; totals over the whole book."""
        entries, cursor = BOOK.page(ctx, args.org, after=args.after, limit=args.limit)
        book = [self.load(ctx, vid) for vid, _ in entries]
        total = int(ctx.get(f"t/book/{args.org}") or 0)
        outstanding = int(ctx.get(f"t/owed/{args.org}") or 0)
        return {"bank": args.org, "vouchers": book, "total": total, "outstanding": outstanding, "next": cursor}

    @query
    def maturities(self, ctx: Context, args: UntilArgs) -> dict[str, Any]:
        """Roots with unpaid parts maturing on or before ``until``, by maturity, a page at a time: what each
        issuer still owes, and to whom."""
        until = day_of(args.until)
        roots: list[dict[str, Any]] = []
        cursor = None
        for entry, outstanding in MATURING.scan(ctx, after=args.after):
            day, rid = entry.split("/")
            if int(day) > until:
                break  # the index is ordered by day
            if len(roots) == args.limit:
                cursor = f"{roots[-1]['maturity_day']:07d}/{roots[-1]['id']}"
                break
            root = self.load(ctx, rid)
            holders: dict[str, int] = {}
            for _, part in LEAVES.items(ctx, rid):
                holders[part["holder"]] = holders.get(part["holder"], 0) + part["face"]
            roots.append(
                {
                    "id": rid,
                    "issuer": root.issuer,
                    "maturity": root.maturity,
                    "maturity_day": root.maturity_day,
                    "outstanding": outstanding,
                    "holders": dict(sorted(holders.items())),
                }
            )
        return {"until": args.until, "roots": roots, "next": cursor}

    @query
    def roots(self, ctx: Context, args: OrgArgs) -> dict[str, Any]:
        """Root vouchers an issuer has issued, a page at a time."""
        entries, cursor = ROOTS.page(ctx, args.org, after=args.after, limit=args.limit)
        return {"roots": [vid for vid, _ in entries], "next": cursor}

    @query
    def all_roots(self, ctx: Context, args: ListArgs) -> dict[str, Any]:
        """Every root voucher, by issuer, a page at a time."""
        entries, cursor = ROOTS.page(ctx, after=args.after, limit=args.limit)
        return {"roots": [key.rsplit("/", 1)[1] for key, _ in entries], "next": cursor}
