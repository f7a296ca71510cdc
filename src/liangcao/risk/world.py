"""A seeded synthetic world of shoppers, merchants and fraud, to learn and measure in.

Theory of operation
-------------------
Shoppers have habits: a home city, one or two devices and accounts, an internet provider's prefix, hours
they shop at, a typical amount, favourite merchants. Merchants have a category and a popularity (Zipf).
Day one's fraud is **account takeover** (a new device, far away, a large amount, often at night, at a new
payee) and **card testing** (bursts of small payments from one device trying many stolen cards). At
midnight the mix changes, as on a Double-11 sale day: many honest shoppers now buy at night with coupons,
and the fraud becomes **coupon farming** (薅羊毛: farms of fresh accounts sharing a few devices and address
prefixes, each account paying once or twice with a coupon), **fake return claims** (a ring of accounts
buying with return-shipping insurance at colluding shops that then report refunds), and a quieter account
takeover through proxies in the victim's own city.

Labels arrive late, as in the field: card tests are confirmed within the hour, takeovers come back as
chargebacks hours later, farmed coupons are found by a review, fake claims by the insurer. Refunds are
events of their own. Everything is drawn from one ``random.Random(seed)``: the same seed, the same world.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate

from liangcao.risk.types import Payment

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
#: 2026-11-10 00:00 China Standard Time: day two of the world is the Double-11 sale.
START_MS = 1_794_240_000_000 - 8 * HOUR_MS

CITIES = (
    ("shanghai", 31_230_000, 121_470_000),
    ("beijing", 39_900_000, 116_400_000),
    ("shenzhen", 22_540_000, 114_060_000),
    ("guangzhou", 23_130_000, 113_260_000),
    ("hangzhou", 30_270_000, 120_150_000),
    ("chengdu", 30_660_000, 104_060_000),
    ("wuhan", 30_590_000, 114_300_000),
    ("xian", 34_340_000, 108_940_000),
)
MERCHANT_CATEGORIES = (
    ("food", 0.22),
    ("grocery", 0.18),
    ("apparel", 0.16),
    ("home", 0.1),
    ("beauty", 0.08),
    ("electronics", 0.08),
    ("digital", 0.08),
    ("gift_card", 0.04),
    ("travel", 0.06),
)


@dataclass(frozen=True)
class WorldConfig:
    seed: int = 7
    shoppers: int = 4000
    merchants: int = 240
    payments_per_day: int = 30_000
    days: int = 2  # the shift is at the first midnight
    fraud_share_day1: float = 0.02
    fraud_share_after: float = 0.025


@dataclass
class Shopper:
    id: str
    city: int
    lat: int
    lon: int
    devices: list[str]
    accounts: list[str]
    prefix: str
    peak_hour: float
    mu: float  # log of the typical amount in fen
    favourites: list[int]
    weight: float


@dataclass(order=True)
class Event:
    """One thing that happens at ``time_ms``: a payment, a label or a refund (in time order)."""

    time_ms: int
    seq: int
    kind: str = field(compare=False)  # "pay" | "label" | "refund"
    payment: Payment | None = field(compare=False, default=None)
    payment_id: str = field(compare=False, default="")
    fraud: bool = field(compare=False, default=False)
    pattern: str = field(compare=False, default="")  # "" for honest payments
    source: str = field(compare=False, default="confirmed")


class World:
    """The events of the world, in time order (``events``), and the time of the shift (``shift_ms``)."""

    def __init__(self, config: WorldConfig | None = None) -> None:
        self.config = c = config or WorldConfig()
        self.rng = random.Random(c.seed)
        self.shift_ms = START_MS + DAY_MS
        self.events: list[Event] = []
        self._seq = 0
        self._n = 0
        self.merchants = self._merchants()
        self._merchant_cum = list(accumulate(m[2] for m in self.merchants))
        self.shoppers = [self._shopper(i) for i in range(c.shoppers)]
        self._shopper_cum = list(accumulate(s.weight for s in self.shoppers))
        self._by_cat = {cat: [i for i, m in enumerate(self.merchants) if m[1] == cat] for cat, _ in MERCHANT_CATEGORIES}
        # Colluding shops are small ones (the tail): their honest traffic does not hide the claims.
        self.colluding = [i for i, (_, cat, _) in enumerate(self.merchants) if cat in ("apparel", "home")][-6:]
        self.ring = self.rng.sample(range(len(self.shoppers)), max(10, c.shoppers // 40))
        for day in range(c.days):
            self._day(day)
        self.events.sort()

    # ------------------------------------------------------------------------------------------- the people

    def _merchants(self) -> list[tuple[str, str, float]]:
        rng = self.rng
        cats = [c for c, _ in MERCHANT_CATEGORIES]
        weights = [w for _, w in MERCHANT_CATEGORIES]
        return [(f"m{i}", rng.choices(cats, weights)[0], 1.0 / (i + 1) ** 0.8) for i in range(self.config.merchants)]

    def _shopper(self, i: int) -> Shopper:
        rng = self.rng
        city = rng.randrange(len(CITIES))
        _, lat, lon = CITIES[city]
        return Shopper(
            id=f"s{i}",
            city=city,
            lat=lat + rng.randint(-80_000, 80_000),
            lon=lon + rng.randint(-80_000, 80_000),
            devices=[f"dev-s{i}-{k}" for k in range(1 if rng.random() < 0.8 else 2)],
            accounts=[f"acct-s{i}-{k}" for k in range(1 if rng.random() < 0.7 else 2)],
            prefix=f"{100 + city}.{rng.randrange(256)}.{rng.randrange(256)}",
            peak_hour=rng.choice([9, 12, 13, 19, 20, 21, 22]) + rng.uniform(-1, 1),
            mu=rng.gauss(math.log(8000), 0.7),
            favourites=rng.choices(range(len(self.merchants)), cum_weights=self._merchant_cum, k=6),
            weight=rng.lognormvariate(0, 0.8),
        )

    # ----------------------------------------------------------------------------------------------- events

    def _pid(self) -> str:
        self._n += 1
        return f"w{self.config.seed}-{self._n}"

    def _add(self, e: Event) -> None:
        self._seq += 1
        e.seq = self._seq
        self.events.append(e)

    def _pay(self, t: int, pattern: str, **kw: object) -> Payment:
        p = Payment(payment_id=self._pid(), time_ms=t, **kw)  # type: ignore[arg-type]
        self._add(Event(t, 0, "pay", payment=p, payment_id=p.payment_id, fraud=bool(pattern), pattern=pattern))
        return p

    def _label(self, p: Payment, delay_ms: int, source: str) -> None:
        self._add(Event(p.time_ms + delay_ms, 0, "label", payment_id=p.payment_id, fraud=True, source=source))

    def _refund(self, p: Payment, delay_ms: int) -> None:
        self._add(Event(p.time_ms + delay_ms, 0, "refund", payment_id=p.payment_id))

    def _day(self, day: int) -> None:
        c = self.config
        start = START_MS + day * DAY_MS
        sale = day >= 1
        share = c.fraud_share_after if sale else c.fraud_share_day1
        honest = int(c.payments_per_day * (1 - share))
        for _ in range(honest):
            self._honest(start, sale)
        budget = c.payments_per_day - honest
        mix: list[tuple[float, Callable[[], int]]]
        if not sale:
            mix = [(0.5, lambda: self._takeover(start, quiet=False)), (0.5, lambda: self._card_test(start))]
        else:
            mix = [
                (0.4, lambda: self._farm(start)),
                (0.4, lambda: self._fake_claim(start)),
                (0.2, lambda: self._takeover(start, quiet=True)),
            ]
        for part, make in mix:
            left = int(budget * part)
            while left > 0:
                left -= make()

    def _hour(self, s: Shopper, sale: bool) -> float:
        rng = self.rng
        if sale and rng.random() < 0.3:
            return rng.uniform(0, 2)  # the midnight sale
        return (rng.gauss(s.peak_hour, 2.5)) % 24

    def _honest(self, start: int, sale: bool) -> None:
        rng = self.rng
        s = rng.choices(self.shoppers, cum_weights=self._shopper_cum)[0]
        t = start + int(self._hour(s, sale) * HOUR_MS)
        m = rng.choice(s.favourites) if rng.random() < 0.85 else rng.randrange(len(self.merchants))
        mid, cat, _ = self.merchants[m]
        lat, lon = s.lat, s.lon
        if rng.random() < 0.03:  # travelling
            _, lat, lon = CITIES[rng.randrange(len(CITIES))]
        device = s.devices[0] if rng.random() < 0.8 else rng.choice(s.devices)
        if rng.random() < 0.01:
            device = f"dev-{s.id}-new{rng.randrange(10**6)}"  # a new phone
        amount = max(100, int(rng.lognormvariate(s.mu, 0.5)))
        p = self._pay(
            t,
            "",
            shopper=s.id,
            device=device,
            ip=f"{s.prefix}.{rng.randrange(1, 255)}",
            account=rng.choice(s.accounts),
            merchant=mid,
            amount_fen=amount,
            category=cat,
            lat_e6=lat + rng.randint(-5000, 5000),
            lon_e6=lon + rng.randint(-5000, 5000),
            coupon=rng.random() < (0.45 if sale else 0.1),
            insured_shipping=cat == "apparel" and rng.random() < 0.3,
        )
        if rng.random() < 0.03:
            self._refund(p, rng.randint(HOUR_MS, 20 * HOUR_MS))

    def _fraud_prefix(self) -> str:
        return f"{200 + self.rng.randrange(20)}.{self.rng.randrange(256)}.{self.rng.randrange(256)}"

    def _takeover(self, start: int, quiet: bool) -> int:
        """A taken-over account: a few payments from the fraudster's device within minutes."""
        rng = self.rng
        s = rng.choice(self.shoppers)
        t = start + rng.randrange(DAY_MS - HOUR_MS)
        device = f"ato-dev-{rng.randrange(10**9)}"
        prefix = f"{100 + s.city}.{rng.randrange(256)}.{rng.randrange(256)}" if quiet else self._fraud_prefix()
        if quiet:
            lat, lon = s.lat + rng.randint(-30_000, 30_000), s.lon + rng.randint(-30_000, 30_000)
        else:
            _, lat, lon = CITIES[(s.city + rng.randrange(1, len(CITIES))) % len(CITIES)]
        n = rng.randint(1, 3)
        for k in range(n):
            cats = self._by_cat["electronics"] + self._by_cat["gift_card"] + self._by_cat["digital"]
            m = rng.choice(cats) if rng.random() < (0.5 if quiet else 0.75) else rng.choice(s.favourites)
            mid, cat, _ = self.merchants[m]
            p = self._pay(
                t + k * rng.randint(MINUTE_MS, 8 * MINUTE_MS),
                "account_takeover",
                shopper=s.id,
                device=device,
                ip=f"{prefix}.{rng.randrange(1, 255)}",
                account=rng.choice(s.accounts),
                merchant=mid,
                amount_fen=max(100, int(math.exp(s.mu) * rng.lognormvariate(0.8 if quiet else 1.8, 0.5))),
                category=cat,
                lat_e6=lat,
                lon_e6=lon,
                coupon=quiet and rng.random() < 0.4,
            )
            self._label(p, rng.randint(HOUR_MS, 6 * HOUR_MS), "chargeback")
        return n

    def _card_test(self, start: int) -> int:
        """One device trying many stolen cards with small payments at digital shops, within minutes."""
        rng = self.rng
        t = start + rng.randrange(DAY_MS - HOUR_MS)
        device = f"ct-dev-{rng.randrange(10**9)}"
        prefix = self._fraud_prefix()
        shopper = f"ct-{rng.randrange(10**9)}"
        digital = self._by_cat["digital"] + self._by_cat["gift_card"]
        _, lat, lon = CITIES[rng.randrange(len(CITIES))]
        n = rng.randint(6, 20)
        for k in range(n):
            mid, cat, _ = self.merchants[rng.choice(digital)]
            p = self._pay(
                t + k * rng.randint(3_000, 20_000),
                "card_testing",
                shopper=shopper,
                device=device,
                ip=f"{prefix}.{rng.randrange(1, 255)}",
                account=f"stolen-{rng.randrange(10**9)}",
                merchant=mid,
                amount_fen=rng.randint(100, 1500),
                category=cat,
                lat_e6=lat,
                lon_e6=lon,
            )
            self._label(p, rng.randint(10 * MINUTE_MS, HOUR_MS), "confirmed")
        return n

    def _farm(self, start: int) -> int:
        """薅羊毛: a farm's fresh accounts on a few shared devices, each paying with a coupon once or twice."""
        rng = self.rng
        t0 = start + rng.randrange(DAY_MS - 6 * HOUR_MS)
        devices = [f"farm-dev-{rng.randrange(10**9)}" for _ in range(rng.randint(2, 3))]
        prefix = f"{100 + rng.randrange(len(CITIES))}.{rng.randrange(256)}.{rng.randrange(256)}"
        promo = self._by_cat["grocery"] + self._by_cat["food"] + self._by_cat["beauty"]
        shops = rng.sample(promo, 2)
        _, lat, lon = CITIES[rng.randrange(len(CITIES))]
        n = 0
        for _ in range(rng.randint(8, 20)):
            account = f"farm-{rng.randrange(10**9)}"
            for _ in range(1 if rng.random() < 0.7 else 2):
                mid, cat, _ = self.merchants[rng.choice(shops)]
                p = self._pay(
                    t0 + rng.randrange(6 * HOUR_MS),
                    "coupon_farming",
                    shopper=account,
                    device=rng.choice(devices),
                    ip=f"{prefix}.{rng.randrange(1, 255)}",
                    account=f"{account}-card",
                    merchant=mid,
                    amount_fen=rng.randint(2000, 6000),
                    category=cat,
                    lat_e6=lat + rng.randint(-2000, 2000),
                    lon_e6=lon + rng.randint(-2000, 2000),
                    coupon=True,
                )
                self._label(p, rng.randint(30 * MINUTE_MS, 3 * HOUR_MS), "review")
                n += 1
        return n

    def _fake_claim(self, start: int) -> int:
        """A ring member buys with return-shipping insurance at a colluding shop, then claims a return."""
        rng = self.rng
        s = self.shoppers[rng.choice(self.ring)]
        t = start + rng.randrange(DAY_MS - HOUR_MS)
        mid, cat, _ = self.merchants[rng.choice(self.colluding)]
        p = self._pay(
            t,
            "fake_return_claim",
            shopper=s.id,
            device=s.devices[0],
            ip=f"{s.prefix}.{rng.randrange(1, 255)}",
            account=s.accounts[0],
            merchant=mid,
            amount_fen=max(100, int(rng.lognormvariate(math.log(15_000), 0.4))),
            category=cat,
            lat_e6=s.lat + rng.randint(-5000, 5000),
            lon_e6=s.lon + rng.randint(-5000, 5000),
            insured_shipping=True,
        )
        self._refund(p, rng.randint(2 * HOUR_MS, 6 * HOUR_MS))
        self._label(p, rng.randint(6 * HOUR_MS, 12 * HOUR_MS), "confirmed")
        return 1
