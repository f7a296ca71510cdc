"""An outsider with a shopper session of their own attacks the gateway's caller identity
(``liangcao.checkout.identity``, ``liangcao.sessions``, the route rules and ``classify`` in ``checkout/http.py``).

Findings fixed (each test failed first):

* two ``Authorization`` headers were read as the first one (a proxy, WAF or audit log reading the last, as
  many do, saw another caller than the gateway): now ``401 UNAUTHENTICATED`` (RFC 9110: a singleton field);
* the operator token was taken only after ``Bearer`` spelled exactly so, while a session was taken after any
  casing of the scheme (case-insensitive, RFC 9110 11.1): now both alike, at ``PUT /v1/flow/rules`` too;
* every path under ``/v1/health/`` and ``/metrics/`` (all 404s) passed flow control unguarded, as the two
  endpoints themselves do: now only the endpoints are unguarded, the rest is ``other``.

Properties held (documented here, they must stay so): path spellings (``%2F``, ``%2e``, ``..``, double
slashes, trailing slash, case, NUL, zero-width space, very long) never reach another shopper's wallet or
order; the body naming another buyer (also spelled with a JSON escape, duplicated, or with a look-alike) is
refused; method overrides are not honoured; an idempotent replay after the session expired is 401; the same
key from the operator and a shopper are two requests; a CR/LF in a header never splits it at the edge.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from checkout_identity import operator, shopper
from liangcao.checkout.codes import CheckoutCode
from liangcao.checkout.http import (
    CALLER_RESOURCE,
    UNAUTHENTICATED_RESOURCE,
    caller_burst,
    caller_rate_per_s,
    classifier,
    classify,
    create_app,
    default_rules,
    operator_token,
)
from liangcao.checkout.identity import Identity, SessionKey, session_key
from liangcao.flow import Gate, Priority, Refused
from test_checkout_http import Gateway
from test_checkout_identity import ORIGIN, App, _check, _scope, _setup


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[App]:
    a = App(tmp_path)
    try:
        yield a
    finally:
        a.close()


def _two(first: str, second: str) -> list[tuple[str, str]]:
    return [("authorization", first), ("authorization", second)]


def _call(gw: App, method: str, path: str, headers: list[tuple[str, str]], **kw: Any) -> httpx.Response:
    """A request with these header lines as they are (a name may come twice)."""

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gw.app), base_url="http://t") as c:
            return await c.request(method, path, headers=headers, **kw)

    return asyncio.run(go())


def test_two_authorization_headers_are_refused_whichever_comes_first(gw: App) -> None:
    ann, bob = _setup(gw)
    a, b = shopper(gw.home, "ann")["Authorization"], shopper(gw.home, "bob")["Authorization"]
    op = operator(gw.home)["Authorization"]
    before = gw.rows()
    for first, second in ((a, b), (b, a), (a, "Bearer junk"), ("Bearer junk", a), (a, a), (op, a), (a, op)):
        for method, path in (("GET", "/v1/wallets/ann"), ("GET", f"/v1/orders/{ann}"), ("GET", "/metrics")):
            _check(_call(gw, method, path, _two(first, second)), 401, CheckoutCode.UNAUTHENTICATED)
        r = _call(gw, "POST", f"/v1/orders/{bob}/cancel", [*_two(first, second), ("idempotency-key", "x")], json={})
        _check(r, 401, CheckoutCode.UNAUTHENTICATED)
    # the operator token twice cannot mint a session, nor change the rules
    r = _call(gw, "POST", "/v1/sessions", _two(op, op), json={"role": "operator", "subject": "x"})
    _check(r, 401, CheckoutCode.UNAUTHENTICATED)
    assert gw.rows() == before


def test_the_bearer_scheme_is_case_insensitive_for_the_operator_token_as_for_sessions(gw: App) -> None:
    _setup(gw)
    token = operator_token(gw.home)
    for scheme in ("Bearer", "bearer", "BEARER"):
        r = gw.call(
            "POST",
            "/v1/sessions",
            json={"role": "shopper", "subject": "cat"},
            headers={"authorization": f"{scheme} {token}"},
        )
        assert r.status_code == 201, (scheme, r.text)
        assert gw.call("GET", "/metrics", headers={"authorization": f"{scheme} {token}"}).status_code == 200
    # but not another scheme, nor the token alone, nor a token that merely starts or ends like it
    for bad in (f"Basic {token}", token, f"Bearer {token}x", f"Bearer {token[:-1]}", f"Bearer x{token}"):
        _check(gw.call("GET", "/metrics", headers={"authorization": bad}), 401, CheckoutCode.UNAUTHENTICATED)


def test_only_the_unguarded_endpoints_themselves_pass_flow_control() -> None:
    for free in ("/v1/health", "/metrics", "/v1/flow", "/v1/flow/rules", "/v1/flow/metrics"):
        assert classify(_scope("GET", free)) is None, free
    for path in (
        "/v1/health/x",
        "/v1/health/",
        "/metrics/x",
        "/metrics/",
        "/v1/healthz",
        "/metricsx",
        "/v1/health/../orders",
    ):
        got = classify(_scope("GET", path))
        assert got is not None and got[0] == "other", (path, got)


def test_path_spellings_never_reach_another_shoppers_wallet_or_order(gw: App) -> None:
    ann, bob = _setup(gw)
    a = shopper(gw.home, "ann")
    for path in (
        "/v1/wallets/bob", "/v1/wallets/%62ob", "/v1/wallets/Bob", "/v1/wallets/bob%00", "/v1/wallets/bob%E2%80%8B",
        "/v1/wallets/ann%2F..%2Fbob", "/v1/wallets/ann/../bob", "//v1/wallets/bob", "/v1//wallets/bob",
        "/v1/wallets/bob?buyer=ann", "/v1/wallets/" + "b" * 4000, f"/v1/orders/{bob}", f"/v1/orders/{bob.replace('.', '%2e')}",
        f"/v1/orders/{ann}%2F..%2F{bob}", f"/v1/orders/{bob}/offers", "/v1/merchants/other/orders",
    ):  # fmt: skip
        r = gw.call("GET", path, a)
        assert r.status_code in (403, 404), (path, r.status_code, r.text)
        assert "100000" not in r.text and "700" not in r.text, (path, r.text)  # bob's wallet, bob's order
    # the body naming another buyer, however spelled; a method override is not a method
    for body in (b'{"buyer":"bob","merchant":"m","amount":1}', b'{"buyer":"\\u0062ob","merchant":"m","amount":1}',
                 b'{"buyer":"bob","merchant":"m","amount":1,"buyer":"ann"}', '{"buyer":"ann\u200b","merchant":"m","amount":1}'.encode()):  # fmt: skip
        r = gw.call("POST", "/v1/orders", a, content=body, headers={"idempotency-key": "k"})
        assert r.status_code in (400, 403), (body, r.text)
    r = gw.call("GET", f"/v1/orders/{bob}/pay", a, headers={"x-http-method-override": "POST", "idempotency-key": "k"})
    assert r.status_code == 405


def test_an_idempotent_replay_needs_a_live_session_and_the_same_caller(tmp_path: Path) -> None:
    now = [1_700_000_000_000]
    gw = App(tmp_path)
    try:
        _setup(gw)
        key = session_key(gw.home, now_ms=lambda: now[0])
        token, expires = key.issue("shopper", "ann", 60)
        # the app checks with its own key object: give it the test's clock
        gw.app = create_app(gw.co, None, auto_confirm_every_s=0, identity=Identity(key, operator_token(gw.home)))
        who = {"authorization": f"Bearer {token}", "idempotency-key": "same"}
        first = gw.call("POST", "/v1/orders", json={"buyer": "ann", "merchant": "shop", "amount": 10}, headers=who)
        assert first.status_code == 201, first.text
        again = gw.call("POST", "/v1/orders", json={"buyer": "ann", "merchant": "shop", "amount": 10}, headers=who)
        assert again.headers.get("idempotent-replayed") == "true" and again.json() == first.json()
        # the operator with the same key is another request: its own order, not ann's answer
        op = operator(gw.home) | {"idempotency-key": "same"}
        other = gw.call("POST", "/v1/orders", json={"buyer": "ann", "merchant": "shop", "amount": 10}, headers=op)
        assert other.status_code == 201 and other.json()["id"] != first.json()["id"]
        now[0] = expires  # the session's last instant has passed: even a replay is refused
        r = gw.call("POST", "/v1/orders", json={"buyer": "ann", "merchant": "shop", "amount": 10}, headers=who)
        _check(r, 401, CheckoutCode.UNAUTHENTICATED)
    finally:
        gw.close()


def _raw(port: int, raw: bytes) -> bytes:
    out = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(raw)
        while chunk := s.recv(65536):
            out += chunk
    return out


def _status(answer: bytes) -> int:
    return int(answer[9:12])


@pytest.mark.parametrize("edge", [False, True], ids=["one-process", "edge"])
def test_through_real_processes(tmp_path: Path, edge: bool) -> None:
    """``liangcao checkout start`` (and ``--edge``, which relays every header it took): two Authorization
    headers are 401 behind the edge too; a CR/LF or bare LF smuggling a second one is 400 at the first
    parser; the operator token in any casing of ``Bearer`` changes the rules; the 404s under ``/v1/health/``
    are shed by the ``other`` resource."""
    gw = Gateway(tmp_path / "gw", *(("--edge",) if edge else ()), "--rp-id", "localhost", "--origin", ORIGIN).start()
    try:
        home = gw.home
        a = shopper(home, "ann")["Authorization"].encode()
        b = shopper(home, "bob")["Authorization"].encode()
        head = b"GET /v1/wallets/bob HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
        answer = _raw(gw.port, head + b"authorization: " + b + b"\r\nauthorization: " + a + b"\r\n\r\n")
        assert _status(answer) == 401 and b"3093" in answer, answer
        for smuggled in (b"\nauthorization: ", b"\rauthorization: ", b"\x00authorization: "):
            answer = _raw(gw.port, head + b"authorization: " + a + smuggled + b + b"\r\n\r\n")
            assert _status(answer) == 400, answer
        assert _status(_raw(gw.port, head + b"authorization: " + b + b"\r\n\r\n")) == 200
        with httpx.Client(base_url=gw.url, timeout=10) as c:
            rules = c.get("/v1/flow/rules").json()
            for res in rules["resources"]:
                # without a session a 404 under /v1/health/ is classed "unauthenticated" (classifier), with
                # one "other"
                if res["name"] in ("other", "unauthenticated"):
                    res.update(rate_per_s=0.01, burst=1)
            rules["version"] = 7
            lower = {"authorization": "bearer " + operator_token(home)}
            r = c.put("/v1/flow/rules", json=rules, headers=lower)
            assert r.status_code == 200, r.text
        one = b"GET /v1/health/x HTTP/1.1\r\nhost: x\r\n\r\n"
        answers = _raw(gw.port, one * 5 + b"GET /v1/health/x HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        statuses = [int(p[:3]) for p in answers.split(b"HTTP/1.1 ")[1:]]
        assert statuses[0] == 404 and statuses[1:] == [429] * 5, statuses
        assert _status(_raw(gw.port, b"GET /v1/health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")) == 200
    finally:
        gw.stop()
    log = (tmp_path / "gw" / "gateway.log").read_text()
    assert "Traceback" not in log, log


def _ann_with_an_order(c: httpx.Client, home: Path) -> tuple[dict[str, str], str]:
    """Ann's session headers and an order of hers (100 fen, her wallet topped up by the operator)."""
    r = c.post("/v1/wallets/ann/topup", json={"amount": 500}, headers={"idempotency-key": "t"} | operator(home))
    assert r.status_code == 200, r.text
    ann = shopper(home, "ann")
    r = c.post("/v1/orders", json={"buyer": "ann", "merchant": "shop", "amount": 100},
               headers={"idempotency-key": "o"} | ann)  # fmt: skip
    assert r.status_code in (200, 201), r.text
    return ann, str(r.json()["id"])


