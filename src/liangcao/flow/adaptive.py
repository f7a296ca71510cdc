"""An adaptive concurrency limit that follows measured latency (Netflix's Gradient2, Envoy's min-RTT probe).

Theory of operation. Latency is sampled per window: the mean of the calls that finished in it, once it holds
``window_samples_min`` of them. A *baseline* latency is the lowest window mean seen: what a call costs without
queueing. When a window's mean rises above ``tolerance`` x the baseline, a queue is building somewhere
downstream, so the limit shrinks by the ratio (the *gradient*, at most halving it per window); while latency
stays within the tolerance, the gradient is 1 and the limit grows by a queue allowance of ``sqrt(limit)``. The
new limit is smoothed (``smoothing``) and clamped to ``[limit_min, limit_max]``; it does not grow while less
than half of it is used (no evidence it could take more).

A baseline that follows the recent latency drifts up with the queue it should detect (Gradient2's long-term
average does: under constant overload its limit creeps up for ever), so the baseline is *measured* instead,
as Envoy's adaptive concurrency filter measures its minimum RTT: during a probe one window runs at
``limit_min``; the calls admitted in it meet no queue, and their mean latency becomes the baseline. A probe
runs first thing, whenever the limit has sat at ``limit_min`` for ``stuck_windows`` windows with the latency
still over the tolerance (the service got slower for good: a heavier mix, a colder cache), and, if
``probe_s`` is set, every ``probe_s`` seconds. Between probes the baseline only falls.
"""

from __future__ import annotations

import math

from liangcao.flow.rules import AdaptiveRule


class GradientLimit:
    __slots__ = (
        "baseline",
        "count",
        "inflight_peak",
        "limit",
        "next_probe",
        "probe_start",
        "probes",
        "probing",
        "rt_sum",
        "rule",
        "start",
        "stuck",
        "windows",
    )

    def __init__(self, rule: AdaptiveRule, now: float) -> None:
        self.rule = rule
        self.limit = float(rule.limit_initial)
        self.baseline = math.inf
        self.windows = 0
        self.probes = 0
        self.stuck = 0  # windows in a row at limit_min with the latency still over the tolerance
        self.probing = False
        self.probe_start = 0.0
        # The first probe comes first: until then there is no baseline to compare with.
        self.next_probe = now
        self._new_window(now)

    def _new_window(self, now: float) -> None:
        self.start = now
        self.count = 0
        self.rt_sum = 0.0
        self.inflight_peak = 0

    def reconfigure(self, rule: AdaptiveRule) -> None:
        if rule.probe_s != self.rule.probe_s and not self.probing:
            self.next_probe = self.start + rule.probe_s if rule.probe_s > 0 else math.inf
        self.rule = rule
        self.limit = min(float(rule.limit_max), max(float(rule.limit_min), self.limit))

    @property
    def value(self) -> int:
        """The limit in force now (``limit_min`` while probing)."""
        return self.rule.limit_min if self.probing else int(self.limit)

    def sample(self, now: float, rt_s: float, inflight: int, started: float) -> None:
        """One finished call: its latency, the in-flight count when it started, and when it started."""
        r = self.rule
        if self.probing and started < self.probe_start:
            return  # admitted before the probe: it may have queued, so it says nothing of the baseline
        self.count += 1
        self.rt_sum += rt_s
        self.inflight_peak = max(self.inflight_peak, inflight)
        if now - self.start >= r.window_s and self.count >= r.window_samples_min:
            mean = self.rt_sum / self.count
            if self.probing:
                self.baseline = mean
                self.probing = False
                self.probes += 1
                self.stuck = 0
                self.next_probe = now + r.probe_s if r.probe_s > 0 else math.inf
            else:
                self._update(mean, self.inflight_peak)
                if self.stuck >= r.stuck_windows:
                    self.next_probe = now
            self._new_window(now)
        elif self.probing and now - self.probe_start > 10 * r.window_s:
            # Few calls came: measure with those (this one at least), and do not hold the limit down longer.
            self.baseline = self.rt_sum / self.count
            self.probing = False
            self.probes += 1
            self.stuck = 0
            self.next_probe = now + r.probe_s if r.probe_s > 0 else math.inf
            self._new_window(now)
        if not self.probing and now >= self.next_probe:
            self.probing = True
            self.probe_start = now
            self._new_window(now)

    def _update(self, short_rt: float, inflight: int) -> None:
        r = self.rule
        self.windows += 1
        if short_rt < self.baseline:
            self.baseline = short_rt
        over = short_rt > r.tolerance * self.baseline
        self.stuck = self.stuck + 1 if over and self.limit <= r.limit_min else 0
        if inflight < self.limit / 2:
            return
        gradient = 1.0 if short_rt <= 0 else max(0.5, min(1.0, r.tolerance * self.baseline / short_rt))
        target = self.limit * gradient + math.sqrt(self.limit)
        new = self.limit * (1.0 - r.smoothing) + target * r.smoothing
        self.limit = min(float(r.limit_max), max(float(r.limit_min), new))

    def status(self) -> dict[str, object]:
        return {
            "limit": self.value,
            "baseline_rt_ms": None if math.isinf(self.baseline) else round(self.baseline * 1000.0, 3),
            "windows": self.windows,
            "probing": self.probing,
            "probes": self.probes,
        }
