"""The gateway's step-up path: ``rp.payment_batcher()`` gathers concurrent callers' answers into batches judged
on one thread and recorded with one durable write, and wakes each caller with its own verdict.

Real relying party, real SQLite store, real software authenticators (ES256 signatures); a batch is made
deterministic by holding the relying party's lock while the judging thread waits on it with a first batch,
so that every answer submitted meanwhile is judged together in the next one."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from authn_harness import ORIGIN, ManualClock, register
from liangcao import codes
from liangcao.authn import AuthnCode, AuthnError, RelyingParty, SoftAuthenticator
from liangcao.authn.batch import PaymentBatcher
from liangcao.errors import StoreError

PAYEE = "merchant-9"


@pytest.fixture
def rp(tmp_path: Path) -> Iterator[RelyingParty]:
    with RelyingParty("localhost", ORIGIN, tmp_path / "authn", ManualClock(), synchronous="NORMAL") as rp:
        yield rp


def answer(rp: RelyingParty, dev: SoftAuthenticator, shopper: str, order: str, amount: int) -> tuple[Any, ...]:
    ch = rp.payment_challenge(shopper, order, PAYEE, amount, "CNY")
    return (shopper, ch["challenge_id"], dev.get(ch["publicKey"], ORIGIN), order, PAYEE, amount, "CNY")


def status(rp: RelyingParty, challenge_id: str) -> tuple[Any, ...] | None:
    return rp._store.row("SELECT used_ms, result FROM ceremonies WHERE id = ?", (challenge_id,))


def wait_until(cond: Any) -> None:
    deadline = time.monotonic() + 10
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def in_one_batch(
    rp: RelyingParty, b: PaymentBatcher, warmup: tuple[Any, ...], answers: list[tuple[Any, ...]]
) -> list[Any]:
    """Submit ``answers`` so that they are judged as one batch; the slots, in order (warm-up's first)."""
    with rp._lock:  # the judging thread takes the warm-up alone and waits here with it
        first = b.submit(*warmup)
        wait_until(lambda: b.batches >= 1)
        slots = [b.submit(*a) for a in answers]
    return [first, *slots]


def verdicts(slots: list[Any]) -> list[int | str]:
    """0 for an accepted answer, the refusal's code, or the fault's class name, per slot once answered."""
    out: list[int | str] = []
    for s in slots:
        assert s.wait(timeout=10)
        if s.error is not None:
            out.append(type(s.error).__name__)
        elif isinstance(s.verdict, AuthnError):
            out.append(s.verdict.code)
        else:
            out.append(0)
    return out


def test_each_caller_gets_its_own_verdict_and_a_refusal_does_not_fail_the_batch(rp: RelyingParty) -> None:
    alice, bob = SoftAuthenticator(), SoftAuthenticator()
    register(rp, alice, "alice")
    register(rp, bob, "bob")
    b = rp.payment_batcher()
    warmup = answer(rp, alice, "alice", "o-0", 50)  # each device signs in the order its answers are judged
    good_a = answer(rp, alice, "alice", "o-1", 100)
    other_amount = answer(rp, bob, "bob", "o-2", 200)
    good_b = answer(rp, bob, "bob", "o-3", 300)
    forged = list(answer(rp, alice, "alice", "o-4", 400))
    forged[2] = {**forged[2], "response": {**forged[2]["response"], "signature": good_b[2]["response"]["signature"]}}
    unknown = ("alice", "0" * 32, good_a[2], "o-1", PAYEE, 100, "CNY")
    slots = in_one_batch(
        rp,
        b,
        warmup,
        [good_a, (*other_amount[:5], 201, "CNY"), good_b, tuple(forged), unknown, good_a],
    )
    got = verdicts(slots)
    assert got == [0, 0, AuthnCode.OTHER_AMOUNT, 0, AuthnCode.BAD_SIGNATURE, AuthnCode.UNKNOWN_CHALLENGE,
                   AuthnCode.REPLAYED]  # fmt: skip
    assert b.batches == 2 and b.largest == 6
    # each accepted answer's own confirmation, for its own terms, with its device's counter in order
    assert [(s.verdict.order_id, s.verdict.amount_fen, s.verdict.sign_count) for s in (slots[0], slots[1], slots[3])] == [
        ("o-0", 50, 1), ("o-1", 100, 2), ("o-3", 300, 2)
    ]  # fmt: skip
    # recorded durably: the accepted with their evidence, the refused after identification consumed with
    # their code, the unknown challenge nothing; the replay left the first verdict as it was
    assert status(rp, good_a[1])[1] == 0  # type: ignore[index]
    assert status(rp, other_amount[1])[1] == AuthnCode.OTHER_AMOUNT  # type: ignore[index]
    assert status(rp, forged[1])[1] == AuthnCode.BAD_SIGNATURE  # type: ignore[index]
    assert rp._store.row("SELECT count(*) FROM evidence") == (3,)
    assert rp.confirmation("alice", good_a[1]) == slots[1].verdict
    assert {c.sign_count for c in rp.credentials("alice")} == {2} and rp.clone_alarms("alice") == []


def test_concurrent_callers_on_threads_each_get_their_verdict_once_durable(rp: RelyingParty) -> None:
    devices = {f"s{k}": SoftAuthenticator() for k in range(8)}
    plans: dict[str, list[tuple[tuple[Any, ...], int]]] = {}
    for shopper, dev in devices.items():
        register(rp, dev, shopper)
        plan = [(answer(rp, dev, shopper, f"{shopper}-o{i}", 100 + i), 0) for i in range(5)]
        plan.append((plan[0][0], AuthnCode.REPLAYED))  # sent again after it was accepted
        wrong = answer(rp, dev, shopper, f"{shopper}-x", 500)
        plan.append(((*wrong[:3], f"{shopper}-y", *wrong[4:]), AuthnCode.OTHER_ORDER))
        plans[shopper] = plan
    b = rp.payment_batcher()
    got: dict[str, list[int]] = {s: [] for s in plans}
    start = threading.Barrier(len(plans))

    def pays(shopper: str) -> None:
        start.wait()
        for a, _ in plans[shopper]:
            try:
                c = b.verify(*a)
                # answered only once durable: the store already says so
                assert rp.confirmation(shopper, a[1]) == c
                got[shopper].append(0)
            except AuthnError as exc:
                got[shopper].append(exc.code)

    threads = [threading.Thread(target=pays, args=(s,)) for s in plans]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == {s: [want for _, want in plan] for s, plan in plans.items()}
    assert b.answers == 8 * 7 and b.writes <= b.batches <= 8 * 7
    assert all(c.sign_count == 5 for s in plans for c in rp.credentials(s))


def test_one_devices_answers_are_judged_in_the_order_they_arrived(rp: RelyingParty) -> None:
    dev = SoftAuthenticator()
    register(rp, dev)
    answers = [answer(rp, dev, "alice", f"o-{i}", 100 + i) for i in range(20)]
    b = PaymentBatcher(rp, batch_max=3)  # many small batches, several in flight at once
    try:
        slots = [b.submit(*a) for a in answers]
        assert verdicts(slots) == [0] * 20
    finally:
        b.close()

    assert rp.clone_alarms("alice") == [] and rp.credentials("alice")[0].sign_count == 20


def test_a_store_fault_fails_its_batch_cleanly_and_every_answer_stays_answerable(rp: RelyingParty) -> None:
    dev = SoftAuthenticator()
    register(rp, dev)
    b = rp.payment_batcher()
    warmup = answer(rp, dev, "alice", "o-0", 50)
    answers = [answer(rp, dev, "alice", f"o-{i}", 100 + i) for i in range(1, 5)]
    write = rp._store.write

    def failing(ops: Any) -> None:
        raise StoreError(codes.Code.NOT_READY, "disk full")

    rp._store.write = failing  # type: ignore[method-assign]
    try:
        slots = in_one_batch(rp, b, warmup, answers)
        assert verdicts(slots) == ["StoreError"] * 5
        with pytest.raises(StoreError):
            b.verify(*warmup)  # a caller of verify sees the fault raised
    finally:
        rp._store.write = write  # type: ignore[method-assign]
    for a in (warmup, *answers):  # nothing recorded, no claim left behind, no counter moved in memory only
        assert status(rp, a[1]) == (None, None)
    assert [b.verify(*a).sign_count for a in (warmup, *answers)] == [1, 2, 3, 4, 5]
    assert rp.clone_alarms("alice") == [] and rp.credentials("alice")[0].active


def test_a_malformed_answer_is_refused_on_the_callers_thread(rp: RelyingParty) -> None:
    dev = SoftAuthenticator()
    register(rp, dev)
    b = rp.payment_batcher()
    good = answer(rp, dev, "alice", "o-1", 100)
    for bad, code in [
        ((*good[:2], "{not json", *good[3:]), AuthnCode.MALFORMED_CREDENTIAL),
        ((*good[:5], 1.5, "CNY"), AuthnCode.BAD_REQUEST),
        (("al\u202eice", *good[1:]), AuthnCode.BAD_REQUEST),
    ]:
        with pytest.raises(AuthnError) as info:
            b.submit(*bad)
        assert info.value.code == code
    assert b.answers == 0
    assert b.verify(*good).sign_count == 1


def test_closing_the_relying_party_answers_what_is_queued_then_refuses(tmp_path: Path) -> None:
    rp = RelyingParty("localhost", ORIGIN, tmp_path / "authn", ManualClock(), synchronous="NORMAL")
    dev = SoftAuthenticator()
    register(rp, dev)
    b = rp.payment_batcher()
    assert rp.payment_batcher() is b  # one per relying party: one judging order per device
    slots = [b.submit(*answer(rp, dev, "alice", f"o-{i}", 100 + i)) for i in range(6)]
    late = answer(rp, dev, "alice", "o-late", 999)
    rp.close()
    assert verdicts(slots) == [0] * 6
    assert not any(t.is_alive() for t in b._threads)
    with pytest.raises(StoreError):
        b.submit(*late)


def test_a_batchs_callers_sleep_until_it_is_durable_then_are_woken_one_after_another(rp: RelyingParty) -> None:
    """The recording thread sets every verdict of a write, links the slots and wakes the first; each caller
    wakes the next (``_Slot.wait``). While the write is not durable nobody is woken nor linked; a refusal in
    the middle of the batch is its own caller's only; callers on their own threads all return."""
    dev, bob = SoftAuthenticator(), SoftAuthenticator()
    register(rp, dev)
    register(rp, bob, "bob")
    b = rp.payment_batcher()
    warmup = answer(rp, dev, "alice", "o-0", 50)
    answers = [answer(rp, dev, "alice", f"o-{i}", 100 + i) for i in range(1, 4)]
    refused_one = answer(rp, bob, "bob", "o-b", 70)
    answers.insert(2, (*refused_one[:5], 71, "CNY"))  # another amount than the challenge's: OTHER_AMOUNT
    write = rp._store.write
    entered, go = threading.Event(), threading.Event()

    def held(ops: Any) -> None:
        entered.set()
        assert go.wait(10)
        write(ops)

    rp._store.write = held  # type: ignore[method-assign]
    try:
        slots = in_one_batch(rp, b, warmup, answers)
        assert entered.wait(10)
        time.sleep(0.05)
        assert all(s.signal.locked() and s.next is None and s.verdict is None for s in slots)
        got: dict[int, int | str] = {}
        threads = [
            threading.Thread(target=lambda k=k, s=s: got.__setitem__(k, verdicts([s])[0])) for k, s in enumerate(slots)
        ]
        for t in reversed(threads):  # the last callers wait first: the order of waking is the chain's
            t.start()
        go.set()
        for t in threads:
            t.join(timeout=20)
    finally:
        rp._store.write = write  # type: ignore[method-assign]
    assert [got[k] for k in range(len(slots))] == [0, 0, 0, AuthnCode.OTHER_AMOUNT, 0]
    assert [s.next for s in slots[1:-1]] == slots[2:]  # the second batch's callers, linked in order
    assert [s.verdict.sign_count for s in (slots[0], slots[1], slots[2], slots[4])] == [1, 2, 3, 4]
    assert status(rp, answers[2][1])[1] == AuthnCode.OTHER_AMOUNT  # type: ignore[index]
    assert rp.credentials("bob")[0].sign_count == 0


def test_a_caller_whose_wait_is_interrupted_still_wakes_the_next(rp: RelyingParty) -> None:
    """A wait that ends in an exception once the verdicts are set (an interrupt on the caller's thread) still
    wakes the next caller of the chain: nobody else sleeps for ever."""
    dev = SoftAuthenticator()
    register(rp, dev)
    b = rp.payment_batcher()
    slots = in_one_batch(rp, b, answer(rp, dev, "alice", "o-0", 50), [answer(rp, dev, "alice", "o-1", 60),
                         answer(rp, dev, "alice", "o-2", 70)])  # fmt: skip
    assert verdicts(slots[:1]) == [0]
    wait_until(lambda: slots[1].next is slots[2])  # the second batch's verdicts are set and linked

    class Interrupted(Exception):
        pass

    class Signal:  # the slot's lock, whose acquire is interrupted
        def acquire(self, timeout: float = -1) -> bool:
            raise Interrupted

    slots[1].signal = Signal()  # type: ignore[assignment]
    with pytest.raises(Interrupted):
        slots[1].wait()
    assert verdicts(slots[2:]) == [0]


@pytest.mark.parametrize("chain", [True, False])
def test_woken_in_a_chain_or_all_at_once_every_caller_gets_its_own_verdict(
    rp: RelyingParty, monkeypatch: pytest.MonkeyPatch, chain: bool
) -> None:
    """``WAKE_IN_CHAIN`` changes only how the callers are woken, not what they are told."""
    from liangcao.authn import batch

    monkeypatch.setattr(batch, "WAKE_IN_CHAIN", chain)
    devices = {f"w{k}": SoftAuthenticator() for k in range(6)}
    work = {}
    for shopper, dev in devices.items():
        register(rp, dev, shopper)
        work[shopper] = [answer(rp, dev, shopper, f"{shopper}-{i}", 100 + i) for i in range(4)]
    b = rp.payment_batcher()
    got: dict[str, list[int]] = {s: [] for s in work}

    def pays(shopper: str) -> None:
        for a in work[shopper]:
            got[shopper].append(b.verify(*a).sign_count)

    threads = [threading.Thread(target=pays, args=(s,)) for s in work]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert got == {s: [1, 2, 3, 4] for s in work}
