"""Private data collections: commitments in shared state, values kept by member organisations only.

Theory of operation
-------------------
A contract declares its collections (:class:`Collection`: a name, fixed member organisations or members
chosen per record, a retention in blocks, whether the consortium's ``regulator`` organisations read it, and
optionally a pure *check* over the private value). A private write puts only a **commitment** in shared
state, under ``<contract>/~pvt/<collection>/<key>``::

    {"collection", "key", "hash", "members", "retain_blocks", "height", "tx"}

where ``hash = hex(SHA-256(salt || canonical(value)))`` with a 32-byte random ``salt``, computed by the
submitter and carried in the transaction's public arguments as ``args.private = {collection, key, hash}``.
The value and the salt never enter the transaction, the block or the shared state, so every peer executes
the same public logic on the commitment and computes the same state hash; audit from genesis is unchanged.
The node's private store (``liangcao.node.private``) keeps value and salt on member peers only.

Where a rule needs the private value (a discount computed from a private rate), the collection's ``check``
runs on **member peers before ordering**: each signs an *endorsement* (peer certificate, signing domain
``liangcao/endorse/v1``) over the digest of the transaction's public arguments (which hold the commitment).
At execution every peer verifies that a current peer of every required member organisation endorsed
(:func:`require_endorsements`): the one place a peer accepts a write whose rule it cannot re-execute.

Selective disclosure (:func:`check_disclosure`): value, salt and the transaction's inclusion proofs (tx and
receipt) against a block header let an outsider check one private value offline.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated, Any

import msgspec

from liangcao import codes, encoding
from liangcao.codes import Code
from liangcao.contracts.base import Context
from liangcao.crypto import identity, keys
from liangcao.crypto.identity import CertificateError
from liangcao.errors import EncodingError, LiangcaoError
from liangcao.ledger import block as blk
from liangcao.ledger import tx as txm

#: the key-space segment of commitments: ``<contract>/~pvt/<collection>/<key>``
PVT = "~pvt"
#: the event a private write emits (the node's private store learns commitments from it)
EVENT = "private.committed"
DOMAIN_ENDORSE = b"liangcao/endorse/v1\n"
SALT_BYTES = 32

# Limits (this package's own; see the house style: every bound is named ``*_max`` and enforced).
private_value_bytes_max = 16_384  # canonical bytes of one private value
collection_members_max = 8  # organisations of one record
endorsements_max = 8  # endorsements one transaction carries
retain_blocks_max = 100_000_000
private_key_chars_max = 128


class PrivacyCode(IntEnum):
    """Stable codes of private data collections (range 2500-2599)."""

    NOT_MEMBER = 2500  # the organisation is not a member of the collection (of this record)
    HASH_MISMATCH = 2501  # value and salt do not hash to the commitment
    NO_COMMITMENT = 2502  # no commitment at that key (or another hash than the one named)
    UNKNOWN_COLLECTION = 2503  # the contract declares no such collection
    ENDORSEMENT_MISSING = 2504  # a required member organisation's peer did not endorse
    ENDORSEMENT_INVALID = 2505  # an endorsement's certificate or signature does not count
    CHECK_FAILED = 2506  # the collection's check refused the private value
    TOO_LARGE = 2507  # a private value beyond private_value_bytes_max, or too many members / endorsements
    TRANSIENT_FULL = 2508  # the node holds transient_max private values awaiting their commitment
    BAD_DISCLOSURE = 2509  # a disclosure does not verify
    NOT_AVAILABLE = 2510  # a member asked, but the value is not held here (not yet received, or purged)
    BAD_MEMBERS = 2511  # members empty, duplicated, unknown or inactive organisations
    BAD_PRIVATE_DATA = 2512  # malformed private data (salt, hash, value)


codes.register(
    PrivacyCode,
    "privacy",
    http={PrivacyCode.NOT_MEMBER: 403, PrivacyCode.NOT_AVAILABLE: 404, PrivacyCode.NO_COMMITMENT: 404,
          PrivacyCode.TRANSIENT_FULL: 503, PrivacyCode.TOO_LARGE: 413},
)  # fmt: skip


#: The result of a collection's check: "" if the value is acceptable, else why not (one line).
Check = Callable[[Any, Mapping[str, Any]], str]


@dataclass(frozen=True, slots=True)
class Collection:
    """A contract's private collection.

    ``members``: fixed member organisations; empty when the contract names them per record.
    ``retain_blocks``: value and salt are purged this many blocks after the write (0: kept); the hash stays.
    ``regulator_reads``: the consortium's active ``regulator`` organisations are members of every record
    (a stated policy, decided by the contract author, shown in the commitment's member list).
    ``check``: a pure function ``(value, public args) -> reason`` that member peers run before they endorse
    and again when the value reaches them; with ``endorse`` the contract requires their endorsements.
    """

    name: str
    members: tuple[str, ...] = ()
    retain_blocks: int = 0
    regulator_reads: bool = False
    check: Check | None = None
    endorse: bool = False

    def __post_init__(self) -> None:
        # a declaration is code: a wrong one is a programming error, refused when the contract is imported
        if not 0 <= self.retain_blocks <= retain_blocks_max:
            raise ValueError(f"collection {self.name}: retain_blocks must be 0..retain_blocks_max={retain_blocks_max}")
        if len(self.members) > collection_members_max or len(set(self.members)) != len(self.members):
            raise ValueError(f"collection {self.name}: at most {collection_members_max} distinct members")
        if self.endorse and self.check is None:
            raise ValueError(f"collection {self.name}: endorsements attest a check; declare one")


class PrivateRef(msgspec.Struct, forbid_unknown_fields=True):
    """``args.private`` of a transaction that writes private data: the commitment, never the value."""

    collection: Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_.-]*\Z")]
    key: Annotated[str, msgspec.Meta(min_length=1, max_length=private_key_chars_max, pattern=r"^[A-Za-z0-9._:/-]+\Z")]
    hash: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}\Z")]


class Endorsement(msgspec.Struct, forbid_unknown_fields=True):
    cert: Annotated[str, msgspec.Meta(max_length=4096)]
    sig: Annotated[str, msgspec.Meta(max_length=128)]


Endorsements = Annotated[list[Endorsement], msgspec.Meta(max_length=endorsements_max)]


# ---- commitments -----------------------------------------------------------------------------------------
def new_salt() -> bytes:
    return os.urandom(SALT_BYTES)


def value_bytes(value: Any) -> bytes:
    """The canonical bytes of a private value (bounded; floats refused like everywhere on the ledger)."""
    try:
        data = encoding.canonical(value)
    except EncodingError as exc:
        raise LiangcaoError(PrivacyCode.BAD_PRIVATE_DATA, f"private value: {exc.message}") from exc
    if len(data) > private_value_bytes_max:
        raise LiangcaoError(
            PrivacyCode.TOO_LARGE, f"private value is {len(data)} bytes, more than private_value_bytes_max"
        )
    return data


def commitment_hash(salt: bytes, value: Any) -> str:
    """``hex(SHA-256(salt || canonical(value)))``: what shared state holds of a private value."""
    if type(salt) is not bytes or len(salt) != SALT_BYTES:
        raise LiangcaoError(PrivacyCode.BAD_PRIVATE_DATA, f"the salt must be {SALT_BYTES} bytes")
    return hashlib.sha256(salt + value_bytes(value)).hexdigest()


def matches(hash_hex: str, salt: bytes, value: Any) -> bool:
    """Whether value and salt open the commitment ``hash_hex`` (never raises)."""
    try:
        return commitment_hash(salt, value) == hash_hex
    except LiangcaoError:
        return False


def state_key(contract: str, collection: str, key: str) -> str:
    return f"{contract}/{PVT}/{collection}/{key}"


def collections_of(contract: Any) -> dict[str, Collection]:
    """The collections a contract declares (a class attribute ``collections``; none if absent)."""
    found = getattr(contract, "collections", None)
    return dict(found) if isinstance(found, dict) else {}


def put_private(ctx: Context, collection: Collection, ref: PrivateRef, members: Sequence[str] = ()) -> dict[str, Any]:
    """Record the commitment ``ref`` in ``collection`` of the running contract; returns the stored record.

    ``members``: the record's organisations when the collection has no fixed ones. Each must be an active
    organisation of the consortium; the regulator policy adds the active regulators. Emits ``private.committed``.
    """
    if ref.collection != collection.name:
        ctx.fail(PrivacyCode.UNKNOWN_COLLECTION, f"{ctx.contract} writes collection {collection.name!r} here")
    config = ctx.consortium()
    orgs = set(collection.members or members)
    if collection.regulator_reads:
        orgs |= {o for o in config.active_orgs if config.orgs[o].type == "regulator"}
    if not orgs or len(orgs) > collection_members_max:
        ctx.fail(PrivacyCode.BAD_MEMBERS, f"a record has 1 to collection_members_max={collection_members_max} members")
    unknown = sorted(o for o in orgs if o not in config.active_orgs)
    if unknown:
        ctx.fail(PrivacyCode.BAD_MEMBERS, f"not active organisations: {', '.join(unknown)}")
    record = {
        "collection": collection.name,
        "key": ref.key,
        "hash": ref.hash,
        "members": sorted(orgs),
        "retain_blocks": collection.retain_blocks,
        "height": ctx.height,
        "tx": ctx.tx_id,
    }
    ctx.put(f"{PVT}/{collection.name}/{ref.key}", record)
    ctx.emit(EVENT, record)
    return record


# ---- endorsements ----------------------------------------------------------------------------------------
def endorsement_digest(chain_id: str, contract: str, method: str, args: Mapping[str, Any]) -> bytes:
    """What endorsers sign: the transaction's public arguments (with the commitment), without endorsements."""
    body = {
        "chain_id": chain_id,
        "contract": contract,
        "method": method,
        "args": {k: v for k, v in args.items() if k != "endorsements"},
    }
    return hashlib.sha256(encoding.canonical(body)).digest()


def endorse(key: Any, cert: bytes, digest: bytes) -> dict[str, str]:
    """A peer's endorsement of ``digest`` (see :func:`endorsement_digest`)."""
    return {"cert": keys.b64(cert), "sig": keys.b64(keys.sign(key, DOMAIN_ENDORSE, digest))}


def endorsing_orgs(
    config: Any, endorsements: Sequence[Endorsement], digest: bytes, time_ms: int
) -> tuple[set[str], str]:
    """The organisations whose current peers endorsed ``digest``; and why one endorsement did not count."""
    certs = identity.CertCache()
    found: set[str] = set()
    for i, e in enumerate(endorsements):
        try:
            info = certs.parse(keys.unb64(e.cert))
            sig = keys.unb64(e.sig)
        except (CertificateError, ValueError):
            return found, f"endorsement {i} has a malformed certificate or signature"
        org = config.member_org(info, certs, role="peer", time_ms=time_ms)
        if org is None:
            return found, f"endorsement {i} is not by a current peer of an active organisation"
        if not keys.verify(info.public_key, DOMAIN_ENDORSE, digest, sig):
            return found, f"endorsement {i} by {info.member_id} does not verify"
        found.add(org)
    return found, ""


def require_endorsements(
    ctx: Context, method: str, args: msgspec.Struct, endorsements: Sequence[Endorsement], orgs: Sequence[str]
) -> None:
    """Stop unless a current peer of every organisation in ``orgs`` endorsed this transaction's arguments."""
    digest = endorsement_digest(ctx.chain_id, ctx.contract, method, msgspec.to_builtins(args))
    found, why = endorsing_orgs(ctx.consortium(), endorsements, digest, ctx.time_ms)
    if why:
        ctx.fail(PrivacyCode.ENDORSEMENT_INVALID, why)
    missing = sorted(set(orgs) - found)
    if missing:
        ctx.fail(PrivacyCode.ENDORSEMENT_MISSING, f"no endorsement by a peer of {', '.join(missing)}")


# ---- selective disclosure --------------------------------------------------------------------------------
def check_disclosure(d: Mapping[str, Any]) -> tuple[bool, str]:
    """Check a disclosure offline: the value opens the commitment, the committed transaction carries it.

    ``d = {kind: "private_disclosure", contract, collection, key, value, salt (hex), hash, tx_proof,
    receipt_proof}``. Checked: salt and value hash to ``hash``; both proofs end in the same header (whose
    hash is the block hash) at the same index; the transaction is a ``contract`` call whose
    ``args.private`` names this collection, key and hash; its receipt says OK. Trust in the header itself
    (attestations by a quorum) is the verifier's separate question, as for any inclusion proof.
    """
    try:
        salt = bytes.fromhex(str(d["salt"]))
        value, hash_hex = d["value"], str(d["hash"])
        tx_proof, receipt_proof = d["tx_proof"], d["receipt_proof"]
        contract, collection, key = str(d["contract"]), str(d["collection"]), str(d["key"])
    except (KeyError, TypeError, ValueError) as exc:
        return False, f"disclosure is malformed: {exc}"
    if not matches(hash_hex, salt, value):
        return False, "value and salt do not hash to the commitment"
    for proof, kind in ((tx_proof, "tx"), (receipt_proof, "receipt")):
        if not isinstance(proof, dict) or proof.get("kind") != kind:
            return False, f"the {kind} proof is missing"
        ok, why = blk.verify_proof_dict(proof)
        if not ok:
            return False, f"{kind} proof: {why}"
    if tx_proof["block_hash"] != receipt_proof["block_hash"] or tx_proof["index"] != receipt_proof["index"]:
        return False, "the transaction and receipt proofs are not of the same block and position"
    try:
        tx = txm.parse(str(tx_proof["leaf"]).encode())
        receipt = encoding.decode(str(receipt_proof["leaf"]).encode())
    except LiangcaoError as exc:
        return False, f"proof leaf: {exc.message}"
    ref = tx.args.get("private")
    if tx.contract != contract or not isinstance(ref, dict):
        return False, f"the transaction is not a private write of {contract}"
    if (ref.get("collection"), ref.get("key"), ref.get("hash")) != (collection, key, hash_hex):
        return False, "the transaction commits another collection, key or hash"
    if not isinstance(receipt, dict) or receipt.get("tx_id") != tx.tx_id or receipt.get("code") != Code.OK:
        return False, "the transaction's receipt is not a success"
    return True, "ok"
