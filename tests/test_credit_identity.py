"""Who may call the credit service's HTTP API (``liangcao.credit.identity``, docs/credit.md "Who is calling"),
attacked as an outsider would: no token, forged, expired, another key's or another service's token, another
role's, a shopper buying on installments in another's name, a merchant drawing another's offer, reading
another's line or loan, running the day's batch, an oversized header, junk headers. Every refusal is 401
``UNAUTHENTICATED`` (3429) or 403 ``FORBIDDEN`` (3430) as JSON, never a 500, and writes nothing.

Real servers (uvicorn on 127.0.0.1 in a thread), the embedded payments engine (no fsync: tests only).
"""

from __future__ import annotations

import hashlib
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from liangcao import codes, sessions
from liangcao.checkout.identity import session_key as checkout_session_key
from liangcao.credit.cli import app as credit_cli
from liangcao.credit.errors import CreditCode
from liangcao.credit.http import create_app, router
from liangcao.credit.identity import identity_in, operator_token, session_key
from liangcao.credit.service import CreditService, ManualDays, account_id
from liangcao.payments import Engine
from test_credit_attacks import seed_sales, serve

UNAUTH, FORBID = int(CreditCode.UNAUTHENTICATED), int(CreditCode.FORBIDDEN)


class World:
    """A credit service with ann's plan A1 from shop, tea's drawn loan and a second offer, mug (no loan)."""

    def __init__(self, home: Path, engine: Engine) -> None:
        self.home = home
        self.clock = ManualDays(20_000)
        self.s = CreditService(engine, home / "credit.db", clock=self.clock, fsync=False)
        self.engine = engine
        self.s.checkout_installments("A1", "ann", "shop", 30_000, 3)
        self.s.deposit("ann", 50_000, "seed")
        for m in ("tea", "mug"):
            seed_sales(self.s, m, self.clock())
        self.offer = self.s.apply_loan("tea").offer_id
        self.loan = self.s.draw_loan(self.offer, 100_000).loan_id
        self.mug_offer = self.s.apply_loan("mug").offer_id
        key = session_key(home)
        self.h = {
            name: {"Authorization": f"Bearer {key.issue(role, name, 3600)[0]}"}
            for role, name in (
                ("shopper", "ann"),
                ("shopper", "bob"),
                ("merchant", "shop"),
                ("merchant", "tea"),
                ("merchant", "mug"),
                ("operator", "ops"),
            )
        }
        self.h["optoken"] = {"Authorization": f"Bearer {operator_token(home)}"}

    def snapshot(self) -> str:
        """Everything the service stored (records, operations) and the money of the accounts in play."""
        # the service holds its records exclusively (a second service is refused): read through its own
        # connection, under its lock
        with self.s._lock:
            rows = self.s._db.execute("SELECT kind, key, owner, body FROM records ORDER BY kind, key").fetchall()
            ops = self.s._db.execute("SELECT count(*) FROM ops").fetchone()
        ids = [account_id("line", "ann"), account_id("line", "bob")]
        money = [(a.debits_posted, a.credits_posted) for a in self.engine.lookup_accounts(ids)]
        return hashlib.sha256(repr((rows, ops, money)).encode()).hexdigest()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with Engine(tmp_path / "pay", fsync=False) as engine:
        w = World(tmp_path, engine)
        yield w
        w.s.close()


@pytest.fixture
def client(world: World) -> Iterator[httpx.Client]:
    with serve(create_app(world.s)) as c:
        yield c


def refused(r: httpx.Response, code: int) -> dict[str, Any]:
    assert r.status_code == codes.http_status(code), (r.request.method, r.request.url, r.status_code, r.text)
    body: dict[str, Any] = r.json()
    assert body["code"] == code and set(body) == {"code", "name", "message"} and "\n" not in body["message"]
    if code == UNAUTH:
        assert r.headers["www-authenticate"] == 'Bearer realm="liangcao-credit"'
    return body


# --------------------------------------------------------------------------------------------- route table

#: (method, path, body, who may): every route of the router. The rest are refused with 403 and write nothing.
SHOPPER, OWN_MERCHANT = "ann", "shop"


