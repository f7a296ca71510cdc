"""Who may call the checkout gateway (``liangcao.checkout.identity``, the route table in docs/checkout.md).

Attacked as an outsider would: no token, a forged or altered MAC, another key's token, an expired one, other
formats (JWT ``alg: none``, another version prefix, padding, a second spelling), a token in the query string,
an oversized header; then as an insider with a good token for the wrong subject: a shopper topping up, paying,
reading or cancelling another's order, a merchant refunding another merchant's order, a session minting
sessions, an idempotency key replayed by another caller, a device registered to another shopper's account.
Every refusal is 401 ``UNAUTHENTICATED`` (with ``WWW-Authenticate: Bearer``) or 403 ``FORBIDDEN``, one line,
and writes nothing. Then through real processes: the edge relays ``Authorization`` untouched (identity is
checked behind it), flow control sheds before identity, and the routes that bypassed the gate are classified.
"""

from __future__ import annotations

import asyncio
import base64
import json
import multiprocessing as mp
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from checkout_identity import bearer, merchant, operator, shopper
from liangcao.authn import RelyingParty, SoftAuthenticator
from liangcao.authn.http import router as authn_router
from liangcao.checkout import limits, page
from liangcao.checkout.codes import CheckoutCode, CheckoutError
from liangcao.checkout.http import classify, create_app, default_rules, operator_token, session_shopper
from liangcao.checkout.identity import PREFIX, Claims, SessionKey, _b64, session_key
from liangcao.checkout.service import Checkout
from liangcao.flow import Gate, Priority, Refused
from liangcao.payments import Engine
from test_checkout_http import Gateway

ORIGIN = "http://localhost:8290"


# ----------------------------------------------------------------------------------------- the token


def _refused(key: SessionKey, token: str) -> str:
    with pytest.raises(CheckoutError) as exc:
        key.verify(token)
    assert exc.value.code == CheckoutCode.UNAUTHENTICATED and "\n" not in exc.value.message
    return exc.value.message


def test_a_token_names_its_caller_until_it_expires() -> None:
    now = [1_700_000_000_000]
    key = SessionKey(b"k" * 32, now_ms=lambda: now[0])
    token, expires = key.issue("shopper", "ann", 60)
    assert expires == now[0] + 60_000 and token.startswith(PREFIX) and len(token) < limits.session_token_chars_max
    c = key.verify(token)
    assert (c.role, c.subject) == ("shopper", "ann")
    now[0] = expires - 1
    assert key.verify(token).subject == "ann"
    now[0] = expires  # the gateway's clock: expired at the instant named
    assert "expired" in _refused(key, token)


def test_forged_altered_and_foreign_tokens_are_refused() -> None:
    key = SessionKey(b"k" * 32)
    token, _ = key.issue("shopper", "ann", 600)
    body, _, mac = token.rpartition(".")
    # another key's token (another deployment, or a key replaced since)
    assert "MAC" in _refused(key, SessionKey(b"x" * 32).issue("shopper", "ann", 600)[0])
    # a MAC of the right length that is not ours
    _refused(key, body + "." + _b64(b"\0" * 32))
    # the claims changed (operator, another subject, a later expiry) under the original MAC
    for role, subject in (("operator", "ann"), ("shopper", "bob")):
        claims = Claims(role, subject, 2**62, key.kid, 0)
        _refused(key, PREFIX + _b64(msgspec.msgpack.encode(claims)) + "." + mac)
    # format confusion: a JWT with alg none, another version, padding, extra parts, empty parts, whitespace
    jwt_none = (
        base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "JWT"}).encode()).decode().rstrip("=")
        + "."
        + base64.urlsafe_b64encode(json.dumps({"role": "operator", "sub": "x"}).encode()).decode().rstrip("=")
        + "."
    )
    for bad in (
        jwt_none,
        "lc2." + token[4:],
        "LC1." + token[4:],
        token + "=",
        body + "." + mac + "=",
        token + ".x",
        body + ".",
        PREFIX + "." + mac,
        PREFIX + "a.b." + mac,
        token.replace(".", "%2E"),
        "",
        "x" * (limits.session_token_chars_max + 1),
    ):
        _refused(key, bad)
    # a correctly MAC'd token whose claims are not what the gateway issues is refused too
    for claims_bytes in (
        msgspec.msgpack.encode(["shopper", "ann", 2.0**61, key.kid, 0]),  # a float expiry
        msgspec.msgpack.encode(["root", "ann", 2**61, key.kid, 0]),  # an unknown role
        msgspec.msgpack.encode(["shopper", "ann", 2**61, key.kid, 0, "extra"]),
        msgspec.msgpack.encode(["shopper", "ann", 2**61, "otherkid", 0]),
        b"\xc1",
    ):
        signed = PREFIX + _b64(claims_bytes)
        _refused(key, signed + "." + _b64(key._mac(signed.encode())))


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0), st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.="))
def test_any_one_character_changed_is_refused(where: int, ch: str) -> None:
    key = SessionKey(b"s" * 32)
    token, _ = key.issue("merchant", "shop", 600)
    i = where % len(token)
    if token[i] == ch:
        return
    _refused(key, token[:i] + ch + token[i + 1 :])


