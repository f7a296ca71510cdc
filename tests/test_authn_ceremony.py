"""The WebAuthn ceremonies of ``liangcao.authn``: every rule and each refusal with its own code.

The device is ``SoftAuthenticator`` (real P-256 / Ed25519 keys, real CBOR and clientDataJSON); the relying
party is the production one over a real SQLite store in a temporary folder. Attacks are made the way an
attacker would make them: re-sending captured JSON, editing the bytes, signing for another origin or RP id,
cloning a key.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from authn_harness import ORIGIN, T0, ManualClock, refused, register
from liangcao import codes
from liangcao.authn import AttestationCA, AuthnCode, AuthnError, PaymentAnswer, RelyingParty, SoftAuthenticator
from liangcao.authn import codes as lim
from liangcao.authn.soft import b64url, unb64url
from liangcao.errors import StoreError


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def rp(tmp_path: Path, clock: ManualClock) -> Iterator[RelyingParty]:
    with RelyingParty("localhost", ORIGIN, tmp_path / "authn", clock) as party:
        yield party


PAY = ("order-1", "merchant-9", 12_345, "CNY")


def pay(
    rp: RelyingParty, dev: SoftAuthenticator, shopper: str = "alice", terms: tuple[Any, ...] = PAY, **kw: Any
) -> Any:
    ch = rp.payment_challenge(shopper, *terms)
    answer = dev.get(ch["publicKey"], kw.get("origin", ORIGIN))
    return rp.verify_payment(shopper, ch["challenge_id"], answer, *terms)


# ---- codes --------------------------------------------------------------------------------------------------
def test_every_code_is_in_the_authn_range_and_registered() -> None:
    for member in AuthnCode:
        assert 3200 <= member <= 3299
        info = codes.info(member)
        assert info is not None and info.owner == "authn" and info.name == member.name
    assert codes.http_status(AuthnCode.REPLAYED) == 409 and codes.http_status(AuthnCode.UV_MISSING) == 403


# ---- registration -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("alg", "attestation"), [("ES256", "none"), ("Ed25519", "none"), ("ES256", "packed-self"),
                                                  ("Ed25519", "packed-self")])  # fmt: skip
def test_register_then_pay_with_each_algorithm_and_format(rp: RelyingParty, alg: Any, attestation: Any) -> None:
    dev = SoftAuthenticator(alg=alg, attestation=attestation)
    cid = register(rp, dev)
    (cred,) = rp.credentials("alice")
    assert cred.id == cid and cred.name == "phone" and cred.active
    assert cred.alg == ("ES256" if alg == "ES256" else "EdDSA")
    assert cred.fmt == ("none" if attestation == "none" else "packed")
    ok = pay(rp, dev)
    assert (ok.order_id, ok.payee, ok.amount_fen, ok.currency) == PAY
    assert ok.credential_id == cid and ok.device_name == "phone" and ok.user_verified and ok.sign_count == 1


def test_registration_options_ask_for_user_verification_and_exclude_known_devices(rp: RelyingParty) -> None:
    first = register(rp, SoftAuthenticator())
    opts = rp.registration_options("alice", "tablet")["publicKey"]
    assert opts["authenticatorSelection"]["userVerification"] == "required"
    assert [c["id"] for c in opts["excludeCredentials"]] == [first]
    assert {p["alg"] for p in opts["pubKeyCredParams"]} == {-7, -8}
    assert opts["rp"]["id"] == "localhost" and unb64url(opts["user"]["id"]) != b"alice"  # a random handle


def test_registration_refusals(rp: RelyingParty, clock: ManualClock) -> None:
    dev = SoftAuthenticator()
    opts = rp.registration_options("alice", "phone")
    answer = dev.create(opts["publicKey"], ORIGIN)
    rp.register("alice", opts["ceremony_id"], answer)
    refused(AuthnCode.REPLAYED, rp.register, "alice", opts["ceremony_id"], answer)
    refused(AuthnCode.DEVICE_NAME_TAKEN, rp.registration_options, "alice", "phone")
    # UV missing at registration: a payment device must verify its user
    opts = rp.registration_options("alice", "no-uv")
    refused(AuthnCode.UV_MISSING, rp.register, "alice", opts["ceremony_id"],
            SoftAuthenticator(uv=False).create(opts["publicKey"], ORIGIN))  # fmt: skip
    opts = rp.registration_options("alice", "evil")
    refused(AuthnCode.OTHER_ORIGIN, rp.register, "alice", opts["ceremony_id"],
            dev.create(opts["publicKey"], "https://evil.example"))  # fmt: skip
    opts = rp.registration_options("alice", "late")
    clock.t += rp.challenge_ttl_ms + 1
    refused(
        AuthnCode.CHALLENGE_EXPIRED, rp.register, "alice", opts["ceremony_id"], dev.create(opts["publicKey"], ORIGIN)
    )
    # the same credential presented again under a new ceremony
    again = rp.registration_options("alice", "again")
    refused(AuthnCode.DUPLICATE_CREDENTIAL, rp.register, "alice", again["ceremony_id"],
            dev.create(again["publicKey"], ORIGIN, reuse=next(iter(dev.keys))))  # fmt: skip
    # a ceremony of another shopper, and garbage
    bob = rp.registration_options("bob", "phone")
    refused(AuthnCode.UNKNOWN_CHALLENGE, rp.register, "alice", bob["ceremony_id"], dev.create(bob["publicKey"], ORIGIN))
    refused(AuthnCode.MALFORMED_CREDENTIAL, rp.register, "bob", bob["ceremony_id"], "{not json")
    assert [c.name for c in rp.credentials("alice")] == ["phone"]


def test_registration_answer_for_another_challenge_or_ceremony_type(rp: RelyingParty) -> None:
    dev = SoftAuthenticator()
    a = rp.registration_options("alice", "a")
    b = rp.registration_options("alice", "b")
    refused(AuthnCode.CHALLENGE_MISMATCH, rp.register, "alice", a["ceremony_id"], dev.create(b["publicKey"], ORIGIN))
    register(rp, dev, name="c")
    ch = rp.payment_challenge("alice", *PAY)
    assertion = dev.get(ch["publicKey"], ORIGIN)
    fake = {**assertion, "response": {"clientDataJSON": assertion["response"]["clientDataJSON"],
                                      "attestationObject": b64url(b"\xa0")}}  # fmt: skip
    refused(AuthnCode.WRONG_CEREMONY, rp.register, "alice", b["ceremony_id"], fake)
    c = rp.registration_options("alice", "d")
    answer = dev.create(c["publicKey"], ORIGIN)
    answer["response"]["attestationObject"] = b64url(b"\xa0")
    refused(AuthnCode.MALFORMED_CREDENTIAL, rp.register, "alice", c["ceremony_id"], answer)


def test_too_many_devices(rp: RelyingParty, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lim, "credentials_per_shopper_max", 2)
    dev = SoftAuthenticator()
    register(rp, dev, name="one")
    register(rp, dev, name="two")
    refused(AuthnCode.TOO_MANY_CREDENTIALS, rp.registration_options, "alice", "three")


def test_aaguid_allow_list_needs_a_vendor_chain_naming_an_allowed_model(tmp_path: Path, clock: ManualClock) -> None:
    model = "6c69616e-6763-616f-2d73-6f66742d3031"
    ca = AttestationCA.create()
    with pytest.raises(ValueError, match="attestation_roots"):
        RelyingParty("localhost", ORIGIN, tmp_path / "x", clock, {model})
    with RelyingParty("localhost", ORIGIN, tmp_path / "a", clock, {model}, attestation_roots=[ca.root_pem]) as rp:
        opts = rp.registration_options("alice", "phone")
        assert opts["publicKey"]["attestation"] == "direct"
        good = SoftAuthenticator(attestation="packed-full", ca=ca)
        cred = rp.register("alice", opts["ceremony_id"], good.create(opts["publicKey"], ORIGIN))
        assert cred.aaguid == model and cred.fmt == "packed"
        assert pay(rp, good).amount_fen == PAY[2]
        # self-attested or unattested: the AAGUID is only the device's own claim
        for attestation in ("none", "packed-self"):
            opts = rp.registration_options("alice", attestation)
            dev = SoftAuthenticator(attestation=attestation)  # type: ignore[arg-type]
            refused(AuthnCode.ATTESTATION_REFUSED, rp.register, "alice", opts["ceremony_id"],
                    dev.create(opts["publicKey"], ORIGIN))  # fmt: skip
        # a model not on the list, even with a good chain
        other = bytes(16)
        opts = rp.registration_options("alice", "other-model")
        dev = SoftAuthenticator(attestation="packed-full", aaguid=other, ca=AttestationCA.create(other))
        refused(
            AuthnCode.AAGUID_NOT_ALLOWED,
            rp.register,
            "alice",
            opts["ceremony_id"],
            dev.create(opts["publicKey"], ORIGIN),
        )
        # an allowed model claimed by a device whose certificate chains to another vendor's root
        opts = rp.registration_options("alice", "rogue-vendor")
        dev = SoftAuthenticator(attestation="packed-full", ca=AttestationCA.create())
        refused(
            AuthnCode.ATTESTATION_REFUSED,
            rp.register,
            "alice",
            opts["ceremony_id"],
            dev.create(opts["publicKey"], ORIGIN),
        )
        # the trusted vendor's chain, but its certificate names another model than the device claims
        lying = AttestationCA.create(bytes(16))
        with RelyingParty(
            "localhost", ORIGIN, tmp_path / "b", clock, {model}, attestation_roots=[lying.root_pem]
        ) as rp2:
            opts = rp2.registration_options("bob", "lying")
            dev = SoftAuthenticator(attestation="packed-full", aaguid=bytes.fromhex(model.replace("-", "")), ca=lying)
            refused(AuthnCode.ATTESTATION_REFUSED, rp2.register, "bob", opts["ceremony_id"],
                    dev.create(opts["publicKey"], ORIGIN))  # fmt: skip


# ---- payments -----------------------------------------------------------------------------------------------
def test_payment_challenge_commits_to_the_terms_and_requires_uv(rp: RelyingParty) -> None:
    dev = SoftAuthenticator()
    cid = register(rp, dev)
    ch = rp.payment_challenge("alice", *PAY)
    assert ch["payment"] == dict(zip(("order_id", "payee", "amount_fen", "currency"), PAY, strict=True))
    assert ch["publicKey"]["userVerification"] == "required"
    assert [c["id"] for c in ch["publicKey"]["allowCredentials"]] == [cid]
    again = rp.payment_challenge("alice", *PAY)
    assert again["publicKey"]["challenge"] != ch["publicKey"]["challenge"]  # a fresh nonce: each answered once


def test_replayed_assertion_is_refused(rp: RelyingParty) -> None:
    dev = SoftAuthenticator()
    register(rp, dev)
    ch = rp.payment_challenge("alice", *PAY)
    answer = dev.get(ch["publicKey"], ORIGIN)
    first = rp.verify_payment("alice", ch["challenge_id"], answer, *PAY)
    refused(AuthnCode.REPLAYED, rp.verify_payment, "alice", ch["challenge_id"], answer, *PAY)
    # a gateway that lost track after a crash learns the first answer won, and for what
    assert rp.confirmation("alice", ch["challenge_id"]) == first
    assert rp.confirmation("bob", ch["challenge_id"]) is None
    # the same signature presented against a new challenge: it signed the old one
    fresh = rp.payment_challenge("alice", *PAY)
    refused(AuthnCode.CHALLENGE_MISMATCH, rp.verify_payment, "alice", fresh["challenge_id"], answer, *PAY)
    assert rp.confirmation("alice", fresh["challenge_id"]) is None  # refused: no confirmation


@pytest.mark.parametrize(
    ("terms", "code"),
    [
        (("order-1", "merchant-9", 99_999, "CNY"), AuthnCode.OTHER_AMOUNT),
        (("order-1", "merchant-9", 12_345, "USD"), AuthnCode.OTHER_AMOUNT),
        (("order-1", "attacker", 12_345, "CNY"), AuthnCode.OTHER_PAYEE),
        (("order-2", "merchant-9", 12_345, "CNY"), AuthnCode.OTHER_ORDER),
    ],
)
def test_assertion_for_other_terms_is_refused(rp: RelyingParty, terms: tuple[Any, ...], code: AuthnCode) -> None:
    dev = SoftAuthenticator()
    register(rp, dev)
    ch = rp.payment_challenge("alice", *PAY)
    answer = dev.get(ch["publicKey"], ORIGIN)
    refused(code, rp.verify_payment, "alice", ch["challenge_id"], answer, *terms)
    # the refusal used the challenge up: the honest terms can no longer ride on it
    refused(AuthnCode.REPLAYED, rp.verify_payment, "alice", ch["challenge_id"], answer, *PAY)


def test_signature_for_another_payment_challenge_is_refused(rp: RelyingParty) -> None:
    dev = SoftAuthenticator()
    register(rp, dev)
    small = rp.payment_challenge("alice", "order-1", "merchant-9", 100, "CNY")
    big = rp.payment_challenge("alice", "order-1", "merchant-9", 100_000, "CNY")
    signed_small = dev.get(small["publicKey"], ORIGIN)
    refused(AuthnCode.CHALLENGE_MISMATCH, rp.verify_payment, "alice", big["challenge_id"], signed_small,
            "order-1", "merchant-9", 100_000, "CNY")  # fmt: skip


def test_other_origin_and_other_rp_id_are_refused(rp: RelyingParty) -> None:
    dev = SoftAuthenticator()
    register(rp, dev)
    refused(AuthnCode.OTHER_ORIGIN, pay, rp, dev, "alice", PAY, origin="https://phish.example")
    # our origin, but inside another site's frame
    ch = rp.payment_challenge("alice", *PAY)
    answer = dev.get(ch["publicKey"], ORIGIN)
    cd = json.loads(unb64url(answer["response"]["clientDataJSON"]))
    answer["response"]["clientDataJSON"] = b64url(json.dumps({**cd, "crossOrigin": True}).encode())
    refused(AuthnCode.OTHER_ORIGIN, rp.verify_payment, "alice", ch["challenge_id"], answer, *PAY)
    ch = rp.payment_challenge("alice", *PAY)
    # a phishing site relays our challenge but its page can only ask for its own RP id
    dev.keys[next(iter(dev.keys))].rp_id = "phish.example"
    answer = dev.get({**ch["publicKey"], "rpId": "phish.example"}, ORIGIN)
    refused(AuthnCode.OTHER_RP_ID, rp.verify_payment, "alice", ch["challenge_id"], answer, *PAY)


def test_user_verification_and_presence_are_required(rp: RelyingParty) -> None:
    dev = SoftAuthenticator()
    register(rp, dev)
    dev.uv = False
    refused(AuthnCode.UV_MISSING, pay, rp, dev)
    dev.uv, dev.up = True, False
    refused(AuthnCode.USER_NOT_PRESENT, pay, rp, dev)
    dev.up = True
    assert pay(rp, dev).user_verified


def test_clone_alarm_when_the_counter_goes_backwards(rp: RelyingParty) -> None:
    phone = SoftAuthenticator()
    cid = register(rp, phone)
    clone = phone.clone()  # the key extracted at counter 0
    pay(rp, phone)
    pay(rp, phone)
    err = refused(AuthnCode.COUNTER_REGRESSED, pay, rp, clone)
    assert err.detail == {"stored_count": 2, "seen_count": 1}
    (alarm,) = rp.clone_alarms("alice")
    assert alarm["credential_id"] == cid and (alarm["stored_count"], alarm["seen_count"]) == (2, 1)
    # the key is compromised: the device is revoked, the genuine phone too must re-register
    cred = rp.credential("alice", cid)
    assert not cred.active and cred.revoked_reason is not None and "clone" in cred.revoked_reason
    refused(AuthnCode.UNKNOWN_SHOPPER, rp.payment_challenge, "alice", *PAY)  # no active device left


def test_counter_equal_is_a_clone_but_zero_counters_are_allowed(rp: RelyingParty) -> None:
    dev = SoftAuthenticator()
    cid = register(rp, dev)
    pay(rp, dev)
    dev.set_counter(unb64url(cid), 0)  # next signature says 1 again
    refused(AuthnCode.COUNTER_REGRESSED, pay, rp, dev)
    # an authenticator without a counter (always 0, as synced passkeys) is not a clone
    zero = SoftAuthenticator()
    zid = register(rp, zero, name="passkey")
    for _ in range(2):
        ch = rp.payment_challenge("alice", *PAY)
        zero.set_counter(unb64url(zid), -1)  # get() adds one: it signs counter 0
        answer = zero.get(ch["publicKey"], ORIGIN, unb64url(zid))
        assert rp.verify_payment("alice", ch["challenge_id"], answer, *PAY).sign_count == 0


def test_expired_challenge_is_refused(rp: RelyingParty, clock: ManualClock) -> None:
    dev = SoftAuthenticator()
    register(rp, dev)
    ch = rp.payment_challenge("alice", *PAY)
    assert ch["expires_ms"] == T0 + rp.challenge_ttl_ms
    answer = dev.get(ch["publicKey"], ORIGIN)
    clock.t = ch["expires_ms"] + 1
    refused(AuthnCode.CHALLENGE_EXPIRED, rp.verify_payment, "alice", ch["challenge_id"], answer, *PAY)


def test_unknown_revoked_and_other_shoppers_devices(rp: RelyingParty) -> None:
    phone, tablet, bobs = SoftAuthenticator(), SoftAuthenticator(alg="Ed25519"), SoftAuthenticator()
    pid = register(rp, phone, name="phone")
    register(rp, tablet, name="tablet")
    register(rp, bobs, "bob", "bob-phone")
    assert [c.name for c in rp.credentials("alice")] == ["phone", "tablet"]
    assert pay(rp, tablet).device_name == "tablet"
    # bob's device answering alice's challenge
    ch = rp.payment_challenge("alice", *PAY)
    answer = bobs.get({**ch["publicKey"], "allowCredentials": []}, ORIGIN)
    refused(AuthnCode.UNKNOWN_CREDENTIAL, rp.verify_payment, "alice", ch["challenge_id"], answer, *PAY)
    # revoked between the challenge and the answer
    ch = rp.payment_challenge("alice", *PAY)
    assert len(ch["publicKey"]["allowCredentials"]) == 2
    assert not rp.revoke("alice", pid).active
    assert not rp.revoke("alice", pid).active  # idempotent
    answer = phone.get(ch["publicKey"], ORIGIN, unb64url(pid))
    refused(AuthnCode.REVOKED_CREDENTIAL, rp.verify_payment, "alice", ch["challenge_id"], answer, *PAY)
    ch = rp.payment_challenge("alice", *PAY)
    assert len(ch["publicKey"]["allowCredentials"]) == 1  # revoked devices are no longer offered
    assert pay(rp, tablet).device_name == "tablet"
    # a challenge id of another shopper, and one that never existed
    refused(AuthnCode.UNKNOWN_CHALLENGE, rp.verify_payment, "bob", ch["challenge_id"], answer, *PAY)
    refused(AuthnCode.UNKNOWN_CHALLENGE, rp.verify_payment, "alice", "nope", answer, *PAY)
    refused(AuthnCode.UNKNOWN_CREDENTIAL, rp.revoke, "bob", pid)


def test_bad_signatures_and_edited_bytes(rp: RelyingParty) -> None:
    dev = SoftAuthenticator(alg="Ed25519")
    register(rp, dev)

    def edited(edit: Any) -> None:
        ch = rp.payment_challenge("alice", *PAY)
        answer = dev.get(ch["publicKey"], ORIGIN)
        edit(answer["response"])
        refused(AuthnCode.BAD_SIGNATURE, rp.verify_payment, "alice", ch["challenge_id"], answer, *PAY)

    def flip_signature(r: dict[str, str]) -> None:
        sig = bytearray(unb64url(r["signature"]))
        sig[5] ^= 1
        r["signature"] = b64url(bytes(sig))

    def raise_counter(r: dict[str, str]) -> None:  # a counter edited up to dodge the clone alarm
        data = bytearray(unb64url(r["authenticatorData"]))
        data[33:37] = (10_000).to_bytes(4, "big")
        r["authenticatorData"] = b64url(bytes(data))

    def add_field(r: dict[str, str]) -> None:  # clientDataJSON rewritten (still our challenge and origin)
        cd = json.loads(unb64url(r["clientDataJSON"]))
        r["clientDataJSON"] = b64url(json.dumps({**cd, "extra": 1}).encode())

    for edit in (flip_signature, raise_counter, add_field):
        edited(edit)
    # a forged counter never raises a false clone alarm, and the device still works
    assert rp.clone_alarms("alice") == [] and pay(rp, dev).amount_fen == PAY[2]


def test_wrong_ceremony_type_and_malformed_answers(rp: RelyingParty) -> None:
    dev = SoftAuthenticator()
    register(rp, dev)
    ch = rp.payment_challenge("alice", *PAY)
    answer = dev.get(ch["publicKey"], ORIGIN)
    cd = json.loads(unb64url(answer["response"]["clientDataJSON"]))
    answer["response"]["clientDataJSON"] = b64url(json.dumps({**cd, "type": "webauthn.create"}).encode())
    refused(AuthnCode.WRONG_CEREMONY, rp.verify_payment, "alice", ch["challenge_id"], answer, *PAY)
    ch = rp.payment_challenge("alice", *PAY)
    for junk in ("{", "[]", json.dumps({"id": "x"}), "x" * (lim.credential_json_bytes_max + 1)):
        with pytest.raises(AuthnError) as info:
            rp.verify_payment("alice", ch["challenge_id"], junk, *PAY)
        assert info.value.code in (AuthnCode.MALFORMED_CREDENTIAL, AuthnCode.BAD_REQUEST)
    # garbage never consumed the challenge: the honest answer still goes through
    assert rp.verify_payment("alice", ch["challenge_id"], dev.get(ch["publicKey"], ORIGIN), *PAY).amount_fen == PAY[2]


@pytest.mark.parametrize(
    "terms",
    [
        ("o", "p", 12.5, "CNY"),
        ("o", "p", 100.0, "CNY"),
        ("o", "p", True, "CNY"),
        ("o", "p", "100", "CNY"),
        ("o", "p", 0, "CNY"),
        ("o", "p", lim.amount_fen_max + 1, "CNY"),
        ("o", "p", 100, "cny"),
        ("", "p", 100, "CNY"),
        ("o", "p" * (lim.payee_chars_max + 1), 100, "CNY"),
        ("o\n", "p", 100, "CNY"),
    ],
)
def test_bad_payment_terms_are_refused(rp: RelyingParty, terms: tuple[Any, ...]) -> None:
    register(rp, SoftAuthenticator())
    refused(AuthnCode.BAD_REQUEST, rp.payment_challenge, "alice", *terms)


def test_one_answer_wins_among_concurrent_ones(rp: RelyingParty) -> None:
    dev = SoftAuthenticator()
    register(rp, dev)
    ch = rp.payment_challenge("alice", *PAY)
    answer = json.dumps(dev.get(ch["publicKey"], ORIGIN))
    outcomes: list[int] = []
    start = threading.Barrier(8)

    def attempt() -> None:
        start.wait()
        try:
            rp.verify_payment("alice", ch["challenge_id"], answer, *PAY)
            outcomes.append(0)
        except AuthnError as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == [0] + [AuthnCode.REPLAYED] * 7


# ---- durability ---------------------------------------------------------------------------------------------
def test_state_survives_a_restart_and_one_process_owns_the_store(tmp_path: Path, clock: ManualClock) -> None:
    home = tmp_path / "authn"
    dev = SoftAuthenticator()
    with RelyingParty("localhost", ORIGIN, home, clock) as rp:
        cid = register(rp, dev)
        ch = rp.payment_challenge("alice", *PAY)
        answer = dev.get(ch["publicKey"], ORIGIN)
        rp.verify_payment("alice", ch["challenge_id"], answer, *PAY)
        pending = rp.payment_challenge("alice", *PAY)
        with pytest.raises(StoreError):
            RelyingParty("localhost", ORIGIN, home, clock)
    clone = dev.clone()
    clone.set_counter(unb64url(cid), 0)
    with RelyingParty("localhost", ORIGIN, home, clock) as rp:
        (cred,) = rp.credentials("alice")
        assert cred.sign_count == 1 and cred.last_used_ms == T0
        refused(AuthnCode.REPLAYED, rp.verify_payment, "alice", ch["challenge_id"], answer, *PAY)
        # the counter came back from disk: a clone at 0 is caught after the restart
        refused(AuthnCode.COUNTER_REGRESSED, rp.verify_payment, "alice", pending["challenge_id"],
                clone.get(pending["publicKey"], ORIGIN), *PAY)  # fmt: skip
    db = sqlite3.connect(home / "authn.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    results = dict(db.execute("SELECT id, result FROM ceremonies WHERE kind = 'payment'").fetchall())
    assert results == {ch["challenge_id"]: 0, pending["challenge_id"]: AuthnCode.COUNTER_REGRESSED}
    db.close()


def test_terms_altered_on_disk_no_longer_match_the_signature(tmp_path: Path, clock: ManualClock) -> None:
    home = tmp_path / "authn"
    dev = SoftAuthenticator()
    with RelyingParty("localhost", ORIGIN, home, clock) as rp:
        register(rp, dev)
        ch = rp.payment_challenge("alice", *PAY)
        answer = dev.get(ch["publicKey"], ORIGIN)
    db = sqlite3.connect(home / "authn.sqlite")
    db.execute("UPDATE ceremonies SET amount_fen = 1 WHERE id = ?", (ch["challenge_id"],))
    db.commit()
    db.close()
    with RelyingParty("localhost", ORIGIN, home, clock) as rp:
        refused(AuthnCode.CHALLENGE_MISMATCH, rp.verify_payment, "alice", ch["challenge_id"], answer,
                "order-1", "merchant-9", 1, "CNY")  # fmt: skip


# ---- devices and step-up ------------------------------------------------------------------------------------
def test_rename_and_revoke(rp: RelyingParty) -> None:
    a = register(rp, SoftAuthenticator(), name="phone")
    register(rp, SoftAuthenticator(), name="watch")
    assert rp.rename("alice", a, "old phone").name == "old phone"
    refused(AuthnCode.DEVICE_NAME_TAKEN, rp.rename, "alice", a, "watch")
    refused(AuthnCode.BAD_REQUEST, rp.rename, "alice", a, "x" * (lim.device_name_chars_max + 1))
    revoked = rp.revoke("alice", a)
    assert not revoked.active and revoked.revoked_ms == T0
    assert [(c.name, c.active) for c in rp.credentials("alice")] == [("old phone", False), ("watch", True)]


def test_step_up_policy(rp: RelyingParty) -> None:
    # no limit chosen: every payment is confirmed
    assert rp.needs_confirmation("alice", 1, "allow")
    assert rp.set_passwordless_limit("alice", 20_000) == 20_000
    assert not rp.needs_confirmation("alice", 20_000, "allow")
    assert rp.needs_confirmation("alice", 20_001, "allow")
    # the risk decision demands a confirmation even under the shopper's limit
    assert rp.needs_confirmation("alice", 100, "step_up")
    assert rp.needs_confirmation("alice", 100, "step-up")
    assert rp.needs_confirmation("alice", 100, "block")
    refused(AuthnCode.BAD_REQUEST, rp.needs_confirmation, "alice", 100, "maybe")
    refused(AuthnCode.BAD_REQUEST, rp.needs_confirmation, "alice", 1.5, "allow")
    refused(AuthnCode.LIMIT_OVER_MAX, rp.set_passwordless_limit, "alice", lim.passwordless_fen_max + 1)
    refused(AuthnCode.BAD_REQUEST, rp.set_passwordless_limit, "alice", 100.0)
    refused(AuthnCode.BAD_REQUEST, rp.set_passwordless_limit, "alice", -1)
    assert rp.passwordless_limit("alice") == 20_000
    rp.set_passwordless_limit("alice", 0)
    assert rp.needs_confirmation("alice", 1, "allow")


def test_a_batch_of_answers_is_judged_one_by_one_and_recorded_at_once(rp: RelyingParty) -> None:
    phone, watch = SoftAuthenticator(), SoftAuthenticator(alg="Ed25519")
    register(rp, phone, name="phone")
    register(rp, watch, "bob", "watch")

    def answer(dev: SoftAuthenticator, shopper: str, order: str, amount: int) -> PaymentAnswer:
        ch = rp.payment_challenge(shopper, order, "m", amount, "CNY")
        return PaymentAnswer(shopper, ch["challenge_id"], dev.get(ch["publicKey"], ORIGIN), order, "m", amount, "CNY")

    a1, a2 = answer(phone, "alice", "o1", 100), answer(phone, "alice", "o2", 200)  # one device, counters 1, 2
    b1 = answer(watch, "bob", "o3", 300)
    tampered = answer(phone, "alice", "o4", 400)
    tampered = PaymentAnswer(*[getattr(tampered, f) for f in ("shopper", "challenge_id", "credential_json",
                                                             "order_id", "payee")], 1, "CNY")  # fmt: skip
    results = rp.verify_payments([a1, a2, b1, a1, tampered, PaymentAnswer("alice", "nope", "{}", "o", "m", 1, "CNY")])
    assert [type(r).__name__ for r in results[:3]] == ["Confirmation"] * 3
    assert [(r.order_id, r.sign_count) for r in results[:3]] == [("o1", 1), ("o2", 2), ("o3", 1)]  # type: ignore[union-attr]
    assert [r.code for r in results[3:]] == [AuthnCode.REPLAYED, AuthnCode.OTHER_AMOUNT, AuthnCode.MALFORMED_CREDENTIAL]  # type: ignore[union-attr]
    # recorded: replays of the accepted ones and of the refused one are refused
    assert [r.code for r in rp.verify_payments([a2, tampered])] == [AuthnCode.REPLAYED] * 2  # type: ignore[union-attr]
    assert rp.confirmation("alice", a1.challenge_id) == results[0]
    refused(AuthnCode.BAD_REQUEST, rp.verify_payments, [a1] * (lim.batch_answers_max + 1))
