"""Who signs: a private key with its certificate, its signatures, and loading one from a member's folder.

Foundations layer (crypto): the ledger's transactions, the SDK and the node all sign with a :class:`Signer`;
keys never leave the process that holds them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from liangcao.crypto import identity, keys
from liangcao.crypto.identity import parse_certificate


@dataclass(frozen=True, slots=True)
class Signature:
    cert: bytes  # DER
    sig: bytes


@dataclass(frozen=True)
class Signer:
    """A private key with its certificate. Keys never leave the process that holds them."""

    key: Ed25519PrivateKey
    cert: bytes  # DER
    member_id: str = field(default="")

    def __post_init__(self) -> None:
        if not self.member_id:
            object.__setattr__(self, "member_id", parse_certificate(self.cert).member_id)

    def sign_tx_id(self, tx_id: str) -> Signature:
        return Signature(self.cert, keys.sign(self.key, keys.DOMAIN_TX, bytes.fromhex(tx_id)))


def load_signer(member_dir: str | Path) -> Signer:
    """A member's key and certificate from its folder (``key.pem``, ``cert.pem``)."""
    d = Path(member_dir)
    return Signer(
        keys.load_private_pem((d / "key.pem").read_bytes()), identity.pem_to_der((d / "cert.pem").read_bytes())
    )
