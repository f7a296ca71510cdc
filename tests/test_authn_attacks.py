"""``liangcao.authn`` attacked from outside: a hostile shopper, a hostile merchant, a man in the middle.

Each test is an attack made the way it would be made (edited bytes re-signed with a device's real key,
captured JSON re-sent, a rogue vendor certificate, a process killed with SIGKILL) against the production
relying party over a real SQLite store; each asserts the refusal's code and that nothing else moved.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from authn_harness import ORIGIN, T0, ManualClock, refused, register
from liangcao import codes
from liangcao.authn import AttestationCA, AuthnCode, AuthnError, PaymentAnswer, RelyingParty, SoftAuthenticator
from liangcao.authn import codes as lim
from liangcao.authn.binding import PaymentTerms, challenge_bytes
from liangcao.authn.soft import FIDO_GEN_CE_AAGUID, SOFT_AAGUID, b64url, unb64url

PAY = ("order-1", "merchant-9", 12_345, "CNY")
MODEL = "6c69616e-6763-616f-2d73-6f66742d3031"  # SOFT_AAGUID as a UUID


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def rp(tmp_path: Path, clock: ManualClock) -> Iterator[RelyingParty]:
    with RelyingParty("localhost", ORIGIN, tmp_path / "authn", clock) as party:
        yield party


def forge(
    dev: SoftAuthenticator, options: dict[str, Any], client: dict[str, Any], *, flags: int = 0x05, counter: int = 1
) -> dict[str, Any]:
    """An assertion whose clientData and authenticatorData the attacker chose, signed by the device's real
    key (what a compromised browser, or a man in the middle who controls the page, can make a device sign)."""
    key = next(iter(dev.keys.values()))
    client_bytes = json.dumps(client, separators=(",", ":")).encode()
    auth = hashlib.sha256(str(options["rpId"]).encode()).digest() + bytes([flags]) + counter.to_bytes(4, "big")
    sig = key.sign(auth + hashlib.sha256(client_bytes).digest())
    return {
        "id": b64url(key.credential_id),
        "rawId": b64url(key.credential_id),
        "type": "public-key",
        "response": {
            "clientDataJSON": b64url(client_bytes),
            "authenticatorData": b64url(auth),
            "signature": b64url(sig),
        },
    }


def status(rp: RelyingParty, challenge_id: str) -> tuple[Any, ...] | None:
    return rp._store.row("SELECT used_ms, result FROM ceremonies WHERE id = ?", (challenge_id,))


# ---- across shoppers and ceremonies -------------------------------------------------------------------------
def test_replay_across_shoppers_and_a_device_of_another_shopper(rp: RelyingParty) -> None:
    alice, bob = SoftAuthenticator(), SoftAuthenticator()
    register(rp, alice, "alice")
    register(rp, bob, "bob")
    ch = rp.payment_challenge("alice", *PAY)
    answer = alice.get(ch["publicKey"], ORIGIN)
    # Bob re-sends Alice's captured answer as his own: the ceremony is not his, nothing is consumed
    refused(AuthnCode.UNKNOWN_CHALLENGE, rp.verify_payment, "bob", ch["challenge_id"], answer, *PAY)
    assert status(rp, ch["challenge_id"]) == (None, None)
    assert rp.verify_payment("alice", ch["challenge_id"], answer, *PAY).shopper == "alice"
    refused(AuthnCode.REPLAYED, rp.verify_payment, "alice", ch["challenge_id"], answer, *PAY)
    refused(AuthnCode.UNKNOWN_CHALLENGE, rp.verify_payment, "bob", ch["challenge_id"], answer, *PAY)
    # Alice's device signs Bob's payment (Alice knows his challenge): a device registered to another shopper
    ch = rp.payment_challenge("bob", *PAY)
    opts = dict(ch["publicKey"], allowCredentials=[])
    refused(AuthnCode.UNKNOWN_CREDENTIAL, rp.verify_payment, "bob", ch["challenge_id"], alice.get(opts, ORIGIN), *PAY)


def test_swapping_challenge_ids_between_two_pending_payments(rp: RelyingParty) -> None:
    dev = SoftAuthenticator()
    register(rp, dev)
    # the same terms twice (a retried order): only the nonce tells them apart
    first, second = rp.payment_challenge("alice", *PAY), rp.payment_challenge("alice", *PAY)
    a1 = dev.get(first["publicKey"], ORIGIN)
    a2 = dev.get(second["publicKey"], ORIGIN)
    refused(AuthnCode.CHALLENGE_MISMATCH, rp.verify_payment, "alice", second["challenge_id"], a1, *PAY)
    # the man in the middle burnt the second ceremony (it is consumed, refused): never accepted
    refused(AuthnCode.REPLAYED, rp.verify_payment, "alice", second["challenge_id"], a2, *PAY)
    assert rp.verify_payment("alice", first["challenge_id"], a1, *PAY).order_id == PAY[0]
    # two payments of different terms: the gateway's terms are checked against the ceremony, not the answer
    cheap = rp.payment_challenge("alice", "order-2", "merchant-9", 1, "CNY")
    dear = rp.payment_challenge("alice", "order-3", "merchant-9", 99_999, "CNY")
    cheap_answer = dev.get(cheap["publicKey"], ORIGIN)
    refused(AuthnCode.OTHER_ORDER, rp.verify_payment, "alice", dear["challenge_id"], cheap_answer,
            "order-2", "merchant-9", 1, "CNY")  # fmt: skip
    refused(AuthnCode.CHALLENGE_MISMATCH, rp.verify_payment, "alice", cheap["challenge_id"],
            dev.get(dear["publicKey"], ORIGIN), "order-2", "merchant-9", 1, "CNY")  # fmt: skip


@pytest.mark.parametrize(
    ("terms", "code"),
    [
        (("order-1", "merchant-9", 12_346, "CNY"), AuthnCode.OTHER_AMOUNT),
        (("order-1", "merchant-9", 12_344, "CNY"), AuthnCode.OTHER_AMOUNT),
        (("order-1", "merchant-9", 12_345, "USD"), AuthnCode.OTHER_AMOUNT),
        (("order-1", "merchant-9 ", 12_345, "CNY"), AuthnCode.OTHER_PAYEE),
        (("order-1", "Merchant-9", 12_345, "CNY"), AuthnCode.OTHER_PAYEE),
        (("order-1 ", "merchant-9", 12_345, "CNY"), AuthnCode.OTHER_ORDER),
    ],
)
def test_one_fen_or_one_character_off_is_refused(rp: RelyingParty, terms: tuple[Any, ...], code: AuthnCode) -> None:
    dev = SoftAuthenticator()
    register(rp, dev)
    ch = rp.payment_challenge("alice", *PAY)
    refused(code, rp.verify_payment, "alice", ch["challenge_id"], dev.get(ch["publicKey"], ORIGIN), *terms)


@pytest.mark.parametrize("currency", ["cny", "Cny", "ＣＮＹ", "CNY\n", " CNY", "CN", "CNYY", "С" + "NY", ""])
def test_currency_case_and_unicode_look_alikes_are_refused_without_consuming(rp: RelyingParty, currency: str) -> None:
    dev = SoftAuthenticator()
    register(rp, dev)
    refused(AuthnCode.BAD_REQUEST, rp.payment_challenge, "alice", "order-1", "merchant-9", 100, currency)
    ch = rp.payment_challenge("alice", *PAY)
    answer = dev.get(ch["publicKey"], ORIGIN)
    refused(AuthnCode.BAD_REQUEST, rp.verify_payment, "alice", ch["challenge_id"], answer, *PAY[:3], currency)
    assert status(rp, ch["challenge_id"]) == (None, None)  # a malformed request consumes nothing
    assert rp.verify_payment("alice", ch["challenge_id"], answer, *PAY).currency == "CNY"


def test_separators_in_ids_never_make_two_bindings_alike(rp: RelyingParty) -> None:
    nonce = bytes(32)
    splits = [("a|b", "c"), ("a", "b|c"), ("a|b|c", ""), ("a:b", "c"), ("a", ":b:c"), ("ab", "c"), ("a", "bc")]
    seen = {challenge_bytes(PaymentTerms("localhost", o, p, 100, "CNY", nonce, T0)) for o, p in splits}
    assert len(seen) == len(splits)
    # what a length prefix looks like, inside a text: still one field
    assert challenge_bytes(PaymentTerms("localhost", "a\u0001b", "c", 1, "CNY", nonce, 0)) != challenge_bytes(
        PaymentTerms("localhost", "a", "b\u0001c", 1, "CNY", nonce, 0)
    )
    dev = SoftAuthenticator()
    register(rp, dev)
    ch = rp.payment_challenge("alice", "a|b", "c", 100, "CNY")
    refused(AuthnCode.OTHER_ORDER, rp.verify_payment, "alice", ch["challenge_id"], dev.get(ch["publicKey"], ORIGIN),
            "a", "b|c", 100, "CNY")  # fmt: skip


@pytest.mark.parametrize(
    "text",
    [
        "order\ud800",  # a lone surrogate: not UTF-8 at all (it crashed the encoder: a 500)
        "merchant\u202e9-tnahcrem",  # right-to-left override: shows another payee than it is
        "merchant\u200b-9",  # zero-width space: looks like merchant-9
        "merchant\u2066-9",  # bidi isolate
        "merchant\u0085-9",  # a C1 control (next line)
        "merchant\u2028-9",  # line separator
        "merchant\ufeff-9",  # byte order mark
    ],
)
def test_invisible_and_unencodable_characters_are_refused(rp: RelyingParty, text: str) -> None:
    dev = SoftAuthenticator()
    register(rp, dev)
    refused(AuthnCode.BAD_REQUEST, rp.payment_challenge, "alice", text, "merchant-9", 100, "CNY")
    refused(AuthnCode.BAD_REQUEST, rp.payment_challenge, "alice", "order-1", text, 100, "CNY")
    refused(AuthnCode.BAD_REQUEST, rp.registration_options, text, "phone")
    refused(AuthnCode.BAD_REQUEST, rp.registration_options, "alice", text)
    ch = rp.payment_challenge("alice", *PAY)
    refused(AuthnCode.BAD_REQUEST, rp.verify_payment, "alice", ch["challenge_id"], dev.get(ch["publicKey"], ORIGIN),
            PAY[0], text, *PAY[2:])  # fmt: skip


# ---- attestation ------------------------------------------------------------------------------------------
def _self_signed(aaguid: bytes) -> AttestationCA:
    """A packed attestation certificate that signs itself, shaped like a vendor's (same subject fields, the
    AAGUID extension of an allowed model): the rogue vendor's way to claim a model."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "liangcao soft authenticators"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Authenticator Attestation"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"model {aaguid.hex()}"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.UnrecognizedExtension(FIDO_GEN_CE_AAGUID, b"\x04\x10" + aaguid), critical=False)
        .sign(key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    return AttestationCA(cert.public_bytes(serialization.Encoding.PEM), der, key, aaguid)


def test_foreign_aaguid_and_self_signed_packed_certificates(tmp_path: Path, clock: ManualClock) -> None:
    vendor = AttestationCA.create()
    with RelyingParty("localhost", ORIGIN, tmp_path / "a", clock, {MODEL}, attestation_roots=[vendor.root_pem]) as rp:
        # a foreign model with its own good vendor chain
        foreign = bytes.fromhex("00112233445566778899aabbccddeeff")
        dev = SoftAuthenticator(attestation="packed-full", aaguid=foreign, ca=AttestationCA.create(foreign))
        opts = rp.registration_options("alice", "foreign")
        refused(AuthnCode.AAGUID_NOT_ALLOWED, rp.register, "alice", opts["ceremony_id"],
                dev.create(opts["publicKey"], ORIGIN))  # fmt: skip
        # the allowed model claimed with a self-signed certificate (not from an allowed root)
        dev = SoftAuthenticator(attestation="packed-full", ca=_self_signed(SOFT_AAGUID))
        opts = rp.registration_options("alice", "self-signed")
        refused(AuthnCode.ATTESTATION_REFUSED, rp.register, "alice", opts["ceremony_id"],
                dev.create(opts["publicKey"], ORIGIN))  # fmt: skip
        # ... and the same certificate presented with the real vendor's root appended: still not chained
        rogue = _self_signed(SOFT_AAGUID)
        dev = SoftAuthenticator(attestation="packed-full", ca=rogue)
        opts = rp.registration_options("alice", "rogue-chain")
        made = dev.create(opts["publicKey"], ORIGIN)
        refused(AuthnCode.ATTESTATION_REFUSED, rp.register, "alice", opts["ceremony_id"], made)
        assert rp.credentials("alice") == []
        # the genuine vendor device still registers
        good = SoftAuthenticator(attestation="packed-full", ca=vendor)
        opts = rp.registration_options("alice", "phone")
        assert rp.register("alice", opts["ceremony_id"], good.create(opts["publicKey"], ORIGIN)).aaguid == MODEL


# ---- clientData ---------------------------------------------------------------------------------------------
def _client(ch: dict[str, Any], **over: Any) -> dict[str, Any]:
    return {"type": "webauthn.get", "challenge": ch["publicKey"]["challenge"], "origin": ORIGIN,
            "crossOrigin": False, **over}  # fmt: skip


def test_client_data_extra_fields_are_ignored_cross_origin_is_refused(rp: RelyingParty) -> None:
    dev = SoftAuthenticator()
    register(rp, dev)
    ch = rp.payment_challenge("alice", *PAY)
    # WebAuthn §5.8.1: a relying party ignores members it does not know (browsers add some)
    extra = forge(dev, ch["publicKey"], _client(ch, other_keys_can_be_added_here="x", topOrigin=ORIGIN), counter=1)
    assert rp.verify_payment("alice", ch["challenge_id"], extra, *PAY).sign_count == 1
    cases = [
        ({"crossOrigin": True}, AuthnCode.OTHER_ORIGIN),  # made in a frame of another site
        ({"crossOrigin": "true"}, AuthnCode.MALFORMED_CREDENTIAL),
        ({"crossOrigin": 1}, AuthnCode.MALFORMED_CREDENTIAL),
        ({"type": "payment.secure-payment"}, AuthnCode.WRONG_CEREMONY),
    ]
    for n, (over, code) in enumerate(cases):
        ch = rp.payment_challenge("alice", *PAY)
        answer = forge(dev, ch["publicKey"], _client(ch, **over), counter=10 + n)
        refused(code, rp.verify_payment, "alice", ch["challenge_id"], answer, *PAY)


@pytest.mark.parametrize(
    ("binding", "code"),
    [
        ({"status": "present", "id": "AAAA"}, AuthnCode.MALFORMED_CREDENTIAL),  # no TLS binding here to match
        ({"status": "bogus"}, AuthnCode.MALFORMED_CREDENTIAL),
        ("present", AuthnCode.MALFORMED_CREDENTIAL),
        ({"status": "supported"}, None),
        ({"status": "not-supported"}, None),
    ],
)
def test_token_binding(rp: RelyingParty, binding: Any, code: AuthnCode | None) -> None:
    dev = SoftAuthenticator()
    register(rp, dev)
    ch = rp.payment_challenge("alice", *PAY)
    answer = forge(dev, ch["publicKey"], _client(ch, tokenBinding=binding))
    if code is None:
        assert rp.verify_payment("alice", ch["challenge_id"], answer, *PAY).order_id == PAY[0]
    else:
        refused(code, rp.verify_payment, "alice", ch["challenge_id"], answer, *PAY)


@pytest.mark.parametrize(
    "origin",
    [ORIGIN + "/", "http://localhost:8766", "http://localhost", "https://localhost:8765", "http://LOCALHOST:8765",
     "http://localhost:8765.evil.example", "http://evil.localhost:8765", " " + ORIGIN, ORIGIN + "#"],
)  # fmt: skip
def test_origin_must_be_exactly_ours(rp: RelyingParty, origin: str) -> None:
    dev = SoftAuthenticator()
    register(rp, dev)
    ch = rp.payment_challenge("alice", *PAY)
    refused(AuthnCode.OTHER_ORIGIN, rp.verify_payment, "alice", ch["challenge_id"], dev.get(ch["publicKey"], origin),
            *PAY)  # fmt: skip


def test_rp_id_of_a_parent_or_sibling_domain_is_refused(rp: RelyingParty) -> None:
    dev = SoftAuthenticator()
    register(rp, dev)
    for rp_id in ("localhost.", "LOCALHOST", "evil.localhost", "host"):
        ch = rp.payment_challenge("alice", *PAY)
        answer = forge(dev, dict(ch["publicKey"], rpId=rp_id), _client(ch), counter=5)
        refused(AuthnCode.OTHER_RP_ID, rp.verify_payment, "alice", ch["challenge_id"], answer, *PAY)


# ---- time and counters --------------------------------------------------------------------------------------
def test_expiry_to_the_millisecond(rp: RelyingParty, clock: ManualClock) -> None:
    dev = SoftAuthenticator()
    register(rp, dev)
    on_time, late = rp.payment_challenge("alice", *PAY), rp.payment_challenge("alice", *PAY)
    assert on_time["expires_ms"] == late["expires_ms"] == T0 + lim.challenge_ttl_ms_default
    a1, a2 = dev.get(on_time["publicKey"], ORIGIN), dev.get(late["publicKey"], ORIGIN)
    clock.t = on_time["expires_ms"]
    assert rp.verify_payment("alice", on_time["challenge_id"], a1, *PAY).confirmed_ms == clock.t
    clock.t += 1
    refused(AuthnCode.CHALLENGE_EXPIRED, rp.verify_payment, "alice", late["challenge_id"], a2, *PAY)


def test_counter_zero_after_use_and_wrap_around_are_clone_alarms(rp: RelyingParty) -> None:
    dev = SoftAuthenticator()
    cid = unb64url(register(rp, dev))
    dev.set_counter(cid, 2**32 - 2)  # the next assertion signs the highest counter there is
    ch = rp.payment_challenge("alice", *PAY)
    assert (
        rp.verify_payment("alice", ch["challenge_id"], dev.get(ch["publicKey"], ORIGIN), *PAY).sign_count == 2**32 - 1
    )
    # a 32-bit counter that wrapped to 0 cannot be told from a clone: alarm, device revoked (WebAuthn §6.1.1)
    ch = rp.payment_challenge("alice", *PAY)
    refused(AuthnCode.COUNTER_REGRESSED, rp.verify_payment, "alice", ch["challenge_id"],
            forge(dev, ch["publicKey"], _client(ch), counter=0), *PAY)  # fmt: skip
    assert not rp.credentials("alice")[0].active
    assert rp.clone_alarms("alice")[0]["seen_count"] == 0


def test_counter_zero_is_fine_only_while_both_are_zero(rp: RelyingParty) -> None:
    dev = SoftAuthenticator()
    register(rp, dev)
    for _ in range(2):  # an authenticator without a counter (synced passkeys) always says 0
        ch = rp.payment_challenge("alice", *PAY)
        assert rp.verify_payment("alice", ch["challenge_id"], forge(dev, ch["publicKey"], _client(ch), counter=0),
                                 *PAY).sign_count == 0  # fmt: skip
    ch = rp.payment_challenge("alice", *PAY)
    assert rp.verify_payment("alice", ch["challenge_id"], forge(dev, ch["publicKey"], _client(ch), counter=7),
                             *PAY).sign_count == 7  # fmt: skip
    ch = rp.payment_challenge("alice", *PAY)
    refused(AuthnCode.COUNTER_REGRESSED, rp.verify_payment, "alice", ch["challenge_id"],
            forge(dev, ch["publicKey"], _client(ch), counter=0), *PAY)  # fmt: skip


def test_an_unsigned_counter_raises_no_alarm(rp: RelyingParty) -> None:
    dev = SoftAuthenticator()
    register(rp, dev)
    pay = rp.payment_challenge("alice", *PAY)
    rp.verify_payment("alice", pay["challenge_id"], forge(dev, pay["publicKey"], _client(pay), counter=9), *PAY)
    ch = rp.payment_challenge("alice", *PAY)
    answer = forge(dev, ch["publicKey"], _client(ch), counter=10)
    auth = bytearray(unb64url(answer["response"]["authenticatorData"]))
    auth[33:37] = (1).to_bytes(4, "big")  # the man in the middle lowers the counter: the signature breaks
    answer["response"]["authenticatorData"] = b64url(bytes(auth))
    refused(AuthnCode.BAD_SIGNATURE, rp.verify_payment, "alice", ch["challenge_id"], answer, *PAY)
    assert rp.clone_alarms("alice") == [] and rp.credentials("alice")[0].active


# ---- sizes --------------------------------------------------------------------------------------------------
def test_every_limit_is_enforced_with_a_code_and_consumes_nothing(rp: RelyingParty) -> None:
    dev = SoftAuthenticator()
    register(rp, dev)
    ch = rp.payment_challenge("alice", *PAY)
    answer = dev.get(ch["publicKey"], ORIGIN)
    huge = "A" * (lim.credential_json_bytes_max + 4)
    for field in ("clientDataJSON", "authenticatorData", "signature", "userHandle"):
        big = json.loads(json.dumps(answer))
        big["response"][field] = huge
        refused(AuthnCode.BAD_REQUEST, rp.verify_payment, "alice", ch["challenge_id"], big, *PAY)  # as a dict
        refused(AuthnCode.BAD_REQUEST, rp.verify_payment, "alice", ch["challenge_id"], json.dumps(big), *PAY)
    big = dict(answer, id=huge, rawId=huge)
    refused(AuthnCode.BAD_REQUEST, rp.verify_payment, "alice", ch["challenge_id"], big, *PAY)
    refused(AuthnCode.BAD_REQUEST, rp.verify_payment, "alice", "c" * (lim.ceremony_id_chars_max + 1), answer, *PAY)
    refused(AuthnCode.BAD_REQUEST, rp.verify_payment, "alice", ch["challenge_id"], answer,
            "o" * (lim.order_id_chars_max + 1), *PAY[1:])  # fmt: skip
    refused(AuthnCode.BAD_REQUEST, rp.payment_challenge, "alice", "o", "p" * (lim.payee_chars_max + 1), 1, "CNY")
    refused(AuthnCode.BAD_REQUEST, rp.payment_challenge, "alice", "o", "p", lim.amount_fen_max + 1, "CNY")
    refused(AuthnCode.BAD_REQUEST, rp.payment_challenge, "a" * (lim.shopper_chars_max + 1), "o", "p", 1, "CNY")
    refused(AuthnCode.BAD_REQUEST, rp.verify_payments, [PaymentAnswer("alice", ch["challenge_id"], answer, *PAY)]
            * (lim.batch_answers_max + 1))  # fmt: skip
    assert status(rp, ch["challenge_id"]) == (None, None)
    assert rp.verify_payment("alice", ch["challenge_id"], answer, *PAY).order_id == PAY[0]
    # registration: a posted dict is bounded as its text would be
    opts = rp.registration_options("alice", "tablet")
    made = SoftAuthenticator().create(opts["publicKey"], ORIGIN)
    made["response"]["attestationObject"] = huge
    refused(AuthnCode.BAD_REQUEST, rp.register, "alice", opts["ceremony_id"], made)
    assert status(rp, opts["ceremony_id"]) == (None, None)


def test_junk_in_base64_is_refused_not_skipped(rp: RelyingParty) -> None:
    dev = SoftAuthenticator()
    register(rp, dev)
    ch = rp.payment_challenge("alice", *PAY)
    answer = dev.get(ch["publicKey"], ORIGIN)
    for field in ("authenticatorData", "signature"):
        bad = json.loads(json.dumps(answer))
        text = bad["response"][field]
        bad["response"][field] = text[:8] + "!*" + text[8:]  # a lenient decoder drops the junk
        refused(AuthnCode.MALFORMED_CREDENTIAL, rp.verify_payment, "alice", ch["challenge_id"], bad, *PAY)
        ch = rp.payment_challenge("alice", *PAY)
        answer = dev.get(ch["publicKey"], ORIGIN)
    bad = dict(answer, id=answer["id"] + "é", rawId=answer["rawId"] + "é")
    refused(AuthnCode.MALFORMED_CREDENTIAL, rp.verify_payment, "alice", ch["challenge_id"], bad, *PAY)


# ---- concurrency and crashes --------------------------------------------------------------------------------
def test_one_winner_among_concurrent_single_and_batched_answers(rp: RelyingParty) -> None:
    dev = SoftAuthenticator()
    register(rp, dev)
    for _ in range(5):
        ch = rp.payment_challenge("alice", *PAY)
        answer = json.dumps(dev.get(ch["publicKey"], ORIGIN))
        outcomes: list[int] = []
        start = threading.Barrier(12)

        def single(
            ch: dict[str, Any] = ch,
            answer: str = answer,
            start: threading.Barrier = start,
            outcomes: list[int] = outcomes,
        ) -> None:
            start.wait()
            try:
                rp.verify_payment("alice", ch["challenge_id"], answer, *PAY)
                outcomes.append(0)
            except AuthnError as exc:
                outcomes.append(exc.code)

        def batched(
            ch: dict[str, Any] = ch,
            answer: str = answer,
            start: threading.Barrier = start,
            outcomes: list[int] = outcomes,
        ) -> None:
            start.wait()
            for r in rp.verify_payments([PaymentAnswer("alice", ch["challenge_id"], answer, *PAY)] * 3):
                outcomes.append(r.code if isinstance(r, AuthnError) else 0)

        threads = [threading.Thread(target=single if k % 2 else batched) for k in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert outcomes.count(0) == 1 and set(outcomes) == {0, AuthnCode.REPLAYED}, outcomes
        assert rp._store.row("SELECT count(*) FROM evidence WHERE ceremony_id = ?", (ch["challenge_id"],)) == (1,)


_CHILD = textwrap.dedent(
    """
    import json, os, signal, sys, time
    from pathlib import Path
    from liangcao.authn import RelyingParty
    home, mode = Path(sys.argv[1]), sys.argv[2]
    work = json.loads(Path(sys.argv[3]).read_text())
    rp = RelyingParty("localhost", sys.argv[4], home)
    if mode == "before-durable":
        # the verdict is judged, then the process dies as its write begins: nothing may be on disk
        rp._store.write = lambda ops: os.kill(os.getpid(), signal.SIGKILL)
    for cid, answer, terms in work:
        c = rp.verify_payment("alice", cid, answer, *terms)
        print(c.challenge_id, flush=True)
    print("done", flush=True)
    time.sleep(60)
    """
)


def _child(tmp_path: Path, home: Path, mode: str, work: list[Any]) -> subprocess.Popen[str]:
    (tmp_path / "work.json").write_text(json.dumps(work))
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(home), mode, str(tmp_path / "work.json"), ORIGIN],
        stdout=subprocess.PIPE,
        text=True,
    )


