"""The credit service on the real payments core: the worked examples of docs/credit.md, frozen and
growing lines, a crash between the core and the records, PostgreSQL, and `liangcao credit` end to end
(its own process, the CLI, the SDK, HTTP errors as JSON)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from liangcao.credit import loans as L
from liangcao.credit import plans as P
from liangcao.credit.client import CreditClient
from liangcao.credit.errors import CreditCode, CreditError
from liangcao.credit.service import CreditService, ManualDays, account_id
from liangcao.payments import Account, Engine, Transfer
from liangcao.procs import free_port


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[CreditService, Engine, ManualDays]]:
    clock = ManualDays(20_000)
    with Engine(tmp_path / "pay", fsync=False) as engine:
        s = CreditService(engine, tmp_path / "credit.db", clock=clock, fsync=False)
        yield s, engine, clock
        s.close()


def balance(engine: Engine, acct: int) -> int:
    a = engine.lookup_accounts([acct])[0]
    return a.credits_posted - a.debits_posted


def test_worked_example_6_periods_1199_yuan_fee_paid_by_merchant(env: tuple[CreditService, Engine, ManualDays]) -> None:
    s, engine, clock = env
    plan = s.checkout_installments("order-1199", "ann", "shop", 119_900, 6, "merchant")
    assert plan.fee == 5_396 and [p.principal for p in plan.schedule] == [19_985] + [19_983] * 5
    assert balance(engine, account_id("merchant", "shop")) == 119_900 - 5_396  # fee taken from settlement
    assert balance(engine, account_id("fee-income")) == 5_396
    line = s.line("ann")
    assert (line.line_fen, line.available_fen, line.outstanding_fen) == (200_000, 80_100, 119_900)
    s.deposit("ann", 119_900, "salary")
    for k in range(6):
        clock.advance(30)
        report = s.run_day()  # each due installment collected on its due day, interest-free
        assert report.collected_fen == plan.schedule[k].principal
    after = s.plan("order-1199")
    assert after.state is P.PlanState.PAID_OFF and balance(engine, account_id("wallet", "ann")) == 0
    line = s.line("ann")
    assert line.plans_on_time == 1 and line.line_fen == 250_000 and line.available_fen == 250_000  # the line grew
    s.check()


def test_overdue_freezes_the_line_penalty_accrues_repayment_unfreezes(
    env: tuple[CreditService, Engine, ManualDays],
) -> None:
    s, engine, clock = env
    s.checkout_installments("o1", "bo", "shop", 30_000, 3, "shopper")  # fee 750: 250 a period
    clock.advance(40)  # period 1 (due day +30) is 10 days overdue; the wallet is empty
    assert s.run_day().plans_overdue == 1
    plan = s.plan("o1")
    assert plan.state is P.PlanState.OVERDUE
    assert plan.schedule[0].penalty == 10 * (10_250 * 5 // 10_000)
    view = s.line("bo")
    assert view.frozen and view.held_fen == 200_000 - 30_000 and view.available_fen == 0
    with pytest.raises(CreditError) as e:
        s.checkout_installments("o2", "bo", "shop", 100, 3)
    assert e.value.code == CreditCode.LINE_FROZEN
    # The core holds the frozen line: even a transfer sent around the service is refused.
    (result,) = engine.create_transfers(
        [Transfer(98, account_id("line", "bo"), account_id("merchant", "shop"), 1, ledger=156, code=1)]
    )
    assert result != 0
    s.deposit("bo", 20_000, "d")
    s.repay("o1", plan.schedule[0].owed)
    assert s.plan("o1").state is P.PlanState.ACTIVE
    view = s.line("bo")
    assert not view.frozen and view.held_fen == 0 and view.available_fen == 200_000 - 20_000
    assert balance(engine, account_id("penalty-income")) == plan.schedule[0].penalty
    s.checkout_installments("o2", "bo", "shop", 100, 3)
    s.deposit("bo", 30_000, "d2")
    s.prepay("o1")  # early repayment of the rest
    assert s.plan("o1").state is P.PlanState.PAID_OFF
    assert s.line("bo").plans_late == 1  # a plan that went overdue counts against the line
    assert s.line("bo").line_fen == 100_000
    s.check()


def test_full_refund_cancels_and_stops_charging(env: tuple[CreditService, Engine, ManualDays]) -> None:
    s, engine, clock = env
    s.checkout_installments("o1", "cy", "shop", 60_000, 12, "merchant")
    s.deposit("cy", 100_000, "d")
    clock.advance(30)
    s.run_day()
    plan = s.refund("o1", 60_000, refund_id="rf-1")
    assert plan.state is P.PlanState.REFUNDED and plan.refunded_to_shopper == 5_000
    assert s.refund("o1", 60_000, refund_id="rf-1") == plan  # retried refund: answered, not paid twice
    wallet = balance(engine, account_id("wallet", "cy"))
    clock.advance(400)
    assert s.run_day().collected_fen == 0  # a refunded order stops charging
    assert balance(engine, account_id("wallet", "cy")) == wallet == 100_000
    with pytest.raises(CreditError) as e:
        s.repay("o1", 1)
    assert e.value.code == CreditCode.PLAN_CLOSED
    assert balance(engine, account_id("line", "cy")) == s.line("cy").line_fen
    s.check()


def test_the_core_refuses_an_overdraw_of_the_line(env: tuple[CreditService, Engine, ManualDays]) -> None:
    s, engine, _ = env
    s.checkout_installments("o1", "dee", "shop", 150_000, 3)
    before = engine.lookup_accounts([account_id("line", "dee")])[0]
    with pytest.raises(CreditError) as e:
        s.checkout_installments("o2", "dee", "shop", 50_001, 3)  # 50,000 left
    assert e.value.code == CreditCode.LINE_EXCEEDED
    assert engine.lookup_accounts([account_id("line", "dee")])[0] == before
    with pytest.raises(CreditError) as e:
        s.plan("o2")
    assert e.value.code == CreditCode.UNKNOWN_PLAN
    # Even a transfer sent around the service cannot overdraw: the account's flag is the core's rule.
    (result,) = engine.create_transfers(
        [Transfer(99, account_id("line", "dee"), account_id("merchant", "shop"), 50_001, ledger=156, code=1)]
    )
    assert result != 0


def test_loan_worked_example_50000_repaid_from_10_percent_of_daily_sales(
    env: tuple[CreditService, Engine, ManualDays],
) -> None:
    s, engine, clock = env
    today = clock()
    rows = [(f"h{d}", today - 365 + d, L.SaleKind.SALE, 600_000 + 40_000 * (d % 3)) for d in range(365)]
    s.import_sales("noodles", rows)
    offer = s.apply_loan("noodles")
    assert offer.approved and offer.limit_fen >= 5_000_000 and offer.decided_us < 1_000_000
    assert offer == s.offer(offer.offer_id)
    loan = s.draw_loan(offer.offer_id, 5_000_000)
    assert balance(engine, account_id("merchant", "noodles")) == sum(r[3] for r in rows) + 5_000_000
    days = 0
    while s.loan(loan.loan_id).state is not L.LoanState.REPAID:
        clock.advance(1)
        days += 1
        d = s.record_sale("noodles", f"day{days}", 600_000)  # 6,000.00 yuan a day, 10 % to the loan
        assert d is not None and d.deducted_fen <= 60_000
    done = s.loan(loan.loan_id)
    assert done.paid_principal == 5_000_000 and days == 85 and done.paid_interest == 64_283
    assert balance(engine, account_id("loan-interest")) == done.paid_interest
    book = s.loan_book()
    assert (book.loans, book.repaid, book.outstanding_fen) == (1, 1, 0)
    assert s.record_sale("noodles", "after", 600_000).deducted_fen == 0  # type: ignore[union-attr]


class Crash(Exception):
    pass


class DiesAfterApplying:
    """The engine, but the process "dies" right after the core applied a batch and before the service
    hears back (the records are not written): fault injection around the real core."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.armed = False

    def create_accounts(self, accounts: list[Account]) -> list[int]:
        return self.engine.create_accounts(accounts)

    def create_transfers(self, transfers: list[Transfer]) -> list[int]:
        results = self.engine.create_transfers(transfers)
        if self.armed:
            raise Crash
        return results

    def lookup_accounts(self, ids: list[int]) -> list[Account]:
        return self.engine.lookup_accounts(ids)

    def lookup_transfers(self, ids: list[int]) -> list[Transfer]:
        return self.engine.lookup_transfers(ids)

    def get_account_transfers(self, f: object) -> list[Transfer]:
        return self.engine.get_account_transfers(f)  # type: ignore[arg-type]


