"""The verify page's own parsers, in Chromium, against the Python side they must agree with.

The page checks certificates with a small strict DER walk (``certInfo`` in ``web/verify.js``; Web Crypto has
no X.509 parser), hashes transactions in liangcao's canonical JSON, and compares EPCIS identifiers in their
Digital Link form. Each is checked here against ``liangcao.crypto.identity`` (``cryptography``),
``liangcao.encoding`` and ``liangcao.trace.facts``: what one accepts the other accepts with the same
meaning, and what one refuses the other refuses.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID
from playwright.sync_api import Browser, Page

from conftest import NOW_MS, Live
from liangcao import encoding
from liangcao.crypto import identity, keys
from liangcao.node.genesis import Consortium, create_consortium
from liangcao.trace.facts import index_form, time_ms

DOCS = Path(__file__).resolve().parents[1] / "docs" / "encoding.md"


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory, browser: Browser) -> Iterator[Page]:
    """The verify page with its script loaded and ``main`` not run: its functions, callable from the test."""
    live = Live(tmp_path_factory.mktemp("der") / "net")
    p = browser.new_page()
    p.add_init_script("window.LIANGCAO_VERIFY_NO_MAIN = true")
    p.goto(f"{live.url}/verify?id=x")
    p.wait_for_function("typeof certInfo === 'function'")
    yield p
    p.close()
    live.stop()


@pytest.fixture(scope="module")
def consortium() -> Consortium:
    return create_consortium(2, org_types=["brand", "bank"], now_ms=NOW_MS)


def js_cert(page: Page, der: bytes) -> dict[str, Any]:
    """``certInfo`` in the page: its fields, or {"error": message}."""
    result: dict[str, Any] = page.evaluate(
        """(b64) => {
            try {
                const i = certInfo(unb64(b64));
                return {org: i.org, role: i.role, cn: i.cn, orgType: i.orgType, isCa: i.isCa, key: hex(i.key),
                        issuer: hex(i.issuer), subject: hex(i.subject), notBefore: i.notBefore, notAfter: i.notAfter};
            } catch (e) {
                return {error: String(e.message), certError: e instanceof CertError};
            }
        }""",
        keys.b64(der),
    )
    return result


def js_issued_by(page: Page, member: bytes, ca: bytes) -> bool:
    return bool(
        page.evaluate(
            "async ([m, c]) => !!(await issuedBy(certInfo(unb64(m)), certInfo(unb64(c))))",
            [keys.b64(member), keys.b64(ca)],
        )
    )


def test_certificates_read_as_the_python_side_reads_them(page: Page, consortium: Consortium) -> None:
    for org in consortium.orgs:
        for der in [org.ca_cert, *(m.cert for m in org.members.values())]:
            py = identity.parse_certificate(der)
            js = js_cert(page, der)
            assert js == {
                "org": py.org,
                "role": py.role,
                "cn": py.cn,
                "orgType": py.org_type,
                "isCa": py.is_ca,
                "key": keys.public_raw(py.public_key).hex(),
                "issuer": py.issuer_der_name.hex(),
                "subject": py.cert.subject.public_bytes().hex(),
                "notBefore": py.not_before_ms,
                "notAfter": py.not_after_ms,
            }


def test_issued_by_checks_the_name_and_the_cas_signature(page: Page, consortium: Consortium) -> None:
    a, b = consortium.orgs
    alice = a.members["alice"].cert
    assert js_issued_by(page, alice, a.ca_cert) and identity.issued_by(
        *map(identity.parse_certificate, (alice, a.ca_cert))
    )
    assert not js_issued_by(page, alice, b.ca_cert)
    assert js_issued_by(page, a.ca_cert, a.ca_cert)  # a CA is self-signed
    # a certificate whose body was changed after the CA signed it (the CN "alice" becomes "alicf")
    changed = alice.replace(b"alice", b"alicf", 1)
    assert changed != alice and js_cert(page, changed)["cn"] == "alicf"
    assert not js_issued_by(page, changed, a.ca_cert)
    assert not identity.issued_by(identity.parse_certificate(changed), identity.parse_certificate(a.ca_cert))


def _build(subject: x509.Name, *, ca: bool | None, key: Any = None, signer: Any = None) -> bytes:
    key = key or Ed25519PrivateKey.generate()
    start = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=1))
    )
    if ca is not None:
        b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    signer = signer or key
    algorithm = hashes.SHA256() if isinstance(signer, ec.EllipticCurvePrivateKey) else None
    return b.sign(signer, algorithm).public_bytes(serialization.Encoding.DER)


def _name(*attrs: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, v) for oid, v in attrs])


NAME = [(NameOID.ORGANIZATION_NAME, "org1"), (NameOID.ORGANIZATIONAL_UNIT_NAME, "peer"),
        (NameOID.COMMON_NAME, "p"), (NameOID.BUSINESS_CATEGORY, "brand")]  # fmt: skip


def _long_form(der: bytes) -> bytes:
    """The same certificate with its outer length in a needlessly long form (not DER)."""
    assert der[1] == 0x82
    return bytes([0x30, 0x83, 0x00]) + der[2:]


def bad_certificates(consortium: Consortium) -> dict[str, bytes]:
    good = consortium.orgs[0].members["alice"].cert
    ec_key = ec.generate_private_key(ec.SECP256R1())
    return {
        "truncated": good[:-1],
        "trailing byte": good + b"\x00",
        "long-form length": _long_form(good),
        "indefinite length": bytes([0x30, 0x80]) + good[4:] + b"\x00\x00",
        "ECDSA key and signature": _build(_name(*NAME), ca=False, key=ec_key),
        "CA flag on a peer": _build(_name(*NAME), ca=True),
        "CA role without the CA flag": _build(_name(*NAME[:1], (NameOID.ORGANIZATIONAL_UNIT_NAME, "ca"), *NAME[2:]), ca=None),
        "no businessCategory": _build(_name(*NAME[:3]), ca=False),
        "unknown role": _build(_name(*NAME[:1], (NameOID.ORGANIZATIONAL_UNIT_NAME, "boss"), *NAME[2:]), ca=False),
        "two organisations": _build(_name(*NAME, (NameOID.ORGANIZATION_NAME, "org2")), ca=False),
        "not a certificate": b"\x30\x03\x02\x01\x00",
    }  # fmt: skip


def test_what_is_not_a_liangcao_certificate_is_refused_on_both_sides(page: Page, consortium: Consortium) -> None:
    for what, der in bad_certificates(consortium).items():
        with pytest.raises((identity.CertificateError, ValueError)):
            identity.parse_certificate(der)
        js = js_cert(page, der)
        assert js.get("certError") is True, (what, js)


def vectors() -> list[tuple[str, str]]:
    """docs/encoding.md's canonical-form vectors: (input JSON, canonical text)."""
    out = []
    for line in DOCS.read_text().splitlines():
        m = re.fullmatch(r"\| `(.*)` \| `(.*)` \| `[0-9a-f]{64}` \|", line)
        if m:
            out.append((m.group(1), m.group(2)))
    assert len(out) >= 8
    return out


