"""The seams of the pay path: guards that may stop or step up a payment, and payment methods.

A payment runs through :class:`GuardChain` before any money moves. Each :class:`PayGuard` looks at the
:class:`PayAttempt` and answers a :class:`Verdict`: ``allow``, ``block`` (with a code and reason) or
``step_up`` (the shopper must confirm with a passkey). The first ``block`` wins; a ``step_up`` is then
settled by the :class:`StepUp` component (``liangcao.authn``'s relying party): without an assertion the
answer is ``401 STEP_UP_REQUIRED`` with a challenge bound to the order id, payee, amount and currency; with
one, it is verified against that binding. The risk engine (``liangcao.risk``) plugs in as
:class:`RiskGuard`; installments (``liangcao.credit``) plug in as a :class:`PaymentMethod` that names the
account the money comes from. Neither is needed: with no guard the chain allows, with no method but the
wallet only ``"wallet"`` is accepted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from liangcao.checkout import money
from liangcao.checkout.codes import CheckoutCode, CheckoutError


@dataclass(frozen=True, slots=True)
class PayAttempt:
    """What a guard may see of a payment about to be made."""

    order_id: str
    buyer: str
    merchant: str
    amount: int
    currency: str
    method: str
    step_up: dict[str, Any] | None = None  # the shopper's passkey assertion, when the client sends one
    client: dict[str, str] = field(default_factory=dict)  # e.g. ip, device, user agent (from the request)


@dataclass(frozen=True, slots=True)
class Verdict:
    action: str  # "allow" | "block" | "step_up"
    reasons: tuple[str, ...] = ()
    code: int = 0
    record: dict[str, Any] = field(default_factory=dict)  # kept on the order (rule and model versions)


ALLOW = Verdict("allow")


class PayGuard(Protocol):
    """One check on the pay path. Must not move money; may be slow only within its own budget."""

    name: str

    def check(self, attempt: PayAttempt) -> Verdict: ...


class StepUp(Protocol):
    """A relying party for payment-bound confirmation (``liangcao.authn.RelyingParty`` fits via an adapter)."""

    def challenge(self, attempt: PayAttempt) -> dict[str, Any]: ...

    def verify(self, attempt: PayAttempt) -> None:
        """Raise a ``LiangcaoError`` if ``attempt.step_up`` does not confirm exactly this payment."""
        ...


class PaymentMethod(Protocol):
    """Where an order's money comes from (the wallet, an installment plan's credit line, ...)."""

    name: str

    def source(self, attempt: PayAttempt) -> int:
        """The payments-core account debited by the hold (created beforehand by the method if needed)."""
        ...


class SettlingMethod(PaymentMethod, Protocol):
    """A method with its own records (installments): told of each settlement, and refunding after it itself.

    ``after_settle`` is called after the order settled (the money moved), and again until it returns (the
    gateway retries it every sweep), so it must be idempotent by order id. ``refund_after_settle`` moves a
    refund after settlement in the method's own way instead of the gateway's reverse transfer, idempotent
    by ``refund_id``; a ``LiangcaoError`` refuses it (nothing moved)."""

    def after_settle(self, order: dict[str, Any], funding_transfer_id: int) -> None: ...

    def refund_after_settle(self, order: dict[str, Any], amount: int, refund_id: str) -> None: ...


class WalletMethod:
    """The buyer's wallet: the default method."""

    name = "wallet"

    def source(self, attempt: PayAttempt) -> int:
        return money.account_id(money.Kind.BUYER, attempt.buyer)


