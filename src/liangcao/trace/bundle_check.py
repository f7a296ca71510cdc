"""Checking a consumer verification bundle (``/v1/trace/verify``) offline, as the ``/verify`` page does.

The page (``web/verify.js``) and this module make the same checks with the same messages, so that
``liangcao verify-proof bundle.json`` and the browser agree on what "verified" means.

Trust model
-----------
The bundle comes from one node, and one organisation's node can write anything into it: headers, proofs,
attestations, organisation lists, who recorded what. So the checker takes **nothing about trust from the
bundle**. It is given out of band a :class:`Trust`:

* ``anchors``: SHA-256 fingerprints (at least 128 bits, ``ANCHOR_HEX_MIN`` hex digits) of the CA
  certificates of the organisations it trusts. The QR code printed on the pack carries them
  (``/verify?...&anchors=…``); ``verify-proof`` takes them with ``--anchors``, or reads every genesis
  organisation's CA from the consortium's ``genesis.json`` (``--genesis``). A CA certificate counts only if
  its fingerprint, computed here, starts with an anchor; the bundle's ``organisations`` list is merely
  where the certificate bytes may be found.
* ``quorum``: how many *distinct* trusted organisations must attest a block. By default a strict majority
  of the anchored organisations (the consortium's default finality policy); the QR code carries the
  consortium's ``quorum``; the genesis file its finality policy. The bundle's ``finality_quorum`` can only
  raise it, never lower it.

For every event of the item's history:

1. the block header hashes to the block hash (both proofs carry the same header);
2. the transaction and its receipt are in the block (RFC 9162 inclusion under ``tx_root`` /
   ``receipt_root``), at the same index, and the transaction bytes are canonical;
3. the transaction is a ``trace.capture`` on the bundle's chain, its receipt is for that transaction id,
   succeeded, and lists this event id as ``captured``; the event text at that place hashes (CBV 2.0) to the
   id (here only: the page relies on the attested receipt for this);
4. every signature of the transaction verifies over its id, each signer's certificate was issued by a
   trusted organisation's CA (same organisation and type, not a CA, valid at the block's time), and the
   **recorder is derived from the certificates**: the acting party (``body.actor``, else the signers in
   member order, as the runtime orders them) with role admin or member. A bundle that names another
   recorder is refused;
5. at least ``quorum`` distinct trusted organisations attested this block hash (same chain, height and
   state hash) with a certificate of role ``peer`` that their CA issued and that was valid at the block's
   time;
6. the event **concerns the item**: the provenance walk (``liangcao.trace.provenance``) re-run over the
   proven events only, from the item the checker was asked about, reaches it, by naming the item, a
   container the item was proven to be packed into (while it was inside) or a proven input of it.

What a bundle cannot show: that no event was left out (that needs per-key state proofs), and whether a
certificate was revoked after the anchors were printed (revocation is ledger state; the server-side
bundle drops attestations that ``Config.attesting_org`` does not count, but a checker cannot take that on
the server's word, which is why a quorum of organisations is needed rather than one).
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec

from liangcao import encoding, limits
from liangcao.crypto import identity, keys
from liangcao.domain import PARTY_ROLES
from liangcao.errors import LiangcaoError
from liangcao.ledger import block as blk
from liangcao.ledger import tx as txm
from liangcao.trace import facts as fx
from liangcao.trace.depth import check_json
from liangcao.trace.hashing import Hasher, hash_of_prehash

_exact = msgspec.json.Decoder(float_hook=Decimal)

#: An anchor names at least 128 bits of a CA certificate's SHA-256 fingerprint (a second preimage of that
#: many bits is out of reach), and at most all 256.
ANCHOR_HEX_MIN = 32
ANCHOR_HEX_MAX = 64
#: Roles that take business actions (record events); ``peer`` attests, ``orderer`` seals (liangcao.domain).
RECORDING_ROLES = PARTY_ROLES
NEVER = 10_000_000_000_000


class Why:
    """The stable messages of a failed check (``web/verify.js`` uses the same texts)."""

    NO_ANCHORS = "no trust anchors were given: scan the QR code on the pack, or pass --anchors or --genesis"
    NO_EVENTS = "no events are recorded for this item"
    WRONG_CHAIN = "the bundle is for another chain than the one you trust"
    NO_PROOF = "no proof was given"
    MALFORMED = "the proof is malformed"
    HEADER = "the block header does not hash to the block hash"
    TX_NOT_IN_BLOCK = "the transaction is not in the block"
    RECEIPT_NOT_IN_BLOCK = "the receipt is not in the block"
    NOT_CANONICAL = "the transaction is not in canonical form"
    NOT_CAPTURE = "the transaction is not a capture on this chain"
    RECEIPT_OTHER_TX = "the receipt is for another transaction"
    NOT_CAPTURED = "the receipt does not record this event as captured"
    HASH = "the anchored event does not hash to its id"
    UNSIGNED = "the transaction is not signed"
    BAD_TX_SIGNATURE = "a signature of the transaction does not verify"
    UNTRUSTED_SIGNER = "a signer's certificate was not issued by an organisation you trust"
    SIGNER_EXPIRED = "a signer's certificate was not valid at the block's time"
    ACTOR = "the transaction names an acting party who did not sign it"
    NO_RECORDER = "no signer of the transaction may record events"
    RECORDER_LIE = "the server names another recorder than the transaction's signer"
    QUORUM = "too few trusted organisations attested the block"
    UNRELATED = "the event does not concern this item or a proven container or input of it"


class TrustError(ValueError):
    """Trust anchors that cannot be used (a stable message naming what is wrong)."""


@dataclass(frozen=True)
class Trust:
    """What the checker trusts, given out of band (see the module docstring); never read from a bundle."""

    anchors: tuple[str, ...]
    quorum: int
    cas: tuple[bytes, ...] = ()  # CA certificates known out of band (the genesis organisations')
    chain_id: str = ""  # the chain the anchors are for, when known ("" from a QR code)

    @classmethod
    def from_anchors(cls, anchors: Iterable[str], quorum: int | None = None) -> Trust:
        """Fingerprint prefixes as the QR code carries them; ``quorum`` defaults to a strict majority."""
        clean: list[str] = []
        for a in anchors:
            a = a.strip().lower()
            if not a:
                continue
            if not (ANCHOR_HEX_MIN <= len(a) <= ANCHOR_HEX_MAX) or any(c not in "0123456789abcdef" for c in a):
                raise TrustError(
                    f"an anchor is {ANCHOR_HEX_MIN} to {ANCHOR_HEX_MAX} hex digits of a CA certificate's "
                    f"SHA-256 fingerprint, not {a[:80]!r}"
                )
            if a not in clean:
                clean.append(a)
        if not clean:
            raise TrustError(Why.NO_ANCHORS)
        return cls(tuple(clean), _quorum(quorum, len(clean)))

    @classmethod
    def from_genesis(cls, genesis: Mapping[str, Any], quorum: int | None = None) -> Trust:
        """Every organisation of the consortium's genesis block (``genesis.json``) and its finality policy."""
        try:
            block = blk.block_from_dict(dict(genesis))
            tx: Any = encoding.decode(block.txs[0])
            args = tx["body"]["args"]
            cas = tuple(keys.unb64(o["ca_cert"]) for o in args["orgs"])
            policy = (args.get("policies") or {}).get("finality") or {"num": 1, "den": 2}
            num, den = int(policy["num"]), int(policy["den"])
        except (LiangcaoError, KeyError, TypeError, ValueError, IndexError) as exc:
            raise TrustError(f"not a liangcao genesis block: {exc}") from exc
        if not cas or den <= 0:
            raise TrustError("not a liangcao genesis block: it has no organisations")
        n = len(cas)
        policy_quorum = next((k for k in range(1, n + 1) if k * den > n * num), n)
        return cls(
            tuple(identity.fingerprint(c) for c in cas),
            _quorum(quorum if quorum is not None else policy_quorum, n),
            cas,
            block.header.chain_id,
        )


