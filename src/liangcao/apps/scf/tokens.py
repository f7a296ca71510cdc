"""``scf.tokens``: bank deposit tokens, the cash leg that makes financing and settlement atomic.

Each bank's token is its own liability, named by the bank's organisation id, in integer fen of one
currency (CNY). Invariant per bank: ``issued - redeemed`` equals the sum of all balances.
"""

from __future__ import annotations

from typing import Any

from liangcao.apps.scf.common import ScfCode, org_type
from liangcao.codes import Code
from liangcao.contracts.base import Args, Context, Contract, Record, internal, query, transaction
from liangcao.domain import Money, OrgId

CALLERS = ("scf.vouchers", "scf.bills", "scf.factoring")


class Token(Record):
    """``scf.tokens/token/<bank>``: what a bank issued and what was redeemed (balances are ``bal/<bank>/<org>``)."""

    bank: str
    currency: str = "CNY"
    issued: int = 0
    redeemed: int = 0


class IssueArgs(Args):
    to: OrgId
    amount: Money


class RedeemArgs(Args):
    bank: OrgId
    amount: Money


class TransferArgs(Args):
    bank: OrgId
    to: OrgId
    amount: Money


class PayArgs(Args):
    bank: OrgId
    payer: OrgId
    payee: OrgId
    amount: Money


class BalanceArgs(Args):
    bank: OrgId
    org: OrgId


class BankArgs(Args):
    bank: OrgId


def move(ctx: Context, bank: str, payer: str, payee: str, amount: int) -> None:
    if payer == payee:
        ctx.fail(Code.INVALID_ARGUMENT, "payer and payee are the same")
    have = int(ctx.get(f"bal/{bank}/{payer}") or 0)
    if have < amount:
        ctx.fail(Code.INSUFFICIENT_FUNDS, f"{payer} holds {have} fen of {bank}'s token, needs {amount}")
    ctx.put(f"bal/{bank}/{payer}", have - amount)
    ctx.put(f"bal/{bank}/{payee}", int(ctx.get(f"bal/{bank}/{payee}") or 0) + amount)
    ctx.emit("transferred", {"bank": bank, "from": payer, "to": payee, "amount": amount})


class Tokens(Contract):
    name = "scf.tokens"

    def _token(self, ctx: Context, bank: str) -> Token:
        return ctx.load(Token, f"token/{bank}") or Token(bank=bank)

    @transaction
    def issue(self, ctx: Context, args: IssueArgs) -> dict[str, int]:
        """A bank issues its deposit token to a member against deposits on its own books."""
        bank = ctx.require_party(org_type="bank").org
        org_type(ctx, args.to)
        token = self._token(ctx, bank)
        ctx.save(f"token/{bank}", token.replace(issued=token.issued + args.amount))
        balance = int(ctx.get(f"bal/{bank}/{args.to}") or 0) + args.amount
        ctx.put(f"bal/{bank}/{args.to}", balance)
        ctx.emit("issued", {"bank": bank, "to": args.to, "amount": args.amount})
        return {"balance": balance}

    @transaction
    def redeem(self, ctx: Context, args: RedeemArgs) -> dict[str, int]:
        """The holder (first signer's organisation) returns tokens; the bank co-signs and pays off-chain."""
        holder = ctx.signer().org
        ctx.require_party(holder, code=ScfCode.NOT_PARTY)
        ctx.require_party(args.bank, code=ScfCode.NOT_PARTY)
        have = int(ctx.get(f"bal/{args.bank}/{holder}") or 0)
        if have < args.amount:
            ctx.fail(Code.INSUFFICIENT_FUNDS, f"{holder} holds {have} fen of {args.bank}'s token")
        token = self._token(ctx, args.bank)
        ctx.save(f"token/{args.bank}", token.replace(redeemed=token.redeemed + args.amount))
        ctx.put(f"bal/{args.bank}/{holder}", have - args.amount)
        ctx.emit("redeemed", {"bank": args.bank, "by": holder, "amount": args.amount})
        return {"balance": have - args.amount}

    @transaction
    def transfer(self, ctx: Context, args: TransferArgs) -> None:
        payer = ctx.signer().org
        ctx.require_party(payer, code=ScfCode.NOT_PARTY)
        org_type(ctx, args.to)
        move(ctx, args.bank, payer, args.to, args.amount)

    @internal(callers=CALLERS)
    @transaction
    def pay(self, ctx: Context, args: PayArgs) -> None:
        """Internal: a payment made by another contract inside its own transaction (financing, settlement)."""
        move(ctx, args.bank, args.payer, args.payee, args.amount)

    @query
    def balance(self, ctx: Context, args: BalanceArgs) -> dict[str, int]:
        return {"balance": int(ctx.get(f"bal/{args.bank}/{args.org}") or 0)}

    @query
    def supply(self, ctx: Context, args: BankArgs) -> dict[str, Any]:
        token = self._token(ctx, args.bank)
        return {**token.to_value(), "outstanding": token.issued - token.redeemed}


__all__ = ["ScfCode", "Tokens"]