def test_issuing_refuses_bad_claims() -> None:
    key = SessionKey(b"k" * 32)
    for role, subject, ttl in (
        ("admin", "ann", 60),
        ("shopper", "Ann!", 60),
        ("shopper", "a" * 33, 60),
        ("shopper", "ann", 0),
        ("shopper", "ann", limits.session_ttl_s_max + 1),
        ("shopper", "ann", 1.5),
        ("shopper", "ann", True),
    ):
        with pytest.raises(CheckoutError) as exc:
            key.issue(role, subject, ttl)  # type: ignore[arg-type]
        assert exc.value.code in (CheckoutCode.BAD_REQUEST, CheckoutCode.BAD_PARTY_ID)


def _kid_of(home: Path) -> str:
    return session_key(home).kid


def test_the_session_key_is_made_once_private_and_shared_by_processes_starting_together(tmp_path: Path) -> None:
    home = tmp_path / "gw"
    with mp.get_context("fork").Pool(6) as pool:
        kids = pool.map(_kid_of, [home] * 12)
    assert len(set(kids)) == 1  # six processes racing to make it: one key
    assert (home / "session.key").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in home.iterdir()] == ["session.key"]  # no half-written file left behind
    assert session_key(home).kid == kids[0]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "session.key").write_text("short\n")
    with pytest.raises(ValueError):
        session_key(tmp_path / "bad")


# ----------------------------------------------------------------------------------------- the routes