def _quorum(quorum: int | None, n: int) -> int:
    if quorum is None:
        return n // 2 + 1
    if not 1 <= quorum <= n:
        raise TrustError(f"the quorum must be 1 to {n} (the number of trusted organisations), not {quorum}")
    return quorum


@dataclass
class EventCheck:
    id: str
    problems: list[str] = field(default_factory=list)
    orgs: list[str] = field(default_factory=list)  # distinct trusted organisations that attested its block
    recorded_by: str = ""  # the recording member, from its certificate (org/name)
    org: str = ""  # the recording organisation, from the same certificate
    height: int | None = None  # from the proven header
    event: dict[str, Any] | None = None  # as the proven transaction holds it


@dataclass
class BundleCheck:
    item: str
    events: list[EventCheck]
    quorum: int = 0
    trusted: list[str] = field(default_factory=list)  # organisations whose anchored CA the checker found
    problems: list[str] = field(default_factory=list)  # about the bundle as a whole

    @property
    def verified(self) -> bool:
        return bool(self.events) and not self.problems and not any(e.problems for e in self.events)


@dataclass(frozen=True)
class _Ca:
    org: str
    info: identity.CertInfo


def _trusted_cas(trust: Trust, bundle_orgs: Any) -> list[_Ca]:
    """One CA per anchor whose fingerprint (computed here) starts with it, from the trust or the bundle."""
    candidates = list(trust.cas)
    for o in bundle_orgs if isinstance(bundle_orgs, list) else []:
        try:
            candidates.append(keys.unb64(o["ca_cert"]))
        except (KeyError, TypeError, ValueError):
            continue
    out: list[_Ca] = []
    for anchor in trust.anchors:
        for der in candidates:
            if not hashlib.sha256(der).hexdigest().startswith(anchor):
                continue
            try:
                info = identity.parse_certificate(der)
            except identity.CertificateError:
                continue
            if info.is_ca and info.role == identity.CA_ROLE and identity.issued_by(info, info):
                out.append(_Ca(info.org, info))
                break
    return out


