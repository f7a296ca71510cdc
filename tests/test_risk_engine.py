"""The engine end to end in one process: rules, bad input, labels, versions, reproducibility, restarts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from liangcao import codes
from liangcao.risk import Decision, ManualClock, Payment, RiskCode, RiskConfig, RiskEngine, RiskError, decode_payment
from liangcao.risk.codes import RiskFault

T0 = 1_800_000_000_000


def pay(i: int, clock: ManualClock, **kw: Any) -> Payment:
    base: dict[str, Any] = {
        "payment_id": f"p{i}",
        "time_ms": clock.now_ms(),
        "shopper": f"s{i % 7}",
        "device": f"d{i % 7}",
        "ip": f"10.0.{i % 7}.1",
        "account": f"a{i % 7}",
        "merchant": f"m{i % 3}",
        "amount_fen": 1000 + i,
    }
    base.update(kw)
    return Payment(**base)


RULES: dict[str, Any] = {
    "thresholds": {"step_up": 0.6, "block": 0.97},
    "rules": [
        {
            "id": "burst",
            "reason": "DEVICE_BURST",
            "action": "block",
            "priority": 100,
            "when": [["device_n_1m", ">=", 3]],
        },
        {"id": "vip", "reason": "VIP_SHOPPER", "action": "allow", "priority": 200, "when": [["amount_fen", "==", 777]]},
        {"id": "big", "reason": "LARGE_AMOUNT", "action": "step_up", "when": [["amount_fen", ">=", 100_000]]},
        {
            "id": "gift",
            "reason": "GIFT_CARD",
            "action": "score",
            "points": 0.3,
            "when": [["category", "in", ["gift_card"]]],
        },
        {
            "id": "try",
            "reason": "TRYING_NEW_DEVICE_RULE",
            "action": "block",
            "shadow": True,
            "when": [["amount_fen", ">=", 50_000]],
        },
    ],
}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


def test_precedence_priority_then_severity_and_score_rules_add_points(clock: ManualClock) -> None:
    e = RiskEngine(None, clock=clock, rules=RULES, config=RiskConfig(learn_per_decide=0))
    d = e.decide(pay(1, clock, amount_fen=200_000))
    assert d.action == "step_up" and d.reasons[0] == "LARGE_AMOUNT" and d.rules_version == "r1"
    for i in range(2, 6):  # the fourth on one device within a minute sees three before it
        clock.advance(1000)
        d = e.decide(pay(i, clock, device="shared", amount_fen=200_000))
    assert d.action == "block" and d.reasons[:2] == ["DEVICE_BURST", "LARGE_AMOUNT"]  # 100 > 10: the burst wins
    clock.advance(1000)
    d = e.decide(pay(6, clock, device="shared", amount_fen=777))
    assert d.action == "allow" and d.reasons == ["VIP_SHOPPER", "DEVICE_BURST"]  # the whitelist outranks it
    clock.advance(1000)
    d = e.decide(pay(7, clock, category="gift_card"))
    assert d.score == pytest.approx(d.model_score + 0.3) and "GIFT_CARD" in d.reasons
    s = e.status()
    assert (s["decided"], s["allow"], s["step_up"], s["block"]) == (7, 2, 4, 1)
    assert set(d.public()) == {"decision_id", "action", "reasons", "score", "rules_version", "model_version"}


def test_shadow_rules_are_recorded_but_do_not_act(clock: ManualClock) -> None:
    e = RiskEngine(None, clock=clock, rules=RULES, config=RiskConfig(learn_per_decide=0))
    d = e.decide(pay(1, clock, amount_fen=60_000))
    assert d.action == "allow" and d.shadow == ["try:block"] and d.shadow_action == "block"
    assert "TRYING_NEW_DEVICE_RULE" not in d.reasons


def test_hot_reload_is_versioned_and_bad_rules_change_nothing(tmp_path: Path, clock: ManualClock) -> None:
    e = RiskEngine(tmp_path, clock=clock, rules=RULES)
    assert e.rules_version == "r1" and e.decide(pay(1, clock, amount_fen=200_000)).action == "step_up"
    relaxed = json.loads(json.dumps(RULES))
    relaxed["rules"][2]["action"] = "allow"
    assert e.reload_rules(json.dumps(relaxed)) == "r2"
    assert e.reload_rules(relaxed) == "r2"  # the same set again keeps its version
    clock.advance(1000)
    d = e.decide(pay(2, clock, amount_fen=200_000))
    assert d.action == "allow" and d.rules_version == "r2"
    bad_sets: list[tuple[Any, str]] = [
        ("{not json", "not JSON"),
        ({"rules": [{"id": "x", "reason": "X", "action": "explode", "when": [["amount_fen", ">", 1]]}]}, "action"),
        (
            {"rules": [{"id": "x", "reason": "X", "action": "block", "when": [["amont_fen", ">", 1]]}]},
            "unknown field 'amont_fen'",
        ),
        ({"rules": [{"id": "x", "reason": "X", "action": "block", "when": [["amount_fen", ">", "1"]]}]}, "is a number"),
        ({"rules": [{"id": "x", "reason": "X", "action": "block", "when": [["amount_fen", "~", 1]]}]}, "unknown op"),
        (
            {"rules": [{"id": "x", "reason": "lower", "action": "block", "when": [["amount_fen", ">", 1]]}]},
            "upper-case",
        ),
        ({"rules": [], "thresholds": {"step_up": 0.9, "block": 0.5}}, "thresholds"),
        ({"rules": [], "surprise": 1}, "unknown field"),
        ({"rules": [{"id": "x", "reason": "X", "action": "score", "when": [["amount_fen", ">", 1]]}]}, "points"),
    ]
    for bad, words in bad_sets:
        with pytest.raises(RiskError, match=words) as info:
            e.reload_rules(bad)
        assert info.value.code == RiskCode.BAD_RULES
    assert e.rules_version == "r2" and sorted(p.name for p in (tmp_path / "rules").glob("r*.json")) == [
        "r1.json",
        "r2.json",
    ]
    with pytest.raises(RiskError) as busy:
        RiskEngine(tmp_path, clock=clock)
    assert busy.value.code == RiskCode.HOME_IN_USE
    e.close()
    # A restart keeps the current set and its version.
    again = RiskEngine(tmp_path, clock=clock)
    assert again.rules_version == "r2" and json.loads(again.rules_text("r1")) == json.loads(e.rules_text("r1"))
    again.close()


def test_bad_payments_are_refused_with_a_code_and_change_nothing(clock: ManualClock) -> None:
    e = RiskEngine(None, clock=clock)
    good = msgspec.to_builtins(pay(1, clock))
    cases: list[tuple[Any, RiskCode]] = [
        ({**good, "amount_fen": 12.5}, RiskCode.FLOAT_MONEY),
        ({**good, "amount_fen": 0}, RiskCode.AMOUNT_OUT_OF_RANGE),
        ({**good, "amount_fen": -5}, RiskCode.AMOUNT_OUT_OF_RANGE),
        ({**good, "surprise": 1}, RiskCode.UNKNOWN_FIELD),
        ({k: v for k, v in good.items() if k != "shopper"}, RiskCode.BAD_PAYMENT),
        ({**good, "shopper": "x" * 500}, RiskCode.FIELD_TOO_LONG),
        ({**good, "lat_e6": 1}, RiskCode.BAD_LOCATION),
        ({**good, "lat_e6": 95_000_000, "lon_e6": 0}, RiskCode.BAD_LOCATION),
    ]
    for body, code in cases:
        with pytest.raises(RiskError) as info:
            decode_payment(json.dumps(body))
        assert info.value.code == code, body
        assert "\n" not in info.value.message
        with pytest.raises(RiskError) as info2:
            decode_payment(body)
        assert info2.value.code == code
    with pytest.raises(RiskError) as info:
        decode_payment(b"{nope")
    assert info.value.code == RiskCode.BAD_PAYMENT
    # Built in Python (msgspec does not check on construction): the engine checks.
    with pytest.raises(RiskError) as info:
        e.decide(pay(2, clock, amount_fen=99.0))
    assert info.value.code == RiskCode.FLOAT_MONEY
    with pytest.raises(RiskError) as info:
        e.decide(pay(3, clock, time_ms=T0 - 3_600_000))
    assert info.value.code == RiskCode.CLOCK_SKEW
    assert e.status()["decided"] == 0 and e.status()["shoppers"] == 0
    assert codes.name_of(RiskCode.FLOAT_MONEY) == "FLOAT_MONEY" and codes.http_status(RiskCode.UNKNOWN_PAYMENT) == 404


def test_labels_unknown_conflicting_and_retries(clock: ManualClock) -> None:
    e = RiskEngine(None, clock=clock, config=RiskConfig(learn_per_decide=0, negative_sample_rate=1.0))
    d = e.decide(pay(1, clock))
    assert e.decide(pay(1, clock)).decision_id == d.decision_id and e.status()["decided"] == 1  # a retry
    e.label("p1", True, source="chargeback")
    e.label("p1", True)  # the same label again: nothing new
    with pytest.raises(RiskError) as info:
        e.label("p1", False, source="review")
    assert info.value.code == RiskCode.LABEL_CONFLICT
    with pytest.raises(RiskError) as info:
        e.label("nobody", True)
    assert info.value.code == RiskCode.UNKNOWN_PAYMENT
    with pytest.raises(RiskError) as info:
        e.label("p1", "yes")  # type: ignore[arg-type]
    assert info.value.code == RiskCode.BAD_LABEL
    assert e.learn() == 1 and e.status()["learned"] == 1
    # No label within the maturity: learned as good, by the engine's clock.
    e.decide(pay(2, clock))
    assert e.learn() == 0
    clock.advance(RiskConfig().label_maturity_ms)
    assert e.learn() == 1


def test_decisions_reproduce_from_their_recorded_versions(tmp_path: Path, clock: ManualClock) -> None:
    e = RiskEngine(tmp_path, clock=clock, rules=RULES, config=RiskConfig(learn_per_decide=0, publish_every=50))
    made: list[Decision] = []
    for i in range(400):
        clock.advance(2000)
        d = e.decide(pay(i, clock, amount_fen=1000 + (i % 13) * 5000, category="gift_card" if i % 5 == 0 else "food"))
        made.append(d)
        e.label(d.payment_id, i % 5 == 0 and i % 13 > 6)
        e.learn()
        if i == 200:
            relaxed = json.loads(json.dumps(RULES))
            relaxed["thresholds"]["step_up"] = 0.5
            e.reload_rules(relaxed)
    versions = {d.model_version for d in made}
    assert len(versions) >= 5 and {d.rules_version for d in made} == {"r1", "r2"}
    for d in made[::7]:
        wire = msgspec.json.decode(msgspec.json.encode(d), type=Decision)  # as recorded, through JSON
        again = e.reproduce(wire)
        assert (again.action, again.reasons, again.score, again.model_score) == (
            d.action,
            d.reasons,
            d.score,
            d.model_score,
        )
    # Roll the serving model back to an early version: new decisions say so and score as it did.
    early = made[60]
    e.rollback_model(early.model_version)
    clock.advance(1000)
    d = e.decide(pay(10_000, clock))
    assert d.model_version == early.model_version
    assert e.reproduce(d).model_score == d.model_score
    with pytest.raises(RiskError) as info:
        e.rollback_model("m999999")
    assert info.value.code == RiskCode.UNKNOWN_MODEL_VERSION
    e.close()


def test_snapshot_and_restart_keep_the_windows_and_pending_labels(tmp_path: Path, clock: ManualClock) -> None:
    e = RiskEngine(tmp_path, clock=clock, config=RiskConfig(learn_per_decide=0))
    for i in range(5):
        clock.advance(1000)
        e.decide(pay(i, clock, shopper="bob", device="dev", ip="10.9.9.9"))
    e.label("p0", True)
    e.snapshot()
    before = e.status()
    clock.advance(1000)
    d1 = e.decide(pay(5, clock, shopper="bob", device="dev", ip="10.9.9.9"))
    e._home_lock.close()  # a crash: no close(), no snapshot after the last one
    e._home_lock = None

    again = RiskEngine(tmp_path, clock=clock, config=RiskConfig(learn_per_decide=0))
    assert again.status()["decided"] == before["decided"] and again.model_version == e.model_version
    d2 = again.decide(pay(5, clock, shopper="bob", device="dev", ip="10.9.9.9"))
    assert d2.features == d1.features and d2.features["shopper_n_1m"] == 5 and d2.features["device_n_1m"] == 5
    assert again.learn() == 1  # the label given before the snapshot is still queued
    again.label("p1", False, source="review")  # and the payments decided before it still take labels

    # A damaged snapshot is a fault of this machine, named, never silently ignored.
    path = tmp_path / "snapshot.pkl"
    blob = bytearray(path.read_bytes())
    blob[-10] ^= 0xFF
    path.write_bytes(bytes(blob))
    again.close = lambda: None  # type: ignore[method-assign]  # keep the damaged file as it is
    again._home_lock.close()
    with pytest.raises(RiskFault, match="damaged"):
        RiskEngine(tmp_path, clock=clock)


def test_memory_is_bounded_by_the_named_limits(clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    e = RiskEngine(None, clock=clock, config=RiskConfig(learn_per_decide=0, pending_max=50))
    for i in range(120):
        clock.advance(10)
        e.decide(pay(i, clock, shopper=f"shopper-{i}"))
    s = e.status()
    assert s["pending"] == 50 and s["pending_evicted"] == 70
    with pytest.raises(RiskError) as info:
        e.label("p0", True)  # forgotten: said so, not guessed
    assert info.value.code == RiskCode.UNKNOWN_PAYMENT
    from liangcao.risk.windows import LruTable

    assert isinstance(e.state.shoppers, LruTable) and e.state.shoppers.size_max == 200_000


def test_the_public_api_is_exported() -> None:
    import liangcao.risk as risk

    for name in risk.__all__:
        assert getattr(risk, name) is not None
    assert {"RiskEngine", "Payment", "Decision", "RiskError", "RiskCode", "decode_payment"} <= set(risk.__all__)


def test_tick_snapshots_in_a_forked_child_while_the_engine_goes_on(tmp_path: Path, clock: ManualClock) -> None:
    cfg = RiskConfig(learn_per_decide=0, snapshot_every_ms=60_000)
    e = RiskEngine(tmp_path, clock=clock, config=cfg)
    for i in range(4):
        clock.advance(1000)
        e.decide(pay(i, clock, shopper="carol", device="tab", ip="10.7.7.7"))
    e.tick()  # not due yet
    assert e._snapshot_child is None and not (tmp_path / "snapshot.pkl").exists()
    clock.advance(60_000)
    e.tick()  # due: a child writes it
    child = e._snapshot_child
    assert child is not None
    e.decide(pay(10, clock, shopper="carol", device="tab", ip="10.7.7.7"))  # the parent goes on meanwhile
    assert e._reap(block=True) is True and e.status()["snapshots"] == 1 and e.status()["snapshot_failures"] == 0
    e._home_lock.close()  # a crash after the background snapshot: the payment decided after it is lost
    e._home_lock = None
    again = RiskEngine(tmp_path, clock=clock, config=cfg)
    clock.advance(1000)
    d = again.decide(pay(11, clock, shopper="carol", device="tab", ip="10.7.7.7"))
    assert d.features["shopper_n_1h"] == 4 and again.status()["decided"] == 5  # 4 restored, then this one
    again.close()
