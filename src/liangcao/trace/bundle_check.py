"""Checking a consumer verification bundle (``/v1/trace/verify``) offline, as the ``/verify`` page does.

The page (``web/verify.js``) and this module make the same checks, so that ``liangcao verify-proof
bundle.json`` and the browser agree on what "verified" means. For every event of the item's history:

1. the block header hashes to the stated block hash (and the receipt proof carries the same header);
2. the transaction and its receipt are in the block (RFC 9162 inclusion under ``tx_root`` / ``receipt_root``);
3. the transaction is a ``trace.capture`` on this chain, its receipt succeeded and lists this event id, and
   the event text at that place hashes (CBV 2.0) to the id: the history shown is what was anchored;
4. at least one organisation the checker trusts attested the block: an Ed25519 attestation by a member whose
   certificate the organisation's CA signed. Trusted CAs are the bundle's, optionally narrowed to
   ``anchors`` (SHA-256 fingerprint prefixes of CA certificates, as in the QR code), computed here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec

from liangcao.crypto import identity, keys
from liangcao.errors import LiangcaoError
from liangcao.ledger import block as blk
from liangcao.trace.depth import TooDeep, check_json
from liangcao.trace.hashing import Hasher, hash_of_prehash

_exact = msgspec.json.Decoder(float_hook=Decimal)


@dataclass
class EventCheck:
    id: str
    problems: list[str] = field(default_factory=list)
    orgs: list[str] = field(default_factory=list)


@dataclass
class BundleCheck:
    item: str
    events: list[EventCheck]

    @property
    def verified(self) -> bool:
        return bool(self.events) and not any(e.problems for e in self.events)


def _trusted(orgs: list[dict[str, Any]], anchors: list[str] | None) -> dict[str, identity.CertInfo]:
    out = {}
    for o in orgs:
        der = keys.unb64(o["ca_cert"])
        fp = hashlib.sha256(der).hexdigest()  # computed here, never taken from the bundle
        if anchors and not any(fp.startswith(a.lower()) for a in anchors):
            continue
        out[str(o["org"])] = identity.parse_certificate(der)
    return out


def _attesting_org(att: dict[str, Any], block_hash: str, chain_id: str, cas: dict[str, identity.CertInfo]) -> str:
    if att.get("block_hash") != block_hash or att.get("chain_id") != chain_id:
        return ""
    try:
        blk.check_attestation(att)
        member = identity.parse_certificate(keys.unb64(att["cert"]))
    except (LiangcaoError, ValueError, KeyError):
        return ""
    for org, ca in cas.items():
        if identity.issued_by(member, ca):
            return org
    return ""


def _check_event(ev: dict[str, Any], chain_id: str, cas: dict[str, identity.CertInfo]) -> EventCheck:
    out = EventCheck(str(ev.get("id", "")))
    proof = ev.get("proof")
    if not isinstance(proof, dict):
        out.problems.append("no proof was given")
        return out
    tx_p, rc_p = proof.get("tx") or {}, proof.get("receipt") or {}
    for p, what in ((tx_p, "transaction"), (rc_p, "receipt")):
        ok, why = blk.verify_proof_dict(p)
        if not ok:
            out.problems.append(f"the {what} is not in the block: {why}")
    if tx_p.get("header") != rc_p.get("header") or tx_p.get("index") != rc_p.get("index"):
        out.problems.append("the transaction and receipt proofs are for different places")
    try:
        for leaf in (tx_p["leaf"], rc_p["leaf"]):
            check_json(leaf, "a proof leaf")  # a bundle comes from anywhere: no decoder recursion on its say-so
        tx, receipt = json.loads(tx_p["leaf"]), json.loads(rc_p["leaf"])
        body = tx["body"]
        if body["contract"] != "trace" or body["method"] != "capture" or body["chain_id"] != chain_id:
            out.problems.append("the transaction is not a capture on this chain")
        ids = [r.get("id") for r in receipt.get("result") or []]
        if receipt.get("code") != 0 or out.id not in ids:
            out.problems.append("the receipt does not record this event as captured")
        else:
            args = body["args"]
            text = args["events"][ids.index(out.id)]
            check_json(text, "the anchored event")
            event = _exact.decode(text)
            if args.get("context"):
                check_json(args["context"], "the anchored context")
            context = _exact.decode(args["context"]) if args.get("context") else None
            if hash_of_prehash(Hasher(context, args.get("ignore") or []).event(event)) != out.id:
                out.problems.append("the anchored event does not hash to its id")
    except TooDeep as exc:
        out.problems.append(f"the proof is malformed: {exc}")
    except (KeyError, TypeError, ValueError, IndexError, msgspec.DecodeError):
        out.problems.append("the proof is malformed")
    block_hash = str(tx_p.get("block_hash", ""))
    out.orgs = sorted(
        {o for att in proof.get("attestations") or [] if (o := _attesting_org(att, block_hash, chain_id, cas))}
    )
    if not out.orgs:
        out.problems.append("no trusted organisation attested the block")
    return out


def check_bundle(bundle: dict[str, Any], anchors: list[str] | None = None) -> BundleCheck:
    """Every check of every event in a ``/v1/trace/verify`` bundle; nothing is fetched."""
    chain_id = str(bundle.get("chain_id", ""))
    cas = _trusted(list(bundle.get("organisations") or []), anchors)
    events = [_check_event(ev, chain_id, cas) for ev in bundle.get("events") or []]
    return BundleCheck(str(bundle.get("id", "")), events)
