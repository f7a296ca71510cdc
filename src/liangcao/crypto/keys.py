"""Ed25519 keys, signatures with domain separation, and the base64/PEM forms they travel in."""

from __future__ import annotations

import base64
import binascii
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

# Each kind of signed message gets its own prefix, so that a signature made for one purpose can never be
# replayed as another (a transaction signature as a block seal, say).
DOMAIN_TX = b"liangcao/tx/v1\n"
DOMAIN_BLOCK = b"liangcao/block/v1\n"
DOMAIN_ATTEST = b"liangcao/attest/v1\n"
DOMAIN_CUT = b"liangcao/cut/v1\n"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    """Strict base64 decoding: padding and alphabet are checked, so one text has one meaning."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise ValueError(f"not valid base64: {exc}") from exc


def generate(seed: bytes | None = None) -> Ed25519PrivateKey:
    """A new key; with ``seed``, the key derived from it (only for simulations that must replay exactly)."""
    if seed is None:
        return Ed25519PrivateKey.generate()
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"liangcao/sim-key/v1\n" + seed).digest())


def sign(key: Ed25519PrivateKey, domain: bytes, message: bytes) -> bytes:
    return key.sign(domain + message)


def verify(public: Ed25519PublicKey, domain: bytes, message: bytes, signature: bytes) -> bool:
    try:
        public.verify(signature, domain + message)
    except InvalidSignature:
        return False
    return True


def private_pem(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted: the file's permissions protect it (a node home, mode 0600)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_private_pem(data: bytes) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the private key is not an Ed25519 key")
    return key


def public_raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
