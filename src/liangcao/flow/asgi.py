"""The HTTP edge: :class:`FlowMiddleware` (admission for an ASGI app) and :func:`flow_router` (status, rules).

The middleware asks the gate before the application sees the request. A refused request is answered at once,
without reading its body: ``429`` (this caller asks too much) or ``503`` (the service protects itself),
``Retry-After`` in whole seconds (``X-Retry-After-Ms`` exactly) and the JSON body
``{"code", "name", "message", "detail"}``. An admitted request's ticket is closed when the response ends;
a ``5xx`` answer or an exception counts as a failure (it feeds the breaker).
"""

from __future__ import annotations

import json
from collections.abc import Callable, MutableMapping, Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.params import Depends
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from liangcao.codes import name_of
from liangcao.flow.errors import FlowCode, FlowError, Refused
from liangcao.flow.gate import Gate
from liangcao.flow.rules import Priority, ResourceRule, Rules, rules_bytes_max, rules_from_json, rules_to_json

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Any]
Send = Callable[[Message], Any]
ASGIApp = Callable[[Scope, Receive, Send], Any]
#: What the middleware asks of each request: (resource, priority, hot value), or None to let it through.
#: (resource, priority, hot value) of a request, None for one flow control leaves alone; it may raise
#: ``Refused`` itself (a check of its own before admission, e.g. ``Gate.enter_hot``)
Classify = Callable[[Scope], "tuple[str, Priority, str | None] | None"]


def refusal_body(exc: Refused) -> bytes:
    return json.dumps(
        {"code": exc.code, "name": name_of(exc.code), "message": exc.message, "detail": exc.detail}
    ).encode()


def refusal_headers(exc: Refused, length: int) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", b"application/json"),
        (b"content-length", str(length).encode()),
        (b"retry-after", str(exc.retry_after_s).encode()),
        (b"x-retry-after-ms", str(exc.retry_after_ms).encode()),
    ]


class FlowMiddleware:
    """ASGI middleware: ``classify(scope)`` names the resource, priority and hot value of each request."""

    def __init__(self, app: ASGIApp, gate: Gate, classify: Classify) -> None:
        self.app = app
        self.gate = gate
        self.classify = classify

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            what = self.classify(scope)  # may refuse, too (a caller over its own rate: Gate.enter_hot)
            if what is None:
                await self.app(scope, receive, send)
                return
            ticket = self.gate.enter(*what)
        except Refused as exc:
            body = refusal_body(exc)
            await send(
                {"type": "http.response.start", "status": exc.http_status, "headers": refusal_headers(exc, len(body))}
            )
            await send({"type": "http.response.body", "body": body})
            return
        status = 500

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        ok = False
        try:
            await self.app(scope, receive, watch)
            ok = status < 500
        finally:
            ticket.exit(ok)


def _error(exc: FlowError | Refused, status: int) -> JSONResponse:
    return JSONResponse(
        {"code": exc.code, "name": name_of(exc.code), "message": exc.message, "detail": exc.detail}, status_code=status
    )


def flow_router(
    gate: Gate,
    *,
    prefix: str = "/v1/flow",
    read: Sequence[Depends] = (),
    write: Sequence[Depends] = (),
    responses: dict[int | str, dict[str, Any]] | None = None,
) -> APIRouter:
    """``GET {prefix}`` (status), ``GET {prefix}/rules``, ``PUT {prefix}/rules`` (reload), ``GET {prefix}/metrics``.

    ``read`` and ``write`` are FastAPI dependencies guarding them (e.g. the node's bearer-token checks);
    ``responses``: the error responses they may answer, for the OpenAPI document (e.g. the node's 401/403)."""
    # Imported here: a command that only needs the module's helpers should not pay for prometheus_client.
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    from liangcao.flow.metrics import FlowCollector

    router = APIRouter(tags=["flow"], responses=dict(responses or {}))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FlowCollector(gate))

    @router.get(prefix, summary="Flow control: limits, state and every decision counted", dependencies=list(read))
    async def status() -> JSONResponse:
        return JSONResponse(gate.status())

    @router.get(f"{prefix}/rules", summary="The rules in force", dependencies=list(read))
    async def get_rules() -> Response:
        return Response(rules_to_json(gate.rules), media_type="application/json")

    @router.put(f"{prefix}/rules", summary="Replace the rules at run time (all or nothing)", dependencies=list(write))
    async def put_rules(request: Request) -> Response:
        too_big = FlowError(FlowCode.BAD_RULES, f"bad rules: body over rules_bytes_max={rules_bytes_max}")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > rules_bytes_max:
            return _error(too_big, 413)
        # read no more than the limit, whatever the length says (a chunked body has none)
        buf = bytearray()
        async for chunk in request.stream():
            buf += chunk
            if len(buf) > rules_bytes_max:
                return _error(too_big, 413)
        data = bytes(buf)
        try:
            rules = rules_from_json(data)
            gate.reload(rules)
        except FlowError as exc:
            return _error(exc, 400)
        return JSONResponse({"ok": True, "version": rules.version, "resources": [r.name for r in rules.resources]})

    @router.get(
        f"{prefix}/metrics",
        summary="Prometheus metrics of the gate",
        dependencies=list(read),
        response_class=PlainTextResponse,
    )
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router


#: One classification rule: (HTTP method or "*", path prefix, resource, priority); None as resource: let through.
Route = tuple[str, str, "str | None", Priority]


def by_route(routes: Sequence[Route], default: tuple[str, Priority] | None = None) -> Classify:
    """A ``classify`` from a table: the first rule whose method and path prefix match names the resource and
    priority (a rule with resource None lets the request through unclassified); ``default`` for the rest."""
    table = [(m.upper(), p, r, pr) for m, p, r, pr in routes]

    def classify(scope: Scope) -> tuple[str, Priority, str | None] | None:
        method = scope.get("method", "GET")
        path = scope.get("path", "")
        for m, prefix, resource, priority in table:
            if (m == "*" or m == method) and path.startswith(prefix):
                return None if resource is None else (resource, priority, None)
        return None if default is None else (default[0], default[1], None)

    return classify


def open_rules(resources: Sequence[str], concurrency_max: int = 4096) -> Rules:
    """Rules that refuse nothing a service normally sees (only a runaway concurrency): every decision is still
    counted and the limits can be tightened at run time (``PUT /v1/flow/rules``)."""
    return Rules(resources=[ResourceRule(name=name, concurrency_max=concurrency_max) for name in resources])


def install(
    app: Any,
    gate: Gate,
    classify: Classify,
    *,
    read: Sequence[Depends] = (),
    write: Sequence[Depends] = (),
    responses: dict[int | str, dict[str, Any]] | None = None,
) -> Gate:
    """Put ``gate`` in front of a FastAPI ``app`` and serve its ``/v1/flow`` routes; the gate is kept as
    ``app.state.flow``."""
    app.include_router(flow_router(gate, read=read, write=write, responses=responses))
    app.add_middleware(FlowMiddleware, gate=gate, classify=classify)
    app.state.flow = gate
    return gate
