"""Flow control's pure core with an injected clock: exact bucket and warm-up arithmetic, concurrency,
adaptive limit, breaker transitions, priorities under pressure, hot parameters, reload."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import pytest

from liangcao import codes
from liangcao.errors import LiangcaoError
from liangcao.flow import (
    AdaptiveRule,
    BreakerRule,
    FlowCode,
    FlowError,
    Gate,
    HotRule,
    Priority,
    Refused,
    ResourceRule,
    Rules,
    SystemRule,
    rules_from_json,
)
from liangcao.flow.bucket import TokenBucket
from liangcao.flow.rules import validate


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


def admitted(gate: Gate, resource: str, priority: Priority, n: int, hot: str | None = None) -> int:
    got = 0
    for _ in range(n):
        try:
            gate.enter(resource, priority, hot).exit()
            got += 1
        except Refused:
            pass
    return got


# -- token bucket -------------------------------------------------------------------------------------------


def test_bucket_burst_then_steady_rate_exactly() -> None:
    b = TokenBucket(10, 5, now=0.0)
    assert [b.try_take(0.0) for _ in range(5)] == [0.0] * 5
    assert b.try_take(0.0) == pytest.approx(0.1)  # the 6th waits one interval
    assert b.tokens(0.0) == pytest.approx(0.0)
    assert b.try_take(0.05) == pytest.approx(0.05)  # half an interval later: half left to wait
    assert b.try_take(0.1) == 0.0  # one token back after exactly 0.1 s
    assert b.try_take(0.1) == pytest.approx(0.1)
    # Idle for 10 s: full again, never more than the depth.
    assert b.tokens(10.0) == 5.0
    assert b.take_upto(10.0, 100) == 5


def test_bucket_counts_over_a_long_run_are_exact() -> None:
    b = TokenBucket(100, 20, now=0.0)
    passed = sum(1 for i in range(100_000) if b.try_take(i * 0.0001) == 0.0)  # 10 s of calls every 0.1 ms
    # The depth at once, then exactly one per 10 ms: 20 + 999 (the last call is at 9.9999 s).
    assert passed == 20 + 999


def test_warmup_starts_at_rate_over_cold_factor_and_reaches_rate_after_warmup_s() -> None:
    # rate 10/s, warm-up 3 s, cold factor 3: cold interval 0.3 s, threshold 15 permits, 30 stored at most.
    b = TokenBucket(10, 1, warmup_s=3.0, cold_factor=3.0, now=0.0)
    assert b.stored == pytest.approx(30.0)
    assert b.current_rate() == pytest.approx(10 / 3)
    # The first permit costs the mean interval between 30 and 29 stored: 0.1 + 14.5 * (0.2 / 15).
    assert b.cost(1) == pytest.approx(0.1 + 14.5 * 0.2 / 15)
    # Draining from 30 to the threshold of 15 takes exactly warmup_s (the trapezoid (0.3 + 0.1) / 2 * 15).
    assert b.cost(15) == pytest.approx(3.0)
    times = []
    t = 0.0
    while t < 5.0:
        if b.try_take(t) == 0.0:
            times.append(t)
        t = round(t + 0.001, 3)
    first = [x for x in times if x < 3.0]
    assert len(first) in (15, 16)  # 15 permits fill exactly 3 s; the one at 3.0 s itself may land
    assert times[1] - times[0] == pytest.approx(b.stable + 14.5 * b.slope, abs=0.0011)
    after = [x for x in times if 3.2 <= x < 4.2]
    assert len(after) == 10  # warm: the full rate
    assert b.current_rate() == pytest.approx(10.0)


def test_warmup_cools_down_when_idle() -> None:
    b = TokenBucket(10, 1, warmup_s=3.0, cold_factor=3.0, now=0.0)
    b.take(0.0, 30)
    assert b.current_rate() == pytest.approx(10.0)
    b.wait(b.tat + 1.5, 1.0)  # idle for half the warm-up: half the reservoir back
    assert b.stored == pytest.approx(15.0)
    b.wait(b.tat + 100.0, 1.0)
    assert b.stored == pytest.approx(30.0)
    assert b.current_rate() == pytest.approx(10 / 3)


def test_share_keeps_part_of_the_bucket_for_more_important_work() -> None:
    b = TokenBucket(10, 11, now=0.0)  # tolerance 1.0 s
    browse = b.take_upto(0.0, 100, share=0.5)
    assert browse == 6  # down to half the depth (tat - now <= 0.5 s): 6 calls
    assert b.wait(0.0, 0.5) == pytest.approx(0.1)
    assert b.take_upto(0.0, 100, share=1.0) == 5  # paying still gets the other half


# -- gate: rate, retry-after, codes --------------------------------------------------------------------------


def test_gate_refuses_with_code_status_and_retry_after_from_the_refill() -> None:
    clock = Clock()
    gate = Gate(Rules(resources=[ResourceRule(name="pay", rate_per_s=4, burst=2)]), clock=clock)
    assert admitted(gate, "pay", Priority.PAY, 2) == 2
    with pytest.raises(Refused) as info:
        gate.enter("pay", Priority.PAY)
    exc = info.value
    assert (exc.code, exc.http_status, exc.reason, exc.retry_after_ms) == (
        FlowCode.RATE_LIMITED,
        429,
        "rate_limited",
        250,
    )
    assert exc.retry_after_s == 1
    clock.advance(0.25)
    assert admitted(gate, "pay", Priority.PAY, 2) == 1
    assert codes.http_status(FlowCode.CIRCUIT_OPEN) == 503
    assert codes.name_of(3100) == "RATE_LIMITED"
    assert gate.status()["resources"]["pay"]["decisions"]["PAY"] == {"pass": 3, "rate_limited": 2}


def test_refusals_cost_no_tokens() -> None:
    clock = Clock()
    rule = ResourceRule(name="r", rate_per_s=10, burst=10, hot=HotRule(rate_per_s=1, burst=1))
    gate = Gate(Rules(resources=[rule]), clock=clock)
    assert admitted(gate, "r", Priority.PAY, 1, hot="m1") == 1
    assert admitted(gate, "r", Priority.PAY, 50, hot="m1") == 0  # hot refusals took nothing from "r"
    assert admitted(gate, "r", Priority.PAY, 50, hot="m2") == 1
    assert admitted(gate, "r", Priority.PAY, 50) == 8  # 10 - 2


# -- concurrency and adaptive limit --------------------------------------------------------------------------


def test_concurrency_limit_and_priority_shares() -> None:
    clock = Clock()
    gate = Gate(Rules(resources=[ResourceRule(name="db", concurrency_max=10)]), clock=clock)
    browsing = []
    for _ in range(20):
        try:
            browsing.append(gate.enter("db", Priority.BROWSE))
        except Refused as exc:
            assert exc.code == FlowCode.CONCURRENCY_LIMITED
    assert len(browsing) == 5  # BROWSE may hold half
    paying = []
    for _ in range(20):
        with contextlib.suppress(Refused):
            paying.append(gate.enter("db", Priority.PAY))
    assert len(paying) == 5  # and PAY the rest
    for t in browsing + paying:
        t.exit()
    assert gate.status()["resources"]["db"]["inflight"] == 0
    t = gate.enter("db", Priority.PAY)
    t.exit()
    t.exit()  # a second exit is a no-op
    assert gate.inflight == 0


def _run_window(gate: Gate, clock: Clock, n: int, rt: float) -> None:
    tickets = []
    for _ in range(n):
        with contextlib.suppress(Refused):
            tickets.append(gate.enter("api", Priority.PAY))
    clock.advance(rt)
    for t in tickets:
        t.exit()
    clock.advance(0.01)


def test_adaptive_limit_grows_at_steady_latency_and_shrinks_when_latency_rises() -> None:
    clock = Clock()
    rule = ResourceRule(
        name="api",
        adaptive=AdaptiveRule(limit_min=5, limit_max=200, limit_initial=20, window_s=0.1, window_samples_min=5),
    )
    gate = Gate(Rules(resources=[rule]), clock=clock)
    seen = []
    for _ in range(40):
        _run_window(gate, clock, 500, 0.1)  # saturating load at a steady 100 ms
        seen.append(gate.status()["resources"]["api"]["concurrency_limit"])
    assert seen[-1] > seen[0] > 0 and seen == sorted(seen)
    high = seen[-1]
    falling = []
    for _ in range(6):
        _run_window(gate, clock, 500, 0.4)  # latency x4: queueing downstream
        falling.append(gate.status()["resources"]["api"]["concurrency_limit"])
    assert falling[1:] == sorted(falling[1:], reverse=True) and falling[-1] < high * 0.85
    low = falling[-1]
    for _ in range(5):
        _run_window(gate, clock, 2, 0.01)  # light use says nothing: the limit does not grow on it
    assert gate.status()["resources"]["api"]["concurrency_limit"] <= low


def test_adaptive_limit_stays_within_its_bounds() -> None:
    clock = Clock()
    rule = ResourceRule(
        name="api",
        adaptive=AdaptiveRule(limit_min=20, limit_max=25, limit_initial=20, window_s=0.1, window_samples_min=5),
    )
    gate = Gate(Rules(resources=[rule]), clock=clock)
    for i in range(60):
        _run_window(gate, clock, 500, 0.05 * (1 + i % 7) ** 2)  # latency jumping about
        assert 20 <= gate.status()["resources"]["api"]["concurrency_limit"] <= 25
    for _ in range(30):
        _run_window(gate, clock, 500, 0.05)
    assert gate.status()["resources"]["api"]["concurrency_limit"] == 25


def _processor_sharing(gate: Gate, clock: Clock, seconds: float, base_s: float, per_s_max: float) -> list[int]:
    """Offer 3x a server's throughput: each call takes base_s, or longer once in flight x 1/per_s_max exceeds it
    (the queue). Returns the concurrency limit at the end of each second."""
    import heapq

    arrivals_per_s = 3 * per_s_max
    running: list[tuple[float, int, object]] = []
    limits = []
    for step in range(int(seconds * arrivals_per_s)):
        now = 1000.0 + step / arrivals_per_s
        while running and running[0][0] <= now:
            finish, _, ticket = heapq.heappop(running)
            clock.t = finish
            ticket.exit()  # type: ignore[attr-defined]
        clock.t = now
        if step % int(arrivals_per_s) == 0:
            limits.append(gate.status()["resources"]["api"]["concurrency_limit"])
        try:
            ticket = gate.enter("api", Priority.PAY)
        except Refused:
            continue
        heapq.heappush(running, (now + max(base_s, gate.inflight / per_s_max), step, ticket))
    return limits


def test_adaptive_limit_settles_near_capacity_instead_of_drifting_up_with_the_queue() -> None:
    # 500 calls/s at 20 ms: 10 in flight fill the server; more only queue.
    clock = Clock()
    rule = ResourceRule(name="api", adaptive=AdaptiveRule(limit_min=2, limit_max=500, limit_initial=60))
    gate = Gate(Rules(resources=[rule]), clock=clock)
    limits = _processor_sharing(gate, clock, 30.0, 0.020, 500.0)
    assert max(limits[-10:]) <= 25  # about tolerance x the unloaded latency, not the 60 it started at
    assert min(limits[-10:]) >= 2
    status = gate.status()["resources"]["api"]
    assert status["adaptive"]["baseline_rt_ms"] == pytest.approx(20.0, abs=1.0) and status["adaptive"]["probes"] >= 1
    assert status["passed"] >= 0.9 * 500 * 30  # the server was kept busy all along, probes included


def test_adaptive_probe_learns_a_slower_service() -> None:
    clock = Clock()
    rule = ResourceRule(
        name="api",
        adaptive=AdaptiveRule(
            limit_min=5, limit_max=200, limit_initial=50, window_s=0.1, window_samples_min=5, probe_s=5
        ),
    )
    gate = Gate(Rules(resources=[rule]), clock=clock)
    for _ in range(20):
        _run_window(gate, clock, 500, 0.1)
    assert gate.status()["resources"]["api"]["adaptive"]["baseline_rt_ms"] == pytest.approx(100.0)
    for _ in range(80):  # the service is now 3x slower for good (about 10 s)
        _run_window(gate, clock, 500, 0.3)
    status = gate.status()["resources"]["api"]
    assert status["adaptive"]["baseline_rt_ms"] == pytest.approx(300.0)  # learnt by a probe
    assert status["concurrency_limit"] > 5  # and the limit is not stuck at its minimum


# -- breaker ----------------------------------------------------------------------------------------------------


def test_breaker_closed_open_half_open_closed_and_reopen() -> None:
    clock = Clock()
    rule = ResourceRule(
        name="pg", breaker=BreakerRule(window_s=10, buckets=10, calls_min=10, error_ratio_max=0.5, open_s=5, probes=2)
    )
    gate = Gate(Rules(resources=[rule]), clock=clock)
    for i in range(10):
        gate.enter("pg", Priority.PAY).exit(ok=i < 4)  # 6 of 10 fail: over half
    assert gate.status()["resources"]["pg"]["breaker"]["state"] == "open"
    clock.advance(2.0)
    with pytest.raises(Refused) as info:
        gate.enter("pg", Priority.PAY)
    assert (info.value.code, info.value.http_status, info.value.retry_after_ms) == (FlowCode.CIRCUIT_OPEN, 503, 3000)
    clock.advance(3.0)
    p1 = gate.enter("pg", Priority.PAY)  # half-open: two probes
    p2 = gate.enter("pg", Priority.QUERY)
    assert gate.status()["resources"]["pg"]["breaker"]["state"] == "half_open"
    with pytest.raises(Refused):
        gate.enter("pg", Priority.PAY)  # probes are out
    p1.exit(ok=True)
    assert gate.status()["resources"]["pg"]["breaker"]["state"] == "half_open"
    p2.exit(ok=True)
    assert gate.status()["resources"]["pg"]["breaker"]["state"] == "closed"
    # Again open, and a failed probe opens it again.
    for _ in range(10):
        gate.enter("pg", Priority.PAY).exit(ok=False)
    clock.advance(5.0)
    gate.enter("pg", Priority.PAY).exit(ok=False)
    status = gate.status()["resources"]["pg"]["breaker"]
    assert status["state"] == "open"
    assert status["transitions"] == {
        "closed->open": 2,
        "open->half_open": 2,
        "half_open->closed": 1,
        "half_open->open": 1,
    }


def test_breaker_on_slow_calls() -> None:
    clock = Clock()
    rule = ResourceRule(
        name="pg", breaker=BreakerRule(calls_min=5, slow_ms=100, slow_ratio_max=0.5, error_ratio_max=1.0, open_s=1)
    )
    gate = Gate(Rules(resources=[rule]), clock=clock)
    for _ in range(5):
        t = gate.enter("pg", Priority.PAY)
        clock.advance(0.2)
        t.exit()
    assert gate.status()["resources"]["pg"]["breaker"]["state"] == "open"
    clock.advance(1.0)
    t = gate.enter("pg", Priority.PAY)
    clock.advance(0.5)  # a slow probe
    t.exit()
    assert gate.status()["resources"]["pg"]["breaker"]["state"] == "open"
    clock.advance(1.0)
    gate.enter("pg", Priority.PAY).exit()
    assert gate.status()["resources"]["pg"]["breaker"]["state"] == "closed"


# -- priorities under pressure ---------------------------------------------------------------------------------


def test_a_flood_of_browsing_cannot_starve_paying() -> None:
    clock = Clock()
    gate = Gate(Rules(resources=[ResourceRule(name="shop", rate_per_s=100, burst=100)]), clock=clock)
    paid = browsed = 0
    for ms in range(5000):  # 5 s: 40 browse calls and 1 pay call every millisecond
        clock.t = 1000.0 + ms / 1000
        browsed += admitted(gate, "shop", Priority.BROWSE, 40)
        paid += admitted(gate, "shop", Priority.PAY, 1)
    # 5000 pay calls over 5 s ask 1000/s of a 100/s bucket: paying gets all it can and browsing almost nothing.
    assert paid >= 100 * 5 * 0.95
    assert browsed <= 60  # only its half of the initial burst
    assert paid + browsed <= 100 + 100 * 5 + 1


def test_paying_gets_its_share_when_browsing_floods_concurrency_and_system() -> None:
    clock = Clock()
    rules = Rules(resources=[ResourceRule(name="x")], system=SystemRule(inflight_max=100))
    gate = Gate(rules, clock=clock)
    held = []
    for _ in range(1000):
        try:
            held.append(gate.enter("x", Priority.BROWSE))
        except Refused as exc:
            assert (exc.code, exc.http_status) == (FlowCode.SYSTEM_OVERLOADED, 503)
    assert len(held) == 50
    pay = [gate.enter("x", Priority.PAY) for _ in range(50)]
    with pytest.raises(Refused):
        gate.enter("x", Priority.PAY)
    for t in held + pay:
        t.exit()


def test_bbr_system_rule_refuses_past_measured_capacity() -> None:
    clock = Clock()
    rules = Rules(resources=[ResourceRule(name="x")], system=SystemRule(bbr=True, bbr_inflight_min=4))
    gate = Gate(rules, clock=clock)
    # Measure: 10 calls of 10 ms each per 100 ms slot, one at a time: 100/s at 10 ms = capacity 1 in flight.
    for _ in range(60):
        t = gate.enter("x", Priority.PAY)
        clock.advance(0.01)
        t.exit()
    assert gate.status()["system"]["capacity_inflight"] == pytest.approx(1.0)
    held = []
    with pytest.raises(Refused) as info:
        for _ in range(100):
            held.append(gate.enter("x", Priority.PAY))
    assert info.value.code == FlowCode.SYSTEM_OVERLOADED
    assert len(held) == 5  # the floor bbr_inflight_min, then capacity says no
    for t in held:
        t.exit()


# -- hot parameters ---------------------------------------------------------------------------------------------


def test_one_hot_merchant_cannot_starve_the_rest_and_the_lru_is_bounded() -> None:
    clock = Clock()
    rule = ResourceRule(name="pay", hot=HotRule(rate_per_s=10, burst=10, hot_values_max=100, overrides={"big": 50}))
    gate = Gate(Rules(resources=[rule]), clock=clock)
    assert admitted(gate, "pay", Priority.PAY, 1000, hot="m-hot") == 10
    with pytest.raises(Refused) as info:
        gate.enter("pay", Priority.PAY, hot="m-hot")
    assert (info.value.code, info.value.retry_after_ms) == (FlowCode.HOT_PARAMETER_LIMITED, 100)
    for i in range(50):
        assert admitted(gate, "pay", Priority.PAY, 1, hot=f"m{i}") == 1
    assert admitted(gate, "pay", Priority.PAY, 1000, hot="big") == 50
    for i in range(500):
        admitted(gate, "pay", Priority.PAY, 1, hot=f"other{i}")
    hot = gate.status()["resources"]["pay"]["hot"]
    assert hot["values"] == 100 and hot["evicted"] > 0


def test_enter_hot_limits_a_second_dimension_before_admission_and_holds_nothing() -> None:
    """``Gate.enter_hot``: a value's own bucket under a rule's hot limit, checked before admission (the
    checkout gateway's callers): exact arithmetic, shares scale the depth, nothing held, a rule without a hot
    limit never refuses, and the refusals are counted under that rule's name."""
    clock = Clock()
    rules = Rules(resources=[ResourceRule(name="caller", hot=HotRule(rate_per_s=10, burst=10)), ResourceRule(name="x")])
    gate = Gate(rules, clock=clock)
    for _ in range(10):
        gate.enter_hot("caller", "shopper:ann", Priority.PAY)
    with pytest.raises(Refused) as info:
        gate.enter_hot("caller", "shopper:ann", Priority.PAY)
    assert (info.value.code, info.value.retry_after_ms, info.value.resource) == (
        FlowCode.HOT_PARAMETER_LIMITED,
        100,
        "caller",
    )
    gate.enter_hot("caller", "shopper:bob", Priority.PAY)  # another value has its own bucket
    clock.t += 0.1  # one token back
    gate.enter_hot("caller", "shopper:ann", Priority.PAY)
    with pytest.raises(Refused):
        gate.enter_hot("caller", "shopper:ann", Priority.PAY)
    # BROWSE may use half the depth: with 5 of bob's 10 used (full again), his browsing is refused, paying not
    for _ in range(5):
        gate.enter_hot("caller", "shopper:bob", Priority.PAY)
    with pytest.raises(Refused):
        gate.enter_hot("caller", "shopper:bob", Priority.BROWSE)
    gate.enter_hot("caller", "shopper:bob", Priority.PAY)
    for _ in range(1000):
        gate.enter_hot("x", "anyone", Priority.PAY)  # no hot limit: never refused
    status = gate.status()
    assert status["inflight"] == 0
    assert "hot_parameter_limited" in str(status["resources"]["caller"])


def test_under_overload_less_important_work_yields_to_refused_payments() -> None:
    """``system.yield_ms``: a payment refused for overload (its concurrency limit, or the system rule) makes
    every call less important than ``yield_priority`` refused for ``yield_ms``; a quota refusal (a rate, a
    hot value) does not; the spell ends on time and changes with the rules; refusals say why."""
    clock = Clock()
    rules = Rules(
        resources=[
            ResourceRule(name="pay", concurrency_max=1),
            ResourceRule(name="capped", rate_per_s=1, burst=1),
            ResourceRule(name="query", concurrency_max=100),
        ],
        system=SystemRule(yield_ms=50.0),
    )
    gate = Gate(rules, clock=clock)
    gate.enter("query", Priority.QUERY).exit()  # no spell yet
    held = gate.enter("pay", Priority.PAY)
    with pytest.raises(Refused):
        gate.enter("pay", Priority.PAY)  # overload: the spell starts
    for priority in (Priority.QUERY, Priority.BROWSE, Priority.REPORT):
        with pytest.raises(Refused) as info:
            gate.enter("query", priority)
        assert info.value.code == FlowCode.SYSTEM_OVERLOADED and "system.yield_ms" in info.value.message
        assert info.value.retry_after_ms == 50
    gate.enter("query", Priority.CONFIRM).exit()  # as important as yield_priority: not yielding
    clock.t += 0.049
    with pytest.raises(Refused):
        gate.enter("query", Priority.QUERY)
    clock.t += 0.002
    gate.enter("query", Priority.QUERY).exit()  # the spell is over
    held.exit()
    # a quota refusal of a payment is not overload
    gate.enter("capped", Priority.PAY).exit()
    with pytest.raises(Refused) as quota:
        gate.enter("capped", Priority.PAY)
    assert quota.value.code == FlowCode.RATE_LIMITED
    gate.enter("query", Priority.QUERY).exit()
    # off by default
    off = Gate(Rules(resources=[ResourceRule(name="pay", concurrency_max=1)]), clock=clock)
    t = off.enter("pay", Priority.PAY)
    with pytest.raises(Refused):
        off.enter("pay", Priority.PAY)
    off.enter("query", Priority.REPORT).exit()
    t.exit()
    for bad in ({"yield_ms": -1}, {"yield_ms": 1e9}, {"yield_priority": "NOPE"}):
        with pytest.raises(FlowError):
            validate(Rules(system=SystemRule(**bad)))  # type: ignore[arg-type]


# -- rules and reload -------------------------------------------------------------------------------------------


def test_reload_changes_limits_at_run_time_and_keeps_state() -> None:
    clock = Clock()
    gate = Gate(Rules(resources=[ResourceRule(name="r", rate_per_s=10, burst=10)]), clock=clock)
    held = gate.enter("r", Priority.PAY)
    assert admitted(gate, "r", Priority.PAY, 100) == 9
    gate.reload(Rules(version=2, resources=[ResourceRule(name="r", rate_per_s=100, burst=100, concurrency_max=3)]))
    assert gate.status()["version"] == 2
    # The 10 tokens used stay used in the deeper bucket; the call in flight still counts.
    assert gate.status()["resources"]["r"]["bucket"]["tokens"] == pytest.approx(90.0)
    t1, t2 = gate.enter("r", Priority.PAY), gate.enter("r", Priority.PAY)
    with pytest.raises(Refused) as info:
        gate.enter("r", Priority.PAY)
    assert info.value.code == FlowCode.CONCURRENCY_LIMITED
    for t in (held, t1, t2):
        t.exit()
    assert gate.inflight == 0


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        (b'{"resources": [{"name": "a", "rate_per_s": -1}]}', "rate_per_s=-1"),
        (b'{"resources": [{"name": "a"}, {"name": "a"}]}', "named twice"),
        (b'{"shares": {"VIP": 1.0}}', "not a priority"),
        (b'{"shares": {"PAY": 0}}', "PAY=0"),
        (b'{"resources": [{"name": "a", "speed": 3}]}', "unknown field"),
        (b'{"resources": [{"name": "a", "rate_per_s": 1e999}]}', "rate_per_s"),
        (b'{"resources": [{"name": "a", "warmup_s": 5}]}', "needs a rate_per_s"),
        (b'{"resources": [{"name": "a", "adaptive": {"limit_min": 10, "limit_max": 5}}]}', "limit_max"),
        (b'{"resources": [{"name": "a", "breaker": {"error_ratio_max": 1.5}}]}', "error_ratio_max"),
        (b'{"resources": [', "not JSON"),
    ],
)
def test_bad_rules_are_refused_with_a_code_and_nothing_changes(doc: bytes, says: str) -> None:
    clock = Clock()
    good = Rules(version=1, resources=[ResourceRule(name="r", rate_per_s=5)])
    gate = Gate(good, clock=clock)
    with pytest.raises(FlowError) as info:
        gate.reload(rules_from_json(doc))
    assert info.value.code == FlowCode.BAD_RULES
    assert says in info.value.message and "\n" not in info.value.message
    assert gate.rules is good and gate.status()["version"] == 1


