"""The refusals of ``liangcao.authn``: stable codes 3200-3299, the one exception, and every limit.

Each refusal of a ceremony has its own code, so a checkout gateway, a risk model or an auditor can tell a
replayed assertion (someone re-sending what they captured) from a cloned authenticator (the counter went
backwards) from a shopper whose phone simply did not verify them (no UV). The numbers never change once
released; ``liangcao.codes`` names them and gives each its HTTP status.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from liangcao import codes
from liangcao.errors import LiangcaoError


class AuthnCode(IntEnum):
    # 320x: the request itself
    BAD_REQUEST = 3200  # malformed field, wrong type, float for money, over a *_max
    MALFORMED_CREDENTIAL = 3201  # the credential JSON, clientDataJSON, authenticatorData or CBOR cannot be read
    UNKNOWN_SHOPPER = 3202
    TOO_MANY_CREDENTIALS = 3203  # credentials_per_shopper_max reached
    DEVICE_NAME_TAKEN = 3204
    # 321x: the ceremony (challenge) itself
    UNKNOWN_CHALLENGE = 3210  # no such ceremony, or one issued to another shopper
    REPLAYED = 3211  # the challenge was already answered (accepted once only)
    CHALLENGE_EXPIRED = 3212
    WRONG_CEREMONY = 3213  # clientData.type is not the one this ceremony expects
    CHALLENGE_MISMATCH = 3214  # the authenticator signed another challenge than this ceremony's
    # 322x: what the payment is bound to
    OTHER_AMOUNT = 3220  # amount or currency differs from what the challenge commits to
    OTHER_PAYEE = 3221
    OTHER_ORDER = 3222
    # 323x: where the assertion was made
    OTHER_ORIGIN = 3230  # clientData.origin is not this relying party's origin
    OTHER_RP_ID = 3231  # authenticatorData's rpIdHash is not SHA-256 of this RP id
    # 324x: the authenticator's claims
    USER_NOT_PRESENT = 3240
    UV_MISSING = 3241  # user verification (fingerprint, face, PIN) was required and not performed
    COUNTER_REGRESSED = 3242  # clone alarm: the signature counter did not move forward (recorded)
    AAGUID_NOT_ALLOWED = 3243  # the authenticator model is not on the consortium's allow-list
    ATTESTATION_REFUSED = 3244  # attestation format not accepted, or its statement does not verify
    UNSUPPORTED_ALGORITHM = 3245
    # 325x: the credential
    UNKNOWN_CREDENTIAL = 3250  # not registered, or registered to another shopper
    REVOKED_CREDENTIAL = 3251
    DUPLICATE_CREDENTIAL = 3252
    BAD_SIGNATURE = 3253
    # 326x: policy
    CONFIRMATION_REQUIRED = 3260  # informational: this payment needs a confirmation (step-up)
    LIMIT_OVER_MAX = 3261  # a password-less limit above passwordless_fen_max


codes.register(
    AuthnCode,
    "authn",
    http={
        AuthnCode.UNKNOWN_SHOPPER: 404,
        AuthnCode.UNKNOWN_CHALLENGE: 404,
        AuthnCode.UNKNOWN_CREDENTIAL: 403,
        AuthnCode.REVOKED_CREDENTIAL: 403,
        AuthnCode.REPLAYED: 409,
        AuthnCode.DEVICE_NAME_TAKEN: 409,
        AuthnCode.DUPLICATE_CREDENTIAL: 409,
        AuthnCode.CHALLENGE_EXPIRED: 410,
        AuthnCode.BAD_SIGNATURE: 403,
        AuthnCode.UV_MISSING: 403,
        AuthnCode.COUNTER_REGRESSED: 403,
        AuthnCode.AAGUID_NOT_ALLOWED: 403,
        AuthnCode.OTHER_ORIGIN: 403,
        AuthnCode.OTHER_RP_ID: 403,
        AuthnCode.OTHER_AMOUNT: 403,
        AuthnCode.OTHER_PAYEE: 403,
        AuthnCode.OTHER_ORDER: 403,
        AuthnCode.CHALLENGE_MISMATCH: 403,
        AuthnCode.USER_NOT_PRESENT: 403,
    },
)


class AuthnError(LiangcaoError):
    """A ceremony or request the relying party refuses; ``code`` is an :class:`AuthnCode`. Nothing is changed
    by a refusal except what the refusal itself records (a consumed challenge, a clone alarm)."""

    def __init__(self, code: AuthnCode, message: str, detail: Any = None) -> None:
        super().__init__(code, message, detail)
        self.authn_code = code


# ---- limits (each enforced where its input arrives) ---------------------------------------------------------
#: how long a shopper has to answer a registration or payment ceremony
challenge_ttl_ms_max = 300_000
challenge_ttl_ms_default = 120_000
#: devices one shopper may hold (revoked ones count until deleted: they keep their clone history)
credentials_per_shopper_max = 16
shopper_chars_max = 128
#: a ceremony (challenge) id: 12 hex digits of time and 20 of randomness; anything longer is refused unread
ceremony_id_chars_max = 64
device_name_chars_max = 64
order_id_chars_max = 128
payee_chars_max = 128
currency_chars_max = 3
#: the largest amount a payment challenge may commit to (10 million yuan, in fen)
amount_fen_max = 1_000_000_000
#: the highest small-payment limit a shopper may choose for payments without confirmation (500 yuan)
passwordless_fen_max = 50_000
#: a credential JSON as posted by a browser is a few KB; packed attestation with a certificate chain ~ 4 KB
credential_json_bytes_max = 32_768
credential_id_bytes_max = 1023  # WebAuthn §5.8.3: a credential id is at most 1023 bytes
#: verified public keys kept in memory (the hot path skips the COSE decoding of a known key)
key_cache_max = 100_000
#: answers judged together by RelyingParty.verify_payments (one durable write)
batch_answers_max = 1_024
#: batches the payment batcher has judged and not yet recorded (each holds its ceremonies' claims)
batches_in_flight_max = 4
#: batches the batcher's judging thread has handed to its signature worker and not yet finished (two: the
#: worker verifies one while the next is checked)
pipeline_batches_max = 2
#: unanswered ceremonies kept in memory (older ones are read from the store when answered)
open_ceremonies_cached_max = 100_000
