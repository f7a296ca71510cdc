"""Caches for the pure functions of short texts the EPCIS code computes for every event.

The values that recur from event to event (business steps, places, identifiers of a case's items, times) are
short, and caching their normal forms saves most of the per-event work. A plain ``functools.lru_cache`` keyed
by the text is bounded in entries, not in bytes: 65,536 entries of event-sized texts (``trace_event_bytes_max``
is 24 KB) would hold gigabytes in every peer's node and workers, and a member may send such texts on purpose.
So a call whose texts are long is computed and not kept.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache, wraps
from typing import ParamSpec, TypeVar, cast

P = ParamSpec("P")
T = TypeVar("T")

#: Characters (all of a call's text arguments together) above which a call is computed and not cached
TEXT_CACHED_CHARS_MAX = 512


def text_cache(maxsize: int) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """``lru_cache(maxsize)`` for a pure function of texts, keeping only calls of at most
    ``TEXT_CACHED_CHARS_MAX`` characters."""

    def wrap(fn: Callable[P, T]) -> Callable[P, T]:
        cached = cast("Callable[P, T]", lru_cache(maxsize=maxsize)(fn))  # its arguments are texts: hashable

        @wraps(fn)
        def call(*args: P.args, **kwargs: P.kwargs) -> T:
            size = sum(len(a) for a in args if isinstance(a, str))
            size += sum(len(a) for a in kwargs.values() if isinstance(a, str))
            if size <= TEXT_CACHED_CHARS_MAX:
                return cached(*args, **kwargs)
            return fn(*args, **kwargs)

        return call

    return wrap
