"""Real-time features of a payment, from bounded state per shopper, device, IP prefix, account and merchant.

Theory of operation
-------------------
:meth:`FeatureState.observe` reads the state as it was *before* the payment (so a payment never explains
itself), computes the features, then adds the payment to the state. Features are plain numbers named in
:data:`FEATURES` (the rules read them by name); counts stay raw (a rule says ``device_n_1m >= 5``), and
:func:`model_input` is the one fixed transformation the model sees (log of counts and amounts, category
one-hot), so a recorded feature dict reproduces the model's input exactly.

Every table is an :class:`~liangcao.risk.windows.LruTable` with its ``*_max`` from ``risk.limits``; per-entity
sets (a shopper's devices, payees, places; a device's shoppers) are small dicts evicting their oldest entry.
"""

from __future__ import annotations

import math
from array import array
from typing import TypeVar, cast

import msgspec

from liangcao.risk import limits
from liangcao.risk.types import Features, Payment
from liangcao.risk.windows import LruTable, Windows

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
TZ_OFFSET_MS = 8 * HOUR_MS  # time of day is China Standard Time (UTC+8)
CELL_E6 = 100_000  # a place is a cell of 0.1 degree (about 11 km)
_CELLS = 10_000  # cells per row: one integer names a cell (tuples would be objects the collector tracks)


