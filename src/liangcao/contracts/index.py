"""Secondary indexes a contract keeps beside its records, and paged reads over them.

Theory of operation
-------------------
A read model such as "the vouchers org2 holds" must not scan every voucher: one holder could make that read
fail for everyone (``range_results_max``). So a contract keeps an index beside its records, in its own key
space and in the same transaction as the record it describes::

    HELD = Index("ih")                        # ih/<holder>/<voucher> -> face
    HELD.add(ctx, v.holder, v.id, value=v.face)
    HELD.remove(ctx, v.holder, v.id)
    page = HELD.page(ctx, "org2", after=args.after, limit=args.limit)   # (entries, next cursor)

When one record implies several entries, compute them as ``{key: value}`` before and after a change and let
:func:`sync` write the difference (only what changed, in key order).

A page resumes after a cursor (the key suffix of the last entry a client saw) without reading anything
before it, so no earlier entry can push a later page past ``range_results_max``. The state offers prefix
ranges only; :func:`range_after` first reads the keys that extend the cursor, then, from its last character
back to its first, every key that shares the cursor up to that position and has a larger character there.
That needs the set of characters index keys may hold: ``KEY_CHARS`` (ids, org ids, days, ``/ . : _ -``);
``add`` and ``sync`` refuse a key with any other character (``BAD_KEY``), because a page would skip it.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, NamedTuple

import msgspec

from liangcao.codes import Code
from liangcao.contracts.base import Context

#: Every character an index key can hold, in key order.
KEY_CHARS = "".join(sorted("-./:_" + string.digits + string.ascii_uppercase + string.ascii_lowercase))
#: A page cursor as an argument: what ``page`` returned as ``next`` (or "" for the first page). The
#: pattern's text is quoted in refusals, so it never changes.
CURSOR_PATTERN = r"^[-./:_0-9A-Za-z]{0,240}$"
Cursor = Annotated[str, msgspec.Meta(pattern=CURSOR_PATTERN)]
_KEY = re.compile(r"[-./:_0-9A-Za-z]+")


class Page(NamedTuple):
    """A page of an index: ``(key suffix, value)`` pairs in key order, and the cursor of the next page."""

    entries: list[tuple[str, Any]]
    next: str | None


def range_after(ctx: Context, prefix: str, after: str) -> Iterator[tuple[str, Any]]:
    """(key, value) under ``prefix`` whose key comes after ``prefix + after``, ascending, read lazily.

    Keys are the contract's own (without its name). See the module docstring for how it avoids reading
    what comes before the cursor."""
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


def page(ctx: Context, prefix: str, after: str, limit: int) -> Page:
    """Up to ``limit`` (key suffix, value) pairs under ``prefix`` after the cursor ``after``, and the cursor
    of the next page (None when there is none)."""
    out: list[tuple[str, Any]] = []
    for key, value in range_after(ctx, prefix, after):
        if len(out) == limit:
            return Page(out, out[-1][0])
        out.append((key[len(prefix) :], value))
    return Page(out, None)


def sync(ctx: Context, before: Mapping[str, Any], after: Mapping[str, Any]) -> None:
    """Bring index entries from ``before`` to ``after`` (both ``{key: value}``, keys in the contract's
    space): delete what is gone, write what is new or changed, each in key order; unchanged entries are
    not written at all."""
    for key in sorted(before.keys() - after.keys()):
        ctx.delete(key)
    for key in sorted(after):
        if before.get(key) != after[key]:
            _check(ctx, key)
            ctx.put(key, after[key])


def _check(ctx: Context, key: str) -> None:
    if _KEY.fullmatch(key) is None:
        ctx.fail(Code.BAD_KEY, f"index key {key!r} has a character a page cannot resume after (see KEY_CHARS)")


class Index:
    """One secondary index: entries ``<name>/<part>/.../<part>`` -> value, in the contract's key space.

    The leading parts group entries (a holder, a root voucher); ``page``, ``scan`` and ``items`` read one
    group (or, given no group, the whole index) in key order. Values are small (an amount, a role, a
    holder and face): the record itself stays where it is."""

    def __init__(self, name: str) -> None:
        if not name or _KEY.fullmatch(name) is None or "/" in name:
            raise ValueError(f"an index is named with KEY_CHARS and no slash, not {name!r}")
        self.name = name

    def key(self, *parts: str) -> str:
        """The entry's key in the contract's space: ``<name>/<parts joined by />``."""
        return "/".join((self.name, *parts))

    def prefix(self, *group: str) -> str:
        """The key prefix of a group (``<name>/<group>/``), or of the whole index."""
        return "/".join((self.name, *group, ""))

    def add(self, ctx: Context, *parts: str, value: Any) -> None:
        """Write (or overwrite) the entry at ``parts``."""
        key = self.key(*parts)
        _check(ctx, key)
        ctx.put(key, value)

    def remove(self, ctx: Context, *parts: str) -> None:
        """Delete the entry at ``parts`` (nothing happens to a missing one, but the delete is a write)."""
        ctx.delete(self.key(*parts))

    def get(self, ctx: Context, *parts: str) -> Any:
        """The entry's value, or None."""
        return ctx.get(self.key(*parts))

    def scan(self, ctx: Context, *group: str, after: str = "") -> Iterator[tuple[str, Any]]:
        """(suffix, value) of a group's entries after the cursor ``after``, in key order, read lazily."""
        prefix = self.prefix(*group)
        for key, value in range_after(ctx, prefix, after):
            yield key[len(prefix) :], value

    def items(self, ctx: Context, *group: str) -> Iterator[tuple[str, Any]]:
        """Every (suffix, value) of a group, in key order (at most ``range_results_max``: keep groups small)."""
        prefix = self.prefix(*group)
        for key, value in ctx.range(prefix):
            yield key[len(prefix) :], value

    def page(self, ctx: Context, *group: str, after: str = "", limit: int) -> Page:
        """Up to ``limit`` entries of a group after the cursor ``after``, and the next page's cursor."""
        return page(ctx, self.prefix(*group), after, limit)


__all__ = ["CURSOR_PATTERN", "KEY_CHARS", "Cursor", "Index", "Page", "page", "range_after", "sync"]