def test_unknown_resources_use_the_default_rule_and_are_bounded() -> None:
    clock = Clock()
    gate = Gate(Rules(default=ResourceRule(name="*", rate_per_s=1, burst=1)), clock=clock)
    assert admitted(gate, "a", Priority.QUERY, 5) == 1
    assert admitted(gate, "b", Priority.QUERY, 5) == 1
    for i in range(2000):
        admitted(gate, f"r{i}", Priority.QUERY, 1)
    assert len(gate.status()["resources"]) <= 1024 + 1  # and "*" for all the rest
    with pytest.raises(FlowError) as info:
        gate.enter("a", 9)  # type: ignore[arg-type]
    assert info.value.code == FlowCode.UNKNOWN_PRIORITY
    assert math.isfinite(gate.status()["resources"]["a"]["bucket"]["tokens"])


def test_load_average_sheds_browsing_before_paying() -> None:
    clock = Clock()
    load = [0.5]
    gate = Gate(Rules(system=SystemRule(load_max=2.0)), clock=clock, load=lambda: load[0])
    assert admitted(gate, "x", Priority.BROWSE, 1) == 1
    load[0] = 1.5
    assert admitted(gate, "x", Priority.BROWSE, 1) == 1  # the load is read at most once a second
    clock.advance(1.0)
    assert admitted(gate, "x", Priority.BROWSE, 1) == 0  # over 2.0 x 0.5
    assert admitted(gate, "x", Priority.PAY, 1) == 1
    load[0] = 3.0
    clock.advance(1.0)
    with pytest.raises(Refused) as info:
        gate.enter("x", Priority.PAY)
    assert (info.value.code, info.value.http_status) == (FlowCode.SYSTEM_OVERLOADED, 503)


