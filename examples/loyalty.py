"""``example.loyalty``: a platform's loyalty points for the merchants that sell through it.

A contract written from zero with liangcao's contract model (``docs/contracts.md`` walks through it); its
tests are ``tests/test_example_loyalty.py``, written with ``liangcao.testing``.

A platform opens a programme: so many points per yuan of sales, and how long points last without new
sales. The platform awards points to a merchant (any other organisation of the consortium) for what it
sold; the merchant redeems them. Points lapse when a merchant earns nothing for ``expiry_days``: the next
award starts again from zero, and a redemption finds none. The platform pages through the merchants that
hold its points (``merchants``), in merchant order.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Annotated, Any

import msgspec

from liangcao import codes
from liangcao.codes import Code
from liangcao.contracts import Args, Context, Contract, Cursor, Index, Record, query, transaction
from liangcao.domain import Money, OrgId

#: Bounds of this contract (an application outside liangcao keeps its own; liangcao's are ``liangcao.limits``).
POINTS_PER_YUAN_MAX = 100
EXPIRY_DAYS_MAX = 3660
MERCHANTS_PAGE_MAX = 100
DAY_MS = 86_400_000


class LoyaltyCode(IntEnum):
    """This application's result codes: from 1000 up, never renumbered once released."""

    NOTHING_TO_AWARD = 9001  # the sale is worth less than one point
    NOT_ENOUGH_POINTS = 9002  # the merchant holds fewer (unlapsed) points than it redeems


codes.register(LoyaltyCode, "example.loyalty")  # one owner per number, checked at import


# ---- records: what the contract stores --------------------------------------------------------------------
class Programme(Record):
    """``example.loyalty/p/<platform>``: one programme per platform."""

    platform: str
    name: str
    points_per_yuan: int
    expiry_days: int
    issued: int = 0
    redeemed: int = 0


class Account(Record):
    """``example.loyalty/a/<platform>/<merchant>``: a merchant's points in a platform's programme."""

    platform: str
    merchant: str
    points: int
    last_earned_day: int  # points lapse expiry_days after this day

    def usable(self, programme: Programme, today: int) -> int:
        """The points that have not lapsed."""
        return self.points if today < self.last_earned_day + programme.expiry_days else 0


#: ``m/<platform>/<merchant>`` -> points: the platform's merchants, paged by ``merchants``.
MERCHANTS = Index("m")


# ---- arguments: checked before a method runs (a mismatch is INVALID_ARGUMENT naming the field) ---------------
class OpenArgs(Args):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    points_per_yuan: Annotated[int, msgspec.Meta(ge=1, le=POINTS_PER_YUAN_MAX)]
    expiry_days: Annotated[int, msgspec.Meta(ge=1, le=EXPIRY_DAYS_MAX)]


class AwardArgs(Args):
    merchant: OrgId
    sold: Money  # fen


class RedeemArgs(Args):
    platform: OrgId
    points: Annotated[int, msgspec.Meta(gt=0, le=10**15)]


class AccountArgs(Args):
    platform: OrgId
    merchant: OrgId


class MerchantsArgs(Args):
    platform: OrgId
    after: Cursor = ""
    limit: Annotated[int, msgspec.Meta(ge=1, le=MERCHANTS_PAGE_MAX)] = MERCHANTS_PAGE_MAX


class Loyalty(Contract):
    name = "example.loyalty"

    @staticmethod
    def programme(ctx: Context, platform: str) -> Programme:
        return ctx.must_load(Programme, f"p/{platform}", f"{platform} runs no loyalty programme")

    @staticmethod
    def today(ctx: Context) -> int:
        return ctx.time_ms // DAY_MS  # the block's time: every peer agrees on it

    @transaction
    def open(self, ctx: Context, args: OpenArgs) -> None:
        """A platform opens its programme (signed by one of its people)."""
        platform = ctx.require_party(org_type="platform").org
        if ctx.exists(f"p/{platform}"):
            ctx.fail(Code.ALREADY_EXISTS, f"{platform} already runs a programme")
        ctx.save(
            f"p/{platform}",
            Programme(
                platform=platform, name=args.name, points_per_yuan=args.points_per_yuan, expiry_days=args.expiry_days
            ),
        )
        ctx.emit("opened", {"platform": platform, "name": args.name})

    @transaction
    def award(self, ctx: Context, args: AwardArgs) -> dict[str, int]:
        """The platform awards points for ``sold`` fen of a merchant's sales."""
        platform = ctx.require_party(org_type="platform").org
        programme = self.programme(ctx, platform)
        merchant = ctx.consortium().orgs.get(args.merchant)
        if merchant is None or not merchant.active or args.merchant == platform:
            ctx.fail(Code.NOT_FOUND, f"{args.merchant} is not a merchant of the consortium")
        points = args.sold * programme.points_per_yuan // 100  # integers only: never a float near money
        if points == 0:
            ctx.fail(LoyaltyCode.NOTHING_TO_AWARD, f"a sale of {args.sold} fen earns no point")
        today = self.today(ctx)
        key = f"a/{platform}/{args.merchant}"
        account = ctx.load(Account, key) or Account(
            platform=platform, merchant=args.merchant, points=0, last_earned_day=today
        )
        kept = account.usable(programme, today)
        if kept < account.points:
            ctx.emit("lapsed", {"platform": platform, "merchant": args.merchant, "points": account.points})
        account = account.replace(points=kept + points, last_earned_day=today)
        ctx.save(key, account)
        MERCHANTS.add(ctx, platform, args.merchant, value=account.points)
        ctx.save(f"p/{platform}", programme.replace(issued=programme.issued + points))
        ctx.emit("awarded", {"platform": platform, "merchant": args.merchant, "points": points})
        return {"points": account.points}

    @transaction
    def redeem(self, ctx: Context, args: RedeemArgs) -> dict[str, int]:
        """The merchant (the acting party's organisation, a person of it signing) spends its points."""
        merchant = ctx.require_party(ctx.signer().org).org
        programme = self.programme(ctx, args.platform)
        key = f"a/{args.platform}/{merchant}"
        account = ctx.must_load(Account, key, f"{merchant} holds no points of {args.platform}")
        usable = account.usable(programme, self.today(ctx))
        if usable < args.points:
            ctx.fail(LoyaltyCode.NOT_ENOUGH_POINTS, f"{merchant} holds {usable} points, redeems {args.points}")
        account = account.replace(points=usable - args.points)
        ctx.save(key, account)
        if account.points:
            MERCHANTS.add(ctx, args.platform, merchant, value=account.points)
        else:
            MERCHANTS.remove(ctx, args.platform, merchant)
        ctx.save(f"p/{args.platform}", programme.replace(redeemed=programme.redeemed + args.points))
        ctx.emit("redeemed", {"platform": args.platform, "merchant": merchant, "points": args.points})
        return {"points": account.points}

    @query
    def account(self, ctx: Context, args: AccountArgs) -> dict[str, Any]:
        """A merchant's account, with the points it could redeem today."""
        programme = self.programme(ctx, args.platform)
        account = ctx.must_load(Account, f"a/{args.platform}/{args.merchant}", f"{args.merchant} holds no points")
        return {**account.to_value(), "usable": account.usable(programme, self.today(ctx))}

    @query
    def merchants(self, ctx: Context, args: MerchantsArgs) -> dict[str, Any]:
        """The platform's merchants holding points (as last written), a page at a time."""
        entries, cursor = MERCHANTS.page(ctx, args.platform, after=args.after, limit=args.limit)
        return {"merchants": [{"merchant": m, "points": p} for m, p in entries], "next": cursor}
