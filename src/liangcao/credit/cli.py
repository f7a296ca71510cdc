"""``liangcao credit ...``: the command line of ``liangcao.credit``, mounted by ``liangcao.cli``.

``start`` runs the standalone service (an embedded payments engine and the credit records in one folder);
the other commands talk to it through the SDK (``--url``), except ``quote`` (pure: the schedule a checkout
would make) and ``bench``. Exit codes: 0 done, 2 refused (one line: the code's name and the message),
1 bad input or the service unreachable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, NoReturn

import msgspec
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(
    help="credit: installment plans, credit lines, merchant loans", no_args_is_help=True, add_completion=False
)
console = Console()
err = Console(stderr=True)
DEFAULT_URL = "http://127.0.0.1:8195"
Url = Annotated[str, typer.Option("--url", help="the credit service")]
Json = Annotated[bool, typer.Option("--json", help="print JSON")]
Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="LIANGCAO_CREDIT_TOKEN",
        help="a session ('liangcao credit token') or the service's operator token (DATA/operator.token)",
    ),
]


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def _yuan(fen: int) -> str:
    return f"{fen // 100:,}.{fen % 100:02d}"


def _call(url: str, token: str | None, fn: str, *args: Any) -> Any:
    import httpx

    from liangcao import codes
    from liangcao.credit.client import CreditClient
    from liangcao.credit.errors import CreditError

    try:
        with CreditClient(url, token=token) as c:
            return getattr(c, fn)(*args)
    except CreditError as exc:
        fail(f"{codes.name_of(exc.code)} ({exc.code}): {exc.message}", 2)
    except httpx.HTTPError as exc:
        fail(f"credit service unreachable at {url}: {exc} (start it with 'liangcao credit start')")


def _print(obj: Any, as_json: bool) -> None:
    if as_json:
        print(msgspec.json.encode(obj).decode())
        return
    console.print_json(msgspec.json.encode(obj).decode())


def _schedule(plan: Any) -> None:
    t = Table(
        title=f"plan {plan.plan_id}: {_yuan(plan.principal)} yuan in {plan.periods} periods, fee "
        f"{_yuan(plan.fee)} paid by the {plan.fee_payer.name.lower()} ({plan.state.name.lower()})"
    )
    for col in ("period", "due day", "principal", "fee", "total", "penalty", "paid"):
        t.add_column(col, justify="right")
    for p in plan.schedule:
        t.add_row(
            str(p.n),
            str(p.due_day),
            _yuan(p.principal),
            _yuan(p.fee),
            _yuan(p.principal + p.fee),
            _yuan(p.penalty),
            _yuan(p.paid_principal + p.paid_fee + p.paid_penalty),
        )
    total_p = sum(p.principal for p in plan.schedule)
    total_f = sum(p.fee for p in plan.schedule)
    t.add_row("sum", "", _yuan(total_p), _yuan(total_f), _yuan(total_p + total_f), "", "")
    console.print(t)


@app.command("start")
def start_cmd(
    data: Annotated[Path, typer.Option("--data", help="folder: payments engine and credit records")] = Path(
        "credit-data"
    ),
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8195,
    postgres: Annotated[str | None, typer.Option("--postgres", help="keep the money in PostgreSQL (a DSN)")] = None,
) -> None:
    """Run the standalone credit service: the money in an embedded payments engine in DATA/pay (or in
    PostgreSQL with --postgres), the plan and loan records in DATA/credit.db."""
    import uvicorn

    from liangcao.credit.http import create_app
    from liangcao.credit.service import CreditService
    from liangcao.errors import LiangcaoError, StoreError
    from liangcao.payments import Engine

    engine: Any
    try:
        if postgres:
            from liangcao.payments.postgres import PostgresBackend

            try:
                engine = PostgresBackend(postgres)
            except Exception as exc:  # psycopg's errors: one line, not a traceback
                fail(f"PostgreSQL at {postgres!r}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        else:
            engine = Engine(data / "pay")
    except (LiangcaoError, StoreError) as exc:
        fail(exc.message)
    try:
        from liangcao.credit.identity import identity_in

        service = CreditService(engine, data / "credit.db")
        try:
            identity = identity_in(data)  # DATA/session.key and DATA/operator.token, made on first start
        except (OSError, ValueError) as exc:
            service.close()
            fail(str(exc))
        console.print(
            f"credit service on http://{host}:{port} (data in {data}; operator token in {data / 'operator.token'}, "
            f"sessions: liangcao credit token --data {data} --shopper NAME)",
            soft_wrap=True,
        )
        uvicorn.run(create_app(service, identity), host=host, port=port, log_level="warning")
        service.close()
    finally:
        engine.close()


@app.command("token")
def token_cmd(
    data: Annotated[Path, typer.Option("--data", help="the service's folder (its key: DATA/session.key)")] = Path(
        "credit-data"
    ),
    shopper: Annotated[str | None, typer.Option("--shopper", help="a session of this shopper")] = None,
    merchant: Annotated[str | None, typer.Option("--merchant", help="a session of this merchant")] = None,
    operator: Annotated[str | None, typer.Option("--operator", help="an operator session under this name")] = None,
    ttl_s: Annotated[int, typer.Option("--ttl-s", help="seconds the session is good for")] = 3600,
) -> None:
    """Issue a session token (printed alone on stdout): ``--token`` of the other commands, or
    ``Authorization: Bearer <token>`` at the credit service."""
    from liangcao import codes
    from liangcao.credit.errors import CreditError
    from liangcao.credit.identity import issue, session_key

    chosen = [(r, s) for r, s in (("shopper", shopper), ("merchant", merchant), ("operator", operator)) if s]
    if len(chosen) != 1:
        fail("give exactly one of --shopper, --merchant, --operator")
    try:
        token, _ = issue(session_key(data), chosen[0][0], chosen[0][1], ttl_s)
    except CreditError as exc:
        fail(f"{codes.name_of(exc.code)} ({exc.code}): {exc.message}", 2)
    except (OSError, ValueError) as exc:
        fail(str(exc))
    print(token)


@app.command("quote")
def quote_cmd(
    amount_fen: Annotated[int, typer.Argument(help="the purchase, in fen")],
    periods: Annotated[int, typer.Option("--periods", help="3, 6 or 12")] = 6,
    fee_payer: Annotated[str, typer.Option("--fee-payer", help="shopper or merchant")] = "shopper",
    as_json: Json = False,
) -> None:
    """The schedule a checkout would make (no service needed)."""
    from liangcao import codes
    from liangcao.credit import plans as P
    from liangcao.credit.errors import CreditError, check_money, installment_amount_fen_max
    from liangcao.credit.service import fee_payer_of

    try:
        amount = check_money(amount_fen, "amount_fen", installment_amount_fen_max)
        plan = P.make_plan("quote", "-", "-", amount, periods, fee_payer_of(fee_payer), P.DEFAULT_FEE_TABLE, 0)
    except CreditError as exc:
        fail(f"{codes.name_of(exc.code)} ({exc.code}): {exc.message}", 2)
    if as_json:
        _print(plan, True)
    else:
        _schedule(plan)


@app.command("buy")
def buy_cmd(
    order_id: str,
    shopper: str,
    merchant: str,
    amount_fen: int,
    periods: Annotated[int, typer.Option("--periods")] = 6,
    fee_payer: Annotated[str, typer.Option("--fee-payer")] = "shopper",
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """Buy on installments."""
    plan = _call(url, token, "checkout_installments", order_id, shopper, merchant, amount_fen, periods, fee_payer)
    _print(plan, True) if as_json else _schedule(plan)


@app.command("plan")
def plan_cmd(plan_id: str, url: Url = DEFAULT_URL, token: Token = None, as_json: Json = False) -> None:
    """A plan and its schedule."""
    plan = _call(url, token, "plan", plan_id)
    _print(plan, True) if as_json else _schedule(plan)


@app.command("repay")
def repay_cmd(
    plan_id: str,
    amount_fen: Annotated[int | None, typer.Argument(help="fen; leave out to repay everything")] = None,
    request_id: Annotated[str | None, typer.Option("--request-id")] = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """Repay a plan (partial, on time, early; no amount: all it owes)."""
    plan = _call(url, token, "repay", plan_id, amount_fen, request_id)
    _print(plan, True) if as_json else _schedule(plan)


@app.command("refund")
def refund_cmd(
    order_id: str,
    amount_fen: int,
    refund_id: Annotated[str | None, typer.Option("--refund-id")] = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """A merchant refund of an installment order (shortens or cancels the plan)."""
    plan = _call(url, token, "refund", order_id, amount_fen, refund_id)
    _print(plan, True) if as_json else _schedule(plan)


@app.command("deposit")
def deposit_cmd(shopper: str, amount_fen: int, deposit_id: str, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Money into a shopper's wallet (repayments are taken from it)."""
    console.print(f"wallet: {_yuan(_call(url, token, 'deposit', shopper, amount_fen, deposit_id))} yuan")


