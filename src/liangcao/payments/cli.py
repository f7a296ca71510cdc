"""``liangcao pay``: run the payments service, create accounts and transfers, look them up, benchmark.

Commands talk to a running service (``--url``, default ``http://127.0.0.1:8190``) or, with ``--data DIR``,
open the embedded engine's folder directly (only when no service holds it). Through ``--url`` they present a
bearer token (``--token`` or ``LIANGCAO_PAY_TOKEN``): the service's ``DATA/operator.token``, or a session
from ``liangcao pay token``; with ``--data`` no token is needed (reading the folder is the authority).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from liangcao.payments.engine import SNAPSHOT_LOG_BYTES
from liangcao.payments.types import (
    APPLIED_ACCOUNT_RESULTS,
    APPLIED_TRANSFER_RESULTS,
    AccountFlags,
    CreateAccountResult,
    CreateTransferResult,
    TransferFlags,
)

pay_app = typer.Typer(help="The payments core: accounts, transfers, lookups, the service and its benchmark.")
accounts_app = typer.Typer(help="Accounts.", no_args_is_help=True)
pay_app.add_typer(accounts_app, name="accounts")
console = Console()
err = Console(stderr=True)

DEFAULT_URL = "http://127.0.0.1:8190"
Url = Annotated[str, typer.Option("--url", help="the payments service")]
Data = Annotated[Path | None, typer.Option("--data", help="use the embedded engine in this folder directly")]
Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="LIANGCAO_PAY_TOKEN",
        show_envvar=True,
        help="bearer token for --url: DATA/operator.token, or a session from 'liangcao pay token'",
    ),
]


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr (never wrapped, never a traceback), then exit ``code``."""
    err.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def _flags(text: str, enum: type[AccountFlags] | type[TransferFlags]) -> int:
    value = 0
    for name in filter(None, (x.strip() for x in text.split(","))):
        try:
            value |= int(enum[name.upper().replace("-", "_")])
        except KeyError:
            names = ", ".join(str(m.name).lower() for m in enum if m.value)
            fail(f"unknown flag {name!r}; flags are: {names}")
    return value


def _call(url: str, data: Path | None, op: str, payload: Any, token: str | None = None) -> Any:
    """Run one operation through the service (presenting ``token``), or through the engine folder with
    ``--data``."""
    if data is not None:
        from liangcao.errors import StoreError
        from liangcao.payments import AccountFilter, Engine, PaymentsError, QueryFilter
        from liangcao.payments.http import accounts_from_json, transfers_from_json

        try:
            with Engine(data) as e:
                # The same strict wire form as the service: unknown fields or non-integers are refused.
                if op == "accounts":
                    return {"results": e.create_accounts(accounts_from_json(json.dumps(payload).encode()))}
                if op == "transfers":
                    return {"results": e.create_transfers(transfers_from_json(json.dumps(payload).encode()))}
                if op == "lookup_accounts":
                    return [_plain(a) for a in e.lookup_accounts(payload)]
                if op == "lookup_transfers":
                    return [_plain(t) | {"status": e.transfer_status(t.id)} for t in e.lookup_transfers(payload)]
                if op == "query_accounts":
                    return [_plain(a) for a in e.query_accounts(QueryFilter(**payload))]
                if op == "query_transfers":
                    return [_plain(t) for t in e.query_transfers(QueryFilter(**payload))]
                return [_plain(t) for t in e.get_account_transfers(AccountFilter(**payload))]
        except (PaymentsError, StoreError) as exc:
            fail(exc.message)
    import httpx

    paths = {
        "accounts": ("POST", "/v1/accounts"),
        "transfers": ("POST", "/v1/transfers"),
        "lookup_accounts": ("POST", "/v1/accounts/lookup"),
        "lookup_transfers": ("POST", "/v1/transfers/lookup"),
    }
    headers = {"Authorization": f"Bearer {token.strip()}"} if token else {}
    try:
        if op == "account_transfers":
            q = dict(payload)
            path = f"/v1/accounts/{q.pop('account_id')}/transfers"
            r = httpx.get(url + path, params=q, headers=headers, timeout=60)
        elif op in ("query_accounts", "query_transfers"):
            r = httpx.get(f"{url}/v1/{op.split('_')[1]}", params=payload, headers=headers, timeout=60)
        else:
            method, path = paths[op]
            body = {"ids": payload} if op.startswith("lookup") else payload
            r = httpx.request(method, url + path, json=body, headers=headers, timeout=60)
    except httpx.HTTPError as exc:
        fail(f"payments service unreachable at {url}: {exc} (start it with 'liangcao pay start')")
    if r.status_code == 401 and not token:
        fail(
            "the payments service needs a token: --token or LIANGCAO_PAY_TOKEN (DATA/operator.token, or 'liangcao pay token')"
        )
    if r.status_code != 200:
        try:
            fail(f"{r.json()['message']} (code {r.json()['code']})")
        except (ValueError, KeyError):
            fail(f"HTTP {r.status_code}")
    return r.json()


