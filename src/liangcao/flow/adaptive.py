"""An adaptive concurrency limit that follows measured latency (Netflix concurrency-limits' Gradient2).

Theory of operation. Latency is sampled per window (the mean of the calls that finished in it, once it holds
``window_samples_min`` of them). A long-term latency is an exponential average over about ``long_windows``
windows. When the short-term latency rises above ``tolerance`` x the long-term one, queues are building
somewhere downstream, so the limit shrinks by the ratio (the *gradient*, at most halving it per window);
while latency holds, the gradient is 1 and the limit grows by a queue allowance of ``sqrt(limit)``. The new
limit is smoothed (``smoothing``) and clamped to ``[limit_min, limit_max]``. Two guards from Gradient2: the
limit does not grow while the service is not using half of it (no evidence it could take more), and a
long-term latency more than twice the short-term one is pulled down 5 % per window, so a past slow spell does
not keep the limit high for ever.

Envoy's adaptive concurrency filter uses the same gradient against a *minimum* latency it re-measures by
periodically forcing the limit down; Gradient2 needs no such probe phase, so nothing is shed to measure.
"""

from __future__ import annotations

import math

from liangcao.flow.rules import AdaptiveRule


class GradientLimit:
    __slots__ = ("count", "inflight_peak", "limit", "long_rt", "rt_sum", "rule", "start", "windows")

    def __init__(self, rule: AdaptiveRule, now: float) -> None:
        self.rule = rule
        self.limit = float(rule.limit_initial)
        self.long_rt = 0.0
        self.windows = 0
        self.start = now
        self.count = 0
        self.rt_sum = 0.0
        self.inflight_peak = 0

    def reconfigure(self, rule: AdaptiveRule) -> None:
        self.rule = rule
        self.limit = min(float(rule.limit_max), max(float(rule.limit_min), self.limit))

    @property
    def value(self) -> int:
        return int(self.limit)

    def sample(self, now: float, rt_s: float, inflight: int) -> None:
        """One finished call (its latency and the in-flight count when it started)."""
        self.count += 1
        self.rt_sum += rt_s
        self.inflight_peak = max(self.inflight_peak, inflight)
        if now - self.start >= self.rule.window_s and self.count >= self.rule.window_samples_min:
            self._update(self.rt_sum / self.count, self.inflight_peak)
            self.start, self.count, self.rt_sum, self.inflight_peak = now, 0, 0.0, 0

    def _update(self, short_rt: float, inflight: int) -> None:
        r = self.rule
        self.windows += 1
        if self.windows <= 1 or self.long_rt == 0.0:
            self.long_rt = short_rt
        else:
            # A plain mean over the first long_windows, an exponential average after (as Netflix's warm-up).
            factor = 1.0 / self.windows if self.windows <= r.long_windows else 2.0 / (r.long_windows + 1)
            self.long_rt += (short_rt - self.long_rt) * factor
        if short_rt > 0 and self.long_rt / short_rt > 2.0:
            self.long_rt *= 0.95
        if inflight < self.limit / 2:
            return  # the service is not using the limit: no evidence either way
        gradient = 1.0 if short_rt <= 0 else max(0.5, min(1.0, r.tolerance * self.long_rt / short_rt))
        target = self.limit * gradient + math.sqrt(self.limit)
        new = self.limit * (1.0 - r.smoothing) + target * r.smoothing
        self.limit = min(float(r.limit_max), max(float(r.limit_min), new))

    def status(self) -> dict[str, float]:
        return {"limit": self.value, "long_rt_ms": round(self.long_rt * 1000.0, 3), "windows": self.windows}