def _prepare(home: Path, n: int) -> list[Any]:
    dev = SoftAuthenticator()
    work = []
    with RelyingParty("localhost", ORIGIN, home) as rp:
        register(rp, dev)
        for i in range(n):
            terms = (f"order-{i}", "merchant-9", 100 + i, "CNY")
            ch = rp.payment_challenge("alice", *terms)
            work.append([ch["challenge_id"], dev.get(ch["publicKey"], ORIGIN), terms])
    return work


def test_kill_9_before_the_verdict_is_durable_leaves_the_ceremony_answerable_once(tmp_path: Path) -> None:
    home = tmp_path / "authn"
    work = _prepare(home, 1)
    child = _child(tmp_path, home, "before-durable", work)
    try:
        assert child.wait(timeout=60) == -signal.SIGKILL
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    (cid, answer, terms) = work[0]
    with RelyingParty("localhost", ORIGIN, home) as rp:  # the dead process's lock is gone with it
        assert rp.confirmation("alice", cid) is None and status(rp, cid) == (None, None)
        assert rp.credentials("alice")[0].sign_count == 0
        assert rp.verify_payment("alice", cid, answer, *terms).sign_count == 1
        refused(AuthnCode.REPLAYED, rp.verify_payment, "alice", cid, answer, *terms)


