"""Operations: ``/v1/health`` (no token: load balancers ask it), ``/metrics`` (Prometheus), and the fork
alarms (``/v1/fork-alarms``: read; ``/v1/fork-alarms/clear``: a write token of this node's organisation).

:class:`Metrics` listens to the node's commits (blocks, transactions by result, commit latency from
admission) and counts admission refusals (``liangcao.api.errors``); the gauges a scrape needs now (mempool,
fork alarms, and on a consortium peer ordering reachability, lag, finality and unacknowledged attestations)
are sampled when scraped. Tokens are issued and revoked on the command line (``liangcao token``,
``liangcao.tokens``), never over HTTP.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, Field

from liangcao.api.deps import Reader, Services, Writer
from liangcao.api.errors import ERRORS
from liangcao.codes import Code
from liangcao.node.node import Committed
from liangcao.node.services import NodeServices

router = APIRouter()


class Health(BaseModel):
    status: str = Field(
        description="ok, degraded (see problems), fork (fork alarms) or failed (503: the commit stopped)"
    )
    problems: list[str] = Field(default_factory=list, description="why the status is not ok, one line each")
    chain_id: str
    height: int
    block_hash: str
    mempool: int
    version: str
    time_ms: int = Field(description="the node's clock: clients compute not_after from it, not from their own")
    ordering: str = Field("solo", description="solo (embedded) or jetstream (the consortium's NATS cluster)")
    ordering_status: dict[str, Any] | None = Field(
        None, description="jetstream: reachable, connected, silent_ms (since the service last answered), error"
    )
    lag: dict[str, Any] | None = Field(
        None, description="jetstream: messages (stream messages not yet taken), blocks (behind the network)"
    )
    finality: dict[str, Any] | None = Field(
        None,
        description="jetstream: final_upto, nonfinal_blocks, oldest_nonfinal_height, oldest_nonfinal_age_ms, quorum, "
        "attestations_unacked (ours, not yet acknowledged by the stream), their age, dropped and fetched counts",
    )
    fork_alarms: list[dict[str, Any]] = Field(
        default_factory=list, description="the first few fork alarms (all of them: GET /v1/fork-alarms)"
    )
    fork_alarm_summary: dict[str, Any] = Field(
        default_factory=dict, description="count, members, first_height, last_height, sample, truncated"
    )
    poison_messages: int = Field(
        0, description="stream messages (transactions, cuts, attestations) skipped as malformed"
    )
    clock_alarm: str = Field("", description="set while the next block is stamped ahead of this node's own clock")


class ForkAlarms(BaseModel):
    alarms: list[dict[str, Any]]
    raised: int = Field(description="alarms raised since the node started (one per height and member)")


class Cleared(BaseModel):
    cleared: int


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
        self._consortium: dict[str, Gauge] | None = None  # registered on the first scrape of a consortium peer

    def _consortium_gauges(self) -> dict[str, Gauge]:
        if self._consortium is None:
            r = self.registry
            self._consortium = {
                name: Gauge(name, doc, registry=r)
                for name, doc in (
                    ("liangcao_degraded", "1 while /v1/health says degraded, fork or failed"),
                    ("liangcao_ordering_reachable", "1 while the ordering service (JetStream) answers"),
                    ("liangcao_ordering_silent_seconds", "Since the ordering service last answered"),
                    ("liangcao_stream_lag_messages", "Stream messages not yet taken by this peer"),
                    ("liangcao_lag_blocks", "Blocks behind the highest height another organisation attested"),
                    ("liangcao_final_height", "Every block up to this height is final here"),
                    ("liangcao_nonfinal_blocks", "Committed blocks not final yet"),
                    ("liangcao_oldest_nonfinal_age_seconds", "Age of the oldest block not final (0: none)"),
                    ("liangcao_attestations_unacked", "This peer's attestations not yet acknowledged by the stream"),
                    ("liangcao_attestations_dropped", "Attestations dropped from a full outbox since start"),
                )
            }
        return self._consortium

    def on_block(self, info: Committed) -> None:  # commit thread
        self.blocks.inc()
        self.height.set(info.header.height)
        self.block_txs.observe(len(info.tx_ids))
        ok = sum(1 for c in info.codes if c == Code.OK)
        self.txs.labels("ok").inc(ok)
        self.txs.labels("failed").inc(len(info.codes) - ok)
        now = time.time() * 1000
        for t in info.admitted_ms.values():
            self.latency.observe(max(0.0, (now - t) / 1000))

    def sample(self, services: NodeServices) -> None:
        """Set the gauges that are read when scraped."""
        mempool, forks = services.gauges()
        self.mempool.set(mempool)
        self.forks.set(forks)
        cond = services.condition()
        ordering, lag, fin = cond.get("ordering_status"), cond.get("lag"), cond.get("finality_status")
        if ordering is None or lag is None or fin is None:
            return  # a solo node: no ordering service, finality only from witnesses
        g = self._consortium_gauges()
        g["liangcao_degraded"].set(0 if cond["status"] == "ok" else 1)
        g["liangcao_ordering_reachable"].set(1 if ordering["reachable"] else 0)
        silent = ordering["silent_ms"]
        g["liangcao_ordering_silent_seconds"].set(float("inf") if silent is None else silent / 1000)
        g["liangcao_stream_lag_messages"].set(lag["messages"] if lag["messages"] is not None else float("nan"))
        g["liangcao_lag_blocks"].set(lag["blocks"])
        g["liangcao_final_height"].set(fin["final_upto"])
        g["liangcao_nonfinal_blocks"].set(fin["nonfinal_blocks"])
        g["liangcao_oldest_nonfinal_age_seconds"].set((fin["oldest_nonfinal_age_ms"] or 0) / 1000)
        g["liangcao_attestations_unacked"].set(fin["attestations_unacked"])
        g["liangcao_attestations_dropped"].set(fin["attestations_dropped"])


@router.get("/v1/health", response_model=Health, responses=ERRORS, summary="Liveness, the head, and what is wrong")
def health(services: Services) -> Any:
    body = services.health()
    return JSONResponse(body, status_code=503 if body["status"] == "failed" else 200)


@router.get("/v1/fork-alarms", response_model=ForkAlarms, responses=ERRORS, summary="Every fork alarm kept")
def fork_alarms(services: Services, _member: Reader) -> Any:
    return services.fork_alarms()


@router.post(
    "/v1/fork-alarms/clear",
    response_model=Cleared,
    responses=ERRORS,
    summary="Clear the fork alarms once resolved (a write token of this node's organisation)",
)
def clear_fork_alarms(services: Services, member: Writer) -> Any:
    return services.clear_fork_alarms(member)


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
def prometheus(request: Request, services: Services) -> Response:
    metrics: Metrics = request.app.state.metrics
    metrics.sample(services)
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
