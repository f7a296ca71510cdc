"""World state views: the narrow protocol the executor reads through, and in-memory implementations.

Keys are strings compared by code point, which is the same order as their UTF-8 bytes (the store keeps
keys as UTF-8 BLOBs, so SQLite's ordering agrees with Python's). Values are canonical JSON bytes.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import Protocol


class StateView(Protocol):
    """What the executor may read. Implementations: :class:`MemoryState`, the SQLite store."""

    def get(self, key: str) -> bytes | None:
        """The value at ``key``, or None."""
        ...

    def range(self, prefix: str) -> Iterator[tuple[str, bytes]]:
        """Every (key, value) whose key starts with ``prefix``, in ascending key order, lazily."""
        ...

    def tx_seen(self, tx_id: str) -> bool:
        """Whether a transaction with this id was already consumed by an earlier block."""
        ...


def present(view: StateView, keys: list[str]) -> set[str]:
    """The keys among ``keys`` that hold a value: in one read where the view can (the store answers many keys
    in one statement, so the commit thread leaves the interpreter lock to SQLite once, not once per key, and
    does not queue for it again behind the API threads each time), else key by key."""
    many = getattr(view, "present", None)
    if many is not None:
        found: set[str] = many(keys)
        return found
    return {k for k in keys if view.get(k) is not None}


class MemoryState:
    """A complete state in memory: the twin of the store for tests, audit replays and simulations."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.seen: set[str] = set()
        self._sorted: list[str] | None = None

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def range(self, prefix: str) -> Iterator[tuple[str, bytes]]:
        if self._sorted is None:
            self._sorted = sorted(self.data)
        keys = self._sorted
        i = bisect.bisect_left(keys, prefix)
        while i < len(keys) and keys[i].startswith(prefix):
            yield keys[i], self.data[keys[i]]
            i += 1

    def scan(self, lo: str, hi: str) -> Iterator[tuple[str, bytes]]:
        """(key, value) with ``lo <= key < hi``, ascending (the store's ``scan``)."""
        if self._sorted is None:
            self._sorted = sorted(self.data)
        keys = self._sorted
        i = bisect.bisect_left(keys, lo)
        while i < len(keys) and keys[i] < hi:
            yield keys[i], self.data[keys[i]]
            i += 1

    def tx_seen(self, tx_id: str) -> bool:
        return tx_id in self.seen

    def apply(self, writes: dict[str, bytes | None], consumed: list[str]) -> None:
        self._sorted = None
        for key, value in writes.items():
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value
        self.seen.update(consumed)


class Overlay:
    """Buffered writes over a base view; reads see the buffer first. Used per block and per transaction."""

    def __init__(self, base: StateView) -> None:
        self.base = base
        self.writes: dict[str, bytes | None] = {}
        self.consumed: set[str] = set()

    def get(self, key: str) -> bytes | None:
        if key in self.writes:
            return self.writes[key]
        return self.base.get(key)

    def range(self, prefix: str) -> Iterator[tuple[str, bytes]]:
        mine = sorted(k for k in self.writes if k.startswith(prefix))
        i = 0
        for key, value in self.base.range(prefix):
            while i < len(mine) and mine[i] < key:
                v = self.writes[mine[i]]
                if v is not None:
                    yield mine[i], v
                i += 1
            if i < len(mine) and mine[i] == key:
                v = self.writes[mine[i]]
                if v is not None:
                    yield key, v
                i += 1
                continue
            yield key, value
        while i < len(mine):
            v = self.writes[mine[i]]
            if v is not None:
                yield mine[i], v
            i += 1

    def tx_seen(self, tx_id: str) -> bool:
        return tx_id in self.consumed or self.base.tx_seen(tx_id)

    def present(self, keys: list[str]) -> set[str]:
        """:func:`present` through the buffer: its writes (and deletes) first, the base for the rest."""
        mine = {k for k in keys if k in self.writes and self.writes[k] is not None}
        return mine | present(self.base, [k for k in keys if k not in self.writes])

    def merge(self, child: Overlay) -> None:
        self.writes.update(child.writes)
        self.consumed.update(child.consumed)
