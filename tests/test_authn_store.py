"""The relying party's store and router seams: group commit keeps writers apart, a closed store refuses, and
a gateway's session decides who the shopper is."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from liangcao.authn import AuthnCode, RelyingParty, SoftAuthenticator
from liangcao.authn.http import router
from liangcao.authn.store import Store, _Waiter
from liangcao.errors import StoreError
from liangcao.procs import free_port


def test_one_failing_writer_in_a_shared_commit_leaves_the_others_applied(tmp_path: Path) -> None:
    store = Store(tmp_path)
    try:
        store.write([("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)", ())])
        store.write([("INSERT INTO t VALUES (1, 'one')", ())])
        good = _Waiter([("INSERT INTO t VALUES (2, 'two')", ()), ("UPDATE t SET v = 'uno' WHERE k = 1", ())])
        bad = _Waiter([("INSERT INTO t VALUES (3, 'three')", ()), ("INSERT INTO t VALUES (1, 'dup')", ())])
        also = _Waiter([("INSERT INTO t VALUES (4, 'four')", ())])
        Store._commit(store._writer, [good, bad, also])
        assert good.error is None and also.error is None and bad.error is not None
        assert store.rows("SELECT k, v FROM t ORDER BY k") == [(1, "uno"), (2, "two"), (4, "four")]
        # through write(): the failing writer gets a fault, nothing of it is applied
        with pytest.raises(StoreError):
            store.write([("INSERT INTO t VALUES (5, 'five')", ()), ("INSERT INTO t VALUES (2, 'dup')", ())])
        assert store.row("SELECT count(*) FROM t") == (3,)
    finally:
        store.close()
    with pytest.raises(StoreError, match="closed"):
        store.write([("SELECT 1", ())])


def test_concurrent_writers_share_commits_and_all_land(tmp_path: Path) -> None:
    store = Store(tmp_path)
    try:
        store.write([("CREATE TABLE t (k INTEGER PRIMARY KEY)", ())])
        start = threading.Barrier(12)

        def writer(n: int) -> None:
            start.wait()
            for i in range(25):
                store.write([("INSERT INTO t VALUES (?)", (n * 1000 + i,))])

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert store.row("SELECT count(*) FROM t") == (300,)
        assert store.writes == 301 and store.commits < store.writes  # some commits carried several writes
    finally:
        store.close()


def test_the_gateway_session_names_the_shopper(tmp_path: Path) -> None:
    port = free_port()
    origin = f"http://localhost:{port}"
    with RelyingParty("localhost", origin, tmp_path / "rp") as rp:
        app = FastAPI()
        app.include_router(router(rp, shopper_of=lambda request: request.headers.get("x-session-shopper", "")))
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started and thread.is_alive():
            time.sleep(0.01)
        dev = SoftAuthenticator()

        def as_(shopper: str) -> dict[str, str]:
            return {"x-session-shopper": shopper}

        try:
            http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
            opts = http.post("/authn/v1/registration/options", json={"shopper": "eve", "device_name": "p"},
                             headers=as_("eve")).json()  # fmt: skip
            cred = dev.create(opts["publicKey"], origin)
            body = {"shopper": "eve", "ceremony_id": opts["ceremony_id"], "credential": cred}
            assert http.post("/authn/v1/registration", json=body, headers=as_("eve")).status_code == 200
            # signed in as mallory, naming eve: refused, on every endpoint
            r = http.get("/authn/v1/credentials", params={"shopper": "eve"}, headers=as_("mallory"))
            assert r.status_code == 404 and r.json()["code"] == AuthnCode.UNKNOWN_SHOPPER
            terms = {"shopper": "eve", "order_id": "o", "payee": "m", "amount_fen": 5, "currency": "CNY"}
            r = http.post("/authn/v1/payment/challenge", json=terms, headers=as_("mallory"))
            assert r.status_code == 404 and r.json()["name"] == "UNKNOWN_SHOPPER"
            ch = http.post("/authn/v1/payment/challenge", json=terms, headers=as_("eve")).json()
            answer = dev.get(ch["publicKey"], origin)
            verify = {**terms, "challenge_id": ch["challenge_id"], "credential": answer}
            assert http.post("/authn/v1/payment/verify", json=verify, headers=as_("mallory")).status_code == 404
            ok = http.post("/authn/v1/payment/verify", json=verify, headers=as_("eve"))
            assert ok.status_code == 200 and ok.json()["amount_fen"] == 5
            again = http.post("/authn/v1/payment/verify", json=verify, headers=as_("eve"))
            assert again.status_code == 409 and again.json()["name"] == "REPLAYED"
            r = http.post("/authn/v1/passwordless", json={"shopper": "eve", "limit_fen": 10**9}, headers=as_("eve"))
            assert r.status_code == 400 and r.json()["code"] == AuthnCode.LIMIT_OVER_MAX
            http.close()
        finally:
            server.should_exit = True
            thread.join(20)