def _plain(obj: Any) -> dict[str, Any]:
    import msgspec

    return msgspec.structs.asdict(obj)


def _report(results: list[int], names: type[CreateAccountResult] | type[CreateTransferResult]) -> None:
    """Each refused event on its own line; exit 2 if any. ``exists`` (created by an earlier request with
    the same id and fields) is not a refusal: the state is as asked."""
    applied = APPLIED_ACCOUNT_RESULTS if names is CreateAccountResult else APPLIED_TRANSFER_RESULTS
    bad = 0
    for i, code in enumerate(results):
        if code not in applied:
            bad += 1
            console.print(f"[red]#{i}: {names(code).name.lower()}[/] (code {code})")
    if bad:
        raise typer.Exit(2)
    existed = sum(1 for code in results if code)
    console.print(
        f"[green]ok[/] {len(results) - existed} applied" + (f", {existed} existed already" if existed else "")
    )


@pay_app.command("start")
def start_cmd(
    data: Annotated[Path, typer.Option("--data", help="the embedded engine's folder")] = Path("payments-data"),
    postgres: Annotated[str | None, typer.Option("--postgres", help="a PostgreSQL DSN: use that backend")] = None,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8190,
    snapshot_every: Annotated[int, typer.Option("--snapshot-every", help="batches between snapshots (0: off)")] = 0,
    snapshot_log_mib: Annotated[
        int, typer.Option("--snapshot-log-mib", help="MiB of log between snapshots (0: off)")
    ] = SNAPSHOT_LOG_BYTES // 2**20,
) -> None:
    """Run the payments service (embedded engine by default, or PostgreSQL)."""
    import uvicorn

    from liangcao.errors import StoreError
    from liangcao.payments import Engine, PaymentsError
    from liangcao.payments.http import create_app
    from liangcao.payments.identity import identity_in

    try:
        identity = identity_in(data)  # DATA/operator.token and DATA/session.key, made on first start (0600)
    except (OSError, ValueError) as exc:
        fail(f"{data}: {exc}")
    try:
        if postgres:
            from liangcao.payments.postgres import PostgresBackend

            backend: Any = PostgresBackend(postgres)
        else:
            backend = Engine(data, snapshot_every=snapshot_every, snapshot_log_bytes=snapshot_log_mib * 2**20)
    except (PaymentsError, StoreError) as exc:
        fail(exc.message)
    import gc

    gc.collect()
    gc.freeze()  # the recovered state lives as long as the service: keep the collector from rescanning it
    console.print(f"payments service on http://{host}:{port} ({'PostgreSQL' if postgres else f'engine in {data}'})")
    console.print(f"callers present Authorization: Bearer <token>: {data / 'operator.token'}, or 'liangcao pay token'")
    app = create_app(backend, identity=identity, serialize=bool(postgres))
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        backend.close()


