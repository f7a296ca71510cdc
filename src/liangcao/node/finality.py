"""Which committed heights a peer counts as final, and which it must chase attestations for.

A height is *final* at a peer once attestations of its block and state hash by peers of a quorum of
organisations are in the peer's store (``Config.attesting_org`` decided which count before they were
stored). :class:`Finality` keeps that as ``final_upto`` (every height up to it is final) and the few final
heights above it, so the oldest non-final height, how many there are and how old the oldest is are known at
once: health reports them, and the node fetches attestations for the old ones and re-announces its own
(``Node._maintain``).

It is rebuilt from the store when the node starts (one grouped SQL pass over the attestations table), then
kept up to date by the commit thread as blocks are committed and attestations stored. Reads from API threads
take the lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from liangcao.ledger.store import Store

#: Heights whose commit time this peer remembers (for the age of a non-final block); older ones use the
#: block's own time.
COMMITTED_AT_MAX = 100_000


@dataclass(frozen=True)
class FinalityView:
    """What health shows: the final prefix, the non-final heights and the oldest one's height and time."""

    final_upto: int
    nonfinal: int
    oldest_nonfinal: int | None
    oldest_nonfinal_since_ms: int | None
    quorum: int


class Finality:
    def __init__(self, quorum: int = 1) -> None:
        self.lock = threading.Lock()
        self.quorum = quorum
        self.head = 0
        self.final_upto = 0  # genesis is final by definition
        self.above: set[int] = set()  # final heights above final_upto
        self.committed_at: dict[int, int] = {}  # height -> when this peer committed it (ms), while not final

    # ---- building ---------------------------------------------------------------------------------------
    def load(self, store: Store, head: int, quorum: int) -> None:
        """Count the stored attestations of every height (organisations = the member ids' prefixes)."""
        final = store.final_heights(quorum)
        with self.lock:
            self.quorum = quorum
            self.head = head
            self.final_upto = 0
            self.above = set()
            for h in final:
                if h > head:
                    continue
                if h == self.final_upto + 1:
                    self.final_upto = h
                elif h > self.final_upto:
                    self.above.add(h)
            self._advance()

    def _advance(self) -> None:
        while self.final_upto + 1 in self.above:
            self.above.discard(self.final_upto + 1)
            self.final_upto += 1
            self.committed_at.pop(self.final_upto, None)
        if self.final_upto > self.head:
            self.head = self.final_upto

    # ---- updates (commit thread) ------------------------------------------------------------------------
    def committed(self, height: int, now_ms: int) -> None:
        with self.lock:
            self.head = max(self.head, height)
            if len(self.committed_at) < COMMITTED_AT_MAX:
                self.committed_at[height] = now_ms

    def attested(self, height: int, orgs: int) -> bool:
        """Record that ``orgs`` organisations now attest ``height``; whether it just became final."""
        with self.lock:
            if orgs < self.quorum or height <= self.final_upto or height in self.above or height > self.head:
                return False
            self.committed_at.pop(height, None)
            if height == self.final_upto + 1:
                self.final_upto = height
                self._advance()
            else:
                self.above.add(height)
            return True

    def is_final(self, height: int) -> bool:
        with self.lock:
            return height <= self.final_upto or height in self.above

    # ---- reads ------------------------------------------------------------------------------------------
    def nonfinal(self, limit: int) -> Iterator[int]:
        """Non-final heights from the oldest up, at most ``limit``, looking at most ``16 * limit`` heights
        past the oldest (the oldest are chased first; a snapshot)."""
        out: list[int] = []
        with self.lock:
            for h in range(self.final_upto + 1, min(self.head, self.final_upto + 16 * limit) + 1):
                if len(out) >= limit:
                    break
                if h not in self.above:
                    out.append(h)
        return iter(out)

    def since_ms(self, height: int, block_time_ms: Callable[[int], int | None]) -> int | None:
        """When ``height`` was committed here (this run), else its block's time."""
        with self.lock:
            t = self.committed_at.get(height)
        return t if t is not None else block_time_ms(height)

    def view(self, block_time_ms: Callable[[int], int | None]) -> FinalityView:
        with self.lock:
            oldest = self.final_upto + 1 if self.final_upto < self.head else None
            nonfinal = self.head - self.final_upto - len(self.above)
            final_upto, quorum = self.final_upto, self.quorum
        since = self.since_ms(oldest, block_time_ms) if oldest is not None else None
        return FinalityView(final_upto, nonfinal, oldest, since, quorum)
