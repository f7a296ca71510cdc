"""The EPCIS 2.0 REST binding of a node (``/epcis/v2``), and an item's provenance under ``/v1/trace``.

Every operation of GS1's binding (``openapi.yaml``) that fits a ledger is here: discovery (``OPTIONS`` on
every path, ``GET /``), capture (``/capture``, capture jobs with paging), events (``/events``, one event by its
id), the top-level resources (``/eventTypes``, ``/epcs``, ``/bizSteps``, ``/bizLocations``, ``/readPoints``,
``/dispositions``, each with its ``/events``), named queries with their subscriptions
(``liangcao.api.epcis_queries``) and ``DELETE /nextPageToken/{token}``. Every answer, errors included, carries
the ``GS1-*`` version headers; errors are the node's ``{code, message, detail}`` with RFC 7807's ``type``
(``epcisException:…``), ``title`` and ``status`` beside them, so an EPCIS client and a liangcao client both
read them.

Capture (``POST /epcis/v2/capture``) validates the document at once (a document that fails the schema is
refused with 400, each problem naming the event and the field), then answers ``202`` with a capture job
(``Location: /epcis/v2/capture/{captureID}``) that signs, dry-runs and submits the ``trace.capture``
transactions and records the outcome (the jobs and the ``GS1-Capture-Error-Behaviour`` rules:
``liangcao.node.capture``).

Capture through these endpoints makes the node *sign as the caller*, so it needs two things, both off by
default: the node must have been started with custody (``node start --custody`` or ``"custody": true`` in
``node.json``: it may then use member keys from its home folder, as an organisation's own node would hold
for its staff), and the bearer token must carry the ``write`` scope (``liangcao token create --scope
write``); a read token is refused with 403 ``INSUFFICIENT_SCOPE`` and nothing is signed. Without custody
(the default) the node holds no member's key and refuses with 403 ``FORBIDDEN``: members capture with the
SDK (``Client.capture``) or ``liangcao trace capture``, which sign on their side and submit the signed
``trace.capture`` transactions to ``POST /v1/txs``.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import quote, urlencode

import msgspec
from fastapi import APIRouter, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute

from liangcao import codes, limits
from liangcao.api.deps import Reader, Services, Writer, read_body
from liangcao.api.errors import ERRORS, ErrorBody
from liangcao.codes import Code
from liangcao.errors import LiangcaoError
from liangcao.node.capture import Job
from liangcao.node.services import NodeServices
from liangcao.trace import facts as fx
from liangcao.trace import query as tq
from liangcao.trace.vocabulary import BIZ_STEPS, DISPOSITIONS

_json = msgspec.json.Encoder(decimal_format="number")
BASE = "/epcis/v2"
HEADERS = {
    "GS1-EPCIS-Version": "2.0.0",
    "GS1-CBV-Version": "2.0.0",
    "GS1-EPCIS-Min": "2.0.0",
    "GS1-EPCIS-Max": "2.0.0",
    "GS1-CBV-Min": "2.0.0",
    "GS1-CBV-Max": "2.0.0",
    "GS1-EPC-Format": "Never_Translates",
    "GS1-CBV-XML-Format": "Never_Translates",
    "GS1-Extensions": "",
    "GS1-Vendor-Version": "liangcao",
}
CAPTURE_HEADERS = {
    **HEADERS,
    "GS1-EPCIS-Capture-Limit": str(limits.capture_events_max),
    "GS1-EPCIS-Capture-File-Size-Limit": str(limits.capture_document_bytes_max),
    "GS1-Capture-Error-Behaviour": "rollback, proceed",
}
#: EPCIS exception names by HTTP status, for the RFC 7807 ``type`` of an error.
_EXCEPTIONS = {
    400: "QueryParameterException",
    401: "SecurityException",
    403: "SecurityException",
    404: "NoSuchResourceException",
    405: "ImplementationException",
    409: "ResourceAlreadyExistsException",
    413: "QueryTooLargeException",
    415: "ValidationException",
    500: "ImplementationException",
    503: "ImplementationException",
}


class EpcisRoute(APIRoute):
    """A route of the binding: the ``GS1-*`` headers on every answer, and errors with RFC 7807 fields too.

    An exception is answered here by the app's own handler for it (``liangcao.api.errors``: one translation
    for the whole API), then given the binding's headers and problem fields."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                response = await original(request)
            except Exception as exc:
                response = await _error_response(request, exc)
            for name, value in (CAPTURE_HEADERS if "/capture" in request.url.path else HEADERS).items():
                response.headers.setdefault(name, value)
            return response

        return handler