def test_an_unauthenticated_flood_of_pays_cannot_take_the_signed_in_payers_slots(tmp_path: Path) -> None:
    """Classified by path alone, ``POST /v1/orders/<any>/pay`` without a good token was ``pay`` at PAY (and
    named the hot merchant): a flood of them, each answered 401 behind the gate, held paying's slots (behind
    ``--edge`` on the shared 2-core host: paying went from about 150/s to 0). With the caller checked in
    classification (``classifier``), such requests are ``unauthenticated`` at the lowest priority."""
    key = session_key(tmp_path)
    ident = Identity(key, operator_token(tmp_path))
    classify_caller = classifier(ident)
    ann = ("authorization", "Bearer " + key.issue("shopper", "ann", 600)[0])

    def scope(path: str, *headers: tuple[str, str]) -> dict[str, Any]:
        return {"type": "http", "method": "POST", "path": path,
                "headers": [(k.encode(), v.encode()) for k, v in headers]}  # fmt: skip

    forged = ann[1][:-2] + ("AA" if not ann[1].endswith("AA") else "BA")
    expired_key = SessionKey(key._secret, now_ms=lambda: 0)
    expired = "Bearer " + expired_key.issue("shopper", "ann", 1)[0]
    for bad in ((), (("authorization", "Bearer junk"),), (("authorization", forged),),
                (("authorization", expired),), (ann, ann)):  # fmt: skip
        got = classify_caller(scope("/v1/orders/shop.0000000000000000/pay", *bad))
        assert got == (UNAUTHENTICATED_RESOURCE, Priority.REPORT, None), (bad, got)
    assert classify_caller(scope("/v1/orders/shop.1/pay", ann)) == ("pay", Priority.PAY, "shop")
    op = ("authorization", "Bearer " + operator_token(tmp_path))
    assert classify_caller(scope("/v1/sessions", op)) == ("sessions", Priority.CONFIRM, None)
    # the open pages and unguarded endpoints as before
    page = {"type": "http", "method": "GET", "path": "/checkout/shop.1", "headers": []}
    assert classify_caller(page) == classify(page)
    assert classify_caller({"type": "http", "method": "GET", "path": "/v1/health", "headers": []}) is None
    assert classify_caller({"type": "http", "method": "GET", "path": "/v1/flow/rules", "headers": []}) is None
    # /metrics: unguarded for the operator's scraper, not for a flood without a good token or of shoppers
    metrics = {"type": "http", "method": "GET", "path": "/metrics", "headers": [(b"authorization", op[1].encode())]}
    assert classify_caller(metrics) is None
    for bad in ([], [(b"authorization", ann[1].encode())], [(b"authorization", forged.encode())]):
        got = classify_caller({"type": "http", "method": "GET", "path": "/metrics", "headers": bad})
        assert got == (UNAUTHENTICATED_RESOURCE, Priority.REPORT, None), got
    # the flood never finishes; signed-in payers are still admitted
    gate = Gate(default_rules())
    held = []
    with pytest.raises(Refused):
        for _ in range(5_000):
            what = classify_caller(scope("/v1/orders/shop.0000000000000000/pay"))
            assert what is not None
            held.append(gate.enter(*what))
    tickets = [gate.enter(*what) for what in [classify_caller(scope("/v1/orders/shop.1/pay", ann))] * 8 if what]
    assert len(tickets) == 8
    for t in held + tickets:
        t.exit(True)


