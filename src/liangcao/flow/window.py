"""A sliding window of counters in ``buckets`` slots (Sentinel's LeapArray): constant memory, pure time."""

from __future__ import annotations

import math


class Window:
    """Counts ``calls``, ``slow``, ``errors``, ``rt_sum`` and the minimum latency over the last ``window_s``."""

    __slots__ = ("bucket_s", "calls", "errors", "n", "rt_min", "rt_sum", "slow", "starts")

    def __init__(self, window_s: float, buckets: int) -> None:
        self.n = buckets
        self.bucket_s = window_s / buckets
        self.starts = [-1] * buckets
        self.calls = [0] * buckets
        self.slow = [0] * buckets
        self.errors = [0] * buckets
        self.rt_sum = [0.0] * buckets
        self.rt_min = [math.inf] * buckets

    def _slot(self, now: float) -> int:
        index = int(now // self.bucket_s)
        slot = index % self.n
        if self.starts[slot] != index:
            self.starts[slot] = index
            self.calls[slot] = self.slow[slot] = self.errors[slot] = 0
            self.rt_sum[slot] = 0.0
            self.rt_min[slot] = math.inf
        return slot

    def add(self, now: float, rt_s: float, *, slow: bool = False, error: bool = False) -> None:
        s = self._slot(now)
        self.calls[s] += 1
        self.slow[s] += slow
        self.errors[s] += error
        self.rt_sum[s] += rt_s
        if rt_s < self.rt_min[s]:
            self.rt_min[s] = rt_s

    def _live(self, now: float) -> list[int]:
        index = int(now // self.bucket_s)
        return [i for i in range(self.n) if index - self.n < self.starts[i] <= index]

    def totals(self, now: float) -> tuple[int, int, int, float]:
        """(calls, slow, errors, rt_sum) over the window ending at ``now``."""
        live = self._live(now)
        return (
            sum(self.calls[i] for i in live),
            sum(self.slow[i] for i in live),
            sum(self.errors[i] for i in live),
            sum(self.rt_sum[i] for i in live),
        )

    def peak_rate(self, now: float) -> float:
        """The highest per-second completion rate of one complete slot in the window (0 if none)."""
        index = int(now // self.bucket_s)
        done = [self.calls[i] for i in range(self.n) if index - self.n < self.starts[i] < index]
        return max(done, default=0) / self.bucket_s

    def min_rt(self, now: float) -> float:
        return min((self.rt_min[i] for i in self._live(now)), default=math.inf)

    def reset(self) -> None:
        self.starts = [-1] * self.n
