"""A software authenticator that answers ``navigator.credentials.create/get`` as a phone's secure element does.

Real keys (ES256 on P-256, or Ed25519, from ``cryptography``), real CTAP2/WebAuthn bytes: the
authenticatorData (rpIdHash, flags, big-endian sign counter, attested credential data with a COSE key),
the CBOR attestationObject (``none``, ``packed`` self attestation, or ``packed`` full attestation with an
X.509 chain), and the clientDataJSON a browser would write. It is what the tests, the CLI, the demo and the
benchmarks use to pay as a shopper would; nothing in it is trusted by the relying party, which verifies its
output exactly as it verifies a browser's.

CBOR is written with ``cbor2`` (a dependency of the ``webauthn`` package, which parses with it), in its
canonical mode: CTAP2's canonical form sorts map keys shortest-first, which is what cbor2's canonical mode
does, so the bytes are the ones a hardware authenticator would send.

Switches a test needs: ``uv`` (the user was verified: fingerprint or face), ``up`` (user present), and
``set_counter`` (to act as a clone whose counter is behind).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Literal

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from liangcao.crypto.identity import CA_KEY_USAGE

Alg = Literal["ES256", "Ed25519"]
Attestation = Literal["none", "packed-self", "packed-full"]

#: COSE algorithm identifiers (RFC 9053)
COSE_ES256 = -7
COSE_EDDSA = -8
#: the AAGUID this software authenticator reports (a model identifier; random, fixed, ours)
SOFT_AAGUID = bytes.fromhex("6c69616e6763616f2d736f66742d3031")  # "liangcao-soft-01"
#: X.509 extension carrying an attestation certificate's AAGUID (FIDO, id-fido-gen-ce-aaguid)
FIDO_GEN_CE_AAGUID = x509.ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4")

_FLAG_UP = 0x01
_FLAG_UV = 0x04
_FLAG_AT = 0x40


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    """base64url without padding (WebAuthn's encoding of bytes in JSON) to bytes; ValueError if not base64.

    Strict: a character outside the alphabet, or padding inside the text, is refused rather than skipped,
    so one byte string has one spelling (a lenient decoder reads ``"ab!cd"`` as ``"abcd"``). Two
    ``str.replace`` calls, not ``str.translate``: the latter looks every character up in a dict, ten times
    slower, and an assertion decodes five of these."""
    return binascii.a2b_base64(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4), strict_mode=True)


@dataclass
class _Key:
    credential_id: bytes
    rp_id: str
    user_handle: bytes
    alg: Alg
    private: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    counter: int = 0

    def cose_public(self) -> bytes:
        if isinstance(self.private, ec.EllipticCurvePrivateKey):
            nums = self.private.public_key().public_numbers()
            return cbor2.dumps(
                {1: 2, 3: COSE_ES256, -1: 1, -2: nums.x.to_bytes(32, "big"), -3: nums.y.to_bytes(32, "big")},
                canonical=True,
            )
        raw = self.private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return cbor2.dumps({1: 1, 3: COSE_EDDSA, -1: 6, -2: raw}, canonical=True)

    def sign(self, data: bytes) -> bytes:
        if isinstance(self.private, ec.EllipticCurvePrivateKey):
            return self.private.sign(data, ec.ECDSA(hashes.SHA256()))
        return self.private.sign(data)


@dataclass(frozen=True)
class AttestationCA:
    """A vendor's attestation root and one model's attestation certificate and key (for ``packed-full``).

    The relying party trusts ``root_pem``; the authenticator holds ``key`` and presents ``cert_der``, whose
    FIDO AAGUID extension names the model, as a TEE's factory-provisioned attestation key would."""

    root_pem: bytes
    cert_der: bytes
    key: ec.EllipticCurvePrivateKey
    aaguid: bytes

    @classmethod
    def create(cls, aaguid: bytes = SOFT_AAGUID, vendor: str = "liangcao soft authenticators") -> AttestationCA:
        now = datetime.datetime.now(datetime.UTC)
        root_key = ec.generate_private_key(ec.SECP256R1())
        root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{vendor} root")])
        root = (
            x509.CertificateBuilder()
            .subject_name(root_name)
            .issuer_name(root_name)
            .public_key(root_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                CA_KEY_USAGE,
                critical=True,
            )
            .sign(root_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        # WebAuthn §8.2.1: packed attestation certificate subject: C, O, OU="Authenticator Attestation", CN
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, vendor),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Authenticator Attestation"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"model {aaguid.hex()}"),
            ]
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(root_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            # the extension's value is an OCTET STRING holding the 16 AAGUID bytes
            .add_extension(x509.UnrecognizedExtension(FIDO_GEN_CE_AAGUID, b"\x04\x10" + aaguid), critical=False)
            .sign(root_key, hashes.SHA256())
        )
        return cls(
            root.public_bytes(serialization.Encoding.PEM), cert.public_bytes(serialization.Encoding.DER), key, aaguid
        )


@dataclass
class SoftAuthenticator:
    """A platform authenticator in software: several credentials (one per relying party and user), a counter
    per credential, and switchable user verification.

    ``create(options, origin)`` and ``get(options, origin)`` take the JSON options the relying party sends to
    the browser and return the JSON a browser posts back (``PublicKeyCredential.toJSON()``)."""

    alg: Alg = "ES256"
    attestation: Attestation = "none"
    aaguid: bytes = SOFT_AAGUID
    uv: bool = True
    up: bool = True
    ca: AttestationCA | None = None
    keys: dict[bytes, _Key] = field(default_factory=dict)
    #: False: the signature counter stays 0, as synced passkeys (iCloud Keychain, Google Password Manager)
    #: report it; the relying party then skips the clone check, so assertions may be verified in any order.
    counting: bool = True

    def __post_init__(self) -> None:
        if self.attestation == "packed-full" and self.ca is None:
            raise ValueError("packed-full attestation needs an AttestationCA")
        if len(self.aaguid) != 16:
            raise ValueError("an AAGUID is 16 bytes")

    # ---- registration -----------------------------------------------------------------------------------
    def create(self, options: dict[str, Any], origin: str, reuse: bytes | None = None) -> dict[str, Any]:
        """Make a credential for ``options`` (PublicKeyCredentialCreationOptionsJSON) as ``origin``'s page;
        ``reuse`` presents an existing credential again (a device registered twice)."""
        rp_id = str(options["rp"]["id"])
        algs = [int(p["alg"]) for p in options.get("pubKeyCredParams", [])]
        wanted = COSE_ES256 if self.alg == "ES256" else COSE_EDDSA
        if algs and wanted not in algs:
            raise ValueError(f"the relying party does not accept {self.alg}")
        private: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey = (
            ec.generate_private_key(ec.SECP256R1()) if self.alg == "ES256" else ed25519.Ed25519PrivateKey.generate()
        )
        key = self.keys[reuse] if reuse is not None else _Key(os.urandom(32), rp_id, b"", self.alg, private)
        key.user_handle = unb64url(str(options["user"]["id"]))
        client_data = self._client_data("webauthn.create", str(options["challenge"]), origin)
        cred_id = key.credential_id
        attested = self.aaguid + len(cred_id).to_bytes(2, "big") + cred_id + key.cose_public()
        auth_data = self._auth_data(rp_id, _FLAG_AT, key.counter) + attested
        to_sign = auth_data + hashlib.sha256(client_data).digest()
        stmt: dict[str, Any]
        if self.attestation == "none":
            fmt, stmt = "none", {}
        elif self.attestation == "packed-self":
            fmt, stmt = "packed", {"alg": wanted, "sig": key.sign(to_sign)}
        else:
            assert self.ca is not None
            sig = self.ca.key.sign(to_sign, ec.ECDSA(hashes.SHA256()))
            fmt, stmt = "packed", {"alg": COSE_ES256, "sig": sig, "x5c": [self.ca.cert_der]}
        att_obj = cbor2.dumps({"fmt": fmt, "attStmt": stmt, "authData": auth_data}, canonical=True)
        self.keys[cred_id] = key
        return {
            "id": b64url(cred_id),
            "rawId": b64url(cred_id),
            "type": "public-key",
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
            "response": {
                "clientDataJSON": b64url(client_data),
                "attestationObject": b64url(att_obj),
                "transports": ["internal"],
            },
        }

    # ---- assertion --------------------------------------------------------------------------------------
    def get(self, options: dict[str, Any], origin: str, credential_id: bytes | None = None) -> dict[str, Any]:
        """Sign ``options``' challenge (PublicKeyCredentialRequestOptionsJSON) with one of our credentials
        for its RP id: ``credential_id`` if given, else the first the options allow."""
        rp_id = str(options["rpId"])
        key = self._pick(rp_id, options, credential_id)
        if self.counting:
            key.counter += 1
        flags = (_FLAG_UV if self.uv else 0) | (_FLAG_UP if self.up else 0)
        client_data = self._client_data("webauthn.get", str(options["challenge"]), origin)
        auth_data = hashlib.sha256(rp_id.encode()).digest() + bytes([flags]) + key.counter.to_bytes(4, "big")
        signature = key.sign(auth_data + hashlib.sha256(client_data).digest())
        return {
            "id": b64url(key.credential_id),
            "rawId": b64url(key.credential_id),
            "type": "public-key",
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
            "response": {
                "clientDataJSON": b64url(client_data),
                "authenticatorData": b64url(auth_data),
                "signature": b64url(signature),
                "userHandle": b64url(key.user_handle),
            },
        }

    def set_counter(self, credential_id: bytes, counter: int) -> None:
        """Put a credential's counter where a clone would have it (tests of the clone alarm)."""
        self.keys[credential_id].counter = counter

    def clone(self) -> SoftAuthenticator:
        """A second authenticator holding copies of these keys and counters (an extracted, cloned key)."""
        copies = {
            k: _Key(v.credential_id, v.rp_id, v.user_handle, v.alg, v.private, v.counter) for k, v in self.keys.items()
        }
        return SoftAuthenticator(
            self.alg, self.attestation, self.aaguid, self.uv, self.up, self.ca, copies, self.counting
        )

    def _pick(self, rp_id: str, options: dict[str, Any], credential_id: bytes | None) -> _Key:
        if credential_id is not None:
            return self.keys[credential_id]
        allowed = [unb64url(str(d["id"])) for d in options.get("allowCredentials", [])]
        for cid in allowed or list(self.keys):
            key = self.keys.get(cid)
            if key is not None and key.rp_id == rp_id:
                return key
        raise LookupError(f"no credential for {rp_id} among the allowed ones")

    def _auth_data(self, rp_id: str, extra_flags: int, counter: int) -> bytes:
        flags = extra_flags | (_FLAG_UV if self.uv else 0) | (_FLAG_UP if self.up else 0)
        return hashlib.sha256(rp_id.encode()).digest() + bytes([flags]) + counter.to_bytes(4, "big")

    @staticmethod
    def _client_data(kind: str, challenge: str, origin: str) -> bytes:
        # the key order and compact separators of Chromium's serialisation (WebAuthn §5.8.1.1)
        return json.dumps(
            {"type": kind, "challenge": challenge, "origin": origin, "crossOrigin": False}, separators=(",", ":")
        ).encode()
