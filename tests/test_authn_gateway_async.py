"""The checkout gateway awaits a pay request's passkey verdict on its event loop (``PasskeyStepUp.verify_async``
through ``GuardChain.confirm_async``): no thread blocks in the batcher. Through the gateway's real app, flow
middleware, relying party (batched, with its signature worker) and payments core."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import msgspec

from checkout_identity import shopper
from liangcao.authn import RelyingParty, SoftAuthenticator
from liangcao.checkout.codes import CheckoutCode
from liangcao.checkout.guards import GuardChain, PayAttempt
from liangcao.checkout.http import create_app, default_rules
from liangcao.checkout.plugins import ConfirmEveryPayment, PasskeyStepUp
from liangcao.checkout.service import Checkout
from liangcao.flow import Gate
from liangcao.payments import Engine

ORIGIN = "http://localhost:8765"


class AwaitOnly(PasskeyStepUp):
    """The production step-up whose blocking ``verify`` must not be called on the gateway's path."""

    def verify(self, a: PayAttempt) -> None:
        raise AssertionError("the gateway blocked a thread on the step-up")


def test_concurrent_step_ups_are_awaited_on_the_loop_and_each_gets_its_own_verdict(tmp_path: Path) -> None:
    shoppers = [f"s{k}" for k in range(6)]
    with RelyingParty("localhost", ORIGIN, tmp_path / "authn") as rp, Engine(tmp_path / "pay", fsync=False) as core:
        devices = {s: SoftAuthenticator() for s in shoppers}
        for s, dev in devices.items():
            opts = rp.registration_options(s, "phone")
            rp.register(s, opts["ceremony_id"], dev.create(opts["publicKey"], ORIGIN))
        co = Checkout(tmp_path / "co", core, guards=GuardChain([ConfirmEveryPayment()], AwaitOnly(rp)))
        try:
            orders = {}
            for s in shoppers:
                assert co.topup(f"t-{s}", s, 100_000).status == 200
                orders[s] = str(co.create_order(f"o-{s}", s, "shop", 5_000).body["id"])
            app = create_app(co, Gate(default_rules()), auto_confirm_every_s=0)

            async def pay(c: httpx.AsyncClient, s: str, tamper: bool) -> tuple[int, Any]:
                who = shopper(co.home, s)
                url = f"/v1/orders/{orders[s]}/pay"
                first = await c.post(url, headers={"idempotency-key": "p1", **who}, json={})
                assert first.status_code == 401
                challenge = first.json()["detail"]["challenge"]
                credential = devices[s].get(challenge["publicKey"], ORIGIN)
                if tamper:  # another origin signed: refused, the order stays unpaid
                    credential = devices[s].get(challenge["publicKey"], "https://evil.example")
                body = msgspec.json.encode(
                    {"step_up": {"challenge_id": challenge["challenge_id"], "credential": credential}}
                )
                second = await c.post(
                    url, headers={"idempotency-key": "p1", "content-type": "application/json", **who}, content=body
                )
                return second.status_code, second.json()

            async def main() -> list[tuple[int, Any]]:
                async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                    return list(await asyncio.gather(*(pay(c, s, s == "s3") for s in shoppers)))

            results = asyncio.run(main())
            for s, (status, body) in zip(shoppers, results, strict=True):
                if s == "s3":
                    assert status != 200 and body["code"] == CheckoutCode.STEP_UP_FAILED, body
                    assert co.get_order(orders[s])["state"] == "created"
                else:
                    assert status == 200 and body["state"] == "paid", body
            b = rp.payment_batcher()
            assert b.answers == len(shoppers)  # every answer went through the batcher, none through verify()
            assert rp._store.row("SELECT count(*) FROM evidence") == (5,)  # the five accepted, durably
        finally:
            co.close()
