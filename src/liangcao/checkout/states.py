"""The order, payment and refund state machines, as data (h11's style: transitions are tables).

Theory of operation. An order is created (``CREATED``), paid into escrow (``PAID``: the buyer's money is a
pending transfer buyer -> escrow in the payments core), then either confirmed by the buyer or auto-confirmed
when its window ends (``SETTLED``: the hold is posted and, in the same linked chain, paid out to the
merchant less the platform fee), or refunded. Refunds before settlement void the hold (all of it) or post
only what is kept (part of it); once part of the hold is posted the rest sits in escrow and later refunds
before settlement come out of escrow. Refunds after settlement are reverse transfers merchant -> buyer.
Refunds are cumulative and never exceed what was paid. An order whose whole payment went back is
``REFUNDED``; an unpaid order may be ``CANCELLED``.

The payment has its own state (``PaymentState``) and every refund is a record with its own
(``RefundState``). Each operation is allowed from the states listed in :data:`ALLOWED`; anything else is
refused with the operation's code and nothing is written.
"""

from __future__ import annotations

from enum import IntEnum

from liangcao.checkout.codes import CheckoutCode, CheckoutError


class OrderState(IntEnum):
    CREATED = 1
    PAID = 2  # money held in escrow (pending, or posted into escrow after a partial refund)
    SETTLED = 3  # paid out to the merchant, once
    REFUNDED = 4  # every fen paid went back to the buyer
    CANCELLED = 5  # closed before payment


class PaymentState(IntEnum):
    NONE = 0
    HELD = 1  # a pending transfer buyer -> escrow
    ESCROWED = 2  # posted into escrow (after a partial refund before settlement)
    SETTLED = 3  # posted to the merchant and the fee account
    VOIDED = 4  # the whole hold released back to the buyer
    FAILED = 5  # the last attempt was declined; the order may be paid again


class RefundState(IntEnum):
    REQUESTED = 1  # in flight (a crash here is finished on restart)
    SUCCEEDED = 2
    FAILED = 3


class RefundKind(IntEnum):
    VOID = 1  # the whole pending hold released
    PARTIAL_POST = 2  # the hold posted less the refund: the refund is released
    FROM_ESCROW = 3  # escrow -> buyer, after a partial post
    REVERSE = 4  # merchant -> buyer, after settlement


#: Operation -> the order states it may start from, and the code refusing it elsewhere.
ALLOWED: dict[str, tuple[frozenset[OrderState], CheckoutCode]] = {
    "pay": (frozenset({OrderState.CREATED}), CheckoutCode.ORDER_NOT_PAYABLE),
    "cancel": (frozenset({OrderState.CREATED}), CheckoutCode.ORDER_NOT_CANCELLABLE),
    "confirm": (frozenset({OrderState.PAID}), CheckoutCode.ORDER_NOT_CONFIRMABLE),
    "auto_confirm": (frozenset({OrderState.PAID}), CheckoutCode.ORDER_NOT_CONFIRMABLE),
    "refund": (frozenset({OrderState.PAID, OrderState.SETTLED}), CheckoutCode.ORDER_NOT_REFUNDABLE),
}

#: Operation -> the order states it may end in (checked after every money step: a programmer error if not).
RESULTS: dict[str, frozenset[OrderState]] = {
    "pay": frozenset({OrderState.PAID, OrderState.CREATED}),  # CREATED again when the payment is declined
    "cancel": frozenset({OrderState.CANCELLED}),
    "confirm": frozenset({OrderState.SETTLED, OrderState.PAID}),
    "auto_confirm": frozenset({OrderState.SETTLED, OrderState.PAID}),
    "refund": frozenset({OrderState.PAID, OrderState.SETTLED, OrderState.REFUNDED}),
}


def check(op: str, state: int, order_id: str) -> None:
    """Refuse ``op`` on an order in ``state`` (a :class:`CheckoutError` naming both)."""
    allowed, code = ALLOWED[op]
    if state not in allowed:
        names = "/".join(sorted(s.name.lower() for s in allowed))
        raise CheckoutError(
            code, f"order {order_id} is {OrderState(state).name.lower()}: {op} needs it {names}", {"state": state}
        )