def _cell(lat_e6: int, lon_e6: int) -> int:
    return (lat_e6 // CELL_E6 + 1000) * _CELLS + (lon_e6 // CELL_E6 + 2000)


def _cell_corner(cell: int) -> tuple[int, int]:
    return (cell // _CELLS - 1000) * CELL_E6, (cell % _CELLS - 2000) * CELL_E6


#: Categories the model knows by name; any other category is ``cat_other``.
CATEGORIES = ("digital", "gift_card", "electronics", "apparel", "grocery", "food", "travel", "home", "beauty")

FEATURES: tuple[str, ...] = (
    "amount_fen",
    "amount_z",  # log amount against the shopper's own history (0 below 3 payments)
    "amount_over_max",  # amount / the shopper's largest so far (0 without history)
    "shopper_hist_n",
    "shopper_age_h",
    "shopper_n_1m",
    "shopper_n_1h",
    "shopper_n_1d",
    "shopper_amt_1h",
    "shopper_amt_1d",
    "shopper_refunds",
    "device_n_1m",
    "device_n_1h",
    "device_n_1d",
    "device_shoppers_1d",
    "ip_n_1m",
    "ip_n_1h",
    "ip_n_1d",
    "ip_shoppers_1d",
    "account_n_1m",
    "account_n_1h",
    "account_n_1d",
    "account_shoppers_1d",
    "merchant_n_1h",
    "merchant_n_1d",
    "merchant_refund_rate_1d",
    "merchant_chargeback_rate_1d",
    "new_device",
    "new_payee",
    "new_account",
    "distance_km",
    "no_location",
    "hour",
    "hour_unusual",  # share of the shopper's payments NOT within an hour of this one (0 below 5 payments)
    "coupon",
    "insured_shipping",
)
#: Features given to the model as log(1 + x): counts, amounts and distances have long tails.
LOG_FEATURES = frozenset(
    name
    for name in FEATURES
    if name.endswith(("_1m", "_1h", "_1d", "_n", "_fen", "_km", "_h", "_refunds")) and "rate" not in name
)
#: What rules may name: the features, and the payment's category (a string).
RULE_FIELDS = frozenset((*FEATURES, "category"))


KT = TypeVar("KT")


class Shopper(msgspec.Struct, gc=False):
    """A shopper's habits and windows. ``gc=False``: no cycles through it, and the collector need not walk
    hundreds of thousands of them (its dicts of strings and numbers are untracked by CPython as well)."""

    n: int = 0
    first_ms: int = -1
    log_mean: float = 0.0
    log_m2: float = 0.0
    amt_max: int = 0
    devices: dict[str, int] = msgspec.field(default_factory=dict)
    payees: dict[str, int] = msgspec.field(default_factory=dict)
    accounts: dict[str, int] = msgspec.field(default_factory=dict)
    places: dict[int, int] = msgspec.field(default_factory=dict)  # cell number -> last seen
    hours: array[int] = msgspec.field(default_factory=lambda: array("q", bytes(8 * 24)))
    refunds: int = 0
    win: Windows = msgspec.field(default_factory=Windows.with_amounts)


class Key(msgspec.Struct, gc=False):
    """A device, an IP prefix or an account: its windows and the shoppers recently seen on it."""

    win: Windows = msgspec.field(default_factory=Windows)
    shoppers: dict[str, int] = msgspec.field(default_factory=dict)


class Merchant(msgspec.Struct, gc=False):
    win: Windows = msgspec.field(default_factory=Windows)
    refunds: Windows = msgspec.field(default_factory=Windows)
    chargebacks: Windows = msgspec.field(default_factory=Windows)


def _remember(d: dict[KT, int], key: KT, value: int, size_max: int) -> bool:
    """Set ``d[key] = value`` (most recent last), evicting the oldest entry if full; True if key was new."""
    fresh = d.pop(key, None) is None
    if fresh and len(d) >= size_max:
        del d[next(iter(d))]
    d[key] = value
    return fresh


def _recent(d: dict[str, int], since_ms: int) -> int:
    """Entries seen since ``since_ms``: the dict is in order of last sight, so the old ones are in front."""
    while d:
        first = next(iter(d))
        if d[first] >= since_ms:
            break
        del d[first]
    return len(d)


def ip_prefix(ip: str) -> str:
    """The /24 of an IPv4 address or the /48 of an IPv6 one: fraud rotates addresses within a prefix."""
    if ":" in ip:
        return ":".join(ip.split(":")[:3]) + "::/48"
    head, _, _ = ip.rpartition(".")
    return (head or ip) + ".0/24"


def _km(lat1: int, lon1: int, lat2: int, lon2: int) -> float:
    # Equirectangular: exact enough below a few hundred km, and monotone beyond, which is all a feature needs.
    p1 = lat1 * 1e-6 * math.pi / 180
    p2 = lat2 * 1e-6 * math.pi / 180
    x = (lon2 - lon1) * 1e-6 * math.pi / 180 * math.cos((p1 + p2) / 2)
    y = p2 - p1
    return 6371.0 * math.sqrt(x * x + y * y)


class FeatureState:
    """All the state features are computed from; picklable (the engine's snapshots)."""

    def __init__(self) -> None:
        self.shoppers: LruTable[str, Shopper] = LruTable(limits.shoppers_max, Shopper)
        self.devices: LruTable[str, Key] = LruTable(limits.devices_max, Key)
        self.ips: LruTable[str, Key] = LruTable(limits.ip_prefixes_max, Key)
        self.accounts: LruTable[str, Key] = LruTable(limits.accounts_max, Key)
        self.merchants: LruTable[str, Merchant] = LruTable(limits.merchants_max, Merchant)

    def observe(self, p: Payment, now: int) -> Features:
        """The features of ``p`` at ``now`` (from the state before it), then ``p`` added to the state."""
        sh, _ = self.shoppers.touch(p.shopper)
        dev, _ = self.devices.touch(p.device)
        ipk, _ = self.ips.touch(ip_prefix(p.ip))
        acc, _ = self.accounts.touch(p.account)
        mer, _ = self.merchants.touch(p.merchant)
        amount = p.amount_fen
        day_ago = now - DAY_MS
        log_amt = math.log(amount)

        n = sh.n
        if n >= 3:
            var = sh.log_m2 / (n - 1)
            amount_z = (log_amt - sh.log_mean) / math.sqrt(var + 0.05)
        else:
            amount_z = 0.0
        s1m, s1h, s1d, _, a1h, a1d = sh.win.read_add(now, amount)
        d1m, d1h, d1d, _, _, _ = dev.win.read_add(now)
        i1m, i1h, i1d, _, _, _ = ipk.win.read_add(now)
        c1m, c1h, c1d, _, _, _ = acc.win.read_add(now)
        _, m1h, m1d, _, _, _ = mer.win.read_add(now)
        refunds_1d = mer.refunds.counts(now)[2]
        chargebacks_1d = mer.chargebacks.counts(now)[2]

        new_device = n > 0 and p.device not in sh.devices
        new_account = n > 0 and p.account not in sh.accounts
        new_payee = p.is_new_payee if p.is_new_payee is not None else (n > 0 and p.merchant not in sh.payees)
        lat, lon = p.lat_e6, p.lon_e6
        if lat is not None and lon is not None and sh.places:
            distance = min(_km(lat, lon, *_cell_corner(c)) for c in sh.places)
            no_location = 0.0
        else:
            distance = 0.0
            no_location = 1.0
        local = (now + TZ_OFFSET_MS) % DAY_MS
        hour = local // HOUR_MS
        if n >= 5:
            hs = sh.hours
            near = hs[hour] + hs[(hour - 1) % 24] + hs[(hour + 1) % 24]
            hour_unusual = 1.0 - near / n
        else:
            hour_unusual = 0.0

        f: Features = {
            "amount_fen": float(amount),
            "amount_z": amount_z,
            "amount_over_max": amount / sh.amt_max if sh.amt_max else 0.0,
            "shopper_hist_n": float(n),
            "shopper_age_h": (now - sh.first_ms) / HOUR_MS if n else 0.0,
            "shopper_n_1m": float(s1m),
            "shopper_n_1h": float(s1h),
            "shopper_n_1d": float(s1d),
            "shopper_amt_1h": float(a1h),
            "shopper_amt_1d": float(a1d),
            "shopper_refunds": float(sh.refunds),
            "device_n_1m": float(d1m),
            "device_n_1h": float(d1h),
            "device_n_1d": float(d1d),
            "device_shoppers_1d": float(_recent(dev.shoppers, day_ago)),
            "ip_n_1m": float(i1m),
            "ip_n_1h": float(i1h),
            "ip_n_1d": float(i1d),
            "ip_shoppers_1d": float(_recent(ipk.shoppers, day_ago)),
            "account_n_1m": float(c1m),
            "account_n_1h": float(c1h),
            "account_n_1d": float(c1d),
            "account_shoppers_1d": float(_recent(acc.shoppers, day_ago)),
            "merchant_n_1h": float(m1h),
            "merchant_n_1d": float(m1d),
            # Smoothed (10 payments' worth of prior at zero) so one refund at a new shop is not a 100 % rate.
            "merchant_refund_rate_1d": refunds_1d / (m1d + 10),
            "merchant_chargeback_rate_1d": chargebacks_1d / (m1d + 10),
            "new_device": 1.0 if new_device else 0.0,
            "new_payee": 1.0 if new_payee else 0.0,
            "new_account": 1.0 if new_account else 0.0,
            "distance_km": distance,
            "no_location": no_location,
            "hour": float(hour),
            "hour_unusual": hour_unusual,
            "coupon": 1.0 if p.coupon else 0.0,
            "insured_shipping": 1.0 if p.insured_shipping else 0.0,
            "category": p.category,  # a string: rules compare it, the model one-hots it
        }

        # Now the payment joins the state.
        if n == 0:
            sh.first_ms = now
        n += 1
        sh.n = n
        delta = log_amt - sh.log_mean
        sh.log_mean += delta / n
        sh.log_m2 += delta * (log_amt - sh.log_mean)
        if amount > sh.amt_max:
            sh.amt_max = amount
        _remember(sh.devices, p.device, now, limits.devices_per_shopper_max)
        _remember(sh.accounts, p.account, now, limits.devices_per_shopper_max)
        _remember(sh.payees, p.merchant, now, limits.payees_per_shopper_max)
        if lat is not None and lon is not None:
            _remember(sh.places, _cell(lat, lon), now, limits.places_per_shopper_max)
        sh.hours[hour] += 1
        _remember(dev.shoppers, p.shopper, now, limits.shoppers_per_key_max)
        _remember(ipk.shoppers, p.shopper, now, limits.shoppers_per_key_max)
        _remember(acc.shoppers, p.shopper, now, limits.shoppers_per_key_max)
        return f

    def refund(self, shopper: str, merchant: str, now: int) -> None:
        """A refund (or a return claim paid out) at ``merchant`` for ``shopper``."""
        sh = self.shoppers.get(shopper)
        if sh is not None:
            sh.refunds += 1
        mer = self.merchants.get(merchant)
        if mer is not None:
            mer.refunds.add(now)

    def chargeback(self, merchant: str, now: int) -> None:
        mer = self.merchants.get(merchant)
        if mer is not None:
            mer.chargebacks.add(now)

    def sizes(self) -> dict[str, int]:
        return {
            "shoppers": len(self.shoppers),
            "devices": len(self.devices),
            "ip_prefixes": len(self.ips),
            "accounts": len(self.accounts),
            "merchants": len(self.merchants),
        }


_LOG = tuple(name for name in FEATURES if name in LOG_FEATURES)
_PLAIN = tuple(name for name in FEATURES if name not in LOG_FEATURES and name != "hour")
_CAT_KEYS = tuple("cat_" + c for c in (*CATEGORIES, "other"))
_CATS = {c: "cat_" + c for c in CATEGORIES}
_HOUR_SIN = tuple(math.sin(2 * math.pi * h / 24) for h in range(24))
_HOUR_COS = tuple(math.cos(2 * math.pi * h / 24) for h in range(24))
#: The model's input, always these keys in this order (dense: a missing key and a zero would differ).
MODEL_KEYS: tuple[str, ...] = (
    *_LOG,
    *_PLAIN,
    "hour_sin",
    "hour_cos",
    *_CAT_KEYS,
    "new_device_x_amount_z",
    "new_device_x_distance",
)


def model_input(f: Features) -> dict[str, float]:
    """The model's input from recorded features: fixed and pure, so a decision reproduces from its record."""
    log1p = math.log1p
    g = cast(dict[str, float], f)  # every value but the category is a float (observe makes them so)
    x: dict[str, float] = {}
    for name in _LOG:
        v = g[name]
        x[name] = log1p(v) if v > 0 else 0.0
    for name in _PLAIN:
        x[name] = g[name]
    h = int(float(f["hour"])) % 24
    x["hour_sin"] = _HOUR_SIN[h]
    x["hour_cos"] = _HOUR_COS[h]
    for key in _CAT_KEYS:
        x[key] = 0.0
    x[_CATS.get(str(f["category"]), "cat_other")] = 1.0
    # Interactions a linear model cannot form by itself: the classic takeover shape.
    new_device = float(f["new_device"])
    x["new_device_x_amount_z"] = new_device * max(float(f["amount_z"]), 0.0)
    x["new_device_x_distance"] = new_device * log1p(float(f["distance_km"]))
    return x
