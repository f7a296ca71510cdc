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

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

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


class Windows:
    """Event counts (and optionally amount sums) over the sliding windows of :data:`WINDOWS`."""

    __slots__ = ("amt", "cnt", "edge", "last", "n", "s")

    def __init__(self, with_amount: bool = True) -> None:
        self.edge = 0  # before this time no ring moves (the finest grain divides the others): the fast path
        self.last = [-1, -1, -1]  # the bucket number each ring was last moved to
        self.cnt = [[0] * n for n in _N]
        self.amt: list[list[int]] | None = [[0] * n for n in _N] if with_amount else None
        self.n = [0, 0, 0]  # running totals of counts per window
        self.s = [0, 0, 0]  # running totals of amounts per window

    def _advance(self, now_ms: int) -> None:
        if now_ms < self.edge:
            return
        last = self.last
        for w in range(3):
            k = now_ms // _GRAIN[w]
            prev = last[w]
            if k <= prev:
                continue
            nb = _N[w]
            cs = self.cnt[w]
            amt = self.amt
            if prev < 0 or k - prev >= nb:
                for i in range(nb):
                    cs[i] = 0
                self.n[w] = 0
                if amt is not None:
                    a = amt[w]
                    for i in range(nb):
                        a[i] = 0
                    self.s[w] = 0
            else:
                for j in range(prev + 1, k + 1):
                    i = j % nb
                    self.n[w] -= cs[i]
                    cs[i] = 0
                    if amt is not None:
                        self.s[w] -= amt[w][i]
                        amt[w][i] = 0
            last[w] = k
        self.edge = (last[0] + 1) * _GRAIN[0]

    def add(self, now_ms: int, amount: int = 0) -> None:
        """Count one event (of ``amount``) at ``now_ms``."""
        self._advance(now_ms)
        last = self.last
        for w in range(3):
            i = last[w] % _N[w]
            self.cnt[w][i] += 1
            self.n[w] += 1
            if self.amt is not None:
                self.amt[w][i] += amount
                self.s[w] += amount

    def read_add(self, now_ms: int, amount: int = 0) -> tuple[int, int, int, int, int, int]:
        """Counts and amounts of the three windows before this event, then the event added (one advance)."""
        self._advance(now_ms)
        n, s = self.n, self.s
        before = (n[0], n[1], n[2], s[0], s[1], s[2])
        last = self.last
        cnt = self.cnt
        amt = self.amt
        for w in range(3):
            i = last[w] % _N[w]
            cnt[w][i] += 1
            n[w] += 1
            if amt is not None:
                amt[w][i] += amount
                s[w] += amount
        return before

    def counts(self, now_ms: int) -> tuple[int, int, int]:
        """Events in the last minute, hour and day at ``now_ms``."""
        self._advance(now_ms)
        n = self.n
        return n[0], n[1], n[2]

    def amounts(self, now_ms: int) -> tuple[int, int, int]:
        """Amounts (fen) in the last minute, hour and day at ``now_ms`` (zeros without amounts)."""
        self._advance(now_ms)
        s = self.s
        return s[0], s[1], s[2]


K = TypeVar("K")
V = TypeVar("V")


class LruTable(Generic[K, V]):
    """A dict bounded to ``size_max`` entries that evicts the least recently used one (insertion order)."""

    __slots__ = ("_d", "evicted", "factory", "size_max")

    def __init__(self, size_max: int, factory: Callable[[], V]) -> None:
        if size_max <= 0:
            raise ValueError("size_max must be positive")
        self._d: dict[K, V] = {}
        self.size_max = size_max
        self.factory = factory
        self.evicted = 0

    def touch(self, key: K) -> tuple[V, bool]:
        """The entry for ``key`` (made if absent) marked most recently used, and whether it was new."""
        d = self._d
        value = d.pop(key, None)
        fresh = value is None
        if value is None:
            value = self.factory()
            if len(d) >= self.size_max:
                del d[next(iter(d))]
                self.evicted += 1
        d[key] = value
        return value, fresh

    def get(self, key: K) -> V | None:
        """The entry for ``key`` without marking it used, or None."""
        return self._d.get(key)

    def __len__(self) -> int:
        return len(self._d)

    def __contains__(self, key: object) -> bool:
        return key in self._d

    def __iter__(self) -> Iterator[K]:
        return iter(self._d)
