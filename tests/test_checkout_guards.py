"""The pay path's seams with the real consumer packages: the risk engine allows, blocks or steps up a payment;
a step-up is confirmed with a passkey (a software authenticator doing real WebAuthn) bound to the order, the
payee, the amount and the currency; a blocked payment moves nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from liangcao.authn import RelyingParty, SoftAuthenticator
from liangcao.checkout.codes import CheckoutCode, CheckoutError
from liangcao.checkout.guards import GuardChain
from liangcao.checkout.plugins import PasskeyStepUp, risk_guard
from liangcao.checkout.service import Checkout
from liangcao.payments import Engine
from liangcao.risk.engine import RiskConfig, RiskEngine

ORIGIN = "http://localhost:8765"
T0 = 1_800_000_000_000
RULES: dict[str, Any] = {
    "thresholds": {"step_up": 0.99, "block": 0.999},
    "rules": [
        {"id": "stolen", "reason": "KNOWN_FRAUD_AMOUNT", "action": "block", "priority": 100,
         "when": [["amount_fen", "==", 66_600]]},
        {"id": "big", "reason": "LARGE_AMOUNT", "action": "step_up", "when": [["amount_fen", ">=", 100_000]]},
    ],
}  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def now_ms(self) -> int:
        return self.t


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Checkout, SoftAuthenticator]]:
    clock = Clock()
    risk = RiskEngine(None, clock=clock, rules=RULES, config=RiskConfig(learn_per_decide=0))
    with RelyingParty("localhost", ORIGIN, tmp_path / "authn", clock) as rp, Engine(tmp_path / "pay", fsync=False) as e:
        dev = SoftAuthenticator()
        opts = rp.registration_options("alice", "phone")
        rp.register("alice", opts["ceremony_id"], dev.create(opts["publicKey"], ORIGIN))
        guards = GuardChain([risk_guard(risk)], PasskeyStepUp(rp))
        co = Checkout(tmp_path / "co", e, clock_ms=clock.now_ms, guards=guards)
        assert co.topup("t", "alice", 1_000_000).status == 200
        try:
            yield co, dev
        finally:
            co.close()


def order(co: Checkout, amount: int, key: str) -> str:
    return str(co.create_order(key, "alice", "shop", amount).body["id"])


def test_allowed_payments_carry_the_decision_that_allowed_them(setup: tuple[Checkout, SoftAuthenticator]) -> None:
    co, _ = setup
    r = co.pay("p1", order(co, 5_000, "o1"))
    assert r.status == 200
    d = r.body["decisions"]["risk"]
    assert d["action"] == "allow" and d["rules_version"] and d["model_version"]


def test_a_blocked_payment_is_refused_with_its_reasons_and_moves_nothing(
    setup: tuple[Checkout, SoftAuthenticator],
) -> None:
    co, _ = setup
    oid = order(co, 66_600, "o1")
    with pytest.raises(CheckoutError) as info:
        co.pay("p1", oid)
    assert info.value.code == CheckoutCode.RISK_BLOCKED and "KNOWN_FRAUD_AMOUNT" in info.value.message
    assert info.value.status == 403
    assert co.wallet("alice") == {"buyer": "alice", "available": 1_000_000, "held": 0}
    assert co.get_order(oid)["state"] == "created"


def test_a_stepped_up_payment_needs_a_passkey_bound_to_this_payment(setup: tuple[Checkout, SoftAuthenticator]) -> None:
    co, dev = setup
    big, other = order(co, 200_000, "o1"), order(co, 150_000, "o2")
    with pytest.raises(CheckoutError) as info:
        co.pay("p1", big)
    assert info.value.code == CheckoutCode.STEP_UP_REQUIRED and info.value.status == 401
    challenge = info.value.detail["challenge"]
    assert challenge["payment"]["amount_fen"] == 200_000
    assertion = dev.get(challenge["publicKey"], ORIGIN)
    # The assertion confirms that payment only: offered for another order it is refused, nothing moves.
    with pytest.raises(CheckoutError) as info:
        co.pay("p2", other, step_up={"challenge_id": challenge["challenge_id"], "credential": assertion})
    assert info.value.code == CheckoutCode.STEP_UP_FAILED
    assert co.wallet("alice")["held"] == 0
    # The ceremony was spent by that attempt (answered once, even when refused): the shopper is asked again,
    # and the same request, with the same key and a fresh assertion, pays.
    with pytest.raises(CheckoutError) as info:
        co.pay("p1", big)
    challenge = info.value.detail["challenge"]
    assertion = dev.get(challenge["publicKey"], ORIGIN)
    r = co.pay("p1", big, step_up={"challenge_id": challenge["challenge_id"], "credential": assertion})
    assert r.status == 200 and r.body["state"] == "paid" and r.body["decisions"]["step_up"]["verified"]
    assert co.wallet("alice")["held"] == 200_000


def test_installments_hold_from_the_credit_line_and_record_the_plan_once_settled(tmp_path: Path) -> None:
    """The real credit service as a payment method: the hold comes from the shopper's line into escrow (the
    core refuses more than the line), the plan is recorded at settlement with the hold's post as its funding,
    and a refund after settlement goes through the plan (the line comes back)."""
    from liangcao.checkout.plugins import InstallmentsMethod
    from liangcao.credit import CreditService

    with Engine(tmp_path / "pay", fsync=False) as e:
        credit = CreditService(e, tmp_path / "credit.db", fsync=False)
        co = Checkout(tmp_path / "co", e, methods=[InstallmentsMethod(credit, 3)])
        try:
            big = str(co.create_order("o1", "ann", "shop", 120_000).body["id"])
            r = co.pay("p1", big, "installments-3")
            assert r.status == 200 and r.body["method"] == "installments-3"
            line = credit.line("ann")
            assert line.held_fen == 120_000 and co.wallet("ann")["available"] == 0  # the line, not the wallet
            more = str(co.create_order("o2", "ann", "shop", line.available_fen + 1).body["id"])
            r = co.pay("p2", more, "installments-3")
            assert r.status == 402 and r.body["code"] == CheckoutCode.INSUFFICIENT_FUNDS  # the core says no
            with pytest.raises(CheckoutError) as info:
                co.pay("p3", more, "installments-7")
            assert info.value.code == CheckoutCode.METHOD_UNAVAILABLE
            assert co.confirm("c1", big).body["state"] == "settled"
            plan = credit.plan(big)
            assert plan.principal == 120_000 and plan.periods == 3 and plan.merchant == "shop"
            assert credit.line("ann").outstanding_fen == 120_000
            r = co.refund("r1", big, 20_000)
            assert r.status == 200 and r.body["refunded"] == 20_000
            assert credit.plan(big).refunded == 20_000 and credit.line("ann").outstanding_fen == 100_000
            assert co.refund("r1", big, 20_000).replayed  # once
            assert credit.plan(big).refunded == 20_000
        finally:
            co.close()
            credit.close()
