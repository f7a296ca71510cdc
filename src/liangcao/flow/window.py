"""A sliding window of counters in ``buckets`` slots (Sentinel's LeapArray): constant memory, pure time.

Running totals are kept as slots enter and leave the window, so reading them costs nothing per slot.
"""

from __future__ import annotations

import math


class Window:
    """Counts ``calls``, ``slow``, ``errors``, ``rt_sum`` and the minimum latency over the last ``window_s``."""

    __slots__ = (
        "bucket_s",
        "calls",
        "errors",
        "last",
        "n",
        "rt_min",
        "rt_sum",
        "slow",
        "starts",
        "t_calls",
        "t_errors",
        "t_rt",
        "t_slow",
    )

    def __init__(self, window_s: float, buckets: int) -> None:
        self.n = buckets
        self.bucket_s = window_s / buckets
        self.reset()

    def reset(self) -> None:
        n = self.n
        self.starts = [-1] * n
        self.calls = [0] * n
        self.slow = [0] * n
        self.errors = [0] * n
        self.rt_sum = [0.0] * n
        self.rt_min = [math.inf] * n
        self.t_calls = self.t_slow = self.t_errors = 0
        self.t_rt = 0.0
        self.last = -1  # the newest slot index the totals have seen

    def _advance(self, now: float) -> int:
        """Drop the slots that left the window by ``now``; the current slot index."""
        index = int(now // self.bucket_s)
        if index > self.last:
            first = max(self.last + 1, index - self.n + 1)
            for i in range(first, index + 1):
                s = i % self.n
                if self.starts[s] != -1:
                    self.t_calls -= self.calls[s]
                    self.t_slow -= self.slow[s]
                    self.t_errors -= self.errors[s]
                    self.t_rt -= self.rt_sum[s]
                self.starts[s] = i
                self.calls[s] = self.slow[s] = self.errors[s] = 0
                self.rt_sum[s] = 0.0
                self.rt_min[s] = math.inf
            if index - self.last >= self.n:
                self.t_calls = self.t_slow = self.t_errors = 0  # every slot was replaced: no float drift
                self.t_rt = 0.0
            self.last = index
        return index

    def add(self, now: float, rt_s: float, *, slow: bool = False, error: bool = False) -> None:
        index = self._advance(now)
        if index < self.last - self.n + 1:
            return  # a clock that went back past the window: nothing left to count it in
        s = index % self.n
        if self.starts[s] != index:
            return
        self.calls[s] += 1
        self.t_calls += 1
        if slow:
            self.slow[s] += 1
            self.t_slow += 1
        if error:
            self.errors[s] += 1
            self.t_errors += 1
        self.rt_sum[s] += rt_s
        self.t_rt += rt_s
        if rt_s < self.rt_min[s]:
            self.rt_min[s] = rt_s

    def totals(self, now: float) -> tuple[int, int, int, float]:
        """(calls, slow, errors, rt_sum) over the window ending at ``now``."""
        self._advance(now)
        return self.t_calls, self.t_slow, self.t_errors, max(0.0, self.t_rt)

    def peak_rate(self, now: float) -> float:
        """The highest per-second completion rate of one complete slot in the window (0 if none)."""
        index = self._advance(now)
        done = [self.calls[i] for i in range(self.n) if index - self.n < self.starts[i] < index]
        return max(done, default=0) / self.bucket_s

    def min_rt(self, now: float) -> float:
        index = self._advance(now)
        return min(
            (self.rt_min[i] for i in range(self.n) if index - self.n < self.starts[i] <= index), default=math.inf
        )

    def min_mean_rt(self, now: float, calls_min: int = 3) -> float:
        """The lowest mean latency of a slot in the window with at least ``calls_min`` calls (else the lowest
        single latency): the latency of the traffic mix without queueing, robust to one fast outlier."""
        index = self._advance(now)
        live = [i for i in range(self.n) if index - self.n < self.starts[i] <= index]
        means = [self.rt_sum[i] / self.calls[i] for i in live if self.calls[i] >= calls_min]
        return min(means) if means else min((self.rt_min[i] for i in live), default=math.inf)
