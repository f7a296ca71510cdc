"""Named EPCIS queries and their subscriptions (``/epcis/v2/queries``): the binding's query interface.

Theory of operation
-------------------
A named query is a saved query definition (GS1's ``query-schema.json``: parameters as a JSON object, lists
for alternatives), checked by the same parser as ``GET /events`` when it is created, so a bad one is a 400
then and never later. ``GET /queries/{name}/events`` runs it. The definitions and subscriptions are this
node's read model (not ledger state): kept in memory and saved beside the store
(``<store>.epcis-queries.json``), so they survive a restart.

A subscription is fed from the ledger's committed ``trace.captured`` events (``liangcao.node.events``: a
replay from the store, then live blocks), each one's events loaded and tested against the query
(``trace.query.matches``). Its position is the last committed event it was given (``H-I-S``: height,
transaction, event), so nothing is skipped or sent twice across a reconnect:

- **WebSocket** (``GET /queries/{name}/events`` with ``Upgrade: websocket`` and ``stream=true``): each block's
  matching events arrive as one ``EPCISQueryDocument`` whose ``liangcao:position`` names its position; a client
  that reconnects with ``?resume=<position>`` gets exactly the events after it. The stream ends with its
  token (``access_token=`` or ``Authorization``).
- **Webhook** (``POST /queries/{name}/subscriptions`` with ``dest`` and ``stream: true``, or a ``schedule``):
  the node POSTs each document to ``dest`` with ``GS1-Signature: sha256=<HMAC-SHA256 of the body under the
  signatureToken>``; the position advances only after a 2xx answer, so a subscriber that was down gets
  every event it missed, in order, once it answers again. A webhook makes the node send requests for the
  caller, so creating one needs a ``write`` token.
- **Schedule** (``schedule: {second, minute, hour, dayOfMonth, month, dayOfWeek}``, cron-like, for a webhook;
  the same fields, or ``GS1-Query-Second``…, as query parameters of a WebSocket): at each matching second
  (UTC) the events committed since the last report are sent (``reportIfEmpty`` sends empty documents too).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import re
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import msgspec
from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import Response

from liangcao import limits
from liangcao.api.deps import Reader, Services, Writer, get_auth, read_body
from liangcao.api.epcis import BASE, EpcisRoute, events_page, json_response, options, paged
from liangcao.api.errors import ERRORS, ApiError, ErrorBody
from liangcao.codes import Code
from liangcao.errors import LiangcaoError
from liangcao.node.events import open_stream
from liangcao.node.services import NodeServices
from liangcao.trace import query as tq

log = logging.getLogger("liangcao.epcis")
_encode = msgspec.json.Encoder(decimal_format="number").encode
router = APIRouter(route_class=EpcisRoute)
POSITION = "liangcao:position"
LIANGCAO_NS = "https://liangcao.dev/epcis/"
queries_max = 1000  # named queries one node keeps
subscriptions_max = 1000  # subscriptions one node keeps (webhooks and schedules)
webhook_retry_s_max = 60.0  # backoff ceiling while a webhook does not answer 2xx
_SCHEDULE_FIELDS = ("second", "minute", "hour", "dayOfMonth", "month", "dayOfWeek")
_SCHEDULE_RANGES = {"second": (0, 59), "minute": (0, 59), "hour": (0, 23), "dayOfMonth": (1, 31), "month": (1, 12),
                    "dayOfWeek": (1, 7)}  # fmt: skip


@dataclass
class Subscription:
    subscription_id: str
    query_name: str
    member: str
    created_ms: int
    dest: str | None = None  # a webhook's URL; None for a WebSocket
    signature_token: str = ""
    stream: bool = False
    schedule: dict[str, str] | None = None
    report_if_empty: bool = False
    initial_record_ms: int | None = None
    position: str = ""  # H-I-S of the last event delivered
    last_notified_ms: int | None = None

    def public(self) -> dict[str, Any]:
        out: dict[str, Any] = {"subscriptionID": self.subscription_id, "queryName": self.query_name,
                               "createdAt": tq.iso(self.created_ms)}  # fmt: skip
        if self.dest is not None:
            out["dest"] = self.dest
        if self.stream:
            out["stream"] = True
        if self.schedule is not None:
            out["schedule"] = self.schedule
            out["reportIfEmpty"] = self.report_if_empty
        if self.initial_record_ms is not None:
            out["initialRecordTime"] = tq.iso(self.initial_record_ms)
        if self.last_notified_ms is not None:
            out["lastNotifiedAt"] = tq.iso(self.last_notified_ms)
        out["position"] = self.position
        return out  # never the signature token


@dataclass
class NamedQuery:
    name: str
    query: dict[str, Any]
    member: str
    created_ms: int
    subscriptions: dict[str, Subscription] = field(default_factory=dict)


# ---- schedules ------------------------------------------------------------------------------------------------
def _schedule_values(name: str, spec: str) -> set[int]:
    lo, hi = _SCHEDULE_RANGES[name]
    out: set[int] = set()
    for part in spec.split(","):
        m = re.fullmatch(r"(\*|[0-9]{1,2}(?:-[0-9]{1,2})?)(?:/([0-9]{1,2}))?", part.strip(), re.ASCII)
        if m is None:
            raise LiangcaoError(Code.INVALID_ARGUMENT, f"schedule {name}: {spec!r} is not a cron field")
        span, step = m.group(1), int(m.group(2) or 1)
        a, b = (lo, hi) if span == "*" else (int(span.split("-")[0]), int(span.split("-")[-1]))
        if m.group(2) and "-" not in span and span != "*":
            b = hi
        if not lo <= a <= b <= hi or step < 1:
            raise LiangcaoError(Code.INVALID_ARGUMENT, f"schedule {name}: {spec!r} is outside {lo}-{hi}")
        out.update(range(a, b + 1, step))
    return out


def check_schedule(schedule: Any) -> dict[str, str]:
    """A subscription's schedule (the binding's cron-like fields): refused with 400 if malformed."""
    if not isinstance(schedule, dict) or not schedule or set(schedule) - set(_SCHEDULE_FIELDS):
        raise LiangcaoError(Code.INVALID_ARGUMENT, f"schedule takes {', '.join(_SCHEDULE_FIELDS)}")
    out = {k: str(v) for k, v in schedule.items()}
    for k, v in out.items():
        _schedule_values(k, v)
    return out


def schedule_due(schedule: dict[str, str], when_s: int) -> bool:
    """Whether the (UTC) second ``when_s`` matches the schedule (fields left out: ``second`` 0, others any)."""
    t = dt.datetime.fromtimestamp(when_s, dt.UTC)
    now = {"second": t.second, "minute": t.minute, "hour": t.hour, "dayOfMonth": t.day, "month": t.month,
           "dayOfWeek": t.isoweekday()}  # fmt: skip
    for name in _SCHEDULE_FIELDS:
        spec = schedule.get(name, "0" if name == "second" else "*")
        if now[name] not in _schedule_values(name, spec):
            return False
    return True


# ---- the registry -----------------------------------------------------------------------------------------------
class Registry:
    """The node's named queries and subscriptions, saved beside its store; feeds of each subscription."""

    def __init__(self, services: NodeServices) -> None:
        self.services = services
        self.queries: dict[str, NamedQuery] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.lock = threading.Lock()
        self.path = Path(str(services.node.store_path) + ".epcis-queries.json")
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            for q in raw.get("queries", []):
                subs = {s["subscription_id"]: Subscription(**s) for s in q.pop("subscriptions", [])}
                self.queries[q["name"]] = NamedQuery(**q, subscriptions=subs)
        except (ValueError, KeyError, TypeError) as exc:  # a damaged file: start empty, keep it for a look
            log.error("named queries in %s are unreadable (%s); starting without them", self.path, exc)
            self.path.rename(self.path.with_suffix(".damaged"))
            self.queries = {}

    def save(self) -> None:
        body = {"queries": [{**{k: v for k, v in asdict(q).items() if k != "subscriptions"},
                             "subscriptions": [asdict(s) for s in q.subscriptions.values() if s.dest is not None]}
                            for q in self.queries.values()]}  # fmt: skip
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(body), encoding="utf-8")
        os.replace(tmp, self.path)

    def get(self, name: str) -> NamedQuery:
        q = self.queries.get(name)
        if q is None:
            raise LiangcaoError(Code.NOT_FOUND, f"no named query {name!r}")
        return q

    def compiled(self, name: str) -> tq.Query:
        return tq.parse_definition(self.get(name).query)

    def start_all(self) -> None:
        for q in self.queries.values():
            for s in q.subscriptions.values():
                if s.dest is not None:
                    self.start(s)

    def start(self, sub: Subscription) -> None:
        if sub.subscription_id not in self.tasks:
            task = asyncio.get_running_loop().create_task(self._webhook(sub))
            self.tasks[sub.subscription_id] = task
            task.add_done_callback(lambda _t: self.tasks.pop(sub.subscription_id, None))

    def stop(self, subscription_id: str) -> None:
        task = self.tasks.pop(subscription_id, None)
        if task is not None:
            task.cancel()

    # ---- feeds ------------------------------------------------------------------------------------------------
    def start_height(self, position: str, initial_ms: int | None) -> tuple[int, tuple[int, int, int] | None]:
        """Where a feed starts: after its position, from genesis for an initial record time, else the head."""
        if position:
            h, i, s = (int(x) for x in position.split("-"))
            return h, (h, i, s)
        if initial_ms is not None:
            return 0, None
        return self.services.node.reader().height() + 1, None

    async def feed(self, sub: Subscription, void: Any, exp_ms: int) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
        """(position, matching records) per committed capture, from the subscription's position on."""
        query = self.compiled(sub.query_name)
        start, skip = self.start_height(sub.position, sub.initial_record_ms)
        items = open_stream(self.services.node, self.services.hub, start=start, skip_upto=skip, contract="trace",
                            name="captured", blocks=False, follow=True, token_void=void, token_exp_ms=exp_ms)  # fmt: skip
        async for kind, position, data in items:
            if kind == "end":
                return
            records = await asyncio.to_thread(self._matching, query, data.get("data", data), sub.initial_record_ms)
            yield position, records

    def _matching(self, query: tq.Query, data: dict[str, Any], initial_ms: int | None) -> list[dict[str, Any]]:
        store = self.services.trace_view()
        out = []
        for hash_id in data.get("ids") or []:
            raw = store.get(f"{tq.PREFIX}e/{hash_id[len('ni:///sha-256;') :][:64]}")
            if raw is None:
                continue
            record = msgspec.json.decode(raw)
            if initial_ms is not None and int(record["record_ms"]) < initial_ms:
                continue
            if tq.matches(query, record, store):
                out.append(record)
        return out

    def document(self, sub: Subscription, records: list[dict[str, Any]], position: str) -> dict[str, Any]:
        doc = tq.query_document(records, self.services.now_ms(), sub.query_name, sub.subscription_id)
        doc["@context"] = [*doc["@context"], {"liangcao": LIANGCAO_NS}]
        doc[POSITION] = position
        return doc

    async def _webhook(self, sub: Subscription) -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            if sub.schedule is not None:

                async def post(doc: dict[str, Any]) -> None:
                    await self._post(sub, http, doc)

                await self.scheduled(sub, post, lambda: None, 1 << 62)
                return
            async for position, records in self.feed(sub, lambda: None, 1 << 62):
                if records:
                    await self._post(sub, http, self.document(sub, records, position))
                sub.position = position
                with self.lock:
                    self.save()

    async def scheduled(self, sub: Subscription, send: Any, void: Any, exp_ms: int) -> None:
        """A scheduled subscription: what the feed brings is kept until the schedule's next second, then sent
        as one document (``send``: a webhook's POST or a WebSocket's message)."""
        pending: list[dict[str, Any]] = []
        last = ""
        feed = self.feed(sub, void, exp_ms)
        getter: asyncio.Task[Any] | None = None
        try:
            while True:
                if getter is None:
                    getter = asyncio.ensure_future(anext(feed))
                done, _ = await asyncio.wait({getter}, timeout=max(0.05, 1 - time.time() % 1))
                if done:
                    try:
                        position, records = getter.result()
                    except StopAsyncIteration:  # the feed ended (its token no longer holds)
                        return
                    getter = None
                    pending += records
                    last = position
                    continue
                now_s = int(time.time())
                if schedule_due(sub.schedule or {}, now_s) and (pending or sub.report_if_empty):
                    await send(self.document(sub, pending, last or sub.position))
                    pending = []
                    if last:
                        sub.position = last
                    with self.lock:
                        self.save()
                    await asyncio.sleep(1.0)
        finally:
            if getter is not None:
                getter.cancel()

    async def _post(self, sub: Subscription, http: httpx.AsyncClient, doc: dict[str, Any]) -> None:
        """Deliver until the subscriber answers 2xx (backing off): its position only moves past a delivery."""
        body = _encode(doc)
        headers = {"Content-Type": "application/json", "GS1-EPCIS-Version": "2.0.0"}
        if sub.signature_token:
            digest = hmac.new(sub.signature_token.encode(), body, hashlib.sha256).hexdigest()
            headers["GS1-Signature"] = f"sha256={digest}"
        wait_s = 0.2
        while True:
            try:
                r = await http.post(str(sub.dest), content=body, headers=headers)
                if 200 <= r.status_code < 300:
                    sub.last_notified_ms = self.services.now_ms()
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(wait_s)
            wait_s = min(webhook_retry_s_max, wait_s * 2)


