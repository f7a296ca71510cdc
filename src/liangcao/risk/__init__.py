"""The risk engine (house plan §11): features -> rules -> online model -> allow | step-up | block.

Every decision is a record naming the rule set and model version that made it. The public API::

    engine = RiskEngine(home, clock=..., rules=..., model="logistic")
    decision = engine.decide(payment)          # allow | step_up | block, reasons, score, versions
    engine.label(payment_id, fraud=True)       # late labels: chargebacks, confirmed fraud, "it was me"
    engine.reload_rules(text_or_obj)           # hot, versioned; bad rules refused, nothing changed
    engine.learn() / engine.tick()             # learn queued labels off the decision path; snapshots

Modules: ``types`` (Payment, Decision), ``windows`` (sliding windows), ``features``, ``rules``, ``model``
(River: champion, challenger, ADWIN, versions), ``engine``, ``world`` (the seeded synthetic world),
``replay`` (prequential replay and benchmark), ``codes`` (3300-3399), ``limits``.
"""

from __future__ import annotations

from liangcao.risk.codes import RiskCode, RiskError, RiskFault
from liangcao.risk.engine import ManualClock, RiskConfig, RiskEngine
from liangcao.risk.rules import DEFAULT_RULES
from liangcao.risk.types import Decision, Payment, check_payment, decode_payment

__all__ = [
    "DEFAULT_RULES",
    "Decision",
    "ManualClock",
    "Payment",
    "RiskCode",
    "RiskConfig",
    "RiskEngine",
    "RiskError",
    "RiskFault",
    "check_payment",
    "decode_payment",
]
