"""The payment-bound challenge: 32 bytes that commit to what the shopper is paying, whom, and until when.

As in W3C Secure Payment Confirmation, the authenticator signs ``SHA-256(clientDataJSON)`` and the
clientDataJSON carries the challenge, so a signature over this challenge is a signature over the order id,
the payee, the amount and currency, a server nonce and the expiry. The encoding is unambiguous (every text
is length-prefixed, integers are fixed-width big-endian) and starts with a domain tag, so no other message
of the project can be read as a payment challenge, and two different payments never share an encoding.
A nonce of 32 random bytes makes two challenges for the same order (a retry) distinct, so each is
answered once. Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

DOMAIN = b"liangcao/authn/payment-challenge/v1\x00"
NONCE_BYTES = 32


@dataclass(frozen=True, slots=True)
class PaymentTerms:
    """What a payment challenge commits to (everything the shopper's signature is over)."""

    rp_id: str
    order_id: str
    payee: str
    amount_fen: int
    currency: str
    nonce: bytes
    expires_ms: int


def _text(value: str) -> bytes:
    raw = value.encode("utf-8")
    return len(raw).to_bytes(2, "big") + raw


def challenge_bytes(terms: PaymentTerms) -> bytes:
    """SHA-256 over the canonical encoding of ``terms``: the WebAuthn challenge for this payment."""
    if len(terms.nonce) != NONCE_BYTES:
        raise ValueError(f"a nonce is {NONCE_BYTES} bytes")
    if not 0 <= terms.amount_fen < 2**63 or not 0 <= terms.expires_ms < 2**63:
        raise ValueError("amount and expiry are non-negative 63-bit integers")
    encoded = b"".join(
        (
            DOMAIN,
            _text(terms.rp_id),
            _text(terms.order_id),
            _text(terms.payee),
            terms.amount_fen.to_bytes(8, "big"),
            _text(terms.currency),
            terms.nonce,
            terms.expires_ms.to_bytes(8, "big"),
        )
    )
    return hashlib.sha256(encoded).digest()