def test_crash_between_core_and_records_is_finished_once_on_open(tmp_path: Path) -> None:
    clock = ManualDays(20_000)
    with Engine(tmp_path / "pay") as engine:
        core = DiesAfterApplying(engine)
        s = CreditService(core, tmp_path / "credit.db", clock=clock)
        s.checkout_installments("o1", "eve", "shop", 90_000, 3)
        s.deposit("eve", 90_000, "d")
        core.armed = True
        with pytest.raises(Crash):
            s.repay("o1", 30_000)
        s._db.close()  # the process is gone: nothing more of it runs
        assert balance(engine, account_id("wallet", "eve")) == 60_000  # the core had applied it
        again = CreditService(engine, tmp_path / "credit.db", clock=clock)
        assert again.recovered == 1
        plan = again.plan("o1")
        assert plan.schedule[0].paid_principal + plan.schedule[0].paid_fee == 30_000 and plan.ops == 1
        assert balance(engine, account_id("wallet", "eve")) == 60_000  # charged once
        again.check()
        again.close()


def test_on_postgresql(pg_dsn: str, tmp_path: Path) -> None:
    from liangcao.payments.postgres import PostgresBackend

    clock = ManualDays(20_000)
    with PostgresBackend(pg_dsn) as pg:
        pg.reset()
        s = CreditService(pg, tmp_path / "credit.db", clock=clock)
        plan = s.checkout_installments("o1", "ann", "shop", 119_900, 6, "merchant")
        s.deposit("ann", 200_000, "d")
        clock.advance(30)
        assert s.run_day().collected_fen == plan.schedule[0].principal
        s.refund("o1", 50_000)
        with pytest.raises(CreditError) as e:
            s.checkout_installments("o2", "ann", "shop", 200_000, 3)
        assert e.value.code == CreditCode.LINE_EXCEEDED
        s.check()
        s.close()


