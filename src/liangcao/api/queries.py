"""``/v1/query/{contract}/{method}``: a contract's ``@query`` run on the committed head (read tokens)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Path, Request

from liangcao import encoding, limits
from liangcao.api.deps import Reader, Services, read_body
from liangcao.api.errors import ERRORS, ApiError
from liangcao.codes import Code

router = APIRouter()


@router.post(
    "/v1/query/{contract}/{method}",
    responses=ERRORS,
    openapi_extra={"requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}}},
    summary="Run a contract's query on the committed state",
)
async def run_query(
    request: Request,
    services: Services,
    member: Reader,
    contract: str = Path(max_length=limits.contract_name_chars_max),
    method: str = Path(max_length=limits.method_name_chars_max),
) -> Any:
    raw = await read_body(request, limits.tx_bytes_max)
    args = encoding.decode(raw or b"{}")
    if not isinstance(args, dict):
        raise ApiError(400, Code.INVALID_ARGUMENT, "query arguments must be a JSON object")
    # Off the event loop: a query reads the store and runs contract code.
    return {"result": await asyncio.to_thread(services.query, contract, method, args)}