def registry(request: Request | WebSocket) -> Registry:
    """The app's registry (made on first use, its webhooks started on the event loop)."""
    state = request.app.state
    reg: Registry | None = getattr(state, "epcis_queries", None)
    if reg is None:
        reg = Registry(state.services)
        state.epcis_queries = reg
        reg.start_all()
    return reg


async def _json_body(request: Request) -> Any:
    raw = await read_body(request, limits.tx_bytes_max)
    try:
        return msgspec.json.decode(raw or b"null")
    except msgspec.DecodeError as exc:
        raise LiangcaoError(Code.BAD_ENCODING, f"the body is not JSON: {exc}") from exc


# ---- routes -------------------------------------------------------------------------------------------------
for _p, _allow in (("queries", "GET, POST, OPTIONS"), ("queries/{name}", "GET, DELETE, OPTIONS"),
                   ("queries/{name}/events", "GET, OPTIONS"), ("queries/{name}/subscriptions", "GET, POST, OPTIONS"),
                   ("queries/{name}/subscriptions/{sid}", "GET, DELETE, OPTIONS")):  # fmt: skip

    def _opt(path: str, allow: str) -> None:
        @router.options(path, include_in_schema=False)
        def discovery() -> Response:
            return options(allow)

    _opt(f"{BASE}/{_p}", _allow)


