"""X.509 identities: organisation CAs and member certificates (Ed25519), and their verification.

Theory of operation
-------------------
Each organisation has one self-signed CA certificate in the consortium configuration. Its members hold
certificates issued by that CA. The subject carries what the ledger needs to know about a signer:

=====================  =============================================================
``O``                   the organisation id (``org1``)
``OU``                  the role: admin, member, peer or orderer (CA certificates: ``ca``)
``CN``                  the member's name, unique within its organisation
``businessCategory``    the organisation type (core_enterprise, supplier, bank, ...)
=====================  =============================================================

A member is named ``<org>/<cn>`` on the ledger. Verifying a signer's certificate means: it parses, its key
is Ed25519, it is not a CA, its organisation is in the configuration with the same type, it was issued by
that organisation's *current* CA (so rotating a CA retires every certificate of the old one), it is not
revoked, and the block time lies within its validity. Parsing and the CA signature are the expensive part
and are cached by certificate fingerprint; the cheap checks run every time, because the configuration and
the block time change.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import OrderedDict
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID

from liangcao import limits

# Roles and organisation types are defined once, in liangcao.domain; certificates carry them (re-exported).
from liangcao.domain import ORG_TYPES as ORG_TYPES
from liangcao.domain import ROLES as ROLES
from liangcao.domain import Role as Role

CA_ROLE = "ca"
DEFAULT_VALIDITY_DAYS = 3650


class CertificateError(ValueError):
    """A certificate that cannot be used; ``code`` is the receipt code to record."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class CertInfo:
    """What the ledger reads from one certificate, after parsing."""

    fingerprint: str  # hex SHA-256 of the DER bytes
    der: bytes
    org: str
    role: str
    cn: str
    org_type: str
    not_before_ms: int
    not_after_ms: int
    is_ca: bool
    public_key: Ed25519PublicKey
    issuer_der_name: bytes
    cert: x509.Certificate

    @property
    def member_id(self) -> str:
        return f"{self.org}/{self.cn}"


def _attr(name: x509.Name, oid: x509.ObjectIdentifier) -> str:
    values = name.get_attributes_for_oid(oid)
    if len(values) != 1:
        return ""
    value = values[0].value
    return value if isinstance(value, str) else ""


def _ms(moment: dt.datetime) -> int:
    return int(moment.timestamp()) * 1000


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def parse_certificate(der: bytes) -> CertInfo:
    """Parse DER bytes into :class:`CertInfo`, refusing anything that is not a liangcao certificate."""
    from liangcao.codes import Code

    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise CertificateError(Code.BAD_CERTIFICATE, f"certificate does not parse: {exc}") from exc
    key = cert.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise CertificateError(Code.BAD_CERTIFICATE, "certificate key is not Ed25519")
    subject = cert.subject
    org = _attr(subject, NameOID.ORGANIZATION_NAME)
    role = _attr(subject, NameOID.ORGANIZATIONAL_UNIT_NAME)
    cn = _attr(subject, NameOID.COMMON_NAME)
    org_type = _attr(subject, NameOID.BUSINESS_CATEGORY)
    if not org or not cn or role not in (*ROLES, CA_ROLE) or org_type not in ORG_TYPES:
        raise CertificateError(
            Code.BAD_CERTIFICATE,
            "certificate subject lacks O, CN, a known OU role or a known businessCategory",
        )
    try:
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca = basic.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if is_ca != (role == CA_ROLE):
        raise CertificateError(Code.BAD_CERTIFICATE, "certificate CA flag and role disagree")
    return CertInfo(
        fingerprint=fingerprint(der),
        der=der,
        org=org,
        role=role,
        cn=cn,
        org_type=org_type,
        not_before_ms=_ms(cert.not_valid_before_utc),
        not_after_ms=_ms(cert.not_valid_after_utc),
        is_ca=is_ca,
        public_key=key,
        issuer_der_name=cert.issuer.public_bytes(),
        cert=cert,
    )


def issued_by(member: CertInfo, ca: CertInfo) -> bool:
    try:
        member.cert.verify_directly_issued_by(ca.cert)
    except (ValueError, TypeError, Exception):
        return False
    return True


def _name(org: str, role: str, cn: str, org_type: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.BUSINESS_CATEGORY, org_type),
        ]
    )


#: A certificate authority's key usage: it signs certificates and revocation lists, nothing else.
CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def make_ca(
    org: str,
    org_type: str,
    key: Ed25519PrivateKey,
    now_ms: int,
    days: int = DEFAULT_VALIDITY_DAYS,
    serial: int | None = None,
) -> bytes:
    """A self-signed organisation CA certificate (DER). ``serial``: fixed (a simulation), else random."""
    if org_type not in ORG_TYPES:
        raise ValueError(f"unknown organisation type {org_type!r}")
    name = _name(org, CA_ROLE, f"{org} CA", org_type)
    start = dt.datetime.fromtimestamp(now_ms // 1000, dt.UTC) - dt.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            CA_KEY_USAGE,
            critical=True,
        )
        .sign(key, None)
    )
    return cert.public_bytes(serialization.Encoding.DER)


def issue(
    ca_key: Ed25519PrivateKey,
    ca_der: bytes,
    cn: str,
    role: str,
    public_key: Ed25519PublicKey,
    now_ms: int,
    days: int = DEFAULT_VALIDITY_DAYS,
    serial: int | None = None,
) -> bytes:
    """A member certificate (DER) for ``cn`` with ``role``, issued by the CA ``ca_der``."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    ca = parse_certificate(ca_der)
    start = dt.datetime.fromtimestamp(now_ms // 1000, dt.UTC) - dt.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(ca.org, role, cn, ca.org_type))
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, None)
    )
    return cert.public_bytes(serialization.Encoding.DER)


def der_to_pem(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)


def pem_to_der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


class CertCache:
    """Parsed certificates whose CA signature has been checked, by (certificate, CA) fingerprint.

    Bounded (``cert_cache_max``) and least-recently-used, so a flood of distinct certificates costs memory
    only up to the limit.
    """

    def __init__(self, size_max: int = limits.cert_cache_max) -> None:
        self._size_max = size_max
        self._parsed: OrderedDict[bytes, CertInfo | CertificateError] = OrderedDict()
        self._issued: OrderedDict[tuple[str, str], bool] = OrderedDict()

    def parse(self, der: bytes) -> CertInfo:
        hit = self._parsed.get(der)
        if hit is None:
            try:
                hit = parse_certificate(der)
            except CertificateError as exc:
                hit = exc
            self._parsed[der] = hit
            if len(self._parsed) > self._size_max:
                self._parsed.popitem(last=False)
        if isinstance(hit, CertificateError):
            raise hit
        return hit

    def issued_by(self, member: CertInfo, ca: CertInfo) -> bool:
        key = (member.fingerprint, ca.fingerprint)
        hit = self._issued.get(key)
        if hit is None:
            hit = issued_by(member, ca)
            self._issued[key] = hit
            if len(self._issued) > self._size_max:
                self._issued.popitem(last=False)
        return hit
