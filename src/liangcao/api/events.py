"""``/v1/events``: committed contract events and blocks as server-sent events, resumable, ending with the
token that opened the stream (the stream itself: ``liangcao.node.events``).

Each ``contract`` message has id ``H-I-S`` (height, transaction index, event sequence) and each ``block``
message id ``H``; a client resumes exactly after what it saw by sending the last id as ``Last-Event-ID``.
The last message of a stream whose token expired or was revoked, or whose node is shutting down, is ``end``
(no id, so a resume starts where the last real message was; code 501 UNAUTHORIZED or 502 NOT_READY).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import msgspec
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from liangcao import limits
from liangcao.api.deps import Services, get_auth, reader_grant
from liangcao.api.errors import ERRORS, ApiError
from liangcao.codes import Code
from liangcao.node.events import SHUTTING_DOWN, StreamItem
from liangcao.tokens import Grant

router = APIRouter()


def sse(event: str, ident: str, data: Any) -> bytes:
    return f"event: {event}\nid: {ident}\ndata: {msgspec.json.encode(data).decode()}\n\n".encode()


def sse_end(why: str) -> bytes:
    """The last message of a stream whose token no longer holds, or whose node is shutting down (no id: a
    resume starts where the last one was)."""
    code = Code.NOT_READY if why == SHUTTING_DOWN else Code.UNAUTHORIZED
    data = {"code": int(code), "message": why}
    return f"event: end\ndata: {msgspec.json.encode(data).decode()}\n\n".encode()


async def _messages(items: AsyncGenerator[StreamItem, None]) -> AsyncIterator[bytes]:
    # aclosing: when the client goes away, the stream's own cleanup (unsubscribing) runs at once, not at
    # garbage collection.
    async with contextlib.aclosing(items) as stream:
        async for kind, ident, data in stream:
            yield sse_end(data) if kind == "end" else sse(kind, ident, data)


@router.get(
    "/v1/events",
    responses={**ERRORS, 200: {"content": {"text/event-stream": {}}, "description": "server-sent events"}},
    response_class=StreamingResponse,
    summary="Committed events as server-sent events, resumable from a height or Last-Event-ID",
)
async def events(
    request: Request,
    services: Services,
    from_height: int = Query(0, ge=0, le=limits.int_max),
    contract: str | None = Query(None, max_length=limits.contract_name_chars_max),
    name: str | None = Query(None, max_length=64),
    blocks: bool = Query(True, description="also send a 'block' message per committed block"),
    follow: bool = Query(True, description="keep the stream open for new blocks"),
    grant: Grant = Depends(reader_grant),  # noqa: B008
) -> StreamingResponse:
    last = request.headers.get("last-event-id")
    start = from_height
    skip_upto: tuple[int, int, int] | None = None
    if last:
        m = re.fullmatch(r"(\d+)(?:-(\d+)-(\d+))?", last.strip())
        if m is None:
            raise ApiError(400, Code.INVALID_ARGUMENT, "Last-Event-ID must look like H or H-I-S")
        start = int(m.group(1))
        skip_upto = (start, int(m.group(2) or 1 << 62), int(m.group(3) or 0))
    auth = get_auth(request)
    items = services.stream(
        start=start,
        skip_upto=skip_upto,
        contract=contract,
        name=name,
        blocks=blocks,
        follow=follow,
        token_void=lambda: auth.still_valid(grant),
        token_exp_ms=grant.exp,
    )
    return StreamingResponse(
        _messages(items),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
