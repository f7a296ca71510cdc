"""Dangerous-goods declarations: their content, and sealing it so that only named organisations can read it.

A declaration sits on a ledger every organisation of the consortium replicates, yet only the shipper, the
carrier and, once the carrier approved, the terminals named in it may read it. Access control on the API
alone would not do (every peer holds every value), so the content is encrypted before it leaves the shipper:

- each organisation registers an X25519 public key on the ledger (``dg.register_key``);
- the content (JSON of :class:`Declaration`) is encrypted with AES-256-GCM under a fresh data key per
  version; the additional data binds the ciphertext to its chain, declaration id, version, shipper and
  carrier, so it cannot be replayed into another declaration;
- the data key is wrapped for each reader (ephemeral X25519 agreement with the reader's registered key,
  HKDF-SHA256, AES-256-GCM), so a reader needs its organisation's private key, which never leaves it;
- the shipper wraps for itself and the carrier; the carrier, approving, unwraps and wraps for the terminals.
  Before approval no wrap for a terminal exists anywhere: a terminal cannot read early even with the raw state;
- a carrier's reason for rejecting is sealed too (:func:`seal_reason`): AES-256-GCM under a key derived from
  the version's data key, which only the shipper and the carrier hold (a rejected version is never wrapped
  for a terminal), bound to the same header. The decision itself (``rejected``) stays public.

A declaration's id is its shipper's organisation and a name, ``org1/DG-2026-0001``: the ledger accepts a new
declaration only under the submitting shipper's own organisation, so nobody can take another shipper's
names first. The SDK and CLI take a bare name (``DG-2026-0001``) as one of the caller's own organisation.

The ledger checks the envelope (sizes, that each wrap is for the reader's registered key); what is inside is
checked here, by the shipper before sealing and by every reader after opening.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from liangcao import limits
from liangcao.domain import ORG_ID_CHARS

SCHEME = "liangcao/dg/v1"
#: IMDG Code classes and divisions.
HAZARD_CLASSES = (
    "1.1", "1.2", "1.3", "1.4", "1.5", "1.6", "2.1", "2.2", "2.3", "3", "4.1", "4.2", "4.3", "5.1", "5.2",
    "6.1", "6.2", "7", "8", "9",
)  # fmt: skip
# Classes the IMDG Code assigns no packing group to (explosives, gases, organic peroxides, infectious
# substances, radioactive material); every other class needs one.
NO_PACKING_GROUP = ("1.", "2.", "5.2", "6.2", "7")

Text = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
REASON_CHARS_MAX = limits.dg_reason_chars_max


class DeclarationError(ValueError):
    """Content that is not a valid declaration, or an envelope that does not open; the message says why."""


class EmergencyContact(msgspec.Struct, forbid_unknown_fields=True):
    name: Text
    phone: Annotated[str, msgspec.Meta(pattern=r"^\+[1-9][0-9]{6,14}$")]  # E.164, reachable around the clock


class Declaration(msgspec.Struct, forbid_unknown_fields=True):
    """What a shipper declares. Quantities are integers (grams or millilitres), never floats."""

    un_number: Annotated[str, msgspec.Meta(pattern=r"^UN[0-9]{4}$")]
    proper_shipping_name: Text
    hazard_class: str
    packing_group: Literal["I", "II", "III"] | None
    net_quantity: Annotated[int, msgspec.Meta(gt=0, le=10**12)]
    unit: Literal["g", "mL"]
    packages: Annotated[int, msgspec.Meta(ge=1, le=10**6)]
    container: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}[UJZ][0-9]{7}$")]
    booking: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    emergency_contact: EmergencyContact
    subsidiary_classes: Annotated[list[str], msgspec.Meta(max_length=3)] = msgspec.field(default_factory=list)
    marine_pollutant: bool = False
    remarks: Annotated[str, msgspec.Meta(max_length=1000)] = ""


_ISO6346_VALUES = {}
_v = 10
for _letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
    if _v % 11 == 0:  # the standard skips multiples of 11
        _v += 1
    _ISO6346_VALUES[_letter] = _v
    _v += 1


def container_check_digit(first10: str) -> int:
    """ISO 6346 check digit of an owner code, category and serial (``CSQU305438`` -> 3)."""
    total = sum((_ISO6346_VALUES[c] if c.isalpha() else int(c)) << i for i, c in enumerate(first10))
    return total % 11 % 10


def check(content: Any) -> Declaration:
    """A declaration from decoded JSON (or a Declaration), with every rule checked; raises DeclarationError."""
    try:
        d = content if isinstance(content, Declaration) else msgspec.convert(content, Declaration)
    except msgspec.ValidationError as exc:
        raise DeclarationError(f"declaration: {exc}") from exc
    for c in (d.hazard_class, *d.subsidiary_classes):
        if c not in HAZARD_CLASSES:
            raise DeclarationError(f"declaration: hazard class {c!r} is not an IMDG class (1.1-1.6, 2.1-2.3, 3-9)")
    needs_group = not d.hazard_class.startswith(NO_PACKING_GROUP)
    if needs_group and d.packing_group is None:
        raise DeclarationError(f"declaration: class {d.hazard_class} needs a packing group (I, II or III)")
    if not needs_group and d.packing_group is not None:
        raise DeclarationError(f"declaration: class {d.hazard_class} has no packing group")
    if container_check_digit(d.container[:10]) != int(d.container[10]):
        raise DeclarationError(
            f"declaration: container {d.container} fails its ISO 6346 check digit "
            f"(expected {container_check_digit(d.container[:10])})"
        )
    return d


# ---- keys ------------------------------------------------------------------------------------------------
def new_key() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def load_private(pem: bytes) -> X25519PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, X25519PrivateKey):
        raise DeclarationError("not an X25519 private key")
    return key


def public_b64(key: X25519PrivateKey | X25519PublicKey) -> str:
    pub = key.public_key() if isinstance(key, X25519PrivateKey) else key
    return b64(pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def fingerprint(public: str) -> str:
    """A registered key's short name: the first 32 hex digits of SHA-256 of its 32 raw bytes."""
    return hashlib.sha256(unb64(public)).hexdigest()[:32]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError) as exc:
        raise DeclarationError(f"not base64: {text[:40]!r}") from exc


