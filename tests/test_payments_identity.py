"""Who may call the payments service: attacks from outside (no token, forged, altered, expired, another
service's, read-only writing, oversized or doubled header, token in the query string), each refused with a
stable code before anything is read or written; and every caller that must keep working (the operator token,
a service session, a read-only dashboard, the CLI with --token and LIANGCAO_PAY_TOKEN, the payout adapter).

The server is the real service (uvicorn on 127.0.0.1 over the embedded engine) in a thread; the CLI tests
run ``liangcao pay start`` as a process and the ``liangcao pay`` commands' typer app against it."""

from __future__ import annotations

import signal
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from liangcao import codes, sessions
from liangcao.adapters.payout import HttpPayments
from liangcao.payments import Engine
from liangcao.payments.cli import pay_app
from liangcao.payments.errors import PayCode, PaymentsError
from liangcao.payments.http import create_app
from liangcao.payments.identity import REALM, identity_in
from liangcao.payments.types import Account
from test_cover_payments_http import start_service
from test_credit_attacks import serve

ACCOUNTS = [{"id": 1, "ledger": 156, "code": 1}, {"id": 2, "ledger": 156, "code": 1}]
MOVE = [{"id": 10, "debit_account_id": 1, "credit_account_id": 2, "amount": 5_000, "ledger": 156, "code": 1}]
HOLD = [{"id": 11, "debit_account_id": 1, "credit_account_id": 2, "amount": 7, "ledger": 156, "code": 1, "flags": 2}]
VOID = [{"id": 12, "pending_id": 11, "flags": 8}]

RULES = {"resources": [{"name": "transfers"}, {"name": "accounts"}, {"name": "queries"}]}
#: Every route of the service: (method, path, JSON body or None, who may: "read", "write" or "operator").
ROUTES: list[tuple[str, str, object, str]] = [
    ("POST", "/v1/accounts", [{"id": 99, "ledger": 156, "code": 1}], "write"),
    ("POST", "/v1/transfers", [{**MOVE[0], "id": 98}], "write"),
    ("POST", "/v1/transfers", [{**VOID[0], "id": 97}], "write"),
    ("POST", "/v1/pulse", None, "write"),
    ("PUT", "/v1/flow/rules", RULES, "operator"),
    ("POST", "/v1/accounts/lookup", {"ids": [1, 2]}, "read"),
    ("POST", "/v1/transfers/lookup", {"ids": [10]}, "read"),
    ("GET", "/v1/accounts/1", None, "read"),
    ("GET", "/v1/transfers/10", None, "read"),
    ("GET", "/v1/accounts/1/transfers", None, "read"),
    ("GET", "/v1/accounts/1/balances", None, "read"),
    ("GET", "/v1/accounts", None, "read"),
    ("GET", "/v1/transfers", None, "read"),
    ("GET", "/v1/flow", None, "read"),
    ("GET", "/v1/flow/rules", None, "read"),
    ("GET", "/v1/flow/metrics", None, "read"),
    ("GET", "/openapi.json", None, "read"),
]


