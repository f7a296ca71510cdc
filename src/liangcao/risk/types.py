"""The engine's records: a :class:`Payment` in, a :class:`Decision` out.

Payments are strict: unknown fields are refused (a misspelt ``is_new_payee`` must not silently read as
absent), money is integer fen (a float amount is refused with ``FLOAT_MONEY``, never rounded), identifiers
are bounded. :func:`decode_payment` reads the wire form; :func:`check_payment` re-checks a ``Payment`` built
in Python, because a msgspec ``Struct`` does not check types when constructed directly.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec

from liangcao.risk import limits
from liangcao.risk.codes import RiskCode, RiskError

#: A payment's features by name: numbers, and the category (a string) for the rules.
Features = dict[str, float | str]
Action = Literal["allow", "step_up", "block"]
ACTIONS: tuple[str, ...] = ("allow", "step_up", "block")
#: How strict an action is: at equal priority the stricter action wins.
SEVERITY = {"allow": 0, "step_up": 1, "block": 2}


class Payment(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One checkout payment as the risk engine sees it (before the payments core is asked)."""

    payment_id: str
    time_ms: int  # when the shopper paid (the engine's clock decides the windows; this is checked against it)
    shopper: str
    device: str
    ip: str
    account: str  # the card or wallet account paid from (a token, never a card number)
    merchant: str
    amount_fen: int
    category: str = "other"
    lat_e6: int | None = None  # micro-degrees: 31_230_400 is 31.2304 N
    lon_e6: int | None = None
    is_new_payee: bool | None = None  # None: the engine judges from the shopper's history
    coupon: bool = False
    insured_shipping: bool = False  # return-shipping insurance bought with the order


class Decision(msgspec.Struct, kw_only=True):
    """A risk decision: what to do, why, and the versions that decided it (enough to reproduce it)."""

    decision_id: str
    payment_id: str
    action: str  # allow | step_up | block
    reasons: list[str]
    score: float  # model score plus points of "score" rules, in [0, 1]: not money
    model_score: float
    rules_version: str
    model_version: str
    model_acts: bool = True  # False while the model warms up (model_warmup_labels): it scored, rules decided
    step_up_at: float = 0.0  # the step-up threshold raised by the rule set's step_up_share_max (0: not raised)
    time_ms: int  # the engine's clock when it decided
    shadow: list[str] = msgspec.field(default_factory=list)  # "rule_id:action" of shadow rules that matched
    shadow_action: str = ""  # what the action would have been with the shadow rules live
    features: Features = msgspec.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Everything, features included (the record to keep for audits and ``RiskEngine.reproduce``)."""
        return msgspec.structs.asdict(self)

    def public(self) -> dict[str, Any]:
        """What a response may carry: the verdict, reasons, score and versions, without the features."""
        return {
            "decision_id": self.decision_id,
            "action": self.action,
            "reasons": list(self.reasons),
            "score": round(self.score, 4),
            "rules_version": self.rules_version,
            "model_version": self.model_version,
        }


_payment_json = msgspec.json.Decoder(Payment)
_FLOAT_AT = re.compile(r"Expected `(?:int|str|bool)[^`]*`, got `float` - at `\$\.(\w+)`")
_MONEY = frozenset({"amount_fen"})


def decode_payment(data: bytes | str | dict[str, Any]) -> Payment:
    """A payment from JSON text or a decoded object, strictly checked; :class:`RiskError` if it is not one."""
    if isinstance(data, dict):
        try:
            p = msgspec.convert(data, Payment, strict=True)
        except msgspec.ValidationError as exc:
            raise _refusal(str(exc)) from None
    else:
        if len(data) > limits.payment_bytes_max:
            raise RiskError(RiskCode.BAD_PAYMENT, f"payment is {len(data)} bytes; at most {limits.payment_bytes_max}")
        try:
            p = _payment_json.decode(data)
        except msgspec.ValidationError as exc:
            raise _refusal(str(exc)) from None
        except msgspec.DecodeError as exc:
            raise RiskError(RiskCode.BAD_PAYMENT, f"payment is not JSON: {exc}") from None
    check_payment(p)
    return p


def _refusal(message: str) -> RiskError:
    if message.startswith("Object contains unknown field"):
        return RiskError(RiskCode.UNKNOWN_FIELD, f"payment has an unknown field: {message}")
    m = _FLOAT_AT.search(message)
    if m is not None and m.group(1) in _MONEY:
        return RiskError(RiskCode.FLOAT_MONEY, f"{m.group(1)} is a float: money is integer fen")
    return RiskError(RiskCode.BAD_PAYMENT, f"invalid payment: {message}")


_IDS = ("payment_id", "shopper", "device", "ip", "account", "merchant", "category")


def check_payment(p: Payment) -> None:
    """Raise :class:`RiskError` unless every field of ``p`` has its type and is within its bounds."""
    amount = p.amount_fen
    if type(amount) is not int:
        if isinstance(amount, float):
            raise RiskError(RiskCode.FLOAT_MONEY, f"amount_fen {amount!r} is a float: money is integer fen")
        raise RiskError(RiskCode.BAD_PAYMENT, f"amount_fen must be an integer (fen), not {type(amount).__name__}")
    if not 0 < amount <= limits.amount_fen_max:
        raise RiskError(RiskCode.AMOUNT_OUT_OF_RANGE, f"amount_fen {amount} is outside 1..{limits.amount_fen_max}")
    if type(p.time_ms) is not int:
        raise RiskError(RiskCode.BAD_PAYMENT, "time_ms must be an integer (milliseconds since the epoch)")
    for name in _IDS:
        value = getattr(p, name)
        if type(value) is not str or not value:
            raise RiskError(RiskCode.BAD_PAYMENT, f"{name} must be a non-empty string")
        if len(value) > limits.id_chars_max:
            raise RiskError(
                RiskCode.FIELD_TOO_LONG, f"{name} is {len(value)} characters; at most {limits.id_chars_max}"
            )
    lat, lon = p.lat_e6, p.lon_e6
    if (lat is None) != (lon is None):
        raise RiskError(RiskCode.BAD_LOCATION, "give both lat_e6 and lon_e6, or neither")
    if lat is not None and lon is not None:
        if type(lat) is not int or type(lon) is not int:
            raise RiskError(RiskCode.BAD_LOCATION, "lat_e6 and lon_e6 are integers (micro-degrees)")
        if not (-90_000_000 <= lat <= 90_000_000 and -180_000_000 <= lon <= 180_000_000):
            raise RiskError(RiskCode.BAD_LOCATION, f"({lat}, {lon}) micro-degrees is not on the globe")
    for flag in ("coupon", "insured_shipping"):
        if type(getattr(p, flag)) is not bool:
            raise RiskError(RiskCode.BAD_PAYMENT, f"{flag} must be true or false")
    if p.is_new_payee is not None and type(p.is_new_payee) is not bool:
        raise RiskError(RiskCode.BAD_PAYMENT, "is_new_payee must be true, false or absent")