def test_mean_latency_rule_sheds_by_priority() -> None:
    clock = Clock()
    gate = Gate(Rules(system=SystemRule(rt_ms_max=100, window_s=1, buckets=10)), clock=clock)
    for _ in range(5):
        t = gate.enter("x", Priority.PAY)
        clock.advance(0.06)  # 60 ms: over half of 100 ms
        t.exit()
    assert admitted(gate, "x", Priority.BROWSE, 1) == 0
    assert admitted(gate, "x", Priority.PAY, 1) == 1
    clock.advance(2.0)  # the window forgets
    assert admitted(gate, "x", Priority.BROWSE, 1) == 1


def test_the_guide_rules_example_is_a_valid_rule_set() -> None:
    guide = (Path(__file__).parent.parent / "docs" / "flow.md").read_text()
    example = guide.split("```json\n", 1)[1].split("```", 1)[0]
    rules = rules_from_json(example)
    gate = Gate(rules, clock=Clock())
    assert rules.version == 7 and gate.status()["resources"]["pay"]["bucket"]["warm_rate_per_s"] < 5000


def test_the_public_api_is_exported() -> None:
    import liangcao.flow as flow

    for name in flow.__all__:
        assert getattr(flow, name) is not None
    assert [p.name for p in sorted(Priority)] == ["PAY", "CONFIRM", "QUERY", "BROWSE", "REPORT"]
    assert issubclass(Refused, LiangcaoError) and all(3100 <= c <= 3199 for c in FlowCode)


