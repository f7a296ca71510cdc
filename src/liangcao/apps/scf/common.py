"""Shared rules of the supply-chain finance contracts: codes, parties, dates, ids."""

from __future__ import annotations

import datetime as dt
from enum import IntEnum
from typing import Annotated, Any

import msgspec

from liangcao.contracts.base import Args, Context, Signer

ACTING_ROLES = ("admin", "member")
OrgId = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")]
Fen = Annotated[int, msgspec.Meta(gt=0, le=10**15)]
IsoDate = Annotated[str, msgspec.Meta(pattern=r"^\d{4}-\d{2}-\d{2}$")]
VoucherId = Annotated[str, msgspec.Meta(pattern=r"^V[0-9a-f]{20}(\.\d{1,3})*$", max_length=120)]


class OrgArgs(Args):
    """Arguments of the read models that take one organisation (portfolio, financed book, pools)."""

    org: OrgId


class ScfCode(IntEnum):
    NOT_PARTY = 2000  # the signer does not act for the party the action needs
    INVOICE_USED = 2001  # the invoice already backs an instrument
    FACE_EXCEEDS_INVOICES = 2002
    BAD_SPLIT = 2003
    NOT_ACTIVE = 2004  # retired, settled or overdue, or an offer/financing is pending
    FROZEN = 2005
    ALREADY_FINANCED = 2006
    NOT_MATURE = 2007
    MATURED = 2008
    NOT_A_BANK = 2009
    BAD_DATE = 2010
    NO_OFFER = 2011
    EXCEEDS_STOCK = 2012  # receipts would exceed the declared stock
    PLEDGED = 2013  # a pledged receipt cannot move, be pledged again, delivered or cancelled
    IN_POOL = 2014  # the asset is assigned to a factoring pool (or already was: at most one pool)
    OVER_ADVANCE = 2015  # the advance would exceed the pool's credit line or advance_rate x eligible balance
    NOT_ELIGIBLE = 2016  # the asset cannot enter (or leave) a pool: matured, financed, frozen, not the seller's


def day_of(iso: str) -> int:
    try:
        return (dt.date.fromisoformat(iso) - dt.date(1970, 1, 1)).days
    except ValueError:
        Context.fail(ScfCode.BAD_DATE, f"{iso!r} is not a valid date")


def iso_of(day: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat()


def today(ctx: Context) -> int:
    return ctx.time_ms // 86_400_000


def acting_for(ctx: Context, org: str) -> Signer:
    """The signer acting for ``org``; fails NOT_PARTY if no admin or member of ``org`` signed."""
    s = ctx.signer_of_org(org, *ACTING_ROLES)
    if s is None:
        ctx.fail(ScfCode.NOT_PARTY, f"needs the signature of an admin or member of {org}")
    return s


def org_type(ctx: Context, org: str) -> str:
    entry = ctx.consortium().orgs.get(org)
    if entry is None or not entry.active:
        ctx.fail(ScfCode.NOT_PARTY, f"{org} is not an active organisation of the consortium")
    return str(entry.type)


def require_bank(ctx: Context, org: str) -> None:
    if org_type(ctx, org) != "bank":
        ctx.fail(ScfCode.NOT_A_BANK, f"{org} is not a bank")


def unpledged(ctx: Context, record: dict[str, Any], what: str) -> None:
    """Fails PLEDGED if ``record`` (a bill or a warehouse receipt) is pledged."""
    if record["pledged_to"] is not None:
        ctx.fail(ScfCode.PLEDGED, f"{what} {record['id']} is pledged to {record['pledged_to']}")


def pledged(ctx: Context, record: dict[str, Any], bank: str, what: str) -> dict[str, Any]:
    """``record`` pledged to ``bank``: signed by the holder and the bank, at most one pledge at a time."""
    acting_for(ctx, record["holder"])
    require_bank(ctx, bank)
    acting_for(ctx, bank)
    unpledged(ctx, record, what)
    return {**record, "pledged_to": bank}


def released(ctx: Context, record: dict[str, Any], what: str) -> dict[str, Any]:
    """``record`` released from its pledge: signed by the bank that holds the pledge."""
    if record["pledged_to"] is None:
        ctx.fail(ScfCode.NOT_ACTIVE, f"{what} {record['id']} is not pledged")
    acting_for(ctx, record["pledged_to"])
    return {**record, "pledged_to": None}


def discount_fen(face: int, rate_bps: int, days: int) -> int:
    """Discount for ``days`` at ``rate_bps`` a year, actual/360, rounded half up to the fen.

    ``face * rate_bps * days / (10_000 * 360)`` computed in integers: no float ever touches money.
    """
    denominator = 10_000 * 360
    return (face * rate_bps * days * 2 + denominator) // (denominator * 2)
