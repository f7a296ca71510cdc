"""The EPCIS 2.0 REST binding of a node (``/epcis/v2``), and an item's provenance under ``/v1/trace``.

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

from typing import Any
from urllib.parse import quote, urlencode

import msgspec
from fastapi import APIRouter, Request
from fastapi.responses import Response

from liangcao import limits
from liangcao.api.deps import Reader, Services, Writer, read_body
from liangcao.api.errors import ERRORS
from liangcao.node.capture import Job
from liangcao.node.services import NodeServices
from liangcao.trace import query as tq

_json = msgspec.json.Encoder(decimal_format="number")
HEADERS = {"GS1-EPCIS-Version": "2.0.0", "GS1-CBV-Version": "2.0.0", "GS1-EPCIS-Min": "2.0.0", "GS1-EPCIS-Max": "2.0.0"}
CAPTURE_HEADERS = {
    **HEADERS,
    "GS1-EPCIS-Capture-Limit": str(limits.capture_events_max),
    "GS1-EPCIS-Capture-File-Size-Limit": str(limits.capture_document_bytes_max),
}

router = APIRouter()


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """JSON with decimals as numbers (an event's 0.1 stays 0.1, never a binary float)."""
    return Response(_json.encode(body), status_code=status, media_type="application/json", headers=headers)


async def _start_capture(request: Request, services: NodeServices, member: str, single: bool) -> Job:
    captures = services.captures
    # Header and custody first: a refused capture never reads (nor buffers) the document.
    behaviour = captures.behaviour(request.headers.get("GS1-Capture-Error-Behaviour", "rollback"))
    signer = captures.signer(member)
    data = await read_body(request, limits.capture_document_bytes_max)
    return await captures.start(member, behaviour, signer, data, single=single)


# ---- EPCIS 2.0 ------------------------------------------------------------------------------------------
@router.post(
    "/epcis/v2/capture", status_code=202, responses=ERRORS, tags=["epcis"], summary="Capture an EPCIS 2.0 document"
)
async def capture_document(request: Request, services: Services, member: Writer) -> Response:
    job = await _start_capture(request, services, member, single=False)
    headers = {**CAPTURE_HEADERS, "Location": f"/epcis/v2/capture/{job.capture_id}"}
    return json_response(job.to_dict(), 202, headers)


@router.get("/epcis/v2/capture", responses=ERRORS, tags=["epcis"], summary="Capture jobs, newest first")
def list_jobs(services: Services, member: Reader) -> Response:
    mine = [j.to_dict() for j in services.captures.of(member)[: limits.query_per_page_max]]
    return json_response(mine, headers=CAPTURE_HEADERS)


@router.get(
    "/epcis/v2/capture/{capture_id}", responses=ERRORS, tags=["epcis"], summary="One capture job and its outcome"
)
def get_job(capture_id: str, services: Services, member: Reader) -> Response:
    return json_response(services.captures.get(member, capture_id).to_dict(), headers=CAPTURE_HEADERS)


@router.post(
    "/epcis/v2/events",
    status_code=201,
    responses=ERRORS,
    tags=["epcis"],
    summary="Capture one event (waits for commit)",
)
async def capture_event(request: Request, services: Services, member: Writer) -> Response:
    job = await _start_capture(request, services, member, single=True)
    await services.captures.wait(job, limits.wait_ms_max / 1000)
    location = f"/epcis/v2/capture/{job.capture_id}"
    if job.running:
        return json_response(job.to_dict(), 202, {**HEADERS, "Location": location})
    if not job.success:
        status = int(job.errors[0]["status"]) if job.errors else 500
        return json_response(job.errors[0] if job.errors else job.to_dict(), status, HEADERS)
    event_id = (job.captured or job.duplicates)[0]
    location = f"/epcis/v2/events/{quote(event_id, safe='')}"
    return json_response(job.to_dict(), 201, {**HEADERS, "Location": location})


@router.get("/epcis/v2/events", responses=ERRORS, tags=["epcis"], summary="Query events (EPCIS query parameters)")
def query_events(request: Request, services: Services, member: Reader) -> Response:
    page = services.events(list(request.query_params.multi_items()))
    headers = dict(HEADERS)
    if page.next_token is not None:
        params = [(k, v) for k, v in request.query_params.multi_items() if k != "nextPageToken"]
        params.append(("nextPageToken", page.next_token))
        headers["Link"] = f'</epcis/v2/events?{urlencode(params)}>; rel="next"'
    return json_response(tq.query_document(page.records, services.now_ms()), headers=headers)


@router.get("/epcis/v2/events/{event_id:path}", responses=ERRORS, tags=["epcis"], summary="One event by its id")
def get_event(event_id: str, services: Services, member: Reader) -> Response:
    return json_response(services.event(event_id), headers=HEADERS)


@router.get("/epcis/v2/eventTypes", responses=ERRORS, tags=["epcis"], summary="The event types this repository holds")
def event_types(member: Reader) -> Response:
    from liangcao.trace.facts import EVENT_TYPES

    return json_response({"eventTypes": list(EVENT_TYPES)}, headers=HEADERS)


for _path in ("/epcis/v2/capture", "/epcis/v2/events"):

    @router.options(_path, include_in_schema=False)
    def options() -> Response:
        """The REST binding's discovery: methods, versions and capture limits."""
        return Response(status_code=204, headers={**CAPTURE_HEADERS, "Allow": "GET, POST, OPTIONS"})


# ---- provenance ---------------------------------------------------------------------------------------
@router.get(
    "/v1/trace/provenance", responses=ERRORS, tags=["trace"], summary="An item's history through packing and making"
)
def get_provenance(id: str, services: Services, member: Reader) -> Response:
    return json_response(services.provenance(id))
