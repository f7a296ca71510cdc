"""The HTTP API and the SDK against a real node on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conftest import Live
from liangcao import encoding, limits
from liangcao.client import Client, ClientError, verify_proof
from liangcao.codes import Code


@pytest.fixture
def client(live: Live) -> Iterator[Client]:
    with Client(live.url, live.token) as c:
        yield c


def http(live: Live, token: bool = True) -> httpx.Client:
    return httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {live.token}"} if token else {})


def test_submit_wait_and_proof(live: Live, client: Client) -> None:
    receipt = client.call("demo.wallet", "mint", {"to": "org1/alice", "amount": 1000}, [live.signer("org1/admin")])
    assert receipt["code"] == 0 and receipt["result"] == {"balance": receipt["result"]["balance"]}
    tx = client.build("demo.wallet", "transfer", {"to": "org2/bob", "amount": 10}, [live.signer("org1/alice")])
    r = client.submit(tx, wait=True)
    assert r["status"] == "committed" and r["code"] == 0 and r["tx_id"] == tx.tx_id
    info = client.tx(tx.tx_id)
    assert info["receipt"]["code"] == 0 and info["height"] == r["height"]
    assert verify_proof(info["tx_proof"]) == (True, "ok")
    assert verify_proof(info["receipt_proof"]) == (True, "ok")
    block = client.block(r["height"])
    assert tx.tx_id in [encoding.sha256_hex(encoding.canonical(t["body"])) for t in block["txs"]]
    assert block["attestations"] and block["attestations"][0]["block_hash"] == block["block_hash"]
    # submitting the same transaction again is idempotent: it answers with the committed position
    again = client.submit(tx)
    assert again["status"] == "committed" and again["height"] == r["height"]


def test_submit_without_wait_then_poll(live: Live, client: Client) -> None:
    tx = client.build("demo.wallet", "mint", {"to": "org3/bob", "amount": 5}, [live.signer("org3/admin")])
    assert client.submit(tx)["status"] in ("pending", "committed")
    deadline = time.time() + 10
    while True:
        try:
            assert client.tx(tx.tx_id)["receipt"]["code"] == 0
            break
        except ClientError as exc:
            assert exc.code == Code.NOT_FOUND
            assert time.time() < deadline
            time.sleep(0.02)


def test_multi_signer_governance_over_http(live: Live, client: Client) -> None:
    r = client.call(
        "consortium",
        "set_policy",
        {"name": "finality", "num": 1, "den": 2},
        [live.signer("org1/admin"), live.signer("org3/admin")],
    )
    assert r["code"] == 0
    r = client.call("consortium", "set_policy", {"name": "finality", "num": 1, "den": 2}, [live.signer("org1/admin")])
    assert r["code"] == Code.QUORUM_NOT_MET


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"not json", 400, Code.BAD_ENCODING),
        (b'{"body": {"x": 1.5}, "signatures": []}', 400, Code.FLOAT_NOT_ALLOWED),
        (b"[]", 400, Code.MALFORMED_TX),
        (b'{"body": {}, "signatures": []}', 400, Code.MALFORMED_TX),
        (b"x" * (limits.tx_bytes_max + 1), 413, Code.TOO_LARGE),
    ],
)
def test_bad_submissions(live: Live, body: bytes, status: int, code: int) -> None:
    with http(live, token=False) as h:
        r = h.post("/v1/txs", content=body)
    assert r.status_code == status, r.text
    err = r.json()
    assert err["code"] == code and err["message"] and "detail" in err


def test_admission_refusals(live: Live, client: Client) -> None:
    alice = live.signer("org1/alice")
    from liangcao.ledger import tx as txm

    now = int(time.time() * 1000)
    wrong_chain = txm.build("other", "demo.wallet", "mint", {}, [alice], not_after=now + 1000)
    expired = txm.build(client.chain_id, "demo.wallet", "mint", {}, [alice], not_after=now - 1000)
    unsigned = txm.build(client.chain_id, "demo.wallet", "mint", {}, [], not_after=now + 1000)
    for tx, code in ((wrong_chain, Code.WRONG_CHAIN), (expired, Code.EXPIRED), (unsigned, Code.MISSING_SIGNATURE)):
        with pytest.raises(ClientError) as info:
            client.submit(tx)
        assert info.value.code == code and info.value.status == 400


def test_reads_need_a_valid_token(live: Live) -> None:
    with http(live, token=False) as h:
        r = h.get("/v1/head")
        assert r.status_code == 401 and r.json()["code"] == Code.UNAUTHORIZED
        r = h.get("/v1/head", headers={"Authorization": "Bearer lc1.e30.AAAA"})
        assert r.status_code == 401 and r.json()["code"] == Code.UNAUTHORIZED
        assert h.get("/v1/health").status_code == 200  # liveness is public
        now = int(time.time() * 1000)
        expired = live.home.auth().create("org2/alice", 1, now_ms=now - 86_400_000 - 1)
        r = h.get("/v1/head", headers={"Authorization": f"Bearer {expired}"})
        assert r.status_code == 401 and "expired" in r.json()["message"]
        # a write token reads too (scopes: read < write)
        write = live.home.auth().create("org2/alice", 1, scope="write")
        assert h.get("/v1/head", headers={"Authorization": f"Bearer {write}"}).status_code == 200


def test_not_found_and_bad_parameters(live: Live) -> None:
    with http(live) as h:
        cases: list[tuple[str, str, int, int]] = [
            ("GET", "/v1/txs/" + "0" * 64, 404, Code.NOT_FOUND),
            ("GET", "/v1/txs/xyz", 400, Code.INVALID_ARGUMENT),
            ("GET", "/v1/blocks/999999", 404, Code.NOT_FOUND),
            ("GET", "/v1/blocks/-1", 400, Code.INVALID_ARGUMENT),
            ("GET", "/v1/state/nope/nothing", 404, Code.NOT_FOUND),
            ("GET", "/v1/nowhere", 404, Code.NOT_FOUND),
            ("POST", "/v1/query/nope/x", 400, Code.UNKNOWN_CONTRACT),
            ("POST", "/v1/query/demo.wallet/balance", 400, Code.INVALID_ARGUMENT),
        ]
        for method, path, status, code in cases:
            r = h.request(method, path, json={} if method == "POST" else None)
            assert (r.status_code, r.json()["code"]) == (status, code), (path, r.text)


def test_state_blocks_and_queries(live: Live, client: Client) -> None:
    client.call("demo.wallet", "mint", {"to": "org2/alice", "amount": 77}, [live.signer("org2/admin")])
    assert client.query("demo.wallet", "balance", {"member": "org2/alice"})["balance"] >= 77
    s = client.state("demo.wallet/balance/org2/alice", history=5)
    assert s["value"] >= 77 and s["history"][0]["height"] >= 1
    listing = client.get("/v1/state", prefix="consortium/org/")
    assert [e["key"] for e in listing["entries"]] == [
        "consortium/org/org1",
        "consortium/org/org2",
        "consortium/org/org3",
    ]
    blocks = client.get("/v1/blocks", limit=3)["blocks"]
    assert len(blocks) <= 3 and blocks[0]["header"]["height"] == client.head()["header"]["height"]


def test_batch_submission(live: Live, client: Client) -> None:
    admin = live.signer("org1/admin")
    txs = [client.build("demo.wallet", "mint", {"to": "org1/bob", "amount": i + 1}, [admin]) for i in range(5)]
    results = client.submit_many([*txs, b'{"nonsense": true}'])
    assert [r["status"] for r in results[:5]] == ["pending"] * 5 or all(
        r["status"] in ("pending", "committed") for r in results[:5]
    )
    assert results[5]["status"] == "rejected" and results[5]["code"] == Code.MALFORMED_TX


def test_event_stream_replay_resume_and_live(live: Live, client: Client) -> None:
    client.call("demo.wallet", "mint", {"to": "org3/alice", "amount": 1}, [live.signer("org3/admin")])
    replay = list(client.events(0, follow=False, contract="demo.wallet"))
    assert replay and all(e["type"] == "contract" and e["contract"] == "demo.wallet" for e in replay)
    ids = [e["id"] for e in replay]
    assert ids == sorted(ids, key=lambda i: tuple(int(x) for x in i.split("-")))
    # resume after the second event: the rest, nothing twice
    resumed = list(client.events(0, follow=False, contract="demo.wallet", last_event_id=ids[1]))
    assert [e["id"] for e in resumed] == ids[2:]
    # live: a follower sees an event committed after it connected
    seen: list[dict[str, Any]] = []
    head = client.head()["header"]["height"]

    def follow() -> None:
        with Client(live.url, live.token) as c:
            for e in c.events(head + 1, contract="demo.wallet", name="minted"):
                seen.append(e)
                return

    t = threading.Thread(target=follow, daemon=True)
    t.start()
    time.sleep(0.3)
    client.call("demo.wallet", "mint", {"to": "org3/alice", "amount": 2}, [live.signer("org3/admin")])
    t.join(10)
    assert seen and seen[0]["data"]["amount"] == 2 and seen[0]["height"] > head


def test_metrics_and_openapi(live: Live) -> None:
    with http(live, token=False) as h:
        text = h.get("/metrics").text
        assert "liangcao_blocks_committed_total" in text and "liangcao_commit_latency_seconds_bucket" in text
        spec = h.get("/openapi.json").json()
        assert "/v1/txs" in spec["paths"] and "/v1/events" in spec["paths"]