@dataclass
class Live:
    url: str
    data: Path
    operator: str
    http: httpx.Client  # no credentials of its own

    def auth(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def session(self, role: str, name: str = "checkout-gateway", ttl_s: int = 600) -> str:
        return identity_in(self.data).issue(role, name, ttl_s)[0]

    def state(self) -> object:
        """Everything a refused request could have changed: accounts and transfers, read as the operator."""
        h = self.auth(self.operator)
        return (
            self.http.get("/v1/accounts", headers=h).json(),
            self.http.get("/v1/transfers", headers=h).json(),
        )


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    data = tmp_path / "pay"
    with Engine(data) as engine, serve(create_app(engine, identity=identity_in(data), expire_every_s=0)) as http:
        operator = (data / "operator.token").read_text().strip()
        live = Live(str(http.base_url).rstrip("/"), data, operator, http)
        h = live.auth(operator)
        assert http.post("/v1/accounts", json=ACCOUNTS, headers=h).json()["results"] == [0, 0]
        assert http.post("/v1/transfers", json=MOVE + HOLD, headers=h).json()["results"] == [0, 0]
        yield live


def refused(r: httpx.Response, status: int, code: int) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["code"] == code and body["message"] and "\n" not in body["message"], body
    if status == 401:
        assert r.headers["www-authenticate"].startswith("Bearer")


def send(live: Live, method: str, path: str, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
    return live.http.request(method, path, json=body, headers=headers or {})


def test_the_folder_holds_the_operator_token_and_session_key_for_its_owner_only(tmp_path: Path) -> None:
    identity_in(tmp_path / "pay")
    for name in ("operator.token", "session.key"):
        assert stat.S_IMODE((tmp_path / "pay" / name).stat().st_mode) == 0o600
    again = identity_in(tmp_path / "pay")  # read, not remade: tokens issued before a restart stay good
    token, _ = identity_in(tmp_path / "pay").issue("service", "credit", 60)
    assert again.caller(f"Bearer {token}").subject == "credit"


def test_the_codes_are_registered_in_the_payments_range() -> None:
    assert codes.info(PayCode.UNAUTHENTICATED) == codes.CodeInfo(3500, "UNAUTHENTICATED", "payments", 401)
    assert codes.http_status(PayCode.READ_ONLY) == 403 and codes.name_of(3501) == "READ_ONLY"
    assert codes.http_status(PayCode.OPERATOR_ONLY) == 403


def test_health_is_open_and_every_other_route_wants_a_token(live: Live) -> None:
    assert live.http.get("/v1/health").json()["status"] == "ok"
    before = live.state()
    for method, path, body, _ in ROUTES:
        refused(send(live, method, path, body), 401, PayCode.UNAUTHENTICATED)
    # unknown routes and methods too: an outsider learns nothing about what exists
    refused(live.http.delete("/v1/accounts/1"), 401, PayCode.UNAUTHENTICATED)
    refused(live.http.get("/v1/health/"), 401, PayCode.UNAUTHENTICATED)
    refused(live.http.get("/docs"), 401, PayCode.UNAUTHENTICATED)
    assert live.state() == before


def test_the_operator_token_may_do_everything_and_a_service_session_all_but_the_rules(live: Live) -> None:
    for token in (live.operator, live.session("service")):
        for method, path, body, who in ROUTES:
            r = send(live, method, path, body, live.auth(token))
            if who == "operator" and token != live.operator:
                refused(r, 403, PayCode.OPERATOR_ONLY)
            else:
                assert r.status_code == 200, (path, r.text)
    # the service session moved money: the second batch's ids answered "exists" (same fields)
    h = live.auth(live.session("service", "payout-adapter"))
    assert live.http.get("/v1/transfers/98", headers=h).json()["amount"] == 5_000
    assert live.http.get("/v1/transfers/11", headers=h).json()["status"] == "voided"


def test_a_read_only_session_reads_and_writes_nothing(live: Live) -> None:
    h = live.auth(live.session("read-only", "auditor"))
    before = live.state()
    rules = live.http.get("/v1/flow/rules", headers=h).json()
    for method, path, body, who in ROUTES:
        r = send(live, method, path, body, h)
        if who == "read":
            assert r.status_code == 200, (path, r.text)
        else:
            refused(r, 403, PayCode.OPERATOR_ONLY if who == "operator" else PayCode.READ_ONLY)
            assert "auditor" in r.json()["message"]
    assert live.state() == before
    assert live.http.get("/v1/flow/rules", headers=h).json() == rules
    assert live.http.get("/v1/transfers/11", headers=h).json()["status"] == "pending"  # not voided


def test_forged_altered_expired_and_foreign_tokens_are_refused(live: Live, tmp_path: Path) -> None:
    good = live.session("service")
    body, _, mac = good.rpartition(".")
    secret = sessions.key_secret(live.data)
    past = sessions.wall_ms() - 3_600_000
    expired = identity_in(live.data, now_ms=lambda: past).issue("service", "gateway", 60)[0]
    credit = sessions.SessionKey(secret, realm="credit").issue("operator", "operator", 600)[0]  # same secret!
    other = identity_in(tmp_path / "elsewhere").issue("service", "gateway", 600)[0]  # another deployment
    # a session naming a role this service does not know, MAC'd under the right key and realm
    foreign_role = sessions.SessionKey(secret, realm=REALM).issue("operator", "x", 600)[0]
    flipped = body + "." + ("A" if mac[0] != "A" else "B") + mac[1:]
    forged_claims = sessions.PREFIX + sessions._b64(b"\x95\xa7service\xa1x\xcf" + b"\xff" * 8 + b"\xa0\x00") + "." + mac
    cases = {
        "random": "lc1.abc.def",
        "flipped MAC": flipped,
        "forged claims": forged_claims,
        "expired": expired,
        "credit's realm": credit,
        "other deployment's key": other,
        "unknown role": foreign_role,
        "operator token, one char off": live.operator[:-1] + ("a" if live.operator[-1] != "a" else "b"),
        "operator token prefix": live.operator[:20],
    }
    before = live.state()
    for what, token in cases.items():
        for method, path, payload, _ in ROUTES[:5]:
            r = send(live, method, path, payload, live.auth(token))
            assert r.status_code == 401, (what, path, r.text)
            refused(r, 401, PayCode.UNAUTHENTICATED)
            assert token not in r.text  # the message never echoes the token
    assert live.state() == before


def test_the_token_counts_only_in_the_authorization_header(live: Live) -> None:
    before = live.state()
    good = live.operator
    for params in ({"token": good}, {"access_token": good}, {"authorization": f"Bearer {good}"}):
        refused(live.http.post("/v1/transfers", params=params, json=MOVE), 401, PayCode.UNAUTHENTICATED)
    refused(live.http.get("/v1/accounts", headers={"Cookie": f"token={good}"}), 401, PayCode.UNAUTHENTICATED)
    for header in ("Bearer", "", f"Basic {good}", good, f"Bearer  {good}", f"Bearer {good} x", f"Token {good}"):
        r = live.http.post("/v1/transfers", json=MOVE, headers={"Authorization": header})
        refused(r, 401, PayCode.UNAUTHENTICATED)
    # two Authorization headers: refused, whichever comes first
    for pair in ([good, "junk"], ["junk", good]):
        headers = [("Authorization", f"Bearer {t}") for t in pair]
        refused(live.http.post("/v1/transfers", json=MOVE, headers=headers), 401, PayCode.UNAUTHENTICATED)
    assert live.state() == before
    session = live.session("service")  # the scheme's name is case-insensitive (RFC 9110 §11.1) for sessions
    assert live.http.get("/v1/accounts", headers={"Authorization": f"bearer {session}"}).status_code == 200


def test_oversized_and_binary_headers_are_refused_never_a_500(live: Live) -> None:
    before = live.state()
    for size in (601, 5_000):
        r = live.http.post("/v1/transfers", json=MOVE, headers={"Authorization": "Bearer " + "a" * size})
        refused(r, 401, PayCode.UNAUTHENTICATED)
        assert "authorization_chars_max" in r.json()["message"]
    try:  # beyond what the HTTP server reads at all: refused by it (4xx) or the connection closed
        r = live.http.post("/v1/transfers", json=MOVE, headers={"Authorization": "Bearer " + "a" * 200_000})
        assert 400 <= r.status_code < 500
    except httpx.HTTPError:
        pass
    raw = [(b"Authorization", b"Bearer \xff\xfe" + live.operator.encode()[2:])]
    refused(live.http.post("/v1/transfers", json=MOVE, headers=raw), 401, PayCode.UNAUTHENTICATED)
    assert live.state() == before


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=120), st.integers(min_value=0, max_value=200), st.integers(min_value=0, max_value=255))
def test_no_header_but_the_real_ones_authenticates(tmp_path_factory: pytest.TempPathFactory, junk: str, at: int,
                                                   byte: int) -> None:  # fmt: skip
    home = tmp_path_factory.getbasetemp() / "identity-property"
    identity = identity_in(home)
    operator = (home / "operator.token").read_text().strip()
    good = identity.issue("service", "gateway", 600)[0]
    for header in (junk, f"Bearer {junk}"):
        if header.strip() not in (f"Bearer {operator}", f"Bearer {good}"):
            with pytest.raises(PaymentsError) as exc:
                identity.caller(header)
            assert exc.value.code == PayCode.UNAUTHENTICATED
    # any one character of a good token changed: refused (or, for a spare base64 bit, still exactly us)
    for token in (good, operator):
        i = at % len(token)
        altered = token[:i] + chr(byte % 95 + 32) + token[i + 1 :]
        if altered != token:
            with pytest.raises(PaymentsError):
                identity.caller(f"Bearer {altered}")