@pay_app.command("token")
def token_cmd(
    service: Annotated[str, typer.Option("--service", help="who the session is for, e.g. checkout-gateway")],
    data: Annotated[Path, typer.Option("--data", help="the service's folder")] = Path("payments-data"),
    role: Annotated[str, typer.Option("--role", help="service (every route) or read-only (GET and lookups)")] = (
        "service"
    ),
    ttl_s: Annotated[int, typer.Option("--ttl-s", help="seconds the session is good for")] = 7 * 24 * 3600,
    as_json: Annotated[bool, typer.Option("--json", help="token and expiry as JSON")] = False,
) -> None:
    """Issue a session for a caller of the payments service (whoever can read DATA may issue them)."""
    from liangcao.payments import PaymentsError
    from liangcao.payments.identity import identity_in

    if not (data / "session.key").is_file():
        # a mistyped folder would otherwise get a key of its own, and tokens no service accepts
        fail(f"{data}: no session.key here: give the folder of 'liangcao pay start --data DIR' (started once)")
    try:
        token, expires_ms = identity_in(data).issue(role, service, ttl_s)
    except PaymentsError as exc:
        fail(exc.message)
    except (OSError, ValueError) as exc:
        fail(f"{data}: {exc}")
    if as_json:
        print(json.dumps({"token": token, "role": role, "subject": service, "expires_ms": expires_ms}))
    else:
        print(token)


@accounts_app.command("create")
def accounts_create_cmd(
    id_: Annotated[int | None, typer.Option("--id", help="the account id (u128)")] = None,
    ledger: Annotated[int, typer.Option("--ledger", help="the ledger (one currency), e.g. 156 for CNY")] = 0,
    code: Annotated[int, typer.Option("--code", help="the account's kind, your chart of accounts")] = 0,
    flags: Annotated[str, typer.Option("--flags", help="e.g. debits_must_not_exceed_credits,history")] = "",
    file: Annotated[Path | None, typer.Option("--file", help="a JSON array of accounts instead")] = None,
    url: Url = DEFAULT_URL,
    data: Data = None,
    token: Token = None,
) -> None:
    """Create one account (options) or a batch (``--file``). Exit 2 if any is refused."""
    if file is not None:
        payload = _load_file(file)
    elif id_ is None:
        fail("give --id (with --ledger and --code) or --file")
    else:
        payload = [{"id": id_, "ledger": ledger, "code": code, "flags": _flags(flags, AccountFlags)}]
    _report(_call(url, data, "accounts", payload, token)["results"], CreateAccountResult)


@pay_app.command("transfer")
def transfer_cmd(
    id_: Annotated[int | None, typer.Option("--id", help="the transfer id (u128), chosen by you")] = None,
    debit: Annotated[int, typer.Option("--debit", help="debit account id")] = 0,
    credit: Annotated[int, typer.Option("--credit", help="credit account id")] = 0,
    amount: Annotated[int, typer.Option("--amount", help="minor units (fen)")] = 0,
    ledger: Annotated[int, typer.Option("--ledger")] = 0,
    code: Annotated[int, typer.Option("--code")] = 0,
    flags: Annotated[str, typer.Option("--flags", help="e.g. pending, post_pending_transfer, linked")] = "",
    pending_id: Annotated[int, typer.Option("--pending-id", help="the pending transfer to post or void")] = 0,
    timeout: Annotated[int, typer.Option("--timeout", help="seconds, pending transfers only")] = 0,
    file: Annotated[Path | None, typer.Option("--file", help="a JSON array of transfers instead")] = None,
    url: Url = DEFAULT_URL,
    data: Data = None,
    token: Token = None,
) -> None:
    """Create one transfer (options) or a batch (``--file``). Exit 2 if any is refused."""
    if file is not None:
        payload = _load_file(file)
    elif id_ is None:
        fail("give --id (with --debit, --credit, --amount, --ledger, --code) or --file")
    else:
        payload = [
            {
                "id": id_,
                "debit_account_id": debit,
                "credit_account_id": credit,
                "amount": amount,
                "ledger": ledger,
                "code": code,
                "flags": _flags(flags, TransferFlags),
                "pending_id": pending_id,
                "timeout": timeout,
            }
        ]
    _report(_call(url, data, "transfers", payload, token)["results"], CreateTransferResult)


