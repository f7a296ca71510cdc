"""The checkout gateway's refusals: stable codes 3000-3099, registered with ``liangcao.codes``.

A number never changes once released. Every refusal is answered as JSON ``{"code", "name", "message"}`` with
the HTTP status registered here; the message is one line saying what was wrong.

::

    LiangcaoError
    └── CheckoutError          a request refused (bad input, wrong state, money short): nothing written,
                               unless the answer is a stored outcome of the money step (then replayed)
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from liangcao import codes
from liangcao.errors import LiangcaoError


class CheckoutCode(IntEnum):
    # 300x: the request itself
    ORDER_NOT_FOUND = 3000
    AMOUNT_INVALID = 3001  # zero, negative or above amount_fen_max
    AMOUNT_NOT_INTEGER = 3002  # a float, a string or a bool where fen belong
    BAD_REQUEST = 3003  # not JSON, unknown or missing fields, wrong types, over a *_max
    BODY_TOO_LARGE = 3004
    IDEMPOTENCY_KEY_MISSING = 3005
    IDEMPOTENCY_KEY_REUSED = 3006  # the key answered another request before
    REQUEST_IN_PROGRESS = 3007  # the key's (or the order's) first request is still running: retry
    BAD_PARTY_ID = 3008
    UNSUPPORTED_CURRENCY = 3009
    # 301x: state machines
    ORDER_NOT_PAYABLE = 3010
    ORDER_NOT_CONFIRMABLE = 3011
    ORDER_NOT_REFUNDABLE = 3012
    ORDER_NOT_CANCELLABLE = 3013
    REFUND_EXCEEDS_PAID = 3014
    TOO_MANY_REFUNDS = 3015
    # 302x: money
    INSUFFICIENT_FUNDS = 3020  # the buyer's wallet (or credit line) cannot cover the order
    MERCHANT_FUNDS_SHORT = 3021  # a refund after settlement that the merchant's balance cannot cover
    PAYMENT_DECLINED = 3022  # the payments core refused for another reason (named in the message)
    METHOD_UNAVAILABLE = 3023  # a payment method that is not plugged in
    # 303x: guards
    RISK_BLOCKED = 3030
    STEP_UP_REQUIRED = 3031  # confirm with a passkey: the answer carries the challenge
    STEP_UP_FAILED = 3032
    STEP_UP_UNAVAILABLE = 3033  # the risk engine asked for a step-up and no relying party is plugged in
    # 309x: the service
    ROUTE_NOT_FOUND = 3090
    METHOD_NOT_ALLOWED = 3091
    OPERATOR_ONLY = 3092  # changing the flow rules needs the operator's token (HOME/operator.token)
    UNAUTHENTICATED = 3093  # no session token, or a malformed, forged, expired one (WWW-Authenticate: Bearer)
    FORBIDDEN = 3094  # the token's subject may not act on this order, wallet or merchant
    BACKEND_UNAVAILABLE = 3098  # the payments core (or its database) failed: nothing acknowledged
    INTERNAL = 3099  # a bug: answered 503, never 500, and logged


C = CheckoutCode
codes.register(
    CheckoutCode,
    "checkout",
    http={
        C.ORDER_NOT_FOUND: 404,
        C.BODY_TOO_LARGE: 413,
        C.IDEMPOTENCY_KEY_MISSING: 428,
        C.IDEMPOTENCY_KEY_REUSED: 422,
        C.REQUEST_IN_PROGRESS: 409,
        C.ORDER_NOT_PAYABLE: 409,
        C.ORDER_NOT_CONFIRMABLE: 409,
        C.ORDER_NOT_REFUNDABLE: 409,
        C.ORDER_NOT_CANCELLABLE: 409,
        C.REFUND_EXCEEDS_PAID: 422,
        C.TOO_MANY_REFUNDS: 422,
        C.INSUFFICIENT_FUNDS: 402,
        C.MERCHANT_FUNDS_SHORT: 409,
        C.PAYMENT_DECLINED: 402,
        C.METHOD_UNAVAILABLE: 422,
        C.RISK_BLOCKED: 403,
        C.STEP_UP_REQUIRED: 401,
        C.STEP_UP_FAILED: 403,
        C.STEP_UP_UNAVAILABLE: 403,
        C.ROUTE_NOT_FOUND: 404,
        C.METHOD_NOT_ALLOWED: 405,
        C.OPERATOR_ONLY: 401,
        C.UNAUTHENTICATED: 401,
        C.FORBIDDEN: 403,
        C.BACKEND_UNAVAILABLE: 503,
        C.INTERNAL: 503,
    },
)


class CheckoutError(LiangcaoError):
    """A refusal with a :class:`CheckoutCode` and a one-line message."""

    def __init__(self, code: CheckoutCode, message: str, detail: Any = None) -> None:
        super().__init__(code, message, detail)

    @property
    def status(self) -> int:
        return codes.http_status(self.code)

    def body(self) -> dict[str, Any]:
        """The JSON answer: ``{"code", "name", "message"}`` (and ``detail`` when there is one)."""
        out: dict[str, Any] = {"code": self.code, "name": codes.name_of(self.code), "message": self.message}
        if self.detail is not None:
            out["detail"] = self.detail
        return out
