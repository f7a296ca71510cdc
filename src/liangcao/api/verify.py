"""The public consumer verification of one item: a proof bundle, the page that checks it, and its QR code.

``GET /v1/trace/verify?id=…`` (no token: a consumer has none) returns the item's provenance with, for every
event, everything needed to check it without trusting this node (``liangcao.node.proofs``). ``GET /verify?id=…``
is the page that does those checks in the browser with Web Crypto (``liangcao/web/verify.js``; the same checks
as ``liangcao.trace.bundle_check``).

The checker never takes the list of organisations from the bundle: the page's address carries the trust
anchors (``anchors=``: SHA-256 fingerprint prefixes of the organisations' CA certificates, and
``quorum=``: how many distinct organisations must attest each block). ``GET /verify/qr.svg?id=…`` draws
them into the QR code printed on the pack, as a GS1 Digital Link URI on this node which
``GET /{ai}/{key}/…`` resolves to the page; ``GET /verify/link?id=…`` opens the page with this node's
anchors (for the explorer, whose reader trusts the node it reads).
"""

from __future__ import annotations

from importlib import resources
from urllib.parse import quote, urlencode

import msgspec
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from liangcao.api.deps import Services
from liangcao.api.errors import ERRORS
from liangcao.codes import Code
from liangcao.errors import LiangcaoError
from liangcao.node.proofs import anchors, bundle_from, trust_params
from liangcao.trace.identifiers import DL_ROOT, PRIMARY, normalise_identifier

__all__ = ["anchors", "bundle_from", "router", "trust_params"]  # the bundle's makers, as tests and tools know them

_json = msgspec.json.Encoder(decimal_format="number")
ASSETS = ("verify.html", "verify.js")
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8"}

router = APIRouter()


def _asset(name: str) -> bytes:
    return resources.files("liangcao.web").joinpath(name).read_bytes()


@router.get("/v1/trace/verify", responses=ERRORS, tags=["trace"], summary="Public: an item's history with proofs")
def verify_bundle(id: str, services: Services) -> Response:
    return Response(_json.encode(services.bundle(id)), media_type="application/json")


@router.get("/verify", include_in_schema=False)
def verify_page() -> Response:
    return Response(_asset("verify.html"), media_type=_TYPES[".html"])


@router.get("/favicon.ico", include_in_schema=False)
def favicon() -> Response:
    return Response(status_code=204)


@router.get("/verify/verify.js", include_in_schema=False)
def verify_script() -> Response:
    return Response(_asset("verify.js"), media_type=_TYPES[".js"])


@router.get("/verify/qr.svg", responses=ERRORS, tags=["trace"], summary="Public: the QR code of an item's page")
def verify_qr(request: Request, id: str, services: Services, anchors_: bool = True) -> Response:
    import segno

    dl = normalise_identifier(id)
    if dl is None:
        raise LiangcaoError(Code.INVALID_ARGUMENT, "id must be a GS1 key as an EPC URI or a Digital Link URI")
    base = str(request.base_url).rstrip("/")
    link = base + dl[len(DL_ROOT) :]
    if anchors_:
        link += "?" + urlencode(services.trust_params())
    svg = segno.make(link, error="m").svg_inline(scale=4, title=link)
    return Response(svg.encode(), media_type="image/svg+xml", headers={"X-Digital-Link": link})


@router.get("/verify/link", include_in_schema=False)
def verify_link(id: str, services: Services) -> Response:
    """The page for ``id`` with this node's trust anchors (the explorer's link to it)."""
    params = {"id": id, **services.trust_params()}
    return RedirectResponse("/verify?" + urlencode(params, quote_via=quote), status_code=307)


def resolve(request: Request) -> Response:
    """A GS1 Digital Link resolver for this node's items: the QR code's address opens the verify page."""
    path = request.url.path
    dl = normalise_identifier(DL_ROOT + path)
    if dl is None:
        raise LiangcaoError(Code.NOT_FOUND, f"{path} is not a GS1 Digital Link path")
    params = {"id": dl}
    for name in ("anchors", "quorum"):  # the printed trust anchors travel on unchanged
        if name in request.query_params:
            params[name] = request.query_params[name]
    return RedirectResponse("/verify?" + urlencode(params, quote_via=quote), status_code=307)


# One route per primary key (/01/…, /00/…), so the resolver never shadows the API's own paths.
for _ai in sorted(PRIMARY):
    router.add_api_route(f"/{_ai}/{{key}}", resolve, methods=["GET"], include_in_schema=False)
    router.add_api_route(f"/{_ai}/{{key}}/{{qualifier}}/{{value}}", resolve, methods=["GET"], include_in_schema=False)
