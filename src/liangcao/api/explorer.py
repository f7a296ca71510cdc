"""The explorer: a page the node serves at ``/explorer`` (no CDN, no internet).

The page itself is static (``liangcao/web/explorer.*``, shipped in the package) and reads the same API as
everyone else with the viewer's bearer token; the live view follows ``/v1/events`` (server-sent events).
The one thing the page cannot derive in a browser without an X.509 parser is who signed a transaction and
which organisations attested its block, so ``/v1/txs/{id}`` carries that (``liangcao.node.services.finality``).
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Response

ASSETS = {"explorer.js": "text/javascript; charset=utf-8", "explorer.css": "text/css; charset=utf-8"}

router = APIRouter(include_in_schema=False)


def _asset(name: str) -> bytes:
    return resources.files("liangcao.web").joinpath(name).read_bytes()


@router.get("/explorer")
def explorer_page() -> Response:
    return Response(
        _asset("explorer.html"), media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-store"}
    )


@router.get("/explorer/{name}")
def explorer_asset(name: str) -> Response:
    if name not in ASSETS:
        return Response(status_code=404)
    return Response(_asset(name), media_type=ASSETS[name])
