"""Admission control (house plan §11): rate and concurrency limits, adaptive limits, priorities, breakers.

A library, not a service: the checkout gateway, the node's HTTP API and the payments service use it. It stands
on the foundations alone, takes its clock from the caller (tests inject one), and never sleeps to refuse.

    gate = Gate(rules, clock=time.monotonic)
    ticket = gate.enter("pay", Priority.PAY, hot=merchant_id)   # raises Refused (429/503 + retry_after_ms)
    ...
    ticket.exit(ok=True)                                         # latency and outcome feed the limits

The HTTP edge is :mod:`liangcao.flow.asgi` (middleware, ``GET /v1/flow``, ``PUT /v1/flow/rules``); several
processes share one global rate through :mod:`liangcao.flow.cluster`. Guide: ``docs/flow.md``.
"""

from liangcao.flow.errors import FlowCode, FlowError, Refused
from liangcao.flow.gate import Gate, Ticket
from liangcao.flow.rules import (
    DEFAULT_SHARES,
    AdaptiveRule,
    BreakerRule,
    HotRule,
    Priority,
    ResourceRule,
    Rules,
    SystemRule,
    rules_from_json,
    rules_to_json,
)

__all__ = [
    "DEFAULT_SHARES",
    "AdaptiveRule",
    "BreakerRule",
    "FlowCode",
    "FlowError",
    "Gate",
    "HotRule",
    "Priority",
    "Refused",
    "ResourceRule",
    "Rules",
    "SystemRule",
    "Ticket",
    "rules_from_json",
    "rules_to_json",
]
