"""The payment batcher's signature worker (``liangcao.authn.verifier``): the same verdicts as in one process,
and a worker that dies takes nothing with it but its batches (a fault, nothing recorded, a new worker).

Real relying parties on real SQLite stores, real software authenticators (ES256), a real worker process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from authn_harness import ORIGIN, ManualClock, register
from liangcao.authn import AuthnCode, AuthnError, RelyingParty, SoftAuthenticator
from liangcao.authn.soft import b64url, unb64url
from liangcao.authn.verifier import Verifier, VerifierFault, verify_workers_max
from liangcao.errors import Fault
from liangcao.procs import pid_alive

PAYEE = "merchant-7"


def answer(rp: RelyingParty, dev: SoftAuthenticator, shopper: str, order: str, amount: int) -> list[Any]:
    ch = rp.payment_challenge(shopper, order, PAYEE, amount, "CNY")
    return [shopper, ch["challenge_id"], dev.get(ch["publicKey"], ORIGIN), order, PAYEE, amount, "CNY"]


def outcome(slot: Any) -> Any:
    """0 and the confirmation for an accepted answer, the refusal's code, or the fault's class name."""
    assert slot.wait(timeout=20)
    if slot.error is not None:
        return type(slot.error).__name__
    if isinstance(slot.verdict, AuthnError):
        return int(slot.verdict.code)
    return (0, slot.verdict.to_dict())


def stored(rp: RelyingParty) -> list[Any]:
    return [
        rp._store.rows("SELECT id, used_ms, result, credential_id FROM ceremonies ORDER BY id"),
        rp._store.rows("SELECT id, sign_count, revoked_ms, revoked_reason FROM credentials ORDER BY id"),
        rp._store.rows("SELECT * FROM clone_alarms ORDER BY ceremony_id"),
        rp._store.rows("SELECT * FROM evidence ORDER BY ceremony_id"),
    ]


def scenario(home: Path) -> list[list[Any]]:
    """Answers made once, judged by both kinds of relying party: valid, a bad signature, a replay in flight
    and one after the fact, a clone whose counter is behind (alarm, device revoked) and the real device's
    next answer after it (revoked), no UV, another amount."""
    with RelyingParty("localhost", ORIGIN, home, ManualClock(), synchronous="NORMAL", verify_workers=0) as rp:
        alice, bob, carol = SoftAuthenticator(), SoftAuthenticator(), SoftAuthenticator()
        for dev, name in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
            register(rp, dev, name)
        a1 = answer(rp, alice, "alice", "o-1", 100)
        clone = alice.clone()  # its counter stays at a1's
        b1 = answer(rp, bob, "bob", "o-2", 200)
        a2 = answer(rp, alice, "alice", "o-3", 300)
        bad = answer(rp, bob, "bob", "o-4", 400)
        sig = bytearray(unb64url(bad[2]["response"]["signature"]))
        sig[-1] ^= 1
        bad[2]["response"]["signature"] = b64url(bytes(sig))
        cloned = answer(rp, clone, "alice", "o-5", 500)  # counter 2, not above a2's: clone alarm
        a3 = answer(rp, alice, "alice", "o-6", 600)  # a valid signature, but the device was revoked just before
        carol.uv = False
        no_uv = answer(rp, carol, "carol", "o-7", 700)
        carol.uv = True
        other = answer(rp, carol, "carol", "o-8", 800)
        other[5] = 801
        b2 = answer(rp, bob, "bob", "o-9", 900)
        return [a1, b1, a2, bad, list(a1), cloned, a3, no_uv, other, b2]


def judge(home: Path, workers: int, answers: list[list[Any]]) -> tuple[list[Any], list[Any], list[Any]]:
    with RelyingParty("localhost", ORIGIN, home, ManualClock(), synchronous="NORMAL", verify_workers=workers) as rp:
        b = rp.payment_batcher()
        first = [outcome(s) for s in [b.submit(*a) for a in answers]]  # batches as they happen to form
        again = [outcome(b.submit(*answers[0])), outcome(b.submit(*answers[1]))]  # answered already
        assert (b.verifier is not None) == bool(workers)
        return first, again, stored(rp)


def test_with_and_without_the_worker_the_verdicts_and_the_records_are_the_same(tmp_path: Path) -> None:
    answers = scenario(tmp_path / "made")
    shutil.copytree(tmp_path / "made", tmp_path / "in-process")
    shutil.copytree(tmp_path / "made", tmp_path / "worker")
    in_process = judge(tmp_path / "in-process", 0, answers)
    worker = judge(tmp_path / "worker", 1, answers)
    assert worker == in_process
    codes = [v if isinstance(v, int) else v[0] for v in in_process[0]]
    A = AuthnCode
    assert codes == [
        0, 0, 0, A.BAD_SIGNATURE, A.REPLAYED, A.COUNTER_REGRESSED, A.REVOKED_CREDENTIAL, A.UV_MISSING,
        A.OTHER_AMOUNT, 0,
    ]  # fmt: skip
    assert in_process[1] == [A.REPLAYED, A.REPLAYED]
    assert len(in_process[2][2]) == 1  # one clone alarm


def test_the_same_verdicts_batch_after_batch_with_a_revocation_in_flight(tmp_path: Path) -> None:
    """The real device's answer after a clone's, in the next batch while the clone's is still with the
    worker: it is refused as revoked, as one process refuses it."""
    answers = scenario(tmp_path / "made")
    results = []
    for workers in (0, 1):
        home = tmp_path / f"w{workers}"
        shutil.copytree(tmp_path / "made", home)
        with RelyingParty("localhost", ORIGIN, home, ManualClock(), synchronous="NORMAL", verify_workers=workers) as rp:
            b = rp.payment_batcher()
            slots = []
            for a in answers:  # one batch per answer: each next one is checked while the last is verified
                with rp._lock:
                    slots.append(b.submit(*a))
                    taken = b.batches
                while b.batches == taken and b.answers < len(slots):
                    time.sleep(0.0005)
            results.append(([outcome(s) for s in slots], stored(rp)))
    assert results[0] == results[1]


def test_a_dead_worker_fails_its_batch_records_nothing_and_is_replaced(tmp_path: Path) -> None:
    with RelyingParty("localhost", ORIGIN, tmp_path / "a", ManualClock(), synchronous="NORMAL") as rp:
        alice = SoftAuthenticator()
        register(rp, alice, "alice")
        b = rp.payment_batcher()
        b.start()
        first = answer(rp, alice, "alice", "o-1", 100)
        assert outcome(b.submit(*first))[0] == 0
        assert b.verifier is not None and b.verifier.pid is not None
        os.kill(b.verifier.pid, signal.SIGKILL)
        time.sleep(0.05)
        pay = answer(rp, alice, "alice", "o-2", 200)
        slot = b.submit(*pay)
        assert outcome(slot) == "VerifierFault" and isinstance(slot.error, Fault)
        # nothing recorded: the ceremony is open, the counter did not move
        assert rp._store.row("SELECT used_ms FROM ceremonies WHERE id = ?", (pay[1],)) == (None,)
        assert rp.credentials("alice")[0].sign_count == 1
        # the same answer again: a new worker judges it
        assert outcome(b.submit(*pay))[0] == 0
        assert b.verifier.starts == 2 and b.stats()["faults"] == 1
        assert rp.credentials("alice")[0].sign_count == 2


def test_close_stops_the_worker(tmp_path: Path) -> None:
    rp = RelyingParty("localhost", ORIGIN, tmp_path / "a", ManualClock(), synchronous="NORMAL")
    b = rp.payment_batcher()
    b.start()
    deadline = time.monotonic() + 20
    while (b.verifier is None or b.verifier.pid is None) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert b.verifier is not None
    pid = b.verifier.pid
    assert pid is not None and pid_alive(pid)
    rp.close()
    assert not pid_alive(pid)


def test_the_worker_exits_when_its_owner_is_killed(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys, time
        from liangcao.authn import RelyingParty
        rp = RelyingParty("localhost", "{ORIGIN}", __import__("pathlib").Path({str(tmp_path / "a")!r}))
        b = rp.payment_batcher(); b.start()
        while b.verifier is None or b.verifier.pid is None:
            time.sleep(0.01)
        print(b.verifier.pid, flush=True)
        time.sleep(60)
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        pid = int(owner.stdout.readline())
        assert pid_alive(pid)
        owner.kill()
        owner.wait()
        deadline = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not pid_alive(pid)
    finally:
        owner.kill()
        owner.wait()
        if owner.stdout is not None:
            owner.stdout.close()


def test_the_verifier_and_the_switch_are_bounded(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="verify_workers_max"):
        RelyingParty("localhost", ORIGIN, tmp_path / "a", verify_workers=verify_workers_max + 1)
    with pytest.raises(ValueError, match="verify_wait_ms_max"):
        Verifier(wait_ms=0)
    v = Verifier()
    try:
        with pytest.raises(ValueError, match="worker_batch_max"):
            v.send([(b"x", b"", -7, b"", b"")] * 1025)
        v.send([(b"x", b"\xa0", -7, b"", b"")])  # nonsense key: a refusal, not a crash of the worker
        assert v.receive() == [False]
    finally:
        v.close()
    with pytest.raises(VerifierFault):
        v.receive()


def test_a_device_revoked_while_its_next_answer_waits_for_its_signature_is_refused_revoked(tmp_path: Path) -> None:
    """The pipeline's order, step by step: the clone's batch is checked and handed to the worker, the real
    device's batch is checked (the device is not revoked yet), then the clone's counter raises the alarm,
    and only then is the real device's answer decided: revoked, as in one process."""
    with RelyingParty("localhost", ORIGIN, tmp_path / "a", ManualClock(), synchronous="NORMAL") as rp:
        alice = SoftAuthenticator()
        register(rp, alice, "alice")
        clone = alice.clone()
        first = answer(rp, alice, "alice", "o-1", 100)
        cloned = answer(rp, clone, "alice", "o-2", 200)  # counter 1 again
        real = answer(rp, alice, "alice", "o-3", 300)
        v = Verifier()
        try:
            out = []
            items = [(a[0], a[1], rp._payment_in(a[0], a[1], a[2], (a[3], a[4], a[5], a[6])), tuple(a[3:])) for a in
                     (first, cloned, real)]  # fmt: skip
            checked = [rp._check_many([item]) for item in items]  # all three checked before any verdict
            for checks, _ in checked:
                v.send(rp._signature_jobs(checks))
            for checks, claims in checked:
                results, ops = rp._finish_many(checks, v.receive())
                rp._store.write(ops)
                rp._release(claims)
                out += [r.code if isinstance(r, AuthnError) else 0 for r in results]
        finally:
            v.close()
        assert out == [0, AuthnCode.COUNTER_REGRESSED, AuthnCode.REVOKED_CREDENTIAL]
        assert not rp.credentials("alice")[0].active


