"""The HTTP API of a node: ``create_app`` assembles one router per noun over the node's services.

Every error is JSON ``{code, message, detail}`` with a stable ``code`` (``liangcao.codes``) and a fitting
HTTP status; errors are translated once (``liangcao.api.errors``). Reads need a bearer token issued by the
node's admin (``liangcao token create``); submitting a transaction needs none, because it carries its own
signatures. The only requests that make the node sign (capture with custody, ``liangcao.api.epcis``) need a
token with the ``write`` scope. An event stream ends when the token that opened it expires or is revoked.

The routers (``liangcao.api.<noun>``) only translate HTTP to calls on
:class:`~liangcao.node.services.NodeServices` and back; a new endpoint is a route in its noun's module, or a
new module added to :data:`ROUTERS`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import APIRouter, FastAPI

from liangcao import __version__
from liangcao.api import abs as abs_routes
from liangcao.api import (
    admin,
    attestations,
    chain,
    cover,
    dg,
    epcis,
    epcis_queries,
    errors,
    events,
    explorer,
    flow,
    private,
    queries,
    state,
    txs,
    verify,
)
from liangcao.api.admin import Metrics
from liangcao.node.capture import Custody
from liangcao.node.node import Node
from liangcao.node.private import private_of
from liangcao.node.services import NodeServices
from liangcao.tokens import TokenAuth

#: The routers, in the order their routes are matched.
ROUTERS: tuple[APIRouter, ...] = (
    epcis.router,  # /epcis/v2 (EPCIS 2.0 REST binding)
    epcis_queries.router,  # /epcis/v2/queries (named queries, subscriptions)
    epcis.plain,  # /v1/trace/provenance
    dg.router,  # /v1/dg
    abs_routes.router,  # /v1/abs, /explorer/abs (before the explorer's /explorer/{name})
    cover.router,  # /v1/cover, /explorer/cover (before /explorer/{name})
    explorer.router,  # /explorer
    txs.router,  # /v1/txs, /v1/batch/txs
    chain.router,  # /v1/head, /v1/blocks
    state.router,  # /v1/state
    queries.router,  # /v1/query
    attestations.router,  # /v1/attestations
    events.router,  # /v1/events
    admin.router,  # /v1/health, /metrics
    verify.router,  # /v1/trace/verify, /verify, the GS1 Digital Link resolver
    private.router,  # /v1/private (private data collections)
)


def create_app(node: Node, auth: TokenAuth, custody: Custody | None = None) -> FastAPI:
    """The FastAPI application serving ``node`` (``custody``: member keys the node may sign captures with)."""
    services = NodeServices(node, custody)
    private_of(node)  # private data collections: listens to commits from the first block served

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Commit notifications reach waiting clients and streams through the loop that serves them.
        services.hub.loop = asyncio.get_running_loop()
        yield

    app = FastAPI(
        lifespan=lifespan,
        title="liangcao node API",
        version=__version__,
        description="A consortium ledger node: submit signed transactions, read blocks, state and proofs, "
        "follow committed events. Errors are JSON {code, message, detail}.",
    )
    metrics = Metrics()
    node.listeners.append(metrics.on_block)
    app.state.services, app.state.auth, app.state.metrics = services, auth, metrics
    app.state.node, app.state.hub, app.state.capture_jobs = node, services.hub, services.captures.jobs
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router)
    flow.install_flow(app)  # admission control (liangcao.flow): /v1/flow, open rules by default
    return app