async def _error_response(request: Request, exc: Exception) -> Response:
    handlers = request.app.exception_handlers
    handler = next((handlers[t] for t in type(exc).__mro__ if t in handlers), handlers.get(Exception))
    if handler is None:  # pragma: no cover - the app installs a handler for Exception
        raise exc
    response: Response = await handler(request, exc)
    body = msgspec.json.decode(response.body) if response.body else {}
    if isinstance(body, dict) and "code" in body:
        status = response.status_code
        kind = _EXCEPTIONS.get(status, "ImplementationException")
        if body["code"] == Code.TOO_LARGE and status == 413 and "QueryTooLarge" not in str(body.get("message")):
            kind = "CaptureLimitExceededException" if "/capture" in request.url.path else kind
        body.update({"type": f"epcisException:{kind}", "title": codes.name_of(int(body["code"])), "status": status})
        # application/json, as every answer of this API is documented (the fields are RFC 7807's as well)
        out = Response(_json.encode(body), status_code=status, media_type="application/json")
        for name, value in response.headers.items():
            if name.lower() not in ("content-length", "content-type"):
                out.headers[name] = value
        return out
    return response


router = APIRouter(route_class=EpcisRoute)
plain = APIRouter()  # /v1/trace: the node's own API, not the binding


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """JSON with decimals as numbers (an event's 0.1 stays 0.1, never a binary float)."""
    return Response(_json.encode(body), status_code=status, media_type="application/json", headers=headers)


def options(allow: str) -> Response:
    """A discovery answer: what the path allows (the version headers come with every answer)."""
    return Response(status_code=204, headers={"Allow": allow})


async def _start_capture(request: Request, services: NodeServices, member: str, single: bool) -> Job:
    captures = services.captures
    # Header and custody first: a refused capture never reads (nor buffers) the document.
    behaviour = captures.behaviour(request.headers.get("GS1-Capture-Error-Behaviour", "rollback"))
    signer = captures.signer(member)
    data = await read_body(request, limits.capture_document_bytes_max)
    return await captures.start(member, behaviour, signer, data, single=single)


# ---- paging helpers ---------------------------------------------------------------------------------------------
def _offset_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"p.{offset}".encode()).decode().rstrip("=")


def _read_offset(token: str | None) -> int:
    if not token:
        return 0
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        kind, _, n = raw.partition(".")
        if kind == "p" and n.isdecimal():
            return int(n)
    except (ValueError, UnicodeDecodeError):
        pass
    raise LiangcaoError(Code.INVALID_ARGUMENT, "nextPageToken is not one this node issued")


def _per_page(request: Request, default: int = 30) -> int:
    raw = request.query_params.get("perPage")
    if raw is None:
        return default
    if not raw.isdecimal() or not 1 <= int(raw) <= limits.query_per_page_max:
        raise LiangcaoError(
            Code.INVALID_ARGUMENT,
            f"perPage must be an integer from 1 to query_per_page_max={limits.query_per_page_max}",
        )
    return int(raw)


def paged(request: Request, items: list[Any], key: str | None = None) -> Response:
    """A list answer in pages (``perPage``, ``nextPageToken``; ``Link: <…>; rel="next"`` while there is more)."""
    for name in request.query_params:
        if name not in ("perPage", "nextPageToken", "access_token"):
            raise LiangcaoError(Code.INVALID_ARGUMENT, f"{name}: unknown parameter for a list")
    start, per = _read_offset(request.query_params.get("nextPageToken")), _per_page(request)
    page = items[start : start + per]
    headers = {}
    if start + per < len(items):
        params = [("perPage", str(per)), ("nextPageToken", _offset_token(start + per))]
        headers["Link"] = f'<{request.url.path}?{urlencode(params)}>; rel="next"'
    return json_response({key: page} if key else page, headers=headers)


def events_page(request: Request, services: NodeServices, extra: list[tuple[str, str]]) -> Response:
    """An ``EPCISQueryDocument`` of the events matching the request's parameters and ``extra``."""
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "access_token"]
    page = services.events(params + extra)
    headers = {}
    if page.next_token is not None:
        again = [(k, v) for k, v in params if k != "nextPageToken"] + [("nextPageToken", page.next_token)]
        headers["Link"] = f'<{request.url.path}?{urlencode(again)}>; rel="next"'
    return json_response(tq.query_document(page.records, services.now_ms()), headers=headers)


