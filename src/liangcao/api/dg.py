"""``/v1/dg``: a dangerous-goods declaration's envelope, served only to the organisations party to it.

The content is sealed (``liangcao.shipping.declaration``): even a member who reads the raw state sees only
ciphertext and the wraps of its data key. These routes add the rule a user expects from the API itself
(``NodeServices.declaration``): the shipper and the carrier see their declaration, a terminal sees a version
once it holds a wrap for it (after the carrier's approval), and everyone else gets 403.

A declaration's id is ``<shipper org>/<name>``, so its paths are ``/v1/dg/{shipper}/{name}``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Path, Query

from liangcao.api.deps import Reader, Services
from liangcao.api.errors import ERRORS

ORG = r"^[a-z0-9][a-z0-9_-]{0,31}$"
NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"

router = APIRouter(tags=["dg"])


@router.get("/v1/dg/{shipper}/{name}", responses=ERRORS, summary="A declaration version's sealed envelope")
async def get_declaration(
    services: Services,
    member: Reader,
    shipper: str = Path(pattern=ORG),
    name: str = Path(pattern=NAME),
    version: int = Query(0, ge=0, le=999_999, description="0: the latest"),
) -> Any:
    return await asyncio.to_thread(services.declaration, member, f"{shipper}/{name}", version)


@router.get("/v1/dg/{shipper}/{name}/versions", responses=ERRORS, summary="A declaration's version history")
async def get_versions(
    services: Services, member: Reader, shipper: str = Path(pattern=ORG), name: str = Path(pattern=NAME)
) -> Any:
    return await asyncio.to_thread(services.declaration_versions, member, f"{shipper}/{name}")
