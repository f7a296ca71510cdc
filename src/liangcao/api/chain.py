"""``/v1/head`` and ``/v1/blocks``: the chain's headers and whole blocks (read tokens)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Query

from liangcao import limits
from liangcao.api.deps import Reader, Services
from liangcao.api.errors import ERRORS

router = APIRouter()


@router.get("/v1/head", responses=ERRORS, summary="The latest block header")
def get_head(services: Services, member: Reader) -> dict[str, Any]:
    return services.head_header()


@router.get("/v1/blocks", responses=ERRORS, summary="Block headers, newest first")
def list_blocks(
    services: Services,
    member: Reader,
    before: int | None = Query(None, ge=0, le=limits.int_max, description="only blocks below this height"),
    limit: int = Query(20, ge=1, le=limits.page_blocks_max),
) -> dict[str, Any]:
    return {"blocks": services.headers(before, limit)}


@router.get(
    "/v1/blocks/{height}",
    responses=ERRORS,
    summary="A whole block: header, seal, transactions, receipts, attestations",
)
def get_block(services: Services, member: Reader, height: int = Path(ge=0, le=limits.int_max)) -> dict[str, Any]:
    return services.block(height)


@router.get("/v1/blocks/{height}/header", responses=ERRORS, summary="A block header")
def get_header(services: Services, member: Reader, height: int = Path(ge=0, le=limits.int_max)) -> dict[str, Any]:
    return services.header(height)
