"""A circuit breaker on slow-call and error ratios (Sentinel's DegradeRule, resilience4j's states).

::

    state      event                                             next
    CLOSED     window has >= calls_min and a ratio over its max  OPEN (until now + open_s)
    OPEN       a call arrives after open_s                       HALF_OPEN (the call is a probe)
    HALF_OPEN  a probe fails or is slow                          OPEN (again for open_s)
    HALF_OPEN  ``probes`` probes all succeed                     CLOSED (window cleared)

While OPEN every call is refused with the time left as ``Retry-After``; while HALF_OPEN only ``probes`` calls
are in flight at once and the rest are refused. Calls admitted before the breaker opened finish uncounted.
A probe still out ``slow_ms`` after it was let through has failed (it is slow, whatever it answers later):
the breaker opens again from that moment, so a backend that hangs cannot hold it half-open for ever; the
late answer of such a probe is ignored (each opening starts a new ``generation``).
"""

from __future__ import annotations

from enum import IntEnum

from liangcao.flow.rules import BreakerRule
from liangcao.flow.window import Window


class BreakerState(IntEnum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class Breaker:
    __slots__ = (
        "generation",
        "opened_at",
        "probe_since",
        "probe_successes",
        "probes_inflight",
        "rule",
        "state",
        "transitions",
        "window",
    )

    def __init__(self, rule: BreakerRule) -> None:
        self.rule = rule
        self.state = BreakerState.CLOSED
        self.window = Window(rule.window_s, rule.buckets)
        self.opened_at = 0.0
        self.probes_inflight = 0
        self.probe_successes = 0
        self.probe_since = 0.0  # when the oldest probe in flight was let through
        self.generation = 0
        self.transitions: dict[str, int] = {}

    def reconfigure(self, rule: BreakerRule) -> None:
        if (rule.window_s, rule.buckets) != (self.rule.window_s, self.rule.buckets):
            self.window = Window(rule.window_s, rule.buckets)
        self.rule = rule

    def _go(self, state: BreakerState, now: float) -> None:
        key = f"{self.state.name.lower()}->{state.name.lower()}"
        self.transitions[key] = self.transitions.get(key, 0) + 1
        self.state = state
        if state is BreakerState.OPEN:
            self.opened_at = now
            self.probe_successes = 0
            self.probes_inflight = 0  # the probes out belong to the past generation
            self.generation += 1
        elif state is BreakerState.CLOSED:
            self.window.reset()
        else:
            self.probe_successes = 0

    def wait(self, now: float) -> float:
        """Seconds until a call could pass (0.0: now). Moves OPEN to HALF_OPEN when its time is up."""
        if self.state is BreakerState.CLOSED:
            return 0.0
        if self.state is BreakerState.OPEN:
            left = self.opened_at + self.rule.open_s - now
            if left > 0:
                return left
            self._go(BreakerState.HALF_OPEN, now)
        if self.probes_inflight < self.rule.probes:
            return 0.0
        overdue = self.probe_since + self.rule.slow_ms / 1000.0
        if now > overdue:  # the probes out are slow whatever they answer: open again from when they were
            self._go(BreakerState.OPEN, overdue)
            return max(0.0, self.wait(now))
        return min(overdue - now, self.rule.open_s)  # about when a probe will have answered

    def admit(self, now: float | None = None) -> bool:
        """Count an admitted call; True when it is a probe (its outcome decides the state)."""
        if self.state is BreakerState.HALF_OPEN:
            if self.probes_inflight == 0 and now is not None:
                self.probe_since = now
            self.probes_inflight += 1
            return True
        return False

    def record(self, now: float, rt_s: float, ok: bool, probe: bool, generation: int | None = None) -> None:
        slow = rt_s * 1000.0 > self.rule.slow_ms
        if probe:
            if generation is not None and generation != self.generation:
                return  # a probe of an earlier half-open state, already counted as failed
            self.probes_inflight = max(0, self.probes_inflight - 1)
            if self.state is not BreakerState.HALF_OPEN:
                return
            if not ok or slow:
                self._go(BreakerState.OPEN, now)
                return
            self.probe_successes += 1
            if self.probe_successes >= self.rule.probes:
                self._go(BreakerState.CLOSED, now)
            return
        if self.state is not BreakerState.CLOSED:
            return
        self.window.add(now, rt_s, slow=slow, error=not ok)
        calls, slow_n, errors, _ = self.window.totals(now)
        if calls < self.rule.calls_min:
            return
        r = self.rule
        if (r.error_ratio_max < 1.0 and errors / calls > r.error_ratio_max) or (
            r.slow_ratio_max < 1.0 and slow_n / calls > r.slow_ratio_max
        ):
            self._go(BreakerState.OPEN, now)

    def status(self, now: float) -> dict[str, object]:
        calls, slow, errors, _ = self.window.totals(now)
        return {
            "state": self.state.name.lower(),
            "calls": calls,
            "slow": slow,
            "errors": errors,
            "open_left_s": max(0.0, self.opened_at + self.rule.open_s - now)
            if self.state is BreakerState.OPEN
            else 0.0,
            "transitions": dict(self.transitions),
        }