# ---- sealing ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Header:
    """What the ciphertext is bound to."""

    chain_id: str
    decl_id: str
    version: int
    shipper: str
    carrier: str

    def aad(self) -> bytes:
        return f"{SCHEME}\n{self.chain_id}\n{self.decl_id}\n{self.version}\n{self.shipper}\n{self.carrier}".encode()


def _kek(shared: bytes, header: Header, org: str, epk: bytes, recipient: bytes) -> bytes:
    info = b"%s/wrap\n%s\n%s\n" % (SCHEME.encode(), header.aad(), org.encode()) + epk + recipient
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


def wrap(data_key: bytes, header: Header, org: str, public: str) -> dict[str, str]:
    """The data key wrapped for ``org``'s registered X25519 key (base64)."""
    recipient = unb64(public)
    eph = X25519PrivateKey.generate()
    epk = eph.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    shared = eph.exchange(X25519PublicKey.from_public_bytes(recipient))
    nonce = os.urandom(12)
    wrapped = AESGCM(_kek(shared, header, org, epk, recipient)).encrypt(nonce, data_key, header.aad())
    return {"epk": b64(epk), "nonce": b64(nonce), "wrapped": b64(wrapped), "fp": fingerprint(public)}


def unwrap(entry: dict[str, str], header: Header, org: str, key: X25519PrivateKey) -> bytes:
    recipient = unb64(public_b64(key))
    epk = unb64(entry["epk"])
    try:
        shared = key.exchange(X25519PublicKey.from_public_bytes(epk))
        kek = _kek(shared, header, org, epk, recipient)
        return AESGCM(kek).decrypt(unb64(entry["nonce"]), unb64(entry["wrapped"]), header.aad())
    except (InvalidTag, ValueError) as exc:
        raise DeclarationError(f"the data key wrapped for {org} does not open with this key") from exc


def seal(content: Declaration, header: Header, readers: dict[str, str]) -> dict[str, Any]:
    """``{ct, nonce, keys}``: the content encrypted, its data key wrapped for each reader ``{org: public}``."""
    data_key = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(12)
    ct = AESGCM(data_key).encrypt(nonce, msgspec.json.encode(content), header.aad())
    return {
        "ct": b64(ct),
        "nonce": b64(nonce),
        "keys": {org: wrap(data_key, header, org, pub) for org, pub in sorted(readers.items())},
    }