@app.command("line")
def line_cmd(shopper: str, url: Url = DEFAULT_URL, token: Token = None, as_json: Json = False) -> None:
    """A shopper's credit line: line, available, outstanding, frozen."""
    _print(_call(url, token, "line", shopper), as_json)


@app.command("statement")
def statement_cmd(shopper: str, url: Url = DEFAULT_URL, token: Token = None, as_json: Json = False) -> None:
    """What a shopper owes today, plan by plan."""
    st = _call(url, token, "statement", shopper)
    if as_json:
        _print(st, True)
        return
    t = Table(
        title=f"{shopper} on day {st.day}: due now {_yuan(st.due_now_fen)}, owed {_yuan(st.owed_fen)}, "
        f"available {_yuan(st.line.available_fen)} of {_yuan(st.line.line_fen)}"
        + (" (FROZEN)" if st.line.frozen else "")
    )
    for col in ("plan", "state", "due now", "next due day", "next due", "owed"):
        t.add_column(col)
    for r in st.plans:
        t.add_row(
            r.plan_id, r.state, _yuan(r.due_now_fen), str(r.next_due_day), _yuan(r.next_due_fen), _yuan(r.owed_fen)
        )
    console.print(t)


@app.command("run-day")
def run_day_cmd(url: Url = DEFAULT_URL, token: Token = None, as_json: Json = False) -> None:
    """The day's batch: accrue, mark overdue, freeze lines, collect installments due."""
    _print(_call(url, token, "run_day"), as_json)


