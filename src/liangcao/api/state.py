"""``/v1/state``: the world state under a key prefix, and one key with its history (read tokens)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Query

from liangcao import limits
from liangcao.api.deps import Reader, Services
from liangcao.api.errors import ERRORS

router = APIRouter()


@router.get("/v1/state", responses=ERRORS, summary="State entries under a key prefix, in key order")
def list_state(
    services: Services,
    member: Reader,
    prefix: str = Query("", max_length=limits.key_bytes_max),
    limit: int = Query(100, ge=1, le=limits.page_state_max),
) -> dict[str, Any]:
    return {"entries": services.state(prefix, limit)}


@router.get("/v1/state/{key:path}", responses=ERRORS, summary="One state value and its recent history")
def get_state(
    services: Services,
    member: Reader,
    key: str = Path(max_length=limits.key_bytes_max),
    history: int = Query(0, ge=0, le=100),
) -> dict[str, Any]:
    return services.value(key, history)
