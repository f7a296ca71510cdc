"""Admission control for the node's API (``liangcao.flow``): which requests are which class of work.

Submitting transactions and captures is paying-class work (``txs``, Priority.PAY), reads and queries are
``queries`` (QUERY), the explorer, the verify page and static files are ``explorer`` (BROWSE). Health, metrics,
event streams (long-lived) and the flow routes themselves are never gated. The default rules refuse nothing a
node normally sees; an operator tightens them at run time with ``PUT /v1/flow/rules`` (a write token), and
``GET /v1/flow`` (a read token) shows every decision; the node's ``/metrics`` carries ``liangcao_flow_*``.
"""

from __future__ import annotations

from fastapi import Depends, FastAPI

from liangcao.api.deps import reader_member, writer_member
from liangcao.api.errors import ERRORS
from liangcao.flow import Gate, Priority
from liangcao.flow.asgi import Route, by_route, install, open_rules
from liangcao.flow.metrics import FlowCollector

ROUTES: tuple[Route, ...] = (
    ("*", "/v1/health", None, Priority.PAY),
    ("*", "/metrics", None, Priority.PAY),
    ("*", "/v1/flow", None, Priority.PAY),
    ("*", "/v1/events", None, Priority.PAY),  # a stream would hold its ticket for hours
    ("POST", "/v1/txs", "txs", Priority.PAY),
    ("POST", "/v1/batch/txs", "txs", Priority.PAY),
    ("POST", "/epcis/v2/capture", "txs", Priority.PAY),
    ("*", "/explorer", "explorer", Priority.BROWSE),
    ("*", "/verify", "explorer", Priority.BROWSE),
    ("*", "/favicon.ico", "explorer", Priority.BROWSE),
)


def install_flow(app: FastAPI, gate: Gate | None = None) -> Gate:
    """Gate ``app`` (the node's API) with ``gate``, or with open rules over txs, queries and explorer."""
    gate = gate or Gate(open_rules(["txs", "queries", "explorer"]))
    metrics = getattr(app.state, "metrics", None)
    if metrics is not None:  # the node's /metrics shows the flow metrics too (one scrape)
        metrics.registry.register(FlowCollector(gate))
    return install(
        app,
        gate,
        by_route(ROUTES, default=("queries", Priority.QUERY)),
        read=[Depends(reader_member)],
        write=[Depends(writer_member)],
        responses=ERRORS,
    )
