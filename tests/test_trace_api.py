"""The EPCIS 2.0 REST binding on a real node: capture jobs, error behaviour, queries, events, provenance."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from conftest import Live
from liangcao.client import Client
from liangcao.codes import Code
from liangcao.trace.hashing import document_hashes
from liangcao.trace.validate import validate_document
from trace_ledger import BRAND_PREFIX, FIXTURES, document, obj

TYPES = ["brand", "logistics", "customs", "warehouse", "platform"]
BRAND, LOGISTICS, CUSTOMS = "org1", "org2", "org3"
PALLET = "urn:epc:id:sscc:0614141.1234567891"
TIN = "urn:epc:id:sgtin:0614141.107346.1"


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    live = Live(tmp_path_factory.mktemp("trace") / "net", TYPES, custody=True)  # the node signs REST captures
    with Client(live.url, live.token) as c:
        admins = [live.signer(f"org{i}/admin") for i in (1, 2, 3)]
        r = c.call("trace", "assign_prefix", {"prefix": BRAND_PREFIX, "org": BRAND}, admins)
        assert r["code"] == 0, r
    yield live
    live.stop()


def http(net: Live, member: str) -> httpx.Client:
    token = net.home.auth().create(member, 1, scope="write")  # capture makes the node sign: a write token
    return httpx.Client(base_url=net.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def wait_job(c: httpx.Client, location: str) -> dict[str, Any]:
    deadline = time.time() + 30
    while True:
        job: dict[str, Any] = c.get(location).json()
        if not job["running"]:
            return job
        assert time.time() < deadline
        time.sleep(0.05)


def test_capture_job_then_query_and_provenance(net: Live) -> None:
    doc = document(
        [
            obj([TIN], "commissioning", "2026-10-01T08:00:00+08:00", action="ADD"),
            {
                "type": "AggregationEvent", "eventTime": "2026-10-01T09:00:00+08:00", "eventTimeZoneOffset": "+08:00",
                "parentID": PALLET, "childEPCs": [TIN], "action": "ADD", "bizStep": "packing",
            },
        ]
    )  # fmt: skip
    with http(net, f"{BRAND}/alice") as c:
        r = c.post("/epcis/v2/capture", content=json.dumps(doc))
        assert r.status_code == 202 and r.headers["GS1-EPCIS-Capture-Limit"]
        job = wait_job(c, r.headers["Location"])
        assert job["success"] is True and job["captured"] == document_hashes(doc) and job["errors"] == []
        # the same document again: recognised as duplicates
        job2 = wait_job(c, c.post("/epcis/v2/capture", content=json.dumps(doc)).headers["Location"])
        assert job2["success"] is True and job2["duplicates"] == job["captured"] and job2["captured"] == []
        assert [j["captureID"] for j in c.get("/epcis/v2/capture").json()][:2] == [job2["captureID"], job["captureID"]]
    with http(net, f"{LOGISTICS}/bob") as c:
        ship = document([obj([PALLET], "shipping", "2026-10-02T08:00:00+08:00")])
        r = c.post(
            "/epcis/v2/events", content=json.dumps({**ship["epcisBody"]["eventList"][0], "@context": ship["@context"]})
        )
        assert r.status_code == 201, r.text
        event_id = r.json()["captured"][0]
        assert r.headers["Location"] == f"/epcis/v2/events/{quote(event_id, safe='')}"
        got = c.get(r.headers["Location"])
        assert got.status_code == 200 and got.json()["bizStep"] == "shipping"
        q = c.get("/epcis/v2/events", params={"MATCH_anyEPC": PALLET})
        body = q.json()
        assert q.status_code == 200 and validate_document(body) == []
        assert document_hashes(body) == [job["captured"][1], event_id]
        p = c.get("/v1/trace/provenance", params={"id": TIN}).json()
        assert [e["id"] for e in p["events"]] == [*job["captured"], event_id]
        assert [e["org"] for e in p["events"]] == [BRAND, BRAND, LOGISTICS]


def test_rollback_captures_nothing_and_proceed_captures_the_rest(net: Live) -> None:
    good = obj([PALLET], "receiving", "2026-10-03T08:00:00+08:00")
    bad = obj([PALLET], "inspecting", "2026-10-03T09:00:00+08:00")  # logistics may not inspect
    doc = document([good, bad])
    with http(net, f"{LOGISTICS}/alice") as c:
        job = wait_job(c, c.post("/epcis/v2/capture", content=json.dumps(doc)).headers["Location"])
        assert job["success"] is False and job["captured"] == [] and job["txs"] == []
        assert (
            job["errors"][0]["type"] == "epcisException:SecurityException"
            and "inspecting" in job["errors"][0]["detail"]
        )
        ids = document_hashes(doc)
        assert c.get(f"/epcis/v2/events/{quote(ids[0], safe='')}").status_code == 404
        r = c.post("/epcis/v2/capture", content=json.dumps(doc), headers={"GS1-Capture-Error-Behaviour": "proceed"})
        job = wait_job(c, r.headers["Location"])
        assert job["success"] is False and job["captured"] == [ids[0]]
        assert job["errors"][0]["eventIDs"] == [ids[1]]
        assert c.get(f"/epcis/v2/events/{quote(ids[0], safe='')}").status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"{not json", 400, "not JSON"),
        (json.dumps(document([{"type": "ObjectEvent", "action": "OBSERVE"}])).encode(), 400, "eventTime"),
        (json.dumps(document([{"type": "TeleportEvent", "eventTime": "2026-10-01T00:00:00Z"}])).encode(), 400, "TeleportEvent"),
    ],
)  # fmt: skip
def test_invalid_documents_are_refused_naming_event_and_field(net: Live, body: bytes, status: int, needle: str) -> None:
    with http(net, f"{LOGISTICS}/alice") as c:
        r = c.post("/epcis/v2/capture", content=body)
        assert r.status_code == status and needle in r.text, r.text
        assert r.json()["code"] in (Code.INVALID_ARGUMENT, Code.BAD_ENCODING)


def test_errors_are_clear(net: Live) -> None:
    with http(net, f"{LOGISTICS}/alice") as c:
        r = c.post("/epcis/v2/capture", content=b"{}", headers={"GS1-Capture-Error-Behaviour": "maybe"})
        assert r.status_code == 400 and "rollback or proceed" in r.json()["message"]
        r = c.get("/epcis/v2/events", params={"EQ_colour": "red"})
        assert r.status_code == 400 and "EQ_colour" in r.json()["message"]
        assert c.get("/epcis/v2/capture/nope").status_code == 404
    with http(net, "org9/ghost") as c:
        r = c.post("/epcis/v2/capture", content=json.dumps(document([])))
        assert r.status_code == 403 and r.json()["code"] == Code.FORBIDDEN
    assert httpx.get(f"{net.url}/epcis/v2/events").status_code == 401


def test_a_gs1_example_document_round_trips(net: Live) -> None:
    """GS1's aggregation example, captured by a customs office the consortium trusts with everything."""
    admins = [net.signer(f"org{i}/admin") for i in (1, 2, 3)]
    with Client(net.url, net.token) as cl:
        assert (
            cl.call("trace", "set_policy", {"org_type": "customs", "own": False, "steps": ["*"]}, admins)["code"] == 0
        )
    doc = json.loads((FIXTURES / "gs1-examples" / "Example_9.6.3-AggregationEvent.jsonld").read_text())
    with http(net, f"{CUSTOMS}/alice") as c:
        job = wait_job(c, c.post("/epcis/v2/capture", content=json.dumps(doc)).headers["Location"])
        assert job["success"], job
        got = c.get("/epcis/v2/events", params={"EQ_eventID": "|".join(job["captured"])}).json()
        assert sorted(document_hashes(got)) == sorted(document_hashes(doc))


