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

from typing import Annotated, Any

import msgspec

from liangcao.apps.scf.common import OrgId, ScfCode, acting_for, new_id, org_type, pledged, released, unpledged
from liangcao.codes import Code
from liangcao.contracts.base import Args, Context, Contract, query, transaction

Qty = Annotated[int, msgspec.Meta(gt=0, le=10**15)]
LotId = Annotated[str, msgspec.Meta(pattern=r"^[0-9A-Za-z_.-]{1,64}$")]
ReceiptId = Annotated[str, msgspec.Meta(pattern=r"^R[0-9a-f]{64}$")]


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
    def _lot(ctx: Context, warehouse: str, lot: str) -> dict[str, Any]:
        found: dict[str, Any] = ctx.must_get(f"lot/{warehouse}/{lot}", f"{warehouse} has no stock lot {lot}")
        return found

    @staticmethod
    def _receipt(ctx: Context, rid: str) -> dict[str, Any]:
        found: dict[str, Any] = ctx.must_get(f"r/{rid}", f"no warehouse receipt {rid}")
        if found["status"] != "open":
            ctx.fail(ScfCode.NOT_ACTIVE, f"receipt {rid} is {found['status']}")
        return found

    @transaction
    def declare(self, ctx: Context, args: DeclareArgs) -> None:
        """The warehouse declares (or adds to) a lot of goods it holds for an owner."""
        warehouse = ctx.require_org_type("warehouse").org
        acting_for(ctx, warehouse)
        org_type(ctx, args.owner)
        lot: dict[str, Any] | None = ctx.get(f"lot/{warehouse}/{args.lot}")
        if lot is None:
            lot = {
                "lot": args.lot,
                "warehouse": warehouse,
                "owner": args.owner,
                "goods": args.goods,
                "stock": 0,
                "reserved": 0,
            }
        elif (lot["owner"], lot["goods"]) != (args.owner, args.goods):
            ctx.fail(Code.INVALID_ARGUMENT, f"lot {args.lot} is held for {lot['owner']} ({lot['goods']})")
        lot["stock"] += args.quantity
        ctx.put(f"lot/{warehouse}/{args.lot}", lot)
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
        acting_for(ctx, lot["warehouse"])
        acting_for(ctx, lot["owner"])
        if lot["reserved"] + args.quantity > lot["stock"]:
            ctx.fail(
                ScfCode.EXCEEDS_STOCK,
                f"lot {args.lot} has {lot['stock'] - lot['reserved']} free, asked {args.quantity}",
            )
        rid = new_id(ctx, "R", "r/{}")
        ctx.put(f"lot/{args.warehouse}/{args.lot}", {**lot, "reserved": lot["reserved"] + args.quantity})
        receipt = {
            "id": rid,
            "lot": args.lot,
            "warehouse": lot["warehouse"],
            "goods": lot["goods"],
            "quantity": args.quantity,
            "holder": lot["owner"],
            "pledged_to": None,
            "status": "open",
        }
        ctx.put(f"r/{rid}", receipt)
        ctx.emit("issued", {"receipt": rid, "lot": args.lot, "holder": lot["owner"], "quantity": args.quantity})
        return {"receipt": rid}

    @transaction
    def transfer(self, ctx: Context, args: TransferArgs) -> None:
        r = self._receipt(ctx, args.receipt)
        acting_for(ctx, r["holder"])
        unpledged(ctx, r, "receipt")
        org_type(ctx, args.to)
        ctx.put(f"r/{r['id']}", {**r, "holder": args.to})
        ctx.emit("transferred", {"receipt": r["id"], "from": r["holder"], "to": args.to})

    @transaction
    def pledge(self, ctx: Context, args: PledgeArgs) -> None:
        """Pledge to a bank: signed by the holder and the bank; at most one pledge at a time."""
        r = self._receipt(ctx, args.receipt)
        ctx.put(f"r/{r['id']}", pledged(ctx, r, args.bank, "receipt"))
        ctx.emit("pledged", {"receipt": r["id"], "holder": r["holder"], "bank": args.bank})

    @transaction
    def release(self, ctx: Context, args: ReceiptArgs) -> None:
        r = self._receipt(ctx, args.receipt)
        ctx.put(f"r/{r['id']}", released(ctx, r, "receipt"))
        ctx.emit("released", {"receipt": r["id"], "bank": r["pledged_to"]})

    def _close(self, ctx: Context, args: ReceiptArgs, status: str, stock_leaves: bool) -> None:
        r = self._receipt(ctx, args.receipt)
        acting_for(ctx, r["holder"])
        acting_for(ctx, r["warehouse"])
        unpledged(ctx, r, "receipt")
        lot = self._lot(ctx, r["warehouse"], r["lot"])
        lot = {**lot, "reserved": lot["reserved"] - r["quantity"]}
        if stock_leaves:
            lot["stock"] -= r["quantity"]
        ctx.put(f"lot/{r['warehouse']}/{r['lot']}", lot)
        ctx.put(f"r/{r['id']}", {**r, "status": status})
        ctx.emit(status, {"receipt": r["id"], "holder": r["holder"], "quantity": r["quantity"]})

    @transaction
    def deliver(self, ctx: Context, args: ReceiptArgs) -> None:
        """The goods leave the warehouse to the holder: the receipt closes and the stock falls."""
        self._close(ctx, args, "delivered", stock_leaves=True)

    @transaction
    def cancel(self, ctx: Context, args: ReceiptArgs) -> None:
        """The receipt is withdrawn; the goods stay and are free for another receipt."""
        self._close(ctx, args, "cancelled", stock_leaves=False)

    @query
    def receipt(self, ctx: Context, args: ReceiptArgs) -> dict[str, Any]:
        found: dict[str, Any] = ctx.must_get(f"r/{args.receipt}", f"no warehouse receipt {args.receipt}")
        return found

    @query
    def lot(self, ctx: Context, args: LotArgs) -> dict[str, Any]:
        return self._lot(ctx, args.warehouse, args.lot)