def test_through_uvicorn_an_unauthenticated_flood_is_its_own_resource(tmp_path: Path) -> None:
    """``liangcao checkout start --server uvicorn`` (FlowMiddleware with ``classifier``): with the
    ``unauthenticated`` resource throttled to nearly nothing, pays without a good token are shed (429) while
    a signed-in shopper's pay still reaches the gateway."""
    gw = Gateway(tmp_path / "gw", "--server", "uvicorn").start()
    try:
        home = gw.home
        with httpx.Client(base_url=gw.url, timeout=10) as c:
            rules = c.get("/v1/flow/rules").json()
            assert UNAUTHENTICATED_RESOURCE in [r["name"] for r in rules["resources"]]
            for res in rules["resources"]:
                if res["name"] == UNAUTHENTICATED_RESOURCE:
                    res.update(rate_per_s=0.01, burst=1)
            rules["version"] = 5
            assert c.put("/v1/flow/rules", json=rules, headers=operator(home)).status_code == 200
            ann, order = _ann_with_an_order(c, home)
            good = ann["Authorization"]
            forged = {"authorization": good[:-2] + ("AB" if not good.endswith("AB") else "BA")}
            statuses = [
                c.post(f"/v1/orders/{order}/pay", json={}, headers={"idempotency-key": f"x{i}"} | forged).status_code
                for i in range(6)
            ]
            assert statuses[0] == 401 and statuses[1:] == [429] * 5, statuses
            r = c.post(f"/v1/orders/{order}/pay", json={}, headers={"idempotency-key": "p"} | ann)
            assert r.status_code == 200, r.text
    finally:
        gw.stop()


