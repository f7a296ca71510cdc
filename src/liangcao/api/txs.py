"""``/v1/txs`` and ``/v1/batch/txs``: submit signed transactions; read one back with its proofs and finality.

Submitting needs no token: a transaction carries the signatures of every party it binds. A transaction's
``GET`` needs a read token, and carries who signed it and which organisations attested its block.
"""

from __future__ import annotations

from typing import Any

import msgspec
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from liangcao import limits
from liangcao.api.deps import Reader, Services, read_body
from liangcao.api.errors import ERRORS, ApiError
from liangcao.codes import Code

HEX64 = r"^[0-9a-f]{64}$"

router = APIRouter()


class Submitted(BaseModel):
    tx_id: str
    status: str = Field(
        description="pending; committed when the transaction is in a block; unknown (code 505 OUTCOME_UNKNOWN) "
        "when the ordering service did not confirm in time: it may still commit, look it up by tx_id"
    )
    height: int | None = None
    index: int | None = None
    code: int | None = None
    message: str | None = None
    receipt: dict[str, Any] | None = None


class BatchItem(BaseModel):
    tx_id: str | None = None
    status: str
    code: int | None = None
    message: str | None = None


class BatchResult(BaseModel):
    results: list[BatchItem]


#: The transaction envelope as the OpenAPI document shows it (the node parses the canonical bytes itself).
TX_BODY_SCHEMA = {
    "type": "object",
    "required": ["body", "signatures"],
    "properties": {
        "body": {
            "type": "object",
            "required": ["chain_id", "contract", "method", "args", "nonce", "not_after"],
            "properties": {
                "chain_id": {"type": "string", "minLength": 1, "maxLength": limits.contract_name_chars_max},
                "contract": {"type": "string", "minLength": 1, "maxLength": limits.contract_name_chars_max},
                "method": {"type": "string", "minLength": 1, "maxLength": limits.method_name_chars_max},
                "args": {"type": "object"},
                "nonce": {"type": "string", "minLength": 1, "maxLength": limits.nonce_chars_max},
                "not_after": {"type": "integer", "minimum": 0},
            },
        },
        "signatures": {
            "type": "array",
            "minItems": 1,
            "maxItems": limits.signatures_max,
            "items": {
                "type": "object",
                "required": ["cert", "sig"],
                "properties": {"cert": {"type": "string"}, "sig": {"type": "string"}},
            },
        },
    },
}


@router.post(
    "/v1/txs",
    response_model=Submitted,
    status_code=202,
    responses={**ERRORS, 200: {"model": Submitted, "description": "committed (with wait=true)"}},
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": TX_BODY_SCHEMA}}}},
    summary="Submit a signed transaction",
)
async def submit(
    request: Request,
    services: Services,
    wait: bool = Query(False, description="wait until the transaction is committed"),
    timeout_ms: int = Query(10_000, ge=0, le=limits.wait_ms_max),
) -> Any:
    raw = await read_body(request, limits.tx_bytes_max)
    body = await services.submit(raw, wait=wait, timeout_s=timeout_ms / 1000)
    return JSONResponse(body, status_code=200 if body["status"] == "committed" else 202)


@router.post(
    "/v1/batch/txs",
    response_model=BatchResult,
    responses=ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["txs"],
                        "properties": {"txs": {"type": "array", "items": TX_BODY_SCHEMA}},
                    }
                }
            },
        }
    },
    summary="Submit many signed transactions; one result per transaction, in order",
)
async def submit_batch(request: Request, services: Services) -> Any:
    raw = await read_body(request, limits.batch_bytes_max)
    try:
        doc = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise ApiError(400, Code.BAD_ENCODING, f"body is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("txs"), list):
        raise ApiError(400, Code.MALFORMED_TX, 'body must be {"txs": [transaction, ...]}')
    if len(doc["txs"]) > limits.batch_txs_max:
        raise ApiError(413, Code.TOO_LARGE, f"more than batch_txs_max={limits.batch_txs_max} transactions")
    # Off the event loop: admission may wait on the ordering service (JetStream acknowledgements).
    return {"results": await run_in_threadpool(services.submit_batch, doc["txs"])}


@router.get("/v1/txs/{tx_id}", responses=ERRORS, summary="A transaction with its receipt, block header and proofs")
def get_tx(services: Services, member: Reader, tx_id: str = Path(pattern=HEX64)) -> dict[str, Any]:
    return services.tx(tx_id)
