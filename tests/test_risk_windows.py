"""Sliding windows with an injected clock: exact arithmetic at the bucket edges, bounded tables."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from liangcao.risk.features import FeatureState
from liangcao.risk.types import Payment
from liangcao.risk.windows import WINDOWS, LruTable, Windows

T0 = 1_800_000_000_000 - 1_800_000_000_000 % 86_400_000  # a day boundary: every bucket starts here


def test_minute_window_counts_events_until_their_bucket_leaves() -> None:
    w = Windows.with_amounts()
    w.add(T0 + 1_000, 100)
    w.add(T0 + 9_999, 50)
    assert w.counts(T0 + 10_000) == (2, 2, 2)
    assert w.amounts(T0 + 10_000) == (150, 150, 150)
    # The minute is 6 buckets of 10 s: bucket [T0, T0+10 s) is counted until T0+60 s.
    assert w.counts(T0 + 59_999)[0] == 2
    assert w.counts(T0 + 60_000) == (0, 2, 2)
    assert w.amounts(T0 + 60_000) == (0, 150, 150)
    # The hour: 6 buckets of 10 min; the day: 12 buckets of 2 h.
    assert w.counts(T0 + 3_599_999)[1] == 2
    assert w.counts(T0 + 3_600_000) == (0, 0, 2)
    assert w.counts(T0 + 86_399_999)[2] == 2
    assert w.counts(T0 + 86_400_000) == (0, 0, 0)


def test_a_long_silence_clears_everything_and_time_going_back_counts_in_the_current_bucket() -> None:
    w = Windows.with_amounts()
    for i in range(100):
        w.add(T0 + i * 1000, 1)
    assert w.counts(T0 + 99_000) == (60, 100, 100)
    w.add(T0 + 10 * 86_400_000, 7)
    assert w.counts(T0 + 10 * 86_400_000) == (1, 1, 1)
    w.add(T0, 3)  # a clock that went back: counted now, never in the past
    assert w.counts(T0 + 10 * 86_400_000) == (2, 2, 2)
    assert w.amounts(T0 + 10 * 86_400_000) == (10, 10, 10)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3 * 86_400_000), st.integers(1, 10_000)), max_size=60), st.integers(0, 86_400_000)
)
def test_windows_match_a_brute_force_count(events: list[tuple[int, int]], later: int) -> None:
    events.sort()
    w = Windows.with_amounts()
    for t, amount in events:
        w.add(T0 + t, amount)
    now = T0 + (events[-1][0] if events else 0) + later
    expect_n = []
    expect_s = []
    for _, length, n in WINDOWS:
        grain = length // n
        first = (now // grain - n + 1) * grain  # the oldest bucket still in the window starts here
        inside = [a for t, a in events if T0 + t >= first]
        expect_n.append(len(inside))
        expect_s.append(sum(inside))
    assert list(w.counts(now)) == expect_n
    assert list(w.amounts(now)) == expect_s


def test_lru_table_is_bounded_and_evicts_the_least_recently_seen() -> None:
    t: LruTable[str, Windows] = LruTable(3, Windows)
    for key in "abc":
        t.touch(key)
    t.touch("a")  # a is now the most recent
    _, fresh = t.touch("d")
    assert fresh and len(t) == 3 and "b" not in t and "a" in t and t.evicted == 1


def _pay(i: int, now: int, **kw: object) -> Payment:
    base: dict[str, object] = {
        "payment_id": f"p{i}",
        "time_ms": now,
        "shopper": "alice",
        "device": "phone",
        "ip": "10.1.2.3",
        "account": "card-1",
        "merchant": "shop",
        "amount_fen": 5000,
        "lat_e6": 31_230_000,
        "lon_e6": 121_470_000,
    }
    base.update(kw)
    return Payment(**base)  # type: ignore[arg-type]


def test_features_see_the_state_before_the_payment_then_add_it() -> None:
    fs = FeatureState()
    now = T0 + 12 * 3_600_000
    first = fs.observe(_pay(1, now), now)
    assert first["shopper_n_1d"] == 0 and first["new_device"] == 0 and first["no_location"] == 1
    for i in range(2, 6):
        fs.observe(_pay(i, now + i * 1000), now + i * 1000)
    f = fs.observe(
        _pay(
            9,
            now + 30_000,
            device="new-phone",
            ip="10.1.2.99",
            lat_e6=39_900_000,
            lon_e6=116_400_000,
            amount_fen=500_000,
        ),
        now + 30_000,
    )
    assert f["shopper_n_1m"] == 5 and f["device_n_1m"] == 0 and f["ip_n_1m"] == 5  # same /24 prefix
    assert f["new_device"] == 1 and f["new_payee"] == 0 and f["amount_z"] > 3
    assert 1000 < float(f["distance_km"]) < 1100  # Shanghai to Beijing
    later = now + 2 * 3_600_000
    g = fs.observe(_pay(10, later), later)
    assert g["shopper_n_1m"] == 0 and g["shopper_n_1h"] == 0 and g["shopper_n_1d"] == 6
    assert g["shopper_amt_1d"] == 5 * 5000 + 500_000