@pay_app.command("lookup")
def lookup_cmd(
    kind: Annotated[str, typer.Argument(help="accounts or transfers")],
    ids: Annotated[list[int], typer.Argument(help="ids")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
    url: Url = DEFAULT_URL,
    data: Data = None,
    token: Token = None,
) -> None:
    """Look up accounts or transfers by id (missing ones are left out)."""
    if kind not in ("accounts", "transfers"):
        fail("kind is 'accounts' or 'transfers'")
    rows = _call(url, data, f"lookup_{kind}", ids, token)
    _print_rows(rows, as_json)


@pay_app.command("history")
def history_cmd(
    account_id: Annotated[int, typer.Argument(help="the account")],
    limit: Annotated[int, typer.Option("--limit")] = 20,
    reversed_: Annotated[bool, typer.Option("--reversed", help="newest first")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    url: Url = DEFAULT_URL,
    data: Data = None,
    token: Token = None,
) -> None:
    """An account's transfers, oldest first (or newest with --reversed)."""
    q = {"account_id": account_id, "limit": limit, "reversed": reversed_}
    _print_rows(_call(url, data, "account_transfers", q, token), as_json)


@pay_app.command("query")
def query_cmd(
    kind: Annotated[str, typer.Argument(help="accounts or transfers")],
    ledger: Annotated[int, typer.Option("--ledger")] = 0,
    code: Annotated[int, typer.Option("--code")] = 0,
    user_data_128: Annotated[int, typer.Option("--user-data-128")] = 0,
    user_data_64: Annotated[int, typer.Option("--user-data-64")] = 0,
    user_data_32: Annotated[int, typer.Option("--user-data-32")] = 0,
    limit: Annotated[int, typer.Option("--limit")] = 20,
    reversed_: Annotated[bool, typer.Option("--reversed", help="newest first")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    url: Url = DEFAULT_URL,
    data: Data = None,
    token: Token = None,
) -> None:
    """Accounts or transfers whose fields equal every option given (0: any), oldest first."""
    if kind not in ("accounts", "transfers"):
        fail("kind is 'accounts' or 'transfers'")
    q = {
        "ledger": ledger,
        "code": code,
        "user_data_128": user_data_128,
        "user_data_64": user_data_64,
        "user_data_32": user_data_32,
        "limit": limit,
        "reversed": reversed_,
    }
    _print_rows(_call(url, data, f"query_{kind}", q, token), as_json)


def _print_rows(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows))
        return
    if not rows:
        console.print("(none found)")
        return
    table = Table(*rows[0].keys())
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    console.print(table)


def _load_file(file: Path) -> Any:
    def no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise ValueError(f"an object names the key {twice[0]!r} more than once (nothing sent)")
        return dict(pairs)

    try:
        payload = json.loads(file.read_text(), object_pairs_hook=no_repeats)
    except (OSError, ValueError) as exc:
        fail(f"{file}: {exc}")
    if not isinstance(payload, list):
        fail(f"{file}: expected a JSON array")
    return payload


@pay_app.command("bench")
def bench_cmd(
    transfers: Annotated[int, typer.Option("--transfers", help="transfers for the embedded engine")] = 2_000_000,
    pg_transfers: Annotated[int, typer.Option("--pg-transfers", help="transfers for PostgreSQL")] = 100_000,
    accounts: Annotated[int, typer.Option("--accounts")] = 100_000,
    batch: Annotated[int, typer.Option("--batch", help="transfers per batch")] = 2048,
    pgbench_seconds: Annotated[int, typer.Option("--pgbench-seconds")] = 15,
    pipelined: Annotated[
        int, typer.Option("--pipelined", help="transfers for the run with batches in flight (0: skip it)")
    ] = 1_000_000,
    in_flight: Annotated[int, typer.Option("--in-flight", help="batches in flight in that run")] = 4,
    snapshot_log_mib: Annotated[
        int, typer.Option("--snapshot-log-mib", help="MiB of log between snapshots (the service's default)")
    ] = SNAPSHOT_LOG_BYTES // 2**20,
    postgres: Annotated[
        str | None, typer.Option("--postgres", help="an existing PostgreSQL DSN (else one is started)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="end with one JSON line")] = False,
) -> None:
    """The same transfer workload on the embedded engine and PostgreSQL, and pgbench's TPC-B-like script."""
    from liangcao.payments.bench import BenchConfig, run_bench

    cfg = BenchConfig(
        transfers=transfers,
        pg_transfers=pg_transfers,
        accounts=accounts,
        batch=batch,
        pgbench_seconds=pgbench_seconds,
        postgres=postgres,
        pipelined_transfers=pipelined,
        in_flight=in_flight,
        snapshot_log_bytes=snapshot_log_mib * 2**20,
    )
    result = run_bench(cfg, console)
    if as_json:
        print(json.dumps(result))
