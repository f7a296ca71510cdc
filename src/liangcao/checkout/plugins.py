"""Adapters that plug the other consumer packages into the pay path's seams (``guards.py``).

* :func:`risk_guard`: ``liangcao.risk.RiskEngine.decide`` as a :class:`~liangcao.checkout.guards.PayGuard`;
  the decision (action, reasons, rule set and model versions) is kept on the order.
* :class:`PasskeyStepUp`: ``liangcao.authn.RelyingParty`` confirms a payment the risk engine stepped up,
  with a challenge bound to the order id, the payee (merchant), the amount and the currency.
* Installments (``liangcao.credit``) pay the merchant from the shopper's credit line at once, outside escrow;
  they plug in as a :class:`~liangcao.checkout.guards.PaymentMethod` once credit exposes a hold into escrow
  (see ``docs/checkout.md``, "Plugging in").
"""

from __future__ import annotations

from typing import Any

from liangcao.checkout.codes import CheckoutCode, CheckoutError
from liangcao.checkout.guards import PayAttempt, RiskGuard
from liangcao.errors import LiangcaoError


def risk_guard(engine: Any) -> RiskGuard:
    """A guard over a ``RiskEngine``: each payment attempt is decided once (the engine dedupes retries)."""
    from liangcao.risk.types import Payment

    def to_payment(a: PayAttempt) -> Any:
        return Payment(
            payment_id=a.order_id,
            time_ms=engine.clock.now_ms(),
            shopper=a.buyer,
            device=a.client.get("device") or "unknown",
            ip=a.client.get("ip") or "0.0.0.0",
            account=f"{a.method}:{a.buyer}",
            merchant=a.merchant,
            amount_fen=a.amount,
        )

    class _Guard(RiskGuard):
        def check(self, attempt: PayAttempt) -> Any:
            try:
                return super().check(attempt)
            except LiangcaoError as exc:  # the engine refused its input: say so, move nothing
                raise CheckoutError(CheckoutCode.BAD_REQUEST, f"risk engine: {exc.message}") from None

    return _Guard(engine, to_payment)


class PasskeyStepUp:
    """Step-up with a passkey through a ``liangcao.authn.RelyingParty``.

    The client answers ``STEP_UP_REQUIRED`` by running ``navigator.credentials.get`` on ``challenge.publicKey``
    and sends the pay request again with the same idempotency key and
    ``{"step_up": {"challenge_id": ..., "credential": <PublicKeyCredential JSON>}}``."""

    def __init__(self, rp: Any) -> None:
        self.rp = rp

    def challenge(self, a: PayAttempt) -> dict[str, Any]:
        out: dict[str, Any] = self.rp.payment_challenge(a.buyer, a.order_id, a.merchant, a.amount, a.currency)
        return out

    def verify(self, a: PayAttempt) -> None:
        s = a.step_up or {}
        self.rp.verify_payment(
            a.buyer, str(s.get("challenge_id", "")), s.get("credential"), a.order_id, a.merchant, a.amount, a.currency
        )