# --------------------------------------------------------------------------------------- end to end


def cli(
    *args: str, url: str | None = None, token: str | None = None, here: bool = False
) -> subprocess.CompletedProcess[str]:
    """``liangcao credit ARGS`` in its own process, or with ``here`` in this one (the same command code without the
    ~1.5 s interpreter start; an exception escaping the command, a traceback in a process, is never expected)."""
    extra = (["--url", url] if url else []) + (["--token", token] if token else [])
    if here:
        from typer.testing import CliRunner

        from liangcao.cli import app

        argv = ["credit", *args, *extra]
        ran = CliRunner().invoke(app, argv, env={"COLUMNS": "200"})
        assert ran.exception is None or isinstance(ran.exception, SystemExit), (argv, ran.exc_info)
        return subprocess.CompletedProcess(argv, ran.exit_code, ran.stdout, ran.stderr)
    return subprocess.run(
        [sys.executable, "-m", "liangcao.cli", "credit", *args, *extra],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    port = free_port(0)
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "liangcao.cli", "credit", "start", "--data", str(tmp_path / "d"), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(url + "/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.time() < deadline, "the credit service did not start"
            time.sleep(0.05)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        if proc.stderr:
            proc.stderr.close()


def test_cli_sdk_and_http_end_to_end(server: str, tmp_path: Path) -> None:
    r = cli("quote", "119900", "--periods", "6", "--fee-payer", "merchant", here=True)
    assert r.returncode == 0 and "199.85" in r.stdout and "1,199.00" in r.stdout
    # ann buys with her own session (issued from the service's folder); the operator token does the rest
    ann = cli("token", "--data", str(tmp_path / "d"), "--shopper", "ann", here=True).stdout.strip()
    op = (tmp_path / "d" / "operator.token").read_text().strip()
    r = cli("buy", "o1", "ann", "shop", "119900", "--periods", "6", "--fee-payer", "merchant", "--json", url=server)
    assert r.returncode == 2 and "UNAUTHENTICATED" in r.stderr  # no token: nothing bought
    buy = ("buy", "o1", "ann", "shop", "119900", "--periods", "6", "--fee-payer", "merchant", "--json")
    r = cli(*buy, url=server, token=ann)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["fee"] == 5_396
    r = cli("buy", "o2", "ann", "shop", "1000", "--periods", "5", url=server, token=ann, here=True)
    assert r.returncode == 2 and "BAD_PERIODS" in r.stderr
    with CreditClient(server, token=op) as c:
        assert c.deposit("ann", 200_000, "d1") == 200_000
        assert c.repay("o1", 19_985).schedule[0].paid_principal == 19_985
        assert c.line("ann").available_fen == 200_000 - 119_900 + 19_985
        assert c.statement("ann").owed_fen == 119_900 - 19_985
        assert c.refund("o1", 119_900).state is P.PlanState.REFUNDED
        with pytest.raises(CreditError) as e:
            c.repay("o1", 1)
        assert e.value.code == CreditCode.PLAN_CLOSED
    with CreditClient(server, token=op) as c:
        assert c.plan("o1").state is P.PlanState.REFUNDED
        assert c.line_account("ann") == account_id("line", "ann")
        with pytest.raises(CreditError) as e:
            c.open_plan("o9", "ann", "shop", 1_000, 3, funding_transfer_id=12345)
        assert e.value.code == CreditCode.FUNDING_MISMATCH
        offer = c.apply_loan("newshop")
        assert not offer.approved  # no sales history yet
        with pytest.raises(CreditError) as e:
            c.draw_loan(offer.offer_id, 100)
        assert e.value.code == CreditCode.LOAN_DECLINED
        assert c.loan_book().loans == 0
    bad = httpx.post(
        server + "/v1/credit/installments",
        json={"order_id": "o3", "shopper": "ann", "merchant": "shop", "amount_fen": 10.5, "periods": 3},
        headers={"Authorization": f"Bearer {ann}"},
    )
    assert (
        bad.status_code == 400 and bad.json()["name"] == "BAD_AMOUNT" and set(bad.json()) == {"code", "name", "message"}
    )
    missing = httpx.get(server + "/v1/credit/plans/none", headers={"Authorization": f"Bearer {op}"})
    assert missing.status_code == 404 and missing.json()["code"] == CreditCode.UNKNOWN_PLAN
    spec = httpx.get(server + "/openapi.json").json()
    assert "/v1/credit/installments" in spec["paths"] and "/v1/credit/merchants/{merchant}/apply" in spec["paths"]
    assert cli("line", "ann", url="http://127.0.0.1:9", here=True).returncode == 1


def test_bench_small_run() -> None:
    r = cli("bench", "--purchases", "40", "--merchants", "3", "--orders-per-day", "5", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    for key in (
        "cores",
        "plain_transfers_per_s",
        "installment_purchases_per_s",
        "loan_decision_p99_ms",
        "peak_rss_mib",
    ):
        assert key in out
    assert out["loan_decision_p99_ms"] < 1_000


def test_registered_merchant_account_is_paid_and_scored(env: tuple[CreditService, Engine, ManualDays]) -> None:
    s, engine, clock = env
    from liangcao.payments import AccountFlags

    mine = 424242  # an account the checkout gateway owns
    engine.create_accounts([Account(mine, ledger=156, code=1, flags=int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS))])
    with pytest.raises(CreditError) as e:
        s.register_merchant("gw-shop", 777)
    assert e.value.code == CreditCode.UNKNOWN_MERCHANT
    s.register_merchant("gw-shop", mine)
    s.register_merchant("gw-shop", mine)  # the same again is fine
    with pytest.raises(CreditError) as e:
        s.register_merchant("gw-shop", account_id("bank"))
    assert e.value.code == CreditCode.MERCHANT_REGISTERED
    s.checkout_installments("g1", "fay", "gw-shop", 12_000, 3, "merchant")
    assert balance(engine, mine) == 12_000 - (12_000 * 250 + 5_000) // 10_000
    # Sales the gateway settles into its own account, stamped with the business day, are the score's input.
    today = clock()
    s.import_sales("gw-shop", [(f"h{d}", today - 200 + d, L.SaleKind.SALE, 400_000) for d in range(200)])
    offer = s.apply_loan("gw-shop")
    assert offer.approved and offer.features.tenure_days == 200


def test_a_checkout_gateway_holds_the_line_into_escrow_then_opens_the_plan(
    env: tuple[CreditService, Engine, ManualDays],
) -> None:
    """The gateway's own two-phase path: a pending transfer from the line into its escrow (the core
    enforces the line), posted to its merchant account, then ``open_plan``."""
    s, engine, _ = env
    from liangcao.payments import AMOUNT_MAX, AccountFlags, CreateTransferResult, TransferFlags

    escrow, shop = 5_001, 5_002
    engine.create_accounts(
        [
            Account(escrow, ledger=156, code=1),
            Account(shop, ledger=156, code=2, flags=int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)),
        ]
    )
    s.register_merchant("gw", shop)
    line = s.line_account("gil")
    (over,) = engine.create_transfers(
        [Transfer(1, line, escrow, 200_001, ledger=156, code=1, flags=int(TransferFlags.PENDING))]
    )
    assert over == CreateTransferResult.EXCEEDS_CREDITS  # the core enforces the line on the gateway's hold
    hold = Transfer(2, line, escrow, 119_900, ledger=156, code=1, flags=int(TransferFlags.PENDING))
    post = Transfer(3, pending_id=2, amount=AMOUNT_MAX, flags=int(TransferFlags.POST_PENDING_TRANSFER))
    settle = Transfer(4, escrow, shop, 119_900, ledger=156, code=1)
    assert engine.create_transfers([hold, post, settle]) == [0, 0, 0]
    for bad in (2, 4, 777, 1.0):  # the pending hold, not out of the line, unknown, not an id
        with pytest.raises(CreditError) as e:
            s.open_plan("gw-order", "gil", "gw", 119_900, 6, "merchant", funding_transfer_id=bad)  # type: ignore[arg-type]
        assert e.value.code == CreditCode.FUNDING_MISMATCH
    plan = s.open_plan("gw-order", "gil", "gw", 119_900, 6, "merchant", funding_transfer_id=3)
    assert s.open_plan("gw-order", "gil", "gw", 119_900, 6, "merchant", funding_transfer_id=3) == plan  # idempotent
    with pytest.raises(CreditError) as e:
        s.open_plan("gw-order-2", "gil", "gw", 119_900, 6, "merchant", funding_transfer_id=3)
    assert e.value.code == CreditCode.FUNDING_MISMATCH  # one payment funds one plan
    assert balance(engine, shop) == 119_900 - 5_396
    view = s.line("gil")
    assert (view.available_fen, view.outstanding_fen) == (200_000 - 119_900, 119_900)
    s.check()
    s.refund("gw-order", 119_900)  # refunded after settlement: from the gateway's merchant account to the line
    assert balance(engine, shop) == 0 and s.line("gil").available_fen == 200_000


def test_loan_overdue_handling_and_the_two_views(env: tuple[CreditService, Engine, ManualDays]) -> None:
    s, engine, clock = env
    today = clock()
    s.import_sales("tea", [(f"h{d}", today - 300 + d, L.SaleKind.SALE, 500_000) for d in range(300)])
    offer = s.apply_loan("tea")
    loan = s.draw_loan(offer.offer_id, 1_000_000)
    with pytest.raises(CreditError) as e:
        s.draw_loan(offer.offer_id, 1)
    assert e.value.code == CreditCode.OFFER_EXPIRED
    rate = loan.daily_rate_bp
    clock.advance(180)  # the due day: not overdue yet
    assert s.run_day().loans_overdue == 0
    clock.advance(10)  # 10 days past due, at 1.5 times the rate
    assert s.run_day().loans_overdue == 1
    late = s.loan(loan.loan_id)
    assert late.state is L.LoanState.OVERDUE
    assert late.interest == 180 * (1_000_000 * rate // 10_000) + 10 * (1_000_000 * loan.overdue_rate_bp // 10_000)
    book = s.loan_book()
    assert (book.overdue, book.overdue_fen) == (1, late.owed)
    assert [x.loan_id for x in s.merchant_loans("tea")] == [loan.loan_id]
    s.repay_loan(loan.loan_id, late.owed, request_id="payoff")
    assert s.loan(loan.loan_id).state is L.LoanState.REPAID
    assert s.repay_loan(loan.loan_id, late.owed, request_id="payoff").state is L.LoanState.REPAID  # retried
    assert balance(engine, account_id("loan-capital")) == 0
    assert balance(engine, account_id("loan-interest")) == late.interest
    assert s.loan_book().overdue == 0


def test_a_core_failure_mid_operation_is_finished_before_the_next(tmp_path: Path) -> None:
    clock = ManualDays(20_000)
    with Engine(tmp_path / "pay") as engine:
        core = DiesAfterApplying(engine)
        s = CreditService(core, tmp_path / "credit.db", clock=clock)
        s.checkout_installments("o1", "hal", "shop", 90_000, 3)
        s.deposit("hal", 90_000, "d")
        core.armed = True
        with pytest.raises(Crash):
            s.repay("o1", 30_000, request_id="r1")  # the core applied it; the answer was lost
        core.armed = False
        again = s.repay("o1", 30_000, request_id="r1")  # the retry finds it finished: charged once
        assert again.ops == 1 and balance(engine, account_id("wallet", "hal")) == 60_000
        s.repay("o1", 1_000)
        assert s.plan("o1").ops == 2 and balance(engine, account_id("wallet", "hal")) == 59_000
        s.check()
        s.close()


def test_kill_9_of_the_service_keeps_money_and_records_together(tmp_path: Path) -> None:
    """`liangcao credit start` killed with SIGKILL while checkouts stream in: reopened, every acknowledged
    plan is there, the one in flight is whole or absent, and the core's lines agree with the records."""
    import threading

    port = free_port(0)
    url = f"http://127.0.0.1:{port}"
    data = tmp_path / "d"
    proc = subprocess.Popen(
        [sys.executable, "-m", "liangcao.cli", "credit", "start", "--data", str(data), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    acked: list[str] = []
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(url + "/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.time() < deadline, "the credit service did not start"
            time.sleep(0.05)
        killer = threading.Timer(1.5, proc.kill)
        killer.start()
        with CreditClient(url, timeout_s=5, token=(data / "operator.token").read_text().strip()) as c:
            for i in range(10_000):
                try:
                    c.checkout_installments(f"k{i}", f"s{i % 7}", "shop", 1_000 + i, (3, 6, 12)[i % 3], "merchant")
                except httpx.HTTPError:
                    break
                acked.append(f"k{i}")
        killer.join()
    finally:
        proc.kill()
        proc.wait(10)
    assert acked, "no checkout was acknowledged before the kill"
    with Engine(data / "pay") as engine:
        s = CreditService(engine, data / "credit.db")
        for order in acked:
            assert s.plan(order).principal >= 1_000
        s.check()  # every line's available amount in the core = line - outstanding in the records
        merchant = balance(engine, account_id("merchant", "shop"))
        plans = [p for k in range(7) for p in s.plans_of(f"s{k}")]
        assert merchant == sum(p.principal - p.fee for p in plans)
        s.close()