class RiskGuard:
    """Adapts a risk engine with ``decide(payment) -> Decision`` (``.action``, ``.reasons``,
    ``.rules_version``, ``.model_version``); ``to_payment`` builds the engine's input from the attempt."""

    name = "risk"

    def __init__(self, engine: Any, to_payment: Callable[[PayAttempt], Any]) -> None:
        self.engine = engine
        self.to_payment = to_payment

    def check(self, attempt: PayAttempt) -> Verdict:
        d = self.engine.decide(self.to_payment(attempt))
        record = {
            "action": str(d.action),
            "reasons": [str(r) for r in d.reasons],
            "rules_version": str(getattr(d, "rules_version", "")),
            "model_version": str(getattr(d, "model_version", "")),
        }
        if d.action == "block":
            return Verdict("block", tuple(record["reasons"]), int(CheckoutCode.RISK_BLOCKED), record)
        if d.action == "step_up":
            return Verdict("step_up", tuple(record["reasons"]), int(CheckoutCode.STEP_UP_REQUIRED), record)
        return Verdict("allow", tuple(record["reasons"]), 0, record)


class GuardChain:
    """Runs the guards in order; settles a step-up with the relying party (see the module docstring)."""

    def __init__(self, guards: Sequence[PayGuard] = (), step_up: StepUp | None = None) -> None:
        self.guards = list(guards)
        self.step_up = step_up

    def run(self, attempt: PayAttempt) -> dict[str, Any]:
        """The records of the guards that ran (kept on the order); raises :class:`CheckoutError` to refuse."""
        records, confirm = self.check(attempt)
        if confirm:
            assert self.step_up is not None  # check() asks to confirm only with a step-up plugged in
            try:
                self.step_up.verify(attempt)
            except CheckoutError:
                raise
            except Exception as exc:  # the relying party's own refusal, named in the message
                raise CheckoutError(CheckoutCode.STEP_UP_FAILED, f"step-up refused: {exc}") from None
            records["step_up"] = {"verified": True}
        return records

    @property
    def awaits_step_up(self) -> bool:
        """True if the step-up can be awaited on an event loop (its ``verify_async``) instead of blocking a
        thread: the gateway then runs :meth:`check`, awaits :meth:`confirm_async`, and goes on."""
        return callable(getattr(self.step_up, "verify_async", None))

    async def confirm_async(self, attempt: PayAttempt, records: dict[str, Any]) -> None:
        """The step-up answer of a :meth:`check` that returned ``confirm``, verified by awaiting the relying
        party (``StepUp.verify_async``), with :meth:`run`'s refusals; marks ``records``."""
        try:
            await self.step_up.verify_async(attempt)  # type: ignore[union-attr]
        except CheckoutError:
            raise
        except Exception as exc:  # the relying party's own refusal, named in the message
            raise CheckoutError(CheckoutCode.STEP_UP_FAILED, f"step-up refused: {exc}") from None
        records["step_up"] = {"verified": True}

    def check(self, attempt: PayAttempt) -> tuple[dict[str, Any], bool]:
        """:meth:`run` but for the step-up's verification: the records, and True if ``attempt.step_up``
        must still be verified (a guard asked for it and the client sent an answer)."""
        records: dict[str, Any] = {}
        need_step_up: list[str] = []
        for g in self.guards:
            v = g.check(attempt)
            if v.record:
                records[g.name] = v.record
            if v.action == "block":
                raise CheckoutError(
                    CheckoutCode(v.code or CheckoutCode.RISK_BLOCKED),
                    f"payment refused by {g.name}: {', '.join(v.reasons) or 'no reason given'}",
                    {"guard": g.name, "reasons": list(v.reasons), **v.record},
                )
            if v.action == "step_up":
                need_step_up.append(g.name)
        if need_step_up:
            if self.step_up is None:
                raise CheckoutError(
                    CheckoutCode.STEP_UP_UNAVAILABLE, f"{need_step_up[0]} asks for a step-up and none is plugged in"
                )
            if attempt.step_up is None:
                raise CheckoutError(
                    CheckoutCode.STEP_UP_REQUIRED,
                    f"confirm this payment with a passkey ({need_step_up[0]} asked for it)",
                    {"challenge": self.step_up.challenge(attempt)},
                )
            return records, True
        return records, False
