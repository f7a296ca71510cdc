"""The gate: every call asks :meth:`Gate.enter` first and answers :meth:`Ticket.exit` when done.

Theory of operation. ``enter(resource, priority, hot)`` runs the checks of the resource's rule in a fixed
order, cheapest and most telling first, *without changing anything*, and only when all pass commits them
(takes the tokens, counts the call in flight, marks a breaker probe). A refusal therefore costs no tokens and
is raised at once as :class:`~liangcao.flow.errors.Refused` with a ``retry_after_ms``; nothing ever waits.

====  ==========================  ===============================================  ======  ===============
step  check                       refuses when                                      status  retry after
====  ==========================  ===============================================  ======  ===============
1     circuit breaker             open, or half-open with its probes out            503     time left open
2     concurrency (static/adapt.) in flight + 1 > limit x share                     429     mean latency
3     system                      in flight / latency / load / BBR capacity x share 503     mean latency
4     hot parameter               the value's bucket is below (1 - share)           429     its refill
5     rate (local or cluster)     the bucket is below (1 - share) of its depth      429     its refill
====  ==========================  ===============================================  ======  ===============

``share`` is the priority's part of every limit (``Rules.shares``: PAY 1.0 ... BROWSE 0.5): a flood of
browsing stops at half of each limit, leaving the other half to paying, which therefore keeps going.

``exit(ok)`` records the latency since ``enter`` and the outcome into the adaptive limit, the breaker and the
system window. ``reload(rules)`` swaps the rules in place: buckets keep their fill and warmth, breakers their
state, calls in flight stay counted. Every decision is counted per resource, priority and outcome.

The gate holds a lock around each step, so it may be shared by the event loop and worker threads.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from liangcao.flow.adaptive import GradientLimit
from liangcao.flow.breaker import Breaker
from liangcao.flow.bucket import TokenBucket
from liangcao.flow.errors import REASONS, FlowCode, FlowError, Refused
from liangcao.flow.hot import HotParams
from liangcao.flow.rules import PRIORITY_NAMES, Priority, ResourceRule, Rules, resources_max, share_of, validate
from liangcao.flow.system import SystemGuard, os_load

#: The name under which calls to resources beyond ``resources_max`` are counted and limited together.
OTHER = "*"
#: What counts as overload for system.yield_ms: the concurrency limits and the system rule (a rate limit or a
#: hot value's own bucket is a quota, not a sign that the process is short of capacity).
_OVERLOAD = (FlowCode.CONCURRENCY_LIMITED, FlowCode.SYSTEM_OVERLOADED)
_YIELDING = "yielding"
hot_value_bytes_max = 256  # a longer hot value is cut (it is a key, not data)


class TokenSource(Protocol):
    """Where the rate of ``cluster`` resources comes from (the cluster token server's client)."""

    fallback_share: float

    def configure(self, rules: list[ResourceRule]) -> None: ...
    def wait(self, resource: str, now: float, share: float) -> float | None:
        """Seconds until a token is there for ``share`` (0.0: now); None when the server is unreachable."""

    def take(self, resource: str, now: float) -> None: ...


class Ticket:
    """An admitted call. ``exit(ok)`` once when it is done (also as a context manager); later calls are no-ops."""

    __slots__ = ("_done", "_gate", "_inflight_at", "_probe", "_probe_of", "_res", "hot", "priority", "start")

    def __init__(
        self, gate: Gate, res: _Resource, priority: Priority, hot: str | None, start: float, probe: bool, inflight: int
    ) -> None:
        self._gate = gate
        self._res = res
        self.priority = priority
        self.hot = hot
        self.start = start
        self._probe = probe
        self._probe_of = -1  # the breaker generation a probe was admitted in (a late answer of an old one is ignored)
        self._inflight_at = inflight
        self._done = False

    @property
    def resource(self) -> str:
        return self._res.name

    def exit(self, ok: bool = True) -> None:
        """Record the call's latency since ``enter`` and its outcome (False: it failed)."""
        if not self._done:
            self._done = True
            self._gate._exit(self, ok)

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.exit(exc_type is None)


class _Resource:
    """The live state of one resource under its current rule."""

    __slots__ = ("adaptive", "breaker", "bucket", "counts", "exits", "hot", "inflight", "name", "rt_ewma", "rule")

    def __init__(self, name: str) -> None:
        self.name = name
        self.rule = ResourceRule(name=name)
        self.bucket: TokenBucket | None = None
        self.hot: HotParams | None = None
        self.breaker: Breaker | None = None
        self.adaptive: GradientLimit | None = None
        self.inflight = 0
        self.counts: dict[tuple[int, str], int] = {}
        self.exits = {"ok": 0, "error": 0}
        self.rt_ewma = 0.0

    def configure(self, rule: ResourceRule, now: float, rate_scale: float) -> None:
        old = self.bucket
        if rule.rate_per_s > 0:
            rate = rule.rate_per_s * rate_scale
            burst = rule.burst if rule.burst > 0 else max(1, math.ceil(rule.rate_per_s))
            burst = max(1, math.ceil(burst * rate_scale))
            same = old is not None and (old.rate, old.burst, old.warmup_s, old.cold_factor) == (
                rate,
                burst,
                rule.warmup_s,
                rule.cold_factor,
            )
            if not same:
                self.bucket = TokenBucket(rate, burst, rule.warmup_s, rule.cold_factor, now=now)
                if old is not None:
                    self.bucket.carry_from(old, now)
        else:
            self.bucket = None
        if rule.hot is None:
            self.hot = None
        elif self.hot is None:
            self.hot = HotParams(rule.hot)
        else:
            self.hot.reconfigure(rule.hot)
        if rule.breaker is None:
            self.breaker = None
        elif self.breaker is None:
            self.breaker = Breaker(rule.breaker)
        else:
            self.breaker.reconfigure(rule.breaker)
        if rule.adaptive is None:
            self.adaptive = None
        elif self.adaptive is None:
            self.adaptive = GradientLimit(rule.adaptive, now)
        else:
            self.adaptive.reconfigure(rule.adaptive)
        self.rule = rule

    def concurrency_limit(self) -> int | None:
        limits = [x for x in (self.rule.concurrency_max, self.adaptive.value if self.adaptive else 0) if x > 0]
        return min(limits) if limits else None


class Gate:
    """Admission control over a rule set. ``clock`` gives seconds (monotonic); tests inject their own."""

    def __init__(
        self,
        rules: Rules,
        *,
        clock: Callable[[], float] = time.monotonic,
        load: Callable[[], float] = os_load,
        cluster: TokenSource | None = None,
    ) -> None:
        validate(rules)
        self.clock = clock
        self._lock = threading.Lock()
        self._rules = rules
        self._cluster = cluster
        self._system = SystemGuard(rules.system, load)
        self._resources: dict[str, _Resource] = {}
        self.inflight = 0
        self.reloads = 0
        # resources whose hot values name callers (checked through enter_hot): their status shows counts,
        # never the values (GET /v1/flow may be open to anyone; who is signed in is nobody's business) and
        # never looks at each bucket (100,000 callers sorted under the lock stalled every admission)
        self._private_hot: set[str] = set()
        self._cluster_live = False  # set by _check: the last cluster answer came from the server
        # The gate's own time never runs backwards: a clock that jumps back (an injected wall clock, a VM
        # restored from a snapshot) is shifted forward by the jump, so no bucket waits for the lost time
        # to come round again and none is refilled twice.
        self._clock_offset = 0.0
        self._last_now = -math.inf
        self._yield_until = -math.inf  # system.yield_ms: until then less important work is refused
        self._apply(rules, self._now())

    def _now(self) -> float:
        t = self.clock() + self._clock_offset
        if t < self._last_now:
            self._clock_offset += self._last_now - t
            t = self._last_now
        self._last_now = t
        return t

    @property
    def rules(self) -> Rules:
        return self._rules

    # -- rules ---------------------------------------------------------------------------------------------

    def _rule_for(self, name: str) -> ResourceRule:
        rule = self._rules.rule_for(name)
        if rule is not None:
            return rule
        if self._rules.default is not None:
            return self._rules.default
        return ResourceRule(name=name)

    def _configure(self, res: _Resource, now: float) -> None:
        rule = self._rule_for(res.name)
        clustered = rule.cluster and self._cluster is not None
        res.configure(rule, now, self._cluster.fallback_share if clustered and self._cluster else 1.0)

    def _apply(self, rules: Rules, now: float) -> None:
        self._rules = rules
        self._system.reconfigure(rules.system)
        for r in rules.resources:
            self._resources.setdefault(r.name, _Resource(r.name))
        for res in self._resources.values():
            self._configure(res, now)
        if self._cluster is not None:
            self._cluster.configure([r for r in rules.resources if r.cluster])

    def reload(self, rules: Rules) -> None:
        """Change the limits at run time. A bad rule set raises FlowError(BAD_RULES) and changes nothing."""
        validate(rules)
        with self._lock:
            self._apply(rules, self._now())
            self.reloads += 1

    def _resource(self, name: str, now: float) -> _Resource:
        res = self._resources.get(name)
        if res is None:
            if len(self._resources) >= resources_max:
                name = OTHER
                res = self._resources.get(name)
            if res is None:
                res = self._resources[name] = _Resource(name)
                self._configure(res, now)
        return res

    # -- admission -----------------------------------------------------------------------------------------

    def enter(self, resource: str, priority: Priority, hot: str | None = None) -> Ticket:
        """Admit a call or raise Refused at once. ``hot``: the value of the hot parameter (e.g. a merchant id)."""
        if not isinstance(priority, Priority):
            try:
                priority = Priority(priority)
            except ValueError:
                raise FlowError(FlowCode.UNKNOWN_PRIORITY, f"priority {priority!r} is not one of Priority") from None
        if hot is not None and len(hot) > hot_value_bytes_max:
            hot = hot[:hot_value_bytes_max]
        with self._lock:
            now = self._now()
            res = self._resource(resource, now)
            refusal = self._check(res, priority, hot, now)
            if refusal is not None:
                code, wait_s, why = refusal
                system = self._rules.system
                if (
                    system.yield_ms > 0
                    and code in _OVERLOAD
                    and priority <= Priority[system.yield_priority]
                    and not why.startswith(_YIELDING)
                ):
                    self._yield_until = max(self._yield_until, now + system.yield_ms / 1000.0)
                key = (int(priority), REASONS[code])
                res.counts[key] = res.counts.get(key, 0) + 1
                retry_ms = max(1, math.ceil(wait_s * 1000 - 1e-6))
                raise Refused(
                    code,
                    f"{res.name}: {why}; retry in {retry_ms} ms",
                    retry_after_ms=retry_ms,
                    resource=res.name,
                    priority=PRIORITY_NAMES[priority],
                )
            # Commit: everything passed, so now the tokens are taken and the call counted.
            if res.rule.cluster and self._cluster is not None and self._cluster_live:
                self._cluster.take(res.name, now)
            elif res.bucket is not None:
                res.bucket.take(now)
            if hot is not None and res.hot is not None:
                res.hot.bucket(hot, now).take(now)
            probe = res.breaker.admit(now) if res.breaker is not None else False
            res.inflight += 1
            self.inflight += 1
            key = (int(priority), "pass")
            res.counts[key] = res.counts.get(key, 0) + 1
            ticket = Ticket(self, res, priority, hot, now, probe, res.inflight)
            if probe and res.breaker is not None:
                ticket._probe_of = res.breaker.generation
            return ticket

    def enter_hot(self, resource: str, value: str, priority: Priority) -> None:
        """Take a token from ``value``'s bucket under ``resource``'s hot rule, or raise Refused
        (``HOT_PARAMETER_LIMITED``, with the wait until it refills) if ``value`` is over its rate; nothing
        when the rule has no hot limit. The bucket is scaled by ``priority``'s share, so less important calls
        of the same value run out first. Nothing is held: there is no ticket to exit.

        A second hot dimension, checked before admission: a call has one hot parameter (the checkout
        gateway's is the merchant), and the gateway also limits each caller. Refused, not re-classed: a
        call moved to another resource would escape its own resource's limits (a cluster-wide rate
        included). ``resource``'s rule changes at run time with the rest (:meth:`reload`).

        The values name callers: :meth:`status` shows how many this resource tracks and has forgotten, not
        the values (no ``hot.hottest``)."""
        if len(value) > hot_value_bytes_max:
            value = value[:hot_value_bytes_max]
        with self._lock:
            now = self._now()
            res = self._resource(resource, now)
            self._private_hot.add(res.name)
            if res.hot is None:
                return
            bucket = res.hot.bucket(value, now)
            wait_s = bucket.wait(now, share_of(self._rules, res.rule, priority))
            if wait_s > 0:
                key = (int(priority), REASONS[FlowCode.HOT_PARAMETER_LIMITED])
                res.counts[key] = res.counts.get(key, 0) + 1
                retry_ms = max(1, math.ceil(wait_s * 1000 - 1e-6))
                raise Refused(
                    FlowCode.HOT_PARAMETER_LIMITED,
                    f"{res.name}: value {value!r} over its rate; retry in {retry_ms} ms",
                    retry_after_ms=retry_ms,
                    resource=res.name,
                    priority=PRIORITY_NAMES[priority],
                )
            bucket.take(now)

    def _check(
        self, res: _Resource, priority: Priority, hot: str | None, now: float
    ) -> tuple[FlowCode, float, str] | None:
        rule = res.rule
        share = share_of(self._rules, rule, priority)
        if now < self._yield_until and priority > Priority[self._rules.system.yield_priority]:
            ago_ms = round(self._rules.system.yield_ms - (self._yield_until - now) * 1000.0)
            return (
                FlowCode.SYSTEM_OVERLOADED,
                self._yield_until - now,
                f"{_YIELDING} (more important work was refused {ago_ms} ms ago: system.yield_ms)",
            )
        if res.breaker is not None:
            wait = res.breaker.wait(now)
            if wait > 0:
                return FlowCode.CIRCUIT_OPEN, wait, f"circuit {res.breaker.state.name.lower()}"
        limit = res.concurrency_limit()
        if limit is not None and res.inflight + 1 > limit * share + 1e-9:
            return (
                FlowCode.CONCURRENCY_LIMITED,
                res.rt_ewma or 0.01,
                f"{res.inflight} in flight, limit {limit} x {share}",
            )
        overload = self._system.check(now, self.inflight, share)
        if overload is not None:
            return overload
        if hot is not None and res.hot is not None:
            wait = res.hot.bucket(hot, now).wait(now, share)
            if wait > 0:
                return FlowCode.HOT_PARAMETER_LIMITED, wait, f"value {hot!r} over its rate"
        self._cluster_live = False
        if rule.cluster and self._cluster is not None:
            cwait = self._cluster.wait(res.name, now, share)
            if cwait is not None:
                self._cluster_live = True
                if cwait > 0:
                    return FlowCode.CLUSTER_RATE_LIMITED, cwait, "no cluster token"
                return None
            # Server unreachable: the local bucket holds this process's fallback share of the global rate.
        if res.bucket is not None:
            wait = res.bucket.wait(now, share)
            if wait > 0:
                return FlowCode.RATE_LIMITED, wait, f"over {res.bucket.rate:g}/s"
        return None

    def _exit(self, ticket: Ticket, ok: bool) -> None:
        with self._lock:
            now = self._now()
            res = ticket._res
            rt = max(0.0, now - ticket.start)
            res.inflight -= 1
            self.inflight -= 1
            res.exits["ok" if ok else "error"] += 1
            res.rt_ewma = rt if res.rt_ewma == 0.0 else res.rt_ewma + (rt - res.rt_ewma) * 0.1
            if res.adaptive is not None:
                res.adaptive.sample(now, rt, ticket._inflight_at, ticket.start)
            if res.breaker is not None:
                res.breaker.record(now, rt, ok, ticket._probe, ticket._probe_of)
            self._system.record(now, rt)

    # -- reporting -----------------------------------------------------------------------------------------

    def decisions(self) -> list[tuple[str, str, str, int]]:
        """Every decision so far as (resource, priority, decision, count); decision is "pass" or a reason."""
        with self._lock:
            return [
                (res.name, Priority(p).name, decision, n)
                for res in self._resources.values()
                for (p, decision), n in sorted(res.counts.items())
            ]

    def status(self) -> dict[str, Any]:
        """The state of every resource, the system window and every decision counted (GET /v1/flow)."""
        with self._lock:
            now = self._now()
            resources: dict[str, Any] = {}
            for res in self._resources.values():
                decisions: dict[str, dict[str, int]] = {}
                for (p, decision), n in sorted(res.counts.items()):
                    decisions.setdefault(Priority(p).name, {})[decision] = n
                one: dict[str, Any] = {
                    "inflight": res.inflight,
                    "concurrency_limit": res.concurrency_limit(),
                    "rate_per_s": res.rule.rate_per_s or None,
                    "cluster": res.rule.cluster,
                    "rt_ms_ewma": round(res.rt_ewma * 1000.0, 3),
                    "decisions": decisions,
                    "passed": sum(n for (_, d), n in res.counts.items() if d == "pass"),
                    "refused": sum(n for (_, d), n in res.counts.items() if d != "pass"),
                    "exits": dict(res.exits),
                }
                if res.bucket is not None:
                    one["bucket"] = {
                        "rate_per_s": res.bucket.rate,
                        "burst": res.bucket.burst,
                        "tokens": round(res.bucket.tokens(now), 3),
                        "warm_rate_per_s": round(res.bucket.current_rate(), 3),
                    }
                if res.adaptive is not None:
                    one["adaptive"] = res.adaptive.status()
                if res.breaker is not None:
                    one["breaker"] = res.breaker.status(now)
                if res.hot is not None and res.name in self._private_hot:  # callers (enter_hot): how many, not who
                    h = res.hot
                    one["hot"] = {
                        "values": len(h.buckets),
                        "hot_values_max": h.rule.hot_values_max,
                        "evicted": h.evicted,
                    }
                elif res.hot is not None:
                    one["hot"] = res.hot.status(now)
                resources[res.name] = one
            out: dict[str, Any] = {
                "version": self._rules.version,
                "reloads": self.reloads,
                "inflight": self.inflight,
                "shares": dict(self._rules.shares),
                "system": self._system.status(now),
                "resources": resources,
                "passed": sum(r["passed"] for r in resources.values()),
                "refused": sum(r["refused"] for r in resources.values()),
            }
            if self._cluster is not None:
                status = getattr(self._cluster, "status", None)
                out["cluster"] = status() if callable(status) else {}
            return out