def test_a_remembered_session_still_expires_and_the_memory_is_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [sessions.wall_ms()]
    identity = identity_in(tmp_path / "pay", now_ms=lambda: clock[0])
    token, expires_ms = identity.issue("service", "gateway", 60)
    assert identity.caller(f"Bearer {token}").subject == "gateway"
    assert identity.caller(f"Bearer {token}").subject == "gateway"  # remembered
    clock[0] = expires_ms
    with pytest.raises(PaymentsError, match="expired") as exc:
        identity.caller(f"Bearer {token}")
    assert exc.value.code == PayCode.UNAUTHENTICATED
    monkeypatch.setattr(sessions, "verified_entries_max", 3)
    for k in range(10):
        identity.caller(f"Bearer {identity.issue('read-only', f'd{k}', 60)[0]}")
        assert len(identity._verified) <= 3
    with pytest.raises(PaymentsError):
        identity.caller(["Bearer " + token, "Bearer " + token])  # two headers, even the same one twice


def test_the_check_costs_microseconds(tmp_path: Path) -> None:
    identity = identity_in(tmp_path / "pay")
    header = f"Bearer {identity.issue('service', 'gateway', 600)[0]}"
    operator = f"Bearer {(tmp_path / 'pay' / 'operator.token').read_text().strip()}"
    for h in (header, operator):
        n = 2_000
        t = time.perf_counter()
        for _ in range(n):
            identity.caller(h)
        per_call_us = (time.perf_counter() - t) / n * 1e6
        assert per_call_us < 500, per_call_us  # a few microseconds on a quiet core; generous for a shared one


