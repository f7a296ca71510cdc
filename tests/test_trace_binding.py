"""GS1's EPCIS 2.0 REST binding on a real node, as an integrator's system uses it (issue 25).

Declared ``ni:///`` event ids, query documents every event of which re-hashes to its id, the binding's list
syntax, duplicates, the event at fault in a refused capture, deep nesting on every route, discovery and the
``GS1-*`` headers, named queries, and subscriptions over WebSocket and webhooks that resume after a disconnect.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from conftest import Live
from liangcao.client import Client
from liangcao.trace.hashing import document_hashes
from liangcao.trace.validate import validate_document
from trace_ledger import BRAND_PREFIX, FIXTURES, document, obj

TYPES = ["brand", "logistics", "customs", "warehouse", "platform"]
BRAND, LOGISTICS, CUSTOMS = "org1", "org2", "org3"
PALLET = "urn:epc:id:sscc:0614141.1234567891"
BASE = "/epcis/v2"


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    live = Live(tmp_path_factory.mktemp("binding") / "net", TYPES, custody=True)
    with Client(live.url, live.token) as c:
        admins = [live.signer(f"org{i}/admin") for i in (1, 2, 3)]
        assert c.call("trace", "assign_prefix", {"prefix": BRAND_PREFIX, "org": BRAND}, admins)["code"] == 0
        assert c.call("trace", "set_policy", {"org_type": "customs", "own": False, "steps": ["*"]}, admins)["code"] == 0
    yield live
    live.stop()


def http(net: Live, member: str, scope: str = "write") -> httpx.Client:
    token = net.home.auth().create(member, 1, scope=scope)
    return httpx.Client(base_url=net.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def capture(c: httpx.Client, body: bytes, **headers: str) -> dict[str, Any]:
    r = c.post(f"{BASE}/capture", content=body, headers=headers)
    assert r.status_code == 202, r.text
    deadline = time.time() + 30
    while True:
        job: dict[str, Any] = c.get(r.headers["Location"]).json()
        if not job["running"]:
            return job
        assert time.time() < deadline
        time.sleep(0.05)


def test_declared_hash_ids_are_found_and_every_queried_event_rehashes(net: Live) -> None:
    path = FIXTURES / "openepcis" / "capture-documents" / "ObjectEvent.json"
    doc = json.loads(path.read_text())
    declared = doc["epcisBody"]["eventList"][0]["eventID"]
    assert declared.startswith("ni:///sha-256;") and declared not in document_hashes(doc)
    nested = FIXTURES / "openepcis" / "capture-documents" / "Namespaces_at_different_level.json"
    with http(net, f"{CUSTOMS}/alice") as c:
        job = capture(c, path.read_bytes())
        assert job["success"], job
        r = c.get(f"{BASE}/events/{quote(declared, safe='')}")
        assert r.status_code == 200 and r.json()["eventID"] == declared
        one = r.json()
        assert "@context" in one  # an event served alone says how to read it
        first = job["captured"][:1]
        assert document_hashes({"@context": one.pop("@context"), "epcisBody": {"eventList": [one]}}) == first
        assert document_hashes(c.get(f"{BASE}/events", params={"EQ_eventID": declared}).json()) == first
        job2 = capture(c, nested.read_bytes())
        assert job2["success"], job2
        got = c.get(f"{BASE}/events", params={"EQ_eventID": "|".join(job2["captured"] + job["captured"])}).json()
        assert validate_document(got) == []
        assert sorted(document_hashes(got)) == sorted(job2["captured"] + job["captured"])


def test_list_syntax_order_duplicates_and_the_event_at_fault(net: Live) -> None:
    ship = obj([PALLET], "shipping", "2026-10-02T08:00:00+08:00")
    recv = obj([PALLET], "receiving", "2026-10-03T08:00:00+08:00")
    with http(net, f"{LOGISTICS}/bob") as c:
        job = capture(c, json.dumps(document([ship, recv])).encode())
        assert job["success"], job
        got = c.get(f"{BASE}/events", params={"EQ_bizStep": "shipping|receiving", "MATCH_epc": PALLET}).json()
        assert document_hashes(got) == job["captured"]
        got = c.get(f"{BASE}/events", params={"MATCH_epc": PALLET, "orderDirection": "DESC"}).json()
        assert document_hashes(got) == job["captured"][::-1]
        got = c.get(f"{BASE}/events", params={"eventType": "ObjectEvent|AggregationEvent", "MATCH_epc": PALLET})
        assert got.status_code == 200 and len(document_hashes(got.json())) == 2
        one = {**document([ship])["epcisBody"]["eventList"][0], "@context": document([])["@context"]}
        r = c.post(f"{BASE}/events", content=json.dumps(one))
        assert r.status_code == 409 and r.json()["type"] == "epcisException:ResourceAlreadyExistsException"
        assert r.headers["Location"] == f"{BASE}/events/{quote(job['captured'][0], safe='')}"
        # rollback: only the event at fault is named, not every id of its transaction
        bad = obj([PALLET], "inspecting", "2026-10-04T08:00:00+08:00")
        doc = document([obj([PALLET], "loading", "2026-10-04T07:00:00+08:00"), bad])
        job = capture(c, json.dumps(doc).encode())
        assert job["success"] is False and len(job["errors"]) == 1
        assert job["errors"][0]["eventIDs"] == [document_hashes(doc)[1]]


def test_deep_nesting_is_a_clean_400_on_every_route(net: Live) -> None:
    deep: Any = "x"
    for _ in range(500):
        deep = {"ext:a": deep}
    event = {**obj([PALLET], "shipping", "2026-10-05T08:00:00+08:00"), "ext:deep": deep}
    doc = {**document([event]), "@context": [document([])["@context"][0], {"ext": "https://ext.example/"}]}
    xml = b"<epcis:EPCISDocument xmlns:epcis='urn:epcglobal:epcis:xsd:2'>" + b"<a>" * 500 + b"</a>" * 500
    xml += b"</epcis:EPCISDocument>"
    with http(net, f"{LOGISTICS}/bob") as c:
        for path, body in (
            (f"{BASE}/capture", json.dumps(doc)),
            (f"{BASE}/capture", xml),
            (f"{BASE}/events", json.dumps({**event, "@context": doc["@context"]})),
            (f"{BASE}/events", xml),
            (f"{BASE}/queries", json.dumps({"name": "deep", "query": {"EQ_ext:a": [deep]}})),
            (f"{BASE}/queries/none/subscriptions", json.dumps({"dest": "http://x", "stream": True, "x": deep})),
        ):
            r = c.post(path, content=body)
            assert r.status_code in (400, 404), (path, r.status_code, r.text[:200])
            assert r.headers["GS1-EPCIS-Version"] == "2.0.0"


def test_discovery_and_headers_on_every_answer(net: Live) -> None:
    with http(net, f"{LOGISTICS}/bob") as c:
        for path in ("/", "/capture", "/events", "/eventTypes", "/epcs", "/bizSteps", "/bizLocations", "/readPoints",
                     "/dispositions", "/queries", f"/events/{quote('urn:uuid:x', safe='')}"):  # fmt: skip
            r = c.options(BASE + path)
            assert r.status_code == 204 and "GET" in r.headers["Allow"] and r.headers["GS1-CBV-Version"], path
        assert "queries" in c.get(f"{BASE}/").json()
        assert c.get(f"{BASE}/eventTypes").json() == [
            "ObjectEvent", "AggregationEvent", "TransactionEvent", "TransformationEvent", "AssociationEvent",
        ]  # fmt: skip
        assert "shipping" in c.get(f"{BASE}/bizSteps", params={"perPage": 100}).json()
        page = c.get(f"{BASE}/bizSteps", params={"perPage": 5})
        assert len(page.json()) == 5 and 'rel="next"' in page.headers["Link"]
        assert c.get(f"{BASE}/eventTypes/TeleportEvent").status_code == 404
        assert len(document_hashes(c.get(f"{BASE}/bizSteps/shipping/events").json())) >= 1
        assert len(document_hashes(c.get(f"{BASE}/epcs/{quote(PALLET, safe='')}/events").json())) >= 2
        epcs = c.get(f"{BASE}/epcs", params={"perPage": 1000}).json()
        assert "https://id.gs1.org/00/106141412345678915" in epcs
        r = c.get(f"{BASE}/events", params={"EQ_colour": "red"})
        assert r.status_code == 400 and r.json()["type"] == "epcisException:QueryParameterException"
        assert r.headers["GS1-EPCIS-Version"] == "2.0.0" and "EQ_colour" in r.json()["message"]
        assert c.delete(f"{BASE}/nextPageToken/abc").status_code == 204
        jobs = c.get(f"{BASE}/capture", params={"perPage": 1})
        assert jobs.status_code == 200 and len(jobs.json()) <= 1


def test_named_queries(net: Live) -> None:
    with http(net, f"{LOGISTICS}/bob") as c:
        body = {"name": "pallet-moves", "query": {"EQ_bizStep": ["shipping", "receiving"], "MATCH_epc": [PALLET]}}
        r = c.post(f"{BASE}/queries", json=body)
        assert r.status_code == 201 and r.headers["Location"] == f"{BASE}/queries/pallet-moves"
        assert c.post(f"{BASE}/queries", json=body).status_code == 409
        assert c.get(f"{BASE}/queries/pallet-moves").json() == body
        assert body in c.get(f"{BASE}/queries").json()
        got = c.get(f"{BASE}/queries/pallet-moves/events").json()
        assert got["epcisBody"]["queryResults"]["queryName"] == "pallet-moves" and len(document_hashes(got)) == 2
        bad = c.post(f"{BASE}/queries", json={"name": "bad", "query": {"GE_eventDate": "2026-01-01T00:00:00Z"}})
        assert bad.status_code == 400 and "GE_eventDate" in bad.json()["message"]
        assert c.delete(f"{BASE}/queries/pallet-moves").status_code == 204
        assert c.get(f"{BASE}/queries/pallet-moves").status_code == 404


def test_websocket_subscription_gets_each_event_once_and_resumes(net: Live) -> None:
    token = net.home.auth().create(f"{CUSTOMS}/alice", 1)
    ws_url = net.url.replace("http://", "ws://") + f"{BASE}/queries/inspections/events"
    with http(net, f"{CUSTOMS}/alice") as c:
        r = c.post(f"{BASE}/queries", json={"name": "inspections", "query": {"EQ_bizStep": ["inspecting"]}})
        assert r.status_code == 201
        with connect(f"{ws_url}?stream=true&access_token={token}", open_timeout=10) as ws:
            time.sleep(0.3)
            first = capture(
                c, json.dumps(document([obj([PALLET], "inspecting", "2026-10-06T08:00:00+08:00")])).encode()
            )
            capture(c, json.dumps(document([obj([PALLET], "holding", "2026-10-06T09:00:00+08:00")])).encode())
            msg = json.loads(ws.recv(timeout=10))
            assert document_hashes(msg) == first["captured"]
            assert msg["epcisBody"]["queryResults"]["subscriptionID"]
            position = msg["liangcao:position"]
        missed = capture(c, json.dumps(document([obj([PALLET], "inspecting", "2026-10-07T08:00:00+08:00")])).encode())
        with connect(f"{ws_url}?stream=true&resume={position}&access_token={token}", open_timeout=10) as ws:
            again = json.loads(ws.recv(timeout=10))
            assert document_hashes(again) == missed["captured"]  # the missed one, not the first again


def test_websocket_schedule_reports_every_matching_second(net: Live) -> None:
    token = net.home.auth().create(f"{CUSTOMS}/alice", 1)
    with http(net, f"{CUSTOMS}/alice") as c:
        assert (
            c.post(f"{BASE}/queries", json={"name": "holds", "query": {"EQ_bizStep": ["holding"]}}).status_code == 201
        )
    url = net.url.replace("http://", "ws://") + f"{BASE}/queries/holds/events"
    with connect(f"{url}?second=*&reportIfEmpty=true&access_token={token}", open_timeout=10) as ws:
        msg = json.loads(ws.recv(timeout=5))
        assert msg["type"] == "EPCISQueryDocument" and msg["epcisBody"]["queryResults"]["queryName"] == "holds"
    with pytest.raises(InvalidStatus):  # a malformed schedule: the handshake is refused
        connect(f"{url}?second=61&access_token={token}", open_timeout=10)


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[bytes, str]]] = []
    failing = False

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if _Hook.failing:
            self.send_response(503)
        else:
            _Hook.received.append((body, self.headers.get("GS1-Signature", "")))
            self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_webhook_subscription_signs_and_catches_up_after_the_subscriber_was_down(net: Live) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    dest = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        with http(net, f"{CUSTOMS}/alice") as c:
            assert (
                c.post(f"{BASE}/queries", json={"name": "samples", "query": {"EQ_bizStep": ["sampling"]}}).status_code
                == 201
            )
            r = c.post(
                f"{BASE}/queries/samples/subscriptions", json={"dest": dest, "signatureToken": "s3cret", "stream": True}
            )
            assert r.status_code == 201 and "signatureToken" not in r.json()
            sub = r.headers["Location"]
            assert c.get(sub).json()["dest"] == dest
            with http(net, f"{CUSTOMS}/bob", scope="read") as reader:
                refused = reader.post(f"{BASE}/queries/samples/subscriptions", json={"dest": dest, "stream": True})
                assert refused.status_code == 403
            _Hook.failing = True
            one = capture(c, json.dumps(document([obj([PALLET], "sampling", "2026-10-08T08:00:00+08:00")])).encode())
            time.sleep(0.5)
            assert _Hook.received == []
            _Hook.failing = False
            deadline = time.time() + 20
            while not _Hook.received:
                assert time.time() < deadline, "the webhook never caught up"
                time.sleep(0.1)
            body, signature = _Hook.received[0]
            assert signature == "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
            assert document_hashes(json.loads(body)) == one["captured"]
            assert c.delete(sub).status_code == 204
            assert c.get(sub).status_code == 404
    finally:
        server.shutdown()
        server.server_close()