def test_kill_9_mid_stream_every_acknowledged_confirmation_is_on_disk(tmp_path: Path) -> None:
    home = tmp_path / "authn"
    work = _prepare(home, 40)
    child = _child(tmp_path, home, "stream", work)
    acknowledged: list[str] = []
    try:
        assert child.stdout is not None
        for line in child.stdout:
            acknowledged.append(line.strip())
            if len(acknowledged) == 15:
                os.kill(child.pid, signal.SIGKILL)  # at once, mid-stream: the next verdicts may be half-done
                break
        child.wait(timeout=60)
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    with RelyingParty("localhost", ORIGIN, home) as rp:
        counters = []
        for cid, answer, terms in work:
            found = rp.confirmation("alice", cid)
            if cid in acknowledged:
                assert found is not None and found.amount_fen == terms[2]  # acknowledged means durable
            if found is not None:
                refused(AuthnCode.REPLAYED, rp.verify_payment, "alice", cid, answer, *terms)
            else:  # never acknowledged, never recorded: the gateway may still accept it, once
                assert status(rp, cid) == (None, None)
                counters.append(rp.verify_payment("alice", cid, answer, *terms).sign_count)
        assert counters == sorted(counters)
        assert rp.clone_alarms("alice") == [] and rp.credentials("alice")[0].sign_count == len(work)