class App:
    """The gateway's app over a real engine, with the page and the passkey router, called in process."""

    def __init__(self, root: Path) -> None:
        self.engine = Engine(root / "pay", fsync=False)
        self.rp = RelyingParty("localhost", ORIGIN, root / "authn")
        self.co = Checkout(root / "co", self.engine)
        routers = [page.router(self.co), authn_router(self.rp, shopper_of=session_shopper)]
        # no gate: admission is tested below; here every request reaches the identity check
        self.app = create_app(self.co, None, auto_confirm_every_s=0, routers=routers)
        self.home = self.co.home

    def call(self, method: str, path: str, who: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://t") as c:
                return await c.request(method, path, headers=(who or {}) | kw.pop("headers", {}), **kw)

        return asyncio.run(go())

    def rows(self) -> dict[str, int]:
        db = sqlite3.connect(f"file:{self.home / 'checkout.sqlite'}?mode=ro", uri=True)
        try:
            return {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("orders", "refunds", "idem")}
        finally:
            db.close()

    def close(self) -> None:
        self.co.close()
        self.rp.close()
        self.engine.close()


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[App]:
    a = App(tmp_path)
    try:
        yield a
    finally:
        a.close()


def _check(r: httpx.Response, status: int, code: CheckoutCode) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["code"] == code and body["name"] == code.name and body["message"], body
    assert "\n" not in body["message"] and "Traceback" not in r.text
    if code == CheckoutCode.UNAUTHENTICATED:
        assert r.headers["www-authenticate"].startswith("Bearer")


def _setup(gw: App) -> tuple[str, str]:
    """ann's order at shop (paid) and bob's order at other (created), as their buyers."""
    op = operator(gw.home)
    for b in ("ann", "bob"):
        r = gw.call("POST", f"/v1/wallets/{b}/topup", op, json={"amount": 100_000}, headers={"idempotency-key": b})
        assert r.status_code == 200, r.text
    ann = gw.call("POST", "/v1/orders", shopper(gw.home, "ann"), json={"buyer": "ann", "merchant": "shop", "amount": 5_000},
                  headers={"idempotency-key": "o"}).json()["id"]  # fmt: skip
    bob = gw.call("POST", "/v1/orders", shopper(gw.home, "bob"), json={"buyer": "bob", "merchant": "other", "amount": 700},
                  headers={"idempotency-key": "o"}).json()["id"]  # fmt: skip
    r = gw.call("POST", f"/v1/orders/{ann}/pay", shopper(gw.home, "ann"), json={}, headers={"idempotency-key": "p"})
    assert r.status_code == 200, r.text
    return ann, bob


def test_without_a_good_token_nothing_but_health_and_the_pages_answers(gw: App) -> None:
    ann, _ = _setup(gw)
    before = gw.rows()
    k = {"idempotency-key": "attack"}
    routes: list[tuple[str, str, Any]] = [
        ("POST", "/v1/wallets/eve/topup", {"amount": 10**9}),
        ("GET", "/v1/wallets/ann", None),
        ("POST", "/v1/orders", {"buyer": "ann", "merchant": "shop", "amount": 1}),
        ("GET", f"/v1/orders/{ann}", None),
        ("GET", f"/v1/orders/{ann}/offers", None),
        ("POST", f"/v1/orders/{ann}/confirm", {}),
        ("POST", f"/v1/orders/{ann}/refund", {"amount": 1}),
        ("POST", f"/v1/orders/{ann}/cancel", {}),
        ("GET", "/v1/merchants/shop/orders", None),
        ("GET", "/v1/merchants/shop/settlement", None),
        ("POST", "/v1/auto-confirm", None),
        ("POST", "/v1/sessions", {"role": "operator", "subject": "eve"}),
        ("GET", "/metrics", None),
        ("POST", "/authn/v1/registration/options", {"shopper": "ann", "device_name": "evil"}),
        ("GET", "/authn/v1/credentials?shopper=ann", None),
        (
            "POST",
            "/authn/v1/payment/challenge",
            {"shopper": "ann", "order_id": ann, "payee": "shop", "amount_fen": 5000, "currency": "CNY"},
        ),
    ]
    good = shopper(gw.home, "ann")["Authorization"].split(" ", 1)[1]
    expired = bearer(gw.home, "shopper", "ann", ttl_s=1)  # checked below with the clock moved
    del expired
    forged = good[: good.rindex(".") + 1] + _b64(b"\1" * 32)
    headers_list: list[dict[str, str]] = [
        {},
        {"Authorization": f"Bearer {forged}"},
        {"Authorization": f"Basic {base64.b64encode(b'ann:pw').decode()}"},
        {"Authorization": f"Bearer  {good}"},  # two spaces: not the form
        {"Authorization": good},  # no scheme
        {"Authorization": "Bearer " + "A" * 10_000},  # oversized
        {"Authorization": f"Bearer {SessionKey(b'z' * 32).issue('operator', 'ops', 60)[0]}"},  # another key
        {"Authorization": "Bearer " + (gw.home / "operator.token").read_text().strip()[:-1] + "x"},
        {"Cookie": f"session={good}"},
    ]
    for method, path, body in routes:
        for h in headers_list:
            kw: dict[str, Any] = {"json": body} if body is not None else {}
            _check(gw.call(method, path, h | k, **kw), 401, CheckoutCode.UNAUTHENTICATED)
        # a token in the query string is not looked at
        sep = "&" if "?" in path else "?"
        kw = {"json": body} if body is not None else {}
        _check(gw.call(method, f"{path}{sep}access_token={good}", k, **kw), 401, CheckoutCode.UNAUTHENTICATED)
    assert gw.rows() == before
    assert gw.rp.credentials("ann") == []
    for path in ("/v1/health", f"/checkout/{ann}", "/checkout/assets/checkout.js", "/authn/"):
        assert gw.call("GET", path).status_code == 200, path


def test_an_expired_session_is_refused_by_the_gateways_clock(tmp_path: Path) -> None:
    now = [10**12]
    with Engine(tmp_path / "pay", fsync=False) as e:
        co = Checkout(tmp_path / "co", e)
        try:
            from liangcao.checkout.identity import Identity

            ident = Identity(session_key(co.home, now_ms=lambda: now[0]), operator_token(co.home))
            app = create_app(co, None, auto_confirm_every_s=0, identity=ident)
            token, expires = ident.key.issue("shopper", "ann", 30)

            async def get() -> httpx.Response:
                async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                    return await c.get("/v1/wallets/ann", headers={"Authorization": f"Bearer {token}"})

            assert asyncio.run(get()).status_code == 200
            now[0] = expires
            r = asyncio.run(get())
            _check(r, 401, CheckoutCode.UNAUTHENTICATED)
            assert "expired" in r.json()["message"]
        finally:
            co.close()


def test_each_caller_acts_only_on_what_is_theirs(gw: App) -> None:
    ann_order, bob_order = _setup(gw)
    ann, bob = shopper(gw.home, "ann"), shopper(gw.home, "bob")
    shop, other = merchant(gw.home, "shop"), merchant(gw.home, "other")
    op = operator(gw.home)
    before = gw.rows()
    wallet_ann = gw.co.wallet("ann")
    n = iter(range(10**6))

    def forbidden(method: str, path: str, who: dict[str, str], body: Any = None) -> None:
        kw: dict[str, Any] = {"json": body} if body is not None else {}
        r = gw.call(method, path, who, headers={"idempotency-key": f"f{next(n)}"}, **kw)
        _check(r, 403, CheckoutCode.FORBIDDEN)

    # money from nowhere: only the operator tops up
    for who in (ann, shop):
        forbidden("POST", "/v1/wallets/ann/topup", who, {"amount": 10**9})
    # bob on ann's things
    forbidden("POST", "/v1/orders", bob, {"buyer": "ann", "merchant": "shop", "amount": 100})
    forbidden("GET", "/v1/wallets/ann", bob)
    forbidden("GET", f"/v1/orders/{ann_order}", bob)
    forbidden("GET", f"/v1/orders/{ann_order}/offers", bob)
    forbidden("POST", f"/v1/orders/{ann_order}/confirm", bob, {})
    forbidden("POST", f"/v1/orders/{ann_order}/cancel", bob, {})
    forbidden("POST", f"/v1/orders/{ann_order}/refund", bob, {"amount": 100})
    forbidden("POST", f"/v1/orders/{bob_order}/refund", bob, {"amount": 100})  # a buyer refunds nothing himself
    forbidden("POST", f"/v1/orders/{ann_order}/pay", bob, {})
    forbidden("GET", "/v1/merchants/shop/settlement", bob)
    # a merchant: not another's orders, refunds or settlement; never the buyer's steps
    forbidden("POST", f"/v1/orders/{ann_order}/refund", other, {"amount": 100})
    forbidden("GET", f"/v1/orders/{ann_order}", other)
    forbidden("GET", "/v1/merchants/shop/orders", other)
    forbidden("GET", "/v1/merchants/shop/settlement", other)
    forbidden("POST", f"/v1/orders/{ann_order}/confirm", shop, {})
    forbidden("POST", f"/v1/orders/{bob_order}/pay", other, {})
    forbidden("POST", "/v1/orders", shop, {"buyer": "ann", "merchant": "shop", "amount": 100})
    forbidden("GET", "/v1/wallets/ann", shop)
    # the operator's endpoints
    for who in (ann, shop):
        forbidden("POST", "/v1/auto-confirm", who)
        forbidden("GET", "/metrics", who)
    # an order the gateway does not serve with a prefix of another merchant: refused without a lookup
    forbidden("POST", "/v1/orders/shop.999999/refund", other, {"amount": 1})
    assert gw.rows() == before and gw.co.wallet("ann") == wallet_ann
    assert gw.co.get_order(ann_order)["state"] == "paid" and gw.co.get_order(bob_order)["state"] == "created"

    # ... and what is theirs works
    assert gw.call("GET", f"/v1/orders/{ann_order}", ann).json()["buyer"] == "ann"
    assert gw.call("GET", f"/v1/orders/{ann_order}", shop).status_code == 200
    assert gw.call("GET", "/v1/wallets/ann", ann).json()["held"] == 5_000
    assert gw.call("GET", "/v1/merchants/shop/orders", shop).json()[0]["id"] == ann_order
    assert gw.call("GET", "/v1/merchants/shop/settlement", shop).status_code == 200
    r = gw.call("POST", f"/v1/orders/{ann_order}/refund", shop, json={"amount": 100}, headers={"idempotency-key": "r"})
    assert r.status_code == 200 and r.json()["refunded"] == 100, r.text
    r = gw.call("POST", f"/v1/orders/{ann_order}/confirm", ann, json={}, headers={"idempotency-key": "c"})
    assert r.json()["state"] == "settled", r.text
    r = gw.call("POST", f"/v1/orders/{bob_order}/cancel", bob, json={}, headers={"idempotency-key": "x"})
    assert r.json()["state"] == "cancelled", r.text
    assert gw.call("GET", "/metrics", op).status_code == 200
    assert gw.call("POST", "/v1/auto-confirm", op).json() == {"settled": 0}
    # a shopper asking after an order that does not exist learns only that
    _check(gw.call("GET", "/v1/orders/shop.424242", ann), 404, CheckoutCode.ORDER_NOT_FOUND)


def test_an_idempotency_key_replayed_by_another_caller_is_another_request(gw: App) -> None:
    _setup(gw)
    ann, bob = shopper(gw.home, "ann"), shopper(gw.home, "bob")
    key = {"idempotency-key": "checkout-1"}
    first = gw.call("POST", "/v1/orders", ann, json={"buyer": "ann", "merchant": "shop", "amount": 1234}, headers=key)
    assert first.status_code == 201
    # the same key from bob (who saw it in a shared log, say) is his own request: never ann's answer
    mine = gw.call("POST", "/v1/orders", bob, json={"buyer": "bob", "merchant": "shop", "amount": 1234}, headers=key)
    assert mine.status_code == 201 and mine.json()["buyer"] == "bob" and mine.json()["id"] != first.json()["id"]
    assert mine.headers.get("idempotent-replayed") is None
    # the very request ann sent, replayed by bob: refused (he is not its buyer), not answered from ann's key
    again = gw.call("POST", "/v1/orders", bob, json={"buyer": "ann", "merchant": "shop", "amount": 1234}, headers=key)
    _check(again, 403, CheckoutCode.FORBIDDEN)
    # ann's own retry is still the first answer
    retry = gw.call("POST", "/v1/orders", ann, json={"buyer": "ann", "merchant": "shop", "amount": 1234}, headers=key)
    assert retry.json() == first.json() and retry.headers["idempotent-replayed"] == "true"
    # a key at the client's limit still fits once scoped (hashed), and its retry replays
    long_key = {"idempotency-key": "k" * limits.idempotency_key_chars_max}
    a = gw.call("POST", "/v1/orders", ann, json={"buyer": "ann", "merchant": "shop", "amount": 9}, headers=long_key)
    b = gw.call("POST", "/v1/orders", ann, json={"buyer": "ann", "merchant": "shop", "amount": 9}, headers=long_key)
    assert a.status_code == 201 and b.json() == a.json() and b.headers["idempotent-replayed"] == "true"
    # the gateway's own keys stay reserved whoever asks
    r = gw.call(
        "POST", "/v1/wallets/ann/topup", operator(gw.home), json={"amount": 1}, headers={"idempotency-key": "auto:x"}
    )
    _check(r, 400, CheckoutCode.BAD_REQUEST)


def test_sessions_are_issued_with_the_operator_token_only(gw: App) -> None:
    body = {"role": "shopper", "subject": "cat", "ttl_s": 600}
    _check(gw.call("POST", "/v1/sessions", json=body), 401, CheckoutCode.UNAUTHENTICATED)
    for who in (shopper(gw.home, "cat"), merchant(gw.home, "shop"), bearer(gw.home, "operator", "ops")):
        _check(gw.call("POST", "/v1/sessions", who, json=body), 403, CheckoutCode.FORBIDDEN)  # no session mints more
    op = operator(gw.home)
    r = gw.call("POST", "/v1/sessions", op, json=body)
    assert r.status_code == 201, r.text
    got = r.json()
    assert (got["role"], got["subject"]) == ("shopper", "cat") and got["expires_ms"] > 0
    assert gw.call("GET", "/v1/wallets/cat", {"Authorization": f"Bearer {got['token']}"}).status_code == 200
    for bad in ({"role": "root", "subject": "cat"}, {"role": "shopper", "subject": "Cat"},
                {"role": "shopper", "subject": "cat", "ttl_s": 1.5}, {"role": "shopper", "subject": "cat", "ttl_s": 0},
                {"role": "shopper", "subject": "cat", "x": 1}, {"role": "shopper"}):  # fmt: skip
        r = gw.call("POST", "/v1/sessions", op, json=bad)
        assert r.status_code == 400 and r.json()["code"] in (CheckoutCode.BAD_REQUEST, CheckoutCode.BAD_PARTY_ID), bad
    # an operator session may do the operator's work (but not mint sessions, above)
    ops = bearer(gw.home, "operator", "ops")
    r = gw.call("POST", "/v1/wallets/cat/topup", ops, json={"amount": 5}, headers={"idempotency-key": "t"})
    assert r.status_code == 200, r.text


def test_a_device_is_registered_only_to_the_signed_in_shopper(gw: App) -> None:
    ann_order, _ = _setup(gw)
    eve = shopper(gw.home, "eve")
    # eve, signed in as herself, asks to register her phone to ann's account: refused, no ceremony opened
    r = gw.call("POST", "/authn/v1/registration/options", eve, json={"shopper": "ann", "device_name": "evil"})
    assert r.status_code == 404 and r.json()["name"] == "UNKNOWN_SHOPPER", r.text
    r = gw.call("GET", "/authn/v1/credentials?shopper=ann", eve)
    assert r.status_code == 404
    challenge = {"shopper": "ann", "order_id": ann_order, "payee": "shop", "amount_fen": 5000, "currency": "CNY"}
    assert gw.call("POST", "/authn/v1/payment/challenge", eve, json=challenge).status_code == 404
    assert gw.rp.credentials("ann") == []
    # a merchant or the operator does not manage a shopper's devices
    for who in (merchant(gw.home, "shop"), operator(gw.home)):
        r = gw.call("POST", "/authn/v1/registration/options", who, json={"shopper": "ann", "device_name": "x"})
        _check(r, 403, CheckoutCode.FORBIDDEN)
    # ann registers her own
    ann = shopper(gw.home, "ann")
    dev = SoftAuthenticator()
    opts = gw.call("POST", "/authn/v1/registration/options", ann, json={"shopper": "ann", "device_name": "phone"})
    assert opts.status_code == 200, opts.text
    o = opts.json()
    cred = dev.create(o["publicKey"], ORIGIN)
    # eve cannot finish ann's ceremony either
    r = gw.call(
        "POST",
        "/authn/v1/registration",
        eve,
        json={"shopper": "ann", "ceremony_id": o["ceremony_id"], "credential": cred},
    )
    assert r.status_code == 404 and gw.rp.credentials("ann") == []
    r = gw.call(
        "POST",
        "/authn/v1/registration",
        ann,
        json={"shopper": "ann", "ceremony_id": o["ceremony_id"], "credential": cred},
    )
    assert r.status_code == 200, r.text
    assert [c.name for c in gw.rp.credentials("ann")] == ["phone"]


# ----------------------------------------------------------------------------------------- flow control


def _scope(method: str, path: str) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "headers": []}