def test_bbr_capacity_uses_the_mix_latency_not_the_fastest_call() -> None:
    clock = Clock()
    gate = Gate(Rules(system=SystemRule(bbr=True, bbr_inflight_min=2)), clock=clock)
    # Per 100 ms slot: one 1 ms read and nine 10 ms payments, one at a time (about 100 ms of work).
    for _ in range(10):
        t = gate.enter("read", Priority.QUERY)
        clock.advance(0.001)
        t.exit()
        for _ in range(9):
            t = gate.enter("pay", Priority.PAY)
            clock.advance(0.0101)
            t.exit()
    cap = gate.status()["system"]["capacity_inflight"]
    assert cap == pytest.approx(1.0, rel=0.1)  # 100/s x the slot mean of ~9.2 ms, not x 1 ms


def test_adaptive_probe_does_not_hold_a_quiet_service_at_the_minimum() -> None:
    clock = Clock()
    rule = ResourceRule(name="api", adaptive=AdaptiveRule(limit_min=2, limit_initial=20, window_s=0.5))
    gate = Gate(Rules(resources=[rule]), clock=clock)
    gate.enter("api", Priority.PAY).exit()  # the first call starts the probe
    assert gate.status()["resources"]["api"]["adaptive"]["probing"]
    for _ in range(12):  # one slow call a second: never the 10 a window wants
        clock.advance(1.0)
        t = gate.enter("api", Priority.PAY)
        clock.advance(0.2)
        t.exit()
    status = gate.status()["resources"]["api"]
    assert not status["adaptive"]["probing"] and status["concurrency_limit"] == 20
    assert status["adaptive"]["baseline_rt_ms"] == pytest.approx(200.0)