def test_concurrent_callers_are_judged_in_queue_batches_each_with_its_own_verdict(rp: RelyingParty) -> None:
    devices = {f"s{k}": SoftAuthenticator() for k in range(12)}
    for shopper, dev in devices.items():
        register(rp, dev, shopper)
    plans: dict[str, list[tuple[str, Any, tuple[Any, ...], int]]] = {}
    for shopper, dev in devices.items():
        plan = []
        for i in range(6):
            terms = (f"order-{i}", "merchant-9", 100 + i, "CNY")
            ch = rp.payment_challenge(shopper, *terms)
            plan.append((ch["challenge_id"], dev.get(ch["publicKey"], ORIGIN), terms, 0))
        plan.append((plan[0][0], plan[0][1], plan[0][2], AuthnCode.REPLAYED))  # a replay, behind the original
        ch = rp.payment_challenge(shopper, "order-x", "merchant-9", 500, "CNY")
        plan.append((ch["challenge_id"], dev.get(ch["publicKey"], ORIGIN), ("order-x", "merchant-9", 501, "CNY"),
                     AuthnCode.OTHER_AMOUNT))  # fmt: skip
        plans[shopper] = plan
    commits0 = rp._store.commits
    got: dict[str, list[int]] = {s: [] for s in plans}
    start = threading.Barrier(len(plans))

    def shopper_pays(shopper: str) -> None:
        start.wait()
        for cid, answer, terms, _ in plans[shopper]:
            try:
                assert rp.verify_payment(shopper, cid, answer, *terms).challenge_id == cid
                got[shopper].append(0)
            except AuthnError as exc:
                got[shopper].append(exc.code)

    threads = [threading.Thread(target=shopper_pays, args=(s,)) for s in plans]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == {s: [want for *_, want in plan] for s, plan in plans.items()}
    assert rp._store.commits - commits0 <= sum(len(p) for p in plans.values())
    assert rp._store.row("SELECT count(*) FROM evidence") == (12 * 6,)
    assert all(c.sign_count == 6 for s in plans for c in rp.credentials(s)) and rp.clone_alarms("s0") == []