@app.command("apply")
def apply_cmd(
    merchant: str,
    receivables_fen: Annotated[int, typer.Option("--receivables-fen")] = 0,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """A merchant applies for a loan: the offer (or decline) from its sales flow."""
    _print(_call(url, token, "apply_loan", merchant, receivables_fen), as_json)


@app.command("draw")
def draw_cmd(
    offer_id: str, amount_fen: int, url: Url = DEFAULT_URL, token: Token = None, as_json: Json = False
) -> None:
    """Draw an approved offer into the merchant's account."""
    _print(_call(url, token, "draw_loan", offer_id, amount_fen), as_json)


@app.command("sale")
def sale_cmd(
    merchant: str,
    sale_id: str,
    amount_fen: int,
    kind: Annotated[int, typer.Option("--kind")] = 1,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """A sale (1), refund (2) or chargeback (3) settled to the merchant; a sale repays its loan by its share."""
    _print(_call(url, token, "record_sale", merchant, sale_id, amount_fen, kind), as_json)


@app.command("loans")
def loans_cmd(merchant: str, url: Url = DEFAULT_URL, token: Token = None, as_json: Json = False) -> None:
    """The merchant's view of its loans."""
    _print(_call(url, token, "merchant_loans", merchant), as_json)


@app.command("book")
def book_cmd(url: Url = DEFAULT_URL, token: Token = None, as_json: Json = False) -> None:
    """The platform's view of the merchant-loan book."""
    _print(_call(url, token, "loan_book"), as_json)


@app.command("bench")
def bench_cmd(
    purchases: Annotated[int, typer.Option("--purchases", help="installment purchases to time")] = 1_000,
    merchants: Annotated[int, typer.Option("--merchants", help="loan decisions to time")] = 50,
    orders_per_day: Annotated[int, typer.Option("--orders-per-day", help="sales history density")] = 20,
    as_json: Json = False,
) -> None:
    """Installment purchases/s next to plain payments-core transfers/s, and the loan-decision p99 with a
    year of sales history; cores and peak RSS. With --json the last line is one JSON object."""
    from liangcao.credit.bench import run

    result = run(purchases=purchases, merchants=merchants, orders_per_day=orders_per_day, say=err.print)
    if as_json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            console.print(f"{k:>32}: {v}")


@app.command("examples")
def examples_cmd(
    png: Annotated[Path | None, typer.Option("--png", help="draw the loan's repayment into this PNG")] = None,
    as_json: Json = False,
) -> None:
    """Run the worked examples of docs/credit.md for real (a temporary engine) and print them."""
    from liangcao.credit.examples import plot, run

    result = run()
    if png is not None:
        plot(result, png)
    if as_json:
        print(json.dumps(result))
        return
    plan = result["plan"]
    console.print(
        f"1,199.00 in 6 periods, fee {_yuan(plan['fee'])} paid by the merchant, who receives "
        f"{_yuan(plan['merchant_receives'])}"
    )
    for n, due, principal, fee in plan["schedule"]:
        console.print(f"  period {n}: day +{due}: {_yuan(principal)} + fee {_yuan(fee)}")
    o, days = result["offer"], result["loan"]["days"]
    console.print(
        f"offer: score {o['score']}, limit {_yuan(o['limit_fen'])}, {o['daily_rate_bp']} bp/day; "
        f"50,000.00 repaid in {len(days)} days, interest {_yuan(result['loan']['interest_fen'])}"
    )
