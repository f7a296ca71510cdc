"""The public consumer verification of one item: a proof bundle, the page that checks it, and its QR code.

``GET /v1/trace/verify?id=…`` (no token: a consumer has none) returns the item's provenance with, for every
event, everything needed to check it without trusting this node: the capture transaction's bytes (with its
signatures and certificates) and its Merkle path to the block header's ``tx_root``, the receipt's bytes and
path to ``receipt_root`` (the capture succeeded and names the event's hash id), the header (whose SHA-256
is the block hash) and the attestations of that block hash that count under the consortium's rule
(``Config.attesting_org``: a current, unrevoked peer of an active organisation), and the organisations'
CA certificates. ``GET /verify?id=…`` is the page that does those checks in the browser with Web Crypto
(``liangcao/web/verify.js``; the same checks as ``liangcao.trace.bundle_check``).

The checker never takes the list of organisations from the bundle: the page's address carries the trust
anchors (``anchors=``: SHA-256 fingerprint prefixes of the organisations' CA certificates, and
``quorum=``: how many distinct organisations must attest each block). ``GET /verify/qr.svg?id=…`` draws
them into the QR code printed on the pack, as a GS1 Digital Link URI on this node which
``GET /{ai}/{key}/…`` resolves to the page; ``GET /verify/link?id=…`` opens the page with this node's
anchors (for the explorer, whose reader trusts the node it reads).
"""

from __future__ import annotations

from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode

import msgspec
from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from liangcao import encoding
from liangcao.codes import Code
from liangcao.contracts import config as cfgmod
from liangcao.crypto import identity, keys
from liangcao.errors import LiangcaoError
from liangcao.ledger import block as blk
from liangcao.ledger.store import Store
from liangcao.node.node import Node
from liangcao.trace.bundle_check import ANCHOR_HEX_MIN
from liangcao.trace.identifiers import DL_ROOT, PRIMARY, normalise_identifier
from liangcao.trace.provenance import provenance

_json = msgspec.json.Encoder(decimal_format="number")
ASSETS = ("verify.html", "verify.js")
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


def _asset(name: str) -> bytes:
    return resources.files("liangcao.web").joinpath(name).read_bytes()


def anchors(view: Any) -> list[dict[str, Any]]:
    """The organisations and their CA certificates, as the configuration in state has them."""
    out = []
    for _, raw in view.range(cfgmod.ORG_PREFIX):
        entry = msgspec.json.decode(raw)
        der = keys.unb64(entry["ca_cert"])
        out.append(
            {
                "org": entry["org_id"],
                "name": entry["name"],
                "type": entry["type"],
                "active": bool(entry["active"]),
                "ca_cert": entry["ca_cert"],
                "fingerprint": encoding.sha256_hex(der),
            }
        )
    return out


def bundle(node: Node, identifier: str) -> dict[str, Any]:
    """The item's provenance with a self-contained proof for every event (see the module docstring)."""
    return bundle_from(node.reader(), node.chain_id, identifier)


def bundle_from(store: Store, chain_id: str, identifier: str) -> dict[str, Any]:
    """:func:`bundle` from a store (read-only use): what a node serves, and what tests build offline."""
    if not identifier or len(identifier) > 500:
        raise LiangcaoError(Code.INVALID_ARGUMENT, "id must be an EPC URI or a GS1 Digital Link URI")
    history = provenance(store, identifier)
    # A cache of its own: API threads never share the commit thread's (liangcao.node.node).
    certs = identity.CertCache()
    config = cfgmod.load(store, certs)
    blocks: dict[int, tuple[list[bytes], list[bytes], blk.Header, list[Any]]] = {}
    for event in history["events"]:
        pos = store.tx_position(event["tx"])
        if pos is None:
            continue
        height, idx = pos
        if height not in blocks:
            header = store.header(height)
            if header is None:
                continue
            blocks[height] = (
                store.block_txs(height),
                store.receipts(height),
                header,
                _counted(store, header, config, certs),
            )
        txs, receipts, header, atts = blocks[height]
        event["proof"] = {
            "tx": blk.proof_dict(txs, idx, header, "tx"),
            "receipt": blk.proof_dict(receipts, idx, header, "receipt"),
            "attestations": atts,
        }
    return {
        "id": identifier,
        "index_id": history["index_id"],
        "chain_id": chain_id,
        "complete": history["complete"],
        "organisations": anchors(store),
        "finality_quorum": config.quorum_size("finality"),
        "events": history["events"],
        "edges": history["edges"],
    }


