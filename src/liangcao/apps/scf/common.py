"""Shared rules of the supply-chain finance contracts: codes, dates, ids, pledges.

Parties are checked with ``ctx.require_party(org, code=ScfCode.NOT_PARTY)``; organisation ids and money are
``liangcao.domain.OrgId`` and ``Money``; read models page with ``liangcao.contracts.index``.
"""

from __future__ import annotations

import datetime as dt
from enum import IntEnum
from typing import Annotated, Protocol, Self, TypeVar

import msgspec

from liangcao import codes
from liangcao.codes import Code
from liangcao.contracts.base import Args, Context
from liangcao.contracts.index import Cursor
from liangcao.domain import OrgId
from liangcao.limits import scf_page_max, split_depth_max

IsoDate = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")]  # ASCII: \d moves with Unicode
# Instrument ids are a letter and the whole id (64 hex digits) of the transaction that created them; a
# voucher's parts add ".n" per split (n <= split_children_max <= 99), at most split_depth_max times.
VoucherId = Annotated[str, msgspec.Meta(pattern=rf"^V[0-9a-f]{{64}}(\.[1-9][0-9]?){{0,{split_depth_max}}}$")]
PageLimit = Annotated[int, msgspec.Meta(ge=1, le=scf_page_max)]


class OrgArgs(Args):
    """Arguments of the read models that take one organisation (portfolio, financed book, pools), paged.

    ``after`` is the ``next`` cursor of the previous page ("" for the first); at most ``limit`` entries."""

    org: OrgId
    after: Cursor = ""
    limit: PageLimit = scf_page_max


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
    NOT_CONFIRMED = 2017  # the invoice's buyer has not confirmed it (amount owed and due date)


codes.register(ScfCode, "scf")


def day_of(iso: str) -> int:
    try:
        return (dt.date.fromisoformat(iso) - dt.date(1970, 1, 1)).days
    except ValueError:
        Context.fail(ScfCode.BAD_DATE, f"{iso!r} is not a valid date")


def iso_of(day: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat()


def today(ctx: Context) -> int:
    return ctx.time_ms // 86_400_000


def org_type(ctx: Context, org: str) -> str:
    entry = ctx.consortium().orgs.get(org)
    if entry is None or not entry.active:
        ctx.fail(ScfCode.NOT_PARTY, f"{org} is not an active organisation of the consortium")
    return str(entry.type)


def require_bank(ctx: Context, org: str) -> None:
    if org_type(ctx, org) != "bank":
        ctx.fail(ScfCode.NOT_A_BANK, f"{org} is not a bank")


class Pledgeable(Protocol):
    """A record that can be pledged to a bank (a bill, a warehouse receipt)."""

    @property
    def id(self) -> str: ...

    @property
    def holder(self) -> str: ...

    @property
    def pledged_to(self) -> str | None: ...

    def replace(self, *, pledged_to: str | None) -> Self: ...


P = TypeVar("P", bound=Pledgeable)


def unpledged(ctx: Context, record: Pledgeable, what: str) -> None:
    """Fails PLEDGED if ``record`` (a bill or a warehouse receipt) is pledged."""
    if record.pledged_to is not None:
        ctx.fail(ScfCode.PLEDGED, f"{what} {record.id} is pledged to {record.pledged_to}")


def pledged(ctx: Context, record: P, bank: str, what: str) -> P:
    """``record`` pledged to ``bank``: signed by the holder and the bank, at most one pledge at a time."""
    ctx.require_party(record.holder, code=ScfCode.NOT_PARTY)
    require_bank(ctx, bank)
    ctx.require_party(bank, code=ScfCode.NOT_PARTY)
    unpledged(ctx, record, what)
    return record.replace(pledged_to=bank)


def released(ctx: Context, record: P, what: str) -> P:
    """``record`` released from its pledge: signed by the bank that holds the pledge."""
    if record.pledged_to is None:
        ctx.fail(ScfCode.NOT_ACTIVE, f"{what} {record.id} is not pledged")
    ctx.require_party(record.pledged_to, code=ScfCode.NOT_PARTY)
    return record.replace(pledged_to=None)


def discount_fen(face: int, rate_bps: int, days: int) -> int:
    """Discount for ``days`` at ``rate_bps`` a year, actual/360, rounded half up to the fen.

    ``face * rate_bps * days / (10_000 * 360)`` computed in integers: no float ever touches money.
    """
    denominator = 10_000 * 360
    return (face * rate_bps * days * 2 + denominator) // (denominator * 2)


def new_id(ctx: Context, letter: str, key: str) -> str:
    """A new instrument's id: ``letter`` and the whole id of this transaction (256 bits, never a prefix).

    ``key`` is where the record will live, with ``{}`` for the id; an existing record there is never
    overwritten (ALREADY_EXISTS), so not even two creations inside one transaction can collide."""
    iid = letter + ctx.tx_id
    if ctx.exists(key.format(iid)):
        ctx.fail(Code.ALREADY_EXISTS, f"{iid} already exists")
    return iid