# ---- discovery ----------------------------------------------------------------------------------------------
TOP_LEVEL = ["capture", "events", "eventTypes", "epcs", "bizSteps", "bizLocations", "readPoints", "dispositions",
             "queries"]  # fmt: skip


@router.options(f"{BASE}/", include_in_schema=False)
@router.options(BASE, include_in_schema=False)
def root_options() -> Response:
    return options("GET, OPTIONS")


@router.get(f"{BASE}/", responses=ERRORS, tags=["epcis"], summary="The repository's top-level resources")
@router.get(BASE, include_in_schema=False)
def root(member: Reader) -> Response:
    return json_response(TOP_LEVEL)


# ---- capture ----------------------------------------------------------------------------------------------------
@router.options(f"{BASE}/capture", include_in_schema=False)
def capture_options() -> Response:
    return options("GET, POST, OPTIONS")


@router.post(
    f"{BASE}/capture", status_code=202, responses=ERRORS, tags=["epcis"], summary="Capture an EPCIS 2.0 document"
)
async def capture_document(request: Request, services: Services, member: Writer) -> Response:
    job = await _start_capture(request, services, member, single=False)
    return json_response(job.to_dict(), 202, {"Location": f"{BASE}/capture/{job.capture_id}"})


@router.get(f"{BASE}/capture", responses=ERRORS, tags=["epcis"], summary="Capture jobs, newest first (paged)")
def list_jobs(request: Request, services: Services, member: Reader) -> Response:
    return paged(request, [j.to_dict() for j in services.captures.of(member)])


@router.options(f"{BASE}/capture/{{capture_id}}", include_in_schema=False)
def job_options(capture_id: str) -> Response:
    return options("GET, OPTIONS")


@router.get(f"{BASE}/capture/{{capture_id}}", responses=ERRORS, tags=["epcis"], summary="One capture job")
def get_job(capture_id: str, services: Services, member: Reader) -> Response:
    return json_response(services.captures.get(member, capture_id).to_dict())


# ---- events -----------------------------------------------------------------------------------------------------
@router.options(f"{BASE}/events", include_in_schema=False)
def events_options() -> Response:
    return options("GET, POST, OPTIONS")


#: What capturing one event may answer besides the errors every route has.
EVENT_CAPTURE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    202: {"description": "still committing: the capture job"},
    409: {"model": ErrorBody, "description": "captured before (ResourceAlreadyExistsException)"},
    500: {"model": ErrorBody, "description": "the capture job failed for a reason of this node"},
}


@router.post(
    f"{BASE}/events",
    status_code=201,
    responses=EVENT_CAPTURE_RESPONSES,
    tags=["epcis"],
    summary="Capture one event (waits for commit)",
)
async def capture_event(request: Request, services: Services, member: Writer) -> Response:
    job = await _start_capture(request, services, member, single=True)
    await services.captures.wait(job, limits.wait_ms_max / 1000)
    if job.running:
        return json_response(job.to_dict(), 202, {"Location": f"{BASE}/capture/{job.capture_id}"})
    if not job.success:
        status = int(job.errors[0]["status"]) if job.errors else 500
        return json_response(job.errors[0] if job.errors else job.to_dict(), status)
    if job.duplicates and not job.captured:
        event_id = job.duplicates[0]
        body = {"type": "epcisException:ResourceAlreadyExistsException", "title": "ALREADY_EXISTS", "status": 409,
                "code": int(Code.ALREADY_EXISTS), "message": f"the event {event_id} was captured before",
                "detail": job.to_dict()}  # fmt: skip
        location = f"{BASE}/events/{quote(event_id, safe='')}"
        return Response(_json.encode(body), 409, {"Location": location}, media_type="application/json")
    location = f"{BASE}/events/{quote(job.captured[0], safe='')}"
    return json_response(job.to_dict(), 201, {"Location": location})


@router.get(f"{BASE}/events", responses=ERRORS, tags=["epcis"], summary="Query events (EPCIS query parameters)")
def query_events(request: Request, services: Services, member: Reader) -> Response:
    return events_page(request, services, [])