def test_a_stopped_worker_is_a_fault_within_the_wait_not_a_stuck_judge(tmp_path: Path) -> None:
    v = Verifier(wait_ms=300)

    def start() -> None:  # the worker's imports may take longer than 300 ms on a loaded machine
        v.wait_s = 10
        v.start()
        v.wait_s = 0.3

    try:
        start()
        assert v.pid is not None
        os.kill(v.pid, signal.SIGSTOP)  # alive, but neither reading nor answering
        v.send([(b"x", b"\xa0", -7, b"", b"")])
        t = time.monotonic()
        with pytest.raises(VerifierFault, match="in time"):
            v.receive()
        assert time.monotonic() - t < 5
        start()
        assert v.pid is not None and v.starts == 2
        os.kill(v.pid, signal.SIGSTOP)
        big = [(b"x" * 64, b"\xa0", -7, b"s" * 64, b"d" * 900)] * 1024  # ~1 MB: far more than a pipe holds
        with pytest.raises(VerifierFault, match="stopped reading"):
            v.send(big)
    finally:
        v.close()


def _signed(alg: str) -> tuple[bytes, int, Any]:
    """A COSE public key, its COSE alg and a function signing with its private key (soft.py's key type)."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    from liangcao.authn.soft import COSE_EDDSA, COSE_ES256, _Key

    private = ec.generate_private_key(ec.SECP256R1()) if alg == "ES256" else ed25519.Ed25519PrivateKey.generate()
    key = _Key(os.urandom(16), "localhost", b"u", alg, private)  # type: ignore[arg-type]
    return key.cose_public(), COSE_ES256 if alg == "ES256" else COSE_EDDSA, key.sign


def test_the_workers_own_signature_check_agrees_with_py_webauthns_on_every_kind_of_answer() -> None:
    """The worker verifies with ``cryptography`` directly (the key's verify and its hash made once); every
    verdict must be the one py_webauthn's ``verify_signature`` gives, good or bad, for both algorithms, for a
    key under another algorithm than its own, and for the same credential id with a changed key."""
    from cryptography.exceptions import InvalidSignature
    from webauthn.helpers import decode_credential_public_key, decoded_public_key_to_cryptography, verify_signature
    from webauthn.helpers.cose import COSEAlgorithmIdentifier
    from webauthn.helpers.exceptions import WebAuthnException

    def reference(cose: bytes, alg: int, signature: bytes, data: bytes) -> bool:
        try:
            public = decoded_public_key_to_cryptography(decode_credential_public_key(cose))
            verify_signature(
                public_key=public, signature_alg=COSEAlgorithmIdentifier(alg), signature=signature, data=data
            )
        except (InvalidSignature, WebAuthnException, ValueError, KeyError, TypeError):
            return False
        return True

    def flipped(signature: bytes) -> bytes:  # one bit of the last byte changed (never the same bytes)
        return signature[:-1] + bytes([signature[-1] ^ 1])

    es_cose, es_alg, es_sign = _signed("ES256")
    ed_cose, ed_alg, ed_sign = _signed("Ed25519")
    other_cose, _, other_sign = _signed("ES256")
    data = os.urandom(37) + os.urandom(32)
    jobs = [
        (b"es", es_cose, es_alg, es_sign(data), data),  # good
        (b"es", es_cose, es_alg, es_sign(data), data + b"x"),  # another message
        (b"es", es_cose, es_alg, other_sign(data), data),  # another key's signature
        (b"es", other_cose, es_alg, other_sign(data), data),  # the same id, another key: not the kept one
        (b"es", es_cose, ed_alg, es_sign(data), data),  # an EC key under EdDSA
        (b"ed", ed_cose, ed_alg, ed_sign(data), data),  # good
        (b"ed", ed_cose, ed_alg, flipped(ed_sign(data)), data),  # a changed signature
        (b"ed", ed_cose, es_alg, ed_sign(data), data),  # an Ed25519 key under ES256 (py_webauthn: the key decides)
        (b"ed", ed_cose, ed_alg, ed_sign(data), data),  # good again, after the refusals (the key is kept)
        (b"bad", b"\xa0", es_alg, b"", data),  # not a key
        (b"es", es_cose, 12345, es_sign(data), data),  # no such COSE algorithm
    ]
    want = [reference(cose, alg, sig, d) if alg in (-7, -8) else False for _, cose, alg, sig, d in jobs]
    assert want == [True, False, False, True, False, True, False, True, True, False, False]
    v = Verifier()
    try:
        v.send(jobs)
        assert v.receive() == want
        v.send(jobs)  # the keys now come from the worker's cache: the same verdicts
        assert v.receive() == want
    finally:
        v.close()


def test_two_answers_read_at_once_are_both_taken_in_order(tmp_path: Path) -> None:
    """One read of the worker's pipe may bring two batches' verdicts: the second waits in the buffer
    (``ready`` says so without a select) and is the next ``receive``, and a reset forgets it."""
    cose, alg, sign = _signed("ES256")
    data = os.urandom(69)
    good, bad = (b"k", cose, alg, sign(data), data), (b"k", cose, alg, sign(data), data + b"!")
    v = Verifier()
    try:
        v.send([good, bad])
        v.send([bad, good, good])
        time.sleep(1)  # the worker answers both (a few signatures: milliseconds) before the first read
        assert v.receive() == [True, False]
        assert v._buf  # the second frame came with the first read
        assert v.ready(0)  # and is ready without the pipe having anything more
        assert v.receive() == [False, True, True]
        v.send([good])
        v.reset()  # whatever was read and not taken is gone with the worker
        assert not v._buf
        v.send([good])
        assert v.receive() == [True]
    finally:
        v.close()
