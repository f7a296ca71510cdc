"""An outsider attacks the gateway's step-up awaited on its event loop (``PaymentBatcher.submit_async``,
``PasskeyStepUp.verify_async``, ``GuardChain.confirm_async``, ``begin_pay(confirm_async=True)`` and the
gateway's ``op``): replays racing on the loop, a request cancelled mid-await and retried, two answers for one
order at once, a batch whose durable write fails, the relying party closing with awaits pending.

Through the gateway's real app (flow middleware and the default rules), a real relying party (batched, with
its signature worker), soft authenticators signing real WebAuthn assertions and the payments core. The one
fault injected is a failing durable write of the relying party's store (a disk that refuses once).

Properties held (pinned here): money moves at most once per order whatever races; a refused or unanswered
confirmation never pays; an answer signed for one order never pays another of the same amount and merchant;
a request cancelled while its verdict is awaited leaves nothing claimed (the same key pays with a fresh
answer) and its answer cannot pay twice; a batch whose write failed consumes nothing (the same key and the
same answer pay on retry); closing the relying party answers every await (judged and recorded first).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from checkout_identity import shopper
from liangcao.authn import RelyingParty, SoftAuthenticator
from liangcao.checkout.codes import CheckoutCode
from liangcao.checkout.guards import GuardChain, PayAttempt
from liangcao.checkout.http import create_app, default_rules
from liangcao.checkout.plugins import ConfirmEveryPayment, PasskeyStepUp
from liangcao.checkout.service import Checkout
from liangcao.codes import Code
from liangcao.errors import StoreError
from liangcao.flow import Gate
from liangcao.payments import Engine

ORIGIN = "http://localhost:8765"
PRICE = 5_000
FUNDS = 100_000


class Watched(PasskeyStepUp):
    """The production step-up, telling the test when an answer is with the batcher (the await begun)."""

    def __init__(self, rp: Any) -> None:
        super().__init__(rp)
        self.entered: asyncio.Event | None = None
        self.submitted = 0

    def verify(self, a: PayAttempt) -> None:
        raise AssertionError("the gateway blocked a thread on the step-up")

    async def verify_async(self, a: PayAttempt) -> None:
        assert self.batcher is not None
        s = a.step_up or {}
        fut = self.batcher.submit_async(
            a.buyer, str(s.get("challenge_id", "")), s.get("credential"), a.order_id, a.merchant, a.amount, a.currency
        )
        self.submitted += 1
        if self.entered is not None:
            self.entered.set()
        await fut


class World:
    def __init__(self, root: Path) -> None:
        self.rp = RelyingParty("localhost", ORIGIN, root / "authn")
        self.core = Engine(root / "pay", fsync=False)
        self.device = SoftAuthenticator()
        opts = self.rp.registration_options("ann", "phone")
        self.rp.register("ann", opts["ceremony_id"], self.device.create(opts["publicKey"], ORIGIN))
        self.step_up = Watched(self.rp)
        self.co = Checkout(root / "co", self.core, guards=GuardChain([ConfirmEveryPayment()], self.step_up))
        assert self.co.topup("t-ann", "ann", FUNDS).status == 200
        self.app = create_app(self.co, Gate(default_rules()), auto_confirm_every_s=0)
        self.who = shopper(self.co.home, "ann")

    def order(self, key: str) -> str:
        return str(self.co.create_order(key, "ann", "shop", PRICE).body["id"])

    async def challenge(self, c: httpx.AsyncClient, order: str, key: str) -> dict[str, Any]:
        r = await c.post(f"/v1/orders/{order}/pay", headers={"idempotency-key": key, **self.who}, json={})
        assert r.status_code == 401 and r.json()["code"] == CheckoutCode.STEP_UP_REQUIRED, r.text
        return dict(r.json()["detail"]["challenge"])

    def answer(self, challenge: dict[str, Any]) -> dict[str, Any]:
        credential = self.device.get(challenge["publicKey"], ORIGIN)
        return {"challenge_id": challenge["challenge_id"], "credential": credential}

    async def pay(self, c: httpx.AsyncClient, order: str, key: str, answer: dict[str, Any]) -> httpx.Response:
        body = msgspec.json.encode({"step_up": answer})
        headers = {"idempotency-key": key, "content-type": "application/json", **self.who}
        return await c.post(f"/v1/orders/{order}/pay", headers=headers, content=body)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://t", timeout=60)

    def spent(self) -> int:
        w = self.co.wallet("ann")
        return FUNDS - int(w["available"])

    def evidence(self) -> int:
        row = self.rp._store.row("SELECT count(*) FROM evidence")
        assert row is not None
        return int(row[0])

    def close(self) -> None:
        self.co.close()
        self.rp.close()
        self.core.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    try:
        yield w
    finally:
        w.close()


def test_one_answer_sent_many_times_at_once_pays_once(world: World) -> None:
    """The same signed answer under the same key, and under other keys, eight requests at once on one loop:
    the order is paid once, the answer recorded once, every other request refused or given the first answer."""
    order = world.order("o1")

    async def main() -> list[httpx.Response]:
        async with world.client() as c:
            answer = world.answer(await world.challenge(c, order, "k"))
            keys = ["k"] * 4 + [f"other{i}" for i in range(4)]
            return list(await asyncio.gather(*(world.pay(c, order, k, answer) for k in keys)))

    got = asyncio.run(main())
    ok = [r for r in got if r.status_code == 200]
    assert ok and all(r.json()["state"] == "paid" for r in ok), [r.text for r in got]
    assert all(r.status_code < 500 and "Traceback" not in r.text for r in got)
    assert world.spent() == PRICE and world.evidence() == 1
    assert world.co.get_order(order)["state"] == "paid"


def test_one_challenge_signed_twice_and_sent_at_once_pays_once(world: World) -> None:
    """The device signs one challenge twice (two different assertions, counters 1 and 2) and both are sent
    at once under two keys: the challenge is consumed by one, the other is refused; one payment."""
    order = world.order("o1")

    async def main() -> list[httpx.Response]:
        async with world.client() as c:
            challenge = await world.challenge(c, order, "a")
            one, two = world.answer(challenge), world.answer(challenge)
            assert one["credential"] != two["credential"]
            return list(await asyncio.gather(world.pay(c, order, "a", one), world.pay(c, order, "b", two)))

    got = asyncio.run(main())
    assert [r.status_code for r in got].count(200) == 1, [r.text for r in got]
    refused = next(r for r in got if r.status_code != 200)
    assert refused.json()["code"] in (CheckoutCode.STEP_UP_FAILED, CheckoutCode.REQUEST_IN_PROGRESS), refused.text
    assert world.spent() == PRICE and world.evidence() == 1


def test_two_answers_for_one_order_at_once_pay_once(world: World) -> None:
    """Two challenges of one order, each answered (both genuine), sent together under two keys: one pays."""
    order = world.order("o1")

    async def main() -> list[httpx.Response]:
        async with world.client() as c:
            a = world.answer(await world.challenge(c, order, "a"))
            b = world.answer(await world.challenge(c, order, "b"))
            return list(await asyncio.gather(world.pay(c, order, "a", a), world.pay(c, order, "b", b)))

    got = asyncio.run(main())
    assert sorted(r.status_code for r in got)[0] == 200 and [r.status_code for r in got].count(200) == 1, [
        r.text for r in got
    ]
    assert world.spent() == PRICE and world.co.get_order(order)["state"] == "paid"


def test_an_answer_for_one_order_never_pays_its_twin(world: World) -> None:
    """ann has two orders of the same amount at the same shop: the answer signed for the first, sent to pay
    the second (alone, and racing the first's genuine request), never pays the second."""
    first, twin = world.order("o1"), world.order("o2")

    async def main() -> tuple[httpx.Response, httpx.Response]:
        async with world.client() as c:
            answer = world.answer(await world.challenge(c, first, "a"))
            await world.challenge(c, twin, "b")  # the twin has a challenge of its own, unanswered
            stolen, genuine = await asyncio.gather(world.pay(c, twin, "b", answer), world.pay(c, first, "a", answer))
            return stolen, genuine

    stolen, genuine = asyncio.run(main())
    assert stolen.status_code != 200 and stolen.json()["code"] == CheckoutCode.STEP_UP_FAILED, stolen.text
    assert world.co.get_order(twin)["state"] == "created"
    assert genuine.status_code == 200 or genuine.json()["code"] == CheckoutCode.STEP_UP_FAILED, genuine.text
    assert world.spent() == (PRICE if genuine.status_code == 200 else 0)


def test_a_request_cancelled_mid_await_leaves_nothing_claimed_and_never_pays_twice(world: World) -> None:
    """The request's task is cancelled while its answer is with the batcher (a gateway stopping; a client
    gone). The answer is still judged and recorded: sent again (same key) it cannot pay, and it never pays
    twice; the key is not left claimed, so a fresh answer under the same key pays, once."""
    order = world.order("o1")

    async def main() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        world.step_up.entered = asyncio.Event()
        async with world.client() as c:
            answer = world.answer(await world.challenge(c, order, "k"))
            task = asyncio.create_task(world.pay(c, order, "k", answer))
            await world.step_up.entered.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            world.step_up.entered = None
            for _ in range(200):  # the verdict of the cancelled request is made durable all the same
                if world.evidence() == 1:
                    break
                await asyncio.sleep(0.05)
            again = await world.pay(c, order, "k", answer)
            fresh = world.answer(await world.challenge(c, order, "k"))
            paid = await world.pay(c, order, "k", fresh)
            replay = await world.pay(c, order, "k", answer)
            return again, paid, replay

    again, paid, replay = asyncio.run(main())
    assert world.evidence() >= 1
    assert again.status_code != 200 and again.json()["code"] == CheckoutCode.STEP_UP_FAILED, again.text
    assert paid.status_code == 200 and paid.json()["state"] == "paid", paid.text
    assert replay.status_code == 200 and replay.headers.get("idempotent-replayed") == "true", replay.text
    assert world.spent() == PRICE


def test_a_batch_whose_write_fails_consumes_nothing_and_the_same_answer_pays_on_retry(world: World) -> None:
    """The relying party's durable write fails once (its disk refuses): the awaiting request is refused with
    the fault named, nothing is paid or recorded, and the same key with the same answer then pays, once."""
    order = world.order("o1")
    store = world.rp._store
    real = store.write
    failed: list[int] = []

    def write_failing_once(ops: Any) -> None:
        if not failed:
            failed.append(len(ops))
            raise StoreError(Code.NOT_READY, "disk refused the write (injected)")
        real(ops)

    async def main() -> tuple[httpx.Response, httpx.Response]:
        async with world.client() as c:
            answer = world.answer(await world.challenge(c, order, "k"))
            store.write = write_failing_once  # type: ignore[method-assign]
            try:
                first = await world.pay(c, order, "k", answer)
            finally:
                store.write = real  # type: ignore[method-assign]
            return first, await world.pay(c, order, "k", answer)

    first, second = asyncio.run(main())
    assert failed and first.status_code != 200 and first.json()["code"] == CheckoutCode.STEP_UP_FAILED, first.text
    assert "disk refused" in first.json()["message"]
    assert second.status_code == 200 and second.json()["state"] == "paid", second.text
    assert world.spent() == PRICE and world.evidence() == 1


def test_closing_the_relying_party_answers_every_pending_await(world: World) -> None:
    """The relying party closes (the gateway stopping) while answers are awaited on the loop: each request
    is answered (its answer judged and recorded first, then paid), none hangs, each order paid at most once;
    a request arriving after the close is refused, not paid."""
    orders = [world.order(f"o{i}") for i in range(4)]
    late = world.order("late")

    async def main() -> tuple[list[httpx.Response], httpx.Response]:
        async with world.client() as c:
            answers = [world.answer(await world.challenge(c, o, f"k{i}")) for i, o in enumerate(orders)]
            late_answer = world.answer(await world.challenge(c, late, "late"))
            tasks = [
                asyncio.create_task(world.pay(c, o, f"k{i}", a))
                for i, (o, a) in enumerate(zip(orders, answers, strict=True))
            ]
            while world.step_up.submitted < len(orders):  # every answer with the batcher, its verdict awaited
                await asyncio.sleep(0.001)
            await asyncio.to_thread(world.rp.payment_batcher().close)
            got = list(await asyncio.wait_for(asyncio.gather(*tasks), 60))
            return got, await world.pay(c, late, "late", late_answer)

    got, after = asyncio.run(main())
    paid = [r for r in got if r.status_code == 200]
    assert all(r.status_code < 500 for r in got), [r.text for r in got]
    assert world.spent() == PRICE * len(paid)
    assert world.evidence() >= len(paid)
    assert after.status_code != 200 and world.co.get_order(late)["state"] == "created", after.text