def routes(w: World) -> list[tuple[str, str, dict[str, Any] | None, set[str]]]:
    op = {"ops", "optoken"}
    buy = {"order_id": "X1", "shopper": "ann", "merchant": "shop", "amount_fen": 30_000, "periods": 3}
    return [
        ("POST", "/quote", {"amount_fen": 30_000, "periods": 3}, {"ann", "bob", "shop", "tea", "mug"} | op),
        ("POST", "/installments", buy, {"ann"} | op),
        ("POST", "/plans", {**buy, "order_id": "X2", "funding_transfer_id": 1}, op),
        ("GET", "/shoppers/ann/line-account", None, {"ann"} | op),
        ("GET", "/plans/A1", None, {"ann", "shop"} | op),
        ("POST", "/plans/A1/repay", {"amount_fen": 100}, {"ann"} | op),
        ("POST", "/refunds", {"order_id": "A1", "amount_fen": 100}, {"shop"} | op),
        ("GET", "/shoppers/ann", None, {"ann"} | op),
        ("GET", "/shoppers/ann/statement", None, {"ann"} | op),
        ("POST", "/shoppers/ann/deposit", {"amount_fen": 100, "deposit_id": "d"}, op),
        ("POST", "/merchants/tea/apply", {}, {"tea"} | op),
        ("POST", "/merchants/tea/sales", {"sale_id": "s", "amount_fen": 100}, op),
        ("POST", "/merchants/tea/settlements", {"settlement_id": "t", "amount_fen": 100}, op),
        ("GET", "/merchants/tea/loans", None, {"tea"} | op),
        ("GET", f"/offers/{w.offer}", None, {"tea"} | op),
        ("POST", "/loans", {"offer_id": w.offer, "amount_fen": 100_000}, {"tea"} | op),
        ("GET", f"/loans/{w.loan}", None, {"tea"} | op),
        ("POST", f"/loans/{w.loan}/repay", {"amount_fen": 100}, {"tea"} | op),
        ("GET", "/book", None, op),
        ("POST", "/run-day", None, op),
    ]


def test_every_route_refuses_who_may_not_and_writes_nothing(world: World, client: httpx.Client) -> None:
    """The route table of docs/credit.md, route by route and caller by caller: refused callers get 403
    before anything is written; allowed ones are never refused for who they are (the service may still
    refuse the request itself: an offer already drawn, a merchant short of funds)."""
    for method, path, body, may in routes(world):
        for who in ("bob", "mug", "tea", "shop", "ann", "ops", "optoken"):
            before = world.snapshot()
            r = client.request(method, "/v1/credit" + path, json=body, headers=world.h[who])
            assert r.status_code < 500, (method, path, who, r.text)
            if who in may:
                assert r.status_code == 200 or r.json()["code"] not in (UNAUTH, FORBID), (method, path, who, r.text)
            else:
                refused(r, FORBID)
                assert world.snapshot() == before, (method, path, who)
            # and nobody at all: 401 before the body or the rule is looked at
            before = world.snapshot()
            refused(client.request(method, "/v1/credit" + path, json=body), UNAUTH)
            assert world.snapshot() == before
    world.s.check()


def test_a_shopper_cannot_buy_on_installments_in_anothers_name(world: World, client: httpx.Client) -> None:
    buy = {"order_id": "B1", "shopper": "ann", "merchant": "shop", "amount_fen": 40_000, "periods": 6}
    before = world.s.line("ann").available_fen
    for who in ("bob", "shop"):  # another shopper; the merchant who would be paid
        body = refused(client.post("/v1/credit/installments", json=buy, headers=world.h[who]), FORBID)
        assert "'ann'" in body["message"]
    assert client.get("/v1/credit/plans/B1", headers=world.h["ops"]).json()["code"] == CreditCode.UNKNOWN_PLAN
    assert world.s.line("ann").available_fen == before
    # bob buying in his own name works, and is his
    r = client.post("/v1/credit/installments", json={**buy, "shopper": "bob"}, headers=world.h["bob"])
    assert r.status_code == 200 and r.json()["shopper"] == "bob"
    refused(client.get("/v1/credit/plans/B1", headers=world.h["ann"]), FORBID)  # not hers to read


