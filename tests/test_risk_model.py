"""The online model: it learns a pattern it has not seen, drift starts a challenger that can win, versions."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from liangcao.risk.model import Models, VersionStore, logistic, scorer
from liangcao.risk.replay import recall_at_fpr, run, summary
from liangcao.risk.world import World, WorldConfig

KEYS = tuple(f"f{i}" for i in range(8))


def _example(rng: random.Random, signal: str | None, fraud: bool) -> dict[str, float]:
    x = {k: rng.gauss(0, 1) for k in KEYS}
    if fraud and signal is not None:
        x[signal] += 3.0  # at 1 % FPR the best possible recall is P(N(3, 1) > 2.33) = 0.75
    return x


def _stream(rng: random.Random, signal: str, n: int, rate: float = 0.1) -> list[tuple[dict[str, float], bool]]:
    out = []
    for _ in range(n):
        fraud = rng.random() < rate
        out.append((_example(rng, signal, fraud), fraud))
    return out


def _recall(models: Models, data: list[tuple[dict[str, float], bool]]) -> float:
    score = scorer(models.train, KEYS)
    return recall_at_fpr([score(x) for x, _ in data], [y for _, y in data])


def test_the_learner_improves_on_a_seeded_pattern_it_has_not_seen() -> None:
    rng = random.Random(11)
    m = Models(VersionStore(None), logistic(), KEYS, publish_every=500)
    for x, y in _stream(rng, "f1", 3000):
        m.learn(x, y, 1.0, 0)
    held_out_b = _stream(random.Random(99), "f5", 3000)
    before = _recall(m, held_out_b)
    for x, y in _stream(rng, "f5", 3000):
        m.learn(x, y, 1.0, 0)
    after = _recall(m, held_out_b)
    assert before < 0.1 and after > 0.5, (before, after)


def test_drift_starts_a_challenger_that_replaces_the_champion_when_measurably_better() -> None:
    rng = random.Random(5)
    m = Models(VersionStore(None), logistic(), KEYS, publish_every=1000, challenger_min_labels=300)
    m.publish("initial", 0)
    for x, y in _stream(rng, "f1", 4000, rate=0.3):
        m.learn(x, y, 1.0, 0)
    assert m.challenger is None and [e["event"] for e in m.events] == ["initial"]
    # The fraud now shows in another feature, and the old signal marks honest payments: errors jump.
    flipped = [(x, y) for x, y in _stream(rng, "f6", 6000, rate=0.3)]
    for x, y in flipped:
        if not y and rng.random() < 0.5:
            x["f1"] += 2.5
        m.learn(x, y, 1.0, 1)
    events = [e["event"] for e in m.events]
    assert "drift: challenger started" in events, events
    assert any(e.startswith("challenger promoted") for e in events), events
    promoted = next(e for e in m.events if e["event"].startswith("challenger promoted"))
    assert m.serving_version == promoted["version"] or m.learned - promoted["learned"] >= m.publish_every


def test_online_engine_is_ahead_of_the_frozen_one_after_the_shift() -> None:
    world = World(WorldConfig(seed=3, shoppers=1142, payments_per_day=8000))
    r = run(world)
    s = summary(r)
    assert 16_000 <= s["payments"] < 16_100 and s["fraud"] > 300
    assert s["recall_online_after_shift"] > s["recall_frozen_after_shift"] + 0.15, s
    # The same seed, the same world: the replay is reproducible to the bit.
    again = World(WorldConfig(seed=3, shoppers=1142, payments_per_day=8000))
    assert [e.payment_id for e in again.events[:500]] == [e.payment_id for e in world.events[:500]]


def test_an_adaptive_random_forest_serves_learns_and_reproduces() -> None:
    from liangcao.risk import ManualClock, Payment, RiskConfig, RiskEngine

    clock = ManualClock(1_800_000_000_000)
    e = RiskEngine(None, clock=clock, model="forest", config=RiskConfig(learn_per_decide=0, publish_every=100))
    made = []
    for i in range(300):
        clock.advance(1000)
        big = i % 4 == 0
        p = Payment(
            payment_id=f"p{i}",
            time_ms=clock.now_ms(),
            shopper=f"s{i % 20}",
            device=f"d{i % 20}",
            ip="10.0.0.1",
            account=f"a{i % 20}",
            merchant="m",
            amount_fen=900_000 if big else 1000,
        )
        d = e.decide(p)
        made.append(d)
        e.label(p.payment_id, big)
        e.learn()
    assert e.model_version != made[0].model_version
    for d in made[-50:]:
        assert e.reproduce(d).model_score == d.model_score
    late = [d.model_score for d in made[-40:]]
    fraud = [d.features["amount_fen"] == 900_000 for d in made[-40:]]
    assert min(s for s, f in zip(late, fraud, strict=True) if f) > max(
        s for s, f in zip(late, fraud, strict=True) if not f
    )


def test_model_versions_are_pruned_to_their_limit_sparing_the_one_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from liangcao.risk import RiskCode, RiskError, limits

    monkeypatch.setattr(limits, "model_versions_max", 4)
    store = VersionStore(tmp_path)
    m = Models(store, logistic(), KEYS)
    for _ in range(7):
        m.publish("periodic", 0)
    assert store.versions() == ["m4", "m5", "m6", "m7"]
    m.rollback("m4", 0)  # the oldest kept: when the next version comes, m4 is served and is spared
    m.publish("periodic", 0)
    assert store.versions() == ["m4", "m6", "m7", "m8"]
    assert sorted(p.stem for p in tmp_path.glob("m*.pkl")) == sorted(store.versions())
    try:
        m.rollback("m2", 0)
    except RiskError as exc:
        assert exc.code == RiskCode.UNKNOWN_MODEL_VERSION
    else:
        raise AssertionError("a pruned version cannot be served")
    assert VersionStore(tmp_path).versions() == store.versions()  # a restart sees the same versions


def test_the_paced_run_learns_before_the_shift_and_scores_the_frozen_twin_after_it() -> None:
    """Paced (the benchmark), learning goes on whatever the idle time, and the frozen twin (scored after the
    run, outside the timed loop) is the online engine until the shift and its own engine after it."""
    world = World(WorldConfig(seed=5, shoppers=600, payments_per_day=4000))
    r = run(world, rate=2500)
    k = sum(1 for t in r.t if t < r.shift_ms)
    assert 0 < k < len(r.t) and len(r.latency_us) == len(r.t)
    assert len(set(r.online[:k])) > 50, "the model learned nothing before the shift"
    assert r.frozen[:k] == r.online[:k] and r.frozen_action[:k] == r.online_action[:k]
    assert r.frozen[k:] != r.online[k:], "the frozen twin was not scored after the shift"
    assert r.status["label_queue"] == 0 and r.status["learned"] > 500