def test_a_signed_in_shoppers_flood_is_held_to_their_own_rate(tmp_path: Path) -> None:
    """A shopper with a good session of their own sent ``pay`` for other people's orders (any merchant,
    answered 403 behind the gate) as fast as they could: classified ``pay`` at PAY, the flood took paying's
    slots as the unauthenticated one had, and the merchant's hot limit did not stop it (each request named
    another merchant). Now each signed-in caller has its own rate (the ``caller`` rule's hot limit): past it
    that caller's requests are refused at classification (429, with the wait), while every other caller is
    classified as before; the rate refills with time and changes with the rules. (Re-classing them to a
    small resource of their own, tried first, let them escape paying's own limits: the cluster-wide rate of
    tests/test_checkout_cluster.py was exceeded fourfold by one shopper per gateway.)"""
    key = session_key(tmp_path)
    now = [1000.0]
    gate = Gate(default_rules(), clock=lambda: now[0])
    classify_caller = classifier(Identity(key, operator_token(tmp_path)), gate)

    def pay(who: str, merchant: str) -> dict[str, Any]:
        token = "Bearer " + key.issue("shopper", who, 600)[0]
        return {"type": "http", "method": "POST", "path": f"/v1/orders/{merchant}.00000001/pay",
                "headers": [(b"authorization", token.encode())]}  # fmt: skip

    def outcome(scope: dict[str, Any]) -> Any:
        try:
            return classify_caller(scope)
        except Refused as exc:
            assert exc.http_status == 429 and exc.retry_after_ms >= 1 and exc.resource == CALLER_RESOURCE
            return "refused"

    got = [outcome(pay("mallory", f"shop{i}")) for i in range(5_000)]
    assert got[:caller_burst] == [("pay", Priority.PAY, f"shop{i}") for i in range(caller_burst)]
    assert got[caller_burst:] == ["refused"] * (5_000 - caller_burst)
    # every other caller is classified as before: ann's payments, bob's browsing
    assert all(outcome(pay("ann", "shop")) == ("pay", Priority.PAY, "shop") for _ in range(50))
    # the operator has no rate of their own
    op = {"type": "http", "method": "POST", "path": "/v1/wallets/ann/topup",
          "headers": [(b"authorization", ("Bearer " + operator_token(tmp_path)).encode())]}  # fmt: skip
    assert all(outcome(op) == ("topup", Priority.CONFIRM, None) for _ in range(1_000))
    # a second later mallory has a second's worth again
    now[0] += 1.0
    again = [outcome(pay("mallory", "shop")) for _ in range(int(caller_rate_per_s) + 5)]
    assert again.count("refused") == 5
    # the rate is a rule like any other: changed at run time
    rules = default_rules()
    for r in rules.resources:
        if r.name == CALLER_RESOURCE and r.hot is not None:
            r.hot.rate_per_s, r.hot.burst = 1.0, 3
    gate.reload(rules)
    now[0] += 10.0
    assert [outcome(pay("bob", "shop")) for _ in range(5)] == [("pay", Priority.PAY, "shop")] * 3 + ["refused"] * 2
    assert "hot_parameter_limited" in str(gate.status()["resources"][CALLER_RESOURCE])