def test_canonical_json_matches_the_specification(page: Page) -> None:
    refuse = "(t) => { try { return canonical(JSON.parse(t)); } catch (e) { return 'refused'; } }"
    for given, canonical in vectors():
        py = encoding.canonical(encoding.decode(given)).decode()
        # JavaScript numbers hold integers up to 2^53 only: beyond, the page refuses (a false "not verified"
        # at worst, never other bytes hashed); liangcao's transactions and headers stay far below
        big = any(abs(int(n)) > 2**53 for n in re.findall(r"-?\d{16,}", given))
        assert page.evaluate(refuse, given) == ("refused" if big else py), given
        if "\\" not in canonical:  # the table writes escapes as they are in the bytes
            assert py == canonical
    tricky = {
        "q": 'a"b\\c/d',
        "c": "\x00\x01\x1f\x7f\b\t\n\f\r",
        "u": "粮草 😀 \u2028",
        "\ue000": 1,
        "😀": 2,
        "": [True, None, -0],
    }
    assert page.evaluate("(t) => canonical(JSON.parse(t))", json.dumps(tricky)) == encoding.canonical(tricky).decode()
    # outside the model (floats, any number not written as a plain integer): refused, or written otherwise,
    # so the page's byte-for-byte round trip of a transaction fails (NOT_CANONICAL) as Python's does
    for bad in ["1.5", "9007199254740993", "[1e3]", "[1.0]", "[-0]"]:
        assert page.evaluate(refuse, bad) != bad
        if "." in bad or "e" in bad:  # floats; Python holds 2^53 + 1 exactly, and -0 is 0
            with pytest.raises(Exception):  # noqa: B017 - any refusal
                encoding.decode(bad)


IDENTIFIERS = [
    "urn:epc:id:sgtin:0614141.107346.2017",
    "urn:epc:id:sgtin:0614141.107346.A%2FB",
    "urn:epc:id:sscc:0614141.1234567890",
    "urn:epc:id:sgln:0614141.12345.400",
    "urn:epc:id:sgln:0614141.12345.0",
    "urn:epc:id:pgln:0614141.12345",
    "urn:epc:id:grai:0614141.12345.400",
    "urn:epc:id:giai:0614141.12345",
    "urn:epc:id:gsrn:0614141.1234567890",
    "urn:epc:id:gsrnp:0614141.1234567890",
    "urn:epc:id:gdti:0614141.12345.006847",
    "urn:epc:id:sgcn:4012345.67890.04711",
    "urn:epc:id:cpi:0614141.123ABC.123456789",
    "urn:epc:id:ginc:0614141.xyz3311cba",
    "urn:epc:id:gsin:0614141.123456789",
    "urn:epc:id:itip:4012345.012345.01.02.987",
    "urn:epc:id:upui:1234567.089456.51qIgY)<&Jp3*j7'SDB",
    "urn:epc:class:lgtin:4012345.012345.998877",
    "urn:epc:idpat:sgtin:4012345.012345.*",
    "urn:epc:idpat:grai:0614141.12345.*",
    "urn:epc:id:sgtin:0614141",
    "urn:epc:id:unknown:1.2.3",
    "https://id.gs1.org/01/09520123456788/21/12345",
    "https://example.com/shop/gtin/09520123456788/ser/12345/10/LOT?x=1#y",
    "https://example.com/00/106141412345678908",
    "https://example.com/414/0614141123452/254/400",
    "https://example.com/not/a/link",
    "https://example.com/toString/x/01/09520123456788/constructor/1/21/7",
    "urn:example:lot:42",
    "urn:epc:id:bic:CSQU3054383",
]


def test_identifiers_and_times_match_the_python_side(page: Page) -> None:
    for ident in IDENTIFIERS:
        py = index_form(ident)
        assert not py.startswith("#"), ident  # (long ones are digests on the Python side: equal texts, equal forms)
        assert page.evaluate("(i) => indexForm(i)", ident) == py, ident
    for when in ["2026-10-01T08:00:00+08:00", "2026-10-01T08:00:00.1234Z", "1999-12-31T23:59:59.5-05:30"]:
        assert page.evaluate("(t) => timeMs(t)", when) == time_ms(when), when
