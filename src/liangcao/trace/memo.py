"""Caches for the pure functions of short texts the EPCIS code computes for every event.

The values that recur from event to event (business steps, places, identifiers of a case's items, times) are
short, and caching their normal forms saves most of the per-event work. A plain ``functools.lru_cache`` keyed
by the text is bounded in entries, not in bytes: 65,536 entries of event-sized texts (``trace_event_bytes_max``
is 24 KB) would hold gigabytes in every peer's node and workers, and a member may send such texts on purpose.
So a call is kept only when its texts are short and ASCII (a 4-byte character counts as one character but
takes four bytes, and an identifier's normal form percent-encodes it into twelve): at most
``TEXT_CACHED_CHARS_MAX`` characters, whose normal forms are at most three times that (a percent-encoded
ASCII character), so a cache of 65,536 entries holds tens of megabytes at worst, whatever members send.
The identifiers, steps and times that recur are ASCII and far shorter.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache, wraps
from typing import Any, ParamSpec, TypeVar, cast

P = ParamSpec("P")
T = TypeVar("T")

#: Characters (all of a call's text arguments together) above which a call is computed and not cached
TEXT_CACHED_CHARS_MAX = 256


def text_cache(maxsize: int) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """``lru_cache(maxsize)`` for a pure function of one or two texts (positional), keeping only calls whose
    texts are ASCII and ``TEXT_CACHED_CHARS_MAX`` characters at most together. On every event's path many
    times: the check is written inline, no loop over the arguments."""

    def wrap(fn: Callable[P, T]) -> Callable[P, T]:
        cached: Any = lru_cache(maxsize=maxsize)(fn)
        plain: Any = fn
        limit = TEXT_CACHED_CHARS_MAX

        @wraps(fn)
        def call(text: str, other: str = "") -> T:
            if len(text) + len(other) <= limit and text.isascii() and other.isascii():
                return cast(T, cached(text, other) if other else cached(text))
            return cast(T, plain(text, other) if other else plain(text))

        return cast("Callable[P, T]", call)

    return wrap
