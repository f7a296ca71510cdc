"""Rules: what each resource may do, as plain data (msgspec structs) that a JSON document can carry.

A rule set is validated as a whole before any of it is used (:func:`validate`): a bad rule set is refused
with ``FlowCode.BAD_RULES`` and one line saying what is wrong, and the gate keeps the rules it had. Every
number has a named bound (``*_max`` below); rates are floats (time and rates are not money).
"""

from __future__ import annotations

import math
from enum import IntEnum
from typing import Any

import msgspec

from liangcao.flow.bucket import TokenBucket
from liangcao.flow.errors import FlowCode, FlowError


class Priority(IntEnum):
    """Classes of work, lower is more important: under pressure the higher numbers are shed first."""

    PAY = 0
    CONFIRM = 1
    QUERY = 2
    BROWSE = 3
    REPORT = 4


#: How much of each limit (rate, concurrency, system capacity) a class may use. PAY may use it all; BROWSE
#: only half, so half of every limit stays free for more important work however much browsing arrives.
DEFAULT_SHARES: dict[str, float] = {"PAY": 1.0, "CONFIRM": 0.9, "QUERY": 0.75, "BROWSE": 0.5, "REPORT": 0.3}

resources_max = 1024  # named resources in one rule set (and resources created from the default rule)
rate_per_s_max = 1e9
#: The smallest rate a limit may have (one call in 1000 s); below it ``1/rate`` and the warm-up arithmetic
#: overflow to infinity or NaN, and a limit that lets through one call a quarter of an hour is already "off".
rate_per_s_min = 1e-3
burst_max = 10_000_000
yield_ms_max = 60_000.0  # the longest strict-priority spell a refusal may start (system.yield_ms)
warmup_s_max = 3600.0
cold_factor_max = 100.0
concurrency_max_max = 1_000_000
hot_values_max_max = 1_000_000
hot_overrides_max = 10_000
window_s_max = 3600.0
#: The shortest window (and window bucket: ``window_s / buckets``) a rule may have: below it the bucket index
#: ``now // bucket_s`` divides by zero (a denormal window) at every call.
window_s_min = 1e-3
window_buckets_max = 600
open_s_max = 3600.0
probes_max = 100
name_bytes_max = 128
rules_bytes_max = 1 << 20  # a rule set as JSON


def _dflt_shares() -> dict[str, float]:
    return dict(DEFAULT_SHARES)


