"""The engine attacked: as a fraudster (poisoned labels, floods, reused ids, extreme inputs) and as a reviewer
(rules, versions, snapshots, determinism). Each test names the attack; a fix came with its failing test."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pytest

from liangcao.risk import ManualClock, Payment, RiskCode, RiskConfig, RiskEngine, RiskError
from liangcao.risk import limits as risk_limits
from liangcao.risk.codes import RiskFault
from liangcao.risk.windows import LruTable

T0 = 1_800_000_000_000
STRICT = {
    "thresholds": {"step_up": 0.6, "block": 0.97},
    "rules": [
        {"id": "big", "reason": "LARGE_AMOUNT", "action": "step_up", "when": [["amount_fen", ">=", 100_000]]},
        {"id": "huge", "reason": "HUGE_AMOUNT", "action": "block", "when": [["amount_fen", ">=", 1_000_000]]},
    ],
}


def pay(i: int, clock: ManualClock, **kw: Any) -> Payment:
    base: dict[str, Any] = {
        "payment_id": f"p{i}",
        "time_ms": clock.now_ms(),
        "shopper": "alice",
        "device": "phone",
        "ip": "10.0.0.1",
        "account": "card-1",
        "merchant": "shop",
        "amount_fen": 5000,
        "lat_e6": 31_230_000,
        "lon_e6": 121_470_000,
    }
    base.update(kw)
    return Payment(**base)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


# ------------------------------------------------------------------------------------------ floods, eviction


def test_a_flood_of_unique_keys_costs_constant_time_per_payment() -> None:
    """Evicting the oldest of a full table must not scan the dict's deleted slots (quadratic before the fix)."""
    t: LruTable[str, int] = LruTable(100_000, int)
    for i in range(100_000):
        t.touch(f"d{i}")
    began = time.thread_time()
    for i in range(100_000, 160_000):
        t.touch(f"d{i}")
    cpu = time.thread_time() - began
    assert len(t) == 100_000 and t.evicted == 60_000
    assert cpu < 1.0, f"60,000 evictions took {cpu:.1f} s of CPU"


def test_a_flood_of_one_off_keys_does_not_evict_the_regulars() -> None:
    t: LruTable[str, int] = LruTable(100, int)
    for _ in range(2):
        for i in range(50):
            t.touch(f"regular-{i}")
    for i in range(10_000):
        t.touch(f"flood-{i}")
    assert all(f"regular-{i}" in t for i in range(50)) and len(t) == 100


