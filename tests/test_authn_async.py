"""The gateway's event-loop step-up path: ``batcher.submit_async`` / ``verify_async`` await the durable verdict
as an asyncio future, resolved on the caller's loop with one ``call_soon_threadsafe`` per durable write.

Real relying party, real SQLite store, real software authenticators (ES256), the signature worker process;
batches are made deterministic as in ``test_authn_batch.py`` (the relying party's lock held while the judging
thread waits on it with a first batch)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from authn_harness import ORIGIN, ManualClock, register
from liangcao import codes
from liangcao.authn import AuthnCode, AuthnError, PaymentAnswer, RelyingParty, SoftAuthenticator
from liangcao.authn.batch import PaymentBatcher
from liangcao.errors import StoreError

# the answer helpers of the thread path's tests: the same set-up, so the two paths are compared on equal terms
from test_authn_batch import answer, status, wait_until


@pytest.fixture
def rp(tmp_path: Path) -> Iterator[RelyingParty]:
    with RelyingParty("localhost", ORIGIN, tmp_path / "authn", ManualClock(), synchronous="NORMAL") as rp:
        yield rp


def code_of(result: Any) -> int | str:
    """0 for a Confirmation, the refusal's code, or the fault's class name."""
    if isinstance(result, AuthnError):
        return result.code
    if isinstance(result, BaseException):
        return type(result).__name__
    return 0


def plans_for(rp: RelyingParty, shoppers: int) -> dict[str, list[tuple[tuple[Any, ...], int]]]:
    """Per shopper: five good answers, the first sent again (REPLAYED), one for another order (OTHER_ORDER)
    and a forged signature (BAD_SIGNATURE), each with the code it must get."""
    plans: dict[str, list[tuple[tuple[Any, ...], int]]] = {}
    for k in range(shoppers):
        shopper, dev = f"s{k}", SoftAuthenticator()
        register(rp, dev, shopper)
        plan = [(answer(rp, dev, shopper, f"{shopper}-o{i}", 100 + i), 0) for i in range(5)]
        plan.append((plan[0][0], AuthnCode.REPLAYED))
        wrong = answer(rp, dev, shopper, f"{shopper}-x", 500)
        plan.append(((*wrong[:3], f"{shopper}-y", *wrong[4:]), AuthnCode.OTHER_ORDER))
        forged = list(answer(rp, dev, shopper, f"{shopper}-f", 600))
        sig = plan[1][0][2]["response"]["signature"]
        forged[2] = {**forged[2], "response": {**forged[2]["response"], "signature": sig}}
        plan.append((tuple(forged), AuthnCode.BAD_SIGNATURE))
        plans[shopper] = plan
    return plans


def stored(rp: RelyingParty) -> list[tuple[Any, ...]]:
    """What a verdict leaves in the store, without ids or times: per ceremony its kind of result."""
    rows = rp._store.rows(
        "SELECT shopper, order_id, result, used_ms IS NOT NULL FROM ceremonies WHERE order_id IS NOT NULL ORDER BY 1, 2"
    )
    return [tuple(r) for r in rows]


def test_awaiting_callers_get_the_same_verdicts_as_the_thread_path(tmp_path: Path) -> None:
    got: dict[str, dict[str, list[int | str]]] = {}
    rows: dict[str, list[tuple[Any, ...]]] = {}
    for way in ("async", "threads"):
        with RelyingParty("localhost", ORIGIN, tmp_path / way, ManualClock(), synchronous="NORMAL") as rp:
            plans = plans_for(rp, 6)
            b = rp.payment_batcher()
            out: dict[str, list[int | str]] = {s: [] for s in plans}
            if way == "async":

                async def pays(shopper: str, b: PaymentBatcher = b, out: Any = out, plans: Any = plans) -> None:
                    for a, _ in plans[shopper]:
                        try:
                            c = await b.verify_async(*a)
                            assert rp.confirmation(shopper, a[1]) == c  # answered only once durable
                            out[shopper].append(0)
                        except AuthnError as exc:
                            out[shopper].append(exc.code)

                async def main(plans: Any = plans) -> None:
                    await asyncio.gather(*(pays(s) for s in plans))

                asyncio.run(main())
            else:

                def pays_t(shopper: str, b: PaymentBatcher = b, out: Any = out, plans: Any = plans) -> None:
                    for a, _ in plans[shopper]:
                        try:
                            b.verify(*a)
                            out[shopper].append(0)
                        except AuthnError as exc:
                            out[shopper].append(exc.code)

                threads = [threading.Thread(target=pays_t, args=(s,)) for s in plans]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
            assert out == {s: [want for _, want in plan] for s, plan in plans.items()}
            assert b.answers == 6 * 8
            assert all(c.sign_count == 5 for s in plans for c in rp.credentials(s))
            got[way], rows[way] = out, stored(rp)
    assert got["async"] == got["threads"] and rows["async"] == rows["threads"]


def test_one_call_soon_threadsafe_per_durable_write_resolves_every_future_of_it(rp: RelyingParty) -> None:
    dev = SoftAuthenticator()
    register(rp, dev)
    b = rp.payment_batcher()
    warmup = answer(rp, dev, "alice", "o-0", 50)
    answers = [answer(rp, dev, "alice", f"o-{i}", 100 + i) for i in range(1, 13)]
    replayed = answers[3]
    calls: list[int] = []

    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        real = loop.call_soon_threadsafe

        def counting(cb: Any, *args: Any, **kw: Any) -> Any:
            calls.append(len(args[0]) if args else 0)
            return real(cb, *args, **kw)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign,assignment]
        with rp._lock:  # the judging thread takes the warm-up alone and waits here with it
            first = b.submit(*warmup)
            wait_until(lambda: b.batches >= 1)
            futures = [b.submit_async(*a) for a in (*answers, replayed)]
        assert first.wait(timeout=10)
        return list(await asyncio.gather(*futures, return_exceptions=True))

    results = asyncio.run(main())
    assert [code_of(r) for r in results] == [0] * 12 + [AuthnCode.REPLAYED]
    assert [r.sign_count for r in results[:12]] == list(range(2, 14))
    # 13 answers judged together (SPLIT_MIN may cut them in two batches, the warm-up's write may carry them):
    # one wake-up of the loop per durable write, not one per caller
    assert sum(calls) == 13 and 1 <= len(calls) <= min(2, b.writes)


def test_a_malformed_answer_is_refused_on_the_loop_and_never_queued(rp: RelyingParty) -> None:
    dev = SoftAuthenticator()
    register(rp, dev)
    b = rp.payment_batcher()
    good = answer(rp, dev, "alice", "o-1", 100)

    async def main() -> None:
        for bad, code in [
            ((*good[:2], "{not json", *good[3:]), AuthnCode.MALFORMED_CREDENTIAL),
            ((*good[:5], 1.5, "CNY"), AuthnCode.BAD_REQUEST),
        ]:
            with pytest.raises(AuthnError) as info:
                b.submit_async(*bad)
            assert info.value.code == code
        assert b.answers == 0
        c = await b.verify_answer_async(PaymentAnswer(*good))
        assert c.sign_count == 1
        with pytest.raises(AuthnError) as info:
            await b.verify_async(*good)
        assert info.value.code == AuthnCode.REPLAYED

    asyncio.run(main())


def test_a_batch_failure_resolves_every_future_with_the_fault(rp: RelyingParty) -> None:
    dev = SoftAuthenticator()
    register(rp, dev)
    b = rp.payment_batcher()
    warmup = answer(rp, dev, "alice", "o-0", 50)
    answers = [answer(rp, dev, "alice", f"o-{i}", 100 + i) for i in range(1, 6)]
    write = rp._store.write

    def failing(ops: Any) -> None:
        raise StoreError(codes.Code.NOT_READY, "disk full")

    async def main() -> list[Any]:
        with rp._lock:
            first = b.submit(*warmup)
            wait_until(lambda: b.batches >= 1)
            futures = [b.submit_async(*a) for a in answers]
        assert first.wait(timeout=10) and isinstance(first.error, StoreError)
        return list(await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 10))

    rp._store.write = failing  # type: ignore[method-assign]
    try:
        results = asyncio.run(main())
    finally:
        rp._store.write = write  # type: ignore[method-assign]
    assert [code_of(r) for r in results] == ["StoreError"] * 5
    for a in (warmup, *answers):  # nothing recorded, every answer may be sent again
        assert status(rp, a[1]) == (None, None)

    async def again() -> list[int]:
        return [(await b.verify_async(*a)).sign_count for a in (warmup, *answers)]

    assert asyncio.run(again()) == [1, 2, 3, 4, 5, 6]


def test_a_cancelled_awaiting_task_does_not_break_its_batch(rp: RelyingParty) -> None:
    dev = SoftAuthenticator()
    register(rp, dev)
    b = rp.payment_batcher()
    warmup = answer(rp, dev, "alice", "o-0", 50)
    answers = [answer(rp, dev, "alice", f"o-{i}", 100 + i) for i in range(1, 6)]

    async def main() -> list[Any]:
        with rp._lock:
            first = b.submit(*warmup)
            wait_until(lambda: b.batches >= 1)
            tasks = [asyncio.ensure_future(b.verify_async(*a)) for a in answers]
            await asyncio.sleep(0)  # every task has queued its answer
            tasks[2].cancel()  # the shopper went away while its answer waits to be judged
            await asyncio.sleep(0)
        assert first.wait(timeout=10)
        return list(await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10))

    results = asyncio.run(main())
    assert isinstance(results[2], asyncio.CancelledError)
    assert [r.sign_count for i, r in enumerate(results) if i != 2] == [2, 3, 5, 6]
    # the cancelled one was judged and recorded with its batch (its verdict only not delivered): once only
    assert status(rp, answers[2][1])[1] == 0  # type: ignore[index]
    with pytest.raises(AuthnError) as info:
        b.verify(*answers[2])
    assert info.value.code == AuthnCode.REPLAYED


def test_a_closed_loop_does_not_hang_the_batcher(tmp_path: Path) -> None:
    rp = RelyingParty("localhost", ORIGIN, tmp_path / "authn", ManualClock(), synchronous="NORMAL")
    dev = SoftAuthenticator()
    register(rp, dev)
    b = rp.payment_batcher()
    warmup = answer(rp, dev, "alice", "o-0", 50)
    orphans = [answer(rp, dev, "alice", f"o-{i}", 100 + i) for i in range(1, 4)]
    later = answer(rp, dev, "alice", "o-9", 900)
    loop = asyncio.new_event_loop()
    try:
        with rp._lock:
            first = b.submit(*warmup)
            wait_until(lambda: b.batches >= 1)

            async def queue() -> None:
                for a in orphans:
                    b.submit_async(*a)

            loop.run_until_complete(queue())
            loop.close()  # the gateway stopped: nobody awaits these verdicts any more
        assert first.wait(timeout=10)
        assert b.verify(*later).sign_count == 5  # the batcher went on; the orphans were judged and recorded
        assert [status(rp, a[1])[1] for a in orphans] == [0, 0, 0]  # type: ignore[index]
    finally:
        t0 = time.monotonic()
        rp.close()
        assert time.monotonic() - t0 < 10 and not any(t.is_alive() for t in b._threads)


def test_callers_on_two_loops_in_one_batch_each_loop_is_woken_once(rp: RelyingParty) -> None:
    alice, bob = SoftAuthenticator(), SoftAuthenticator()
    register(rp, alice, "alice")
    register(rp, bob, "bob")
    b = rp.payment_batcher()
    warmup = answer(rp, alice, "alice", "o-0", 50)
    mine = {"alice": [answer(rp, alice, "alice", f"a-{i}", 100 + i) for i in range(3)],
            "bob": [answer(rp, bob, "bob", f"b-{i}", 200 + i) for i in range(3)]}  # fmt: skip
    calls: dict[str, list[int]] = {"alice": [], "bob": []}
    queued = threading.Barrier(3)
    results: dict[str, list[Any]] = {}

    def caller(who: str) -> None:
        async def main() -> None:
            loop = asyncio.get_running_loop()
            real = loop.call_soon_threadsafe

            def counting(cb: Any, *args: Any, **kw: Any) -> Any:
                calls[who].append(len(args[0]) if args else 0)
                return real(cb, *args, **kw)

            loop.call_soon_threadsafe = counting  # type: ignore[method-assign,assignment]
            futures = [b.submit_async(*a) for a in mine[who]]
            queued.wait()
            results[who] = list(await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 10))

        asyncio.run(main())

    with rp._lock:  # both loops' answers wait behind the warm-up, then are judged in one batch
        first = b.submit(*warmup)
        wait_until(lambda: b.batches >= 1)
        threads = [threading.Thread(target=caller, args=(who,)) for who in ("alice", "bob")]
        for t in threads:
            t.start()
        queued.wait()
    for t in threads:
        t.join(timeout=20)
    assert first.wait(timeout=10)
    assert [r.sign_count for r in results["alice"]] == [2, 3, 4]
    assert [r.sign_count for r in results["bob"]] == [1, 2, 3]
    # 6 answers (fewer than 2 x SPLIT_MIN: one batch): one wake-up per loop, each with its own three
    assert calls == {"alice": [3], "bob": [3]}
