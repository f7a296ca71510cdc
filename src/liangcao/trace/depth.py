"""How deeply an EPCIS document, event or ``@context`` nests, found without recursion.

Decoding JSON (msgspec, the standard library), translating XML and hashing an event all recurse once per
level of nesting, and Python stops a recursion at a limit that counts the *caller's* frames too. Left
alone, an event nested a few hundred levels deep would anchor when the trace contract runs near the top
of the stack (the node) and fail with ``RecursionError`` when it runs deeper (``liangcao audit``, ``node
rebuild``, a test harness): honest peers would disagree about the same block. So every walk the contract
and the capture path make is preceded by one of these checks, which loop instead of recursing and refuse
anything deeper than ``limits.trace_depth_max``: the outcome is a pure function of the bytes, whatever the
stack depth of the caller, and the recursion that follows stays a few dozen frames deep.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from liangcao import limits
from liangcao.encoding import json_depth


class TooDeep(ValueError):
    """A document, event or context nests deeper than ``trace_depth_max``; the message names which."""

    def __init__(self, what: str, depth_max: int = limits.trace_depth_max) -> None:
        self.what = what
        super().__init__(f"{what} nests deeper than trace_depth_max={depth_max}")


def check_json(data: str | bytes, what: str, depth_max: int = limits.trace_depth_max) -> None:
    """Raise TooDeep if the JSON text ``data`` nests deeper than ``depth_max``: call it before decoding."""
    # No text nests deeper than it has opening brackets (those inside strings only add to the count), so the
    # common case needs no scan of its strings: the outcome is the same, at a tenth of the cost.
    if isinstance(data, str) and data.count("[") + data.count("{") <= depth_max:
        return
    if json_depth(data) > depth_max:
        raise TooDeep(what, depth_max)


def value_depth(value: Any, stop: int | None = None) -> int:
    """The deepest nesting of mappings and lists/tuples in a decoded value (a loop, not a recursion).

    With ``stop``, the walk ends as soon as it is deeper than ``stop`` (the result is then ``stop + 1``).
    """
    best = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > best:
            best = depth
            if stop is not None and best > stop:
                return stop + 1
        stack.extend((child, depth + 1) for child in children)
    return best


def check_value(value: Any, what: str, depth_max: int = limits.trace_depth_max) -> None:
    """Raise TooDeep if a decoded value nests deeper than ``depth_max``: call it before walking it."""
    if value_depth(value, depth_max) > depth_max:
        raise TooDeep(what, depth_max)
