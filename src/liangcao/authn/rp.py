"""The relying party: devices (registration ceremonies) and payment confirmation (assertion ceremonies).

Theory of operation. A shopper registers a device: ``registration_options`` issues a ceremony (a random
challenge, kept durably with its expiry) and ``register`` verifies the browser's answer — the clientData
(type, challenge, origin), the authenticatorData (RP id hash, user present, user verified), the attestation
(``none``, or ``packed`` self or full; with an AAGUID allow-list only a ``packed`` chain to a configured root
whose model is on the list) — and stores the credential's public key under a name the shopper chose. To pay,
``payment_challenge`` issues a challenge that is a hash over the payment's terms (``binding``); the device
signs it after verifying the user; ``verify_payment`` accepts exactly that signature, once.

The checks of an answer run in a fixed order, one line each, and each refusal has its own code
(``AuthnCode``)::

    request well formed, amounts integers                     BAD_REQUEST / MALFORMED_CREDENTIAL
    the ceremony exists, is this shopper's, is a payment      UNKNOWN_CHALLENGE   (nothing recorded)
    not answered before                                       REPLAYED            (nothing recorded)
    --- from here on the answer consumes the ceremony, whatever the verdict (recorded durably) ---
    not expired                                               CHALLENGE_EXPIRED
    the gateway's order, payee, amount+currency = the terms   OTHER_ORDER / OTHER_PAYEE / OTHER_AMOUNT
    clientData.type = webauthn.get                            WRONG_CEREMONY
    clientData.challenge = hash(terms)                        CHALLENGE_MISMATCH
    clientData.origin = our origin                            OTHER_ORIGIN
    the credential is this shopper's, and not revoked         UNKNOWN_CREDENTIAL / REVOKED_CREDENTIAL
    authenticatorData.rpIdHash = SHA-256(rp id)               OTHER_RP_ID
    flags: user present, user verified                        USER_NOT_PRESENT / UV_MISSING
    the signature verifies                                    BAD_SIGNATURE
    sign counter moved forward (or both are 0)                COUNTER_REGRESSED: clone alarm, recorded,
                                                              and the credential is revoked

The counter is judged only after the signature: an unsigned counter could otherwise raise false clone
alarms and revoke a shopper's device. Refusals before the ceremony is identified record nothing (anyone can
send garbage); after it, the first answer consumes the ceremony so that a refused answer cannot be retried
against the same challenge.

Why ``webauthn`` (py_webauthn, Duo Labs) rather than ``fido2`` (Yubico): we need the relying-party half
only, and py_webauthn is exactly that: small, typed (``py.typed``), a function per ceremony that takes the
browser's JSON as is, with every attestation format (packed self/full, TPM, Android, Apple) and certificate
chains checked against roots we give. ``fido2`` is a client/CTAP library first (USB HID, PC/SC); its server
part is a thinner layer whose API has moved between major versions. py_webauthn makes the options, parses
the CBOR and verifies attestation statements; its signature helper (``verify_signature``) verifies the
assertions, with the credential's public key decoded once and kept (``key_cache_max``), so the hot path
does not decode COSE and rebuild the EC point for every payment.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_registration_response,
)
from webauthn.helpers import (
    decode_credential_public_key,
    decoded_public_key_to_cryptography,
    parse_attestation_object,
    verify_signature,
)
from webauthn.helpers.cose import COSEAlgorithmIdentifier
from webauthn.helpers.exceptions import InvalidRegistrationResponse, WebAuthnException
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AttestationFormat,
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from liangcao import clock as wallclock
from liangcao.authn import codes as lim
from liangcao.authn.binding import NONCE_BYTES, PaymentTerms, challenge_bytes
from liangcao.authn.codes import AuthnCode, AuthnError
from liangcao.authn.soft import FIDO_GEN_CE_AAGUID, b64url, unb64url
from liangcao.authn.store import Op, Store
from liangcao.authn.verifier import Job, verify_workers_max

if TYPE_CHECKING:
    from liangcao.authn.batch import PaymentBatcher

ALGS = {int(COSEAlgorithmIdentifier.ECDSA_SHA_256): "ES256", int(COSEAlgorithmIdentifier.EDDSA): "EdDSA"}
_SUPPORTED = [COSEAlgorithmIdentifier.ECDSA_SHA_256, COSEAlgorithmIdentifier.EDDSA]
_CURRENCY = re.compile(r"[A-Z]{3}")
# control characters (C0, DEL, C1), the invisible and direction-changing format characters (zero-width,
# bidi marks, embeddings, overrides and isolates, word joiner, byte order mark, Mongolian vowel separator,
# interlinear annotation), line and paragraph separators, and lone surrogates (which are not UTF-8 at all:
# the challenge encoder and SQLite would fail on them). A payee or order id that contains one can show on a
# page as another one does, or not be storable; none has a place in an identifier or a device name.
_CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb\ud800-\udfff]"
)
_FLAG_UP, _FLAG_UV = 0x01, 0x04
RISK_ACTIONS = {"allow": "allow", "step_up": "step_up", "stepup": "step_up", "block": "block", "review": "step_up"}


class Clock(Protocol):
    def now_ms(self) -> int: ...


class _WallClock:
    def now_ms(self) -> int:
        return wallclock.now_ms()


@dataclass(frozen=True, slots=True)
class Credential:
    """A registered device as the relying party knows it (never a private key: that stays on the device)."""

    id: str  # base64url, as the browser names it
    shopper: str
    name: str
    alg: str  # "ES256" or "EdDSA"
    aaguid: str
    fmt: str  # "none" or "packed"
    sign_count: int
    created_ms: int
    last_used_ms: int | None
    revoked_ms: int | None
    revoked_reason: str | None

    @property
    def active(self) -> bool:
        return self.revoked_ms is None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "active": self.active}


@dataclass(frozen=True, slots=True)
class PaymentAnswer:
    """One answer for :meth:`RelyingParty.verify_payments`: the arguments of ``verify_payment``."""

    shopper: str
    challenge_id: str
    credential_json: object
    order_id: str
    payee: str
    amount_fen: int
    currency: str


@dataclass(frozen=True, slots=True)
class Confirmation:
    """A payment the shopper confirmed on a device: the gateway may capture exactly these terms, once."""

    challenge_id: str
    shopper: str
    credential_id: str
    device_name: str
    order_id: str
    payee: str
    amount_fen: int
    currency: str
    sign_count: int
    user_verified: bool
    confirmed_ms: int
    challenge: str  # base64url of the signed challenge (the hash of the terms)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class _Key:
    """A credential's verification state kept in memory: the decoded key and the counter (authoritative in
    this process, written through to the store on every accepted or alarmed assertion)."""

    shopper: str
    name: str
    alg: COSEAlgorithmIdentifier  # the enum, made once (not per payment)
    public: Any
    counter: int
    revoked: bool
    b64_id: str  # the id as the confirmation names it
    cose: bytes  # the public key as registered (what the signature worker decodes and keeps)


class _ResponseIn(msgspec.Struct):
    clientDataJSON: str
    authenticatorData: str
    signature: str
    userHandle: str | None = None


class _AssertionIn(msgspec.Struct):
    id: str
    rawId: str
    type: str
    response: _ResponseIn


class _TokenBinding(msgspec.Struct):
    status: str
    id: str | None = None


class _ClientData(msgspec.Struct):
    type: str
    challenge: str
    origin: str
    crossOrigin: bool = False
    tokenBinding: _TokenBinding | None = None


_assertion_in = msgspec.json.Decoder(_AssertionIn)
_client_data_in = msgspec.json.Decoder(_ClientData)


def _bad(message: str) -> AuthnError:
    return AuthnError(AuthnCode.BAD_REQUEST, message)


def check_text(what: str, value: object, chars_max: int) -> str:
    """A non-empty string of at most ``chars_max`` characters without control characters."""
    if not isinstance(value, str):
        raise _bad(f"{what} must be a string")
    if not value or len(value) > chars_max:
        raise _bad(f"{what} must be 1..{chars_max} characters ({what}_chars_max)")
    # printable ASCII (every id the gateway makes) has none of them: str methods, no regex scan
    if not (value.isascii() and value.isprintable()) and _CONTROL.search(value):
        raise _bad(f"{what} must not contain control, invisible, bidi or surrogate characters")
    return value


def check_amount(value: object) -> int:
    """Money is integer fen: a float, a bool or a string is refused, as is anything over ``amount_fen_max``."""
    if type(value) is not int:
        raise _bad(f"amount_fen must be an integer number of fen, not {type(value).__name__}")
    if not 1 <= value <= lim.amount_fen_max:
        raise _bad(f"amount_fen must be 1..{lim.amount_fen_max} (amount_fen_max)")
    return value


def check_currency(value: object) -> str:
    if not isinstance(value, str) or not _CURRENCY.fullmatch(value):
        raise _bad("currency must be a three-letter ISO 4217 code such as CNY")
    return value


def _credential_json(value: object, kind: type[Any], decoder: msgspec.json.Decoder[Any] | None) -> Any:
    """The browser's PublicKeyCredential JSON, as text, bytes or an already decoded object."""
    try:
        if isinstance(value, str | bytes):
            if len(value) > lim.credential_json_bytes_max:
                raise AuthnError(
                    AuthnCode.BAD_REQUEST, f"credential over credential_json_bytes_max={lim.credential_json_bytes_max}"
                )
            if decoder is not None:
                return decoder.decode(value)
            return msgspec.json.decode(value)
        if isinstance(value, dict):
            if decoder is None:
                # a posted object is bounded as its text would be (registration is rare: encoding it is cheap)
                if len(msgspec.json.encode(value)) > lim.credential_json_bytes_max:
                    raise AuthnError(
                        AuthnCode.BAD_REQUEST,
                        f"credential over credential_json_bytes_max={lim.credential_json_bytes_max}",
                    )
                return value
            converted = msgspec.convert(value, kind)
            if isinstance(converted, _AssertionIn) and _size(converted) > lim.credential_json_bytes_max:
                raise AuthnError(
                    AuthnCode.BAD_REQUEST, f"credential over credential_json_bytes_max={lim.credential_json_bytes_max}"
                )
            return converted
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise AuthnError(AuthnCode.MALFORMED_CREDENTIAL, f"credential JSON unreadable: {exc}") from None
    raise AuthnError(AuthnCode.MALFORMED_CREDENTIAL, "credential must be a JSON object")


