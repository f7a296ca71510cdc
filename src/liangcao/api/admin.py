"""Operations: ``/v1/health`` (no token: load balancers ask it) and ``/metrics`` (Prometheus).

:class:`Metrics` listens to the node's commits (blocks, transactions by result, commit latency from
admission) and counts admission refusals (``liangcao.api.errors``); the gauges a scrape needs now (mempool,
fork alarms) are sampled when scraped. Tokens are issued and revoked on the command line (``liangcao token``,
``liangcao.tokens``), never over HTTP.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, Field

from liangcao.api.deps import Services
from liangcao.api.errors import ERRORS
from liangcao.node.node import Committed

router = APIRouter()


class Health(BaseModel):
    status: str
    chain_id: str
    height: int
    block_hash: str
    mempool: int
    version: str
    time_ms: int = Field(description="the node's clock: clients compute not_after from it, not from their own")
    ordering: str = Field("solo", description="solo (embedded) or jetstream (the consortium's NATS cluster)")
    fork_alarms: list[dict[str, Any]] = Field(
        default_factory=list, description="peers that attested another block or state at a height we hold"
    )
    poison_messages: int = Field(
        0, description="stream messages (transactions, cuts, attestations) skipped as malformed"
    )
    clock_alarm: str = Field("", description="set while the next block is stamped ahead of this node's own clock")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.txs = Counter("liangcao_txs_committed", "Transactions committed, by result", ["result"], registry=r)
        self.blocks = Counter("liangcao_blocks_committed", "Blocks committed", registry=r)
        self.height = Gauge("liangcao_height", "Height of the last committed block", registry=r)
        self.mempool = Gauge("liangcao_mempool_txs", "Transactions waiting in the mempool", registry=r)
        self.forks = Gauge(
            "liangcao_fork_alarms", "Attestations of another block or state seen (0 is healthy)", registry=r
        )
        self.block_txs = Histogram(
            "liangcao_block_txs", "Transactions per block", buckets=(1, 10, 50, 100, 250, 500, 1000, 2000), registry=r
        )
        self.latency = Histogram(
            "liangcao_commit_latency_seconds",
            "From admission to durable commit",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.rejected = Counter(
            "liangcao_txs_rejected", "Transactions refused at admission, by code", ["code"], registry=r
        )

    def on_block(self, info: Committed) -> None:  # commit thread
        self.blocks.inc()
        self.height.set(info.header.height)
        self.block_txs.observe(len(info.tx_ids))
        ok = sum(1 for c in info.codes if c == 0)
        self.txs.labels("ok").inc(ok)
        self.txs.labels("failed").inc(len(info.codes) - ok)
        now = time.time() * 1000
        for t in info.admitted_ms.values():
            self.latency.observe(max(0.0, (now - t) / 1000))


@router.get("/v1/health", response_model=Health, responses=ERRORS, summary="Liveness and the head")
def health(services: Services) -> Any:
    body = services.health()
    return JSONResponse(body, status_code=503 if body["status"] == "failed" else 200)


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
def prometheus(request: Request, services: Services) -> Response:
    metrics: Metrics = request.app.state.metrics
    mempool, forks = services.gauges()
    metrics.mempool.set(mempool)
    metrics.forks.set(forks)
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
