"""Supply-chain finance: the seed story end to end, and a state machine of random (also forbidden) actions."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from liangcao import encoding
from liangcao.apps.scf.common import ScfCode, day_of, discount_fen
from liangcao.codes import Code
from liangcao.limits import split_depth_max, voucher_leaves_max
from scf_ledger import BANK, CORE, DAY_MS, REGULATOR, T1, T2, T3, WAREHOUSE, Ledger, register_invoice


def test_discount_is_integer_actual_360_half_up() -> None:
    assert discount_fen(30_000_000, 600, 90) == 450_000
    assert discount_fen(100, 600, 1) == 0  # 0.0166 fen rounds down
    assert discount_fen(10_000, 600, 360) == 600
    assert discount_fen(15, 10_000, 12) == 1  # 0.5 fen rounds half up
    assert day_of("2026-11-11") - day_of("2026-11-10") == 1


def test_double_11_story() -> None:
    led = Ledger()
    inv = register_invoice(led, T1, CORE, 120_000_000, "0001")
    led.ok("scf.tokens", "issue", {"to": BANK, "amount": 1_000_000_000}, BANK)
    led.ok("scf.tokens", "issue", {"to": CORE, "amount": 200_000_000}, BANK)
    # the factory issues 1,000,000.00 yuan to tier 1, maturing in 90 days
    vid = led.ok(
        "scf.vouchers",
        "issue",
        {"to": T1, "face": 100_000_000, "maturity": led.today_iso(90), "invoices": [inv], "settlement_bank": BANK},
        CORE,
    )["voucher"]
    led.ok("scf.vouchers", "accept", {"voucher": vid}, T1)
    # tier 1 passes 500,000.00 to tier 2, which passes 300,000.00 to tier 3
    a, _rest = led.ok("scf.vouchers", "split", {"voucher": vid, "amounts": [50_000_000]}, T1)["children"]
    led.ok("scf.vouchers", "offer", {"voucher": a, "to": T2}, T1)
    led.ok("scf.vouchers", "accept", {"voucher": a}, T2)
    b, _rest2 = led.ok("scf.vouchers", "split", {"voucher": a, "amounts": [30_000_000]}, T2)["children"]
    led.ok("scf.vouchers", "offer", {"voucher": b, "to": T3}, T2)
    led.ok("scf.vouchers", "accept", {"voucher": b}, T3)
    # tier 3 finances at the bank at 6 % a year
    led.ok("scf.vouchers", "request_financing", {"voucher": b, "bank": BANK, "rate_bps": 600}, T3)
    before = led.balance(T3)
    paid = led.ok("scf.vouchers", "accept_financing", {"voucher": b}, BANK)
    days = paid["days"]
    assert paid["discount"] == discount_fen(30_000_000, 600, days) and days in (89, 90)
    assert led.balance(T3) - before == 30_000_000 - paid["discount"]
    # never twice
    r = led.run("scf.vouchers", "request_financing", {"voucher": b, "bank": BANK, "rate_bps": 500}, BANK)
    assert r["code"] == ScfCode.ALREADY_FINANCED
    # the invoice cannot back a second voucher
    r = led.run(
        "scf.vouchers",
        "issue",
        {"to": T1, "face": 1, "maturity": led.today_iso(30), "invoices": [inv], "settlement_bank": BANK},
        CORE,
    )
    assert r["code"] == ScfCode.INVOICE_USED
    tree = led.query("scf.vouchers", "tree", {"voucher": b})
    assert tree["id"] == vid and [c["face"] for c in tree["children"]] == [50_000_000, 50_000_000]
    assert led.query("scf.vouchers", "financed_book", {"org": BANK})["total"] == 30_000_000
    assert led.query("scf.vouchers", "portfolio", {"org": T2})["total"] == 20_000_000
    assert [r["id"] for r in led.query("scf.vouchers", "maturities", {"until": led.today_iso(100)})["roots"]] == [vid]
    # not before maturity; then every leaf holder is paid exactly its face in one transaction
    assert led.run("scf.vouchers", "settle", {"voucher": vid}, CORE)["code"] == ScfCode.NOT_MATURE
    led.time_ms += 91 * DAY_MS
    held = {org: led.balance(org) for org in (T1, T2, T3, BANK, CORE)}
    payments = led.ok("scf.vouchers", "settle", {"voucher": vid}, CORE)["payments"]
    assert sorted((p["holder"], p["amount"]) for p in payments) == [
        (T1, 50_000_000),
        (T2, 20_000_000),
        (BANK, 30_000_000),
    ]
    assert led.balance(T1) - held[T1] == 50_000_000 and led.balance(T2) - held[T2] == 20_000_000
    assert led.balance(BANK) - held[BANK] == 30_000_000 and held[CORE] - led.balance(CORE) == 100_000_000
    assert led.run("scf.vouchers", "settle", {"voucher": vid}, CORE)["code"] == ScfCode.NOT_ACTIVE


@pytest.mark.parametrize(
    ("method", "args", "who", "code"),
    [
        (
            "issue",
            {"to": T1, "face": 1, "maturity": "2099-01-01", "invoices": [f"{T1}:3100-0009"], "settlement_bank": BANK},
            T1,
            Code.WRONG_ORG_TYPE,
        ),
        (
            "issue",
            {"to": T1, "face": 1, "maturity": "2099-01-01", "invoices": [f"{T1}:3100-0009"], "settlement_bank": T2},
            CORE,
            ScfCode.NOT_A_BANK,
        ),
        (
            "issue",
            {"to": T1, "face": 1, "maturity": "2000-01-01", "invoices": [f"{T1}:3100-0009"], "settlement_bank": BANK},
            CORE,
            ScfCode.BAD_DATE,
        ),
        (
            "issue",
            {"to": T1, "face": 1, "maturity": "2099-02-30", "invoices": [f"{T1}:3100-0009"], "settlement_bank": BANK},
            CORE,
            ScfCode.BAD_DATE,
        ),
        (
            "issue",
            {
                "to": T1,
                "face": 10**12,
                "maturity": "2099-01-01",
                "invoices": [f"{T1}:3100-0009"],
                "settlement_bank": BANK,
            },
            CORE,
            ScfCode.FACE_EXCEEDS_INVOICES,
        ),
        (
            "issue",
            {"to": T1, "face": 1.5, "maturity": "2099-01-01", "invoices": [f"{T1}:3100-0009"], "settlement_bank": BANK},
            CORE,
            Code.FLOAT_NOT_ALLOWED,
        ),
        (
            "issue",
            {"to": T1, "face": 1, "maturity": "2099-01-01", "invoices": [f"{T1}:3100-0404"], "settlement_bank": BANK},
            CORE,
            Code.NOT_FOUND,
        ),
    ],
)
def test_forbidden_issues(method: str, args: dict[str, Any], who: str, code: int) -> None:
    led = Ledger()
    register_invoice(led, T1, CORE, 1_000, "0009")
    before = dict(led.state.data)
    if code == Code.FLOAT_NOT_ALLOWED:
        with pytest.raises(Exception, match="float"):
            led.run("scf.vouchers", method, args, who)
        return
    assert led.run("scf.vouchers", method, args, who)["code"] == code
    assert led.state.data == before


def test_warehouse_receipts() -> None:
    led = Ledger()
    led.ok(
        "scf.receipts",
        "declare",
        {"lot": "milk-2026-11", "owner": T1, "goods": "infant formula 800g", "quantity": 1000},
        WAREHOUSE,
    )
    lot = {"warehouse": WAREHOUSE, "lot": "milk-2026-11"}
    rid = led.ok("scf.receipts", "issue", {**lot, "quantity": 600}, WAREHOUSE, T1)["receipt"]
    r = led.run("scf.receipts", "issue", {**lot, "quantity": 401}, WAREHOUSE, T1)
    assert r["code"] == ScfCode.EXCEEDS_STOCK  # never more receipts than stock
    assert led.run("scf.receipts", "issue", {**lot, "quantity": 400}, T1)["code"] == ScfCode.NOT_PARTY
    led.ok("scf.receipts", "pledge", {"receipt": rid, "bank": BANK}, T1, BANK)
    for method, args, who in [
        ("pledge", {"receipt": rid, "bank": BANK}, (T1, BANK)),
        ("transfer", {"receipt": rid, "to": T2}, (T1,)),
        ("deliver", {"receipt": rid}, (T1, WAREHOUSE)),
        ("cancel", {"receipt": rid}, (T1, WAREHOUSE)),
    ]:
        assert led.run("scf.receipts", method, args, *who)["code"] == ScfCode.PLEDGED
    assert led.run("scf.receipts", "release", {"receipt": rid}, T1)["code"] == ScfCode.NOT_PARTY
    led.ok("scf.receipts", "release", {"receipt": rid}, BANK)
    led.ok("scf.receipts", "transfer", {"receipt": rid, "to": T2}, T1)
    led.ok("scf.receipts", "deliver", {"receipt": rid}, T2, WAREHOUSE)
    assert led.query("scf.receipts", "lot", lot)["stock"] == 400
    assert led.run("scf.receipts", "transfer", {"receipt": rid, "to": T3}, T2)["code"] == ScfCode.NOT_ACTIVE


def test_commercial_bill_lifecycle_with_recourse() -> None:
    led = Ledger()
    led.ok("scf.tokens", "issue", {"to": BANK, "amount": 10**10}, BANK)
    led.ok("scf.tokens", "issue", {"to": CORE, "amount": 10**10}, BANK)
    led.ok("scf.tokens", "issue", {"to": T1, "amount": 10**10}, BANK)
    # the factory (drawer) issues a bill to tier 1, accepted by the factory itself, due in 60 days
    bill = led.ok(
        "scf.bills",
        "issue",
        {"payee": T1, "acceptor": CORE, "amount": 5_000_000, "maturity": led.today_iso(60), "settlement_bank": BANK},
        CORE,
    )["bill"]
    assert (
        led.run("scf.bills", "endorse", {"bill": bill, "to": T2}, T1, T2)["code"] == ScfCode.NOT_ACTIVE
    )  # not accepted yet
    assert led.run("scf.bills", "accept", {"bill": bill}, T1)["code"] == ScfCode.NOT_PARTY
    led.ok("scf.bills", "accept", {"bill": bill}, CORE)
    # endorsement needs both sides
    assert led.run("scf.bills", "endorse", {"bill": bill, "to": T2}, T1)["code"] == ScfCode.NOT_PARTY
    led.ok("scf.bills", "endorse", {"bill": bill, "to": T2}, T1, T2)
    # tier 2 discounts it at the bank: paid at once, the bank holds it
    before = led.balance(T2)
    paid = led.ok("scf.bills", "discount", {"bill": bill, "bank": BANK, "rate_bps": 500}, T2, BANK)
    assert led.balance(T2) - before == paid["paid"] == 5_000_000 - discount_fen(5_000_000, 500, paid["days"])
    b = led.query("scf.bills", "bill", {"bill": bill})
    assert b["holder"] == BANK and b["endorsers"] == [T1, T2]
    assert led.run("scf.bills", "present", {"bill": bill}, BANK)["code"] == ScfCode.NOT_MATURE
    led.time_ms += 61 * DAY_MS
    led.ok("scf.bills", "present", {"bill": bill}, BANK)
    led.ok("scf.bills", "dishonour", {"bill": bill}, CORE)
    # recourse: the bank claims against tier 2, which pays and then claims against tier 1, which claims the drawer
    assert led.run("scf.bills", "recourse", {"bill": bill, "against": T3}, BANK)["code"] == Code.INVALID_ARGUMENT
    led.ok("scf.bills", "recourse", {"bill": bill, "against": T2}, BANK)
    # tier 2 got only the discounted amount: it cannot pay the face yet, and the refusal changes nothing
    state = dict(led.state.data)
    assert led.run("scf.bills", "honour_recourse", {"bill": bill}, T2)["code"] == Code.INSUFFICIENT_FUNDS
    assert led.state.data == state
    led.ok("scf.tokens", "issue", {"to": T2, "amount": 1_000_000}, BANK)
    bank_before = led.balance(BANK)
    led.ok("scf.bills", "honour_recourse", {"bill": bill}, T2)
    assert led.balance(BANK) - bank_before == 5_000_000
    led.ok("scf.bills", "recourse", {"bill": bill, "against": T1}, T2)
    led.ok("scf.bills", "honour_recourse", {"bill": bill}, T1)
    led.ok("scf.bills", "recourse", {"bill": bill, "against": CORE}, T1)
    led.ok("scf.bills", "honour_recourse", {"bill": bill}, CORE)
    assert led.query("scf.bills", "bill", {"bill": bill})["status"] == "paid"


def test_bill_paid_at_maturity_and_pledge_rules() -> None:
    led = Ledger()
    led.ok("scf.tokens", "issue", {"to": CORE, "amount": 10**10}, BANK)
    bill = led.ok(
        "scf.bills",
        "issue",
        {"payee": T1, "acceptor": CORE, "amount": 700, "maturity": led.today_iso(10), "settlement_bank": BANK},
        CORE,
    )["bill"]
    led.ok("scf.bills", "accept", {"bill": bill}, CORE)
    led.ok("scf.bills", "pledge", {"bill": bill, "bank": BANK}, T1, BANK)
    assert led.run("scf.bills", "endorse", {"bill": bill, "to": T2}, T1, T2)["code"] == ScfCode.PLEDGED
    assert led.run("scf.bills", "pledge", {"bill": bill, "bank": BANK}, T1, BANK)["code"] == ScfCode.PLEDGED
    led.ok("scf.bills", "release", {"bill": bill}, BANK)
    led.time_ms += 11 * DAY_MS
    assert led.run("scf.bills", "endorse", {"bill": bill, "to": T2}, T1, T2)["code"] == ScfCode.MATURED
    led.ok("scf.bills", "present", {"bill": bill}, T1)
    before = led.balance(T1)
    led.ok("scf.bills", "pay", {"bill": bill}, CORE)
    assert led.balance(T1) - before == 700
    assert led.run("scf.bills", "pay", {"bill": bill}, CORE)["code"] == ScfCode.NOT_ACTIVE


def test_internal_methods_cannot_be_called_directly() -> None:
    led = Ledger()
    led.ok("scf.tokens", "issue", {"to": CORE, "amount": 100}, BANK)
    r = led.run("scf.tokens", "pay", {"bank": BANK, "payer": CORE, "payee": T1, "amount": 100}, T1)
    assert r["code"] == Code.FORBIDDEN
    r = led.run("scf.invoices", "bind", {"keys": ["1-1"], "seller": T1, "buyer": CORE, "instrument": "x"}, T1)
    assert r["code"] == Code.FORBIDDEN


# Usually the fitting choice, sometimes any: hypothesis favours small integers, so a plain integers(0, 4) test
# would take the "any" branch far more often than one time in five.
MOSTLY = st.sampled_from([True, True, False, True, True])


def movable(v: dict[str, Any]) -> bool:
    return v["status"] == "active" and v["offer_to"] is None and v["financing"] is None and not v["frozen"]


class ScfMachine(RuleBasedStateMachine):
    """Random issue, split, offer, accept, finance, settle, overdue, freeze and token moves by random parties."""

    def __init__(self) -> None:
        super().__init__()
        self.led = Ledger()
        self.led.ok("scf.tokens", "issue", {"to": BANK, "amount": 10**12}, BANK)
        self.led.ok("scf.tokens", "issue", {"to": CORE, "amount": 10**12}, BANK)
        self.invoices: list[str] = []
        self.financed: list[str] = []
        self.pool = self.led.ok(
            "scf.factoring",
            "open",
            {"seller": T1, "factor": BANK, "advance_rate_bps": 9_000, "credit_line": 10**9},
            T1,
            BANK,
        )["pool"]

    def vouchers(self) -> list[dict[str, Any]]:
        return [encoding.decode(v) for k, v in self.led.state.data.items() if k.startswith("scf.vouchers/v/")]  # type: ignore[misc]

    def attempt(self, contract: str, method: str, args: dict[str, Any], who: str) -> dict[str, Any]:
        return self.attempt_many(contract, method, args, [who])

    def attempt_many(self, contract: str, method: str, args: dict[str, Any], who: list[str]) -> dict[str, Any]:
        before = dict(self.led.state.data)
        r = self.led.run(contract, method, args, *who)
        if r["code"] != 0:
            assert r["message"]
            assert self.led.state.data == before  # a refusal changes nothing
        elif method == "accept_financing":
            self.financed.append(args["voucher"])
        elif contract == "scf.factoring" and method in ("draw", "withdraw"):
            pool = self.led.query("scf.factoring", "pool", {"pool": self.pool})
            assert pool["advanced"] <= pool["capacity"]  # a draw or a withdrawal never leaves the pool uncovered
        return r

    def record(self, prefix: str) -> list[dict[str, Any]]:
        return [encoding.decode(v) for k, v in sorted(self.led.state.data.items()) if k.startswith(prefix)]  # type: ignore[misc]

    parties = st.sampled_from([CORE, T1, T2, T3, BANK, REGULATOR])

    @rule(seller=st.sampled_from([T1, T2, T3]), amount=st.integers(1, 10**9))
    def register(self, seller: str, amount: int) -> None:
        self.invoices.append(register_invoice(self.led, seller, CORE, amount, f"{len(self.invoices) + 100}"))

    @precondition(lambda self: self.invoices)
    @rule(
        data=st.data(),
        who=st.sampled_from([CORE, CORE, CORE, T1, BANK]),
        share=st.integers(1, 110),
        days=st.integers(1, 60),
    )
    def issue(self, data: st.DataObject, who: str, share: int, days: int) -> None:
        key = data.draw(st.sampled_from(self.invoices))
        inv: Any = encoding.decode(self.led.state.data[f"scf.invoices/inv/{key}"])
        face = max(1, inv["amount"] * share // 100)
        self.attempt(
            "scf.vouchers",
            "issue",
            {
                "to": inv["seller"],
                "face": face,
                "maturity": self.led.today_iso(days),
                "invoices": [key],
                "settlement_bank": BANK,
            },
            who,
        )

    def pick(self, data: st.DataObject, fit: Any = None) -> tuple[dict[str, Any], str] | None:
        """A voucher and an actor: usually one the action fits and a party it needs, sometimes anything."""
        vs = sorted(self.vouchers(), key=lambda v: v["id"])
        fitting = [v for v in vs if fit(v)] if fit is not None else []
        if fitting and data.draw(MOSTLY):
            vs = fitting
        if not vs:
            return None
        v = data.draw(st.sampled_from(vs))
        likely = [v["holder"], v["offer_to"] or v["holder"], (v["financing"] or {}).get("bank", BANK), v["issuer"]]
        who = data.draw(st.sampled_from([*likely, *likely, REGULATOR, CORE, T1, T2, T3, BANK]))
        return v, who

    @rule(
        data=st.data(),
        method=st.sampled_from(
            [
                "accept",
                "accept",
                "reject",
                "accept_financing",
                "accept_financing",
                "settle",
                "mark_overdue",
                "freeze",
                "unfreeze",
                "cancel_financing",
            ]
        ),
    )
    def simple(self, data: st.DataObject, method: str) -> None:
        fits = {
            "accept": lambda v: v["offer_to"] is not None,
            "reject": lambda v: v["offer_to"] is not None,
            "accept_financing": lambda v: v["financing"] is not None,
            "cancel_financing": lambda v: v["financing"] is not None,
            "settle": lambda v: v["root"] == v["id"],
            "mark_overdue": lambda v: v["root"] == v["id"],
            "unfreeze": lambda v: v["frozen"],
        }
        if (picked := self.pick(data, fits.get(method))) is not None:
            v, who = picked
            self.attempt("scf.vouchers", method, {"voucher": v["id"]}, who)

    @rule(data=st.data())
    def accept_offer(self, data: st.DataObject) -> None:
        if (picked := self.pick(data, lambda v: v["offer_to"] is not None)) is not None:
            v, who = picked
            self.attempt("scf.vouchers", "accept", {"voucher": v["id"]}, v["offer_to"] or who)

    @rule(data=st.data())
    def finance(self, data: st.DataObject) -> None:
        if (picked := self.pick(data, lambda v: v["financing"] is not None)) is not None:
            v, who = picked
            self.attempt(
                "scf.vouchers", "accept_financing", {"voucher": v["id"]}, (v["financing"] or {}).get("bank", who)
            )

    @rule(data=st.data())
    def settle_root(self, data: st.DataObject) -> None:
        if (picked := self.pick(data, lambda v: v["root"] == v["id"])) is not None:
            v, _ = picked
            if data.draw(st.booleans()):
                self.led.time_ms = max(self.led.time_ms, (v["maturity_day"] + 1) * DAY_MS)
            self.attempt("scf.vouchers", "settle", {"voucher": v["id"]}, v["issuer"])

    @rule(data=st.data(), to=parties)
    def offer(self, data: st.DataObject, to: str) -> None:
        if (picked := self.pick(data, movable)) is not None:
            v, who = picked
            who = v["holder"] if data.draw(MOSTLY) else who
            self.attempt("scf.vouchers", "offer", {"voucher": v["id"], "to": to}, who)

    @rule(data=st.data(), shares=st.lists(st.integers(1, 60), min_size=1, max_size=3))
    def split(self, data: st.DataObject, shares: list[int]) -> None:
        if (picked := self.pick(data, movable)) is not None:
            v, who = picked
            who = v["holder"] if data.draw(MOSTLY) else who
            amounts = [max(1, v["face"] * s // 100) for s in shares]
            self.attempt("scf.vouchers", "split", {"voucher": v["id"], "amounts": amounts}, who)

    @rule(data=st.data(), bank=st.sampled_from([BANK, BANK, BANK, T1]), rate=st.integers(0, 2000))
    def request_financing(self, data: st.DataObject, bank: str, rate: int) -> None:
        if (picked := self.pick(data, movable)) is not None:
            v, who = picked
            who = v["holder"] if data.draw(MOSTLY) else who
            self.attempt("scf.vouchers", "request_financing", {"voucher": v["id"], "bank": bank, "rate_bps": rate}, who)

    @rule(who=st.sampled_from([WAREHOUSE, WAREHOUSE, T1]), owner=st.sampled_from([T1, T2]), qty=st.integers(1, 500))
    def declare(self, who: str, owner: str, qty: int) -> None:
        self.attempt(
            "scf.receipts", "declare", {"lot": f"lot-{owner}", "owner": owner, "goods": "rice", "quantity": qty}, who
        )

    @rule(owner=st.sampled_from([T1, T2]), qty=st.integers(1, 400), cosign=st.booleans())
    def issue_receipt(self, owner: str, qty: int, cosign: bool) -> None:
        self.attempt_many(
            "scf.receipts",
            "issue",
            {"warehouse": WAREHOUSE, "lot": f"lot-{owner}", "quantity": qty},
            [WAREHOUSE, owner] if cosign else [WAREHOUSE],
        )

    @rule(data=st.data(), method=st.sampled_from(["pledge", "release", "transfer", "deliver", "cancel"]))
    def receipt_action(self, data: st.DataObject, method: str) -> None:
        rs = sorted(k.rsplit("/", 1)[1] for k in self.led.state.data if k.startswith("scf.receipts/r/"))
        if not rs:
            return
        rid = data.draw(st.sampled_from(rs))
        r: Any = encoding.decode(self.led.state.data[f"scf.receipts/r/{rid}"])
        signers = data.draw(
            st.sampled_from([[r["holder"]], [r["holder"], BANK], [r["holder"], WAREHOUSE], [BANK], [T3]])
        )
        args: dict[str, Any] = {"receipt": rid}
        if method == "pledge":
            args["bank"] = BANK
        if method == "transfer":
            args["to"] = data.draw(st.sampled_from([T1, T2, T3]))
        self.attempt_many("scf.receipts", method, args, signers)

    # ---- factoring pool (seller T1, factor BANK) ---------------------------------------------------------
    @rule(data=st.data())
    def pool_assign(self, data: st.DataObject) -> None:
        if (picked := self.pick(data, lambda v: movable(v) and v["pool"] is None and v["holder"] == T1)) is not None:
            v, who = picked
            who = T1 if data.draw(MOSTLY) else who
            self.attempt("scf.factoring", "assign", {"pool": self.pool, "vouchers": [v["id"]]}, who)

    @precondition(lambda self: self.invoices)
    @rule(data=st.data(), days=st.integers(-1, 60), who=st.sampled_from([CORE, CORE, CORE, T1, T2]))
    def confirm_invoice(self, data: st.DataObject, days: int, who: str) -> None:
        """The buyer (usually) confirms an invoice and its due date; anyone else is refused."""
        key = data.draw(st.sampled_from(self.invoices))
        self.attempt("scf.invoices", "confirm", {"key": key, "due": self.led.today_iso(days)}, who)

    @precondition(lambda self: self.invoices)
    @rule(data=st.data())
    def pool_assign_invoice(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(self.invoices))
        self.attempt("scf.factoring", "assign", {"pool": self.pool, "invoices": [key]}, T1)

    @rule(
        method=st.sampled_from(["draw", "draw", "repay"]),
        who=st.sampled_from([T1, T1, T1, BANK]),
        share=st.integers(1, 110),
    )
    def pool_money(self, method: str, who: str, share: int) -> None:
        """Amounts around the headroom (draw) or the advance (repay), so both sides of each limit are tried."""
        pool = self.led.query("scf.factoring", "pool", {"pool": self.pool})
        amount = max(1, (pool["headroom"] if method == "draw" else pool["advanced"]) * share // 100)
        self.attempt("scf.factoring", method, {"pool": self.pool, "amount": amount}, who)

    @rule(data=st.data(), method=st.sampled_from(["withdraw", "collect_invoice", "sweep"]))
    def pool_out(self, data: st.DataObject, method: str) -> None:
        assets = self.record(f"scf.factoring/a/{self.pool}/")
        if method == "sweep":
            self.attempt("scf.factoring", "sweep", {"pool": self.pool}, data.draw(self.parties))
        elif assets:
            a = data.draw(st.sampled_from(assets))
            if method == "withdraw":
                self.attempt("scf.factoring", "withdraw", {"pool": self.pool, "voucher": a["id"]}, T1)
            else:
                payer = a.get("buyer") or data.draw(self.parties)
                self.attempt("scf.factoring", "collect_invoice", {"pool": self.pool, "invoice": a["id"]}, payer)

    # ---- commercial bills ---------------------------------------------------------------------------------
    @rule(
        drawer=st.sampled_from([CORE, CORE, T1, T2]),
        payee=st.sampled_from([T1, T2, T3]),
        acceptor=st.sampled_from([CORE, CORE, T1]),
        amount=st.integers(1, 10**8),
        days=st.integers(-1, 40),
    )
    def bill_issue(self, drawer: str, payee: str, acceptor: str, amount: int, days: int) -> None:
        args = {
            "payee": payee,
            "acceptor": acceptor,
            "amount": amount,
            "maturity": self.led.today_iso(days),
            "settlement_bank": BANK,
        }
        self.attempt("scf.bills", "issue", args, drawer)

    @rule(payee=st.sampled_from([T1, T2, T3]), amount=st.integers(1, 10**8), days=st.integers(1, 40))
    def bill_accepted(self, payee: str, amount: int, days: int) -> None:
        """A legitimate start (issued by the factory and accepted), so deeper bill actions get tried often."""
        args = {"payee": payee, "acceptor": CORE, "amount": amount, "maturity": self.led.today_iso(days)}
        bill = self.attempt("scf.bills", "issue", {**args, "settlement_bank": BANK}, CORE)["result"]["bill"]
        self.attempt("scf.bills", "accept", {"bill": bill}, CORE)

    @rule(seller=st.sampled_from([T1, T1, T2, T3]), face=st.integers(100, 10**8), days=st.integers(5, 60))
    def voucher_held(self, seller: str, face: int, days: int) -> None:
        """A legitimate start: an invoice, a voucher on it, accepted by the supplier."""
        key = register_invoice(self.led, seller, CORE, face, f"{len(self.invoices) + 100}")
        self.invoices.append(key)
        args = {"to": seller, "face": face, "maturity": self.led.today_iso(days), "invoices": [key]}
        vid = self.attempt("scf.vouchers", "issue", {**args, "settlement_bank": BANK}, CORE)["result"]["voucher"]
        self.attempt("scf.vouchers", "accept", {"voucher": vid}, seller)

    @rule(
        data=st.data(),
        method=st.sampled_from(
            [
                "accept",
                "endorse",
                "endorse",
                "discount",
                "pledge",
                "release",
                "present",
                "pay",
                "dishonour",
                "recourse",
                "honour_recourse",
            ]
        ),
    )
    def bill_action(self, data: st.DataObject, method: str) -> None:
        fits = {
            "accept": ("issued",),
            "pay": ("presented",),
            "dishonour": ("presented",),
            "recourse": ("dishonoured",),
            "honour_recourse": ("dishonoured",),
        }
        bills = self.record("scf.bills/b/")
        fitting = [b for b in bills if b["status"] in fits.get(method, ("accepted",))]
        if fitting and data.draw(MOSTLY):
            bills = fitting
        if not bills:
            return
        b = data.draw(st.sampled_from(bills))
        args: dict[str, Any] = {"bill": b["id"]}
        likely = {
            "accept": [b["acceptor"]],
            "endorse": [b["holder"], data.draw(st.sampled_from([T1, T2, T3]))],
            "discount": [b["holder"], BANK],
            "pledge": [b["holder"], BANK],
            "release": [BANK],
            "present": [b["holder"]],
            "pay": [b["acceptor"]],
            "dishonour": [b["acceptor"]],
            "recourse": [b["holder"]],
            "honour_recourse": [b["recourse_against"] or b["drawer"]],
        }[method]
        if method == "endorse":
            args["to"] = likely[1]
        if method in ("discount", "pledge"):
            args["bank"] = BANK
        if method == "discount":
            args["rate_bps"] = data.draw(st.integers(0, 3000))
        if method == "recourse":
            args["against"] = data.draw(st.sampled_from([b["drawer"], *b["endorsers"], T3]))
        who = likely if data.draw(MOSTLY) else [data.draw(self.parties)]
        self.attempt_many("scf.bills", method, args, who)

    @rule(who=parties, to=parties, amount=st.integers(1, 10**10))
    def token_transfer(self, who: str, to: str, amount: int) -> None:
        self.attempt("scf.tokens", "transfer", {"bank": BANK, "to": to, "amount": amount}, who)

    @rule(days=st.integers(1, 20))
    def time_passes(self, days: int) -> None:
        self.led.time_ms += days * DAY_MS

    @invariant()
    def leaves_sum_to_root_face(self) -> None:
        vs = {v["id"]: v for v in self.vouchers()}
        for root in (v for v in vs.values() if v["root"] == v["id"]):
            leaves = [v for v in vs.values() if v["root"] == root["id"] and v["status"] != "retired"]
            assert sum(v["face"] for v in leaves) == root["face"]

    @invariant()
    def receipts_never_exceed_stock(self) -> None:
        data = self.led.state.data
        open_by_lot: dict[str, int] = {}
        for k, v in data.items():
            if k.startswith("scf.receipts/r/"):
                r: Any = encoding.decode(v)
                if r["status"] == "open":
                    at = f"{r['warehouse']}/{r['lot']}"
                    open_by_lot[at] = open_by_lot.get(at, 0) + r["quantity"]
                    assert r["pledged_to"] in (None, BANK)
        for k, v in data.items():
            if k.startswith("scf.receipts/lot/"):
                lot: Any = encoding.decode(v)
                assert k == f"scf.receipts/lot/{lot['warehouse']}/{lot['lot']}"
                assert lot["reserved"] == open_by_lot.get(f"{lot['warehouse']}/{lot['lot']}", 0) <= lot["stock"]

    @invariant()
    def indexes_match_records(self) -> None:
        import msgspec

        from liangcao.apps.scf.vouchers import Voucher, Vouchers

        vs = self.vouchers()
        typed = [msgspec.convert(v, Voucher) for v in vs]  # every stored voucher reads as its record type
        expected = {f"scf.vouchers/{k}": value for v in typed for k, value in Vouchers.index_entries(v).items()}
        data = self.led.state.data
        indexed = {k: encoding.decode(raw) for k, raw in data.items() if k.startswith("scf.vouchers/i")}
        assert indexed == expected
        totals: dict[str, int] = {}
        for v in typed:
            for k, amount in Vouchers.totals(v).items():
                totals[f"scf.vouchers/{k}"] = totals.get(f"scf.vouchers/{k}", 0) + amount
        kept = {k: encoding.decode(raw) for k, raw in data.items() if k.startswith("scf.vouchers/t/")}
        assert kept == {k: n for k, n in totals.items() if n}
        for root in (v for v in vs if v["root"] == v["id"]):  # the root knows what is paid: its settled leaves
            settled = [v for v in vs if v["root"] == root["id"] and v["status"] == "settled"]
            assert root["paid"] == sum(v["face"] for v in settled)
        for v in vs:  # no part is deeper or has more leaves than the bounds allow
            assert v["id"].count(".") <= split_depth_max and 1 <= v["budget"] <= voucher_leaves_max

    @invariant()
    def pool_assets_in_one_pool(self) -> None:
        pool = self.led.query("scf.factoring", "pool", {"pool": self.pool})
        assert 0 <= pool["advanced"] <= pool["credit_line"]
        assert pool["assets_in"] == len(pool["assets"])
        in_pool = {a["id"] for a in pool["assets"]}
        for v in self.vouchers():
            if v["id"] in in_pool:
                assert v["pool"] == self.pool and v["holder"] == BANK and v["financed_by"] is None
            elif v["status"] in ("active", "overdue"):
                assert v["pool"] is None  # only a settled voucher keeps the mark of the pool it left
        for a in pool["assets"]:
            if a["kind"] == "invoice":
                inv: Any = encoding.decode(self.led.state.data[f"scf.invoices/inv/{a['id']}"])
                assert inv["used_by"] == self.pool

    @invariant()
    def bills_consistent(self) -> None:
        for b in self.record("scf.bills/b/"):
            assert b["status"] in ("issued", "accepted", "presented", "paid", "dishonoured")
            assert b["pledged_to"] is None or (b["pledged_to"] == BANK and b["status"] == "accepted")
            if b["recourse_against"] is not None:
                assert b["status"] == "dishonoured" and b["recourse_against"] in [b["drawer"], *b["endorsers"]]
            assert b["discounted_by"] in (None, BANK)

    @invariant()
    def tokens_conserved(self) -> None:
        token = self.led.query("scf.tokens", "supply", {"bank": BANK})
        balances = sum(
            int(encoding.decode(v)) for k, v in self.led.state.data.items() if k.startswith(f"scf.tokens/bal/{BANK}/")
        )  # type: ignore[call-overload]
        assert token["outstanding"] == balances

    @invariant()
    def financed_once_and_invoices_once(self) -> None:
        assert len(self.financed) == len(set(self.financed))
        for vid in self.financed:  # no ancestor or descendant of a financed voucher was financed too
            assert not any(o != vid and (o.startswith(vid + ".") or vid.startswith(o + ".")) for o in self.financed)
        roots = [v for v in self.vouchers() if v["root"] == v["id"]]
        used = [k for r in roots for k in r["invoices"]]
        assert len(used) == len(set(used))
        for r in roots:
            for k in r["invoices"]:  # an invoice bound to a voucher is never also in a pool
                assert encoding.decode(self.led.state.data[f"scf.invoices/inv/{k}"])["used_by"] == r["id"]  # type: ignore[index]


ScfMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=100, deadline=None)
TestScf = ScfMachine.TestCase
