"""The flow library in front of the node's API and the payments service: classified, counted, and tightened at
run time through ``PUT /v1/flow/rules`` (the node asks a write token for it)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from conftest import Live
from liangcao.client import Client
from liangcao.flow import Gate, Priority, ResourceRule, Rules
from liangcao.payments.engine import Engine
from liangcao.payments.http import create_app
from liangcao.payments.identity import identity_in
from liangcao.procs import free_port


def test_node_api_is_gated_counted_and_tightened_at_run_time(live: Live) -> None:
    read = {"Authorization": f"Bearer {live.token}"}
    write = {"Authorization": f"Bearer {live.home.auth().create('org2/alice', 1, scope='write')}"}
    with httpx.Client(base_url=live.url, timeout=10) as http, Client(live.url, live.token) as client:
        assert http.get("/v1/flow").status_code == 401
        tx = client.build("demo.wallet", "mint", {"to": "org1/alice", "amount": 7}, [live.signer("org1/admin")])
        assert client.submit(tx)["status"] in ("pending", "committed")
        http.get("/explorer")
        status = http.get("/v1/flow", headers=read).json()
        assert status["resources"]["txs"]["decisions"]["PAY"]["pass"] >= 1
        assert status["resources"]["explorer"]["decisions"]["BROWSE"]["pass"] >= 1
        before = http.get("/v1/flow/rules", headers=read).content
        tight = {"version": 9, "resources": [{"name": "txs", "rate_per_s": 0.01, "burst": 1}, {"name": "queries"}]}
        assert http.put("/v1/flow/rules", headers=read, content=json.dumps(tight)).status_code == 403
        try:
            assert http.put("/v1/flow/rules", headers=write, content=json.dumps(tight)).status_code == 200
            txs = [
                client.build("demo.wallet", "mint", {"to": "org1/alice", "amount": i}, [live.signer("org1/admin")])
                for i in (1, 2)
            ]
            codes = [http.post("/v1/txs", content=t.raw).status_code for t in txs]
            assert codes[0] in (200, 202) and codes[1] == 429
            refused = http.post("/v1/txs", content=txs[1].raw)
            assert refused.json()["name"] == "RATE_LIMITED" and int(refused.headers["retry-after"]) >= 1
            assert http.get("/v1/head", headers=read).status_code == 200  # queries are not touched
            scrape = http.get("/metrics", headers=read).text
            assert 'liangcao_flow_decisions_total{decision="rate_limited",priority="PAY",resource="txs"}' in scrape
        finally:
            assert http.put("/v1/flow/rules", headers=write, content=before).status_code == 200


@pytest.fixture
def payments(tmp_path: Path) -> Iterator[tuple[httpx.Client, Gate]]:
    gate = Gate(
        Rules(resources=[ResourceRule(name="transfers", rate_per_s=0.01, burst=1), ResourceRule(name="queries")])
    )
    port = free_port()
    with Engine(tmp_path / "pay") as engine:
        identity = identity_in(tmp_path / "pay")
        app = create_app(engine, identity=identity, gate=gate, expire_every_s=0)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            while not server.started:
                time.sleep(0.01)
            auth = {"Authorization": f"Bearer {(tmp_path / 'pay' / 'operator.token').read_text().strip()}"}
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=auth, timeout=10) as http:
                yield http, gate
        finally:
            server.should_exit = True
            thread.join(10)


def test_payments_service_is_gated_by_class(payments: tuple[httpx.Client, Gate]) -> None:
    http, gate = payments
    assert (
        http.post(
            "/v1/accounts", json=[{"id": 1, "ledger": 1, "code": 1}, {"id": 2, "ledger": 1, "code": 1}]
        ).status_code
        == 200
    )
    one = [{"id": 10, "debit_account_id": 1, "credit_account_id": 2, "amount": 5, "ledger": 1, "code": 1}]
    assert http.post("/v1/transfers", json=one).status_code == 200
    two = [{"id": 11, "debit_account_id": 1, "credit_account_id": 2, "amount": 5, "ledger": 1, "code": 1}]
    r = http.post("/v1/transfers", json=two)
    assert r.status_code == 429 and r.json()["code"] == 3100 and "retry-after" in r.headers
    assert http.post("/v1/transfers/lookup", json={"ids": [10, 11]}).json()[0]["id"] == 10  # a query: not limited
    status = http.get("/v1/flow").json()
    assert status["resources"]["transfers"]["decisions"]["PAY"] == {"pass": 1, "rate_limited": 1}
    assert status["resources"]["accounts"]["decisions"]["CONFIRM"] == {"pass": 1}
    assert status["resources"]["queries"]["decisions"]["QUERY"] == {"pass": 1}
    assert gate.status()["passed"] == 3 and Priority.PAY.name in status["resources"]["transfers"]["decisions"]
