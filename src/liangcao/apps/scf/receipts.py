"""``scf.receipts``: warehouse receipts (仓单) against declared stock.

A warehouse declares the stock it holds for an owner (goods code, quantity in the smallest unit) and
issues receipts against it. A lot's name is the warehouse's own (lots are kept per warehouse, so no
warehouse can take another's lot name first); a receipt's id is the whole id of the transaction that
issued it, never more than the stock. A receipt can be transferred (the receiver
accepts nothing: a receipt is a bearer-like title recorded on the ledger), pledged to a bank (one pledge
at a time; no transfer, delivery or cancellation while pledged), released by that bank, delivered (the
goods leave the warehouse: the stock falls and the receipt is closed) or cancelled by the warehouse with
the holder's signature (the stock it reserved is free again).

Invariant per stock lot: the quantity of its open receipts never exceeds the declared stock.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from liangcao.apps.scf.common import ScfCode, new_id, org_type, pledged, released, unpledged
from liangcao.codes import Code
from liangcao.contracts.base import Args, Context, Contract, Record, query, transaction
from liangcao.domain import OrgId

Qty = Annotated[int, msgspec.Meta(gt=0, le=10**15)]
LotId = Annotated[str, msgspec.Meta(pattern=r"^[0-9A-Za-z_.-]{1,64}$")]
ReceiptId = Annotated[str, msgspec.Meta(pattern=r"^R[0-9a-f]{64}$")]


class Lot(Record):
    """``scf.receipts/lot/<warehouse>/<lot>``: goods a warehouse holds for an owner, and how much is reserved."""

    lot: str
    warehouse: str
    owner: str
    goods: str
    stock: int
    reserved: int  # the quantity of its open receipts: never more than the stock


class WarehouseReceipt(Record):
    """``scf.receipts/r/<id>``: title to part of a lot."""

    id: str
    lot: str
    warehouse: str
    goods: str
    quantity: int
    holder: str
    pledged_to: str | None
    status: Literal["open", "delivered", "cancelled"]


class DeclareArgs(Args):
    lot: LotId
    owner: OrgId
    goods: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    quantity: Qty


class IssueArgs(Args):
    warehouse: OrgId
    lot: LotId
    quantity: Qty


class ReceiptArgs(Args):
    receipt: ReceiptId


class TransferArgs(Args):
    receipt: ReceiptId
    to: OrgId


class PledgeArgs(Args):
    receipt: ReceiptId
    bank: OrgId


class LotArgs(Args):
    warehouse: OrgId
    lot: LotId


class Receipts(Contract):
    name = "scf.receipts"

    @staticmethod
    def _lot(ctx: Context, warehouse: str, lot: str) -> Lot:
        return ctx.must_load(Lot, f"lot/{warehouse}/{lot}", f"{warehouse} has no stock lot {lot}")

    @staticmethod
    def _receipt(ctx: Context, rid: str) -> WarehouseReceipt:
        found = ctx.must_load(WarehouseReceipt, f"r/{rid}", f"no warehouse receipt {rid}")
        if found.status != "open":
            ctx.fail(ScfCode.NOT_ACTIVE, f"receipt {rid} is {found.status}")
        return found

    @staticmethod
    def _save_lot(ctx: Context, lot: Lot) -> None:
        ctx.save(f"lot/{lot.warehouse}/{lot.lot}", lot)

    @staticmethod
    def _save_receipt(ctx: Context, r: WarehouseReceipt) -> None:
        ctx.save(f"r/{r.id}", r)

    @transaction
    def declare(self, ctx: Context, args: DeclareArgs) -> None:
        """The warehouse declares (or adds to) a lot of goods it holds for an owner."""
        warehouse = ctx.require_party(org_type="warehouse").org
        org_type(ctx, args.owner)
        lot = ctx.load(Lot, f"lot/{warehouse}/{args.lot}")
        if lot is None:
            lot = Lot(lot=args.lot, warehouse=warehouse, owner=args.owner, goods=args.goods, stock=0, reserved=0)
        elif (lot.owner, lot.goods) != (args.owner, args.goods):
            ctx.fail(Code.INVALID_ARGUMENT, f"lot {args.lot} is held for {lot.owner} ({lot.goods})")
        self._save_lot(ctx, lot.replace(stock=lot.stock + args.quantity))
        ctx.emit(
            "declared",
            {
                "warehouse": warehouse,
                "lot": args.lot,
                "owner": args.owner,
                "goods": args.goods,
                "quantity": args.quantity,
            },
        )

    @transaction
    def issue(self, ctx: Context, args: IssueArgs) -> dict[str, str]:
        """A receipt for part of a lot, to its owner; signed by the warehouse and the owner."""
        lot = self._lot(ctx, args.warehouse, args.lot)
        ctx.require_party(lot.warehouse, code=ScfCode.NOT_PARTY)
        ctx.require_party(lot.owner, code=ScfCode.NOT_PARTY)
        if lot.reserved + args.quantity > lot.stock:
            ctx.fail(
                ScfCode.EXCEEDS_STOCK,
                f"lot {args.lot} has {lot.stock - lot.reserved} free, asked {args.quantity}",
            )
        rid = new_id(ctx, "R", "r/{}")
        self._save_lot(ctx, lot.replace(reserved=lot.reserved + args.quantity))
        receipt = WarehouseReceipt(
            id=rid,
            lot=args.lot,
            warehouse=lot.warehouse,
            goods=lot.goods,
            quantity=args.quantity,
            holder=lot.owner,
            pledged_to=None,
            status="open",
        )
        self._save_receipt(ctx, receipt)
        ctx.emit("issued", {"receipt": rid, "lot": args.lot, "holder": lot.owner, "quantity": args.quantity})
        return {"receipt": rid}

    @transaction
    def transfer(self, ctx: Context, args: TransferArgs) -> None:
        r = self._receipt(ctx, args.receipt)
        ctx.require_party(r.holder, code=ScfCode.NOT_PARTY)
        unpledged(ctx, r, "receipt")
        org_type(ctx, args.to)
        self._save_receipt(ctx, r.replace(holder=args.to))
        ctx.emit("transferred", {"receipt": r.id, "from": r.holder, "to": args.to})

    @transaction
    def pledge(self, ctx: Context, args: PledgeArgs) -> None:
        """Pledge to a bank: signed by the holder and the bank; at most one pledge at a time."""
        r = self._receipt(ctx, args.receipt)
        self._save_receipt(ctx, pledged(ctx, r, args.bank, "receipt"))
        ctx.emit("pledged", {"receipt": r.id, "holder": r.holder, "bank": args.bank})

    @transaction
    def release(self, ctx: Context, args: ReceiptArgs) -> None:
        r = self._receipt(ctx, args.receipt)
        self._save_receipt(ctx, released(ctx, r, "receipt"))
        ctx.emit("released", {"receipt": r.id, "bank": r.pledged_to})

    def _close(
        self, ctx: Context, args: ReceiptArgs, status: Literal["delivered", "cancelled"], stock_leaves: bool
    ) -> None:
        r = self._receipt(ctx, args.receipt)
        ctx.require_party(r.holder, code=ScfCode.NOT_PARTY)
        ctx.require_party(r.warehouse, code=ScfCode.NOT_PARTY)
        unpledged(ctx, r, "receipt")
        lot = self._lot(ctx, r.warehouse, r.lot)
        lot = lot.replace(reserved=lot.reserved - r.quantity)
        if stock_leaves:
            lot = lot.replace(stock=lot.stock - r.quantity)
        self._save_lot(ctx, lot)
        self._save_receipt(ctx, r.replace(status=status))
        ctx.emit(status, {"receipt": r.id, "holder": r.holder, "quantity": r.quantity})

    @transaction
    def deliver(self, ctx: Context, args: ReceiptArgs) -> None:
        """The goods leave the warehouse to the holder: the receipt closes and the stock falls."""
        self._close(ctx, args, "delivered", stock_leaves=True)

    @transaction
    def cancel(self, ctx: Context, args: ReceiptArgs) -> None:
        """The receipt is withdrawn; the goods stay and are free for another receipt."""
        self._close(ctx, args, "cancelled", stock_leaves=False)

    @query
    def receipt(self, ctx: Context, args: ReceiptArgs) -> WarehouseReceipt:
        return ctx.must_load(WarehouseReceipt, f"r/{args.receipt}", f"no warehouse receipt {args.receipt}")

    @query
    def lot(self, ctx: Context, args: LotArgs) -> Lot:
        return self._lot(ctx, args.warehouse, args.lot)
