"""Attacks on the credit service by a hostile shopper, merchant or integrator (a review of issue 21): each
test is a way in that once worked, or one that must keep failing. Fast: the embedded engine, no fsync."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st

from liangcao.credit import loans as L
from liangcao.credit import plans as P
from liangcao.credit import service as S
from liangcao.credit.errors import CreditCode, CreditError, installment_amount_fen_max
from liangcao.credit.http import create_app, router
from liangcao.credit.identity import operator_token
from liangcao.credit.service import CreditService, ManualDays, account_id
from liangcao.payments import Engine, Transfer
from liangcao.procs import free_port

Env = tuple[CreditService, Engine, ManualDays]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    clock = ManualDays(20_000)
    with Engine(tmp_path / "pay", fsync=False) as engine:
        s = CreditService(engine, tmp_path / "credit.db", clock=clock, fsync=False)
        yield s, engine, clock
        s.close()


def refused(code: CreditCode, fn: object, *args: object, **kw: object) -> None:
    with pytest.raises(CreditError) as e:
        fn(*args, **kw)  # type: ignore[operator]
    assert e.value.code == code, e.value.message


def balance(engine: Engine, acct: int) -> int:
    a = engine.lookup_accounts([acct])[0]
    return a.credits_posted - a.debits_posted


# ------------------------------------------------------------------------------------- frozen lines


def test_a_frozen_line_stays_held_after_another_plan_is_repaid(env: Env) -> None:
    """Repaying (or being refunded on) a plan that is not overdue credits the line; while another plan is
    overdue, that credit must not become spendable through the core (the gateway's own hold path)."""
    s, engine, clock = env
    s.checkout_installments("A1", "ann", "shop", 30_000, 3)
    clock.advance(10)
    s.checkout_installments("A2", "ann", "shop", 60_000, 6)
    clock.advance(25)  # A1's first period is 5 days overdue, A2 is not due yet
    assert s.run_day().lines_frozen == 1
    s.deposit("ann", 70_000, "d1")
    s.prepay("A2")
    view = s.line("ann")
    assert view.frozen and view.available_fen == 0
    (result,) = engine.create_transfers(
        [Transfer(777, s.line_account("ann"), account_id("merchant", "shop"), 1, ledger=156, code=1)]
    )
    assert result != 0  # the core refuses any debit of a frozen line
    s.checkout_installments("B1", "bea", "shop", 60_000, 3)
    s.checkout_installments("B2", "bea", "shop", 30_000, 3)
    clock.advance(35)
    s.run_day()
    s.refund("B2", 30_000)  # B2's period 1 was overdue too: both overdue, refund B2 fully
    s.refund("B1", 10_000)  # B1 still overdue: the refund's credit to the line stays held
    assert s.line("bea").frozen and s.line("bea").available_fen == 0
    s.deposit("ann", 30_000, "d2")
    s.prepay("A1")
    view = s.line("ann")
    assert not view.frozen and view.held_fen == 0 and view.available_fen == view.line_fen
    s.check()


# -------------------------------------------------------------------------------------- idempotency


def test_the_same_request_id_with_other_parameters_is_refused(env: Env) -> None:
    s, engine, _ = env
    s.checkout_installments("o1", "bob", "shop", 30_000, 3)
    s.deposit("bob", 100_000, "d1")
    s.repay("o1", 100, "r1")
    assert s.repay("o1", 100, "r1").owed() == s.plan("o1").owed()  # a true retry: answered again
    refused(CreditCode.REQUEST_CONFLICT, s.repay, "o1", 5_000, "r1")
    s.refund("o1", 100, "f1")
    refused(CreditCode.REQUEST_CONFLICT, s.refund, "o1", 9_000, "f1")
    refused(CreditCode.REQUEST_CONFLICT, s.deposit, "bob", 5, "d1")
    assert s.plan("o1").refunded == 100 and balance(engine, account_id("wallet", "bob")) == 100_000 - 100
    s.check()


def test_ids_with_slashes_do_not_share_a_request(env: Env) -> None:
    """Order ids may hold '/': plan 'p/x' with request 'y' and plan 'p' with request 'x/y' are two requests."""
    s, _, _ = env
    s.checkout_installments("p/x", "cat", "shop", 30_000, 3)
    s.checkout_installments("p", "cat", "shop", 30_000, 3)
    s.deposit("cat", 100_000, "x")
    s.repay("p/x", 300, "y")
    after = s.repay("p", 300, "x/y")
    assert after.plan_id == "p" and s.plan("p").owed() == s.plan("p/x").owed() == 30_750 - 300
    s.deposit("d", 100, "a/b")
    assert s.deposit("d/a", 100, "b") == 100  # another shopper's deposit, not a replay
    s.check()


def test_a_retried_draw_answers_the_loan_and_pays_once(env: Env) -> None:
    s, engine, clock = env
    seed_sales(s, "tea", clock())
    offer = s.apply_loan("tea")
    assert offer.approved
    loan = s.draw_loan(offer.offer_id, 100_000)
    assert s.draw_loan(offer.offer_id, 100_000) == loan
    refused(CreditCode.OFFER_EXPIRED, s.draw_loan, offer.offer_id, 200_000)
    assert balance(engine, account_id("loan-capital")) == -100_000


# ----------------------------------------------------------------------------------- merchant loans


def seed_sales(s: CreditService, merchant: str, today: int, days: int = 200) -> None:
    rows = [(f"h{d}", today - days + d, L.SaleKind.SALE, 100_000) for d in range(days)]
    s.import_sales(merchant, rows)


def test_a_merchant_with_a_64_character_id_can_draw_its_offer(env: Env) -> None:
    s, _, clock = env
    m = "m" * 64
    seed_sales(s, m, clock())
    offer = s.apply_loan(m)
    assert offer.approved and s.offer(offer.offer_id) == offer
    loan = s.draw_loan(offer.offer_id, 100_000)
    assert s.loan(loan.loan_id).outstanding == 100_000
    s.repay_loan(loan.loan_id, 50_000, "early-1")
    assert s.merchant_loans(m)[0].outstanding == 50_000
    refused(CreditCode.BAD_ID, s.offer, "x" * 200)


def test_scoring_reads_the_newest_sales_when_the_history_is_capped(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over ``history_transfers_max`` transfers, the score must come from the newest ones, not the oldest."""
    s, _, clock = env
    today = clock()
    old = [(f"old{d}", today - 700 + d, L.SaleKind.SALE, 1_000) for d in range(40)]
    new = [(f"new{d}", today - 89 + d, L.SaleKind.SALE, 500_000) for d in range(89)]
    s.import_sales("big", old + new)
    monkeypatch.setattr(S, "history_transfers_max", 89)
    monkeypatch.setattr(S, "_PAGE", 30)
    f = s.apply_loan("big").features
    assert f.gmv_90 == 89 * 500_000 and f.transfers_read == 89


def test_the_settlement_share_below_the_interest_due_pays_interest_only(env: Env) -> None:
    s, _, clock = env
    seed_sales(s, "tea", clock())
    offer = s.apply_loan("tea")
    loan = s.draw_loan(offer.offer_id, 1_000_000)
    clock.advance(10)
    interest = s.loan(loan.loan_id).interest
    assert interest > 0
    d = s.on_settlement("tea", "st-1", 10 * (interest - 1))  # 10 % of it is one fen short of the interest
    assert (d.interest_fen, d.principal_fen) == (interest - 1, 0)
    after = s.loan(loan.loan_id)
    assert after.interest == 1 and after.outstanding == 1_000_000
    assert s.on_settlement("tea", "st-2", 9).deducted_fen == 0  # 10 % of 9 fen rounds to nothing
    refused(CreditCode.OVERPAY, s.repay_loan, loan.loan_id, after.owed + 1)
    s.repay_loan(loan.loan_id, after.owed)
    refused(CreditCode.LOAN_CLOSED, s.repay_loan, loan.loan_id, 1)
    assert s.on_settlement("tea", "st-3", 1_000).deducted_fen == 0


def test_more_refunds_never_raise_the_score() -> None:
    base = [(20_000 - d, L.SaleKind.SALE, 100_000 + 7_000 * (d % 5)) for d in range(1, 300)]
    last = 1001
    for k in range(0, 60, 5):
        refunds = [(20_000 - d, L.SaleKind.REFUND, 50_000) for d in range(1, k + 1)]
        f = L.features(base + refunds, 20_000)
        score = L.score(f)
        assert score <= last and L.score(L.features(list(reversed(base + refunds)), 20_000)) == score
        last = score


# ---------------------------------------------------------------------------------- line farming


def test_tiny_or_same_day_plans_do_not_grow_the_line(env: Env) -> None:
    """A shopper (with a friendly merchant) must not inflate the line by buying 1 fen on installments and
    repaying it at once, nor by a plan a refund closed: only a plan that ran to a due day counts."""
    s, _, clock = env
    s.deposit("dan", 100_000, "d")
    for i in range(5):
        s.checkout_installments(f"f{i}", "dan", "shop", 1, 3)
        s.repay(f"f{i}", 1)
    s.checkout_installments("big", "dan", "shop", 30_000, 3)
    s.prepay("big")  # paid off the day it was bought: no history yet
    s.checkout_installments("r", "dan", "shop", 30_000, 3)
    clock.advance(30)
    s.run_day()  # period 1 collected on its due day
    s.refund("r", 20_000)  # the rest refunded: closed, but not a plan repaid on time
    assert s.plan("r").state is P.PlanState.PAID_OFF
    assert s.line("dan").plans_on_time == 0 and s.line("dan").line_fen == 200_000
    s.checkout_installments("ok", "dan", "shop", 30_000, 3)
    for _ in range(3):
        clock.advance(30)
        s.run_day()
    assert s.line("dan").plans_on_time == 1 and s.line("dan").line_fen == 250_000
    s.check()


# ------------------------------------------------------------------------------ concurrency, limits


def test_two_threads_cannot_overdraw_a_line(env: Env) -> None:
    s, engine, _ = env
    s.line_account("eve")
    results: list[object] = []
    start = threading.Barrier(8)

    def buy(i: int) -> None:
        start.wait()
        try:
            results.append(s.checkout_installments(f"e{i}", "eve", "shop", 60_000, 3).plan_id)
        except CreditError as exc:
            results.append(exc.code)

    threads = [threading.Thread(target=buy, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(1 for r in results if isinstance(r, str)) == 3  # 3 x 600.00 of a 2,000.00 line
    assert sorted(r for r in results if not isinstance(r, str)) == [CreditCode.LINE_EXCEEDED] * 5
    assert balance(engine, account_id("line", "eve")) == 20_000
    s.check()


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, installment_amount_fen_max), st.sampled_from([3, 6, 12]), st.sampled_from(["shopper", "merchant"])
)
def test_every_schedule_sums_to_principal_and_fee(amount: int, periods: int, payer: str) -> None:
    plan = P.make_plan("q", "s", "m", amount, periods, S.fee_payer_of(payer), P.DEFAULT_FEE_TABLE, 1)
    assert sum(p.principal for p in plan.schedule) == amount
    shopper_fee = plan.fee if payer == "shopper" else 0
    assert sum(p.fee for p in plan.schedule) == shopper_fee
    assert all(p.principal >= 0 and p.fee >= 0 for p in plan.schedule)
    assert max(p.principal for p in plan.schedule) - min(p.principal for p in plan.schedule) < periods


def test_penalty_arithmetic_over_ten_years() -> None:
    plan = P.make_plan("o", "s", "m", installment_amount_fen_max, 12, P.FeePayer.SHOPPER, P.DEFAULT_FEE_TABLE, 0)
    P.accrue(plan, 3_650, 5)
    for p in plan.schedule:
        days = 3_650 - p.due_day
        assert p.penalty == days * (p.unpaid * 5 // 10_000)  # per day, rounded down: never above the rate
    before = plan.owed()
    P.accrue(plan, 3_650, 5)  # accruing again on the same day adds nothing
    assert plan.owed() == before
    P.allocate_repayment(plan, before)
    assert plan.owed() == 0


# ------------------------------------------------------------------------------------------- HTTP


@contextlib.contextmanager
def serve(app: FastAPI, headers: dict[str, str] | None = None) -> Iterator[httpx.Client]:
    """A real uvicorn server on 127.0.0.1 in a thread, stopped on exit; the client sends ``headers``."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.01)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10, headers=headers) as c:
            yield c
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def as_operator(s: CreditService) -> dict[str, str]:
    """The service's operator token (in the folder of its records): these tests are about money and input,
    not about who calls (that is tests/test_credit_identity.py)."""
    return {"Authorization": f"Bearer {operator_token(s.path.parent)}"}


def mounted(s: CreditService) -> FastAPI:
    """The router as the checkout gateway mounts it: no app-level error handlers."""
    app = FastAPI()
    app.include_router(router(s))
    return app


def test_http_refuses_oversize_unknown_fields_and_bad_days_with_stable_codes(env: Env) -> None:
    with serve(create_app(env[0]), as_operator(env[0])) as client:
        http_refusals(client)


def http_refusals(client: httpx.Client) -> None:
    r = client.post("/v1/credit/quote", content=b" " * 70_000)
    assert r.status_code == 413 and r.json()["name"] == "TOO_LARGE"
    r = client.post("/v1/credit/quote", json={"amount_fen": 100, "periods": 3, "amount_x": 1})
    assert r.status_code == 400 and r.json()["name"] == "INVALID_ARGUMENT"
    r = client.post("/v1/credit/merchants/shop/sales", json={"sale_id": "s1", "amount_fen": 100, "day": 2**40})
    assert r.status_code == 400 and r.json()["code"] == CreditCode.BAD_DAY
    r = client.post("/v1/credit/merchants/shop/sales", json={"sale_id": "s1", "amount_fen": 100, "day": -1})
    assert r.json()["code"] == CreditCode.BAD_DAY
    for body in (b"{bad", b"[]", b"null", b'{"amount_fen": 1e400, "periods": 3}', b'{"amount_fen": 10e0}'):
        r = client.post("/v1/credit/quote", content=body)
        assert 400 <= r.status_code < 500, (body, r.text)


def test_http_two_purchases_at_once_cannot_overdraw(env: Env) -> None:
    s, engine, _ = env
    codes: list[int] = []
    with serve(mounted(s), as_operator(s)) as c:
        start = threading.Barrier(2)

        def buy(i: int) -> None:
            body = {"order_id": f"h{i}", "shopper": "hal", "merchant": "shop", "amount_fen": 150_000, "periods": 3}
            start.wait()
            codes.append(c.post("/v1/credit/installments", json=body).status_code)

        threads = [threading.Thread(target=buy, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(codes) == [200, 400]
    assert balance(engine, account_id("line", "hal")) == 50_000


def test_a_mounted_router_answers_a_fault_as_json_not_500(env: Env) -> None:
    s, _, _ = env
    with serve(mounted(s), as_operator(s)) as c:
        s.close()  # the store is gone (a disk failing): a fault, answered as unavailable
        r = c.post("/v1/credit/quote", json={"amount_fen": 100, "periods": 3})
    assert r.status_code == 503 and r.json()["name"] == "NOT_READY"


def test_open_plan_replayed_with_another_funding_transfer_is_refused(env: Env) -> None:
    """A gateway that debits the line twice for one order must hear so: the second funding transfer would
    otherwise vanish into an existing plan, the line debited with no plan to repay it."""
    s, engine, _ = env
    from liangcao.payments import Account

    shop = 6_002
    engine.create_accounts([Account(shop, ledger=156, code=2)])
    s.register_merchant("gw", shop)
    line = s.line_account("gus")
    assert engine.create_transfers(
        [Transfer(11, line, shop, 30_000, ledger=156, code=1), Transfer(12, line, shop, 30_000, ledger=156, code=1)]
    ) == [0, 0]
    plan = s.open_plan("gw-1", "gus", "gw", 30_000, 3, funding_transfer_id=11)
    assert s.open_plan("gw-1", "gus", "gw", 30_000, 3, funding_transfer_id=11) == plan
    refused(CreditCode.FUNDING_MISMATCH, s.open_plan, "gw-1", "gus", "gw", 30_000, 3, funding_transfer_id=12)
    s.open_plan("gw-2", "gus", "gw", 30_000, 3, funding_transfer_id=12)  # the second payment opens its own plan
    s.check()


def test_http_fuzz_never_answers_500(env: Env) -> None:
    """Seeded junk (wrong types, huge and negative numbers, odd ids, unknown fields) at every route of the
    router as the gateway mounts it: refusals are JSON with a code, never a 500."""
    import random

    s, _, clock = env
    seed_sales(s, "fz", clock())
    offer = s.apply_loan("fz").offer_id
    s.checkout_installments("fo", "fs", "fz", 30_000, 3)
    rnd = random.Random(21)
    values: list[object] = [
        0,
        -1,
        1,
        3,
        12,
        2**31,
        2**63,
        2**64 + 5,
        10**40,
        1.5,
        -0.0,
        True,
        None,
        "",
        "x" * 65,
        "a b",
        "é",
        "fo",
        "fs",
        "fz",
        offer,
        [],
        {},
        {"a": 1},
        "%00",
        "../..",
    ]
    fields = [
        "order_id",
        "shopper",
        "merchant",
        "amount_fen",
        "periods",
        "fee_payer",
        "funding_transfer_id",
        "request_id",
        "refund_id",
        "deposit_id",
        "receivables_fen",
        "offer_id",
        "share_bp",
        "sale_id",
        "kind",
        "day",
        "settlement_id",
        "zzz",
    ]
    posts = [
        "/v1/credit/quote",
        "/v1/credit/installments",
        "/v1/credit/plans",
        "/v1/credit/plans/fo/repay",
        "/v1/credit/refunds",
        "/v1/credit/shoppers/fs/deposit",
        "/v1/credit/merchants/fz/apply",
        "/v1/credit/merchants/fz/sales",
        "/v1/credit/merchants/fz/settlements",
        "/v1/credit/loans",
        f"/v1/credit/loans/L-{offer}/repay",
        "/v1/credit/run-day",
    ]
    gets = [
        "/v1/credit/plans/{}",
        "/v1/credit/shoppers/{}",
        "/v1/credit/shoppers/{}/statement",
        "/v1/credit/shoppers/{}/line-account",
        "/v1/credit/merchants/{}/loans",
        "/v1/credit/offers/{}",
        "/v1/credit/loans/{}",
        "/v1/credit/book",
    ]
    with serve(mounted(s), as_operator(s)) as c:
        for i in range(400):
            if i % 4 == 3:
                name = rnd.choice(["fo", "fs", "fz", offer, "x" * 100, "%2520", "a%20b", "é", "-"])
                r = c.get(rnd.choice(gets).format(name))
            else:
                body = {f: rnd.choice(values) for f in rnd.sample(fields, rnd.randint(0, 6))}
                r = c.post(rnd.choice(posts), json=body)
            assert r.status_code < 500 or r.json()["name"] in ("CORE_REFUSED", "NOT_READY"), (r.request.url, r.text)
            assert r.status_code == 200 or isinstance(r.json()["code"], int), r.text
    s.check()


def test_a_second_service_on_the_same_records_is_refused(env: Env, tmp_path: Path) -> None:
    """Two services (two gateway processes) on one credit database would each read a plan, apply a repayment
    and write it back: the core charged twice, the records once. The database is opened exclusively."""
    s, engine, _ = env
    from liangcao.errors import StoreError

    s.checkout_installments("o1", "ivy", "shop", 30_000, 3)
    with pytest.raises(StoreError):
        CreditService(engine, tmp_path / "credit.db", fsync=False)
    assert s.plan("o1").principal == 30_000  # the first one still works


def reference_features(rows: list[tuple[int, L.SaleKind, int]], today: int) -> tuple[int, ...]:
    """The features' definitions, written the slow obvious way (a check on the fast loop)."""
    sales = [(today - d, a) for d, k, a in rows if k is L.SaleKind.SALE and d <= today]
    gmv = [sum(a for age, a in sales if age < n) for n in (30, 90, 365)]
    back = [
        sum(a for d, k2, a in rows if k2 is k and 0 <= today - d < 90)
        for k in (L.SaleKind.REFUND, L.SaleKind.CHARGEBACK)
    ]
    tenure = max((age for age, _ in sales), default=0)
    return (tenure, *gmv, *(b * 10_000 // gmv[1] if gmv[1] else 0 for b in back), len(rows))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(19_000, 20_010), st.sampled_from(list(L.SaleKind)), st.integers(1, 10**8)), max_size=60
    )
)
def test_the_fast_feature_loop_matches_the_definitions(rows: list[tuple[int, L.SaleKind, int]]) -> None:
    f = L.features(rows, 20_000)
    got = (f.tenure_days, f.gmv_30, f.gmv_90, f.gmv_365, f.refund_rate_bp, f.chargeback_rate_bp, f.transfers_read)
    assert got == reference_features(rows, 20_000)


def test_a_database_from_before_the_params_column_opens_and_answers(tmp_path: Path) -> None:
    import sqlite3

    clock = ManualDays(20_000)
    with Engine(tmp_path / "pay", fsync=False) as engine:
        s = CreditService(engine, tmp_path / "credit.db", clock=clock, fsync=False)
        s.checkout_installments("o1", "jo", "shop", 30_000, 3)
        s.deposit("jo", 50_000, "d1")
        first = s.repay("o1", 1_000, "r1")
        s.close()
        db = sqlite3.connect(tmp_path / "credit.db")
        db.execute("ALTER TABLE ops DROP COLUMN params")  # the schema before this review
        db.commit()
        db.close()
        again = CreditService(engine, tmp_path / "credit.db", clock=clock, fsync=False)
        assert again.repay("o1", 1_000, "r1") == first  # an old request: answered, not charged again
        assert again.repay("o1", 2_000, "r1") == first  # (its parameters were not kept: no conflict to see)
        again.repay("o1", 2_000, "r2")
        refused(CreditCode.REQUEST_CONFLICT, again.repay, "o1", 5, "r2")
        again.check()
        again.close()


def test_cli_quote_refuses_zero_negative_and_huge_amounts() -> None:
    from typer.testing import CliRunner

    from liangcao.credit.cli import app

    runner = CliRunner()
    for amount in ("0", "-300", str(10**30)):
        result = runner.invoke(app, ["quote", "--periods", "3", "--", amount])
        assert result.exit_code == 2 and "BAD_AMOUNT" in result.output, (amount, result.output)
    result = runner.invoke(app, ["quote", "--periods", "5", "100"])
    assert result.exit_code == 2 and "BAD_PERIODS" in result.output
    assert runner.invoke(app, ["quote", "--periods", "12", "--json", "100"]).exit_code == 0


def test_a_bad_row_late_in_a_sales_import_applies_nothing(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    s, engine, clock = env
    monkeypatch.setattr(S, "_PAGE", 10)  # batches of ten: the bad row is in the third
    rows = [(f"h{d}", clock() - 30 + d, L.SaleKind.SALE, 1_000) for d in range(25)]
    rows.append(("bad", clock(), L.SaleKind.SALE, 1.5))  # type: ignore[arg-type]
    refused(CreditCode.BAD_AMOUNT, s.import_sales, "imp", rows)
    assert balance(engine, s.merchant_account("imp")) == 0
    assert s.import_sales("imp", rows[:25]) == 25


def test_the_sdk_sends_ids_with_slashes_and_query_marks_to_the_right_plan(env: Env) -> None:
    """An order id like '2018/11/11-7' or 'a?b' must reach its own plan over HTTP, never another one."""
    from liangcao.credit.client import CreditClient

    s, _, _ = env
    s.checkout_installments("p", "kim", "shop", 30_000, 3)
    s.checkout_installments("2018/11/11-7", "kim", "shop", 30_000, 3)
    s.deposit("kim", 10_000, "d")
    with serve(create_app(s)) as http:
        c = CreditClient(str(http.base_url), token=operator_token(s.path.parent))
        try:
            assert c.plan("2018/11/11-7").plan_id == "2018/11/11-7"
            assert c.repay("2018/11/11-7", 100, "r/1").schedule[0].paid_fee == 100
            with pytest.raises(CreditError) as e:
                c.plan("p?x")
            assert e.value.code == CreditCode.UNKNOWN_PLAN
            with pytest.raises(CreditError) as e:
                c.deposit("x/../kim", 5, "d2")  # not kim's wallet
            assert e.value.code != 0
        finally:
            c.close()
    assert s.plan("p").owed() == 30_750 and s.line("kim").wallet_fen == 9_900


def test_a_float_or_negative_penalty_rate_is_refused_at_construction(tmp_path: Path) -> None:
    with Engine(tmp_path / "pay", fsync=False) as engine:
        for bad in (-1, 0.05, 10_001, True):
            refused(CreditCode.BAD_RATE_TABLE, CreditService, engine, tmp_path / "c.db", penalty_bp_per_day=bad)
        CreditService(engine, tmp_path / "c.db", penalty_bp_per_day=0, fsync=False).close()


def test_a_merchant_cannot_draw_with_a_smaller_repayment_share_than_offered(env: Env) -> None:
    """The share of each settlement is the lender's term: a merchant may repay faster, not slower (a share
    of 1 bp would leave the loan to run overdue)."""
    s, _, clock = env
    seed_sales(s, "tea", clock())
    offer = s.apply_loan("tea")
    refused(CreditCode.BAD_SHARE, s.draw_loan, offer.offer_id, 100_000, 1)
    refused(CreditCode.BAD_SHARE, s.draw_loan, offer.offer_id, 100_000, offer.share_bp - 1)
    assert s.draw_loan(offer.offer_id, 100_000, 2_500).share_bp == 2_500


def test_a_settlement_retried_after_a_draw_is_not_taken_for_the_new_loan(env: Env) -> None:
    s, engine, clock = env
    seed_sales(s, "tea", clock())
    first = s.record_sale("tea", "day-1", 600_000)  # no loan yet: nothing taken
    assert first is not None and first.deducted_fen == 0
    offer = s.apply_loan("tea")
    s.draw_loan(offer.offer_id, 1_000_000)
    before = balance(engine, s.merchant_account("tea"))
    assert s.on_settlement("tea", "day-1", 600_000) == first  # the retry answers what happened then
    assert balance(engine, s.merchant_account("tea")) == before
    refused(CreditCode.REQUEST_CONFLICT, s.on_settlement, "tea", "day-1", 700_000)
    assert s.on_settlement("tea", "day-2", 600_000).deducted_fen == 60_000


def test_refunds_after_payoff_above_the_principal_and_twice(env: Env) -> None:
    s, engine, _ = env
    s.record_sale("m", "cash", 1_000_000)  # the merchant has takings to refund from
    s.checkout_installments("o1", "lee", "m", 100_001, 12, "merchant")
    s.deposit("lee", 200_000, "d")
    assert s.prepay("o1").state is P.PlanState.PAID_OFF
    refused(CreditCode.REFUND_EXCEEDS, s.refund, "o1", 100_002)
    refused(CreditCode.PLAN_CLOSED, s.repay, "o1", 1)
    s.refund("o1", 1, "rf-1")
    s.refund("o1", 100_000, "rf-2")
    refused(CreditCode.PLAN_CLOSED, s.refund, "o1", 1)
    assert s.refund("o1", 100_000, "rf-2").state is P.PlanState.REFUNDED  # a retry, answered
    # The shopper has every fen back, the merchant its fee, nothing is left in fee income.
    assert balance(engine, account_id("wallet", "lee")) == 200_000
    assert balance(engine, account_id("fee-income")) == 0
    assert balance(engine, account_id("merchant", "m")) == 1_000_000
    s.check()


class DiesBeforeApplying:
    """A core that 'crashes' the process just before a chain reaches it (the intent is on disk)."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.armed = engine, False

    def __getattr__(self, name: str) -> object:
        return getattr(self.engine, name)

    def create_transfers(self, transfers: list[Transfer]) -> list[int]:
        if self.armed:
            raise SystemExit("killed")
        return self.engine.create_transfers(transfers)


def test_a_crash_between_the_intent_and_the_core_is_finished_once_on_open(tmp_path: Path) -> None:
    clock = ManualDays(20_000)
    with Engine(tmp_path / "pay", fsync=False) as engine:
        core = DiesBeforeApplying(engine)
        s = CreditService(core, tmp_path / "credit.db", clock=clock, fsync=False)
        s.checkout_installments("o1", "max", "shop", 90_000, 3)
        s.deposit("max", 90_000, "d")
        core.armed = True
        with pytest.raises(SystemExit):
            s.repay("o1", 30_000, "r1")
        s._db.close()  # the process is gone
        assert balance(engine, account_id("wallet", "max")) == 90_000  # the core never saw it
        again = CreditService(engine, tmp_path / "credit.db", clock=clock, fsync=False)
        assert again.recovered == 1  # the intent is finished: the repayment goes through once
        assert balance(engine, account_id("wallet", "max")) == 60_000
        assert again.repay("o1", 30_000, "r1").ops == 1  # the client's retry answers it
        assert balance(engine, account_id("wallet", "max")) == 60_000
        again.check()
        again.close()
