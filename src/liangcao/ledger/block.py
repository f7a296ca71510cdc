"""Blocks, receipts, write-set and state hashes, and inclusion proofs.

Theory of operation
-------------------
A block header is a canonical JSON object::

    {"chain_id", "height", "prev_hash", "time_ms", "tx_count", "tx_root", "receipt_root", "state_hash"}

``block_hash = hex(SHA-256(canonical(header)))``. The orderer's *seal* ``{"cert", "sig"}`` signs
``"liangcao/block/v1\\n" || block_hash``; it sits beside the header, not inside it, so the hash that the
next block links to is independent of who sealed it. ``tx_root`` is the RFC 6962 root over the canonical
transaction envelopes in block order, ``receipt_root`` over the canonical receipts; ``tx_count`` is in the
header because an inclusion proof needs the tree size.

The state hash chains the block's write set onto the previous one:
``state_hash(h) = SHA-256(state_hash(h-1) || write_set_hash(h))`` with ``state_hash(-1) = 32 zero bytes``.
A write set hashes as the SHA-256 of, for each key in ascending byte order,
``u32(len key) || key || u8(1 put | 0 delete) || [u32(len value) || value]`` (big-endian lengths).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from liangcao import encoding
from liangcao.codes import Code
from liangcao.crypto import keys, merkle
from liangcao.crypto.identity import CertificateError, parse_certificate
from liangcao.errors import BlockInvalid

ZERO_HASH = "00" * 32
_HEX64 = re.compile("[0-9a-f]{64}")
HEADER_FIELDS = (
    "chain_id",
    "height",
    "prev_hash",
    "time_ms",
    "tx_count",
    "tx_root",
    "receipt_root",
    "state_hash",
)

WriteSet = Mapping[str, bytes | None]


def write_set_hash(writes: WriteSet) -> str:
    parts: list[bytes] = []
    for key in sorted(writes):
        kb = key.encode()
        value = writes[key]
        parts.append(struct.pack(">I", len(kb)))
        parts.append(kb)
        if value is None:
            parts.append(b"\x00")
        else:
            parts.append(b"\x01")
            parts.append(struct.pack(">I", len(value)))
            parts.append(value)
    return encoding.sha256_hex(b"".join(parts))


def chain_state_hash(prev_state_hash: str, block_write_set_hash: str) -> str:
    return encoding.sha256_hex(bytes.fromhex(prev_state_hash) + bytes.fromhex(block_write_set_hash))


@dataclass(frozen=True, slots=True)
class Header:
    chain_id: str
    height: int
    prev_hash: str
    time_ms: int
    tx_count: int
    tx_root: str
    receipt_root: str
    state_hash: str

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in HEADER_FIELDS}

    def canonical(self) -> bytes:
        return encoding.canonical(self.to_dict())

    @property
    def hash(self) -> str:
        return encoding.sha256_hex(self.canonical())

    @classmethod
    def from_dict(cls, value: Any) -> Header:
        if type(value) is not dict or set(value) != set(HEADER_FIELDS):
            raise BlockInvalid(Code.BAD_BLOCK, f"a header has exactly the fields {list(HEADER_FIELDS)}")
        for f in ("chain_id", "prev_hash", "tx_root", "receipt_root", "state_hash"):
            if type(value[f]) is not str:
                raise BlockInvalid(Code.BAD_BLOCK, f"header field {f} must be a string")
        for f in ("height", "time_ms", "tx_count"):
            if type(value[f]) is not int or value[f] < 0:
                raise BlockInvalid(Code.BAD_BLOCK, f"header field {f} must be a non-negative integer")
        return cls(**value)

    @classmethod
    def from_bytes(cls, data: bytes) -> Header:
        try:
            value = encoding.decode(data, 4096)
        except Exception as exc:
            raise BlockInvalid(Code.BAD_BLOCK, f"header is not canonical JSON: {exc}") from exc
        header = cls.from_dict(value)
        if header.canonical() != data:
            raise BlockInvalid(Code.BAD_BLOCK, "header bytes are not in canonical form")
        return header


@dataclass(frozen=True, slots=True)
class Seal:
    cert: bytes
    sig: bytes

    def to_dict(self) -> dict[str, str]:
        return {"cert": keys.b64(self.cert), "sig": keys.b64(self.sig)}

    def canonical(self) -> bytes:
        return encoding.canonical(self.to_dict())

    @classmethod
    def from_dict(cls, value: Any) -> Seal:
        if type(value) is not dict or set(value) != {"cert", "sig"}:
            raise BlockInvalid(Code.BAD_BLOCK, "a seal has exactly the fields cert and sig")
        try:
            return cls(keys.unb64(value["cert"]), keys.unb64(value["sig"]))
        except (ValueError, TypeError, AttributeError) as exc:
            raise BlockInvalid(Code.BAD_BLOCK, f"seal is not base64: {exc}") from exc

    @classmethod
    def from_bytes(cls, data: bytes) -> Seal:
        try:
            value = encoding.decode(data, 8192)
        except Exception as exc:
            raise BlockInvalid(Code.BAD_BLOCK, f"seal is not canonical JSON: {exc}") from exc
        seal = cls.from_dict(value)
        if seal.canonical() != data:
            raise BlockInvalid(Code.BAD_BLOCK, "seal bytes are not in canonical form")
        return seal

    @classmethod
    def make(cls, key: Ed25519PrivateKey, cert: bytes, block_hash: str) -> Seal:
        return cls(cert, keys.sign(key, keys.DOMAIN_BLOCK, bytes.fromhex(block_hash)))

    def check(self, block_hash: str) -> str:
        """Verify the signature; return the sealer's member id. Certificate policy is the caller's."""
        try:
            info = parse_certificate(self.cert)
        except CertificateError as exc:
            raise BlockInvalid(Code.BAD_BLOCK, f"seal certificate: {exc.message}") from exc
        if not keys.verify(info.public_key, keys.DOMAIN_BLOCK, bytes.fromhex(block_hash), self.sig):
            raise BlockInvalid(Code.BAD_BLOCK, "seal signature does not match the block hash")
        return info.member_id


@dataclass(frozen=True, slots=True)
class Block:
    header: Header
    seal: Seal
    txs: tuple[bytes, ...]

    @property
    def hash(self) -> str:
        return self.header.hash

    def to_dict(self) -> dict[str, Any]:
        return {
            "header": self.header.to_dict(),
            "seal": self.seal.to_dict(),
            "txs": [encoding.decode(t) for t in self.txs],
        }


def receipt(
    tx_id: str,
    code: int,
    message: str,
    result: Any = None,
    events: Sequence[dict[str, Any]] = (),
    ws_hash: str = "",
) -> dict[str, Any]:
    """A receipt as stored and hashed: ``{tx_id, code, message, result, events, write_set_hash}``."""
    return {
        "tx_id": tx_id,
        "code": int(code),
        "message": message,
        "result": result,
        "events": list(events),
        "write_set_hash": ws_hash or write_set_hash({}),
    }


def tx_root(txs: Sequence[bytes]) -> str:
    return merkle.root(txs).hex()


def proof_dict(leaves: Sequence[bytes], index: int, header: Header, leaf_kind: str) -> dict[str, Any]:
    """A self-contained inclusion proof: leaf bytes, path, and the header whose root it ends in."""
    return {
        "kind": leaf_kind,
        "index": index,
        "leaf": leaves[index].decode(),
        "path": [h.hex() for h in merkle.inclusion_proof(leaves, index)],
        "header": header.to_dict(),
        "block_hash": header.hash,
    }


def verify_proof_dict(proof: Mapping[str, Any]) -> tuple[bool, str]:
    """Check a proof made by :func:`proof_dict` using only its contents. Returns (ok, reason)."""
    try:
        header = Header.from_dict(proof["header"])
        leaf = str(proof["leaf"]).encode()
        index = int(proof["index"])
        path = [bytes.fromhex(str(p)) for p in proof["path"]]
        kind = proof["kind"]
    except (KeyError, TypeError, ValueError, BlockInvalid) as exc:
        return False, f"proof is malformed: {exc}"
    if header.hash != proof.get("block_hash"):
        return False, "header does not hash to the stated block hash"
    if kind == "tx":
        root_hex, size = header.tx_root, header.tx_count
    elif kind == "receipt":
        root_hex, size = header.receipt_root, header.tx_count
    else:
        return False, f"unknown proof kind {kind!r}"
    if not merkle.verify_inclusion(leaf, index, size, path, bytes.fromhex(root_hex)):
        return False, f"leaf is not at index {index} under the header's {kind} root"
    return True, "ok"


def block_from_dict(value: Any) -> Block:
    """The inverse of :meth:`Block.to_dict`; transactions are re-encoded canonically."""
    if type(value) is not dict or set(value) != {"header", "seal", "txs"} or type(value["txs"]) is not list:
        raise BlockInvalid(Code.BAD_BLOCK, "a block is an object with header, seal and txs")
    try:
        txs = tuple(encoding.canonical(t) for t in value["txs"])
    except Exception as exc:
        raise BlockInvalid(Code.BAD_BLOCK, f"block transactions: {exc}") from exc
    return Block(Header.from_dict(value["header"]), Seal.from_dict(value["seal"]), txs)


def make_attestation(
    key: Ed25519PrivateKey, cert: bytes, chain_id: str, height: int, block_hash: str, state_hash: str
) -> dict[str, Any]:
    """A peer's signed statement that it committed ``block_hash`` at ``height`` with ``state_hash``.

    The signature covers ``"liangcao/attest/v1\\n" || H(canonical(body))`` with body
    ``{chain_id, height, block_hash, state_hash}``.
    """
    body = {"chain_id": chain_id, "height": height, "block_hash": block_hash, "state_hash": state_hash}
    digest = encoding.sha256(encoding.canonical(body))
    return {**body, "cert": keys.b64(cert), "sig": keys.b64(keys.sign(key, keys.DOMAIN_ATTEST, digest))}


def check_attestation(att: Mapping[str, Any]) -> str:
    """Verify an attestation's signature; return the attesting member id. Raises BlockInvalid."""
    if (
        not isinstance(att, Mapping)
        or set(att) != {"chain_id", "height", "block_hash", "state_hash", "cert", "sig"}
        or type(att["chain_id"]) is not str
        or type(att["height"]) is not int
        or att["height"] < 0
        or not all(type(att[k]) is str and _HEX64.fullmatch(att[k]) for k in ("block_hash", "state_hash"))
        or type(att["cert"]) is not str
        or type(att["sig"]) is not str
    ):
        raise BlockInvalid(
            Code.BAD_BLOCK,
            "attestation must be {chain_id: str, height: int >= 0, block_hash, state_hash: 64 hex, cert, sig}",
        )
    try:
        body = {k: att[k] for k in ("chain_id", "height", "block_hash", "state_hash")}
        info = parse_certificate(keys.unb64(att["cert"]))
        sig = keys.unb64(att["sig"])
        digest = encoding.sha256(encoding.canonical(body))
    except (KeyError, TypeError, ValueError, CertificateError) as exc:
        raise BlockInvalid(Code.BAD_BLOCK, f"attestation is malformed: {exc}") from exc
    if not keys.verify(info.public_key, keys.DOMAIN_ATTEST, digest, sig):
        raise BlockInvalid(Code.BAD_BLOCK, "attestation signature does not verify")
    return info.member_id
