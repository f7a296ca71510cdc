"""Flow-control codes (3100-3199) and the one refusal: :class:`Refused`.

A refusal is a business outcome, not a fault: the caller answers it at once (``429`` when this caller asks
too much, ``503`` when the service as a whole is protecting itself) with ``Retry-After`` and never queues it.
"""

from __future__ import annotations

import math
from enum import IntEnum

from liangcao import codes
from liangcao.errors import LiangcaoError


class FlowCode(IntEnum):
    RATE_LIMITED = 3100  # the resource's token bucket is empty for this priority
    CONCURRENCY_LIMITED = 3101  # the resource's (static or adaptive) concurrency limit is reached
    HOT_PARAMETER_LIMITED = 3102  # one value (a merchant, an item) used up its own bucket
    SYSTEM_OVERLOADED = 3103  # the whole process is past its measured capacity (or load, or latency)
    CIRCUIT_OPEN = 3104  # the backend behind the resource failed or slowed: calls are cut for a while
    CLUSTER_RATE_LIMITED = 3105  # the cluster token server granted no token in time for this priority
    BAD_RULES = 3110  # a rule set that does not validate: nothing changed
    UNKNOWN_PRIORITY = 3111  # a priority name or number that is not one of Priority


HTTP_STATUS: dict[int, int] = {
    FlowCode.RATE_LIMITED: 429,
    FlowCode.CONCURRENCY_LIMITED: 429,
    FlowCode.HOT_PARAMETER_LIMITED: 429,
    FlowCode.SYSTEM_OVERLOADED: 503,
    FlowCode.CIRCUIT_OPEN: 503,
    FlowCode.CLUSTER_RATE_LIMITED: 429,
    FlowCode.BAD_RULES: 400,
    FlowCode.UNKNOWN_PRIORITY: 400,
}

codes.register(FlowCode, "flow", http=HTTP_STATUS)
#: The reason each refusal is counted under (an enum's .name costs a descriptor call on the hot path).
REASONS: dict[int, str] = {int(c): c.name.lower() for c in FlowCode}

#: The longest Retry-After we ever announce: a client told to wait longer would rather give up.
retry_after_ms_max = 60_000


class FlowError(LiangcaoError):
    """A flow-control request that is wrong (e.g. bad rules): nothing changed."""


class Refused(LiangcaoError):
    """Work refused at the door. ``retry_after_ms`` is the earliest time a retry can pass (bucket refill,
    breaker window, typical latency); ``reason`` names the check that refused, ``http_status`` is 429 or 503."""

    def __init__(self, code: FlowCode, message: str, *, retry_after_ms: int, resource: str, priority: str) -> None:
        retry = max(1, min(retry_after_ms_max, int(retry_after_ms)))
        super().__init__(code, message, {"retry_after_ms": retry, "resource": resource, "priority": priority})
        self.retry_after_ms = retry
        self.http_status = HTTP_STATUS.get(int(code), 429)
        self.reason = REASONS[int(code)]
        self.resource = resource
        self.priority = priority

    @property
    def retry_after_s(self) -> int:
        """Whole seconds for the ``Retry-After`` header (HTTP allows no fractions): rounded up, at least 1."""
        return max(1, math.ceil(self.retry_after_ms / 1000))
