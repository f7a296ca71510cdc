"""The checkout gateway's HTTP API (FastAPI + msgspec), behind flow control.

Every mutating request carries an ``Idempotency-Key`` header; a retry with the same key and the same
request gets the first answer again (``Idempotent-Replayed: true``). Bodies are small JSON objects read
with msgspec (a body over ``body_bytes_max`` is refused with 413 before it is read whole); money is an
integer number of fen (a float, a string or a negative number is refused with its own code). Every answer
that is not a success is ``{"code", "name", "message"}`` with the status registered for the code; a bug is
answered 503 ``INTERNAL``, never 500.

Admission: :class:`liangcao.flow.asgi.FlowMiddleware` classifies each request before FastAPI sees it
(:func:`classify`): paying and creating orders (``PAY``), confirming and refunding (``CONFIRM``), order and
wallet queries (``QUERY``), merchants' order lists (``BROWSE``) and settlement reports (``REPORT``); the hot
parameter is the merchant (the part of an order id before its dot), so one hot shop cannot starve the rest.
A pay request carrying a passkey answer (the second round trip of a confirmed payment) is ``PAY`` on a
resource of its own, ``pay_step_up``: shedding it would waste a challenge its first attempt was admitted for.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from liangcao import __version__, sessions
from liangcao.checkout import limits
from liangcao.checkout.codes import CheckoutCode, CheckoutError
from liangcao.checkout.identity import Caller, Identity, forbidden, session_key
from liangcao.checkout.service import Checkout, Confirming, Reply, check_key
from liangcao.flow import Gate, Priority, Rules
from liangcao.flow.asgi import FlowMiddleware, Scope, flow_router


class OrderIn(msgspec.Struct, forbid_unknown_fields=True):
    buyer: str
    merchant: str
    amount: Any  # fen; checked by the service so that a float gets its own code
    currency: str = "CNY"
    note: str = ""


class PayIn(msgspec.Struct, forbid_unknown_fields=True):
    method: str = "wallet"
    step_up: dict[str, Any] | None = None  # a passkey assertion, when the answer before was STEP_UP_REQUIRED


class RefundIn(msgspec.Struct, forbid_unknown_fields=True):
    amount: Any
    reason: str = ""


class TopupIn(msgspec.Struct, forbid_unknown_fields=True):
    amount: Any


class Empty(msgspec.Struct, forbid_unknown_fields=True):
    pass


class SessionIn(msgspec.Struct, forbid_unknown_fields=True):
    role: str  # shopper | merchant | operator
    subject: str  # the buyer, the merchant, or the operator's name
    ttl_s: Any = 3600  # an integer number of seconds, 1..session_ttl_s_max


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("a key appears twice")
    return out


def _decode(t: type[Any], data: bytes) -> Any:
    try:
        value = msgspec.json.decode(data or b"{}", type=t, strict=True)
    except msgspec.ValidationError as exc:
        raise CheckoutError(CheckoutCode.BAD_REQUEST, f"invalid body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise CheckoutError(CheckoutCode.BAD_REQUEST, f"body is not JSON: {exc}") from None
    # msgspec keeps the last of two equal keys, other parsers (a proxy, a WAF, an audit log) the first: one
    # body, two amounts. Refused (bodies are small: body_bytes_max; checking them costs microseconds).
    try:
        json.loads(data or b"{}", object_pairs_hook=_no_duplicates)
    except ValueError:
        raise CheckoutError(CheckoutCode.BAD_REQUEST, "invalid body: a key appears twice in an object") from None
    return value


def _merchant_of(order_id: str) -> str:
    return order_id.split(".", 1)[0]


#: A pay body at least this long carries a passkey answer: without one it is ``{"method": "wallet"}`` (tens of
#: bytes); with one it holds a challenge id, clientDataJSON, authenticatorData and a signature (500 and more).
_STEP_UP_BODY_BYTES = 256


def _carries_step_up(scope: Scope) -> bool:
    """Whether a pay request is the second round trip of a confirmed payment, from its declared length (the
    body is not read before admission). A client that pads a first attempt gains nothing: it is admitted
    in the step-up class, then refused for its body."""
    for name, value in scope.get("headers") or ():
        if name == b"content-length":
            return bool(value.isdigit()) and int(value) >= _STEP_UP_BODY_BYTES
    return False


#: Paths flow control leaves alone: liveness, the metrics and the flow endpoints themselves (an operator
#: must be able to read and change the rules in the middle of the surge they are shedding). Liveness and the
#: metrics are one path each: what lies under them is a 404 like any other (``other``), not a free pass.
_UNGUARDED = ("/v1/health", "/metrics", "/v1/flow")
_UNGUARDED_TREES = ("/v1/flow/",)


def classify(scope: Scope) -> tuple[str, Priority, str | None] | None:
    """(resource, priority, hot merchant) of a request, or None for the unguarded endpoints (``_UNGUARDED``).

    Everything else is guarded, the passkey router and the pages included (a flood of them would otherwise
    pass the gate): a payment's passkey challenge and verification are paying (``authn_pay``); the rest of
    the passkey router is confirming (``authn``: registration, devices, limits) or a query (its GETs);
    issuing sessions is ``sessions`` (the login path), the operator's auto-confirm ``auto_confirm``; the
    pages are browsing; a path the gateway does not serve is ``other`` (its 404 costs little, but a flood of
    them must not pass either)."""
    path: str = scope["path"]
    method: str = scope["method"]
    if path in _UNGUARDED or path.startswith(_UNGUARDED_TREES):
        return None
    parts = path.strip("/").split("/")
    if parts[0] == "authn":
        if len(parts) >= 4 and parts[2] == "payment":
            return "authn_pay", Priority.PAY, None
        if method == "POST":
            return "authn", Priority.CONFIRM, None
        return ("query", Priority.QUERY, None) if len(parts) > 1 else ("browse", Priority.BROWSE, None)
    if parts[0] == "checkout":
        return "browse", Priority.BROWSE, None
    if len(parts) < 2 or parts[0] != "v1":
        return "other", Priority.BROWSE, None
    noun = parts[1]
    if noun == "sessions":
        return "sessions", Priority.CONFIRM, None
    if noun == "auto-confirm":
        return "auto_confirm", Priority.CONFIRM, None
    if noun == "orders":
        if method == "POST" and len(parts) == 2:
            return "order", Priority.PAY, None
        if len(parts) == 4 and method == "POST":
            verb = parts[3]
            if verb == "pay":
                # the second round trip answers a challenge the first one was admitted for: its own resource,
                # so a surge of first attempts filling "pay" does not shed it and waste the signed challenge
                if _carries_step_up(scope):
                    return "pay_step_up", Priority.PAY, _merchant_of(parts[2])
                return "pay", Priority.PAY, _merchant_of(parts[2])
            return (
                verb if verb in ("confirm", "refund", "cancel") else "other",
                Priority.CONFIRM,
                _merchant_of(parts[2]),
            )
        if len(parts) == 3 or (len(parts) == 4 and method == "GET"):  # the order, its offers (checkout page)
            return "query", Priority.QUERY, _merchant_of(parts[2])
    if noun == "wallets":
        if method == "POST":
            return "topup", Priority.CONFIRM, None
        return "query", Priority.QUERY, None
    if noun == "merchants" and len(parts) >= 4:
        if parts[3] == "settlement":
            return "report", Priority.REPORT, parts[2]
        return "browse", Priority.BROWSE, parts[2]
    return "other", Priority.BROWSE, None


#: The resource of a request whose caller is not proven (no ``Authorization``, or a token that is forged,
#: expired, malformed or another key's): see :func:`classifier`.
UNAUTHENTICATED_RESOURCE = "unauthenticated"


#: The rule holding each signed-in caller's own rate (see :func:`classifier`): only its ``hot`` limit is
#: used, keyed by the caller; refusals are counted under this name.
CALLER_RESOURCE = "caller"


def classifier(
    identity: Identity, gate: Gate | None = None
) -> Callable[[Scope], tuple[str, Priority, str | None] | None]:
    """:func:`classify` with the caller checked first (the MAC and expiry: microseconds, no lookup).

    Why: classified by its path alone, a request without a good token to ``/v1/orders/<any>/pay`` is
    ``pay`` at ``PAY``, and the hot merchant its path names: a flood of them, each answered 401 behind the
    gate, takes the slots of the signed-in payers (measured: an unauthenticated flood of pays took paying
    from about 150/s to 0 behind ``--edge``). Here such a request is ``unauthenticated`` at the lowest
    priority, with no hot parameter: shed first, on its own small limit, never in paying's. So is
    ``/metrics`` for anyone but the operator (for whose scraper it stays unguarded). The open pages
    (``GET /checkout/...``, ``GET /authn/``), liveness and the flow endpoints are classified as before.

    With ``gate``, each signed-in caller but the operator has a rate of its own (the ``caller`` rule's
    ``hot`` limit, keyed by role and subject): a shopper with a good session could otherwise send thousands
    of ``pay`` requests a second for other people's orders, each answered 403 behind the gate, and take
    paying's slots as the unauthenticated flood did; the merchant's hot limit does not stop that (the
    requests name any merchant). Past its rate a caller's request is refused here (``Refused``, 429 with
    ``Retry-After``; the servers answer it as any refusal of the gate)."""

    def classify_caller(scope: Scope) -> tuple[str, Priority, str | None] | None:
        what = classify(scope)
        metrics = what is None and scope["path"] == "/metrics"
        if (what is None and not metrics) or (scope["method"] in ("GET", "HEAD") and _open_page(scope["path"])):
            return what
        given = [v.decode("latin-1") for k, v in scope.get("headers") or () if k == b"authorization"]
        try:
            c = identity.caller(given)
        except CheckoutError:
            return UNAUTHENTICATED_RESOURCE, Priority.REPORT, None
        # /metrics stays unguarded for whoever may read it (the operator's scraper in the middle of a surge),
        # not for a flood of requests answered 401 or 403
        if metrics and c.role != "operator":
            return UNAUTHENTICATED_RESOURCE, Priority.REPORT, None
        if gate is not None and what is not None and c.role != "operator":
            gate.enter_hot(CALLER_RESOURCE, f"{c.role}:{c.subject}", what[1])  # Refused past the caller's rate
        return what

    return classify_caller


def _open_page(path: str) -> bool:
    return path.startswith("/checkout/") or path == "/authn/"


#: The default rules' rate for each signed-in caller (requests/s), its burst, and how many callers the gate
#: keeps buckets for at once (the least recently seen is forgotten first and comes back with a full bucket).
caller_rate_per_s = 100.0
caller_burst = 200
callers_tracked_max = 100_000


def default_rules() -> Rules:
    """The gateway's rules when none are given: protect latency, shed by priority (see docs/checkout.md)."""
    from liangcao.flow import AdaptiveRule, HotRule, ResourceRule, SystemRule

    adaptive = AdaptiveRule(limit_min=8, limit_max=256, limit_initial=32)
    hot = HotRule(rate_per_s=2000.0)
    return Rules(
        version=1,
        resources=[
            ResourceRule(name="pay", adaptive=adaptive, hot=hot),
            # no hot rule: a genuine one answers a challenge issued to a first attempt admitted by "pay"
            ResourceRule(name="pay_step_up", adaptive=adaptive),
            ResourceRule(name="order", adaptive=adaptive),
            ResourceRule(name="confirm", adaptive=adaptive, hot=hot),
            ResourceRule(name="refund", concurrency_max=32),
            ResourceRule(name="query", concurrency_max=32),
            ResourceRule(name="browse", concurrency_max=8, hot=HotRule(rate_per_s=200.0)),
            ResourceRule(name="report", concurrency_max=4, rate_per_s=20.0),
            # a payment's passkey round trips are paying; the rest of the passkey router, the login path and
            # the operator's sweep are bounded so that a flood of them cannot take the gateway
            ResourceRule(name="authn_pay", adaptive=adaptive),
            ResourceRule(name="authn", concurrency_max=16),
            ResourceRule(name="sessions", concurrency_max=16),
            ResourceRule(name="auto_confirm", concurrency_max=2),  # 1 admitted at CONFIRM (x 0.9)
            ResourceRule(name="other", concurrency_max=8),
            # callers not proven (classifier): they are answered 401 anyway, a few at a time is enough
            ResourceRule(name=UNAUTHENTICATED_RESOURCE, concurrency_max=8),
            # each signed-in caller's own rate (classifier): a person pays a few times a minute; a merchant's
            # systems query more (a big one gets an override, "merchant:<id>"). At the surge's 10x its shoppers
            # send 20 to 40 requests/s each, its three hot merchants hundreds of browsing and reports (shed
            # anyway: low priority)
            ResourceRule(
                name=CALLER_RESOURCE,
                hot=HotRule(rate_per_s=caller_rate_per_s, burst=caller_burst, hot_values_max=callers_tracked_max),
            ),
        ],
        default=ResourceRule(name="default", concurrency_max=16),
        # BBR (capacity = peak completions x the least latency) below 32 in flight would refuse payments that
        # merely wait for their batch's fsync: they hold no CPU.
        # Under overload queries, browsing and reports yield to refused payments and confirmations for 100 ms
        # (measured at 10x: paid 276 -> 352 orders/s, pay + confirm p99 81 -> 68 ms; docs/benchmarks.md).
        system=SystemRule(inflight_max=128, bbr=True, bbr_inflight_min=32, yield_ms=100.0),
    )