@router.options(f"{BASE}/events/{{event_id:path}}", include_in_schema=False)
def event_options(event_id: str) -> Response:
    return options("GET, OPTIONS")


@router.get(f"{BASE}/events/{{event_id:path}}", responses=ERRORS, tags=["epcis"], summary="One event by its id")
def get_event(event_id: str, services: Services, member: Reader) -> Response:
    return json_response(services.event(event_id))


# ---- top-level resources ------------------------------------------------------------------------------------
def _resource_options(path: str) -> None:
    @router.options(path, include_in_schema=False)
    def resource_options() -> Response:
        return options("GET, OPTIONS")


def _check_type(event_type: str) -> None:
    if event_type not in fx.EVENT_TYPES:
        raise LiangcaoError(Code.NOT_FOUND, f"no event type {event_type!r}; EPCIS 2.0 has {', '.join(fx.EVENT_TYPES)}")


for _p in ("eventTypes", "eventTypes/{event_type}", "eventTypes/{event_type}/events", "epcs", "epcs/{epc:path}",
           "bizSteps", "bizSteps/{biz_step:path}", "bizLocations", "bizLocations/{place:path}", "readPoints",
           "readPoints/{place:path}", "dispositions", "dispositions/{disposition:path}", "epcs/{epc:path}/events",
           "bizSteps/{biz_step:path}/events", "bizLocations/{place:path}/events", "readPoints/{place:path}/events",
           "dispositions/{disposition:path}/events"):  # fmt: skip
    _resource_options(f"{BASE}/{_p}")


@router.get(f"{BASE}/eventTypes", responses=ERRORS, tags=["epcis"], summary="The event types of EPCIS 2.0")
def event_types(request: Request, member: Reader) -> Response:
    return paged(request, list(fx.EVENT_TYPES))


@router.get(f"{BASE}/eventTypes/{{event_type}}", responses=ERRORS, tags=["epcis"], summary="An event type")
def event_type(event_type: str, member: Reader) -> Response:
    _check_type(event_type)
    return json_response(["events"])


@router.get(f"{BASE}/eventTypes/{{event_type}}/events", responses=ERRORS, tags=["epcis"], summary="Events of a type")
def event_type_events(event_type: str, request: Request, services: Services, member: Reader) -> Response:
    _check_type(event_type)
    return events_page(request, services, [("eventType", event_type)])


@router.get(f"{BASE}/epcs", responses=ERRORS, tags=["epcis"], summary="Identifiers the repository holds events of")
def epcs(request: Request, services: Services, member: Reader) -> Response:
    after = request.query_params.get("nextPageToken")
    items, more = _distinct(services, "i/", _read_name(after), _per_page(request), None)
    return _names_page(request, items, more)


def _read_name(token: str | None) -> str:
    if not token:
        return ""
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise LiangcaoError(Code.INVALID_ARGUMENT, "nextPageToken is not one this node issued") from exc


def _names_page(request: Request, items: list[str], more: bool) -> Response:
    for name in request.query_params:
        if name not in ("perPage", "nextPageToken", "access_token"):
            raise LiangcaoError(Code.INVALID_ARGUMENT, f"{name}: unknown parameter for a list")
    headers = {}
    if more and items:
        token = base64.urlsafe_b64encode(items[-1].encode()).decode().rstrip("=")
        params = [("perPage", request.query_params.get("perPage", "30")), ("nextPageToken", token)]
        headers["Link"] = f'<{request.url.path}?{urlencode(params)}>; rel="next"'
    return json_response([_uri(i) for i in items], headers=headers)


def _uri(index_id: str) -> str:
    """An identifier as the repository names it: a GS1 key as its canonical Digital Link URI."""
    return f"https://id.gs1.org/{index_id}" if index_id[:1].isdigit() and "/" in index_id else index_id


def _distinct(services: NodeServices, space: str, after: str, per: int, which: str | None) -> tuple[list[str], bool]:
    """Distinct identifiers of an index (``i/`` or ``l/``) after ``after``: a seek per name, never a full scan."""
    store = services.trace_view()
    prefix = tq.PREFIX + space
    out: list[str] = []
    lo = prefix + (after + " ~" if after else "")
    seeks = 0
    while len(out) <= per and seeks < per * 4 + 8:
        seeks += 1
        row = next(iter(store.scan(lo, prefix + "\U0010ffff")), None)
        if row is None:
            return out, False
        name = row[0][len(prefix) :].rsplit(" ", 2)[0]
        if which is None or _plays(store, prefix + name + " ", which):
            out.append(name)
        lo = prefix + name + " ~"
    return out[:per], len(out) > per