@pytest.mark.parametrize("edge", [False, True])
def test_through_real_processes_a_signed_in_flood_is_shed_and_others_pay(tmp_path: Path, edge: bool) -> None:
    """The gateway's own server (and ``--edge``): with each caller's rate turned down at run time, a
    signed-in shopper's flood of pays for someone else's order is answered 403 while within their rate,
    then shed (429), and another shopper's payment goes through."""
    gw = Gateway(tmp_path / "gw", *(["--edge"] if edge else [])).start()
    try:
        home = gw.home
        with httpx.Client(base_url=gw.url, timeout=10) as c:
            rules = c.get("/v1/flow/rules").json()
            for res in rules["resources"]:
                if res["name"] == CALLER_RESOURCE:
                    res["hot"].update(rate_per_s=0.01, burst=2)
            rules["version"] = 7
            assert c.put("/v1/flow/rules", json=rules, headers=operator(home)).status_code == 200
            ann, order = _ann_with_an_order(c, home)
            mallory = shopper(home, "mallory")
            statuses = [
                c.post(f"/v1/orders/{order}/pay", json={}, headers={"idempotency-key": f"m{i}"} | mallory).status_code
                for i in range(8)
            ]
            # two within mallory's rate, refused as not hers (403); the rest shed before anyone looks
            assert statuses == [403] * 2 + [429] * 6, statuses
            r = c.post(f"/v1/orders/{order}/pay", json={}, headers={"idempotency-key": "p"} | ann)
            assert r.status_code == 200, r.text
    finally:
        gw.stop()