@router.get(f"{BASE}/queries", responses=ERRORS, tags=["epcis"], summary="The named queries (paged)")
def list_queries(request: Request, member: Reader) -> Response:
    reg = registry(request)
    return paged(request, [{"name": q.name, "query": q.query} for q in reg.queries.values()])


@router.post(
    f"{BASE}/queries",
    status_code=201,
    responses={**ERRORS, 409: {"model": ErrorBody, "description": "the name is taken"}},
    tags=["epcis"],
    summary="Create a named query",
)
async def create_query(request: Request, member: Reader) -> Response:
    reg = registry(request)
    body = await _json_body(request)
    if not isinstance(body, dict) or set(body) - {"name", "query"} or "name" not in body or "query" not in body:
        raise LiangcaoError(Code.INVALID_ARGUMENT, 'a named query is {"name": ..., "query": {...}}')
    name = body["name"]
    if not isinstance(name, str) or not tq.QUERY_NAME.fullmatch(name):
        raise LiangcaoError(Code.INVALID_ARGUMENT, "name: letters, digits, '_', '.', '-' (at most 100)")
    tq.parse_definition(body["query"])  # a bad definition is refused now, with the parameter named
    with reg.lock:
        if name in reg.queries:
            raise ApiError(409, Code.ALREADY_EXISTS, f"a named query {name!r} exists")
        if len(reg.queries) >= queries_max:
            raise LiangcaoError(Code.LIMIT_EXCEEDED, f"this node keeps at most {queries_max} named queries")
        reg.queries[name] = NamedQuery(name, body["query"], member, request.app.state.services.now_ms())
        reg.save()
    return json_response({"name": name, "query": body["query"]}, 201, {"Location": f"{BASE}/queries/{quote(name)}"})