def test_a_store_fault_reaches_every_caller_of_the_batch_and_consumes_nothing(rp: RelyingParty) -> None:
    from liangcao.errors import StoreError

    devices = {f"s{k}": SoftAuthenticator() for k in range(6)}
    work = []
    for shopper, dev in devices.items():
        register(rp, dev, shopper)
        ch = rp.payment_challenge(shopper, *PAY)
        work.append((shopper, ch["challenge_id"], dev.get(ch["publicKey"], ORIGIN)))
    write = rp._store.write

    def failing(ops: Any) -> None:
        raise StoreError(codes.Code.NOT_READY, "disk full")

    rp._store.write = failing  # type: ignore[method-assign]
    faults: list[str] = []
    start = threading.Barrier(len(work))

    def pay(shopper: str, cid: str, answer: Any) -> None:
        start.wait()
        try:
            rp.verify_payment(shopper, cid, answer, *PAY)
        except StoreError:
            faults.append(shopper)

    threads = [threading.Thread(target=pay, args=w) for w in work]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(faults) == sorted(devices)
    rp._store.write = write  # type: ignore[method-assign]
    for shopper, cid, answer in work:  # nothing was recorded: each is answerable (its counter is not behind)
        assert status(rp, cid) == (None, None)
        assert rp.verify_payment(shopper, cid, answer, *PAY).sign_count == 1


