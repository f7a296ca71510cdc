"""``/v1/abs``: the receivable ABS deals' investor view, and its explorer page ``/explorer/abs``.

Routes only translate HTTP to the ``abs.deal`` contract's queries on the committed head (read tokens, as
``/v1/query``): the list of deals, and one deal's terms, investor report and pool in one answer, which is
what the page shows. The page is static (``liangcao/web/abs.html`` and ``abs.js``) and reads this API with
the viewer's bearer token, as the explorer does.
"""

from __future__ import annotations

import asyncio
from importlib import resources
from typing import Any

from fastapi import APIRouter, Path, Query, Response

from liangcao.api.deps import Reader, Services
from liangcao.api.errors import ERRORS
from liangcao.contracts.index import CURSOR_PATTERN
from liangcao.node.services import NodeServices

DEAL = r"^D[0-9a-f]{64}$"

router = APIRouter(tags=["abs"])


def _view(services: NodeServices, deal: str) -> dict[str, Any]:
    args = {"deal": deal}
    return {
        "deal": services.query("abs.deal", "deal", args),
        "report": services.query("abs.deal", "investor_report", args),
        "pool": services.query("abs.deal", "pool", args)["assets"],
    }


@router.get("/v1/abs/deals", responses=ERRORS, summary="Receivable ABS deals, a page at a time")
async def list_deals(
    services: Services,
    member: Reader,
    after: str = Query("", max_length=256, pattern=CURSOR_PATTERN),
    limit: int = Query(100, ge=1, le=100),
) -> Any:
    args = {"after": after, "limit": limit}
    return await asyncio.to_thread(services.query, "abs.deal", "deals", args)


@router.get("/v1/abs/deals/{deal}", responses=ERRORS, summary="A deal: terms, investor report and pool")
async def get_deal(services: Services, member: Reader, deal: str = Path(pattern=DEAL)) -> Any:
    return await asyncio.to_thread(_view, services, deal)


def _asset(name: str) -> bytes:
    return resources.files("liangcao.web").joinpath(name).read_bytes()


@router.get("/explorer/abs", include_in_schema=False)
def abs_page() -> Response:
    return Response(_asset("abs.html"), media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-store"})


@router.get("/explorer/abs/abs.js", include_in_schema=False)
def abs_script() -> Response:
    return Response(_asset("abs.js"), media_type="text/javascript; charset=utf-8")