def _plays(store: Any, prefix: str, which: str) -> bool:
    """Whether a place index holds an entry as ``which`` (readPoint or bizLocation), looking at a few."""
    for n, (_, value) in enumerate(store.scan(prefix, prefix + "~")):
        if which in msgspec.json.decode(value).split(","):
            return True
        if n >= 64:
            return False
    return False


@router.get(f"{BASE}/epcs/{{epc:path}}/events", responses=ERRORS, tags=["epcis"], summary="Events naming an EPC")
def epc_events(epc: str, request: Request, services: Services, member: Reader) -> Response:
    return events_page(request, services, [("MATCH_anyEPC", epc)])


@router.get(f"{BASE}/epcs/{{epc:path}}", responses=ERRORS, tags=["epcis"], summary="An EPC's sub-resources")
def epc_resource(epc: str, member: Reader) -> Response:
    return json_response(["events"])


def _vocabulary(words: tuple[str, ...], request: Request) -> Response:
    return paged(request, list(words))


@router.get(f"{BASE}/bizSteps", responses=ERRORS, tags=["epcis"], summary="The CBV business steps")
def biz_steps(request: Request, member: Reader) -> Response:
    return _vocabulary(BIZ_STEPS, request)


@router.get(f"{BASE}/bizSteps/{{biz_step:path}}/events", responses=ERRORS, tags=["epcis"], summary="Events of a step")
def biz_step_events(biz_step: str, request: Request, services: Services, member: Reader) -> Response:
    return events_page(request, services, [("EQ_bizStep", biz_step)])


@router.get(f"{BASE}/bizSteps/{{biz_step:path}}", responses=ERRORS, tags=["epcis"], summary="A business step")
def biz_step(biz_step: str, member: Reader) -> Response:
    return json_response(["events"])


@router.get(f"{BASE}/dispositions", responses=ERRORS, tags=["epcis"], summary="The CBV dispositions")
def dispositions(request: Request, member: Reader) -> Response:
    return _vocabulary(DISPOSITIONS, request)


@router.get(
    f"{BASE}/dispositions/{{disposition:path}}/events",
    responses=ERRORS,
    tags=["epcis"],
    summary="Events by disposition",
)
def disposition_events(disposition: str, request: Request, services: Services, member: Reader) -> Response:
    return events_page(request, services, [("EQ_disposition", disposition)])


@router.get(f"{BASE}/dispositions/{{disposition:path}}", responses=ERRORS, tags=["epcis"], summary="A disposition")
def disposition(disposition: str, member: Reader) -> Response:
    return json_response(["events"])


for _which in ("bizLocation", "readPoint"):

    def _routes(which: str) -> None:
        plural = f"{BASE}/{which}s"

        @router.get(plural, responses=ERRORS, tags=["epcis"], summary=f"The {which}s of anchored events")
        def places(request: Request, services: Services, member: Reader) -> Response:
            after = _read_name(request.query_params.get("nextPageToken"))
            items, more = _distinct(services, "l/", after, _per_page(request), which)
            return _names_page(request, items, more)

        @router.get(f"{plural}/{{place:path}}/events", responses=ERRORS, tags=["epcis"], summary=f"Events at a {which}")
        def place_events(place: str, request: Request, services: Services, member: Reader) -> Response:
            return events_page(request, services, [(f"EQ_{which}", place)])

        @router.get(f"{plural}/{{place:path}}", responses=ERRORS, tags=["epcis"], summary=f"A {which}")
        def place(place: str, member: Reader) -> Response:
            return json_response(["events"])

    _routes(_which)


@router.delete(f"{BASE}/nextPageToken/{{token}}", status_code=204, tags=["epcis"], summary="Release a page token")
def release_token(token: str, member: Reader) -> Response:
    """Page tokens are stateless here (a position, not a cursor held open): there is nothing to release."""
    return Response(status_code=204)


# ---- provenance ---------------------------------------------------------------------------------------------
@plain.get(
    "/v1/trace/provenance", responses=ERRORS, tags=["trace"], summary="An item's history through packing and making"
)
async def get_provenance(id: str, services: Services, member: Reader) -> Response:
    return json_response(await asyncio.to_thread(services.provenance, id))