@router.get(f"{BASE}/queries/{{name}}", responses=ERRORS, tags=["epcis"], summary="A named query's definition")
def get_query(name: str, request: Request, member: Reader) -> Response:
    q = registry(request).get(name)
    return json_response({"name": q.name, "query": q.query})


@router.delete(f"{BASE}/queries/{{name}}", status_code=204, responses=ERRORS, tags=["epcis"],
               summary="Delete a named query and end its subscriptions")  # fmt: skip
def delete_query(name: str, request: Request, member: Reader) -> Response:
    reg = registry(request)
    q = reg.get(name)
    if q.member.partition("/")[0] != member.partition("/")[0]:
        raise LiangcaoError(Code.FORBIDDEN, f"{name!r} belongs to {q.member.partition('/')[0]}")
    with reg.lock:
        for sid in list(q.subscriptions):
            reg.stop(sid)
        del reg.queries[name]
        reg.save()
    return Response(status_code=204)


@router.get(f"{BASE}/queries/{{name}}/events", responses=ERRORS, tags=["epcis"], summary="Run a named query")
def run_query(name: str, request: Request, services: Services, member: Reader) -> Response:
    reg = registry(request)
    params, context = tq.definition_params(reg.get(name).query)
    if context is not None:  # the definition's own prefixes: parse with them
        extra = [(k, v) for k, v in request.query_params.multi_items() if k in ("perPage", "nextPageToken")]
        query = tq.parse(params + extra, context)
        page = tq.run(services.trace_view(), query)
        return json_response(tq.query_document(page.records, services.now_ms(), name))
    for k in request.query_params:
        if k not in ("perPage", "nextPageToken", "access_token"):
            raise LiangcaoError(Code.INVALID_ARGUMENT, f"{k}: a named query takes only perPage and nextPageToken")
    response = events_page(request, services, params)
    doc = msgspec.json.decode(response.body)
    doc["epcisBody"]["queryResults"]["queryName"] = name
    return json_response(doc, headers={k: v for k, v in response.headers.items() if k.lower() == "link"})


