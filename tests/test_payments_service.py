"""The payments service end to end: `liangcao pay start` in its own process, the CLI and the HTTP API,
on the embedded engine and on PostgreSQL; and a small run of `liangcao pay bench`. Every call presents the
service's operator token (DATA/operator.token); outsiders are tests/test_payments_identity.py."""

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
from typer.testing import CliRunner

from liangcao import limits
from liangcao.cli import app
from liangcao.codes import Code
from liangcao.procs import free_port


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [sys.executable, "-m", "liangcao.cli", "pay", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )
    if check and r.returncode != 0:
        raise AssertionError(f"liangcao pay {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


def cli_here(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``cli`` run in this process: the same command code against the service's own process, without the ~1.5 s
    interpreter start and import (``cli`` keeps the real entry point covered)."""
    r = CliRunner().invoke(app, ["pay", *args], env={"COLUMNS": "200"})
    # An exception escaping the command would be a traceback in a real process: never expected.
    assert r.exception is None or isinstance(r.exception, SystemExit), (args, r.exc_info)
    done = subprocess.CompletedProcess(["liangcao", "pay", *args], r.exit_code, r.stdout, r.stderr)
    if check and done.returncode != 0:
        raise AssertionError(f"liangcao pay {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


class Service:
    """``liangcao pay start --data DATA *args`` in its own process; ``http`` presents its operator token."""

    def __init__(self, data: Path, *args: str) -> None:
        self.port = free_port(0)
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = data
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "liangcao.cli",
                "pay",
                "start",
                "--port",
                str(self.port),
                "--data",
                str(data),
                *args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/v1/health", timeout=1).status_code == 200:
                    self.token = (data / "operator.token").read_text().strip()
                    self.http = httpx.Client(headers={"Authorization": f"Bearer {self.token}"}, timeout=60)
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                assert self.proc.stderr is not None
                raise AssertionError("service exited: " + self.proc.stderr.read().decode())
            time.sleep(0.05)
        raise AssertionError("service did not start")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if hasattr(self, "http"):
            self.http.close()
        self.proc.send_signal(sig)
        self.proc.wait(30)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@pytest.fixture(params=["embedded", "postgres"])
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Service]:
    if request.param == "embedded":
        s = Service(tmp_path / "pay")
    else:
        from liangcao.payments.postgres import PostgresBackend

        dsn = request.getfixturevalue("pg_dsn")
        with PostgresBackend(dsn) as pg:
            pg.reset()
        s = Service(tmp_path / "pay", "--postgres", dsn)  # DATA holds the operator token and session key
    yield s
    s.kill(signal.SIGTERM)


def test_cli_and_http_round_trip(service: Service) -> None:
    url = ("--url", service.url, "--token", service.token)
    # the real entry point once; the rest in this process
    cli("accounts", "create", "--id", "1", "--ledger", "156", "--code", "1", *url)
    cli_here(
        "accounts",
        "create",
        "--id",
        "2",
        "--ledger",
        "156",
        "--code",
        "2",
        "--flags",
        "debits_must_not_exceed_credits",
        *url,
    )
    cli_here("accounts", "create", "--id", "3", "--ledger", "156", "--code", "3", "--flags", "history", *url)
    cli_here(
        "transfer",
        "--id",
        "10",
        "--debit",
        "1",
        "--credit",
        "2",
        "--amount",
        "5000",
        "--ledger",
        "156",
        "--code",
        "1",
        *url,
    )
    r = cli_here(
        "transfer",
        "--id",
        "11",
        "--debit",
        "2",
        "--credit",
        "3",
        "--amount",
        "9000",
        "--ledger",
        "156",
        "--code",
        "1",
        *url,
        check=False,
    )
    assert r.returncode == 2 and "exceeds_credits" in r.stdout
    cli_here(
        "transfer",
        "--id",
        "12",
        "--debit",
        "2",
        "--credit",
        "3",
        "--amount",
        "3000",
        "--ledger",
        "156",
        "--code",
        "1",
        "--flags",
        "pending",
        "--timeout",
        "60",
        *url,
    )
    cli_here(
        "transfer", "--id", "13", "--pending-id", "12", "--amount", "2500", "--flags", "post_pending_transfer", *url
    )
    accounts = json.loads(cli_here("lookup", "accounts", "1", "2", "3", "99", "--json", *url).stdout)
    assert [(a["id"], a["debits_posted"], a["credits_posted"]) for a in accounts] == [
        (1, 5000, 0),
        (2, 2500, 5000),
        (3, 0, 2500),
    ]
    transfers = json.loads(cli_here("lookup", "transfers", "12", "13", "--json", *url).stdout)
    assert [t["status"] for t in transfers] == ["posted", None]
    hist = json.loads(cli_here("history", "2", "--json", *url).stdout)
    assert [t["id"] for t in hist] == [10, 12, 13]
    r = cli_here(
        "transfer",
        "--id",
        "14",
        "--debit",
        "1",
        "--credit",
        "2",
        "--amount",
        "1",
        "--ledger",
        "156",
        "--code",
        "1",
        "--flags",
        "bogus",
        *url,
        check=False,
    )
    assert r.returncode == 1 and "unknown flag" in r.stderr

    # The HTTP API directly.
    batch = [
        {"id": 20 + k, "debit_account_id": 1, "credit_account_id": 3, "amount": 1, "ledger": 156, "code": 1}
        for k in range(5)
    ]
    batch[2]["ledger"] = 840
    resp = service.http.post(service.url + "/v1/transfers", json=batch)
    assert resp.status_code == 200
    body = resp.json()
    assert body["results"] == [0, 0, 37, 0, 0]
    assert body["failed"] == [{"index": 2, "code": 37, "result": "transfer_must_have_the_same_ledger_as_accounts"}]
    again = service.http.post(service.url + "/v1/transfers", json=batch).json()  # idempotent, and says so
    assert again["results"] == [60, 60, 37, 60, 60] and again["exists"] == [0, 1, 3, 4]
    assert [f["index"] for f in again["failed"]] == [2]
    assert service.http.get(service.url + "/v1/accounts/3").json()["credits_posted"] == 2504
    balances = service.http.get(service.url + "/v1/accounts/3/balances", params={"limit": 2, "reversed": True}).json()
    assert [b["credits_posted"] for b in balances] == [2504, 2503]


def test_http_errors_are_json_and_change_nothing(service: Service) -> None:
    u = service.url
    before = service.http.post(u + "/v1/accounts/lookup", json={"ids": [1]}).json()
    cases = [
        (service.http.post(u + "/v1/transfers", content=b"[not json"), 400, Code.BAD_ENCODING),
        (service.http.post(u + "/v1/transfers", json=[{"id": 1, "amount": 1.5}]), 400, Code.INVALID_ARGUMENT),
        (service.http.post(u + "/v1/transfers", json=[{"id": 1, "colour": "red"}]), 400, Code.INVALID_ARGUMENT),
        (
            service.http.post(
                u + "/v1/accounts", json=[{"id": 1, "ledger": 1, "code": 1}] * (limits.pay_batch_events_max + 1)
            ),
            413,
            Code.TOO_LARGE,
        ),
        (service.http.get(u + "/v1/transfers/424242"), 404, Code.NOT_FOUND),
        (
            service.http.get(u + "/v1/accounts/1/transfers", params={"limit": limits.pay_query_limit_max + 1}),
            400,
            Code.INVALID_ARGUMENT,
        ),
        (service.http.get(u + "/v1/accounts/abc"), 400, Code.INVALID_ARGUMENT),
    ]
    for r, status, code in cases:
        assert r.status_code == status, r.text
        assert r.json()["code"] == code and r.json()["message"], r.text
    assert service.http.post(u + "/v1/accounts/lookup", json={"ids": [1]}).json() == before
    spec = service.http.get(u + "/openapi.json").json()
    assert "/v1/transfers" in spec["paths"] and "TransferIn" in spec["components"]["schemas"]


def test_duplicate_keys_and_values_too_wide_are_refused_whole(service: Service) -> None:
    u = service.url
    assert service.http.post(u + "/v1/accounts", json=[{"id": i, "ledger": 1, "code": 1} for i in (1, 2)]).json()[
        "results"
    ] == [0, 0]
    ok = '{"id": 10, "debit_account_id": 1, "credit_account_id": 2, "amount": 5, "ledger": 1, "code": 1}'
    seconds = [
        # The same key twice: one parser would book 5, another 500; neither is booked.
        '"id": 11, "debit_account_id": 1, "credit_account_id": 2, "amount": 5, "amount": 500, "ledger": 1, "code": 1',
        '"id": 11, "\\u0069d": 12, "debit_account_id": 1, "credit_account_id": 2, "ledger": 1, "code": 1',
        # A value wider than its field.
        f'"id": 11, "debit_account_id": 1, "credit_account_id": 2, "amount": {1 << 128}, "ledger": 1, "code": 1',
        '"id": 11, "debit_account_id": 1, "credit_account_id": 2, "amount": 1, "ledger": 1, "code": 70000',
    ]
    bodies = ["[" + ok + ", {" + second + "}]" for second in seconds]
    for text in bodies:
        r = service.http.post(u + "/v1/transfers", content=text.encode(), headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["code"] == Code.INVALID_ARGUMENT, r.text
        assert "nothing applied" in r.json()["message"], r.text
    r = service.http.post(u + "/v1/accounts/lookup", content=b'{"ids": [1], "ids": [2]}')
    assert r.status_code == 400 and "more than once" in r.json()["message"]
    (a,) = service.http.post(u + "/v1/accounts/lookup", json={"ids": [1]}).json()
    assert a["debits_posted"] == 0  # nothing was booked, not even the good first transfer
    assert service.http.post(u + "/v1/transfers", content=f"[{ok}]".encode()).json()["results"] == [0]


def test_queries_over_http(service: Service) -> None:
    u = service.url
    accounts = [{"id": i, "ledger": 1, "code": i, "flags": 8 if i == 2 else 0} for i in (1, 2, 3)]
    assert service.http.post(u + "/v1/accounts", json=accounts).json()["results"] == [0, 0, 0]
    batch = [
        {
            "id": 10 + k,
            "debit_account_id": 1 + k % 2,
            "credit_account_id": 3,
            "amount": 1 + k,
            "ledger": 1,
            "code": 1,
            "user_data_32": k % 2,
        }
        for k in range(4)
    ]
    assert service.http.post(u + "/v1/transfers", json=batch).json()["results"] == [0, 0, 0, 0]
    ids = [t["id"] for t in service.http.get(u + "/v1/transfers", params={"user_data_32": 1}).json()]
    assert ids == [11, 13]
    assert [a["id"] for a in service.http.get(u + "/v1/accounts", params={"code": 2}).json()] == [2]
    assert [a["id"] for a in service.http.get(u + "/v1/accounts", params={"reversed": True, "limit": 2}).json()] == [
        3,
        2,
    ]
    debits = service.http.get(u + "/v1/accounts/2/balances", params={"credits": False}).json()
    assert [b["debits_posted"] for b in debits] == [2, 6]
    assert service.http.get(u + "/v1/accounts/2/transfers", params={"limit": 0}).json() == []


def test_service_kill_9_keeps_what_it_acknowledged(tmp_path: Path) -> None:
    data = tmp_path / "pay"
    s = Service(data)
    try:
        accounts = [{"id": i, "ledger": 1, "code": 1} for i in (1, 2)]
        assert s.http.post(s.url + "/v1/accounts", json=accounts).json()["results"] == [0, 0]
        for k in range(30):
            batch = [
                {
                    "id": 1000 * k + j + 1,
                    "debit_account_id": 1,
                    "credit_account_id": 2,
                    "amount": 1,
                    "ledger": 1,
                    "code": 1,
                }
                for j in range(100)
            ]
            assert s.http.post(s.url + "/v1/transfers", json=batch).json()["results"] == [0] * 100
    finally:
        s.kill()
    with_data = json.loads(cli("lookup", "accounts", "2", "--json", "--data", str(data)).stdout)
    assert with_data[0]["credits_posted"] == 3000


def test_pay_bench_small_run(pg_dsn: str) -> None:
    r = cli(
        "bench",
        "--transfers",
        "20000",
        "--pg-transfers",
        "2000",
        "--accounts",
        "1000",
        "--batch",
        "1000",
        "--pgbench-seconds",
        "1",
        "--pipelined",
        "20000",
        "--snapshot-log-mib",
        "1",
        "--postgres",
        pg_dsn,
        "--json",
    )
    result = json.loads(r.stdout.strip().splitlines()[-1])
    keys = ("embedded_tps", "embedded_pipelined_tps", "postgres_tps", "pgbench_tps", "ratio_embedded_to_pgbench")
    for key in (*keys, "p99_batch_ms"):
        assert result[key] > 0
    assert result["transfers"] == 20000 and result["pg_transfers"] == 2000
    assert result["snapshots"] >= 1 and result["batches_during_snapshots"] >= 1  # the service's cadence, scaled
    assert set(result["us_per_transfer"]) == {"prepare", "apply", "write", "fsync", "other"}
    assert "cores" in r.stdout and "peak RSS" in r.stdout


def test_the_service_expires_pending_transfers_without_traffic(tmp_path: Path) -> None:
    s = Service(tmp_path / "pay")
    try:
        accounts = [{"id": i, "ledger": 1, "code": 1} for i in (1, 2)]
        assert s.http.post(s.url + "/v1/accounts", json=accounts).json()["results"] == [0, 0]
        hold = [
            {
                "id": 7,
                "debit_account_id": 1,
                "credit_account_id": 2,
                "amount": 5,
                "ledger": 1,
                "code": 1,
                "flags": 2,
                "timeout": 1,
            }
        ]
        assert s.http.post(s.url + "/v1/transfers", json=hold).json()["results"] == [0]
        assert s.http.get(s.url + "/v1/transfers/7").json()["status"] == "pending"
        deadline = time.time() + 10
        while s.http.get(s.url + "/v1/transfers/7").json()["status"] != "expired":
            assert time.time() < deadline, "pending transfer never expired"
            time.sleep(0.2)
        assert s.http.get(s.url + "/v1/accounts/1").json()["debits_pending"] == 0
    finally:
        s.kill()


def test_cli_file_with_a_key_twice_is_refused_before_sending(tmp_path: Path) -> None:
    batch = tmp_path / "batch.json"
    batch.write_text('[{"id": 1, "ledger": 1, "code": 1, "code": 2}]')
    r = cli("accounts", "create", "--file", str(batch), "--data", str(tmp_path / "pay"), check=False)
    assert r.returncode == 1 and "'code' more than once" in r.stderr
    r = cli("lookup", "accounts", "1", "--json", "--data", str(tmp_path / "pay"))
    assert json.loads(r.stdout) == []


def test_wire_forms_match_the_engine_types_field_for_field() -> None:
    # The HTTP decoder builds Account/Transfer positionally from AccountIn/TransferIn.
    import msgspec

    from liangcao.payments.http import AccountIn, TransferIn
    from liangcao.payments.types import Account, Transfer

    for wire, kind in ((AccountIn, Account), (TransferIn, Transfer)):
        assert [f.name for f in msgspec.structs.fields(wire)] == [f.name for f in msgspec.structs.fields(kind)]
