"""Prometheus metrics of a gate, read from its counters at scrape time (nothing is counted twice).

``liangcao_flow_decisions_total{resource,priority,decision}`` counts every admission decision ("pass" or the
refusal's reason); gauges give what each resource may do now and what it is doing.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from liangcao.flow.gate import Gate

_BREAKER = {"closed": 0, "open": 1, "half_open": 2}


class FlowCollector(Collector):
    """Register with ``registry.register(FlowCollector(gate))`` (any ``CollectorRegistry``)."""

    def __init__(self, gate: Gate, prefix: str = "liangcao_flow") -> None:
        self.gate = gate
        self.prefix = prefix

    def collect(self) -> Iterator[Metric]:
        p = self.prefix
        decisions = CounterMetricFamily(
            f"{p}_decisions",
            "Admission decisions (pass or the refusal reason)",
            labels=["resource", "priority", "decision"],
        )
        for resource, priority, decision, n in self.gate.decisions():
            decisions.add_metric([resource, priority, decision], n)
        yield decisions
        status = self.gate.status()
        exits = CounterMetricFamily(f"{p}_exits", "Admitted calls finished, by outcome", labels=["resource", "outcome"])
        inflight = GaugeMetricFamily(f"{p}_inflight", "Admitted calls in flight", labels=["resource"])
        conc = GaugeMetricFamily(
            f"{p}_concurrency_limit", "Concurrency limit (static or adaptive)", labels=["resource"]
        )
        rate = GaugeMetricFamily(f"{p}_rate_limit_per_s", "Rate limit, as warm-up allows it now", labels=["resource"])
        tokens = GaugeMetricFamily(f"{p}_tokens", "Tokens in the resource's bucket", labels=["resource"])
        breaker = GaugeMetricFamily(f"{p}_breaker_state", "0 closed, 1 open, 2 half-open", labels=["resource"])
        for name, r in status["resources"].items():
            for outcome, n in r["exits"].items():
                exits.add_metric([name, outcome], n)
            inflight.add_metric([name], r["inflight"])
            if r["concurrency_limit"] is not None:
                conc.add_metric([name], r["concurrency_limit"])
            if "bucket" in r:
                rate.add_metric([name], r["bucket"]["warm_rate_per_s"])
                tokens.add_metric([name], r["bucket"]["tokens"])
            if "breaker" in r:
                breaker.add_metric([name], _BREAKER[r["breaker"]["state"]])
        yield from (exits, inflight, conc, rate, tokens, breaker)
        yield GaugeMetricFamily(
            f"{p}_system_inflight", "Admitted calls in flight, all resources", value=status["inflight"]
        )
        cap = status["system"]["capacity_inflight"]
        if cap is not None:
            yield GaugeMetricFamily(
                f"{p}_system_capacity_inflight", "Estimated capacity (peak rate x min latency)", value=cap
            )
        yield GaugeMetricFamily(f"{p}_rules_version", "Version of the rules in force", value=status["version"])