def _size(a: _AssertionIn) -> int:
    """The characters of an assertion's texts: what bounds one posted as an object rather than as text."""
    r = a.response
    return (
        len(a.id)
        + len(a.rawId)
        + len(r.clientDataJSON)
        + len(r.authenticatorData)
        + len(r.signature)
        + len(r.userHandle or "")
    )


def _unb64(what: str, text: str) -> bytes:
    try:
        return unb64url(text)
    except (ValueError, TypeError):
        raise AuthnError(AuthnCode.MALFORMED_CREDENTIAL, f"{what} is not base64url") from None


class RelyingParty:
    """The WebAuthn relying party of one site (``rp_id`` and its ``origin``), its state under ``home``.

    Every method either returns or raises :class:`AuthnError` with an :class:`AuthnCode`; store failures are
    ``liangcao.errors.StoreError`` (a fault). Thread-safe: the HTTP router calls it from a thread pool."""

    def __init__(
        self,
        rp_id: str,
        origin: str,
        home: Path,
        clock: Clock | None = None,
        aaguid_allow: set[str] | None = None,
        *,
        attestation_roots: list[bytes] | None = None,
        rp_name: str = "liangcao checkout",
        challenge_ttl_ms: int = lim.challenge_ttl_ms_default,
        synchronous: str = "FULL",
        verify_workers: int = 1,
    ) -> None:
        if not 0 <= verify_workers <= verify_workers_max:
            raise ValueError(f"verify_workers must be 0..{verify_workers_max} (verify_workers_max)")
        if not 1_000 <= challenge_ttl_ms <= lim.challenge_ttl_ms_max:
            raise ValueError(f"challenge_ttl_ms must be 1000..{lim.challenge_ttl_ms_max} (challenge_ttl_ms_max)")
        if aaguid_allow is not None and not attestation_roots:
            # a self-attested or unattested authenticator can claim any AAGUID: an allow-list means nothing
            # unless the AAGUID is vouched for by a certificate chain to a root we trust
            raise ValueError("an AAGUID allow-list needs attestation_roots to check the vendors' chains against")
        self.rp_id = rp_id
        self.origin = origin
        self.rp_name = rp_name
        self.clock: Clock = clock if clock is not None else _WallClock()
        self.aaguid_allow = {a.lower() for a in aaguid_allow} if aaguid_allow is not None else None
        self.attestation_roots = list(attestation_roots or [])
        self.challenge_ttl_ms = challenge_ttl_ms
        # signature worker processes of the payment batcher (0: its signatures are verified in this process)
        self.verify_workers = verify_workers
        self._rp_id_hash = hashlib.sha256(rp_id.encode()).digest()
        self._store = Store(home, synchronous=synchronous)
        self._lock = threading.Lock()
        self._claimed: set[str] = set()
        self._keys: OrderedDict[bytes, _Key] = OrderedDict()
        # payment ceremonies opened by this process and not yet answered, as _ceremony reads them: the hot
        # path then needs no read of the store (after a restart they are read from it)
        self._open_rows: OrderedDict[str, tuple[Any, ...]] = OrderedDict()
        # callers of verify_payment waiting to be judged, and whether one of them is judging (see _judge_queue)
        self._queue: list[_Pending] = []
        self._queue_lock = threading.Lock()
        self._enrol_lock = threading.Lock()
        self._judging = False
        self._batcher: PaymentBatcher | None = None

    def close(self) -> None:
        with self._lock:
            batcher = self._batcher
        if batcher is not None:  # what it holds is judged and recorded first
            batcher.close()
        self._store.close()

    def payment_batcher(self) -> PaymentBatcher:
        """The relying party's one micro-batcher of payment answers (``liangcao.authn.batch``): the gateway's
        step-up path. One per relying party: its single judging thread keeps each device's answers in order."""
        with self._lock:
            if self._batcher is None:
                from liangcao.authn.batch import PaymentBatcher

                self._batcher = PaymentBatcher(self)
            return self._batcher

    def __enter__(self) -> RelyingParty:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ---- shoppers and devices -----------------------------------------------------------------------------
    def _user_handle(self, shopper: str, create: bool) -> bytes | None:
        found = self._store.row("SELECT user_handle FROM shoppers WHERE shopper = ?", (shopper,))
        if found is not None:
            return bytes(found[0])
        if not create:
            return None
        handle = os.urandom(32)  # what authenticators store: random, so it says nothing about the shopper
        self._store.write(
            [
                (
                    "INSERT OR IGNORE INTO shoppers (shopper, user_handle, created_ms) VALUES (?, ?, ?)",
                    (shopper, handle, self.clock.now_ms()),
                )
            ]
        )
        again = self._store.row("SELECT user_handle FROM shoppers WHERE shopper = ?", (shopper,))
        assert again is not None
        return bytes(again[0])

    def credentials(self, shopper: str) -> list[Credential]:
        """The shopper's devices, oldest first, revoked ones included (they keep their history)."""
        check_text("shopper", shopper, lim.shopper_chars_max)
        rows = self._store.rows(
            "SELECT id, shopper, name, alg, aaguid, fmt, sign_count, created_ms, last_used_ms, revoked_ms,"
            " revoked_reason FROM credentials WHERE shopper = ? ORDER BY created_ms, rowid",
            (shopper,),
        )
        return [_credential(r) for r in rows]

    def credential(self, shopper: str, credential_id: str) -> Credential:
        for c in self.credentials(shopper):
            if c.id == credential_id:
                return c
        raise AuthnError(AuthnCode.UNKNOWN_CREDENTIAL, f"{shopper} has no device {credential_id!r}")

    def rename(self, shopper: str, credential_id: str, name: str) -> Credential:
        """Give a device another name (unique among the shopper's devices)."""
        check_text("device_name", name, lim.device_name_chars_max)
        with self._enrol_lock:  # the name is checked and taken at once (as a registration takes it)
            cred = self.credential(shopper, credential_id)
            if any(c.name == name and c.id != cred.id for c in self.credentials(shopper)):
                raise AuthnError(AuthnCode.DEVICE_NAME_TAKEN, f"{shopper} already has a device named {name!r}")
            self._store.write([("UPDATE credentials SET name = ? WHERE id = ?", (name, unb64url(cred.id)))])
        with self._lock:
            key = self._keys.get(unb64url(cred.id))
            if key is not None:
                key.name = name
        return self.credential(shopper, credential_id)

    def revoke(self, shopper: str, credential_id: str, reason: str = "revoked by the shopper") -> Credential:
        """Stop accepting a device (lost, sold, replaced); idempotent. Its history stays."""
        cred = self.credential(shopper, credential_id)
        if cred.active:
            self._revoke(unb64url(cred.id), reason, [])
        return self.credential(shopper, credential_id)

    def _revoke(self, raw_id: bytes, reason: str, more: list[Op]) -> None:
        with self._lock:
            key = self._keys.get(raw_id)
            if key is not None:
                key.revoked = True
        self._store.write(
            [
                (
                    "UPDATE credentials SET revoked_ms = ?, revoked_reason = ? WHERE id = ? AND revoked_ms IS NULL",
                    (self.clock.now_ms(), reason, raw_id),
                ),
                *more,
            ]
        )

    def clone_alarms(self, shopper: str) -> list[dict[str, Any]]:
        """Every assertion whose counter did not move forward: a second copy of the key may exist."""
        rows = self._store.rows(
            "SELECT credential_id, at_ms, stored_count, seen_count, ceremony_id FROM clone_alarms"
            " WHERE shopper = ? ORDER BY seq",
            (shopper,),
        )
        return [
            {
                "credential_id": b64url(bytes(r[0])),
                "at_ms": r[1],
                "stored_count": r[2],
                "seen_count": r[3],
                "ceremony_id": r[4],
            }
            for r in rows
        ]

    # ---- registration -------------------------------------------------------------------------------------
    def registration_options(self, shopper: str, device_name: str) -> dict[str, Any]:
        """Open a registration ceremony: ``{"ceremony_id", "expires_ms", "publicKey": creation options}``."""
        check_text("shopper", shopper, lim.shopper_chars_max)
        check_text("device_name", device_name, lim.device_name_chars_max)
        existing = self.credentials(shopper)
        self._check_room(shopper, device_name, existing)
        handle = self._user_handle(shopper, create=True)
        assert handle is not None
        challenge = os.urandom(32)
        options = generate_registration_options(
            rp_id=self.rp_id,
            rp_name=self.rp_name,
            user_name=shopper,
            user_id=handle,
            user_display_name=shopper,
            challenge=challenge,
            timeout=self.challenge_ttl_ms,
            attestation=(
                AttestationConveyancePreference.DIRECT
                if self.aaguid_allow is not None
                else AttestationConveyancePreference.NONE
            ),
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.DISCOURAGED,
                user_verification=UserVerificationRequirement.REQUIRED,
            ),
            exclude_credentials=[PublicKeyCredentialDescriptor(id=unb64url(c.id)) for c in existing],
            supported_pub_key_algs=_SUPPORTED,
        )
        ceremony_id, expires_ms = self._open("register", shopper, challenge, device_name=device_name)
        return {"ceremony_id": ceremony_id, "expires_ms": expires_ms, "publicKey": json.loads(options_to_json(options))}

    def _check_room(self, shopper: str, device_name: str, existing: list[Credential]) -> None:
        if len(existing) >= lim.credentials_per_shopper_max:
            raise AuthnError(
                AuthnCode.TOO_MANY_CREDENTIALS,
                f"{shopper} has {len(existing)} devices (credentials_per_shopper_max={lim.credentials_per_shopper_max})",
            )
        if any(c.name == device_name for c in existing):
            raise AuthnError(AuthnCode.DEVICE_NAME_TAKEN, f"{shopper} already has a device named {device_name!r}")

    def _open(self, kind: str, shopper: str, challenge: bytes, **terms: Any) -> tuple[str, int]:
        now = self.clock.now_ms()
        # time first, then 80 random bits: new ids land at the end of the primary-key index (and the answers,
        # which come within minutes, on its last pages) instead of on random pages of a large table
        ceremony_id = max(0, now).to_bytes(6, "big").hex() + os.urandom(10).hex()  # hex: sorts as it counts
        expires_ms = int(terms.pop("expires_ms", now + self.challenge_ttl_ms))
        row = (
            kind, challenge, terms.get("device_name"), terms.get("order_id"), terms.get("payee"),
            terms.get("amount_fen"), terms.get("currency"), expires_ms, terms.get("nonce"), shopper, None,
            b64url(challenge),
        )  # fmt: skip
        self._store.write(
            [
                (
                    "INSERT INTO ceremonies (id, kind, shopper, challenge, device_name, order_id, payee, amount_fen,"
                    " currency, nonce, created_ms, expires_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        ceremony_id,
                        kind,
                        shopper,
                        challenge,
                        terms.get("device_name"),
                        terms.get("order_id"),
                        terms.get("payee"),
                        terms.get("amount_fen"),
                        terms.get("currency"),
                        terms.get("nonce"),
                        now,
                        expires_ms,
                    ),
                )
            ]
        )
        with self._lock:
            self._open_rows[ceremony_id] = row
            while len(self._open_rows) > lim.open_ceremonies_cached_max:
                self._open_rows.popitem(last=False)
        return ceremony_id, expires_ms

    def register(self, shopper: str, ceremony_id: str, credential_json: object) -> Credential:
        """Verify a ``navigator.credentials.create()`` answer and store the device; once per ceremony."""
        check_text("shopper", shopper, lim.shopper_chars_max)
        check_text("ceremony_id", ceremony_id, lim.ceremony_id_chars_max)
        body = _credential_json(credential_json, dict, None)
        if not isinstance(body, dict):
            raise AuthnError(AuthnCode.MALFORMED_CREDENTIAL, "credential must be a JSON object")
        with self._claim(ceremony_id):
            row = self._ceremony(ceremony_id, shopper, "register")
            raw_id = b""
            try:
                cred, raw_id = self._verify_registration(shopper, row, body)
                # the checks against the other devices and their insert, one registration at a time: two
                # at once could both find the credential id (or the device name) free (registrations are
                # rare; the signature and attestation checks above run outside the lock)
                with self._enrol_lock:
                    self._check_new(shopper, str(row[2]), raw_id)
                    self._consume(ceremony_id, None, raw_id, [cred])
            except AuthnError as refusal:
                self._consume(ceremony_id, refusal.authn_code, raw_id or None, [])
                raise
        return self.credential(shopper, b64url(raw_id))

    def _verify_registration(self, shopper: str, row: tuple[Any, ...], body: dict[str, Any]) -> tuple[Op, bytes]:
        challenge, device_name, expires_ms = bytes(row[1]), str(row[2]), int(row[7])
        now = self.clock.now_ms()
        if now > expires_ms:
            raise AuthnError(AuthnCode.CHALLENGE_EXPIRED, f"registration ceremony expired at {expires_ms}")
        response = body.get("response")
        if not isinstance(response, dict):
            raise AuthnError(AuthnCode.MALFORMED_CREDENTIAL, "credential has no response object")
        client = self._client_data(response.get("clientDataJSON"))
        self._check_client(client, "webauthn.create", challenge)
        try:
            att = parse_attestation_object(_unb64("attestationObject", str(response.get("attestationObject", ""))))
        except WebAuthnException as exc:
            raise AuthnError(AuthnCode.MALFORMED_CREDENTIAL, f"attestationObject unreadable: {exc}") from None
        auth = att.auth_data
        self._check_auth(auth.rp_id_hash, (_FLAG_UP if auth.flags.up else 0) | (_FLAG_UV if auth.flags.uv else 0))
        attested = auth.attested_credential_data
        if attested is None:
            raise AuthnError(AuthnCode.MALFORMED_CREDENTIAL, "authenticatorData carries no attested credential")
        raw_id = bytes(attested.credential_id)
        if not 1 <= len(raw_id) <= lim.credential_id_bytes_max:
            raise AuthnError(AuthnCode.MALFORMED_CREDENTIAL, "credential id must be 1..1023 bytes")
        if att.fmt not in (AttestationFormat.NONE, AttestationFormat.PACKED):
            raise AuthnError(AuthnCode.ATTESTATION_REFUSED, f"attestation format {att.fmt!s} is not accepted")
        try:
            alg = int(decode_credential_public_key(attested.credential_public_key).alg)
        except Exception:  # the library raises several kinds for an unreadable COSE key
            raise AuthnError(AuthnCode.MALFORMED_CREDENTIAL, "credential public key unreadable") from None
        if alg not in ALGS:
            raise AuthnError(AuthnCode.UNSUPPORTED_ALGORITHM, f"COSE algorithm {alg} is not ES256 or EdDSA")
        aaguid = _uuid(bytes(attested.aaguid))
        if self.aaguid_allow is not None:
            self._check_model(aaguid, att)
        try:
            verified = verify_registration_response(
                credential=body,
                expected_challenge=challenge,
                expected_rp_id=self.rp_id,
                expected_origin=self.origin,
                require_user_verification=True,
                supported_pub_key_algs=_SUPPORTED,
                pem_root_certs_bytes_by_fmt=(
                    {AttestationFormat.PACKED: self.attestation_roots} if self.attestation_roots else None
                ),
            )
        except InvalidRegistrationResponse as exc:
            raise AuthnError(AuthnCode.ATTESTATION_REFUSED, f"registration does not verify: {exc}") from None
        except WebAuthnException as exc:
            raise AuthnError(AuthnCode.MALFORMED_CREDENTIAL, f"registration unreadable: {exc}") from None
        if bytes(verified.credential_id) != raw_id:
            raise AuthnError(AuthnCode.MALFORMED_CREDENTIAL, "credential id differs from the attested one")
        insert: Op = (
            "INSERT INTO credentials (id, shopper, name, public_key, alg, aaguid, fmt, sign_count, created_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (raw_id, shopper, device_name, bytes(verified.credential_public_key), alg, aaguid, "packed" if att.fmt == AttestationFormat.PACKED else "none",
             int(verified.sign_count), now),
        )  # fmt: skip
        return insert, raw_id

    def _check_new(self, shopper: str, device_name: str, raw_id: bytes) -> None:
        if self._store.row("SELECT 1 FROM credentials WHERE id = ?", (raw_id,)) is not None:
            raise AuthnError(AuthnCode.DUPLICATE_CREDENTIAL, "this credential is already registered")
        self._check_room(shopper, device_name, self.credentials(shopper))

    def _check_model(self, aaguid: str, att: Any) -> None:
        assert self.aaguid_allow is not None
        if aaguid not in self.aaguid_allow:
            raise AuthnError(AuthnCode.AAGUID_NOT_ALLOWED, f"authenticator model {aaguid} is not on the allow-list")
        x5c = att.att_stmt.x5c if att.fmt == AttestationFormat.PACKED else None
        if not x5c:
            raise AuthnError(
                AuthnCode.ATTESTATION_REFUSED, "the allow-list needs a packed attestation with a certificate chain"
            )
        try:
            leaf = x509.load_der_x509_certificate(bytes(x5c[0]))
            ext = leaf.extensions.get_extension_for_oid(FIDO_GEN_CE_AAGUID).value
        except x509.ExtensionNotFound:
            return  # WebAuthn §8.2.1: the extension is optional; the chain still vouches for the vendor
        except ValueError:
            raise AuthnError(AuthnCode.ATTESTATION_REFUSED, "attestation certificate unreadable") from None
        value = ext.value if isinstance(ext, x509.UnrecognizedExtension) else b""
        if value != b"\x04\x10" + bytes.fromhex(aaguid.replace("-", "")):  # DER OCTET STRING of 16 bytes
            raise AuthnError(AuthnCode.ATTESTATION_REFUSED, "attestation certificate names another model (AAGUID)")

    # ---- payments -----------------------------------------------------------------------------------------
    def set_passwordless_limit(self, shopper: str, limit_fen: int) -> int:
        """The shopper's choice: payments up to ``limit_fen`` need no confirmation unless risk asks for one.
        0 turns it off; at most ``passwordless_fen_max``."""
        check_text("shopper", shopper, lim.shopper_chars_max)
        if type(limit_fen) is not int or limit_fen < 0:
            raise _bad("limit_fen must be a non-negative integer number of fen")
        if limit_fen > lim.passwordless_fen_max:
            raise AuthnError(
                AuthnCode.LIMIT_OVER_MAX,
                f"limit {limit_fen} fen is over passwordless_fen_max={lim.passwordless_fen_max}",
            )
        self._user_handle(shopper, create=True)
        self._store.write([("UPDATE shoppers SET passwordless_fen = ? WHERE shopper = ?", (limit_fen, shopper))])
        return limit_fen

    def passwordless_limit(self, shopper: str) -> int:
        found = self._store.row("SELECT passwordless_fen FROM shoppers WHERE shopper = ?", (shopper,))
        return int(found[0]) if found is not None else 0

    def needs_confirmation(self, shopper: str, amount_fen: int, risk_action: str) -> bool:
        """Whether this payment must be confirmed on a device (step-up).

        The risk decision comes first: ``step_up`` (or ``review``) demands a confirmation even under the
        shopper's password-less limit; ``block`` is answered True too (a gateway refuses a blocked payment
        anyway, and must never let one through for lack of a confirmation). ``allow`` leaves it to the
        shopper's opt-in limit: over it, or with no limit chosen, the payment is confirmed."""
        check_text("shopper", shopper, lim.shopper_chars_max)
        check_amount(amount_fen)
        action = RISK_ACTIONS.get(str(getattr(risk_action, "value", risk_action)).strip().lower().replace("-", "_"))
        if action is None:
            raise _bad(f"risk_action must be one of allow, step_up, block, not {risk_action!r}")
        if action != "allow":
            return True
        return amount_fen > self.passwordless_limit(shopper)

    def payment_challenge(
        self, shopper: str, order_id: str, payee: str, amount_fen: int, currency: str
    ) -> dict[str, Any]:
        """Open a payment confirmation: ``{"challenge_id", "expires_ms", "payment", "publicKey": request
        options}``; the challenge is the hash of these terms (``binding.challenge_bytes``)."""
        check_text("shopper", shopper, lim.shopper_chars_max)
        check_text("order_id", order_id, lim.order_id_chars_max)
        check_text("payee", payee, lim.payee_chars_max)
        check_amount(amount_fen)
        check_currency(currency)
        active = [c for c in self.credentials(shopper) if c.active]
        if not active:
            raise AuthnError(AuthnCode.UNKNOWN_SHOPPER, f"{shopper} has no registered device to confirm with")
        nonce = os.urandom(NONCE_BYTES)
        expires_ms = self.clock.now_ms() + self.challenge_ttl_ms
        terms = PaymentTerms(self.rp_id, order_id, payee, amount_fen, currency, nonce, expires_ms)
        challenge = challenge_bytes(terms)
        options = generate_authentication_options(
            rp_id=self.rp_id,
            challenge=challenge,
            timeout=self.challenge_ttl_ms,
            allow_credentials=[PublicKeyCredentialDescriptor(id=unb64url(c.id)) for c in active],
            user_verification=UserVerificationRequirement.REQUIRED,
        )
        challenge_id, _ = self._open(
            "payment", shopper, challenge, order_id=order_id, payee=payee, amount_fen=amount_fen,
            currency=currency, nonce=nonce, expires_ms=expires_ms,
        )  # fmt: skip
        return {
            "challenge_id": challenge_id,
            "expires_ms": expires_ms,
            "payment": {"order_id": order_id, "payee": payee, "amount_fen": amount_fen, "currency": currency},
            "publicKey": json.loads(options_to_json(options)),
        }

    def verify_payment(
        self,
        shopper: str,
        challenge_id: str,
        credential_json: object,
        order_id: str,
        payee: str,
        amount_fen: int,
        currency: str,
    ) -> Confirmation:
        """Accept the shopper's assertion over exactly this payment, once; else AuthnError (see the table in
        the module docstring for the order of the checks and their codes). Returns once the verdict is
        durable."""
        terms = (order_id, payee, amount_fen, currency)
        # read on the caller's thread: a malformed request is refused at once and never joins the queue
        mine = _Pending(shopper, challenge_id, self._payment_in(shopper, challenge_id, credential_json, terms), terms)
        with self._queue_lock:
            self._queue.append(mine)
            lead = not self._judging
            self._judging = True
        if not lead:
            mine.signal.acquire()  # woken once: with the verdict, or to judge the queue
            lead = mine.lead
        if lead:
            self._judge_queue(mine)
        if mine.error is not None:
            raise mine.error
        if isinstance(mine.verdict, AuthnError):
            raise mine.verdict
        assert mine.verdict is not None
        return mine.verdict

    def _judge_queue(self, mine: _Pending) -> None:
        """Judge every answer waiting (``mine`` first), hand the lead on, then record the verdicts.

        Concurrent callers of ``verify_payment`` are judged by one thread at a time, as one
        ``verify_payments`` batch: the others sleep until their verdict is durable instead of taking turns
        on the GIL (30 threads judging at once spend more on the hand-offs than on the checks). The lead
        passes to the next waiter before this batch's durable write, so the next batch is judged while this
        one is fsynced (the store commits concurrent writes together). The claims are held until the write
        is durable, as in ``verify_payments``: an answer is never judged twice."""
        with self._queue_lock:
            batch = self._queue[: lim.batch_answers_max]
            del self._queue[: len(batch)]
        results: list[Confirmation | AuthnError] = []
        ops: list[Op] = []
        claims: list[str] = []
        error: BaseException | None = None
        try:
            results, ops, claims = self._judge_many([(p.shopper, p.challenge_id, p.assertion, p.terms) for p in batch])
        except BaseException as exc:  # a store fault while reading: every answer of the batch gets it
            error = exc
        with self._queue_lock:
            successor = self._queue[0] if self._queue else None
            if successor is None:
                self._judging = False
        if successor is not None:
            successor.lead = True
            successor.signal.release()
        try:
            if ops and error is None:
                self._store.write(ops)
        except BaseException as exc:
            error = exc
            self._forget([p.assertion for p in batch])
        finally:
            self._release(claims)
        for k, p in enumerate(batch):
            p.error = error
            p.verdict = results[k] if error is None else None
            if p is not mine:
                p.signal.release()

    def verify_payments(self, answers: Sequence[PaymentAnswer]) -> list[Confirmation | AuthnError]:
        """Many answers at once (a gateway's micro-batch in a surge): each judged exactly as
        :meth:`verify_payment` judges it, in order (two answers of one device keep their counter order),
        and every verdict recorded in one durable write. One result per answer, in order: the
        Confirmation, or the AuthnError refusing it. A store failure is a fault for the whole batch."""
        if len(answers) > lim.batch_answers_max:
            raise _bad(f"{len(answers)} answers: at most batch_answers_max={lim.batch_answers_max} at once")
        items: list[tuple[str, str, _AssertionIn | AuthnError, tuple[str, str, int, str]]] = []
        for a in answers:
            terms = (a.order_id, a.payee, a.amount_fen, a.currency)
            try:
                items.append(
                    (
                        a.shopper,
                        a.challenge_id,
                        self._payment_in(a.shopper, a.challenge_id, a.credential_json, terms),
                        terms,
                    )
                )
            except AuthnError as refusal:
                items.append((a.shopper, a.challenge_id, refusal, terms))
        results, ops, claims = self._judge_many(items)
        try:
            if ops:
                self._store.write(ops)
        except BaseException:
            self._forget([a for _, _, a, _ in items])
            raise
        finally:
            self._release(claims)
        return results

    def _forget(self, assertions: Sequence[_AssertionIn | AuthnError]) -> None:
        """After a failed durable write: the devices' counters (and a clone alarm's revocation) moved in
        memory only; drop those keys so the next use reads the store again. Otherwise the same answer, sent
        again once the disk is back, would look like a clone (its counter not above the one never recorded)
        and revoke the shopper's device. The ceremonies need nothing: unrecorded, the store shows them open."""
        with self._lock:
            for a in assertions:
                if isinstance(a, _AssertionIn):
                    try:
                        self._keys.pop(unb64url(a.rawId), None)
                    except ValueError:
                        continue

    def _judge_many(
        self, items: Sequence[tuple[str, str, _AssertionIn | AuthnError, tuple[str, str, int, str]]]
    ) -> tuple[list[Confirmation | AuthnError], list[Op], list[str]]:
        """The verdicts on read answers (or their reading's refusal), in order, the statements recording
        them and the ceremonies claimed, which the caller releases (``_release``) once they are durable (or
        at once, on an exception). The three phases of ``_check_many``, the signatures verified here (the
        batcher with a worker process verifies them there), ``_finish_many``."""
        checks, claims = self._check_many(items)
        try:
            verdicts = [self._verify_one(job) for job in _jobs(checks)]
            results, ops = self._finish_many(checks, verdicts)
        except BaseException:
            self._release(claims)
            raise
        return results, ops, claims

    def _check_many(
        self, items: Sequence[tuple[str, str, _AssertionIn | AuthnError, tuple[str, str, int, str]]]
    ) -> tuple[list[_Check], list[str]]:
        """The checks of every answer that come before its signature (the table in the module docstring down
        to the flags), in order, each answer's ceremony claimed; the claims are the caller's to release."""
        checks: list[_Check] = []
        claims: list[str] = []
        claimed = self._claimed
        try:
            for shopper, challenge_id, assertion, terms in items:
                if isinstance(assertion, AuthnError):
                    checks.append(_Check(assertion))
                    continue
                with self._lock:  # the claim (as _Claim takes it, without an object per answer)
                    mine = challenge_id not in claimed
                    if mine:
                        claimed.add(challenge_id)
                if not mine:
                    checks.append(
                        _Check(AuthnError(AuthnCode.REPLAYED, f"ceremony {challenge_id!r} is being answered already"))
                    )
                    continue
                claims.append(challenge_id)
                try:
                    checks.append(self._check(shopper, challenge_id, assertion, terms))
                except AuthnError as refusal:  # unknown ceremony, replay: nothing recorded
                    checks.append(_Check(refusal))
        except BaseException:
            self._release(claims)
            raise
        return checks, claims

    @staticmethod
    def _signature_jobs(checks: Sequence[_Check]) -> list[Job]:
        """The signatures a batch's verdicts wait for, as the signature worker takes them."""
        return [(raw_id, key.cose, int(key.alg), sig, data) for raw_id, key, sig, data in _jobs(checks)]

    @staticmethod
    def _verify_one(job: tuple[bytes, _Key, bytes, bytes]) -> bool:
        _, key, signature, data = job
        try:
            verify_signature(public_key=key.public, signature_alg=key.alg, signature=signature, data=data)
        except (InvalidSignature, WebAuthnException, ValueError):
            return False
        return True

    def _finish_many(
        self, checks: Sequence[_Check], verdicts: Sequence[bool]
    ) -> tuple[list[Confirmation | AuthnError], list[Op]]:
        """Each answer's verdict, in arrival order, from its checks and its signature's verdict (``verdicts``:
        one per answer that reached its signature, in order): a device revoked meanwhile (a clone alarm of
        an earlier answer, perhaps of this batch) refuses it, then its own late refusal, then the signature,
        then the counter. The statements recording them, as one multi-row INSERT."""
        results: list[Confirmation | AuthnError] = []
        out = _Record()
        signed = iter(verdicts)
        for c in checks:
            if c.key is None:  # decided before the device was known
                if c.at is not None:
                    out.rows.append((c.challenge_id, c.at, int(c.result.authn_code), c.raw_id, *_NO_EVIDENCE))
                results.append(c.result)
                continue
            try:
                key = c.key
                good = next(signed) if c.late is None else False
                if key.revoked:
                    raise AuthnError(AuthnCode.REVOKED_CREDENTIAL, f"device {key.name!r} was revoked")
                if c.late is not None:
                    raise c.late
                if not good:
                    raise AuthnError(AuthnCode.BAD_SIGNATURE, "the assertion's signature does not verify")
                confirmation, evidence = self._count(c, key)
            except _Recorded as refusal:
                out.rows.append((c.challenge_id, c.at, int(refusal.authn_code), c.raw_id, *_NO_EVIDENCE))
                out.more += refusal.ops
                results.append(AuthnError(refusal.authn_code, refusal.message, refusal.detail))
                continue
            except AuthnError as refusal:
                out.rows.append((c.challenge_id, c.at, int(refusal.authn_code), c.raw_id, *_NO_EVIDENCE))
                results.append(refusal)
                continue
            out.rows.append((c.challenge_id, confirmation.confirmed_ms, 0, c.raw_id, *evidence))
            results.append(confirmation)
        if next(signed, None) is not None:
            raise ValueError("more signature verdicts than signatures")
        return results, out.ops()

    def _release(self, claims: Sequence[str]) -> None:
        """Let the ceremonies ``claims`` be answered again (their verdicts are durable, or were not written)."""
        with self._lock:
            self._claimed.difference_update(claims)

    @staticmethod
    def _payment_in(
        shopper: str, challenge_id: str, credential_json: object, terms: tuple[str, str, int, str]
    ) -> _AssertionIn:
        check_text("shopper", shopper, lim.shopper_chars_max)
        check_text("challenge_id", challenge_id, lim.ceremony_id_chars_max)
        check_text("order_id", terms[0], lim.order_id_chars_max)
        check_text("payee", terms[1], lim.payee_chars_max)
        check_amount(terms[2])
        check_currency(terms[3])
        assertion: _AssertionIn = _credential_json(credential_json, _AssertionIn, _assertion_in)
        if assertion.type != "public-key" or assertion.id != assertion.rawId:
            raise AuthnError(AuthnCode.MALFORMED_CREDENTIAL, "credential type must be public-key, with id = rawId")
        return assertion

    def _check(
        self, shopper: str, challenge_id: str, assertion: _AssertionIn, terms: tuple[str, str, int, str]
    ) -> _Check:
        """An answer's checks before its signature (the caller holds the claim). Raises only the refusals
        that record nothing (unknown ceremony, replay); every other refusal is in the check, recorded."""
        row = self._ceremony(challenge_id, shopper, "payment")
        raw_id = _unb64("rawId", assertion.rawId)
        with self._lock:
            self._open_rows.pop(challenge_id, None)  # answered: from now on the claim, then the store, say so
        c = _Check(None, challenge_id, shopper, raw_id, self.clock.now_ms())
        try:
            self._check_assertion(c, row, assertion, terms)
        except AuthnError as refusal:
            c.result = refusal
        return c

    def _check_assertion(
        self, c: _Check, row: tuple[Any, ...], a: _AssertionIn, gateway: tuple[str, str, int, str]
    ) -> None:
        order_id, payee, amount_fen, currency, expires_ms, nonce = row[3:9]
        now = c.at
        assert now is not None
        if now > expires_ms:
            raise AuthnError(AuthnCode.CHALLENGE_EXPIRED, f"payment challenge expired at {expires_ms} (now {now})")
        if gateway[0] != order_id:
            raise AuthnError(AuthnCode.OTHER_ORDER, f"the challenge is for order {order_id!r}, not {gateway[0]!r}")
        if gateway[1] != payee:
            raise AuthnError(AuthnCode.OTHER_PAYEE, f"the challenge is for payee {payee!r}, not {gateway[1]!r}")
        if (gateway[2], gateway[3]) != (amount_fen, currency):
            raise AuthnError(
                AuthnCode.OTHER_AMOUNT,
                f"the challenge is for {amount_fen} {currency} (fen), not {gateway[2]} {gateway[3]}",
            )
        if len(row) > 11:  # opened by this process: the challenge made from these very terms, and its text
            challenge, challenge_b64 = row[1], row[11]
        else:
            # recomputed from the stored terms: a row altered on disk no longer matches what the device signed
            challenge = challenge_bytes(
                PaymentTerms(self.rp_id, order_id, payee, amount_fen, currency, bytes(nonce), expires_ms)
            )
            challenge_b64 = b64url(challenge)
        client_bytes = _unb64("clientDataJSON", a.response.clientDataJSON)
        self._check_client(self._client_data(client_bytes), "webauthn.get", challenge, challenge_b64)
        auth_data = _unb64("authenticatorData", a.response.authenticatorData)
        if len(auth_data) < 37:
            raise AuthnError(AuthnCode.MALFORMED_CREDENTIAL, "authenticatorData is shorter than 37 bytes")
        key = self._key(c.raw_id)
        if key is None or key.shopper != c.shopper:
            raise AuthnError(AuthnCode.UNKNOWN_CREDENTIAL, "this device is not registered to this shopper")
        if key.revoked:
            raise AuthnError(AuthnCode.REVOKED_CREDENTIAL, f"device {key.name!r} was revoked")
        # from here on the verdict waits for _finish_many: a clone alarm judged before it revokes the device
        c.key = key
        c.terms = (order_id, payee, amount_fen, currency)
        c.challenge_b64 = challenge_b64
        c.auth_data = auth_data
        c.client_bytes = client_bytes
        try:
            self._check_auth(auth_data[:32], auth_data[32])
            c.signature = _unb64("signature", a.response.signature)
        except AuthnError as refusal:
            c.late = refusal
            return
        c.data = auth_data + hashlib.sha256(client_bytes).digest()

    def _count(self, c: _Check, key: _Key) -> tuple[Confirmation, tuple[int, bytes, bytes, bytes]]:
        """The counter of a signed answer: moved forward, or a clone alarm (``_Recorded``)."""
        now = c.at
        assert now is not None and c.terms is not None
        counter = int.from_bytes(c.auth_data[33:37], "big")
        with self._lock:
            stored = key.counter
            regressed = (counter > 0 or stored > 0) and counter <= stored
            if not regressed:
                key.counter = counter
        if regressed:
            self._clone_alarm(c.shopper, c.challenge_id, c.raw_id, key, stored, counter, now)
        order_id, payee, amount_fen, currency = c.terms
        confirmation = Confirmation(
            c.challenge_id, c.shopper, key.b64_id, key.name, order_id, payee, amount_fen, currency, counter,
            True, now, c.challenge_b64,
        )  # fmt: skip
        return confirmation, (counter, c.auth_data, c.client_bytes, c.signature)

    def _clone_alarm(
        self, shopper: str, challenge_id: str, raw_id: bytes, key: _Key, stored: int, seen: int, now: int
    ) -> None:
        with self._lock:
            key.revoked = True
        refusal = _Recorded(
            AuthnCode.COUNTER_REGRESSED,
            f"clone alarm: device {key.name!r} signed with counter {seen}, not above {stored}; the device is revoked",
            {"stored_count": stored, "seen_count": seen},
        )
        refusal.ops = [
            (
                "INSERT INTO clone_alarms (credential_id, shopper, at_ms, stored_count, seen_count, ceremony_id)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (raw_id, shopper, now, stored, seen, challenge_id),
            ),
            (
                "UPDATE credentials SET revoked_ms = ?, revoked_reason = ? WHERE id = ? AND revoked_ms IS NULL",
                (now, "clone alarm: the signature counter went backwards", raw_id),
            ),
        ]
        raise refusal

    def confirmation(self, shopper: str, challenge_id: str) -> Confirmation | None:
        """The confirmation a payment challenge was accepted with, or None (not accepted, refused, unknown).

        For a gateway that crashed between ``verify_payment`` and its own record: a second answer is refused
        as ``REPLAYED``, and this is how the gateway learns that the first one was accepted, and for what."""
        check_text("shopper", shopper, lim.shopper_chars_max)
        row = self._store.row(
            "SELECT c.order_id, c.payee, c.amount_fen, c.currency, c.used_ms, c.credential_id, c.challenge,"
            " k.name, e.authenticator_data FROM ceremonies c"
            " JOIN evidence e ON e.ceremony_id = c.id JOIN credentials k ON k.id = c.credential_id"
            " WHERE c.id = ? AND c.shopper = ? AND c.kind = 'payment' AND c.result = 0",
            (challenge_id, shopper),
        )
        if row is None:
            return None
        order_id, payee, amount_fen, currency, used_ms, raw_id, challenge, name, auth_data = row
        return Confirmation(
            challenge_id, shopper, b64url(bytes(raw_id)), name, order_id, payee, amount_fen, currency,
            int.from_bytes(bytes(auth_data)[33:37], "big"), True, used_ms, b64url(bytes(challenge)),
        )  # fmt: skip

    # ---- the ceremony's common steps ----------------------------------------------------------------------
    def _claim(self, ceremony_id: str) -> _Claim:
        return _Claim(self, ceremony_id)

    def _ceremony(self, ceremony_id: str, shopper: str, kind: str) -> tuple[Any, ...]:
        # the caller holds the ceremony's claim: nobody consumes it meanwhile
        with self._lock:
            row = self._open_rows.get(ceremony_id)
        row = row or self._store.row(
            "SELECT kind, challenge, device_name, order_id, payee, amount_fen, currency, expires_ms, nonce,"
            " shopper, used_ms FROM ceremonies WHERE id = ?",
            (ceremony_id,),
        )
        if row is None or row[9] != shopper or row[0] != kind:
            raise AuthnError(AuthnCode.UNKNOWN_CHALLENGE, f"no {kind} ceremony {ceremony_id!r} for {shopper}")
        if row[10] is not None:
            raise AuthnError(AuthnCode.REPLAYED, f"ceremony {ceremony_id!r} was already answered")
        return row

    def _consume(self, ceremony_id: str, refused: AuthnCode | None, raw_id: bytes | None, ops: list[Op]) -> None:
        """Record the answer's verdict with ``ops``, durably: the ceremony is used up."""
        self._store.write(self._consume_ops(ceremony_id, refused, raw_id, ops))

    def _consume_ops(
        self,
        ceremony_id: str,
        refused: AuthnCode | None,
        raw_id: bytes | None,
        ops: list[Op],
        at_ms: int | None = None,
    ) -> list[Op]:
        """The statements recording an answer's verdict (0: accepted) with ``ops``. The ceremony leaves the
        in-memory cache now: the caller holds the claim until they are durable, and from then on the stored
        row says the ceremony was answered."""
        result = 0 if refused is None else int(refused)
        with self._lock:
            self._open_rows.pop(ceremony_id, None)
        return [
            (
                "UPDATE ceremonies SET used_ms = ?, result = ?, credential_id = ? WHERE id = ?",
                (self.clock.now_ms() if at_ms is None else at_ms, result, raw_id, ceremony_id),
            ),
            *ops,
        ]

    @staticmethod
    def _client_data(data: object) -> _ClientData:
        raw = data if isinstance(data, bytes) else _unb64("clientDataJSON", str(data or ""))
        try:
            return _client_data_in.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise AuthnError(AuthnCode.MALFORMED_CREDENTIAL, f"clientDataJSON unreadable: {exc}") from None

    def _check_client(self, client: _ClientData, kind: str, challenge: bytes, challenge_b64: str = "") -> None:
        if client.type != kind:
            raise AuthnError(AuthnCode.WRONG_CEREMONY, f"clientData.type is {client.type!r}, expected {kind!r}")
        # the canonical spelling compared as text (what browsers send); any other is decoded and compared
        if client.challenge != challenge_b64 and _unb64("clientData.challenge", client.challenge) != challenge:
            raise AuthnError(AuthnCode.CHALLENGE_MISMATCH, "the device signed another challenge than this one")
        if client.origin != self.origin or client.crossOrigin:
            raise AuthnError(
                AuthnCode.OTHER_ORIGIN, f"made on {client.origin!r}, not on this relying party's {self.origin!r}"
            )
        # WebAuthn L2 §7.2 step 10: a token binding must match the TLS connection's; ours has none, so a
        # client claiming one "present" is refused (py_webauthn checks the status only)
        if client.tokenBinding is not None and client.tokenBinding.status not in ("supported", "not-supported"):
            raise AuthnError(
                AuthnCode.MALFORMED_CREDENTIAL,
                f"token binding {client.tokenBinding.status!r}: this relying party binds no TLS connection",
            )

    def _check_auth(self, rp_id_hash: bytes, flags: int) -> None:
        if rp_id_hash != self._rp_id_hash:
            raise AuthnError(AuthnCode.OTHER_RP_ID, f"the device signed for another RP id than {self.rp_id!r}")
        if not flags & _FLAG_UP:
            raise AuthnError(AuthnCode.USER_NOT_PRESENT, "the authenticator did not see the user (UP flag unset)")
        if not flags & _FLAG_UV:
            raise AuthnError(
                AuthnCode.UV_MISSING, "the device did not verify the user (fingerprint, face or PIN): UV flag unset"
            )

    def _key(self, raw_id: bytes) -> _Key | None:
        with self._lock:
            key = self._keys.get(raw_id)
            if key is not None:
                self._keys.move_to_end(raw_id)
                return key
        row = self._store.row(
            "SELECT shopper, name, alg, public_key, sign_count, revoked_ms FROM credentials WHERE id = ?", (raw_id,)
        )
        if row is None:
            return None
        public = decoded_public_key_to_cryptography(decode_credential_public_key(bytes(row[3])))
        with self._lock:
            key = self._keys.get(raw_id)
            if key is None:  # another thread may have loaded it meanwhile: its counter is the newer one
                key = _Key(
                    row[0], row[1], COSEAlgorithmIdentifier(int(row[2])), public, int(row[4]), row[5] is not None,
                    b64url(raw_id), bytes(row[3]),
                )  # fmt: skip
                self._keys[raw_id] = key
                while len(self._keys) > lim.key_cache_max:
                    self._keys.popitem(last=False)
            return key