def _member(der: bytes, cas: list[_Ca], time_ms: int) -> tuple[identity.CertInfo | None, _Ca | None, bool]:
    """(certificate, the trusted CA that issued it, valid at ``time_ms``); (None, None, False) if unusable."""
    try:
        info = identity.parse_certificate(der)
    except identity.CertificateError:
        return None, None, False
    if info.is_ca:
        return info, None, False
    for ca in cas:
        if ca.info.org == info.org and ca.info.org_type == info.org_type and identity.issued_by(info, ca.info):
            return info, ca, info.not_before_ms <= time_ms <= info.not_after_ms
    return info, None, False


def _attesting_org(att: Any, header: blk.Header, block_hash: str, cas: list[_Ca]) -> str:
    """The trusted organisation whose peer signed ``att`` for exactly this block, else ""."""
    if not isinstance(att, Mapping):
        return ""
    want = {"chain_id": header.chain_id, "height": header.height, "block_hash": block_hash}
    if any(att.get(k) != v for k, v in want.items()) or att.get("state_hash") != header.state_hash:
        return ""
    try:
        blk.check_attestation(att)
        der = keys.unb64(att["cert"])
    except (LiangcaoError, KeyError, TypeError, ValueError):
        return ""
    info, ca, valid = _member(der, cas, header.time_ms)
    if info is None or ca is None or not valid or info.role != "peer":
        return ""
    return ca.org


@dataclass
class _Proven:
    """An event whose transaction, receipt, signatures and attestations checked out."""

    hx: str
    facts: fx.Facts


def _check_signers(tx: txm.Tx, cas: list[_Ca], time_ms: int, out: EventCheck) -> None:
    """Every signature verifies, by a certificate a trusted CA issued; the recorder from the certificates."""
    if not tx.signatures:
        out.problems.append(Why.UNSIGNED)
        return
    signers: list[identity.CertInfo] = []
    for s in tx.signatures:
        info, ca, valid = _member(s.cert, cas, time_ms)
        if info is None or not keys.verify(info.public_key, keys.DOMAIN_TX, tx.id_bytes, s.sig):
            out.problems.append(Why.BAD_TX_SIGNATURE)
            return
        if ca is None:
            out.problems.append(Why.UNTRUSTED_SIGNER)
            return
        if not valid:
            out.problems.append(Why.SIGNER_EXPIRED)
            return
        signers.append(info)
    # The runtime's order (liangcao.contracts.runtime.check_signers): the named actor first, then the rest
    # by member id; the trace contract records the first of them with a recording role.
    ordered = sorted(signers, key=lambda i: i.member_id)
    actor = str(getattr(tx, "actor", "") or "")
    if actor:
        acting = [i for i in ordered if i.member_id == actor]
        if not acting:
            out.problems.append(Why.ACTOR)
            return
        ordered = acting + [i for i in ordered if i.member_id != actor]
    recorder = next((i for i in ordered if i.role in RECORDING_ROLES), None)
    if recorder is None:
        out.problems.append(Why.NO_RECORDER)
        return
    out.recorded_by, out.org = recorder.member_id, recorder.org