class AdaptiveRule(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """An adaptive concurrency limit following measured latency (gradient against a probed baseline)."""

    limit_min: int = 4
    limit_max: int = 1000
    limit_initial: int = 20
    smoothing: float = 0.2  # how far each window moves the limit toward its new estimate
    tolerance: float = 1.5  # latency may grow to tolerance x the baseline before the limit shrinks
    window_s: float = 0.5  # one latency sample per window (its mean)...
    window_samples_min: int = 10  # ...once it holds this many calls
    stuck_windows: int = 3  # at limit_min this many windows and still slow: probe (the service got slower)
    probe_s: float = 0.0  # also probe every probe_s seconds (0: only at start and when stuck)


class HotRule(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A token bucket per value of a parameter (merchant id, item): one hot value cannot starve the rest."""

    rate_per_s: float
    burst: int = 0  # 0: one second's worth (at least 1)
    hot_values_max: int = 10_000  # values tracked at once (least recently used forgotten first)
    overrides: dict[str, float] = msgspec.field(default_factory=dict)  # value -> its own rate


class BreakerRule(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Cut calls to a failing or slow backend: closed -> open (for ``open_s``) -> half-open (probes) -> ..."""

    window_s: float = 10.0
    buckets: int = 10
    calls_min: int = 20  # no verdict on fewer calls in the window
    slow_ms: float = 1000.0  # a call slower than this counts as slow
    slow_ratio_max: float = 1.0  # open when the share of slow calls exceeds this (1.0: never)
    error_ratio_max: float = 0.5  # open when the share of failed calls exceeds this (1.0: never)
    open_s: float = 5.0
    probes: int = 1  # calls let through when half-open; all must succeed to close


class ResourceRule(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The limits of one resource (an endpoint or a group of them). A zero turns a limit off."""

    name: str
    rate_per_s: float = 0.0
    burst: int = 0  # bucket depth; 0: one second's worth (at least 1)
    warmup_s: float = 0.0  # from cold, the rate ramps from rate/cold_factor to rate over this time
    cold_factor: float = 3.0
    concurrency_max: int = 0
    adaptive: AdaptiveRule | None = None
    hot: HotRule | None = None
    breaker: BreakerRule | None = None
    shares: dict[str, float] | None = None  # per priority; None: the rule set's shares
    cluster: bool = False  # the rate is global, granted by the cluster token server


class SystemRule(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Protect the whole process (Sentinel's system rule). Each check applies the priority's share."""

    inflight_max: int = 0  # calls in flight over all resources
    rt_ms_max: float = 0.0  # mean latency over the window
    bbr: bool = False  # refuse when in-flight exceeds capacity = peak completions/s x minimum latency
    bbr_inflight_min: int = 8  # never refuse below this many in flight (cold start, tiny loads)
    load_max: float = 0.0  # 1-minute load average; with bbr, BBR only engages above it (as in Sentinel)
    window_s: float = 1.0
    buckets: int = 10
    #: Strict priority under overload: for ``yield_ms`` after a call of ``yield_priority`` or more important
    #: was refused for overload (its concurrency limit or this rule), every less important call is refused
    #: too. Shares keep slots free for important work, but fast queries still take CPU by the thousand a
    #: second while payments wait; yielding gives that CPU back. 0: off.
    yield_ms: float = 0.0
    yield_priority: str = "CONFIRM"


class Rules(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A whole rule set. ``default`` applies to resources not named (its ``name`` is ignored)."""

    version: int = 0
    resources: list[ResourceRule] = msgspec.field(default_factory=list)
    default: ResourceRule | None = None
    system: SystemRule = msgspec.field(default_factory=SystemRule)
    shares: dict[str, float] = msgspec.field(default_factory=_dflt_shares)

    def rule_for(self, name: str) -> ResourceRule | None:
        for r in self.resources:
            if r.name == name:
                return r
        return None


_decoder = msgspec.json.Decoder(Rules)


def _bad(message: str) -> FlowError:
    return FlowError(FlowCode.BAD_RULES, f"bad rules: {message} (nothing changed)")


def rules_from_json(data: bytes | str) -> Rules:
    """Decode and validate a rule set; FlowError(BAD_RULES) with one line if it is not a good one."""
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > rules_bytes_max:
        raise _bad(f"{len(raw)} bytes is over rules_bytes_max={rules_bytes_max}")
    try:
        rules = _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise _bad(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise _bad(f"not JSON: {exc}") from None
    validate(rules)
    return rules


def rules_to_json(rules: Rules) -> bytes:
    return msgspec.json.encode(rules)


def rules_from_dict(obj: Any) -> Rules:
    return rules_from_json(msgspec.json.encode(obj))


def _num(where: str, value: float, low: float, high: float, *, low_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad(f"{where} must be a finite number")
    if value < low or (low_open and value == low) or value > high:
        bound = f"({low}, {high}]" if low_open else f"[{low}, {high}]"
        raise _bad(f"{where}={value} is outside {bound}")


def _shares(where: str, shares: dict[str, float]) -> None:
    for key, value in shares.items():
        if key not in Priority.__members__:
            raise _bad(f"{where}: {key!r} is not a priority ({', '.join(Priority.__members__)})")
        _num(f"{where}.{key}", value, 0.0, 1.0, low_open=True)


def _window(where: str, window_s: float, buckets: int) -> None:
    if window_s / buckets < window_s_min:
        raise _bad(f"{where}: window_s / buckets = {window_s / buckets:g} s is below window_s_min={window_s_min}")


def _resource(where: str, r: ResourceRule) -> None:
    if not r.name or len(r.name.encode()) > name_bytes_max:
        raise _bad(f"{where}.name must be 1..{name_bytes_max} bytes")
    _num(f"{where}.rate_per_s", r.rate_per_s, 0.0, rate_per_s_max)
    if 0 < r.rate_per_s < rate_per_s_min:
        raise _bad(f"{where}.rate_per_s={r.rate_per_s} is below rate_per_s_min={rate_per_s_min} (0 turns it off)")
    _num(f"{where}.burst", r.burst, 0, burst_max)
    _num(f"{where}.warmup_s", r.warmup_s, 0.0, warmup_s_max)
    _num(f"{where}.cold_factor", r.cold_factor, 1.0, cold_factor_max, low_open=r.warmup_s > 0)
    _num(f"{where}.concurrency_max", r.concurrency_max, 0, concurrency_max_max)
    if r.warmup_s > 0 and r.rate_per_s == 0:
        raise _bad(f"{where}.warmup_s needs a rate_per_s")
    if r.cluster and r.rate_per_s == 0:
        raise _bad(f"{where}.cluster needs a rate_per_s (the global rate)")
    if r.rate_per_s > 0:  # build the bucket once: whatever passed the bounds must also compute
        tb = TokenBucket(r.rate_per_s, r.burst, r.warmup_s, r.cold_factor, now=0.0)
        if not all(math.isfinite(x) for x in (tb.stable, tb.tolerance, tb.threshold, tb.stored_max, tb.slope)):
            raise _bad(f"{where}: rate_per_s, burst, warmup_s and cold_factor do not make a computable bucket")
    if r.shares is not None:
        _shares(f"{where}.shares", r.shares)
    a = r.adaptive
    if a is not None:
        _num(f"{where}.adaptive.limit_min", a.limit_min, 1, concurrency_max_max)
        _num(f"{where}.adaptive.limit_max", a.limit_max, a.limit_min, concurrency_max_max)
        _num(f"{where}.adaptive.limit_initial", a.limit_initial, a.limit_min, a.limit_max)
        _num(f"{where}.adaptive.smoothing", a.smoothing, 0.0, 1.0, low_open=True)
        _num(f"{where}.adaptive.tolerance", a.tolerance, 1.0, 100.0)
        _num(f"{where}.adaptive.window_s", a.window_s, window_s_min, window_s_max)
        _num(f"{where}.adaptive.window_samples_min", a.window_samples_min, 1, 1_000_000)
        _num(f"{where}.adaptive.probe_s", a.probe_s, 0.0, window_s_max)
        _num(f"{where}.adaptive.stuck_windows", a.stuck_windows, 1, 1_000_000)
    h = r.hot
    if h is not None:
        _num(f"{where}.hot.rate_per_s", h.rate_per_s, rate_per_s_min, rate_per_s_max)
        _num(f"{where}.hot.burst", h.burst, 0, burst_max)
        _num(f"{where}.hot.hot_values_max", h.hot_values_max, 1, hot_values_max_max)
        if len(h.overrides) > hot_overrides_max:
            raise _bad(f"{where}.hot.overrides: {len(h.overrides)} is over hot_overrides_max={hot_overrides_max}")
        for value, rate in h.overrides.items():
            _num(f"{where}.hot.overrides[{value!r}]", rate, rate_per_s_min, rate_per_s_max)
    b = r.breaker
    if b is not None:
        _num(f"{where}.breaker.window_s", b.window_s, window_s_min, window_s_max)
        _num(f"{where}.breaker.buckets", b.buckets, 1, window_buckets_max)
        _window(f"{where}.breaker", b.window_s, b.buckets)
        _num(f"{where}.breaker.calls_min", b.calls_min, 1, 1_000_000_000)
        _num(f"{where}.breaker.slow_ms", b.slow_ms, 0.0, 3_600_000.0, low_open=True)
        _num(f"{where}.breaker.slow_ratio_max", b.slow_ratio_max, 0.0, 1.0)
        _num(f"{where}.breaker.error_ratio_max", b.error_ratio_max, 0.0, 1.0)
        _num(f"{where}.breaker.open_s", b.open_s, 0.0, open_s_max, low_open=True)
        _num(f"{where}.breaker.probes", b.probes, 1, probes_max)


def validate(rules: Rules) -> None:
    """Check a whole rule set; FlowError(BAD_RULES) naming the first thing wrong."""
    if len(rules.resources) > resources_max:
        raise _bad(f"{len(rules.resources)} resources is over resources_max={resources_max}")
    _shares("shares", rules.shares)
    seen: set[str] = set()
    for i, r in enumerate(rules.resources):
        _resource(f"resources[{i}]", r)
        if r.name in seen:
            raise _bad(f"resources[{i}].name {r.name!r} is named twice")
        seen.add(r.name)
    if rules.default is not None:
        _resource("default", rules.default)
    s = rules.system
    _num("system.inflight_max", s.inflight_max, 0, concurrency_max_max)
    _num("system.rt_ms_max", s.rt_ms_max, 0.0, 3_600_000.0)
    _num("system.bbr_inflight_min", s.bbr_inflight_min, 0, concurrency_max_max)
    _num("system.load_max", s.load_max, 0.0, 1e6)
    _num("system.window_s", s.window_s, window_s_min, window_s_max)
    _num("system.buckets", s.buckets, 1, window_buckets_max)
    _num("system.yield_ms", s.yield_ms, 0.0, yield_ms_max)
    if s.yield_priority not in PRIORITY_NAMES.values():
        raise _bad(f"system.yield_priority {s.yield_priority!r} is not one of {', '.join(PRIORITY_NAMES.values())}")
    _window("system", s.window_s, s.buckets)


PRIORITY_NAMES: dict[int, str] = {int(p): p.name for p in Priority}


def share_of(rules: Rules, rule: ResourceRule, priority: Priority) -> float:
    """The share of ``rule``'s limits that ``priority`` may use (1.0 for a class no table names)."""
    table = rule.shares if rule.shares is not None else rules.shares
    return table.get(PRIORITY_NAMES[priority], 1.0)
