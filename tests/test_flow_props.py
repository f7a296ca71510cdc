"""Properties of flow control (hypothesis): a bucket never admits more than rate x time + burst in any window,
whatever the arrival pattern, shares and warm-up; the gate's books balance under any sequence of calls."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from liangcao.flow import Gate, Priority, Refused, ResourceRule, Rules
from liangcao.flow.bucket import TokenBucket

arrivals = st.lists(
    st.tuples(st.floats(0.0, 0.3), st.sampled_from([1.0, 0.9, 0.75, 0.5, 0.3])), min_size=1, max_size=300
)


@settings(max_examples=60, deadline=None)
@given(
    rate=st.floats(1.0, 500.0),
    burst=st.integers(0, 50),
    warmup_s=st.sampled_from([0.0, 0.5, 3.0]),
    calls=arrivals,
)
def test_no_window_admits_more_than_rate_times_length_plus_burst(
    rate: float, burst: int, warmup_s: float, calls: list[tuple[float, float]]
) -> None:
    b = TokenBucket(rate, burst, warmup_s=warmup_s, now=0.0)
    t = 0.0
    times: list[float] = []
    for dt, share in calls:
        t += dt
        for _ in range(3):  # three calls at each instant
            wait = b.try_take(t, share)
            assert wait >= 0.0
            if wait == 0.0:
                times.append(t)
            else:
                assert b.wait(t + wait + 1e-6, share) == 0.0  # the wait announced is enough
    for i in range(len(times)):
        for j in range(i, min(len(times), i + 60)):
            assert j - i + 1 <= rate * (times[j] - times[i]) + b.burst + 1e-6


@settings(max_examples=40, deadline=None)
@given(calls=arrivals)
def test_a_lower_share_never_takes_the_last_part_of_the_bucket(calls: list[tuple[float, float]]) -> None:
    b = TokenBucket(50.0, 20, now=0.0)
    t = 0.0
    for dt, share in calls:
        t += dt
        before = b.tokens(t)
        if b.try_take(t, share) == 0.0:
            assert before >= 1.0 + (1.0 - share) * (b.burst - 1) - 1e-6


class GateBooks(RuleBasedStateMachine):
    """Random enters and exits at random times: in-flight counts and decisions always add up."""

    def __init__(self) -> None:
        super().__init__()
        self.t = 0.0
        rules = Rules(
            resources=[
                ResourceRule(name="a", rate_per_s=20, burst=5, concurrency_max=6),
                ResourceRule(name="b", concurrency_max=3),
            ]
        )
        self.gate = Gate(rules, clock=lambda: self.t)
        self.open: list[tuple[str, object]] = []
        self.calls = 0
        self.refused = 0

    @rule(resource=st.sampled_from(["a", "b", "c"]), priority=st.sampled_from(list(Priority)))
    def enter(self, resource: str, priority: Priority) -> None:
        self.calls += 1
        try:
            self.open.append((resource, self.gate.enter(resource, priority)))
        except Refused as exc:
            self.refused += 1
            assert exc.http_status in (429, 503) and exc.retry_after_ms >= 1

    @precondition(lambda self: self.open)
    @rule(index=st.integers(0, 100), ok=st.booleans())
    def exit(self, index: int, ok: bool) -> None:
        _, ticket = self.open.pop(index % len(self.open))
        ticket.exit(ok)  # type: ignore[attr-defined]

    @rule(dt=st.floats(0.0, 0.5))
    def wait(self, dt: float) -> None:
        self.t += dt

    @invariant()
    def books_balance(self) -> None:
        status = self.gate.status()
        assert status["inflight"] == len(self.open)
        for name, limit in (("a", 6), ("b", 3)):
            held = sum(1 for r, _ in self.open if r == name)
            assert status["resources"][name]["inflight"] == held <= limit
        assert status["passed"] + status["refused"] == self.calls
        assert status["refused"] == self.refused


GateBooks.TestCase.settings = settings(max_examples=30, stateful_step_count=60, deadline=None)
test_gate_books = GateBooks.TestCase