def test_the_payout_adapters_client_presents_its_token(live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIANGCAO_PAY_TOKEN", raising=False)
    nobody = HttpPayments(live.url)
    with pytest.raises(OSError, match="401"):
        nobody.create_accounts([Account(50, ledger=156, code=1)])
    nobody.close()
    reader = HttpPayments(live.url, token=live.session("read-only", "dashboard"))
    with pytest.raises(OSError, match="403"):
        reader.create_accounts([Account(50, ledger=156, code=1)])
    reader.close()
    monkeypatch.setenv("LIANGCAO_PAY_TOKEN", live.session("service", "payout-adapter"))
    adapter = HttpPayments(live.url)  # from the environment, as the adapter's process reads it
    assert adapter.create_accounts([Account(50, ledger=156, code=1)]) == [0]
    adapter.close()


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def pay(*args: str, env: dict[str, str] | None = None) -> Ran:
    """``liangcao pay ARGS`` in this process (the real typer app; the service it talks to is a process)."""
    environment: dict[str, str | None] = {"LIANGCAO_PAY_TOKEN": None, "COLUMNS": "200", **(env or {})}
    r = CliRunner().invoke(pay_app, list(args), env=environment)
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return Ran(r.exit_code, r.stdout, r.stderr)


def test_the_cli_start_token_and_url_commands(tmp_path: Path) -> None:
    data = tmp_path / "pay"
    proc, url = start_service(data)
    try:
        assert stat.S_IMODE((data / "operator.token").stat().st_mode) == 0o600
        create = ("accounts", "create", "--id", "1", "--ledger", "156", "--code", "1", "--url", url)
        r = pay(*create)
        assert r.returncode == 1 and "LIANGCAO_PAY_TOKEN" in r.stderr and "Traceback" not in r.stderr
        r = pay("token", "--data", str(tmp_path / "typo"), "--service", "gateway")
        assert r.returncode == 1 and "session.key" in r.stderr and not (tmp_path / "typo").exists()
        r = pay("token", "--data", str(data), "--service", "gateway", "--role", "admin")
        assert r.returncode == 1 and "role must be one of service, read-only" in r.stderr
        r = pay("token", "--data", str(data), "--service", "has space")
        assert r.returncode == 1 and "subject" in r.stderr
        service = pay("token", "--data", str(data), "--service", "gateway", "--ttl-s", "600").stdout.strip()
        reader = pay("token", "--data", str(data), "--service", "auditor", "--role", "read-only").stdout.strip()
        assert pay(*create, env={"LIANGCAO_PAY_TOKEN": service}).returncode == 0
        assert pay(*create[:-2], "--id", "2", "--ledger", "156", "--code", "1", "--url", url, "--token",
                   (data / "operator.token").read_text()).returncode == 0  # fmt: skip
        r = pay("transfer", "--id", "5", "--debit", "1", "--credit", "2", "--amount", "9", "--ledger", "156",
                "--code", "1", "--url", url, "--token", reader)  # fmt: skip
        assert r.returncode == 1 and "3501" in r.stderr
        r = pay("lookup", "accounts", "1", "2", "--json", "--url", url, env={"LIANGCAO_PAY_TOKEN": reader})
        assert r.returncode == 0 and '"debits_posted": 0' in r.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    # with --data the CLI opens the folder itself: no token
    r = pay("lookup", "accounts", "1", "2", "--json", "--data", str(data))
    assert r.returncode == 0 and r.stdout.count('"id"') == 2
