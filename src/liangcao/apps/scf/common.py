"""Shared rules of the supply-chain finance contracts: codes, parties, dates, ids."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from enum import IntEnum
from typing import Annotated, Any

import msgspec

from liangcao.codes import Code
from liangcao.contracts.base import Args, Context, Signer
from liangcao.limits import scf_page_max, split_depth_max

ACTING_ROLES = ("admin", "member")
OrgId = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")]
Fen = Annotated[int, msgspec.Meta(gt=0, le=10**15)]
IsoDate = Annotated[str, msgspec.Meta(pattern=r"^\d{4}-\d{2}-\d{2}$")]
# Instrument ids are a letter and the whole id (64 hex digits) of the transaction that created them; a
# voucher's parts add ".n" per split (n <= split_children_max <= 99), at most split_depth_max times.
VoucherId = Annotated[str, msgspec.Meta(pattern=rf"^V[0-9a-f]{{64}}(\.[1-9][0-9]?){{0,{split_depth_max}}}$")]
#: Every character an SCF index key can hold (org ids, days, instrument ids, invoice keys), in key order.
KEY_CHARS = "".join(sorted("-./:_" + "0123456789" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ" + "abcdefghijklmnopqrstuvwxyz"))
Cursor = Annotated[str, msgspec.Meta(pattern=r"^[-./:_0-9A-Za-z]{0,240}$")]
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


def new_id(ctx: Context, letter: str, key: str) -> str:
    """A new instrument's id: ``letter`` and the whole id of this transaction (256 bits, never a prefix).

    ``key`` is where the record will live, with ``{}`` for the id; an existing record there is never
    overwritten (ALREADY_EXISTS), so not even two creations inside one transaction can collide."""
    iid = letter + ctx.tx_id
    if ctx.get(key.format(iid)) is not None:
        ctx.fail(Code.ALREADY_EXISTS, f"{iid} already exists")
    return iid


def range_after(ctx: Context, prefix: str, after: str) -> Iterator[tuple[str, Any]]:
    """(key, value) under ``prefix`` whose key comes after ``prefix + after``, ascending, read lazily.

    A page resumes where the last one stopped without reading what came before it (so no earlier entries
    can push a page past ``range_results_max``): first the keys that extend ``after``, then, from its last
    character back to its first, every key that shares ``after[:i]`` and has a larger character at ``i``.
    Only prefix ranges are used, each read no further than the caller iterates."""
    if not after:
        yield from ctx.range(prefix)
        return
    start = prefix + after
    for key, value in ctx.range(start):
        if key != start:
            yield key, value
    for i in range(len(after) - 1, -1, -1):
        for c in KEY_CHARS:
            if c > after[i]:
                yield from ctx.range(prefix + after[:i] + c)


def page(ctx: Context, prefix: str, after: str, limit: int) -> tuple[list[tuple[str, Any]], str | None]:
    """Up to ``limit`` (key suffix, value) pairs under ``prefix`` after the cursor ``after``, and the cursor
    of the next page (None when there is none)."""
    out: list[tuple[str, Any]] = []
    for key, value in range_after(ctx, prefix, after):
        if len(out) == limit:
            return out, out[-1][0]
        out.append((key[len(prefix) :], value))
    return out, None