def test_a_store_fault_in_a_batch_leaves_every_answer_answerable(rp: RelyingParty) -> None:
    from liangcao.errors import StoreError

    dev = SoftAuthenticator()
    register(rp, dev)
    answers = []
    for i in range(3):
        terms = (f"order-{i}", "merchant-9", 100 + i, "CNY")
        ch = rp.payment_challenge("alice", *terms)
        answers.append(PaymentAnswer("alice", ch["challenge_id"], dev.get(ch["publicKey"], ORIGIN), *terms))
    write = rp._store.write

    def failing(ops: Any) -> None:
        raise StoreError(codes.Code.NOT_READY, "disk full")

    rp._store.write = failing  # type: ignore[method-assign]
    with pytest.raises(StoreError):
        rp.verify_payments(answers)
    rp._store.write = write  # type: ignore[method-assign]
    assert [r.sign_count for r in rp.verify_payments(answers) if not isinstance(r, AuthnError)] == [1, 2, 3]
    assert rp.clone_alarms("alice") == []


def test_one_device_registered_by_two_shoppers_at_once_is_refused_with_its_code(rp: RelyingParty) -> None:
    for round_ in range(3):
        dev = SoftAuthenticator()
        shoppers = [f"a{round_}", f"b{round_}", f"c{round_}", f"d{round_}"]
        opts = {s: rp.registration_options(s, "phone") for s in shoppers}
        first = dev.create(opts[shoppers[0]]["publicKey"], ORIGIN)
        cred_id = unb64url(first["rawId"])
        made = {shoppers[0]: first} | {s: dev.create(opts[s]["publicKey"], ORIGIN, reuse=cred_id) for s in shoppers[1:]}
        outcomes: list[int | str] = []
        start = threading.Barrier(len(shoppers))

        def enrol(shopper: str, ceremony: str, answer: Any, start: threading.Barrier = start,
                  outcomes: list[int | str] = outcomes) -> None:  # fmt: skip
            start.wait()
            try:
                rp.register(shopper, ceremony, answer)
                outcomes.append(0)
            except AuthnError as exc:
                outcomes.append(exc.code)
            except Exception as exc:  # a fault (the UNIQUE constraint) instead of the refusal's code
                outcomes.append(type(exc).__name__)

        threads = [threading.Thread(target=enrol, args=(s, opts[s]["ceremony_id"], made[s])) for s in shoppers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes, key=str) == [0] + [AuthnCode.DUPLICATE_CREDENTIAL] * 3, outcomes


