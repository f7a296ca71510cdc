"""A dishonest node's toolkit for the verification tests: blocks, proofs and attestations made up at will.

The tests hold every organisation's keys (one network folder), so a forged bundle can be made valid in every
respect but the one under test; each attack then shows that exactly that check refuses it. ``attacks``
builds every attack of the security review from an honest bundle; the offline tests (``check_bundle``,
``liangcao verify-proof``) and the browser tests run the same ones.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from liangcao import encoding
from liangcao.crypto import keys
from liangcao.crypto.identity import issue, make_ca, parse_certificate
from liangcao.crypto.signer import Signer, load_signer
from liangcao.ledger import block as blk
from liangcao.node.home import member_dir
from liangcao.trace import capture as cap
from liangcao.trace.bundle_check import Why
from liangcao.trace.hashing import Hasher, hash_of_prehash
from trace_ledger import document


def org_of(cert: bytes) -> tuple[str, str]:
    info = parse_certificate(cert)
    return info.org, info.role


@dataclass
class Forge:
    root: Path  # the network folder, with every organisation's keys
    chain_id: str

    def signer(self, member: str) -> Signer:
        return load_signer(member_dir(self.root, member))

    @staticmethod
    def outsider(org: str, org_type: str, role: str, name: str = "x") -> tuple[Signer, bytes]:
        """A certificate from a CA the attacker made itself (naming any organisation), and that CA."""
        now = int(time.time() * 1000)
        ca_key, key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        ca = make_ca(org, org_type, ca_key, now)
        return Signer(key, issue(ca_key, ca, name, role, key.public_key(), now)), ca

    def capture(
        self,
        events: list[dict[str, Any]],
        signers: list[Signer],
        *,
        edit: Callable[[dict[str, Any]], None] | None = None,
    ) -> tuple[bytes, list[str]]:
        """A ``trace.capture`` transaction's bytes (signed by ``signers``; ``edit`` changes the body after
        signing) and its events' hash ids."""
        prepared = cap.prepare(json.dumps(document(events)).encode())
        body: dict[str, Any] = {
            "chain_id": self.chain_id,
            "contract": "trace",
            "method": "capture",
            "args": cap.args_of(prepared, list(range(len(prepared.ids)))),
            "nonce": os.urandom(6).hex(),
            "not_after": int(time.time() * 1000) + 600_000,
        }
        tx_id = encoding.sha256_hex(encoding.canonical(body))
        sigs = [{"cert": keys.b64(s.cert), "sig": keys.b64(s.sign_tx_id(tx_id).sig)} for s in signers]
        ids = list(prepared.ids)
        if edit is not None:  # the forger's receipt names the edited events by their own hash ids
            edit(body)
            args = body["args"]
            context = json.loads(args["context"], parse_float=Decimal) if args.get("context") else None
            hasher = Hasher(context, args.get("ignore") or [])
            ids = [hash_of_prehash(hasher.event(json.loads(t, parse_float=Decimal))) for t in args["events"]]
        return encoding.canonical({"body": body, "signatures": sigs}), ids

    @staticmethod
    def receipt(raw: bytes, ids: list[str]) -> bytes:
        tx_id = encoding.sha256_hex(encoding.canonical(json.loads(raw)["body"]))
        return encoding.canonical(blk.receipt(tx_id, 0, "", [{"id": i, "status": "captured"} for i in ids]))

    def block(self, txs: list[bytes], receipts: list[bytes], height: int = 9_999) -> blk.Header:
        """An invented header over ``txs`` and ``receipts`` (the hashes all add up; nobody executed it)."""
        return blk.Header(
            chain_id=self.chain_id,
            height=height,
            prev_hash="ab" * 32,
            time_ms=int(time.time() * 1000),
            tx_count=len(txs),
            tx_root=blk.tx_root(txs),
            receipt_root=blk.tx_root(receipts),
            state_hash="cd" * 32,
        )

    @staticmethod
    def attest(header: blk.Header, peers: list[Signer]) -> list[dict[str, Any]]:
        h = header
        return [blk.make_attestation(p.key, p.cert, h.chain_id, h.height, h.hash, h.state_hash) for p in peers]

    def event(
        self, events: list[dict[str, Any]], signers: list[Signer], peers: list[Signer], **kw: Any
    ) -> dict[str, Any]:
        """One bundle entry for the first of ``events``, in an invented block attested by ``peers``."""
        raw, ids = self.capture(events, signers, edit=kw.pop("edit", None))
        rc = self.receipt(raw, ids)
        header = self.block([raw], [rc])
        recorder = next((s for s in signers if org_of(s.cert)[1] in ("admin", "member")), None)
        who = recorder.member_id if recorder else ""
        return {
            "id": ids[0],
            "type": events[0]["type"],
            "org": kw.pop("org", who.split("/")[0]),
            "by": kw.pop("by", who),
            "height": header.height,
            "event": events[0],
            "proof": {
                "tx": blk.proof_dict([raw], 0, header, "tx"),
                "receipt": blk.proof_dict([rc], 0, header, "receipt"),
                "attestations": self.attest(header, peers),
            },
        }


@dataclass
class Attack:
    bundle: dict[str, Any]
    index: int  # the event that must be refused
    why: str  # the problem it must be refused with


