"""Flow control and the second round trip of a confirmed payment: a pay request that carries a passkey answer
is ``PAY`` on its own resource (``pay_step_up``), so first attempts filling ``pay`` do not shed it and waste
the challenge its first attempt was admitted for. Through the gateway's real app, flow middleware, relying
party (batched step-up) and payments core."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from checkout_identity import shopper
from liangcao.authn import RelyingParty, SoftAuthenticator
from liangcao.checkout.guards import GuardChain
from liangcao.checkout.http import classify, create_app, default_rules
from liangcao.checkout.plugins import ConfirmEveryPayment, PasskeyStepUp
from liangcao.checkout.service import Checkout
from liangcao.flow import Gate, Priority, Refused
from liangcao.payments import Engine

ORIGIN = "http://localhost:8765"


def scope(method: str, path: str, length: int | None = None) -> dict[str, Any]:
    headers = [(b"content-type", b"application/json")]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return {"type": "http", "method": method, "path": path, "headers": headers}


def test_a_pay_request_with_a_passkey_answer_is_classified_apart() -> None:
    assert classify(scope("POST", "/v1/orders/shop.1/pay", 20)) == ("pay", Priority.PAY, "shop")
    assert classify(scope("POST", "/v1/orders/shop.1/pay")) == ("pay", Priority.PAY, "shop")
    assert classify(scope("POST", "/v1/orders/shop.1/pay", 900)) == ("pay_step_up", Priority.PAY, "shop")
    assert classify({**scope("POST", "/v1/orders/shop.1/pay"), "headers": [(b"content-length", b"x9")]}) == (
        "pay",
        Priority.PAY,
        "shop",
    )
    # nothing else moves: a large confirm or refund body is still what it was
    assert classify(scope("POST", "/v1/orders/shop.1/confirm", 900)) == ("confirm", Priority.CONFIRM, "shop")
    assert classify(scope("POST", "/v1/orders", 900)) == ("order", Priority.PAY, None)


def test_first_attempts_filling_pay_do_not_shed_the_second_round_trip() -> None:
    gate = Gate(default_rules())
    held = []
    with pytest.raises(Refused):  # first attempts up to pay's limit: the next one is refused
        for _ in range(1_000):
            held.append(gate.enter("pay", Priority.PAY, "shop"))
    assert len(held) < 1_000
    ticket = gate.enter("pay_step_up", Priority.PAY, "shop")  # its own limit: admitted
    ticket.exit(True)
    for t in held:
        t.exit(True)


def test_a_confirmed_payment_over_http_passes_pay_then_pay_step_up(tmp_path: Path) -> None:
    gate = Gate(default_rules())
    with RelyingParty("localhost", ORIGIN, tmp_path / "authn") as rp, Engine(tmp_path / "pay", fsync=False) as core:
        dev = SoftAuthenticator()
        opts = rp.registration_options("alice", "phone")
        rp.register("alice", opts["ceremony_id"], dev.create(opts["publicKey"], ORIGIN))
        co = Checkout(tmp_path / "co", core, guards=GuardChain([ConfirmEveryPayment()], PasskeyStepUp(rp)))
        try:
            assert co.topup("t", "alice", 100_000).status == 200
            oid = str(co.create_order("o", "alice", "shop", 5_000).body["id"])
            app = create_app(co, gate, auto_confirm_every_s=0)

            async def pay() -> tuple[httpx.Response, httpx.Response]:
                who = shopper(co.home, "alice")  # the buyer pays her own order
                async with httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://t", headers=who
                ) as c:
                    first = await c.post(f"/v1/orders/{oid}/pay", headers={"idempotency-key": "p1"}, json={})
                    challenge = first.json()["detail"]["challenge"]
                    body = msgspec.json.encode(
                        {
                            "step_up": {
                                "challenge_id": challenge["challenge_id"],
                                "credential": dev.get(challenge["publicKey"], ORIGIN),
                            }
                        }
                    )
                    second = await c.post(
                        f"/v1/orders/{oid}/pay",
                        headers={"idempotency-key": "p1", "content-type": "application/json"},
                        content=body,
                    )
                    return first, second

            first, second = asyncio.run(pay())
            assert first.status_code == 401 and second.status_code == 200, second.text
            assert second.json()["state"] == "paid"
            resources = gate.status()["resources"]
            assert resources["pay"]["passed"] == 1 and resources["pay_step_up"]["passed"] == 1
            assert rp.payment_batcher().answers == 1  # verified through the gateway's batched path
        finally:
            co.close()
