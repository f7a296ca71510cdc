"""Declarative rule sets: parsed, checked and compiled once; evaluated on every payment.

A rule set is JSON (text or the decoded object)::

    {"thresholds": {"step_up": 0.6, "block": 0.95, "step_up_share_max": 0.03}, "model_priority": 0,
     "rules": [{"id": "card-testing", "reason": "CARD_TESTING", "action": "block", "priority": 100,
                "when": [["device_n_1m", ">=", 5], ["amount_fen", "<=", 2000]]}]}

A rule matches when all its conditions hold (``[field, op, value]``; fields are the features of
``risk.features.FEATURES`` and ``category``; ops ``< <= > >= == != in not_in``). Its action is ``allow``,
``step_up``, ``block`` or ``score`` (adds ``points`` to the model's score); ``step_up_share_max`` caps the share of
recent payments the model's score steps up (:class:`StepUpCap`). ``shadow: true`` evaluates the rule
on live traffic and records what it would have done (``Decision.shadow``/``shadow_action``) without acting.

Precedence (a table, because it is the whole contract)::

    candidates  every live matching allow/step_up/block rule, at its priority (default 10),
                and the model's verdict from the score and thresholds, at model_priority (default 0)
    winner      the highest priority; at equal priority the stricter action (block > step_up > allow)
    score       min(1, model score + points of live matching score rules)
    reasons     the winner's reason first, then the other live matches' reasons in rule order

So an ``allow`` rule above the model's priority can whitelist past the model, and a low-priority ``block``
never overrides a higher-priority ``allow``. Bad rule sets are refused with ``BAD_RULES`` and a message naming
the rule and the field; the engine then keeps its current set.
"""

from __future__ import annotations

import math
import operator
import re
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec

from liangcao.risk import limits
from liangcao.risk.codes import RiskCode, RiskError
from liangcao.risk.features import FEATURES, RULE_FIELDS
from liangcao.risk.types import SEVERITY, Features

_REASON = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_RULE_ACTIONS = ("allow", "step_up", "block", "score")


def _in(a: Any, b: Any) -> bool:
    return a in b


def _not_in(a: Any, b: Any) -> bool:
    return a not in b


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "in": _in,
    "not_in": _not_in,
}


class Thresholds(msgspec.Struct, forbid_unknown_fields=True):
    step_up: float = 0.6
    block: float = 0.95
    # At most this share of recent payments stepped up by the model's score (1: no cap). When the model's
    # scores rise across the board (a shift it has not learned yet), the step-up threshold rises with them
    # instead of asking every honest shopper to confirm; the threshold used is recorded in each decision.
    step_up_share_max: float = 1.0


