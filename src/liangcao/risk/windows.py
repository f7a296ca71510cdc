"""Sliding-window counters (1 minute, 1 hour, 1 day) in bounded memory, and a bounded LRU table of them.

Theory of operation
-------------------
Each window of length ``W`` is a ring of ``n`` buckets of ``g = W / n`` milliseconds. An event at time ``t``
lands in bucket ``k = t // g``; the window at time ``now`` holds the buckets ``k_now - n + 1 .. k_now``, so an
event stays counted for at least ``W - g`` and at most ``W`` (the granularity is ``g``: 10 s for the minute,
10 min for the hour, 2 h for the day). Moving to a later bucket clears the buckets passed over and subtracts
them from running totals, so both adding and reading are O(1) amortised, whatever the traffic. Time that goes
backwards (a manual clock in a test) counts in the current bucket: windows never un-expire.
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

import msgspec

#: (name, length ms, buckets). The order is the order of the tuples :meth:`Windows.counts` returns.
WINDOWS: tuple[tuple[str, int, int], ...] = (
    ("1m", 60_000, 6),
    ("1h", 3_600_000, 6),
    ("1d", 86_400_000, 12),
)
_GRAIN = tuple(length // n for _, length, n in WINDOWS)
_N = tuple(n for _, _, n in WINDOWS)
for _name, _length, _n in WINDOWS:
    if _length % _n:
        raise ValueError(f"window {_name}: {_length} ms is not a whole number of {_n} buckets")
    if (_length // _n) % _GRAIN[0]:
        raise ValueError(f"window {_name}: its grain must be a multiple of the finest grain (the fast path)")


_OFF = tuple(sum(_N[:w]) for w in range(3))  # where each ring starts in the flat bucket array
_BUCKETS = sum(_N)


def _zeros(n: int) -> array[int]:
    return array("q", bytes(8 * n))


_ZERO = tuple(_zeros(n) for n in _N)


# One array per Windows: counts, totals, ring positions, then (if kept) amounts. One object, not four: the
# cyclic collector tracks every ``array`` (it is a container type) and its full passes walk them all.
_TOT = _BUCKETS  # totals: counts of the three windows, then their amounts
_LAST = _TOT + 6  # the bucket number each ring is at (-1: never used)
_AMT = _LAST + 3  # bucket amounts, for the windows that sum amounts
_PLAIN = array("q", bytes(8 * _LAST)) + array("q", [-1, -1, -1])
_WITH_AMOUNTS = _PLAIN + _zeros(_BUCKETS)


class Windows(msgspec.Struct, gc=False):
    """Event counts (and optionally amount sums) over the sliding windows of :data:`WINDOWS`.

    One flat array, not lists: an engine holds hundreds of thousands of these. The struct is made with
    ``gc=False`` (it refers to no container that could close a cycle), and its one array is the only object
    the collector still sees of it.
    """

    a: array[int] = msgspec.field(default_factory=lambda: array("q", _PLAIN))
    sums: bool = False  # whether the array keeps bucket amounts
    edge: int = 0  # before this time no ring moves (the finest grain divides the others): the fast path

    @classmethod
    def with_amounts(cls) -> Windows:
        return cls(array("q", _WITH_AMOUNTS), True)

    def _advance(self, now_ms: int) -> None:
        if now_ms < self.edge:
            return
        a = self.a
        sums = self.sums
        for w in range(3):
            k = now_ms // _GRAIN[w]
            prev = a[_LAST + w]
            if k <= prev:
                break  # the grains nest on aligned boundaries: if this ring did not move, no larger one did
            nb = _N[w]
            off = _OFF[w]
            if k - prev >= nb:  # the whole ring expired (or was never used): clear it at C speed
                a[off : off + nb] = _ZERO[w]
                a[_TOT + w] = 0
                if sums:
                    a[_AMT + off : _AMT + off + nb] = _ZERO[w]
                    a[_TOT + 3 + w] = 0
            else:
                for j in range(prev + 1, k + 1):
                    i = off + j % nb
                    a[_TOT + w] -= a[i]
                    a[i] = 0
                    if sums:
                        a[_TOT + 3 + w] -= a[_AMT + i]
                        a[_AMT + i] = 0
            a[_LAST + w] = k
        self.edge = (a[_LAST] + 1) * _GRAIN[0]

    def read_add(self, now_ms: int, amount: int = 0) -> tuple[int, int, int, int, int, int]:
        """Counts and amounts of the three windows before this event, then the event added (one advance)."""
        self._advance(now_ms)
        a = self.a
        before = (a[_TOT], a[_TOT + 1], a[_TOT + 2], a[_TOT + 3], a[_TOT + 4], a[_TOT + 5])
        sums = self.sums
        for w in range(3):
            i = _OFF[w] + a[_LAST + w] % _N[w]
            a[i] += 1
            a[_TOT + w] += 1
            if sums:
                a[_AMT + i] += amount
                a[_TOT + 3 + w] += amount
        return before

    def add(self, now_ms: int, amount: int = 0) -> None:
        """Count one event (of ``amount``) at ``now_ms``."""
        self.read_add(now_ms, amount)

    def counts(self, now_ms: int) -> tuple[int, int, int]:
        """Events in the last minute, hour and day at ``now_ms``."""
        self._advance(now_ms)
        a = self.a
        return a[_TOT], a[_TOT + 1], a[_TOT + 2]

    def amounts(self, now_ms: int) -> tuple[int, int, int]:
        """Amounts (fen) in the last minute, hour and day at ``now_ms`` (zeros without amounts)."""
        self._advance(now_ms)
        a = self.a
        return a[_TOT + 3], a[_TOT + 4], a[_TOT + 5]


K = TypeVar("K")
V = TypeVar("V")


class LruTable(Generic[K, V]):
    """A table bounded to ``size_max`` entries, evicting fairly: a segmented LRU (SLRU).

    A key seen once waits in *probation*; seen again, it moves to the *protected* segment (at most
    ``protected_share`` of the table; its least recent entry falls back to probation when it is full). A new
    key evicts the least recent entry of probation, and a protected entry only when probation is empty. So a
    flood of one-off keys (unique devices, IPs, fake shoppers) churns probation and cannot erase the regulars:
    a taken-over account keeps the history that makes the thief's device look new. Both segments are
    ``OrderedDict``: evicting the oldest is O(1) (``next(iter(dict))`` after many deletions from the front of
    a plain dict scans its dead slots, which made a full table quadratic).
    """

    __slots__ = ("evicted", "factory", "probation", "protected", "protected_max", "size_max")

    def __init__(self, size_max: int, factory: Callable[[], V], protected_share: float = 0.8) -> None:
        if size_max <= 0:
            raise ValueError("size_max must be positive")
        if not 0.0 <= protected_share < 1.0:
            raise ValueError("protected_share must be within [0, 1)")
        self.probation: OrderedDict[K, V] = OrderedDict()
        self.protected: OrderedDict[K, V] = OrderedDict()
        self.size_max = size_max
        self.protected_max = int(size_max * protected_share)
        self.factory = factory
        self.evicted = 0

    def touch(self, key: K) -> tuple[V, bool]:
        """The entry for ``key`` (made if absent) marked most recently used, and whether it was new."""
        protected = self.protected
        value = protected.get(key)
        if value is not None:
            protected.move_to_end(key)
            return value, False
        probation = self.probation
        value = probation.pop(key, None)
        if value is not None:  # seen twice: a regular
            protected[key] = value
            if len(protected) > self.protected_max:
                old, old_value = protected.popitem(last=False)
                probation[old] = old_value
            return value, False
        value = self.factory()
        if len(probation) + len(protected) >= self.size_max:
            (probation if probation else protected).popitem(last=False)
            self.evicted += 1
        probation[key] = value
        return value, True

    def get(self, key: K) -> V | None:
        """The entry for ``key`` without marking it used, or None."""
        value = self.protected.get(key)
        return value if value is not None else self.probation.get(key)

    def __len__(self) -> int:
        return len(self.probation) + len(self.protected)

    def __contains__(self, key: object) -> bool:
        return key in self.protected or key in self.probation

    def __iter__(self) -> Iterator[K]:
        yield from self.protected
        yield from self.probation
