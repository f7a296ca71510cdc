"""System protection (Sentinel's system rule): refuse when the whole process is past its capacity.

The BBR-like check estimates capacity by Little's law, ``peak completions per second x minimum latency``
(what the process can hold in flight without queueing), and refuses when more than that is in flight. As in
Sentinel, with ``load_max`` set the check engages only while the load average is above it. Each check
scales by the caller's priority share, so less important work is refused first.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

from liangcao.flow.errors import FlowCode
from liangcao.flow.rules import SystemRule
from liangcao.flow.window import Window


def os_load() -> float:
    """The 1-minute load average (0.0 where the platform has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


class SystemGuard:
    __slots__ = ("_load_at", "_load_value", "load", "rule", "window")

    def __init__(self, rule: SystemRule, load: Callable[[], float] = os_load) -> None:
        self.rule = rule
        self.window = Window(rule.window_s, rule.buckets)
        self.load = load
        self._load_value = 0.0
        self._load_at = -math.inf

    def reconfigure(self, rule: SystemRule) -> None:
        if (rule.window_s, rule.buckets) != (self.rule.window_s, self.rule.buckets):
            self.window = Window(rule.window_s, rule.buckets)
        self.rule = rule

    def _load_now(self, now: float) -> float:
        if now - self._load_at >= 1.0:  # the kernel updates it every 5 s; reading it per call is waste
            self._load_value = self.load()
            self._load_at = now
        return self._load_value

    def capacity(self, now: float) -> float:
        """In-flight calls the process can hold without queueing (inf until there is a measurement).

        The latency is the lowest *mean* of a window slot, not the single fastest call: with a mix of fast
        reads and slow payments the fastest call would make the capacity look tiny."""
        peak = self.window.peak_rate(now)
        rt = self.window.min_mean_rt(now)
        if peak == 0 or math.isinf(rt):
            return math.inf
        return peak * rt

    def check(self, now: float, inflight: int, share: float) -> tuple[FlowCode, float, str] | None:
        """None if a call may pass, else (code, retry-after seconds, why)."""
        r = self.rule
        if r.inflight_max and inflight >= r.inflight_max * share:
            return FlowCode.SYSTEM_OVERLOADED, self._typical_rt(now), f"{inflight} in flight (system.inflight_max)"
        if r.rt_ms_max:
            calls, _, _, rt_sum = self.window.totals(now)
            if calls and rt_sum / calls * 1000.0 > r.rt_ms_max * share:
                return FlowCode.SYSTEM_OVERLOADED, self.window.bucket_s, "mean latency over system.rt_ms_max"
        if r.load_max and not r.bbr and self._load_now(now) > r.load_max * share:
            return FlowCode.SYSTEM_OVERLOADED, 1.0, "load average over system.load_max"
        if r.bbr and inflight >= r.bbr_inflight_min:
            if r.load_max and self._load_now(now) <= r.load_max * share:
                return None
            cap = self.capacity(now)
            if inflight > max(float(r.bbr_inflight_min), cap * share):
                return FlowCode.SYSTEM_OVERLOADED, self._typical_rt(now), f"{inflight} in flight over capacity"
        return None

    def _typical_rt(self, now: float) -> float:
        calls, _, _, rt_sum = self.window.totals(now)
        return rt_sum / calls if calls else 0.01

    def record(self, now: float, rt_s: float) -> None:
        self.window.add(now, rt_s)

    def status(self, now: float) -> dict[str, object]:
        calls, _, _, rt_sum = self.window.totals(now)
        cap = self.capacity(now)
        rt = self.window.min_mean_rt(now)
        return {
            "completed_in_window": calls,
            "mean_rt_ms": round(rt_sum / calls * 1000.0, 3) if calls else 0.0,
            "peak_per_s": round(self.window.peak_rate(now), 1),
            "min_mean_rt_ms": None if math.isinf(rt) else round(rt * 1000.0, 3),
            "capacity_inflight": None if math.isinf(cap) else round(cap, 2),
            "load": round(self._load_value, 2),
        }
