"""The consumer verification bundle of one item, and the trust anchors a link to its page carries.

A bundle is the item's provenance with, for every event, everything needed to check it without trusting
the node that served it: the capture transaction's bytes (with its signatures and certificates) and its
Merkle path to the block header's ``tx_root``, the receipt's bytes and path to ``receipt_root`` (the capture
succeeded and names the event's hash id), the header (whose SHA-256 is the block hash) and the attestations
of that block hash that count under the consortium's rule (``Config.attesting_org``: a current, unrevoked
peer of an active organisation), and the organisations' CA certificates. ``liangcao.trace.bundle_check``
and the verify page (``liangcao/web/verify.js``) make the checks.

The checker never takes the list of organisations from the bundle: :func:`trust_params` is what the page's
address carries instead (CA fingerprint prefixes and the finality quorum, printed on the pack).
"""

from __future__ import annotations

from typing import Any

import msgspec

from liangcao import encoding
from liangcao.codes import Code
from liangcao.contracts import config as cfgmod
from liangcao.crypto import identity, keys
from liangcao.errors import LiangcaoError
from liangcao.ledger import block as blk
from liangcao.ledger.store import Store
from liangcao.trace.bundle_check import ANCHOR_HEX_MIN
from liangcao.trace.provenance import provenance


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


def bundle_from(store: Store, chain_id: str, identifier: str) -> dict[str, Any]:
    """The item's provenance with a self-contained proof for every event (see the module docstring): what a
    node serves, and what tests build offline from a store."""
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
                counted_attestations(store, header, config, certs),
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


def counted_attestations(
    store: Store, header: blk.Header, config: cfgmod.Config, certs: identity.CertCache
) -> list[Any]:
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
