"""An outsider with a shopper session of their own attacks the credit service's caller identity
(``liangcao.credit.identity``, ``liangcao.sessions``, the route rules in ``credit/http.py``).

Findings fixed (each test failed first):

* a body with a key twice (``{"shopper": "bob", ..., "shopper": "ann"}``, ``"amount_fen"`` twice) was taken
  with its last value, which is what the rule checked, but a proxy, WAF or audit log reading the first saw
  another buyer or another amount (the checkout gateway refused these already): now ``400 INVALID_ARGUMENT``;
* two ``Authorization`` headers were read as the first one: now ``401 UNAUTHENTICATED``;
* the operator token was taken only after ``Bearer`` spelled exactly so (a session after any casing).

Properties held: the checkout gateway's session is refused here (another realm, another key); path
spellings of a plan or a shopper (``%2F``, ``..``, ``%42``, case, a trailing slash) reach nobody else's;
a query string naming another shopper is not read; sessions are minted by the operator token only, also
through ``liangcao credit start`` and ``liangcao credit token``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from liangcao.checkout.identity import session_key as checkout_session_key
from liangcao.credit.errors import CreditCode
from liangcao.credit.http import create_app
from liangcao.credit.identity import operator_token
from liangcao.payments import Engine
from liangcao.procs import die_with_parent, free_port, port_open
from test_checkout_identity_attacks import _raw
from test_credit_attacks import serve
from test_credit_identity import World

UNAUTH, FORBID = int(CreditCode.UNAUTHENTICATED), int(CreditCode.FORBIDDEN)


@pytest.fixture
def w(tmp_path: Path) -> Iterator[World]:
    with Engine(tmp_path / "pay", fsync=False) as engine:
        world = World(tmp_path, engine)
        yield world
        world.s.close()


@pytest.fixture
def client(w: World) -> Iterator[httpx.Client]:
    with serve(create_app(w.s)) as c:
        yield c


def _auth(w: World, name: str) -> str:
    return w.h[name]["Authorization"]


def test_a_body_with_a_key_twice_is_refused_and_writes_nothing(w: World, client: httpx.Client) -> None:
    before = w.snapshot()
    ann = {"authorization": _auth(w, "ann"), "content-type": "application/json"}
    for body in (
        b'{"order_id":"A8","shopper":"bob","merchant":"shop","amount_fen":100,"periods":3,"shopper":"ann"}',
        b'{"order_id":"A7","shopper":"ann","merchant":"shop","amount_fen":100,"periods":3,"amount_fen":20000}',
        b'{"order_id":"A6","order_id":"A1","shopper":"ann","merchant":"shop","amount_fen":100,"periods":3}',
    ):
        r = client.post("/v1/credit/installments", content=body, headers=ann)
        assert r.status_code == 400, r.text
        assert r.json()["code"] == 302 and "twice" in r.json()["message"], r.text  # INVALID_ARGUMENT
    r = client.post("/v1/credit/plans/A1/repay", content=b'{"amount_fen":1,"amount_fen":30000}', headers=ann)
    assert r.status_code == 400, r.text
    assert w.snapshot() == before
    # one key once is still a purchase
    one = {"order_id": "A5", "shopper": "ann", "merchant": "shop", "amount_fen": 100, "periods": 3}
    assert client.post("/v1/credit/installments", json=one, headers=ann).status_code == 200


def test_two_authorization_headers_are_401_whichever_comes_first(w: World, client: httpx.Client) -> None:
    before = w.snapshot()
    ann, bob, op = _auth(w, "ann"), _auth(w, "bob"), _auth(w, "optoken")
    for first, second in ((ann, bob), (bob, ann), (ann, "Bearer junk"), ("Bearer junk", ann), (ann, ann), (op, ann)):
        two = [("authorization", first), ("authorization", second)]
        for method, path in (
            ("GET", "/v1/credit/shoppers/ann"),
            ("GET", "/v1/credit/plans/A1"),
            ("GET", "/v1/credit/book"),
        ):
            r = client.request(method, path, headers=two)
            assert r.status_code == 401 and r.json()["code"] == UNAUTH, (first[:12], path, r.text)
        r = client.post("/v1/credit/plans/A1/repay", json={"amount_fen": 1}, headers=two)
        assert r.status_code == 401, r.text
        r = client.post("/v1/credit/sessions", json={"role": "operator", "subject": "x"}, headers=two)
        assert r.status_code == 401, r.text
    assert w.snapshot() == before


def test_the_operator_token_in_any_casing_of_bearer(w: World, client: httpx.Client) -> None:
    token = operator_token(w.home)
    for scheme in ("Bearer", "bearer", "BEARER"):
        assert client.get("/v1/credit/book", headers={"authorization": f"{scheme} {token}"}).status_code == 200
        r = client.post("/v1/credit/sessions", json={"role": "shopper", "subject": "cat"},
                        headers={"authorization": f"{scheme} {token}"})  # fmt: skip
        assert r.status_code == 201, r.text
    for bad in (f"Basic {token}", token, f"Bearer {token}x", f"Bearer {token[:-1]}"):
        r = client.get("/v1/credit/book", headers={"authorization": bad})
        assert r.status_code == 401 and r.json()["code"] == UNAUTH, (bad[:10], r.text)


def test_path_spellings_and_query_strings_reach_nobody_elses_records(w: World, client: httpx.Client) -> None:
    w.s.deposit("bob", 100_000, "b-seed")
    w.s.checkout_installments("B1", "bob", "shop", 30_000, 3)
    before = w.snapshot()
    bob = {"authorization": _auth(w, "bob")}
    for path in (
        "/v1/credit/plans/A1", "/v1/credit/plans/%41%31", "/v1/credit/plans/B1%2F..%2FA1", "/v1/credit/plans/B1/../A1",
        "/v1/credit/plans/A1/", "/v1/credit/shoppers/ann", "/v1/credit/shoppers/%61nn", "/v1/credit/shoppers/Ann",
        "/v1/credit/shoppers/bob%2F..%2Fann", "/v1/credit/shoppers/ann/statement", "/v1/credit//shoppers/ann",
        "/v1/credit/shoppers/bob?shopper=ann", "/v1/credit/shoppers/ann%E2%80%8B",
    ):  # fmt: skip
        r = client.get(path, headers=bob)
        text = r.text
        assert r.status_code in (200, 307, 403, 404), (path, text)
        assert '"shopper":"ann"' not in text and "50000" not in text, (path, text)  # ann's plan or wallet
    for path in ("/v1/credit/plans/A1/repay", "/v1/credit/plans/B1/../A1/repay", "/v1/credit/plans/%41%31/repay"):
        r = client.post(path, json={"amount_fen": 1}, headers=bob)
        assert r.status_code in (403, 404), (path, r.text)
    # a gateway's session for the same name is another realm's
    gw_token, _ = checkout_session_key(w.home / "gw").issue("shopper", "ann", 600)
    r = client.get("/v1/credit/shoppers/ann", headers={"authorization": f"Bearer {gw_token}"})
    assert r.status_code == 401 and r.json()["code"] == UNAUTH
    assert w.snapshot() == before


def test_through_liangcao_credit_start(tmp_path: Path) -> None:
    """The real service: a body with a key twice and two Authorization headers refused on the wire, the
    operator token in lower case mints a session, ``credit token`` sessions work, no traceback logged."""
    data, port = tmp_path / "credit", free_port()
    cli = [sys.executable, "-m", "liangcao.cli", "credit"]
    log = tmp_path / "credit.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*cli, "start", "--data", str(data), "--port", str(port)], stdout=out, stderr=out,
                                preexec_fn=die_with_parent(signal.SIGKILL))  # fmt: skip
    try:
        assert port_open(port, 60), log.read_text()
        deadline = time.monotonic() + 20
        while not (data / "operator.token").exists() and time.monotonic() < deadline:
            time.sleep(0.05)

        def token(*who: str) -> str:
            run = subprocess.run([*cli, "token", "--data", str(data), *who], capture_output=True, text=True, timeout=60)
            assert run.returncode == 0, run.stderr
            return run.stdout.strip()

        ann, bob = token("--shopper", "ann"), token("--shopper", "bob")
        body = b'{"order_id":"X1","shopper":"bob","merchant":"shop","amount_fen":100,"periods":3,"shopper":"ann"}'
        head = (
            f"POST /v1/credit/installments HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {len(body)}\r\n"
        )
        answer = _raw(port, head.encode() + f"authorization: Bearer {ann}\r\n\r\n".encode() + body)
        assert answer.startswith(b"HTTP/1.1 400"), answer
        two = f"authorization: Bearer {ann}\r\nauthorization: Bearer {bob}\r\n\r\n".encode()
        answer = _raw(port, b"GET /v1/credit/shoppers/ann HTTP/1.1\r\nhost: x\r\nconnection: close\r\n" + two)
        assert answer.startswith(b"HTTP/1.1 401") and str(UNAUTH).encode() in answer, answer
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            op = (data / "operator.token").read_text().strip()
            r = c.post("/v1/credit/sessions", json={"role": "shopper", "subject": "cat"},
                       headers={"authorization": f"bearer {op}"})  # fmt: skip
            assert r.status_code == 201, r.text
            cat = json.loads(r.text)["token"]
            assert (
                c.get("/v1/credit/shoppers/cat/line-account", headers={"authorization": f"Bearer {cat}"}).status_code
                == 200
            )
            r = c.get("/v1/credit/shoppers/ann", headers={"authorization": f"Bearer {cat}"})
            assert r.status_code == 403 and r.json()["code"] == FORBID
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    assert "Traceback" not in log.read_text()
