"""``scf.vouchers``: digital receivable vouchers (like ICBC e信, 云信, Ping An SAS).

Theory of operation
-------------------
A core enterprise issues a voucher to a supplier against registered invoices (face <= their total),
payable on a maturity date. The receiver accepts it. A holder may split a voucher into children (the
parent is retired; children inherit root, issuer and maturity; children plus remainder equal the parent),
offer a voucher to another organisation (which accepts or rejects), or ask a bank to finance it; when the
bank accepts, in one transaction it pays the discounted amount in its settlement token and becomes the
holder. A voucher is financed at most once (its children inherit the mark). At maturity the issuer settles
the root: every current leaf holder is paid exactly its face in one transaction. After maturity unpaid
leaves can be marked overdue (and still be settled). A regulator may freeze and unfreeze a voucher.

============  =====================================  =======================================
state         how it is entered                      what may happen next
============  =====================================  =======================================
active        issue (offered), accept, split child   split, offer, finance, settle, overdue
retired       split (the parent)                     nothing
overdue       mark_overdue after maturity            settle
settled       settle                                 nothing
============  =====================================  =======================================

Invariant: the faces of a root's leaves (vouchers not retired) always sum to the root's face.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from liangcao.apps.scf.common import (
    Fen,
    IsoDate,
    OrgArgs,
    OrgId,
    ScfCode,
    VoucherId,
    acting_for,
    day_of,
    discount_fen,
    iso_of,
    org_type,
    require_bank,
    today,
)
from liangcao.apps.scf.invoices import InvoiceKey
from liangcao.codes import Code
from liangcao.contracts.base import Args, Context, Contract, NoArgs, internal, query, transaction
from liangcao.limits import invoices_per_instrument_max, rate_bps_max, split_children_max, tree_nodes_max


class IssueArgs(Args):
    to: OrgId
    face: Fen
    maturity: IsoDate
    invoices: Annotated[list[InvoiceKey], msgspec.Meta(min_length=1, max_length=invoices_per_instrument_max)]
    settlement_bank: OrgId


class IdArgs(Args):
    voucher: VoucherId


class SplitArgs(Args):
    voucher: VoucherId
    amounts: Annotated[list[Fen], msgspec.Meta(min_length=1, max_length=split_children_max)]


class OfferArgs(Args):
    voucher: VoucherId
    to: OrgId


class FinanceArgs(Args):
    voucher: VoucherId
    bank: OrgId
    rate_bps: Annotated[int, msgspec.Meta(ge=0, le=rate_bps_max)]


class UntilArgs(Args):
    until: IsoDate


class PoolAssignArgs(Args):
    voucher: VoucherId
    pool: str
    seller: OrgId
    factor: OrgId


class PoolReleaseArgs(Args):
    voucher: VoucherId
    pool: str
    seller: OrgId


POOL_CALLERS = ("scf.factoring",)


class Vouchers(Contract):
    name = "scf.vouchers"

    # ---- helpers ----------------------------------------------------------------------------------------
    @staticmethod
    def load(ctx: Context, vid: str) -> dict[str, Any]:
        v: dict[str, Any] = ctx.must_get(f"v/{vid}", f"no voucher {vid}")
        return v

    @staticmethod
    def index_keys(v: dict[str, Any]) -> set[str]:
        """The read-model index entries a voucher record implies (see the module docstring)."""
        keys = set()
        if v["status"] in ("active", "overdue"):
            keys.add(f"ih/{v['holder']}/{v['id']}")
            keys.add(f"im/{v['maturity_day']:07d}/{v['id']}")
        if v["financed_by"] is not None and v["status"] != "retired":
            keys.add(f"ib/{v['financed_by']}/{v['id']}")
        if v["id"] == v["root"]:
            keys.add(f"ir/{v['issuer']}/{v['id']}")
        return keys

    def save(self, ctx: Context, new: dict[str, Any], old: dict[str, Any] | None = None) -> None:
        """Write a voucher and keep its indexes in step, so read models never scan every voucher."""
        ctx.put(f"v/{new['id']}", new)
        before = self.index_keys(old) if old is not None else set()
        after = self.index_keys(new)
        for key in sorted(before - after):
            ctx.delete(key)
        for key in sorted(after - before):
            ctx.put(key, new["face"])

    def indexed(self, ctx: Context, prefix: str) -> list[dict[str, Any]]:
        return [self.load(ctx, key.rsplit("/", 1)[1]) for key, _ in ctx.range(prefix)]

    def held(self, ctx: Context, vid: str) -> dict[str, Any]:
        """A voucher its holder acts on: signed by the holder, and movable."""
        v = self.load(ctx, vid)
        acting_for(ctx, v["holder"])
        self.movable(ctx, v)
        return v

    @staticmethod
    def movable(ctx: Context, v: dict[str, Any]) -> None:
        """The checks every holder action shares: active, no pending offer or financing, not frozen or pooled."""
        if v["frozen"]:
            ctx.fail(ScfCode.FROZEN, f"voucher {v['id']} is frozen")
        if v["pool"] is not None:
            ctx.fail(ScfCode.IN_POOL, f"voucher {v['id']} is assigned to factoring pool {v['pool']}")
        if v["status"] != "active" or v["offer_to"] is not None or v["financing"] is not None:
            ctx.fail(ScfCode.NOT_ACTIVE, f"voucher {v['id']} is {v['status']} or has a pending offer or financing")
        if today(ctx) >= v["maturity_day"]:
            ctx.fail(ScfCode.MATURED, f"voucher {v['id']} has matured")

    def leaves(self, ctx: Context, root: dict[str, Any]) -> list[dict[str, Any]]:
        out, stack, seen = [], [root["id"]], 0
        while stack:
            v = self.load(ctx, stack.pop())
            seen += 1
            if seen > tree_nodes_max:
                ctx.fail(Code.LIMIT_EXCEEDED, f"voucher tree larger than tree_nodes_max={tree_nodes_max}")
            if v["status"] == "retired":
                stack.extend(reversed(v["children"]))
            else:
                out.append(v)
        return out

    # ---- issue and move ---------------------------------------------------------------------------------
    @transaction
    def issue(self, ctx: Context, args: IssueArgs) -> dict[str, Any]:
        issuer = ctx.require_org_type("core_enterprise").org
        acting_for(ctx, issuer)
        org_type(ctx, args.to)
        require_bank(ctx, args.settlement_bank)
        maturity = day_of(args.maturity)
        if maturity <= today(ctx):
            ctx.fail(ScfCode.BAD_DATE, "maturity must be after today")
        vid = "V" + ctx.tx_id[:20]
        bound = ctx.invoke(
            "scf.invoices", "bind", {"keys": args.invoices, "seller": args.to, "buyer": issuer, "instrument": vid}
        )
        if args.face > bound["total"]:
            ctx.fail(ScfCode.FACE_EXCEEDS_INVOICES, f"face {args.face} exceeds the invoices' total {bound['total']}")
        v = {
            "id": vid,
            "root": vid,
            "parent": None,
            "children": [],
            "issuer": issuer,
            "holder": issuer,
            "offer_to": args.to,
            "face": args.face,
            "maturity_day": maturity,
            "maturity": iso_of(maturity),
            "settlement_bank": args.settlement_bank,
            "invoices": args.invoices,
            "status": "active",
            "financing": None,
            "financed_by": None,
            "frozen": False,
            "pool": None,
            "issued_day": today(ctx),
        }
        self.save(ctx, v)
        ctx.emit(
            "issued", {"voucher": vid, "issuer": issuer, "to": args.to, "face": args.face, "maturity": v["maturity"]}
        )
        return {"voucher": vid}

    @transaction
    def offer(self, ctx: Context, args: OfferArgs) -> None:
        """The holder offers the whole voucher to another organisation, which must accept it."""
        v = self.held(ctx, args.voucher)
        org_type(ctx, args.to)
        if args.to == v["holder"]:
            ctx.fail(Code.INVALID_ARGUMENT, "cannot offer a voucher to its holder")
        self.save(ctx, {**v, "offer_to": args.to}, v)
        ctx.emit("offered", {"voucher": v["id"], "from": v["holder"], "to": args.to, "face": v["face"]})

    @transaction
    def accept(self, ctx: Context, args: IdArgs) -> None:
        v = self.load(ctx, args.voucher)
        if v["offer_to"] is None:
            ctx.fail(ScfCode.NO_OFFER, f"voucher {v['id']} is not offered to anyone")
        acting_for(ctx, v["offer_to"])
        if v["frozen"]:
            ctx.fail(ScfCode.FROZEN, f"voucher {v['id']} is frozen")
        self.save(ctx, {**v, "holder": v["offer_to"], "offer_to": None}, v)
        ctx.emit("accepted", {"voucher": v["id"], "holder": v["offer_to"], "face": v["face"]})

    @transaction
    def reject(self, ctx: Context, args: IdArgs) -> None:
        v = self.load(ctx, args.voucher)
        if v["offer_to"] is None:
            ctx.fail(ScfCode.NO_OFFER, f"voucher {v['id']} is not offered to anyone")
        acting_for(ctx, v["offer_to"])
        self.save(ctx, {**v, "offer_to": None}, v)
        ctx.emit("rejected", {"voucher": v["id"], "by": v["offer_to"]})

    @transaction
    def split(self, ctx: Context, args: SplitArgs) -> dict[str, Any]:
        """Children of the given amounts plus, if anything is left, a remainder child; all kept by the holder."""
        v = self.held(ctx, args.voucher)
        total = sum(args.amounts)
        if total > v["face"]:
            ctx.fail(ScfCode.BAD_SPLIT, f"amounts sum to {total}, more than the face {v['face']}")
        amounts = [*args.amounts, v["face"] - total] if total < v["face"] else list(args.amounts)
        if len(amounts) < 2:
            ctx.fail(ScfCode.BAD_SPLIT, "a split makes at least two children")
        if len(amounts) > split_children_max:
            ctx.fail(ScfCode.BAD_SPLIT, f"more than split_children_max={split_children_max} children")
        children = []
        for i, amount in enumerate(amounts, start=1):
            cid = f"{v['id']}.{i}"
            child = {**v, "id": cid, "parent": v["id"], "children": [], "face": amount, "offer_to": None}
            self.save(ctx, child)
            children.append(cid)
        self.save(ctx, {**v, "status": "retired", "children": children}, v)
        ctx.emit("split", {"voucher": v["id"], "children": children, "amounts": amounts})
        return {"children": children}

    # ---- financing --------------------------------------------------------------------------------------
    @transaction
    def request_financing(self, ctx: Context, args: FinanceArgs) -> None:
        v = self.held(ctx, args.voucher)
        if v["financed_by"] is not None:
            ctx.fail(ScfCode.ALREADY_FINANCED, f"voucher {v['id']} was already financed by {v['financed_by']}")
        require_bank(ctx, args.bank)
        self.save(ctx, {**v, "financing": {"bank": args.bank, "rate_bps": args.rate_bps}}, v)
        ctx.emit(
            "financing_requested",
            {"voucher": v["id"], "holder": v["holder"], "bank": args.bank, "rate_bps": args.rate_bps},
        )

    @transaction
    def accept_financing(self, ctx: Context, args: IdArgs) -> dict[str, int]:
        """The bank pays the discounted amount and becomes the holder, atomically."""
        v = self.load(ctx, args.voucher)
        req = v["financing"]
        if req is None:
            ctx.fail(ScfCode.NO_OFFER, f"no financing was requested for voucher {v['id']}")
        bank = req["bank"]
        acting_for(ctx, bank)
        if v["frozen"]:
            ctx.fail(ScfCode.FROZEN, f"voucher {v['id']} is frozen")
        if v["financed_by"] is not None:
            ctx.fail(ScfCode.ALREADY_FINANCED, f"voucher {v['id']} was already financed")
        days = v["maturity_day"] - today(ctx)
        if days <= 0:
            ctx.fail(ScfCode.MATURED, f"voucher {v['id']} has matured")
        discount = discount_fen(v["face"], req["rate_bps"], days)
        payout = v["face"] - discount
        ctx.invoke("scf.tokens", "pay", {"bank": bank, "payer": bank, "payee": v["holder"], "amount": payout})
        self.save(ctx, {**v, "holder": bank, "financing": None, "financed_by": bank}, v)
        ctx.emit(
            "financed",
            {
                "voucher": v["id"],
                "seller": v["holder"],
                "bank": bank,
                "face": v["face"],
                "days": days,
                "rate_bps": req["rate_bps"],
                "discount": discount,
                "paid": payout,
            },
        )
        return {"paid": payout, "discount": discount, "days": days}

    @transaction
    def cancel_financing(self, ctx: Context, args: IdArgs) -> None:
        v = self.load(ctx, args.voucher)
        if v["financing"] is None:
            ctx.fail(ScfCode.NO_OFFER, f"no financing was requested for voucher {v['id']}")
        if ctx.signer_of_org(v["holder"], "admin", "member") is None:
            acting_for(ctx, v["financing"]["bank"])
        self.save(ctx, {**v, "financing": None}, v)

    # ---- factoring pools (called by scf.factoring inside its own transactions) ---------------------------
    @internal
    @transaction
    def pool_assign(self, ctx: Context, args: PoolAssignArgs) -> dict[str, Any]:
        """Internal: assign a voucher the seller holds to a factor's pool; the factor becomes the holder."""
        ctx.require_caller(*POOL_CALLERS)
        v = self.load(ctx, args.voucher)
        if v["pool"] is not None:
            ctx.fail(ScfCode.IN_POOL, f"voucher {v['id']} is already in factoring pool {v['pool']}")
        if v["holder"] != args.seller:
            ctx.fail(ScfCode.NOT_ELIGIBLE, f"voucher {v['id']} is held by {v['holder']}, not {args.seller}")
        self.movable(ctx, v)
        if v["financed_by"] is not None:
            ctx.fail(ScfCode.ALREADY_FINANCED, f"voucher {v['id']} was already financed by {v['financed_by']}")
        self.save(ctx, {**v, "holder": args.factor, "pool": args.pool}, v)
        ctx.emit("pooled", {"voucher": v["id"], "pool": args.pool, "seller": args.seller, "factor": args.factor})
        return {k: v[k] for k in ("face", "maturity_day", "settlement_bank", "issuer")}

    @internal
    @transaction
    def pool_release(self, ctx: Context, args: PoolReleaseArgs) -> None:
        """Internal: a voucher leaves its pool and goes back to the seller."""
        ctx.require_caller(*POOL_CALLERS)
        v = self.load(ctx, args.voucher)
        if v["pool"] != args.pool:
            ctx.fail(ScfCode.NOT_ELIGIBLE, f"voucher {v['id']} is not in pool {args.pool}")
        if v["status"] != "active" or v["frozen"] or v["offer_to"] is not None or v["financing"] is not None:
            ctx.fail(ScfCode.NOT_ELIGIBLE, f"voucher {v['id']} cannot leave the pool while {v['status']}")
        self.save(ctx, {**v, "holder": args.seller, "pool": None}, v)
        ctx.emit("unpooled", {"voucher": v["id"], "pool": args.pool, "seller": args.seller})

    # ---- maturity ---------------------------------------------------------------------------------------
    @transaction
    def settle(self, ctx: Context, args: IdArgs) -> dict[str, Any]:
        """At maturity the issuer pays every current leaf holder exactly its face, in one transaction."""
        root = self.load(ctx, args.voucher)
        if root["root"] != root["id"]:
            ctx.fail(Code.INVALID_ARGUMENT, f"settle the root voucher {root['root']}, not a part of it")
        acting_for(ctx, root["issuer"])
        if today(ctx) < root["maturity_day"]:
            ctx.fail(ScfCode.NOT_MATURE, f"voucher {root['id']} matures on {root['maturity']}")
        payments = []
        for leaf in self.leaves(ctx, root):
            if leaf["status"] == "settled":
                continue
            if leaf["frozen"]:
                ctx.fail(ScfCode.FROZEN, f"leaf {leaf['id']} is frozen: unfreeze before settling")
            holder = leaf["holder"]
            if holder != root["issuer"]:
                ctx.invoke(
                    "scf.tokens",
                    "pay",
                    {"bank": root["settlement_bank"], "payer": root["issuer"], "payee": holder, "amount": leaf["face"]},
                )
            self.save(ctx, {**leaf, "status": "settled", "offer_to": None, "financing": None}, leaf)
            payments.append({"voucher": leaf["id"], "holder": holder, "amount": leaf["face"]})
        if not payments:
            ctx.fail(ScfCode.NOT_ACTIVE, f"voucher {root['id']} is already settled")
        ctx.emit("settled", {"voucher": root["id"], "payments": payments})
        return {"payments": payments}

    @transaction
    def mark_overdue(self, ctx: Context, args: IdArgs) -> dict[str, Any]:
        root = self.load(ctx, args.voucher)
        ctx.signer()
        if today(ctx) <= root["maturity_day"]:
            ctx.fail(ScfCode.NOT_MATURE, f"voucher {root['id']} is not past its maturity {root['maturity']}")
        marked = []
        for leaf in self.leaves(ctx, root):
            if leaf["status"] == "active":
                self.save(ctx, {**leaf, "status": "overdue"}, leaf)
                marked.append(leaf["id"])
        if not marked:
            ctx.fail(ScfCode.NOT_ACTIVE, "no active leaf to mark overdue")
        ctx.emit("overdue", {"voucher": root["id"], "leaves": marked})
        return {"overdue": marked}

    @transaction
    def freeze(self, ctx: Context, args: IdArgs) -> None:
        ctx.require_org_type("regulator")
        v = self.load(ctx, args.voucher)
        if v["status"] in ("retired", "settled"):
            ctx.fail(ScfCode.NOT_ACTIVE, f"voucher {v['id']} is {v['status']}")
        self.save(ctx, {**v, "frozen": True}, v)
        ctx.emit("frozen", {"voucher": v["id"]})

    @transaction
    def unfreeze(self, ctx: Context, args: IdArgs) -> None:
        ctx.require_org_type("regulator")
        v = self.load(ctx, args.voucher)
        self.save(ctx, {**v, "frozen": False}, v)
        ctx.emit("unfrozen", {"voucher": v["id"]})

    # ---- read models ------------------------------------------------------------------------------------
    @query
    def voucher(self, ctx: Context, args: IdArgs) -> dict[str, Any]:
        return self.load(ctx, args.voucher)

    @query
    def tree(self, ctx: Context, args: IdArgs) -> dict[str, Any]:
        """The whole split tree from the root, with holders, faces and financing at every node."""
        root = self.load(ctx, self.load(ctx, args.voucher)["root"])

        def node(v: dict[str, Any]) -> dict[str, Any]:
            keep = ("id", "holder", "face", "status", "financed_by", "frozen", "offer_to", "maturity")
            return {**{k: v[k] for k in keep}, "children": [node(self.load(ctx, c)) for c in v["children"]]}

        return node(root)

    @query
    def portfolio(self, ctx: Context, args: OrgArgs) -> dict[str, Any]:
        """Vouchers an organisation holds now (active or overdue), from the holder index."""
        held = self.indexed(ctx, f"ih/{args.org}/")
        return {"org": args.org, "vouchers": held, "total": sum(v["face"] for v in held)}

    @query
    def financed_book(self, ctx: Context, args: OrgArgs) -> dict[str, Any]:
        """Every voucher part a bank financed that is not retired, with what is still outstanding."""
        book = self.indexed(ctx, f"ib/{args.org}/")
        outstanding = sum(v["face"] for v in book if v["status"] != "settled")
        return {"bank": args.org, "vouchers": book, "total": sum(v["face"] for v in book), "outstanding": outstanding}

    @query
    def maturities(self, ctx: Context, args: UntilArgs) -> dict[str, Any]:
        """Roots with unpaid parts maturing on or before ``until``: what each issuer must pay, and to whom."""
        until = day_of(args.until)
        by_root: dict[str, dict[str, Any]] = {}
        for key, _ in ctx.range("im/"):
            day, vid = key.split("/")[1:]
            if int(day) > until:
                break  # the index is ordered by day
            leaf = self.load(ctx, vid)
            entry = by_root.setdefault(
                leaf["root"],
                {
                    "id": leaf["root"],
                    "issuer": leaf["issuer"],
                    "maturity": leaf["maturity"],
                    "outstanding": 0,
                    "holders": {},
                },
            )
            entry["outstanding"] += leaf["face"]
            entry["holders"][leaf["holder"]] = entry["holders"].get(leaf["holder"], 0) + leaf["face"]
        return {"until": args.until, "roots": list(by_root.values())}

    @query
    def roots(self, ctx: Context, args: OrgArgs) -> list[str]:
        """Root vouchers an issuer has issued."""
        return [key.rsplit("/", 1)[1] for key, _ in ctx.range(f"ir/{args.org}/")]

    @query
    def all_roots(self, ctx: Context, args: NoArgs) -> list[str]:
        return sorted(key.rsplit("/", 1)[1] for key, _ in ctx.range("ir/"))