def test_a_flood_of_fake_shoppers_does_not_erase_a_victims_history(
    clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Account takeover after a flood: were the victim forgotten, the thief's new device would not be new."""
    monkeypatch.setattr(risk_limits, "shoppers_max", 200)
    e = RiskEngine(None, clock=clock, config=RiskConfig(learn_per_decide=0))
    for i in range(5):
        clock.advance(60_000)
        e.decide(pay(i, clock))
    for i in range(2000):
        clock.advance(10)
        e.decide(pay(1000 + i, clock, shopper=f"fake-{i}", device=f"fd-{i}"))
    clock.advance(60_000)
    d = e.decide(pay(99, clock, device="thief-phone"))
    assert d.features["shopper_hist_n"] == 5 and d.features["new_device"] == 1


def test_pending_is_bounded_and_evicts_oldest_first(clock: ManualClock) -> None:
    e = RiskEngine(None, clock=clock, config=RiskConfig(learn_per_decide=0, pending_max=20))
    for i in range(50):
        clock.advance(10)
        e.decide(pay(i, clock, shopper=f"s{i}"))
    assert list(e.pending)[:1] == ["p30"] and len(e.pending) == 20


# ------------------------------------------------------------------------------------- poisoned labels, ids


def test_a_shopper_cannot_clear_a_blocked_payment_with_it_was_me(clock: ManualClock) -> None:
    """'It was me' is the answer to a step-up; a block is cleared by a review, not by the one blocked."""
    e = RiskEngine(None, clock=clock, rules=STRICT, config=RiskConfig(learn_per_decide=0))
    blocked = e.decide(pay(1, clock, amount_fen=2_000_000))
    assert blocked.action == "block"
    with pytest.raises(RiskError) as info:
        e.label("p1", False, source="it_was_me")
    assert info.value.code == RiskCode.BAD_LABEL and len(e.queue) == 0
    clock.advance(1000)
    allowed = e.decide(pay(2, clock))
    assert allowed.action == "allow"
    with pytest.raises(RiskError):
        e.label("p2", False, source="it_was_me")  # nothing was asked: nothing to answer
    clock.advance(1000)
    stepped = e.decide(pay(3, clock, amount_fen=200_000))
    assert stepped.action == "step_up"
    e.label("p3", False, source="it_was_me")
    with pytest.raises(RiskError) as fraud_me:
        e.label("p1", True, source="it_was_me")
    assert fraud_me.value.code == RiskCode.BAD_LABEL
    e.label("p1", False, source="review")  # an analyst may clear it


def test_a_chargeback_overrides_the_shoppers_it_was_me(clock: ManualClock) -> None:
    """Friendly fraud: the account owner confirms, then disputes. The bank's word must still teach fraud."""
    e = RiskEngine(None, clock=clock, rules=STRICT, config=RiskConfig(learn_per_decide=0))
    assert e.decide(pay(1, clock, amount_fen=200_000)).action == "step_up"
    e.label("p1", False, source="it_was_me")
    clock.advance(86_400_000)
    e.label("p1", True, source="chargeback")
    assert [y for _, y, _ in e.queue] == [False, True] and e.status()["labels"] == 2
    with pytest.raises(RiskError) as info:
        e.label("p1", False, source="it_was_me")  # and the shopper cannot take the chargeback back
    assert info.value.code == RiskCode.LABEL_CONFLICT


def test_a_reused_payment_id_with_other_terms_is_refused(clock: ManualClock) -> None:
    """A retry returns the recorded decision; a different payment under a known id must not inherit it."""
    e = RiskEngine(None, clock=clock, rules=STRICT, config=RiskConfig(learn_per_decide=0))
    first = e.decide(pay(1, clock, amount_fen=100))
    clock.advance(5000)
    retry = e.decide(pay(1, clock, amount_fen=100))  # the same payment again (a later time is still a retry)
    assert retry.decision_id == first.decision_id and retry.action == "allow"
    with pytest.raises(RiskError) as info:
        e.decide(pay(1, clock, amount_fen=5_000_000))
    assert info.value.code == RiskCode.PAYMENT_ID_REUSED and e.status()["decided"] == 1


# --------------------------------------------------------------------------------- time, numbers, versions


def test_far_future_and_backwards_times(clock: ManualClock) -> None:
    e = RiskEngine(None, clock=clock, config=RiskConfig(learn_per_decide=0))
    with pytest.raises(RiskError) as info:
        e.decide(pay(1, clock, time_ms=T0 + 10 * 86_400_000))
    assert info.value.code == RiskCode.CLOCK_SKEW
    for i in range(3):
        clock.advance(1000)
        e.decide(pay(10 + i, clock))
    clock.set(T0 - 3_600_000)  # the clock steps back an hour: nothing un-expires, nothing breaks
    d = e.decide(pay(20, clock))
    assert d.features["shopper_n_1m"] == 3
    e.label("p10", True, time_ms=T0 + 10 * 86_400_000)  # a label from the future never moves windows ahead
    assert e.learn() >= 1


def test_extreme_inputs_never_make_a_score_nan(clock: ManualClock) -> None:
    e = RiskEngine(None, clock=clock, config=RiskConfig(learn_per_decide=0, publish_every=20))
    for i in range(200):
        clock.advance(1000)
        amount = 1 if i % 2 else risk_limits.amount_fen_max
        d = e.decide(pay(i, clock, shopper=f"s{i % 3}", amount_fen=amount, lat_e6=-90_000_000 + i, lon_e6=0))
        assert math.isfinite(d.model_score) and math.isfinite(d.score)
        if i % 3 == 0:
            e.label(f"p{i}", bool(i % 2), source="confirmed")
        e.learn()
    assert e.status()["learned"] > 50


def test_a_rule_with_a_non_finite_number_is_refused(clock: ManualClock) -> None:
    e = RiskEngine(None, clock=clock)
    for value in (math.nan, math.inf):
        bad = {"rules": [{"id": "x", "reason": "X", "action": "block", "when": [["amount_z", ">", value]]}]}
        with pytest.raises(RiskError) as info:
            e.reload_rules(bad)
        assert info.value.code == RiskCode.BAD_RULES
    too_many = {
        "rules": [{"id": "x", "reason": "X", "action": "block", "when": [["amount_fen", "in", list(range(100_000))]]}]
    }
    with pytest.raises(RiskError) as big:
        e.reload_rules(too_many)
    assert big.value.code == RiskCode.BAD_RULES


def test_a_shadow_score_rule_does_not_move_the_live_score(clock: ManualClock) -> None:
    rules = {
        "thresholds": {"step_up": 0.5, "block": 0.97},
        "rules": [
            {
                "id": "s",
                "reason": "SHADOW_POINTS",
                "action": "score",
                "points": 1.0,
                "shadow": True,
                "when": [["amount_fen", ">", 0]],
            }
        ],
    }
    e = RiskEngine(None, clock=clock, rules=rules, config=RiskConfig(learn_per_decide=0))
    d = e.decide(pay(1, clock))
    assert d.action == "allow" and d.score == d.model_score and "SHADOW_POINTS" not in d.reasons
    assert d.shadow == ["s:score"]


def test_rollback_to_a_version_that_does_not_exist(tmp_path: Path, clock: ManualClock) -> None:
    e = RiskEngine(tmp_path, clock=clock)
    serving = e.model_version
    for version in ("m999", "m0", "../snapshot", "m1/../m1", ""):
        with pytest.raises(RiskError) as info:
            e.rollback_model(version)
        assert info.value.code == RiskCode.UNKNOWN_MODEL_VERSION
    assert e.model_version == serving
    e.close()


def test_a_truncated_snapshot_is_a_named_fault(tmp_path: Path, clock: ManualClock) -> None:
    e = RiskEngine(tmp_path, clock=clock)
    e.decide(pay(1, clock))
    e.close()
    path = tmp_path / "snapshot.pkl"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(RiskFault) as info:
        RiskEngine(tmp_path, clock=clock)
    assert info.value.code == RiskCode.SNAPSHOT_BAD


def test_the_same_recorded_versions_reproduce_the_same_decision(tmp_path: Path, clock: ManualClock) -> None:
    e = RiskEngine(tmp_path, clock=clock, config=RiskConfig(learn_per_decide=0, publish_every=10))
    decisions = []
    for i in range(60):
        clock.advance(30_000)
        d = e.decide(pay(i, clock, shopper=f"s{i % 4}", amount_fen=1000 + 97 * i))
        decisions.append(d)
        e.label(f"p{i}", i % 5 == 0, source="confirmed")
        e.learn()
    assert len({d.model_version for d in decisions}) > 2
    e.reload_rules(STRICT)
    e.close()
    again = RiskEngine(tmp_path, clock=clock)
    for d in decisions:
        r = again.reproduce(d)
        assert (r.action, r.reasons, r.score, r.model_score) == (d.action, d.reasons, d.score, d.model_score)
    again.close()


# ------------------------------------------------------------------------------------------- bounded work


def test_a_burst_of_maturing_payments_is_spread_over_decisions(clock: ManualClock) -> None:
    """The clock jumps (a restart, a stalled host): a day of payments matures at once, never in one decision."""
    cfg = RiskConfig(learn_per_decide=2, mature_per_decide=16, negative_sample_rate=1.0)
    e = RiskEngine(None, clock=clock, config=cfg)
    for i in range(3000):
        clock.advance(5)
        e.decide(pay(i, clock, shopper=f"s{i % 50}"))
    e.learn()
    assert len(e.maturing) == 3000 - 0 and len(e.queue) == 0
    clock.advance(cfg.label_maturity_ms + 60_000)
    e.decide(pay(5000, clock))
    assert len(e.maturing) == 3000 - 16 + 1 and len(e.queue) == 16 - 2  # 16 matured, 2 of them learned
    assert e.learn(4) == 4 and len(e.maturing) == 3000 - 16 - 32 + 1
    e.learn()
    assert len(e.maturing) == 1 and len(e.queue) == 0


def test_a_model_with_broken_weights_never_puts_nan_in_a_decision(clock: ManualClock) -> None:
    e = RiskEngine(None, clock=clock, config=RiskConfig(learn_per_decide=0))
    lr = list(e.models.train.steps.values())[-1]  # type: ignore[attr-defined]
    lr.intercept = math.nan  # what an overflow in SGD would leave behind
    version = e.publish_model()
    d = e.decide(pay(1, clock))
    assert d.model_version == version and d.model_score == 0.0 and math.isfinite(d.score)
    assert e.reproduce(d).model_score == 0.0


def test_a_refund_or_chargeback_told_again_counts_once(clock: ManualClock) -> None:
    """Replaying one refund or chargeback must not inflate a (competitor's) merchant's rates."""
    e = RiskEngine(None, clock=clock, config=RiskConfig(learn_per_decide=0))
    e.decide(pay(1, clock, merchant="rival"))
    for _ in range(50):
        e.refund("p1")
        e.label("p1", True, source="chargeback")
    clock.advance(1000)
    d = e.decide(pay(2, clock, merchant="rival", shopper="bob", device="d2", account="a2"))
    assert d.features["merchant_refund_rate_1d"] == 1 / 11 and d.features["merchant_chargeback_rate_1d"] == 1 / 11
    assert d.features["merchant_n_1d"] == 1


def test_tick_learns_a_backlog_in_chunks_releasing_the_lock(clock: ManualClock) -> None:
    """A host's housekeeping thread must not hold the deciding threads for a whole backlog of labels."""
    e = RiskEngine(None, clock=clock, config=RiskConfig(learn_per_decide=0, negative_sample_rate=1.0, tick_chunk=32))
    for i in range(400):
        clock.advance(10)
        e.decide(pay(i, clock, shopper=f"s{i % 40}"))
        e.label(f"p{i}", i % 9 == 0, source="confirmed")
    holds: list[tuple[int | None, bool]] = []
    learn = e._learn

    def watched(now: int, max_items: int | None, mature_max: int | None = None) -> int:
        holds.append((max_items, e._lock._is_owned()))  # type: ignore[attr-defined]
        return learn(now, max_items, mature_max)

    e._learn = watched  # type: ignore[method-assign]
    e.tick()
    assert len(e.queue) == 0 and e.models.learned == 400
    assert len(holds) >= 400 // 32 and all(m == 32 and owned for m, owned in holds)


def test_the_maturity_queue_is_bounded_like_pending(clock: ManualClock) -> None:
    """Payments wait hours to mature; at a high rate the queue of them must stay within pending_max."""
    e = RiskEngine(None, clock=clock, config=RiskConfig(learn_per_decide=0, pending_max=30, negative_sample_rate=1.0))
    for i in range(200):
        clock.advance(10)
        e.decide(pay(i, clock, shopper=f"s{i % 20}"))
    assert len(e.maturing) == 30 and len(e.pending) == 30
    assert {pid for _, pid in e.maturing} == set(e.pending)
    clock.advance(RiskConfig().label_maturity_ms)
    assert e.learn() == 30  # the payments still pending all mature as good


def test_a_refused_chargeback_changes_nothing(clock: ManualClock) -> None:
    e = RiskEngine(None, clock=clock, config=RiskConfig(learn_per_decide=0))
    e.decide(pay(1, clock, merchant="shop-a"))
    e.label("p1", False, source="review")
    with pytest.raises(RiskError) as info:
        e.label("p1", True, source="chargeback")
    assert info.value.code == RiskCode.LABEL_CONFLICT
    clock.advance(1000)
    d = e.decide(pay(2, clock, merchant="shop-a", shopper="bob", device="d2", account="a2"))
    assert d.features["merchant_chargeback_rate_1d"] == 0 and e.status()["labels"] == 1