def _check_event(ev: Any, chain_id: str, cas: list[_Ca], quorum: int) -> tuple[EventCheck, _Proven | None]:
    out = EventCheck(str(ev.get("id", "")) if isinstance(ev, Mapping) else "")
    proof = ev.get("proof") if isinstance(ev, Mapping) else None
    if not isinstance(proof, Mapping):
        out.problems.append(Why.NO_PROOF)
        return out, None
    tx_p, rc_p = proof.get("tx"), proof.get("receipt")
    try:
        assert isinstance(tx_p, Mapping) and isinstance(rc_p, Mapping)
        header = blk.Header.from_dict(tx_p["header"])
        block_hash = header.hash
        if block_hash != tx_p.get("block_hash") or rc_p.get("header") != tx_p["header"]:
            out.problems.append(Why.HEADER)
        out.height = header.height
        for p, kind, why in ((tx_p, "tx", Why.TX_NOT_IN_BLOCK), (rc_p, "receipt", Why.RECEIPT_NOT_IN_BLOCK)):
            # under the header just hashed: a receipt proof with a header of its own proves nothing here
            ok, _ = blk.verify_proof_dict({**p, "header": tx_p["header"], "kind": kind, "block_hash": block_hash})
            if not ok:
                out.problems.append(why)
        if rc_p.get("index") != tx_p.get("index"):
            out.problems.append(Why.RECEIPT_NOT_IN_BLOCK)
        leaf = str(tx_p["leaf"])
        tx = txm.parse(leaf)
        check_json(str(rc_p["leaf"]), "a proof leaf")  # TooDeep is a ValueError: malformed, never a crash
        receipt: Any = json.loads(str(rc_p["leaf"]))
    except (AssertionError, LiangcaoError, KeyError, TypeError, ValueError):
        out.problems.append(Why.MALFORMED)
        return out, None
    if tx.raw != leaf.encode():  # the block holds canonical bytes; anything else was not hashed into it
        out.problems.append(Why.NOT_CANONICAL)
        return out, None
    if tx.contract != "trace" or tx.method != "capture" or tx.chain_id != chain_id or header.chain_id != chain_id:
        out.problems.append(Why.NOT_CAPTURE)
    if not isinstance(receipt, dict) or receipt.get("tx_id") != tx.tx_id:
        out.problems.append(Why.RECEIPT_OTHER_TX)
        return out, None
    found = receipt.get("result")
    results: list[Any] = found if isinstance(found, list) else []
    k = next((i for i, r in enumerate(results) if isinstance(r, dict) and r.get("id") == out.id), -1)
    proven: _Proven | None = None
    if receipt.get("code") != 0 or k < 0 or results[k].get("status") != "captured":
        out.problems.append(Why.NOT_CAPTURED)
    else:
        try:
            args = tx.args
            check_json(args["events"][k], "the anchored event")  # before the decoder recurses into it
            event = _exact.decode(args["events"][k])
            if args.get("context"):
                check_json(args["context"], "the anchored context")
            context = _exact.decode(args["context"]) if args.get("context") else None
            if hash_of_prehash(Hasher(context, args.get("ignore") or []).event(event)) != out.id:
                out.problems.append(Why.HASH)
            out.event = event
            proven = _Proven(fx.hex_of(out.id), fx.facts(event, limits.trace_ids_per_event_max))
        except (KeyError, TypeError, ValueError, IndexError, msgspec.DecodeError, fx.BadEvent):
            out.problems.append(Why.MALFORMED)
    _check_signers(tx, cas, header.time_ms, out)
    told_org, told_by = ev.get("org"), ev.get("by")
    if out.org and (
        (told_org is not None and told_org != out.org) or (told_by is not None and told_by != out.recorded_by)
    ):
        out.problems.append(Why.RECORDER_LIE)
    atts = proof.get("attestations")
    out.orgs = sorted(
        {o for att in (atts if isinstance(atts, list) else []) if (o := _attesting_org(att, header, block_hash, cas))}
    )
    if len(out.orgs) < quorum:
        out.problems.append(f"{Why.QUORUM} ({len(out.orgs)} of {quorum} needed)")
    return out, (proven if not out.problems else None)