def test_every_route_that_bypassed_the_gate_is_classified_and_a_flood_is_shed() -> None:
    cases = [
        ("POST", "/authn/v1/payment/challenge", "authn_pay", Priority.PAY),
        ("POST", "/authn/v1/payment/verify", "authn_pay", Priority.PAY),
        ("POST", "/authn/v1/registration/options", "authn", Priority.CONFIRM),
        ("POST", "/authn/v1/registration", "authn", Priority.CONFIRM),
        ("POST", "/authn/v1/credentials/revoke", "authn", Priority.CONFIRM),
        ("GET", "/authn/v1/credentials", "query", Priority.QUERY),
        ("GET", "/authn/", "browse", Priority.BROWSE),
        ("GET", "/checkout/shop.1", "browse", Priority.BROWSE),
        ("GET", "/checkout/assets/checkout.js", "browse", Priority.BROWSE),
        ("POST", "/v1/sessions", "sessions", Priority.CONFIRM),
        ("POST", "/v1/auto-confirm", "auto_confirm", Priority.CONFIRM),
        ("GET", "/v1/nowhere", "other", Priority.BROWSE),
        ("GET", "/nowhere", "other", Priority.BROWSE),
    ]
    gate = Gate(default_rules())
    for method, path, resource, priority in cases:
        got = classify(_scope(method, path))
        assert got is not None and got[:2] == (resource, priority), (path, got)
        held = []
        with pytest.raises(Refused):  # a flood that never finishes: refused before it takes the gateway
            for _ in range(2_000):
                held.append(gate.enter(got[0], got[1], got[2]))
        assert len(held) < 2_000
        for t in held:
            t.exit(True)
    for free in ("/v1/health", "/metrics", "/v1/flow", "/v1/flow/rules", "/v1/flow/metrics"):
        assert classify(_scope("GET", free)) is None, free


