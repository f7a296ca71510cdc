"""A hypothesis state machine over the engine: decisions, labels, time, learning and rule reloads in any order."""

from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from liangcao.risk import Decision, ManualClock, Payment, RiskCode, RiskConfig, RiskEngine, RiskError

RULES: dict[str, Any] = {
    "rules": [{"id": "big", "reason": "BIG", "action": "step_up", "when": [["amount_fen", ">=", 50_000]]}],
}


class EngineMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock(1_800_000_000_000)
        self.config = RiskConfig(learn_per_decide=1, pending_max=40, publish_every=5, model_warmup_labels=3)
        self.engine = RiskEngine(None, clock=self.clock, rules=RULES, config=self.config)
        self.made: list[Decision] = []
        self.labelled: dict[str, bool] = {}
        self.n = 0

    @rule(shopper=st.integers(0, 5), amount=st.integers(1, 100_000), coupon=st.booleans())
    def decide(self, shopper: int, amount: int, coupon: bool) -> None:
        self.n += 1
        p = Payment(
            payment_id=f"p{self.n}",
            time_ms=self.clock.now_ms(),
            shopper=f"s{shopper}",
            device=f"d{shopper}",
            ip=f"10.0.0.{shopper}",
            account=f"a{shopper}",
            merchant="m",
            amount_fen=amount,
            coupon=coupon,
        )
        d = self.engine.decide(p)
        assert d.rules_version == self.engine.rules_version and d.model_version
        assert d.action in ("allow", "step_up", "block") and 0.0 <= d.score <= 1.0
        if amount >= 50_000 and self.engine.rules_version == "r1":
            assert d.action in ("step_up", "block") and "BIG" in d.reasons
        self.made.append(d)

    @precondition(lambda self: bool(self.made))
    @rule(index=st.integers(0, 10_000), fraud=st.booleans())
    def label(self, index: int, fraud: bool) -> None:
        d = self.made[index % len(self.made)]
        try:
            self.engine.label(d.payment_id, fraud)
        except RiskError as exc:
            assert exc.code in (RiskCode.UNKNOWN_PAYMENT, RiskCode.LABEL_CONFLICT)
            if exc.code == RiskCode.LABEL_CONFLICT:
                assert self.labelled[d.payment_id] != fraud
            return
        self.labelled.setdefault(d.payment_id, fraud)

    @rule(ms=st.integers(0, 8 * 3_600_000))
    def advance(self, ms: int) -> None:
        self.clock.advance(ms)

    @rule()
    def learn(self) -> None:
        self.engine.learn()
        assert self.engine.status()["label_queue"] == 0

    @rule(valid=st.booleans())
    def reload(self, valid: bool) -> None:
        before = self.engine.rules_version
        if valid:
            self.engine.reload_rules({"rules": [], "thresholds": {"step_up": 0.7, "block": 0.99}})
        else:
            try:
                self.engine.reload_rules({"rules": [{"id": "x", "reason": "X", "action": "nope", "when": []}]})
            except RiskError as exc:
                assert exc.code == RiskCode.BAD_RULES
            assert self.engine.rules_version == before

    @precondition(lambda self: bool(self.made))
    @rule(index=st.integers(0, 10_000))
    def reproduce(self, index: int) -> None:
        d = self.made[index % len(self.made)]
        again = self.engine.reproduce(d)
        assert (again.action, again.reasons, again.score) == (d.action, d.reasons, d.score)

    @invariant()
    def bounded_and_counted(self) -> None:
        s = self.engine.status()
        assert s["pending"] <= self.config.pending_max
        assert s["decided"] == s["allow"] + s["step_up"] + s["block"] == len(self.made)
        assert s["learned"] <= s["decided"] + s["labels"]  # a fraud label after maturity is learned again


TestEngineMachine = EngineMachine.TestCase
TestEngineMachine.settings = settings(max_examples=20, stateful_step_count=30, deadline=None)
