"""``/v1/cover``: a cover policy with the facts that decided its claim and its payout; ``/explorer/cover``, its page.

The view is the ``cover`` contract's ``policy`` query on the committed head, with each fact joined to where it
lives on the ledger: a price fact to the platform's signed transaction, an EPCIS fact to the ``trace``
contract's anchor (who recorded it, in which transaction and block). The page (``liangcao/web/cover.*``)
reads this route with the viewer's bearer token, like the explorer.
"""

from __future__ import annotations

import asyncio
from importlib import resources
from typing import Any

from fastapi import APIRouter, Path, Response

from liangcao.api.deps import Reader, Services
from liangcao.api.errors import ERRORS

router = APIRouter()
POLICY_ID = r"^P[0-9a-f]{64}\.[1-9]$"
ASSETS = {"cover.js": "text/javascript; charset=utf-8"}


def _with_anchors(view: dict[str, Any]) -> dict[str, Any]:
    claim = view.get("claim") or {}
    for fact in claim.get("facts") or []:
        if fact.get("fact") == "epcis":
            hx = str(fact["event"])[len("ni:///sha-256;") :][:64]
            fact["anchor"] = {"key": f"trace/e/{hx}", "tx": fact.get("tx", "")}
        elif fact.get("fact") == "price":
            fact["anchor"] = {"tx": fact.get("tx", "")}
    view["facts"] = claim.get("facts") or []
    return view


@router.get("/v1/cover/policies/{policy}", responses=ERRORS, summary="A cover policy, its claim's facts and payout")
async def policy_view(services: Services, member: Reader, policy: str = Path(pattern=POLICY_ID)) -> Any:
    view = await asyncio.to_thread(services.query, "cover", "policy", {"policy": policy})
    return _with_anchors(dict(view))


@router.get("/explorer/cover", include_in_schema=False)
def cover_page() -> Response:
    page = resources.files("liangcao.web").joinpath("cover.html").read_bytes()
    return Response(page, media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-store"})


@router.get("/explorer/cover/{name}", include_in_schema=False)
def cover_asset(name: str) -> Response:
    if name not in ASSETS:
        return Response(status_code=404)
    return Response(resources.files("liangcao.web").joinpath(name).read_bytes(), media_type=ASSETS[name])