def _subscription_args(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise LiangcaoError(Code.INVALID_ARGUMENT, "a subscription is a JSON object")
    allowed = {"dest", "signatureToken", "stream", "schedule", "reportIfEmpty", "initialRecordTime"}
    if set(body) - allowed:
        raise LiangcaoError(Code.INVALID_ARGUMENT, f"unknown fields {sorted(set(body) - allowed)}")
    stream, schedule = body.get("stream") is True, body.get("schedule")
    if stream == (schedule is not None):
        raise LiangcaoError(Code.INVALID_ARGUMENT, "a subscription needs stream: true or a schedule (not both)")
    dest = body.get("dest")
    if not isinstance(dest, str) or urlsplit(dest).scheme not in ("http", "https") or not urlsplit(dest).netloc:
        raise LiangcaoError(Code.INVALID_ARGUMENT, "dest must be an http(s) URL")
    token = body.get("signatureToken", "")
    if not isinstance(token, str) or len(token) > 512:
        raise LiangcaoError(Code.INVALID_ARGUMENT, "signatureToken is a string of at most 512 characters")
    initial = body.get("initialRecordTime")
    return {
        "dest": dest,
        "signature_token": token,
        "stream": stream,
        "schedule": check_schedule(schedule) if schedule is not None else None,
        "report_if_empty": body.get("reportIfEmpty") is True,
        "initial_record_ms": tq._time_param("initialRecordTime", initial) if initial is not None else None,
    }


@router.get(f"{BASE}/queries/{{name}}/subscriptions", responses=ERRORS, tags=["epcis"], summary="Subscriptions")
def list_subscriptions(name: str, request: Request, member: Reader) -> Response:
    q = registry(request).get(name)
    return paged(request, [s.public() for s in q.subscriptions.values()])


@router.post(f"{BASE}/queries/{{name}}/subscriptions", status_code=201, responses=ERRORS, tags=["epcis"],
             summary="Subscribe a webhook to a named query")  # fmt: skip
async def subscribe(name: str, request: Request, member: Writer) -> Response:
    reg = registry(request)
    q = reg.get(name)
    args = _subscription_args(await _json_body(request))
    with reg.lock:
        if sum(len(x.subscriptions) for x in reg.queries.values()) >= subscriptions_max:
            raise LiangcaoError(Code.LIMIT_EXCEEDED, f"this node keeps at most {subscriptions_max} subscriptions")
        sub = Subscription(os.urandom(16).hex(), name, member, request.app.state.services.now_ms(), **args)
        sub.position = "" if sub.initial_record_ms is not None else _head_position(reg)
        q.subscriptions[sub.subscription_id] = sub
        reg.save()
    reg.start(sub)
    location = f"{BASE}/queries/{quote(name)}/subscriptions/{sub.subscription_id}"
    return json_response(sub.public(), 201, {"Location": location})


def _head_position(reg: Registry) -> str:
    """The position just past everything committed now: a new subscription hears only what comes next."""
    return f"{reg.services.node.reader().height()}-{1 << 30}-0"


@router.get(
    f"{BASE}/queries/{{name}}/subscriptions/{{sid}}", responses=ERRORS, tags=["epcis"], summary="A subscription"
)
def get_subscription(name: str, sid: str, request: Request, member: Reader) -> Response:
    sub = registry(request).get(name).subscriptions.get(sid)
    if sub is None:
        raise LiangcaoError(Code.NOT_FOUND, f"no subscription {sid} of {name!r}")
    return json_response(sub.public())


@router.delete(f"{BASE}/queries/{{name}}/subscriptions/{{sid}}", status_code=204, responses=ERRORS, tags=["epcis"],
               summary="Unsubscribe")  # fmt: skip
def unsubscribe(name: str, sid: str, request: Request, member: Reader) -> Response:
    reg = registry(request)
    q = reg.get(name)
    sub = q.subscriptions.get(sid)
    if sub is None or sub.member.partition("/")[0] != member.partition("/")[0]:
        raise LiangcaoError(Code.NOT_FOUND, f"no subscription {sid} of {name!r}")
    with reg.lock:
        reg.stop(sid)
        del q.subscriptions[sid]
        reg.save()
    return Response(status_code=204)


@router.websocket(f"{BASE}/queries/{{name}}/events")
async def websocket_subscription(websocket: WebSocket, name: str) -> None:
    """A WebSocket subscription: ``stream=true`` (or a schedule via ``GS1-Query-*``/plain fields) and
    ``resume=<position>`` to go on after the last document received."""
    auth = get_auth(websocket)  # type: ignore[arg-type]
    header = websocket.headers.get("authorization", "")
    token = header[7:] if header.lower().startswith("bearer ") else websocket.query_params.get("access_token", "")
    try:
        grant = auth.check(token)
        reg = registry(websocket)
        reg.get(name)
        params = websocket.query_params
        resume = params.get("resume", "")
        if resume and not re.fullmatch(r"[0-9]{1,12}-[0-9]{1,10}-[0-9]{1,6}", resume, re.ASCII):
            raise LiangcaoError(Code.INVALID_ARGUMENT, "resume is the liangcao:position of a document received")
        stream = (params.get("stream") or params.get("GS1-Query-Stream") or "").lower() == "true"
        schedule = {f: params.get(f) or params.get(f"GS1-Query-{f[0].upper()}{f[1:]}") for f in _SCHEDULE_FIELDS}
        schedule = {k: v for k, v in schedule.items() if v}
        if stream == bool(schedule):
            raise LiangcaoError(Code.INVALID_ARGUMENT, "subscribe with stream=true or a schedule (not both)")
        initial = params.get("initialRecordTime") or params.get("GS1-Query-InitialRecordTime")
        sub = Subscription(os.urandom(16).hex(), name, grant.member, reg.services.now_ms(), stream=stream,
                           schedule=check_schedule(schedule) if schedule else None,
                           report_if_empty=(params.get("reportIfEmpty") or "").lower() == "true",
                           initial_record_ms=tq._time_param("initialRecordTime", initial) if initial else None)  # fmt: skip
        sub.position = resume or ("" if sub.initial_record_ms is not None else _head_position(reg))
    except LiangcaoError as exc:
        await websocket.close(code=1008, reason=f"{exc.code}: {exc.message}"[:120])
        return
    await websocket.accept()
    void = lambda: auth.still_valid(grant)  # noqa: E731 - the stream asks as it goes
    try:
        if sub.schedule is not None:

            async def send(doc: dict[str, Any]) -> None:
                await websocket.send_text(_encode(doc).decode())

            await reg.scheduled(sub, send, void, grant.exp)
            return
        async for position, records in reg.feed(sub, void, grant.exp):
            if records or sub.report_if_empty:
                await websocket.send_text(_encode(reg.document(sub, records, position)).decode())
            sub.position = position
        await websocket.close(code=1000, reason="the token that opened the subscription is no longer valid")
    except (WebSocketDisconnect, RuntimeError):
        return
    finally:
        with contextlib.suppress(Exception):
            await websocket.close()