def test_xml_capture_gets_the_reference_hash_ids(net: Live) -> None:
    """An EPCIS XML document is captured as the JSON-LD it means, under the ids GS1's reference vectors give."""
    admins = [net.signer(f"org{i}/admin") for i in (1, 2, 3)]
    with Client(net.url, net.token) as cl:
        r = cl.call("trace", "set_policy", {"org_type": "customs", "own": False, "steps": ["*"]}, admins)
        assert r["code"] == 0
    path = FIXTURES / "hash-vectors" / "epcisDocWithVariousEventTypes.xml"
    want = [line for line in path.with_suffix(".hashes").read_text().split() if line]
    with http(net, f"{CUSTOMS}/alice") as c:
        headers = {"Content-Type": "application/xml"}
        job = wait_job(c, c.post("/epcis/v2/capture", content=path.read_bytes(), headers=headers).headers["Location"])
        assert job["success"], job
        assert sorted(job["captured"] + job["duplicates"]) == sorted(set(want))
        got = c.get("/epcis/v2/events", params={"EQ_eventID": "|".join(want), "perPage": 50}).json()
        assert sorted(document_hashes(got)) == sorted(set(want))
        assert validate_document(got) == []
        # Bad XML is refused at once, naming what is wrong, and nothing is captured.
        before = c.get("/epcis/v2/capture").json()
        # this reference vector puts sensorElementList where GS1's XSD does not allow it
        xsd_invalid = (FIXTURES / "hash-vectors" / "SensorDataExamples.xml").read_bytes()
        r = c.post("/epcis/v2/capture", content=xsd_invalid, headers=headers)
        assert r.status_code == 400 and "XSD" in r.json()["message"] and "sensorElementList" in r.json()["message"]
        r = c.post(
            "/epcis/v2/capture", content=b"<epcis:EPCISDocument xmlns:epcis='urn:x'><EPCISBody>", headers=headers
        )
        assert r.status_code == 400 and r.json()["code"] == Code.BAD_ENCODING and "well-formed" in r.json()["message"]
        bomb = b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><EPCISDocument>&b;</EPCISDocument>'
        r = c.post("/epcis/v2/capture", content=bomb, headers=headers)
        assert r.status_code == 400 and "entities are refused" in r.json()["message"]
        assert c.get("/epcis/v2/capture").json() == before
