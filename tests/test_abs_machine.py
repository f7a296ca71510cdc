"""A hypothesis state machine over two ABS deals: purchases, settlements and collections, defaults, servicer
reports, note transfers, time and payment dates.

After every step: cash is conserved (the custodian's token in total, each SPV's account against the deal's
books); each receivable is in at most one pool and held by that pool's SPV; every refusal changed nothing;
every waterfall paid exactly what was available, in order, with no junior fen paid while a senior amount due
went unpaid; and the triggers that fired are exactly those an independent day-by-day model says held, on the
day it says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from abs_ledger import BANK, CORE_A, CORE_B, INV1, INV2, INV3, ORIGINATOR, REGULATOR, SPV, SPV2, TYPES, AbsLedger
from liangcao.apps.abs.common import AbsCode

TERMS: dict[str, Any] = {
    "breach_days": 4,
    "default_days": 6,
    "servicer_grace_days": 10,
    "required_bps": 5_000,
    "default_rate_max_bps": 2_000,
    "due_within_days": 2,
    "obligor_limit_bps": 6_000,
}
ORGS = [f"org{i}" for i in range(1, len(TYPES) + 1)]


@dataclass
class Model:
    """What the deal's trigger rules say, computed day by day from the facts (independent of the contract)."""

    deal: str
    spv: str
    revolving_end: int
    last_eval: int
    last_report: int
    required: int
    assets: dict[str, tuple[int, int]] = field(default_factory=dict)  # voucher -> (face, maturity day)
    defaulted: set[str] = field(default_factory=set)
    purchased: int = 0
    defaulted_face: int = 0
    run_start: int | None = None
    status: str = "revolving"
    fired: dict[str, int] = field(default_factory=dict)

    def fire(self, kind: str, day: int) -> None:
        event(f"fired {kind}")
        self.fired[kind] = day
        if kind == "servicer_default":
            self.status = "accelerated"
        elif self.status == "revolving":
            self.status = "amortising"
        self.run_start = None

    def evaluate(self, now: int, settled: set[str]) -> None:
        if now <= self.last_eval:
            return
        pending: list[tuple[int, str]] = []
        new = sorted(
            (mat + TERMS["default_days"], vid)
            for vid, (_, mat) in self.assets.items()
            if vid not in self.defaulted and vid not in settled and mat + TERMS["default_days"] <= now
        )
        for day, vid in new:
            self.defaulted.add(vid)
            self.defaulted_face += self.assets[vid][0]
            over = self.defaulted_face * 10_000 > TERMS["default_rate_max_bps"] * self.purchased
            if over and "default_rate" not in self.fired and not any(k == "default_rate" for _, k in pending):
                pending.append((day, "default_rate"))
        if "servicer_default" not in self.fired and now > self.last_report + TERMS["servicer_grace_days"]:
            pending.append((self.last_report + TERMS["servicer_grace_days"] + 1, "servicer_default"))
        for d in range(self.last_eval + 1, now + 1):
            if self.status == "revolving" and d >= self.revolving_end:
                self.status = "amortising"
                self.run_start = None
            for day, kind in sorted(pending):
                if day == d:
                    self.fire(kind, d)
            if self.status != "revolving":
                continue
            performing = sum(face for face, mat in self.assets.values() if mat > d)
            if performing < self.required:
                self.run_start = d if self.run_start is None else self.run_start
                if d - self.run_start + 1 >= TERMS["breach_days"] and "pool_balance" not in self.fired:
                    self.fire("pool_balance", d)
            else:
                self.run_start = None
        self.last_eval = now


class AbsMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.led = AbsLedger()
        self.models: list[Model] = []
        self.vouchers: list[tuple[str, str, int, int]] = []  # (id, obligor, face, maturity day)
        self.settled: set[str] = set()
        dates = {"payment_dates": [self.led.date(8 * i) for i in range(1, 11)], "revolving_end": self.led.date(30)}
        for spv in (SPV, SPV2):
            deal = self.led.launched(spv, **TERMS, **dates)
            d = self.led.deal(deal)
            self.models.append(
                Model(
                    deal=deal,
                    spv=spv,
                    revolving_end=d["revolving_end_day"],
                    last_eval=self.led.today,
                    last_report=self.led.today,
                    required=1_000_000 * TERMS["required_bps"] // 10_000,
                )
            )
            # the initial pool: 600,000 fen, above the required 500,000 until the first receivable is due
            for obligor, face, days in ((CORE_A, 200_000, 10), (CORE_B, 250_000, 20), (CORE_A, 150_000, 35)):
                self.new_receivable(obligor, face, days)
                self.purchase(len(self.models) - 1, [len(self.vouchers) - 1])
            assert len(self.models[-1].assets) == 3
        self.total = self.token_total()

    def token_total(self) -> int:
        return sum(self.led.balance(org) for org in ORGS)

    def run(self, contract: str, method: str, args: dict[str, Any], *who: str, actor: str | None = None) -> Any:
        """Run a transaction; a refusal must leave every stored byte as it was."""
        before = dict(self.led.state.data)
        r = self.led.run(contract, method, args, *who, actor=actor)
        if not r.ok:
            assert r["code"] != 303, r["message"]  # never a contract error
            assert self.led.state.data == before, f"refusal {r['code']} changed the state"
        return r

    # ---- rules ----------------------------------------------------------------------------------------
    @rule(
        obligor=st.sampled_from([CORE_A, CORE_B]),
        face=st.integers(10_000, 300_000),
        days=st.integers(1, 40),
    )
    def new_receivable(self, obligor: str, face: int, days: int) -> None:
        vid = self.led.voucher(obligor, face, days)
        self.vouchers.append((vid, obligor, face, self.led.today + days))

    @rule(
        which=st.integers(0, 1),
        obligor=st.sampled_from([CORE_A, CORE_B]),
        face=st.integers(10_000, 200_000),
        days=st.integers(1, 40),
    )
    def originate_and_sell(self, which: int, obligor: str, face: int, days: int) -> None:
        self.new_receivable(obligor, face, days)
        self.purchase(which, [len(self.vouchers) - 1])

    @rule(which=st.integers(0, 1), picks=st.lists(st.integers(0, 10_000), min_size=1, max_size=2, unique=True))
    def purchase(self, which: int, picks: list[int]) -> None:
        if not self.vouchers:
            return
        m = self.models[which]
        chosen = list(dict.fromkeys(self.vouchers[p % len(self.vouchers)] for p in picks))
        args = {"deal": m.deal, "vouchers": [v[0] for v in chosen]}
        pooled = any(v[0] in mm.assets for mm in self.models for v in chosen)
        r = self.run("abs.deal", "offer", args, ORIGINATOR)
        if r.ok:
            assert not pooled
            r = self.run("abs.deal", "purchase", args, m.spv)
            if not r.ok:  # the offers stay pending until the SPV declines them
                assert self.run("abs.deal", "decline", args, m.spv).ok
        if not r.ok:
            event(f"purchase refused {r['code']}")
            return
        event("purchased")
        m.evaluate(self.led.today, self.settled)
        assert m.status == "revolving"
        for vid, _, face, mat in chosen:
            assert mat > self.led.today + TERMS["due_within_days"]
            m.assets[vid] = (face, mat)
            m.purchased += face

    @rule(pick=st.integers(0, 10_000))
    def settle(self, pick: int) -> None:
        due = [v for v in self.vouchers if v[3] <= self.led.today and v[0] not in self.settled]
        if not due:
            return
        vid, obligor, _, _ = due[pick % len(due)]
        r = self.run("scf.vouchers", "settle", {"voucher": vid}, obligor)
        if r.ok:
            self.settled.add(vid)

    @rule()
    def obligors_pay_what_is_due(self) -> None:
        for vid, obligor, _, mat in self.vouchers:
            if mat <= self.led.today and vid not in self.settled:
                assert self.run("scf.vouchers", "settle", {"voucher": vid}, obligor).ok
                self.settled.add(vid)

    @rule(which=st.integers(0, 1))
    def collect(self, which: int) -> None:
        m = self.models[which]
        r = self.run("abs.deal", "collect", {"deal": m.deal}, INV3)
        if r.ok:
            m.evaluate(self.led.today, self.settled)
            for vid in r["result"]["collected"]:
                assert vid in self.settled
                del m.assets[vid]
        else:
            assert r["code"] == AbsCode.NOTHING_TO_COLLECT

    @rule(days=st.integers(1, 10))
    def advance(self, days: int) -> None:
        self.led.advance(days=days)

    @rule(which=st.integers(0, 1), honest=st.booleans())
    def report(self, which: int, honest: bool) -> None:
        m = self.models[which]
        fig = self.led.deal(m.deal)["figures"]
        args = {"deal": m.deal, "performing": fig["performing"] + (0 if honest else 1), "delinquent": 0, "defaulted": 0}
        r = self.run("abs.deal", "report", args, ORIGINATOR)
        assert r.ok
        m.evaluate(self.led.today, self.settled)
        m.last_report = self.led.today
        if not honest:
            assert r["result"]["agrees"] is False

    @rule(days=st.integers(1, 6), honest=st.booleans())
    def days_pass_with_reports(self, days: int, honest: bool) -> None:
        """The servicer reports on both deals the day after ``days`` days."""
        self.led.advance(days=days)
        self.report(0, honest)
        self.report(1, True)

    @rule(which=st.integers(0, 1))
    def evaluate(self, which: int) -> None:
        m = self.models[which]
        assert self.run("abs.deal", "evaluate", {"deal": m.deal}, INV1).ok
        m.evaluate(self.led.today, self.settled)

    @rule(which=st.integers(0, 1))
    def regulator_declares(self, which: int) -> None:
        m = self.models[which]
        r = self.run("abs.deal", "declare_servicer_default", {"deal": m.deal}, REGULATOR)
        if r.ok:
            m.evaluate(self.led.today, self.settled)
            assert "servicer_default" not in m.fired
            m.fire("servicer_default", self.led.today)
        else:
            assert r["code"] == AbsCode.ALREADY_FIRED

    @rule(amount=st.integers(1, 500_000))
    def transfer_notes(self, amount: int) -> None:
        args = {"deal": self.models[0].deal, "tranche": "senior", "to": INV2, "amount": amount}
        r = self.run("abs.deal", "transfer", args, INV1)
        assert r.ok or r["code"] == AbsCode.NOT_ENOUGH_NOTES

    @rule(which=st.integers(0, 1), paid=st.booleans())
    def on_the_next_payment_date(self, which: int, paid: bool) -> None:
        """Time runs to the deal's next payment date (obligors paying on time, or not), then the waterfall."""
        d = self.led.deal(self.models[which].deal)
        if d["next_payment"] < len(d["payment_days"]):
            self.led.advance(days=max(0, d["payment_days"][d["next_payment"]] - self.led.today))
        if paid:
            self.obligors_pay_what_is_due()
            self.collect(which)
        self.distribute(which)

    @rule(which=st.integers(0, 1))
    def distribute(self, which: int) -> None:
        m = self.models[which]
        before = {org: self.led.balance(org) for org in ORGS}
        r = self.run("abs.deal", "distribute", {"deal": m.deal}, m.spv)
        if not r.ok:
            assert r["code"] == AbsCode.NOT_PAYMENT_DATE
            return
        m.evaluate(self.led.today, self.settled)
        receipt = r["result"]
        event(f"waterfall {receipt['status']}")
        event(f"waterfall number {receipt['number']}")
        steps = receipt["steps"]
        assert receipt["status"] == m.status
        assert sum(s["paid"] for s in steps) == receipt["available"] == receipt["paid_out"] + receipt["retained"]
        unpaid_senior = False
        for s in steps:
            assert not (unpaid_senior and s["paid"] > 0), f"junior step {s['step']} paid while a senior was short"
            if s["due"] is not None:
                assert 0 <= s["paid"] <= s["due"] and s["short"] == s["due"] - s["paid"]
                unpaid_senior = unpaid_senior or s["short"] > 0
            if "payees" in s:
                assert sum(s["payees"].values()) == s["paid"]
        after = {org: self.led.balance(org) for org in ORGS}
        assert before[m.spv] - after[m.spv] == receipt["paid_out"]
        received: dict[str, int] = {}
        for s in steps:
            for org, fen in s.get("payees", {}).items():
                received[org] = received.get(org, 0) + fen
        for org in ORGS:
            if org != m.spv:
                assert after[org] - before[org] == received.get(org, 0)
        order = [s["step"] for s in steps if not s["step"].startswith("fee:")]
        if m.status == "accelerated":
            assert order[:2] == ["senior_interest", "senior_principal"]
        elif m.status == "revolving":
            assert order == ["senior_interest", "mezzanine_interest", "purchases", "subordinated"]
        else:
            assert order[2:4] == ["senior_principal", "mezzanine_principal"]
        d = self.led.deal(m.deal)
        m.required = sum(t["outstanding"] for t in d["tranches"]) * TERMS["required_bps"] // 10_000

    # ---- invariants -------------------------------------------------------------------------------------
    @invariant()
    def cash_is_conserved(self) -> None:
        if not hasattr(self, "led"):
            return
        assert self.token_total() == self.total
        for m in self.models:
            d = self.led.deal(m.deal)
            settled = sum(face for vid, (face, _) in m.assets.items() if vid in self.settled)
            kept = sum(d["unclaimed"].values())  # shares of removed organisations, held for them
            assert self.led.balance(m.spv) == d["purchase_cash"] + d["collections"] + kept + settled
            assert d["subscribed"] + d["collected"] == (
                d["purchased_price"] + d["distributed"] + d["purchase_cash"] + d["collections"] + d["missing"]
            )
            assert d["missing"] == 0 and not any(t["kind"] == "cash_shortfall" for t in d["triggers"])

    @invariant()
    def each_receivable_in_at_most_one_pool(self) -> None:
        if not hasattr(self, "led"):
            return
        seen: dict[str, str] = {}
        for m in self.models:
            pool = {a["id"] for a in self.led.query("abs.deal", "pool", {"deal": m.deal})["assets"]}
            assert pool == set(m.assets)
            for vid in pool:
                assert vid not in seen, f"{vid} is in two pools"
                seen[vid] = m.deal
                v = self.led.query("scf.vouchers", "voucher", {"voucher": vid})
                assert v["holder"] == m.spv and v["pool"] == f"abs:{m.deal}"  # locked in the deal's pool
                assert self.led.get(f"abs.deal/r/{vid}") == m.deal

    @invariant()
    def triggers_fire_exactly_when_their_condition_holds(self) -> None:
        if not hasattr(self, "led"):
            return
        for m in self.models:
            d = self.led.deal(m.deal)
            assert {t["kind"]: t["day"] for t in d["triggers"]} == m.fired
            assert d["status"] == m.status
            assert d["defaulted_face"] == m.defaulted_face


AbsMachine.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestAbsMachine = AbsMachine.TestCase
__all__ = ["BANK", "INV1", "TestAbsMachine"]