def test_a_merchant_cannot_draw_or_repay_anothers_offer_or_loan(world: World, client: httpx.Client) -> None:
    book = world.s.loan_book()
    r = client.post(
        "/v1/credit/loans", json={"offer_id": world.mug_offer, "amount_fen": 50_000}, headers=world.h["tea"]
    )
    refused(r, FORBID)
    refused(client.get(f"/v1/credit/offers/{world.mug_offer}", headers=world.h["tea"]), FORBID)
    refused(client.post(f"/v1/credit/loans/{world.loan}/repay", json={"amount_fen": 1}, headers=world.h["mug"]), FORBID)
    assert world.s.loan_book() == book and world.s.merchant_loans("mug") == []
    r = client.post(
        "/v1/credit/loans", json={"offer_id": world.mug_offer, "amount_fen": 50_000}, headers=world.h["mug"]
    )
    assert r.status_code == 200 and r.json()["merchant"] == "mug"


def test_unknown_records_are_404_for_a_would_be_owner_and_403_for_another_role(
    world: World, client: httpx.Client
) -> None:
    """A merchant asking after an offer or loan that does not exist hears 404; a shopper is refused offers
    and loans before any lookup (they are never a shopper's)."""
    for who, path in (("bob", "/plans/none"), ("mug", "/offers/tea.1.1"), ("mug", "/loans/L-none")):
        r = client.get("/v1/credit" + path, headers=world.h[who])
        assert r.status_code == 404, r.text
    for path in ("/offers/tea.1.1", f"/offers/{world.offer}", f"/loans/{world.loan}"):
        refused(client.get("/v1/credit" + path, headers=world.h["bob"]), FORBID)
    assert client.get("/v1/credit/offers/" + "x" * 200, headers=world.h["mug"]).status_code == 400


# --------------------------------------------------------------------------------------------- the tokens


def test_forged_expired_foreign_and_misplaced_tokens_are_401(world: World, client: httpx.Client) -> None:
    path = "/v1/credit/shoppers/ann"
    good = world.h["ann"]["Authorization"].removeprefix("Bearer ")
    assert client.get(path, headers={"Authorization": f"Bearer {good}"}).status_code == 200
    now = sessions.wall_ms()
    expired = session_key(world.home, now_ms=lambda: now - 7_200_000).issue("shopper", "ann", 3600)[0]
    # the checkout gateway's session key under the same secret (both services given one folder): another realm
    gateway = checkout_session_key(world.home).issue("shopper", "ann", 3600)[0]
    assert checkout_session_key(world.home)._secret == session_key(world.home)._secret
    other_key = sessions.SessionKey(b"z" * 32, realm="credit").issue("operator", "ops", 60)[0]
    forged = good[: good.rindex(".") + 1] + sessions._b64(b"\1" * 32)
    swapped = good.replace(good.split(".")[1], sessions._b64(b"\x95\xa8operator\xa3ann\xcf" + b"\0" * 8))
    messages = []
    for header in (
        f"Bearer {expired}",
        f"Bearer {gateway}",
        f"Bearer {other_key}",
        f"Bearer {forged}",
        f"Bearer {swapped}",
        f"Basic {good}",
        f"Bearer  {good}",
        good,
        "Bearer",
        "Bearer " + "A" * 10_000,  # oversized: refused by length, not parsed
        f"Bearer {operator_token(world.home)}x",
        f"Bearer {operator_token(world.home)[:-1]}",
    ):
        messages.append(refused(client.get(path, headers={"Authorization": header}), UNAUTH)["message"])
    assert "expired" in messages[0] and "another session key" in messages[1] and "MAC" in messages[2]
    assert good not in "".join(messages)  # a refusal never echoes the token
    # only the header counts: a token in the query string or a cookie is not looked at
    refused(client.get(path, params={"token": good, "access_token": good}), UNAUTH)
    refused(client.get(path, headers={"Cookie": f"session={good}; token={good}"}), UNAUTH)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=700))
def test_junk_authorization_headers_are_401_never_500(world: World, client: httpx.Client, junk: str) -> None:
    r = client.post("/v1/credit/run-day", headers={"Authorization": junk.strip() or "x"})
    refused(r, UNAUTH)


