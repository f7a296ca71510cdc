"""The risk engine's result codes (3300-3399) and its one error class.

A refusal is a :class:`RiskError` (a ``LiangcaoError``: code + one-line message); a broken snapshot or model
file in the engine's own home folder is a :class:`RiskFault` (a ``Fault``: this machine's problem).
"""

from __future__ import annotations

from enum import IntEnum

from liangcao import codes
from liangcao.errors import Fault, LiangcaoError


class RiskCode(IntEnum):
    BAD_PAYMENT = 3300  # the body is not a payment: not JSON, a missing field, a wrong type
    UNKNOWN_FIELD = 3301  # a field the payment does not have (a typo must not pass silently)
    FLOAT_MONEY = 3302  # money as a float: amounts are integer fen
    AMOUNT_OUT_OF_RANGE = 3303  # zero, negative or above amount_fen_max
    CLOCK_SKEW = 3304  # time_ms too far from the engine's clock
    FIELD_TOO_LONG = 3305  # an identifier longer than id_chars_max
    BAD_LOCATION = 3306  # latitude/longitude outside the globe, or only one of them
    BAD_RULES = 3310  # a rule set that does not parse or check: refused, nothing changed
    UNKNOWN_RULES_VERSION = 3311
    UNKNOWN_MODEL_VERSION = 3320
    UNKNOWN_PAYMENT = 3330  # a label for a payment the engine never decided (or has forgotten: pending_max)
    LABEL_CONFLICT = 3331  # a second, different label for the same payment
    BAD_LABEL = 3332
    PAYMENT_ID_REUSED = 3333  # a payment id already decided, for a payment with other terms
    HOME_IN_USE = 3340  # another engine holds this home folder
    SNAPSHOT_BAD = 3390  # the engine's own snapshot or model file is unreadable (a fault)


codes.register(
    RiskCode,
    "risk",
    http={
        RiskCode.UNKNOWN_PAYMENT: 404,
        RiskCode.HOME_IN_USE: 409,
        RiskCode.PAYMENT_ID_REUSED: 409,
        RiskCode.SNAPSHOT_BAD: 500,
    },
)


class RiskError(LiangcaoError):
    """A refusal by the risk engine: bad input, bad rules, an unknown version. Nothing was changed."""


class RiskFault(Fault):
    """The engine's home folder is damaged (a snapshot or model file that does not read back)."""