def concerned(item: str, proven: Mapping[str, fx.Facts]) -> set[str]:
    """The proven events (by hex id) that belong to ``item``'s history: :func:`liangcao.trace.provenance`'s
    walk, run over ``proven`` alone (same windows: a container's events while the item was inside, an
    input's events up to the transformation)."""
    named: dict[str, list[tuple[int, str, set[str]]]] = {}
    for hx, f in proven.items():
        by_id: dict[str, set[str]] = {}
        for role, ident in f.ids:
            by_id.setdefault(ident, set()).add(role)
        for ident, rs in by_id.items():
            named.setdefault(ident, []).append((f.time_ms, hx, rs))
    for lst in named.values():
        lst.sort(key=lambda e: (e[0], e[1]))
    out: set[str] = set()
    queue: deque[tuple[str, int, int]] = deque([(fx.index_form(item), 0, NEVER)])
    seen: set[tuple[str, int, int]] = set()
    while queue:
        ident, lo, hi = queue.popleft()
        if (ident, lo, hi) in seen:
            continue
        if len(seen) >= limits.provenance_ids_max:
            break
        seen.add((ident, lo, hi))
        loaded = [e for e in named.get(ident, []) if lo <= e[0] < hi]
        for t, hx, roles in loaded:  # a parent emptied by a DELETE without children ends every containment
            f = proven[hx]
            if f.type == "AggregationEvent" and f.action == "DELETE" and fx.PARENT in roles and not f.of(fx.CHILD):
                hi = min(hi, t + 1)
        for t, hx, roles in loaded:
            if t >= hi:
                continue
            f = proven[hx]
            out.add(hx)
            if f.type == "AggregationEvent" and fx.CHILD in roles and f.action in ("ADD", "OBSERVE"):
                for parent in f.of(fx.PARENT):
                    queue.append((parent, t, _removed(loaded, proven, parent, t, hi)))
            if f.type == "TransformationEvent" and roles & {fx.OUTPUT, fx.OUTPUT_QTY}:
                for source in dict.fromkeys(f.of(fx.INPUT, fx.INPUT_QTY)):
                    queue.append((source, 0, t + 1))
    return out


def _removed(
    loaded: list[tuple[int, str, set[str]]], proven: Mapping[str, fx.Facts], parent: str, after: int, hi: int
) -> int:
    for t, hx, roles in loaded:
        f = proven[hx]
        removal = t > after and fx.CHILD in roles and f.type == "AggregationEvent" and f.action == "DELETE"
        if removal and (parent in f.of(fx.PARENT) or not f.of(fx.PARENT)):
            return min(t, hi)
    return hi


def check_bundle(bundle: Mapping[str, Any], trust: Trust | None, item: str | None = None) -> BundleCheck:
    """Every check of every event in a ``/v1/trace/verify`` bundle against ``trust``; nothing is fetched.

    ``item``: the identifier the checker was asked about (the page's ``id=``); the bundle's ``id`` if None.
    Without ``trust`` nothing verifies (:attr:`Why.NO_ANCHORS`).
    """
    target = str(item if item is not None else bundle.get("id", ""))
    result = BundleCheck(target, [])
    if trust is None:
        result.problems.append(Why.NO_ANCHORS)
        return result
    chain_id = str(bundle.get("chain_id", ""))
    if trust.chain_id and chain_id != trust.chain_id:
        result.problems.append(Why.WRONG_CHAIN)
    told = bundle.get("finality_quorum")
    result.quorum = max(trust.quorum, told if type(told) is int else 0)
    cas = _trusted_cas(trust, bundle.get("organisations"))
    result.trusted = sorted({c.org for c in cas})
    events = bundle.get("events")
    proven: dict[str, fx.Facts] = {}
    for ev in events if isinstance(events, list) else []:
        check, p = _check_event(ev, chain_id, cas, result.quorum)
        result.events.append(check)
        if p is not None:
            proven[p.hx] = p.facts
    related = concerned(target, proven)
    for check in result.events:
        try:
            hx = fx.hex_of(check.id)
        except ValueError:
            hx = ""
        if not check.problems and hx not in related:
            check.problems.append(Why.UNRELATED)
    if not result.events:
        result.problems.append(Why.NO_EVENTS)
    return result
