"""``demo.wallet``: a minimal points wallet, the sample contract of the demo and the benchmark.

An admin mints points to a member; members transfer points to each other. It exists to show the
programming model end to end and to give the node a realistic transfer-like workload. Invariant: the
recorded supply equals the sum of all balances.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Annotated

import msgspec

from liangcao import codes
from liangcao.codes import Code
from liangcao.contracts.base import Args, Context, Contract, NoArgs, query, transaction
from liangcao.domain import MemberId, Money


class WalletCode(IntEnum):
    SAME_ACCOUNT = 1001


codes.register(WalletCode, "demo.wallet")


class MintArgs(Args):
    to: MemberId
    amount: Money


class TransferArgs(Args):
    to: MemberId
    amount: Money
    memo: Annotated[str, msgspec.Meta(max_length=140)] = ""


class BalanceArgs(Args):
    member: MemberId


class Wallet(Contract):
    name = "demo.wallet"

    @transaction
    def mint(self, ctx: Context, args: MintArgs) -> dict[str, int]:
        admin = ctx.require_party(role="admin")
        balance = int(ctx.get(f"balance/{args.to}") or 0) + args.amount
        ctx.put(f"balance/{args.to}", balance)
        ctx.put("supply", int(ctx.get("supply") or 0) + args.amount)
        ctx.emit("minted", {"by": admin.member_id, "to": args.to, "amount": args.amount})
        return {"balance": balance}

    @transaction
    def transfer(self, ctx: Context, args: TransferArgs) -> dict[str, int]:
        sender = ctx.signer().member_id
        if args.to == sender:
            ctx.fail(WalletCode.SAME_ACCOUNT, "cannot transfer to the same account")
        have = int(ctx.get(f"balance/{sender}") or 0)
        if have < args.amount:
            ctx.fail(Code.INSUFFICIENT_FUNDS, f"{sender} has {have}, needs {args.amount}")
        ctx.put(f"balance/{sender}", have - args.amount)
        ctx.put(f"balance/{args.to}", int(ctx.get(f"balance/{args.to}") or 0) + args.amount)
        ctx.emit("transferred", {"from": sender, "to": args.to, "amount": args.amount, "memo": args.memo})
        return {"balance": have - args.amount}

    @query
    def balance(self, ctx: Context, args: BalanceArgs) -> dict[str, int]:
        return {"balance": int(ctx.get(f"balance/{args.member}") or 0)}

    @query
    def supply(self, ctx: Context, args: NoArgs) -> dict[str, int]:
        return {"supply": int(ctx.get("supply") or 0)}
