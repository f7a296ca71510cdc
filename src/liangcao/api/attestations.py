"""``/v1/attestations``: the peers' signed statements of a block, and another organisation's peer attesting
one of this node's blocks (``liangcao.witness``; the rule is ``NodeServices.accept_attestation``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Request
from starlette.concurrency import run_in_threadpool

from liangcao import encoding, limits
from liangcao.api.deps import Reader, Services, read_body
from liangcao.api.errors import ERRORS

# A posted attestation's body: room beside limits.attestation_bytes_max for a client's JSON whitespace.
attestation_body_bytes_max = 16_384

router = APIRouter()


@router.get("/v1/attestations/{height}", responses=ERRORS, summary="Attestations of a block, by member")
def get_attestations(services: Services, member: Reader, height: int = Path(ge=0, le=limits.int_max)) -> dict[str, Any]:
    return {"height": height, "attestations": services.attestations(height)}


@router.post("/v1/attestations", responses=ERRORS, summary="Another organisation's peer attests a block")
async def post_attestation(request: Request, services: Services, member: Reader) -> dict[str, Any]:
    # The attestation authenticates itself; the token only says who may post.
    att = encoding.decode(await read_body(request, attestation_body_bytes_max))
    result: dict[str, Any] = await run_in_threadpool(services.accept_attestation, att)
    return result
