"""Time in milliseconds since the epoch, and the node clock that block times come from."""

from __future__ import annotations

import threading
import time


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Clock:
    """The wall clock plus an offset that only ever moves forward.

    A node never stamps a block earlier than its chain's head: if the head is ahead of the wall clock (a
    node moved between hosts with skewed clocks, or a rehearsal that moved time forward), the clock starts
    from the head. ``advance`` moves time forward, for rehearsals such as the demo's 90 days to maturity;
    nothing in the protocol depends on it, because other peers check block times only for monotonicity.
    """

    def __init__(self, not_before_ms: int = 0) -> None:
        self._offset_ms = max(0, not_before_ms - now_ms())
        self._lock = threading.Lock()

    def now_ms(self) -> int:
        return now_ms() + self._offset_ms

    @property
    def offset_ms(self) -> int:
        return self._offset_ms

    def advance(self, ms: int) -> None:
        if ms < 0:
            raise ValueError("a clock only moves forward")
        with self._lock:
            self._offset_ms += ms