def _raw(port: int, raw: bytes) -> list[int]:
    import socket

    out = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(raw)
        while chunk := s.recv(65536):
            out += chunk
    return [int(part[:3]) for part in out.split(b"HTTP/1.1 ")[1:]]


@pytest.mark.parametrize("edge", [False, True], ids=["one-process", "edge"])
def test_through_real_processes_identity_is_checked_behind_flow_control(tmp_path: Path, edge: bool) -> None:
    """``liangcao checkout start`` (and ``--edge``): the Authorization header reaches the application process
    untouched (a session works, a forged one is refused there); a shed request is answered by flow control
    before anyone asks who sent it (shedding stays cheap); a token minted by ``checkout token`` works."""
    import subprocess
    import sys

    gw = Gateway(tmp_path / "gw", *(("--edge",) if edge else ()), "--rp-id", "localhost", "--origin", ORIGIN).start()
    try:
        home = gw.home
        with httpx.Client(base_url=gw.url, timeout=10) as c:
            r = c.post("/v1/wallets/ann/topup", json={"amount": 500}, headers={"idempotency-key": "t"} | operator(home))
            assert r.status_code == 200, r.text
            minted = subprocess.run(
                [sys.executable, "-m", "liangcao.cli", "checkout", "token", "--home", str(home), "--shopper", "ann"],
                capture_output=True, text=True, timeout=60, check=True,
            ).stdout.strip()  # fmt: skip
            assert c.get("/v1/wallets/ann", headers={"Authorization": f"Bearer {minted}"}).json()["available"] == 500
            forged = minted[:-2] + ("AA" if not minted.endswith("AA") else "BA")
            r = c.get("/v1/wallets/ann", headers={"Authorization": f"Bearer {forged}"})
            _check(r, 401, CheckoutCode.UNAUTHENTICATED)
            _check(c.get("/v1/wallets/ann", headers=shopper(home, "bob")), 403, CheckoutCode.FORBIDDEN)
            # an oversized header: refused whole (by the server's header bound or by identity), never a 500
            r = c.get("/v1/wallets/ann", headers={"Authorization": "Bearer " + "A" * 20_000})
            assert r.status_code in (401, 431), r.text
            # shedding before identity: the login path, the passkey router and auto-confirm limited to ~nothing
            rules = c.get("/v1/flow/rules").json()
            for res in rules["resources"]:
                # (without a session these are classed "unauthenticated" before their own resource: classifier)
                if res["name"] in ("sessions", "authn", "auto_confirm", "unauthenticated"):
                    res.update(rate_per_s=0.01, burst=1)
            rules["version"] = 9
            assert c.put("/v1/flow/rules", json=rules, headers=operator(home)).status_code == 200
        statuses = []
        for path in ("/v1/sessions", "/authn/v1/registration/options", "/v1/auto-confirm"):
            one = f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{{}}".encode()
            last = f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}".encode()
            statuses += _raw(gw.port, one * 5 + last)
        # the first is admitted (the one token of "unauthenticated", which all three floods share) and then
        # refused for want of a caller; every other request of the floods is shed before anyone asks who sent it
        assert statuses[0] == 401 and statuses[1:] == [429] * 17, statuses
    finally:
        gw.stop()
    assert not (tmp_path / "gw" / "operator.token").stat().st_mode & 0o077