def attacks(honest: dict[str, Any], other: dict[str, Any], early: dict[str, Any], forge: Forge) -> dict[str, Attack]:
    """Every attack, each valid but for one thing. ``honest``: the item's bundle (its first event recorded by
    org1, its third by org2); ``other``: an unrelated item's honest event; ``early``: the item's case's honest
    event from before the item was packed into it."""
    f = forge
    item = honest["id"]
    org1, org2, org3 = (f.signer(f"org{i}/peer0") for i in (1, 2, 3))
    alice = f.signer("org1/alice")
    forged_event = {
        "type": "ObjectEvent",
        "eventTime": "2026-10-05T08:00:00+08:00",
        "eventTimeZoneOffset": "+08:00",
        "epcList": [item],
        "action": "OBSERVE",
        "bizStep": "inspecting",
        "disposition": "conformant",
    }

    def with_event(entry: dict[str, Any], organisations: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        b = copy.deepcopy(honest)
        b["events"].append(entry)
        if organisations is not None:
            b["organisations"] = organisations
        return b

    def edited(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        b = copy.deepcopy(honest)
        change(b)
        return b

    n = len(honest["events"])
    out: dict[str, Attack] = {}

    # One organisation's node invents a block holding its own (properly signed) capture and attests it alone.
    out["invented-block-one-attestation"] = Attack(with_event(f.event([forged_event], [alice], [org1])), n, Why.QUORUM)

    # A real block's header altered (say, its state hash), re-hashed, attested by the node's own peer only.
    def fabricate_header(b: dict[str, Any]) -> None:
        proof = b["events"][0]["proof"]
        header = blk.Header.from_dict({**proof["tx"]["header"], "state_hash": "ee" * 32})
        for p in (proof["tx"], proof["receipt"]):
            p["header"], p["block_hash"] = header.to_dict(), header.hash
        proof["attestations"] = f.attest(header, [org1])

    out["fabricated-header"] = Attack(edited(fabricate_header), 0, Why.QUORUM)

    # Attestations by certificates from CAs the attacker made, naming real organisations; their CAs replace
    # the real ones in the bundle's list of organisations (the anchors are not the bundle's to choose).
    fake2, ca2 = Forge.outsider("org2", "logistics", "peer", "peer0")
    fake3, ca3 = Forge.outsider("org3", "customs", "peer", "peer0")
    fakes = [{**o, "ca_cert": keys.b64(ca)} for o, ca in zip(honest["organisations"][1:], (ca2, ca3), strict=True)]
    orgs = [*fakes, *copy.deepcopy(honest["organisations"])]  # listed first: the bundle's list decides nothing
    out["self-signed-attestations"] = Attack(
        with_event(f.event([forged_event], [alice], [org1, fake2, fake3]), orgs), n, Why.QUORUM
    )

    # An organisation that is not a member (its CA is not among the anchors), added to the list.
    org4, ca4 = Forge.outsider("org4", "logistics", "peer", "peer0")
    extra = [*copy.deepcopy(honest["organisations"]), {"org": "org4", "name": "org4", "type": "logistics",
             "active": True, "ca_cert": keys.b64(ca4), "fingerprint": ""}]  # fmt: skip
    out["non-member-attestation"] = Attack(
        with_event(f.event([forged_event], [alice], [org1, org4]), extra), n, Why.QUORUM
    )

    # A member's certificate that is not a peer's (org2/alice, issued by org2's real CA) attests.
    out["member-non-peer-attestation"] = Attack(
        with_event(f.event([forged_event], [alice], [org1, f.signer("org2/alice"), f.signer("org3/admin")])),
        n,
        Why.QUORUM,
    )

    # A real block with the other organisations' attestations left out; and the server lowering the quorum.
    def only_org1(b: dict[str, Any]) -> None:
        atts = b["events"][0]["proof"]["attestations"]
        b["events"][0]["proof"]["attestations"] = [a for a in atts if org_of(keys.unb64(a["cert"]))[0] == "org1"]
        b["finality_quorum"] = 1

    out["fewer-than-quorum"] = Attack(edited(only_org1), 0, Why.QUORUM)

    # The capture transaction: unsigned; signed, then altered; signed under a certificate from a CA the
    # attacker made; signed by a node's peer key only. Each in a block all three peers attested, so that
    # nothing but the transaction is wrong.
    everyone = [org1, org2, org3]
    out["unsigned-capture"] = Attack(
        with_event(f.event([forged_event], [], everyone, org="org1", by="org1/alice")), n, Why.UNSIGNED
    )

    def alter(body: dict[str, Any]) -> None:  # after signing: the signatures are over another tx id
        body["args"]["events"][0] = body["args"]["events"][0].replace("conformant", "non_conformant")

    out["forged-capture-signature"] = Attack(
        with_event(f.event([forged_event], [alice], everyone, edit=alter)), n, Why.BAD_TX_SIGNATURE
    )
    fake_alice, _ = Forge.outsider("org1", "brand", "member", "alice")
    out["capture-by-outsider"] = Attack(
        with_event(f.event([forged_event], [fake_alice], everyone)), n, Why.UNTRUSTED_SIGNER
    )
    out["capture-by-peer-key"] = Attack(
        with_event(f.event([forged_event], [org1], everyone, org="org1", by="org1/peer0")), n, Why.NO_RECORDER
    )

    # "Recorded by": the server names the brand for an event that org2 signed.
    def recorder_lie(b: dict[str, Any]) -> None:
        b["events"][2]["org"], b["events"][2]["by"] = "org1", "org1/alice"

    out["recorded-by-lie"] = Attack(edited(recorder_lie), 2, Why.RECORDER_LIE)

    # Honest, attested events that are not this item's: another item's, and its case's before it was packed.
    out["unrelated-event"] = Attack(with_event(copy.deepcopy(other)), n, Why.UNRELATED)
    out["case-event-before-packing"] = Attack(with_event(copy.deepcopy(early)), n, Why.UNRELATED)
    return out