def test_sessions_are_minted_by_the_operator_token_only(world: World, client: httpx.Client) -> None:
    want = {"role": "shopper", "subject": "cat", "ttl_s": 60}
    refused(client.post("/v1/credit/sessions", json=want), UNAUTH)
    for who in ("ops", "ann", "tea"):  # a session, even an operator's, cannot mint others
        refused(client.post("/v1/credit/sessions", json=want, headers=world.h[who]), FORBID)
    r = client.post("/v1/credit/sessions", json=want, headers=world.h["optoken"])
    assert r.status_code == 201 and r.json()["subject"] == "cat" and r.json()["kid"] == session_key(world.home).kid
    cat = {"Authorization": f"Bearer {r.json()['token']}"}
    assert client.get("/v1/credit/shoppers/cat/line-account", headers=cat).status_code == 200  # opened on first use
    refused(client.get("/v1/credit/shoppers/ann/statement", headers=cat), FORBID)
    for bad in (
        {"role": "root", "subject": "cat"},
        {"role": "shopper", "subject": "a b"},
        {"role": "shopper", "subject": "x" * 65},
        {"role": "shopper", "subject": "cat", "ttl_s": 1.5},
        {"role": "shopper", "subject": "cat", "ttl_s": 0},
        {"role": "shopper", "subject": "cat", "ttl_s": 10**9},
        {"role": "shopper", "subject": "cat", "extra": 1},
    ):
        r = client.post("/v1/credit/sessions", json=bad, headers=world.h["optoken"])
        assert r.status_code == 400 and isinstance(r.json()["code"], int), (bad, r.text)


def test_health_and_the_description_are_open_and_no_route_else(world: World, client: httpx.Client) -> None:
    assert client.get("/v1/health").status_code == 200
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["session"]["scheme"] == "bearer"
    assert "security" not in spec["paths"]["/v1/health"]["get"]
    for path, ops in spec["paths"].items():
        if not path.startswith("/v1/credit/"):
            continue
        for method, op in ops.items():
            assert op["security"] == [{"session": []}], (path, method)
            concrete = path.replace("{plan_id}", "A1").replace("{shopper}", "ann").replace("{merchant}", "tea")
            concrete = concrete.replace("{offer_id}", world.offer).replace("{loan_id}", world.loan)
            refused(client.request(method.upper(), concrete, json={}), UNAUTH)


# ------------------------------------------------------------------------------------ mounted, folder, CLI


def test_a_mounted_router_checks_callers_with_the_identity_it_is_given(world: World, tmp_path: Path) -> None:
    """A host app mounting the router passes the credit service's identity; a token of the host's own key
    (here: another folder's) is refused."""
    app = FastAPI()
    app.include_router(router(world.s, identity_in(world.home)))
    elsewhere = session_key(tmp_path / "host").issue("shopper", "ann", 60)[0]
    with serve(app) as c:
        assert c.get("/v1/credit/shoppers/ann", headers=world.h["ann"]).status_code == 200
        refused(c.get("/v1/credit/shoppers/ann", headers={"Authorization": f"Bearer {elsewhere}"}), UNAUTH)
        refused(c.post("/v1/credit/run-day", headers=world.h["tea"]), FORBID)
        refused(c.post("/v1/credit/run-day"), UNAUTH)


def test_the_key_and_operator_token_are_made_once_owner_only(tmp_path: Path) -> None:
    home = tmp_path / "d"
    a, b = identity_in(home), identity_in(home)
    assert a.key.kid == b.key.kid and operator_token(home) == operator_token(home)
    for name in ("session.key", "operator.token"):
        assert stat.S_IMODE((home / name).stat().st_mode) == 0o600
    (home / "session.key").write_text("short\n")
    with pytest.raises(ValueError):
        identity_in(home)


def test_the_cli_issues_sessions_from_the_folder(tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(credit_cli, ["token", "--data", str(tmp_path), "--merchant", "tea", "--ttl-s", "60"])
    assert r.exit_code == 0, r.output
    c = session_key(tmp_path).verify(r.stdout.strip())
    assert (c.role, c.subject) == ("merchant", "tea")
    assert runner.invoke(credit_cli, ["token", "--data", str(tmp_path), "--shopper", "a b"]).exit_code == 2
    assert (
        runner.invoke(credit_cli, ["token", "--data", str(tmp_path), "--shopper", "x", "--ttl-s", "0"]).exit_code == 2
    )
    assert runner.invoke(credit_cli, ["token", "--data", str(tmp_path)]).exit_code == 1