class RuleSpec(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    reason: str
    action: str
    when: list[list[Any]]
    priority: int = 10
    shadow: bool = False
    points: float = 0.0
    note: str = ""


class RuleSetSpec(msgspec.Struct, forbid_unknown_fields=True):
    rules: list[RuleSpec]
    thresholds: Thresholds = msgspec.field(default_factory=Thresholds)
    model_priority: int = 0
    name: str = ""


class Rule(msgspec.Struct, frozen=True):
    id: str
    reason: str
    action: str
    priority: int
    severity: int
    shadow: bool
    points: float
    conds: tuple[tuple[str, Callable[[Any, Any], bool], Any], ...]


class Verdict(msgspec.Struct):
    action: str
    reasons: list[str]
    score: float
    shadow: list[str]
    shadow_action: str


class RuleSet:
    """A checked, compiled rule set with its version (given by the engine) and canonical text."""

    def __init__(self, spec: RuleSetSpec, version: str, text: str) -> None:
        self.spec = spec
        self.version = version
        self.text = text
        self.step_up = spec.thresholds.step_up
        self.block = spec.thresholds.block
        self.step_up_share_max = spec.thresholds.step_up_share_max
        self.model_priority = spec.model_priority
        self.rules = tuple(_compile(r) for r in spec.rules)
        self.has_shadow = any(r.shadow for r in self.rules)

    def evaluate(self, f: Features, model_score: float, model_acts: bool = True, step_up_at: float = 0.0) -> Verdict:
        """The verdict for features ``f`` and the model's score (pure: same inputs, same verdict).

        ``model_acts`` False (a model still warming up) keeps the score but not the model's verdict;
        ``step_up_at`` raises the step-up threshold above the rule set's (see :class:`StepUpCap`).
        """
        live: list[Rule] = []
        shadow: list[Rule] = []
        for rule in self.rules:
            for name, op, value in rule.conds:
                if not op(f[name], value):
                    break
            else:
                (shadow if rule.shadow else live).append(rule)
        step_up = max(self.step_up, step_up_at)
        action, reasons, score = self._decide(live, model_score, model_acts, step_up)
        shadow_action = action
        if shadow:
            shadow_action = self._decide(sorted(live + shadow, key=self.rules.index), model_score, model_acts, step_up)[
                0
            ]
        return Verdict(action, reasons, score, [f"{r.id}:{r.action}" for r in shadow], shadow_action)

    def _decide(
        self, matched: list[Rule], model_score: float, model_acts: bool, step_up: float
    ) -> tuple[str, list[str], float]:
        score = model_score
        for r in matched:
            if r.points:
                score += r.points
        score = min(1.0, max(0.0, score))
        if not model_acts:
            best: tuple[int, int, str, str] = (self.model_priority, 0, "allow", "")
        elif score >= self.block:
            best = (self.model_priority, 2, "block", "MODEL_SCORE_BLOCK")
        elif score >= step_up:
            best = (self.model_priority, 1, "step_up", "MODEL_SCORE_STEP_UP")
        else:
            best = (self.model_priority, 0, "allow", "")
        for r in matched:
            if r.action != "score":
                cand = (r.priority, r.severity, r.action, r.reason)
                if cand[:2] > best[:2]:
                    best = cand
        reasons = [best[3]] if best[3] else []
        for r in matched:
            if r.reason not in reasons:
                reasons.append(r.reason)
        return best[2], reasons, score


class StepUpCap:
    """The step-up threshold that keeps at most ``share_max`` of recent scores at or above it.

    A ring of the last ``window`` scores; the quantile is recomputed every ``every`` scores (a sort of a few
    thousand floats, amortised to well under a microsecond a payment). 0 until the ring is full.
    """

    def __init__(self, window: int = 2000, every: int = 250) -> None:
        self.scores: deque[float] = deque(maxlen=window)
        self.every = every
        self.seen = 0
        self.at = 0.0

    def threshold(self, share_max: float) -> float:
        return self.at if share_max < 1.0 else 0.0

    def add(self, score: float, share_max: float) -> None:
        self.scores.append(score)
        self.seen += 1
        if share_max < 1.0 and self.seen % self.every == 0 and len(self.scores) == self.scores.maxlen:
            ordered = sorted(self.scores)
            self.at = ordered[min(len(ordered) - 1, int(len(ordered) * (1.0 - share_max)))]


def _compile(r: RuleSpec) -> Rule:
    conds = []
    for cond in r.when:
        name, op, value = cond
        if op in ("in", "not_in"):
            value = frozenset(value)
        conds.append((name, _OPS[op], value))
    severity = SEVERITY.get(r.action, -1)
    return Rule(r.id, r.reason, r.action, r.priority, severity, r.shadow, r.points, tuple(conds))


def _bad(message: str) -> RiskError:
    return RiskError(RiskCode.BAD_RULES, message)


def parse(source: str | bytes | dict[str, Any] | RuleSetSpec) -> RuleSetSpec:
    """A checked rule-set spec from JSON text, a decoded object or a spec; ``RiskError(BAD_RULES)`` if not."""
    if isinstance(source, RuleSetSpec):
        source = msgspec.to_builtins(source)
    try:
        if isinstance(source, dict):
            spec = msgspec.convert(source, RuleSetSpec)
        elif not isinstance(source, str | bytes):
            raise _bad(f"a rule set is JSON text or an object, not {type(source).__name__}")
        else:
            if len(source) > limits.rules_bytes_max:
                raise _bad(f"rule set is {len(source)} bytes; at most {limits.rules_bytes_max}")
            spec = msgspec.json.decode(source, type=RuleSetSpec)
        if not isinstance(source, str | bytes) and len(msgspec.json.encode(spec)) > limits.rules_bytes_max:
            raise _bad(f"rule set is over {limits.rules_bytes_max} bytes as JSON")
    except msgspec.ValidationError as exc:
        raise _bad(f"rule set is not valid: {exc}") from None
    except msgspec.DecodeError as exc:
        raise _bad(f"rule set is not JSON: {exc}") from None
    check(spec)
    return spec


def check(spec: RuleSetSpec) -> None:
    """Every check a rule set must pass, each failure one line naming the rule."""
    t = spec.thresholds
    if not 0.0 < t.step_up <= t.block <= 1.0:
        raise _bad(f"thresholds need 0 < step_up <= block <= 1 (got step_up={t.step_up}, block={t.block})")
    if not 0.0 < t.step_up_share_max <= 1.0:
        raise _bad(f"step_up_share_max must be within (0, 1] (got {t.step_up_share_max})")
    if not -1000 <= spec.model_priority <= 1000:
        raise _bad("model_priority must be within -1000..1000")
    if len(spec.rules) > limits.rules_max:
        raise _bad(f"{len(spec.rules)} rules; at most {limits.rules_max}")
    seen: set[str] = set()
    for r in spec.rules:
        where = f"rule {r.id!r}"
        if not _ID.match(r.id):
            raise _bad(f"{where}: an id is 1-64 letters, digits, '_', '.', '-'")
        if r.id in seen:
            raise _bad(f"{where}: the id is used twice")
        seen.add(r.id)
        if not _REASON.match(r.reason):
            raise _bad(f"{where}: reason {r.reason!r} must be an upper-case code like NEW_DEVICE_LARGE_AMOUNT")
        if r.action not in _RULE_ACTIONS:
            raise _bad(f"{where}: action {r.action!r} is not one of {', '.join(_RULE_ACTIONS)}")
        if not -1000 <= r.priority <= 1000:
            raise _bad(f"{where}: priority must be within -1000..1000")
        if r.action == "score":
            if not -1.0 <= r.points <= 1.0 or r.points == 0:
                raise _bad(f"{where}: a score rule needs points in -1..1, not zero")
        elif r.points:
            raise _bad(f"{where}: only a score rule has points")
        if not r.when:
            raise _bad(f"{where}: a rule needs at least one condition")
        if len(r.when) > limits.conditions_per_rule_max:
            raise _bad(f"{where}: at most {limits.conditions_per_rule_max} conditions")
        for cond in r.when:
            _check_condition(where, cond)


def _is_number(v: Any) -> bool:
    return type(v) in (int, float)


def _check_condition(where: str, cond: list[Any]) -> None:
    if len(cond) != 3 or not isinstance(cond[0], str) or not isinstance(cond[1], str):
        raise _bad(f"{where}: a condition is [field, op, value], got {cond!r}")
    name, op, value = cond
    if name not in RULE_FIELDS:
        raise _bad(f"{where}: unknown field {name!r} (fields: {', '.join(FEATURES)}, category)")
    if op not in _OPS:
        raise _bad(f"{where}: unknown op {op!r} (ops: {' '.join(_OPS)})")
    want_str = name == "category"
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value:
            raise _bad(f"{where}: {op} needs a non-empty list")
        items = value
        if len(items) > limits.condition_values_max:
            raise _bad(f"{where}: {op} lists at most {limits.condition_values_max} values")
    else:
        items = [value]
        if want_str and op not in ("==", "!="):
            raise _bad(f"{where}: category is compared with == != in not_in")
    for item in items:
        if want_str and not isinstance(item, str):
            raise _bad(f"{where}: category is compared with strings, not {item!r}")
        if not want_str and not _is_number(item):
            raise _bad(f"{where}: {name} is a number; {item!r} is not")
        if not want_str and not math.isfinite(item):  # NaN compares false to all, inf is no threshold
            raise _bad(f"{where}: {item!r} is not a finite number")


def load(source: str | bytes | dict[str, Any] | RuleSetSpec, version: str) -> RuleSet:
    spec = parse(source)
    text = msgspec.json.encode(spec, order="sorted").decode()
    return RuleSet(spec, version, text)


def canonical(source: str | bytes | dict[str, Any] | RuleSetSpec) -> str:
    """The canonical JSON of a checked rule set (equal sets, equal text: the engine dedups reloads on it)."""
    return msgspec.json.encode(parse(source), order="sorted").decode()


#: The rules a new engine starts with (a starting point an operator replaces with ``reload_rules``).
DEFAULT_RULES: dict[str, Any] = {
    "name": "default",
    "thresholds": {"step_up": 0.6, "block": 0.97},
    "model_priority": 0,
    "rules": [
        {
            "id": "card-testing",
            "reason": "CARD_TESTING_VELOCITY",
            "action": "block",
            "priority": 100,
            "when": [["device_n_1m", ">=", 8], ["amount_fen", "<=", 3000]],
        },
        {
            "id": "account-burst",
            "reason": "ACCOUNT_VELOCITY_1M",
            "action": "step_up",
            "priority": 50,
            "when": [["account_n_1m", ">=", 5]],
        },
        {
            "id": "new-device-far-large",
            "reason": "NEW_DEVICE_FAR_LARGE_AMOUNT",
            "action": "step_up",
            "priority": 50,
            "when": [["new_device", "==", 1], ["distance_km", ">=", 300], ["amount_z", ">=", 2]],
        },
        {
            "id": "shared-device-coupon",
            "reason": "MANY_SHOPPERS_ONE_DEVICE",
            "action": "score",
            "points": 0.2,
            "when": [["device_shoppers_1d", ">=", 4], ["coupon", "==", 1]],
        },
        {
            "id": "chargeback-merchant",
            "reason": "MERCHANT_CHARGEBACK_RATE",
            "action": "score",
            "points": 0.1,
            "when": [["merchant_chargeback_rate_1d", ">=", 0.05]],
        },
    ],
}