def test_two_devices_with_one_name_at_once_one_is_refused(rp: RelyingParty) -> None:
    opts = [rp.registration_options("alice", "phone") for _ in range(4)]
    made = [SoftAuthenticator().create(o["publicKey"], ORIGIN) for o in opts]
    outcomes: list[int] = []
    start = threading.Barrier(len(opts))

    def enrol(k: int) -> None:
        start.wait()
        try:
            rp.register("alice", opts[k]["ceremony_id"], made[k])
            outcomes.append(0)
        except AuthnError as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=enrol, args=(k,)) for k in range(len(opts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == [0] + [AuthnCode.DEVICE_NAME_TAKEN] * 3, outcomes
    assert [c.name for c in rp.credentials("alice")] == ["phone"]


def test_two_devices_renamed_alike_at_once_one_is_refused(rp: RelyingParty) -> None:
    ids = [register(rp, SoftAuthenticator(), name=f"device-{k}") for k in range(4)]
    outcomes: list[int] = []
    start = threading.Barrier(len(ids))

    def rename(cid: str) -> None:
        start.wait()
        try:
            rp.rename("alice", cid, "phone")
            outcomes.append(0)
        except AuthnError as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=rename, args=(cid,)) for cid in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == [0] + [AuthnCode.DEVICE_NAME_TAKEN] * 3, outcomes
    assert sorted(c.name for c in rp.credentials("alice")).count("phone") == 1