class Counters:
    """Requests answered, by route and status (read by ``/metrics``)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.answers: dict[tuple[str, int], int] = {}

    def add(self, route: str, status: int) -> None:
        with self.lock:
            self.answers[(route, status)] = self.answers.get((route, status), 0) + 1


def _reply(r: Reply, status: int | None = None) -> Response:
    headers = {"Idempotent-Replayed": "true"} if r.replayed else None
    return Response(
        msgspec.json.encode(r.body), status_code=status or r.status, media_type="application/json", headers=headers
    )


def _json(obj: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(obj), status_code=status, media_type="application/json")


def _err(exc: CheckoutError) -> Response:
    r = _json(exc.body(), exc.status)
    if exc.code == CheckoutCode.UNAUTHENTICATED:
        r.headers["www-authenticate"] = 'Bearer realm="liangcao-checkout"'
    return r


async def read_body(request: Request) -> bytes:
    """The body, refused with 413 (``BODY_TOO_LARGE``) past ``body_bytes_max`` (declared or streamed)."""
    declared = request.headers.get("content-length")
    too_large = CheckoutError(
        CheckoutCode.BODY_TOO_LARGE, f"body over body_bytes_max={limits.body_bytes_max} bytes (nothing written)"
    )
    if declared is not None and declared.isdigit() and int(declared) > limits.body_bytes_max:
        raise too_large
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limits.body_bytes_max:
            raise too_large
    return bytes(data)


#: The gateway's operator token, in its folder: whoever holds it may change the flow rules at run time.
OPERATOR_TOKEN_FILE = "operator.token"


def operator_token(home: Path) -> str:
    """The operator token of the gateway in ``home`` (made on first start, readable by its owner only)."""
    return sessions.operator_token(home, OPERATOR_TOKEN_FILE)  # written whole, linked into place


def operator_only(token: str) -> list[Any]:
    """FastAPI dependencies for the writing flow endpoints (``PUT /v1/flow/rules``): ``Authorization: Bearer
    <operator token>``, else ``401 OPERATOR_ONLY`` (a shopper who could lift every limit, or set paying's to
    zero, would own the midnight)."""
    want = token.encode()

    def check(request: Request) -> None:
        # one Authorization header (two are refused: a proxy reading the other would disagree), the scheme in
        # any case (RFC 9110 11.1), as the identity check reads it
        got = request.headers.getlist("authorization")
        scheme, _, presented = (got[0] if len(got) == 1 else "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented.encode(), want):
            raise CheckoutError(
                CheckoutCode.OPERATOR_ONLY, f"changing the flow rules needs the operator token ({OPERATOR_TOKEN_FILE})"
            )

    return [Depends(check)]


def session_shopper(request: Request) -> str:
    """The signed-in shopper of a request the gateway authenticated (``shopper_of`` for the passkey router:
    ``liangcao.authn.http.router(rp, shopper_of=session_shopper)``)."""
    caller: Caller = request.state.caller
    return caller.subject


def _read_only() -> None:
    raise CheckoutError(CheckoutCode.OPERATOR_ONLY, "the flow rules of this gateway cannot be changed over HTTP")


def create_app(
    co: Checkout,
    gate: Gate | None = None,
    *,
    auto_confirm_every_s: float = 1.0,
    middleware: bool = True,
    routers: Sequence[Any] = (),
    operator: str | None = None,
    identity: Identity | None = None,
) -> Any:
    """The gateway's ASGI app over ``co``; with ``gate``, behind :class:`FlowMiddleware` (``middleware=False``:
    the server in front asks the gate itself, :class:`liangcao.checkout.server.Server`), else unguarded.
    ``operator``: the token that ``PUT /v1/flow/rules`` asks for (None: the rules are read-only over HTTP).
    ``identity``: who may call (default: the session key and operator token in ``co.home``, made if need be);
    there is no open mode: every route but ``/v1/health``, ``/v1/flow`` and the static pages needs a caller
    (:mod:`liangcao.checkout.identity`, the route table in docs/checkout.md)."""
    ident = identity or Identity(session_key(co.home), operator or operator_token(co.home))
    counters = Counters()
    stop = threading.Event()

    def sweeper() -> None:
        # Engine time passes without traffic: orders whose window ended settle within about a second, and
        # operations left open by a failed payments core are finished.
        while not stop.wait(auto_confirm_every_s):
            with contextlib.suppress(Exception):
                co.auto_confirm_due()
                co.recover()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        import anyio.to_thread

        # More worker threads than the default 40: a request waiting for its batch holds one, and batching
        # needs many waiting together.
        anyio.to_thread.current_default_thread_limiter().total_tokens = 128
        t = threading.Thread(target=sweeper, name="checkout-sweeper", daemon=True)
        if auto_confirm_every_s > 0:
            t.start()
        yield
        stop.set()

    app = FastAPI(
        title="liangcao checkout",
        version=__version__,
        description="Orders and escrow (担保交易) over the payments core, behind flow control.",
        lifespan=lifespan,
    )

    @app.exception_handler(CheckoutError)
    async def _checkout(_: Request, exc: CheckoutError) -> Response:
        return _err(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return _err(CheckoutError(CheckoutCode.BAD_REQUEST, f"{where}: {first.get('msg', 'invalid')}"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            return _err(CheckoutError(CheckoutCode.METHOD_NOT_ALLOWED, "method not allowed on this path"))
        if exc.status_code == 404:
            return _err(CheckoutError(CheckoutCode.ROUTE_NOT_FOUND, "no such endpoint (see /docs)"))
        return _err(CheckoutError(CheckoutCode.BAD_REQUEST, str(exc.detail)))

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> Response:
        return _err(CheckoutError(CheckoutCode.INTERNAL, f"internal error: {type(exc).__name__} (logged)"))

    # The hot paths run on the event loop: their SQLite steps take tens of microseconds, and the wait for the
    # payments core's batch is an awaited future, not a parked thread. Work that may take longer (guards such
    # as a risk model, a PostgreSQL round trip) goes to the thread pool.
    in_memory = hasattr(co.backend, "submit_transfers")

    async def call(route: str, fn: Any, *args: Any, offload: bool = False) -> Response:
        try:
            r = await run_in_threadpool(fn, *args) if offload or not in_memory else fn(*args)
        except CheckoutError as exc:
            counters.add(route, exc.status)
            raise
        if isinstance(r, Reply):
            counters.add(route, r.status)
            return _reply(r)
        counters.add(route, 200)
        return _json(r)

    async def op(route: str, begin: Any, *args: Any, offload: bool = False, offload_then: bool = False) -> Response:
        try:
            started = await run_in_threadpool(begin, *args) if offload or not in_memory else begin(*args)
            if isinstance(started, Confirming):  # a passkey answer: its verdict is awaited here, no thread held
                await co.guards.confirm_async(started.attempt, started.records)
                then = started.then
                started = await run_in_threadpool(then) if offload_then or not in_memory else then()
            r = await co.finish_async(started)
        except CheckoutError as exc:
            counters.add(route, exc.status)
            raise
        counters.add(route, r.status)
        return _reply(r)

    def caller_of(request: Request) -> Caller:
        """The authenticated caller (401 ``UNAUTHENTICATED`` otherwise), kept on the request for the passkey
        router (:func:`session_shopper`)."""
        c = ident.caller(request.headers.getlist("authorization"))
        request.state.caller = c
        return c

    def may(c: Caller, order_id: str, what: str, *, buyer: bool = False, merchant: bool = False) -> None:
        """403 ``FORBIDDEN`` unless ``c`` may ``what`` the order: the operator always, its buyer (``buyer``),
        its merchant (``merchant``: the part of the id before its dot, no lookup). An order that does not
        exist is left to the service (404)."""
        if c.role == "operator":
            return
        if merchant and c.role == "merchant" and _merchant_of(order_id) == c.subject:
            return
        if buyer and c.role == "shopper":
            row = co.store.one("SELECT buyer FROM orders WHERE id = ?", (order_id,))
            if row is None or row[0] == c.subject:
                return
        raise forbidden(f"{c.role} {c.subject!r} may not {what} order {order_id!r}")

    def only(c: Caller, role: str, subject: str | None, what: str) -> None:
        """403 unless ``c`` is the operator, or ``role`` with this ``subject`` (None: any subject)."""
        if c.role == "operator" or (c.role == role and subject in (None, c.subject)):
            return
        raise forbidden(f"{c.role} {c.subject!r} may not {what}")

    def key_of(request: Request, c: Caller) -> str | None:
        """The idempotency key scoped to its caller: the same key from another caller is another request
        (never the first caller's answer). A scoped key over the service's bound is hashed to fit."""
        raw = request.headers.get("idempotency-key")
        if raw is None:
            return None  # the service answers IDEMPOTENCY_KEY_MISSING
        scoped = c.scope + check_key(raw)
        if len(scoped) > limits.idempotency_key_chars_max:
            scoped = c.scope + "#" + hashlib.sha256(raw.encode()).hexdigest()[:48]
        return scoped

    def body_schema(t: Any) -> dict[str, Any]:
        (schema,), components = msgspec.json.schema_components([t], ref_template="#/components/schemas/{name}")
        return {
            "requestBody": {"content": {"application/json": {"schema": schema}}, "required": False},
            "x-components": components,
        }

    @app.post("/v1/orders", summary="Create an order", openapi_extra=body_schema(OrderIn), status_code=201)
    async def create_order(request: Request) -> Response:
        c = caller_of(request)
        o = _decode(OrderIn, await read_body(request))
        if not (c.role == "operator" or (c.role == "shopper" and o.buyer == c.subject)):
            raise forbidden(f"{c.role} {c.subject!r} may create orders only as their buyer")
        return await op(
            "create", co.begin_create_order, key_of(request, c), o.buyer, o.merchant, o.amount, o.currency, o.note
        )

    @app.get("/v1/orders/{order_id}", summary="An order, its payment and refunds")
    async def get_order(order_id: str, request: Request) -> Response:
        may(caller_of(request), order_id, "read", buyer=True, merchant=True)
        return await call("get", co.get_order, order_id)

    @app.post("/v1/orders/{order_id}/pay", summary="Pay into escrow", openapi_extra=body_schema(PayIn))
    async def pay(order_id: str, request: Request) -> Response:
        c = caller_of(request)
        may(c, order_id, "pay", buyer=True)
        p = _decode(PayIn, await read_body(request))
        client = {"ip": request.client.host if request.client else "", "ua": request.headers.get("user-agent", "")}
        guarded = bool(co.guards.guards) or p.method != "wallet"
        return await op(
            "pay", co.begin_pay, key_of(request, c), order_id, p.method, p.step_up, client, True, offload=guarded,
            offload_then=p.method != "wallet",
        )  # fmt: skip

    @app.post("/v1/orders/{order_id}/confirm", summary="Confirm receipt: settle to the merchant")
    async def confirm(order_id: str, request: Request) -> Response:
        c = caller_of(request)
        may(c, order_id, "confirm receipt of", buyer=True)
        _decode(Empty, await read_body(request))
        return await op("confirm", co.begin_confirm, key_of(request, c), order_id)

    @app.post("/v1/orders/{order_id}/refund", summary="Refund part or all", openapi_extra=body_schema(RefundIn))
    async def refund(order_id: str, request: Request) -> Response:
        c = caller_of(request)
        may(c, order_id, "refund", merchant=True)
        r = _decode(RefundIn, await read_body(request))
        return await op("refund", co.begin_refund, key_of(request, c), order_id, r.amount, r.reason)

    @app.post("/v1/orders/{order_id}/cancel", summary="Cancel an unpaid order")
    async def cancel(order_id: str, request: Request) -> Response:
        c = caller_of(request)
        may(c, order_id, "cancel", buyer=True)
        _decode(Empty, await read_body(request))
        return await op("cancel", co.begin_cancel, key_of(request, c), order_id)

    @app.post("/v1/wallets/{buyer}/topup", summary="Money into a wallet", openapi_extra=body_schema(TopupIn))
    async def topup(buyer: str, request: Request) -> Response:
        c = caller_of(request)
        only(c, "operator", None, "top up wallets (money from outside is the operator's)")
        t = _decode(TopupIn, await read_body(request))
        return await op("topup", co.begin_topup, key_of(request, c), buyer, t.amount)

    @app.get("/v1/wallets/{buyer}", summary="A wallet's balance")
    async def wallet(buyer: str, request: Request) -> Response:
        only(caller_of(request), "shopper", buyer, f"read the wallet of {buyer!r}")
        return await call("wallet", co.wallet, buyer)

    @app.get("/v1/merchants/{merchant}/orders", summary="A merchant's newest orders")
    async def merchant_orders(merchant: str, request: Request, limit: int = 50) -> Response:
        only(caller_of(request), "merchant", merchant, f"list the orders of {merchant!r}")
        return await call("browse", co.merchant_orders, merchant, limit)

    @app.get("/v1/merchants/{merchant}/settlement", summary="A merchant's settlement report")
    async def settlement(merchant: str, request: Request, from_ms: int = 0, to_ms: int = 0) -> Response:
        only(caller_of(request), "merchant", merchant, f"read the settlement of {merchant!r}")
        return await call("report", co.settlement_report, merchant, from_ms, to_ms)

    @app.post("/v1/auto-confirm", summary="Settle every order whose window has ended, now")
    async def auto_confirm(request: Request) -> Response:
        only(caller_of(request), "operator", None, "run auto-confirm")
        return await call("auto_confirm", lambda: {"settled": co.auto_confirm_due()}, offload=True)

    @app.post("/v1/sessions", summary="Issue a session token (the operator token only)", status_code=201,
              openapi_extra=body_schema(SessionIn))  # fmt: skip
    async def sessions(request: Request) -> Response:
        header = request.headers.getlist("authorization")
        if not ident.is_operator_token(header):
            c = caller_of(request)  # 401 without a good token; a session (even an operator's) cannot mint others
            raise forbidden(
                f"{c.role} {c.subject!r} may not issue sessions: the operator token only ({OPERATOR_TOKEN_FILE})"
            )
        s = _decode(SessionIn, await read_body(request))
        token, expires_ms = ident.key.issue(s.role, s.subject, s.ttl_s)
        body = {"token": token, "role": s.role, "subject": s.subject, "expires_ms": expires_ms, "kid": ident.key.kid}
        return _json(body, 201)

    @app.get("/v1/health", summary="Liveness")
    async def health() -> Response:
        return _json({"status": "ok", "version": __version__, "backend": type(co.backend).__name__})

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics(request: Request) -> Response:
        # the operator's: order counts by state and the answer mix are the business's figures (a scraper is
        # given an operator session: Prometheus' ``authorization: {credentials: ...}``)
        only(caller_of(request), "operator", None, "read the metrics")
        return Response("".join(_metrics(co, counters, gate)), media_type="text/plain; version=0.0.4")

    if gate is not None:
        app.include_router(flow_router(gate, write=operator_only(operator) if operator else [Depends(_read_only)]))

    async def guard_extra(request: Request) -> None:
        # The routers passed in (the checkout page, the passkey router): their static pages are open; the
        # passkey endpoints are the signed-in shopper's (the router compares the shopper named with
        # session_shopper); a read of an order is its buyer's, merchant's or the operator's; anything else
        # the operator's. Unknown means the operator: a router added later is closed until it says otherwise.
        path: str = request.scope["path"]
        if request.method in ("GET", "HEAD") and _open_page(path):
            return
        c = caller_of(request)
        if path.startswith("/authn/"):
            if c.role != "shopper":
                raise forbidden(f"{c.role} {c.subject!r} may not manage passkeys: a shopper's own, signed in")
            return
        order_id = request.path_params.get("order_id")
        if isinstance(order_id, str) and request.method in ("GET", "HEAD"):
            may(c, order_id, "read", buyer=True, merchant=True)
            return
        only(c, "operator", None, f"call {path}")

    for r in routers:  # e.g. liangcao.authn.http.router: passkeys and the confirmation page
        app.include_router(r, dependencies=[Depends(guard_extra)])

    components: dict[str, Any] = {}
    for t in (OrderIn, PayIn, RefundIn, TopupIn, SessionIn):
        components.update(body_schema(t)["x-components"])

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            spec.setdefault("components", {}).setdefault("schemas", {}).update(components)
            # every route asks for a session but the open ones (docs/checkout.md, "Who is calling")
            spec["components"]["securitySchemes"] = {
                "session": {"type": "http", "scheme": "bearer", "bearerFormat": "lc1.<claims>.<mac>"}
            }
            spec["security"] = [{"session": []}]
            for open_path in ("/v1/health", "/checkout/{order_id}", "/authn/"):
                for op in spec.get("paths", {}).get(open_path, {}).values():
                    op["security"] = []
            for path in spec.get("paths", {}).values():
                for op in path.values():
                    op.pop("x-components", None)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    if gate is None or not middleware:
        return app
    return FlowMiddleware(app, gate, classifier(ident, gate))


def _metrics(co: Checkout, counters: Counters, gate: Gate | None) -> Iterator[str]:
    yield "# TYPE checkout_answers_total counter\n"
    with counters.lock:
        answers = sorted(counters.answers.items())
    for (route, status), n in answers:
        yield f'checkout_answers_total{{route="{route}",status="{status}"}} {n}\n'
    b = co.batcher
    yield "# TYPE checkout_batches_total counter\n"
    yield f"checkout_batches_total {b.batches}\n"
    yield "# TYPE checkout_batch_events_total counter\n"
    yield f"checkout_batch_events_total {b.events}\n"
    yield "# TYPE checkout_batch_events_largest gauge\n"
    yield f"checkout_batch_events_largest {b.largest}\n"
    yield "# TYPE checkout_orders gauge\n"
    for state, n in co.store.read("SELECT state, COUNT(*) FROM orders GROUP BY state"):
        from liangcao.checkout.states import OrderState

        yield f'checkout_orders{{state="{OrderState(state).name.lower()}"}} {n}\n'
    if gate is not None:
        from prometheus_client import CollectorRegistry, generate_latest

        from liangcao.flow.metrics import FlowCollector

        registry = CollectorRegistry(auto_describe=False)
        registry.register(FlowCollector(gate))
        yield generate_latest(registry).decode()
    yield f"# TYPE checkout_time_seconds gauge\ncheckout_time_seconds {time.time():.3f}\n"