def _counted(store: Store, header: blk.Header, config: cfgmod.Config, certs: identity.CertCache) -> list[Any]:
    """The block's attestations that count (one rule: ``Config.attesting_org``), for exactly this block."""
    out = []
    for raw in store.attestations(header.height):
        att = msgspec.json.decode(raw)
        same = (
            isinstance(att, dict)
            and att.get("block_hash") == header.hash
            and att.get("state_hash") == header.state_hash
        )
        if same and config.attesting_org(att, certs) is not None:
            out.append(att)
    return out


def trust_params(store: Store) -> dict[str, str]:
    """What a link to the page carries as its trust anchors: every active organisation's CA fingerprint
    (``ANCHOR_HEX_MIN`` hex digits, 128 bits) and the consortium's finality quorum, from this node's state
    when the link is made (printed on the pack, it no longer depends on any node)."""
    fingerprints = [a["fingerprint"][:ANCHOR_HEX_MIN] for a in anchors(store) if a["active"]]
    quorum = cfgmod.load(store, identity.CertCache()).quorum_size("finality")
    return {"anchors": ",".join(fingerprints), "quorum": str(quorum)}


def mount(app: FastAPI, node: Node, errors: dict[int | str, dict[str, Any]]) -> None:
    @app.get("/v1/trace/verify", responses=errors, tags=["trace"], summary="Public: an item's history with proofs")
    def verify_bundle(id: str) -> Response:
        return Response(_json.encode(bundle(node, id)), media_type="application/json")

    @app.get("/verify", include_in_schema=False)
    def verify_page() -> Response:
        return Response(_asset("verify.html"), media_type=_TYPES[".html"])

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/verify/verify.js", include_in_schema=False)
    def verify_script() -> Response:
        return Response(_asset("verify.js"), media_type=_TYPES[".js"])

    @app.get("/verify/qr.svg", responses=errors, tags=["trace"], summary="Public: the QR code of an item's page")
    def verify_qr(request: Request, id: str, anchors_: bool = True) -> Response:
        import segno

        dl = normalise_identifier(id)
        if dl is None:
            raise LiangcaoError(Code.INVALID_ARGUMENT, "id must be a GS1 key as an EPC URI or a Digital Link URI")
        base = str(request.base_url).rstrip("/")
        link = base + dl[len(DL_ROOT) :]
        if anchors_:
            link += "?" + urlencode(trust_params(node.reader()))
        svg = segno.make(link, error="m").svg_inline(scale=4, title=link)
        return Response(svg.encode(), media_type="image/svg+xml", headers={"X-Digital-Link": link})

    @app.get("/verify/link", include_in_schema=False)
    def verify_link(id: str) -> Response:
        """The page for ``id`` with this node's trust anchors (the explorer's link to it)."""
        params = {"id": id, **trust_params(node.reader())}
        return RedirectResponse("/verify?" + urlencode(params, quote_via=quote), status_code=307)

    # A GS1 Digital Link resolver for this node's items: the QR code's address opens the verify page. One route
    # per primary key (/01/…, /00/…), so it never shadows the API's own paths.
    def resolve(request: Request) -> Response:
        path = request.url.path
        dl = normalise_identifier(DL_ROOT + path)
        if dl is None:
            raise LiangcaoError(Code.NOT_FOUND, f"{path} is not a GS1 Digital Link path")
        params = {"id": dl}
        for name in ("anchors", "quorum"):  # the printed trust anchors travel on unchanged
            if name in request.query_params:
                params[name] = request.query_params[name]
        return RedirectResponse("/verify?" + urlencode(params, quote_via=quote), status_code=307)

    for ai in sorted(PRIMARY):
        app.add_api_route(f"/{ai}/{{key}}", resolve, methods=["GET"], include_in_schema=False)
        app.add_api_route(f"/{ai}/{{key}}/{{qualifier}}/{{value}}", resolve, methods=["GET"], include_in_schema=False)
