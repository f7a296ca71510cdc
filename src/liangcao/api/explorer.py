"""The explorer: a page the node serves at ``/explorer`` (no CDN, no internet), and what it needs from the API.

The page itself is static (``liangcao/web/explorer.*``, shipped in the package) and reads the same API as
everyone else with the viewer's bearer token; the live view follows ``/v1/events`` (server-sent events).
The one thing the page cannot derive in a browser without an X.509 parser is who signed a transaction and
which organisations attested its block, so ``/v1/txs/{id}`` carries that (``who_and_finality``).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import msgspec
from fastapi import FastAPI, Response

from liangcao.contracts import config as cfgmod
from liangcao.crypto import identity, keys

ASSETS = {"explorer.js": "text/javascript; charset=utf-8", "explorer.css": "text/css; charset=utf-8"}


def _asset(name: str) -> bytes:
    return resources.files("liangcao.web").joinpath(name).read_bytes()


def signer_of(cert_b64: str) -> dict[str, str]:
    """Who a certificate names: member id, organisation, role, organisation type, fingerprint."""
    try:
        info = identity.parse_certificate(keys.unb64(cert_b64))
    except (ValueError, identity.CertificateError):
        return {"member": "?", "org": "?", "role": "?", "org_type": "?", "fingerprint": ""}
    return {"member": info.member_id, "org": info.org, "role": info.role, "org_type": info.org_type,
            "fingerprint": info.fingerprint}  # fmt: skip


def who_and_finality(store: Any, certs: Any, info: dict[str, Any], *, forked: bool = False) -> dict[str, Any]:
    """The transaction's signers (organisation, role) and its block's finality (attesting organisations).

    While the node has a fork alarm it reports nothing as final: a peer disagreeing on the state means the
    attestations no longer say what they should."""
    signers = [signer_of(s["cert"]) for s in info["tx"].get("signatures") or []]
    config = cfgmod.load(store, certs)
    attested = set()
    for raw in store.attestations(info["height"]):
        att = msgspec.json.decode(raw)
        # Only attestations by a current peer of an active organisation count; a row that names an
        # organisation under any other certificate says nothing.
        org = config.attesting_org(att, certs) if att.get("block_hash") == info["block_hash"] else None
        if org is not None:
            attested.add(org)
    quorum = config.quorum_size("finality")
    return {
        "signers": signers,
        "finality": {
            "attested_by": sorted(attested),
            "quorum": quorum,
            "final": len(attested) >= quorum and not forked,
            "fork_alarm": forked,
        },
    }


def mount(app: FastAPI) -> None:
    @app.get("/explorer", include_in_schema=False)
    def explorer_page() -> Response:
        return Response(
            _asset("explorer.html"), media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-store"}
        )

    @app.get("/explorer/{name}", include_in_schema=False)
    def explorer_asset(name: str) -> Response:
        if name not in ASSETS:
            return Response(status_code=404)
        return Response(_asset(name), media_type=ASSETS[name])
