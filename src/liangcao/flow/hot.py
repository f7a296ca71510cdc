"""Hot-parameter limits: a token bucket per value (merchant id, item), kept in a bounded LRU.

One merchant whose flash sale draws a crowd uses up its own bucket and is refused, while every other merchant
keeps its own. Only ``hot_values_max`` values are tracked: the least recently seen is forgotten first (it
comes back with a full bucket, which errs on the side of letting a quiet value through).
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict

from liangcao.flow.bucket import TokenBucket
from liangcao.flow.rules import HotRule, burst_max


class HotParams:
    __slots__ = ("buckets", "evicted", "rule")

    def __init__(self, rule: HotRule) -> None:
        self.rule = rule
        self.buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self.evicted = 0

    def reconfigure(self, rule: HotRule) -> None:
        changed = (rule.rate_per_s, rule.burst, rule.overrides) != (
            self.rule.rate_per_s,
            self.rule.burst,
            self.rule.overrides,
        )
        self.rule = rule
        if changed:
            self.buckets.clear()
        while len(self.buckets) > rule.hot_values_max:
            self.buckets.popitem(last=False)
            self.evicted += 1

    def bucket(self, value: str, now: float) -> TokenBucket:
        b = self.buckets.get(value)
        if b is not None:
            self.buckets.move_to_end(value)
            return b
        base = self.rule.rate_per_s
        rate = self.rule.overrides.get(value, base)
        burst = self.rule.burst if self.rule.burst > 0 else max(1, math.ceil(base))
        # An override scales the depth with the rate: a big merchant's burst is as many seconds as anyone's.
        # (never deeper than any rule may make a bucket: burst_max)
        b = TokenBucket(rate, min(burst_max, max(1, math.ceil(burst * rate / base))), now=now)
        self.buckets[value] = b
        if len(self.buckets) > self.rule.hot_values_max:
            self.buckets.popitem(last=False)
            self.evicted += 1
        return b

    def status(self, now: float, top: int = 10) -> dict[str, object]:
        # the few emptiest, not a sort of them all: the status is read under the gate's lock, and a rule may
        # track hot_values_max values (an anonymous GET /v1/flow must not stall admissions)
        emptiest = heapq.nsmallest(top, self.buckets.items(), key=lambda kv: kv[1].tokens(now))
        return {
            "values": len(self.buckets),
            "hot_values_max": self.rule.hot_values_max,
            "evicted": self.evicted,
            "hottest": {k: round(b.tokens(now), 3) for k, b in emptiest},
        }