def _reason_key(data_key: bytes, header: Header) -> bytes:
    """The key a version's rejection reason is sealed with: derived from its data key, bound to its header."""
    info = b"%s/reason\n%s" % (SCHEME.encode(), header.aad())
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(data_key)


def seal_reason(reason: str, data_key: bytes, header: Header) -> dict[str, str]:
    """``{ct, nonce}``: a rejection reason readable by whoever holds the version's data key (shipper, carrier)."""
    if not 1 <= len(reason) <= REASON_CHARS_MAX:
        raise DeclarationError(f"a reason is 1 to {REASON_CHARS_MAX} characters")
    nonce = os.urandom(12)
    ct = AESGCM(_reason_key(data_key, header)).encrypt(nonce, reason.encode(), header.aad() + b"\nreason")
    return {"ct": b64(ct), "nonce": b64(nonce)}


def open_reason(record: dict[str, Any], chain_id: str, org: str, key: X25519PrivateKey) -> str | None:
    """The carrier's reason for rejecting this version, as ``org`` reads it (None if the version has none)."""
    sealed = (record.get("decision") or {}).get("reason")
    if sealed is None:
        return None
    if not isinstance(sealed, dict):
        raise DeclarationError(f"the reason of version {record['version']} of {record['id']} is not sealed")
    header = header_of(record, chain_id)
    data_key = data_key_of(record, chain_id, org, key)
    try:
        plain = AESGCM(_reason_key(data_key, header)).decrypt(
            unb64(sealed["nonce"]), unb64(sealed["ct"]), header.aad() + b"\nreason"
        )
    except (InvalidTag, KeyError, TypeError, ValueError) as exc:
        raise DeclarationError(f"the reason of version {record['version']} of {record['id']} does not open") from exc
    return plain.decode("utf-8", "replace")


def header_of(record: dict[str, Any], chain_id: str) -> Header:
    return Header(chain_id, record["id"], record["version"], record["shipper"], record["carrier"])


def data_key_of(record: dict[str, Any], chain_id: str, org: str, key: X25519PrivateKey) -> bytes:
    entry = (record.get("keys") or {}).get(org)
    if entry is None:
        raise DeclarationError(f"version {record['version']} of {record['id']} is not readable by {org}")
    return unwrap(entry, header_of(record, chain_id), org, key)


def open_record(record: dict[str, Any], chain_id: str, org: str, key: X25519PrivateKey) -> Declaration:
    """The content of one declaration version as ``org`` reads it; raises DeclarationError."""
    data_key = data_key_of(record, chain_id, org, key)
    try:
        plain = AESGCM(data_key).decrypt(unb64(record["nonce"]), unb64(record["ct"]), header_of(record, chain_id).aad())
    except InvalidTag as exc:
        raise DeclarationError(
            f"version {record['version']} of {record['id']} was altered: it does not decrypt"
        ) from exc
    return check(msgspec.json.decode(plain))


def rewrap(
    record: dict[str, Any], chain_id: str, org: str, key: X25519PrivateKey, readers: dict[str, str]
) -> dict[str, dict[str, str]]:
    """Wraps of a version's data key for more readers, made by ``org`` (the carrier) who can read it."""
    data_key = data_key_of(record, chain_id, org, key)
    header = header_of(record, chain_id)
    return {o: wrap(data_key, header, o, pub) for o, pub in sorted(readers.items())}


ORG = ORG_ID_CHARS  # liangcao.domain: the one organisation id rule
NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
#: A declaration id: its shipper's organisation, a slash, and a name of the shipper's choosing.
ID = re.compile(rf"^{ORG}/{NAME}\Z")


def valid_id(decl_id: str) -> bool:
    """Whether ``decl_id`` is a full declaration id ``<shipper org>/<name>``."""
    return bool(ID.match(decl_id))


def qualify(decl_id: str, org: str) -> str:
    """``org1/DG-1`` for ``DG-1`` said by a member of ``org1``; a full id as it is. Raises DeclarationError."""
    full = decl_id if "/" in decl_id else f"{org}/{decl_id}"
    if not valid_id(full):
        raise DeclarationError(
            f"declaration id {decl_id!r}: [shipper org/]name, the name 1-64 letters, digits, '.', '_' or '-'"
        )
    return full