class _Check:
    """One answer between its checks and its verdict: decided already (``result``; recorded if ``at`` is set),
    or waiting for its signature's verdict (``key`` set; ``late``: a refusal that comes after the device's
    revocation in the order of the checks)."""

    __slots__ = (
        "at", "auth_data", "challenge_b64", "challenge_id", "client_bytes", "data", "key", "late", "raw_id",
        "result", "shopper", "signature", "terms",
    )  # fmt: skip

    def __init__(
        self,
        result: AuthnError | None,
        challenge_id: str = "",
        shopper: str = "",
        raw_id: bytes = b"",
        at: int | None = None,
    ) -> None:
        self.result: AuthnError = result  # type: ignore[assignment]  # set before it is read, if key is None
        self.challenge_id = challenge_id
        self.shopper = shopper
        self.raw_id = raw_id
        self.at = at
        self.key: _Key | None = None
        self.late: AuthnError | None = None
        self.terms: tuple[str, str, int, str] | None = None
        self.challenge_b64 = ""
        self.auth_data = b""
        self.client_bytes = b""
        self.signature = b""
        self.data = b""


def _jobs(checks: Sequence[_Check]) -> list[tuple[bytes, _Key, bytes, bytes]]:
    """The signatures a batch's verdicts wait for, in order: (credential id, key, signature, signed data)."""
    return [(c.raw_id, c.key, c.signature, c.data) for c in checks if c.key is not None and c.late is None]


