"""Adapters that plug the other consumer packages into the pay path's seams (``guards.py``).

* :func:`risk_guard`: ``liangcao.risk.RiskEngine.decide`` as a :class:`~liangcao.checkout.guards.PayGuard`;
  the decision (action, reasons, rule set and model versions) is kept on the order.
* :class:`ConfirmEveryPayment`: a guard that steps up every payment (the gateway's "always confirm" switch).
* :class:`PasskeyStepUp`: ``liangcao.authn.RelyingParty`` confirms a payment the risk engine stepped up,
  with a challenge bound to the order id, the payee (merchant), the amount and the currency.
* :class:`InstallmentsMethod`: ``liangcao.credit.CreditService`` as a payment method. The hold comes from the
  shopper's credit line (``line_account``: the core refuses a hold over the available line, or from a
  frozen one) into the gateway's escrow like any payment; once the order settles, the plan is recorded
  with ``open_plan`` and the post of the hold as its funding transfer; a refund after settlement goes
  through ``CreditService.refund`` (the plan shrinks, the line comes back).
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from liangcao.checkout import money
from liangcao.checkout.codes import CheckoutCode, CheckoutError
from liangcao.checkout.guards import PayAttempt, RiskGuard, Verdict
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


class ConfirmEveryPayment:
    """A guard that steps up every payment (``liangcao checkout start --confirm-every-payment``): the
    strictest policy, each payment confirmed with a passkey whatever the amount or the risk."""

    name = "confirm"
    _verdict = Verdict("step_up", ("CONFIRM_EVERY_PAYMENT",), int(CheckoutCode.STEP_UP_REQUIRED))

    def check(self, attempt: PayAttempt) -> Verdict:
        return self._verdict


class PasskeyStepUp:
    """Step-up with a passkey through a ``liangcao.authn.RelyingParty``.

    The client answers ``STEP_UP_REQUIRED`` by running ``navigator.credentials.get`` on ``challenge.publicKey``
    and sends the pay request again with the same idempotency key and
    ``{"step_up": {"challenge_id": ..., "credential": <PublicKeyCredential JSON>}}``.

    The answers of concurrent pay requests (the gateway's worker threads) are verified in micro-batches:
    each request hands its answer to the relying party's :class:`~liangcao.authn.batch.PaymentBatcher` and
    waits for its own durable verdict, while one thread judges every answer waiting and one fsync records
    them (``batched=False``: one ``verify_payment`` per request). On the gateway's event loop the answer is
    awaited (:meth:`verify_async`): no worker thread is held while the batch is judged and made durable."""

    def __init__(self, rp: Any, *, batched: bool = True) -> None:
        self.rp = rp
        self.batcher = rp.payment_batcher() if batched and hasattr(rp, "payment_batcher") else None

    def challenge(self, a: PayAttempt) -> dict[str, Any]:
        out: dict[str, Any] = self.rp.payment_challenge(a.buyer, a.order_id, a.merchant, a.amount, a.currency)
        return out

    def verify(self, a: PayAttempt) -> None:
        s = a.step_up or {}
        challenge_id, credential = str(s.get("challenge_id", "")), s.get("credential")
        if self.batcher is None:
            self.rp.verify_payment(a.buyer, challenge_id, credential, a.order_id, a.merchant, a.amount, a.currency)
            return
        self.batcher.verify(a.buyer, challenge_id, credential, a.order_id, a.merchant, a.amount, a.currency)

    async def verify_async(self, a: PayAttempt) -> None:
        """:meth:`verify` awaited on the gateway's event loop (``GuardChain.confirm_async``): the answer joins
        the batcher's next batch and its durable verdict resolves this coroutine's future, with no thread
        parked for it (``PaymentBatcher.submit_async``)."""
        s = a.step_up or {}
        challenge_id, credential = str(s.get("challenge_id", "")), s.get("credential")
        if self.batcher is None:  # one verify_payment per request: it blocks, so it runs on a thread
            await asyncio.to_thread(
                self.rp.verify_payment, a.buyer, challenge_id, credential, a.order_id, a.merchant, a.amount, a.currency
            )
            return
        await self.batcher.submit_async(a.buyer, challenge_id, credential, a.order_id, a.merchant, a.amount, a.currency)


class InstallmentsMethod:
    """Pay in ``periods`` installments from the shopper's credit line (method ``installments-<periods>``)."""

    def __init__(self, credit: Any, periods: int, fee_payer: str = "shopper") -> None:
        self.credit = credit
        self.periods = periods
        self.fee_payer = fee_payer
        self.name = f"installments-{periods}"

    def source(self, attempt: PayAttempt) -> int:
        try:
            return int(self.credit.line_account(attempt.buyer))
        except LiangcaoError as exc:
            raise CheckoutError(CheckoutCode.METHOD_UNAVAILABLE, f"installments: {exc.message}") from None

    def after_settle(self, order: dict[str, Any], funding_transfer_id: int) -> None:
        merchant = str(order["merchant"])
        # The plan's merchant is the gateway's merchant account (refunds and fees move there).
        self.credit.register_merchant(merchant, money.account_id(money.Kind.MERCHANT, merchant))
        self.credit.open_plan(
            str(order["id"]),
            str(order["buyer"]),
            merchant,
            int(order["settled"]),
            self.periods,
            self.fee_payer,
            funding_transfer_id=funding_transfer_id,
        )

    def refund_after_settle(self, order: dict[str, Any], amount: int, refund_id: str) -> None:
        # credit's ids are at most 64 characters; an idempotency key may be 128: a longer one is hashed.
        rid = refund_id if len(refund_id) <= 64 else hashlib.sha256(refund_id.encode()).hexdigest()
        self.credit.refund(str(order["id"]), amount, refund_id=rid)
