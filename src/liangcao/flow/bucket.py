"""A token bucket with warm-up, kept as one timestamp (GCRA) plus a reservoir of stored permits.

Theory of operation. A bucket of depth ``burst`` refilled at ``rate`` per second admits a call when it holds a
token. The same admissions follow from one number, ``tat`` (the theoretical arrival time of the next call at
the steady rate): each admitted call pushes ``tat`` one interval (``1/rate``) ahead, and a call at ``now`` is
admitted when ``tat - now <= (burst - 1) / rate``. The bucket is full when ``tat <= now``; the wait of a
refused call is exactly the time until ``tat`` falls back inside the tolerance, which is the ``Retry-After``.

Warm-up (Sentinel's WarmUp rule, after Guava's SmoothWarmingUp): a service that has been idle has cold caches
and connection pools, so it is not let through at full rate at once. A reservoir of *stored permits* fills
while the bucket is idle (from empty to ``stored_max`` over ``warmup_s``) and is drained one per admitted
call. The interval a call costs depends on the reservoir: the stable interval ``1/rate`` below a threshold,
rising linearly to ``cold_factor/rate`` when the reservoir is full. Starting cold under full load, the rate
therefore begins at ``rate/cold_factor`` and reaches ``rate`` after exactly ``warmup_s`` (the area of the
trapezoid between the threshold and ``stored_max``). With ``warmup_s = 0`` the reservoir is empty for ever
and the bucket is plain.

A priority ``share`` below 1 shrinks the tolerance: such a call may draw the bucket down only to
``(1 - share)`` of its depth, so the rest stays for more important work.

Pure: the caller passes ``now`` (seconds, any origin) to every method.
"""

from __future__ import annotations

import math

#: Comparisons of times allow this much (seconds) for float rounding: 10 calls of 0.1 s are 1.0 s.
EPS_S = 1e-9


class TokenBucket:
    """Rate ``rate_per_s`` with depth ``burst`` (0: one second's worth), warm-up over ``warmup_s``."""

    __slots__ = (
        "burst",
        "cold_factor",
        "cooldown",
        "rate",
        "slope",
        "stable",
        "stored",
        "stored_max",
        "tat",
        "threshold",
        "tolerance",
        "warmup_s",
    )

    def __init__(
        self, rate_per_s: float, burst: int = 0, warmup_s: float = 0.0, cold_factor: float = 3.0, *, now: float
    ) -> None:
        if not rate_per_s > 0:
            raise ValueError("a token bucket needs a positive rate")
        self.rate = float(rate_per_s)
        self.burst = burst if burst > 0 else max(1, math.ceil(self.rate))
        self.warmup_s = float(warmup_s)
        self.cold_factor = float(cold_factor)
        self.stable = 1.0 / self.rate
        self.tolerance = (self.burst - 1) * self.stable
        if self.warmup_s > 0 and self.cold_factor > 1:
            cold = self.stable * self.cold_factor
            self.threshold = 0.5 * self.warmup_s / self.stable
            self.stored_max = self.threshold + 2.0 * self.warmup_s / (self.stable + cold)
            self.slope = (cold - self.stable) / (self.stored_max - self.threshold)
            self.cooldown = self.warmup_s / self.stored_max  # seconds of idleness per stored permit
        else:
            self.threshold = self.stored_max = self.slope = 0.0
            self.cooldown = math.inf
        self.stored = self.stored_max  # start cold
        self.tat = now

    def _sync(self, now: float) -> None:
        # Idle time (now past tat) fills the reservoir: the service cools down while nobody uses it.
        if now > self.tat:
            if self.stored < self.stored_max:
                self.stored = min(self.stored_max, self.stored + (now - self.tat) / self.cooldown)
            self.tat = now

    def _interval_at(self, stored: float) -> float:
        return self.stable + max(0.0, stored - self.threshold) * self.slope

    def cost(self, n: int = 1) -> float:
        """Seconds of ``tat`` that ``n`` permits cost now (stored permits above the threshold cost more)."""
        take = min(float(n), self.stored)
        above = max(0.0, self.stored - self.threshold)
        take_above = min(above, take)
        # The trapezoid under the interval line between the reservoir now and after the take.
        seconds = take_above * (self._interval_at(self.stored) + self._interval_at(self.stored - take_above)) / 2.0
        return seconds + (n - take_above) * self.stable

    def wait(self, now: float, share: float = 1.0) -> float:
        """Seconds until a call of this ``share`` could pass (0.0: it passes now). Changes nothing but time."""
        self._sync(now)
        ahead = self.tat - now
        allowed = self.tolerance * share
        return 0.0 if ahead <= allowed + EPS_S else ahead - allowed

    def take(self, now: float, n: int = 1) -> None:
        """Use ``n`` permits (after :meth:`wait` said 0.0)."""
        self._sync(now)
        if self.stored_max == 0.0:
            self.tat += n * self.stable  # no warm-up: every permit costs the stable interval
            return
        self.tat += self.cost(n)
        self.stored = max(0.0, self.stored - n)

    def try_take(self, now: float, share: float = 1.0) -> float:
        """Take one permit if a call of ``share`` passes now (returns 0.0), else the wait in seconds."""
        wait = self.wait(now, share)
        if wait == 0.0:
            self.take(now)
        return wait

    def take_upto(self, now: float, n: int, share: float = 1.0) -> int:
        """Take as many permits as pass now, at most ``n`` (a lease for the cluster token server)."""
        got = 0
        while got < n and self.wait(now, share) == 0.0:
            self.take(now)
            got += 1
        return got

    def tokens(self, now: float) -> float:
        """Tokens in the bucket at ``now`` (for status; changes nothing)."""
        ahead = max(0.0, self.tat - now)
        return max(0.0, min(float(self.burst), (self.tolerance - ahead) / self.stable + 1.0))

    def current_rate(self) -> float:
        """The rate the warm-up allows at the moment (``rate`` once warm)."""
        return 1.0 / self._interval_at(self.stored)

    def carry_from(self, old: TokenBucket, now: float) -> None:
        """Keep what ``old`` had used when the rule changes: same fill level and warmth, new rate."""
        old._sync(now)
        used = (old.tat - now) / old.stable  # tokens missing from the old bucket
        self.tat = now + max(0.0, min(used, float(self.burst))) * self.stable
        if self.stored_max > 0:
            warm = 0.0 if old.stored_max == 0 else old.stored / old.stored_max
            self.stored = warm * self.stored_max