class _Pending:
    """One ``verify_payment`` call waiting in the queue: its answer, then its verdict (or a fault)."""

    __slots__ = ("assertion", "challenge_id", "error", "lead", "shopper", "signal", "terms", "verdict")

    def __init__(
        self, shopper: str, challenge_id: str, assertion: _AssertionIn, terms: tuple[str, str, int, str]
    ) -> None:
        self.shopper = shopper
        self.challenge_id = challenge_id
        self.assertion = assertion
        self.terms = terms
        self.verdict: Confirmation | AuthnError | None = None
        self.error: BaseException | None = None
        self.lead = False
        # a bare lock as a one-shot signal: released once, with the verdict or with the lead
        self.signal = threading.Lock()
        self.signal.acquire()


class _Record:
    """What a batch of verdicts writes, gathered while judging: one row per answered ceremony into the store's
    ``verdicts`` view (its trigger consumes the ceremony and, for an accepted answer, moves the device's
    counter and keeps the evidence), as ONE multi-row INSERT, a transaction by itself: the writer releases the
    GIL around every statement it runs and then waits to get it back from the thread judging the next batch,
    so the number of statements, not their rows, is what a durable write costs in a busy process. Clone
    alarms and revocations (rare) follow as statements of their own."""

    __slots__ = ("more", "rows")

    def __init__(self) -> None:
        # ceremony, answered at, result (0: accepted), device; counter, authenticatorData, clientDataJSON,
        # signature (None unless accepted)
        self.rows: list[tuple[Any, ...]] = []
        self.more: list[Op] = []

    def ops(self) -> list[Op]:
        out: list[Op] = []
        for k in range(0, len(self.rows), _ROWS_PER_INSERT):
            part = self.rows[k : k + _ROWS_PER_INSERT]
            out.append((_insert_verdicts(len(part)), [x for row in part for x in row]))
        return out + self.more


_NO_EVIDENCE = (None, None, None, None)
#: rows per INSERT into ``verdicts`` (a batch of the gateway's batcher is at most this: one statement)
_ROWS_PER_INSERT = 64


@functools.cache
def _insert_verdicts(rows: int) -> str:
    return "INSERT INTO verdicts VALUES " + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * rows)


class _Recorded(AuthnError):
    """A refusal that records more than the consumed ceremony (a clone alarm and the device's revocation)."""

    ops: list[Op]


class _Claim:
    """While a ceremony is being answered no other answer to it is judged (the second one waits for nothing:
    it is refused as a replay). The claim is released once the answer is durable, so from then on the stored
    row refuses a replay."""

    def __init__(self, rp: RelyingParty, ceremony_id: str) -> None:
        self.rp = rp
        self.ceremony_id = ceremony_id

    def __enter__(self) -> None:
        with self.rp._lock:
            if self.ceremony_id in self.rp._claimed:
                raise AuthnError(AuthnCode.REPLAYED, f"ceremony {self.ceremony_id!r} is being answered already")
            self.rp._claimed.add(self.ceremony_id)

    def __exit__(self, *_: object) -> None:
        with self.rp._lock:
            self.rp._claimed.discard(self.ceremony_id)


def _credential(r: tuple[Any, ...]) -> Credential:
    return Credential(
        b64url(bytes(r[0])), r[1], r[2], ALGS.get(int(r[3]), str(r[3])), r[4], r[5], int(r[6]), int(r[7]), r[8],
        r[9], r[10],
    )  # fmt: skip


def _uuid(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
