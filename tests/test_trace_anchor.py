"""The trace contract: events anchored under their hash id, duplicates recognised, permissions by type."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from liangcao.apps.trace.anchor import TraceCode
from liangcao.codes import Code
from liangcao.trace import capture
from liangcao.trace.hashing import document_hashes
from liangcao.trace.validate import is_valid
from trace_ledger import (
    BANK,
    BRAND,
    CUSTOMS,
    FIXTURES,
    LOGISTICS,
    MAJORITY,
    OTHER_BRAND,
    TRACE,
    WAREHOUSE,
    TraceLedger,
    document,
    fixture,
    obj,
)

SGTIN = "urn:epc:id:sgtin:0614141.107346.2017"
OTHER_SGTIN = "urn:epc:id:sgtin:4012345.011111.9876"


def test_events_are_anchored_under_their_hash_id_and_duplicates_recognised() -> None:
    led = TraceLedger()
    doc = fixture("gs1-examples/Example_9.6.1-ObjectEvent.jsonld")
    doc["epcisBody"]["eventList"] = [e for e in doc["epcisBody"]["eventList"] if e.get("bizStep") == "shipping"]
    expected = document_hashes(doc)
    results = led.captured(doc, LOGISTICS)
    assert [r["id"] for r in results] == expected and {r["status"] for r in results} == {"captured"}
    record = led.record(expected[0])
    assert record["org"] == LOGISTICS and record["by"] == f"{LOGISTICS}/admin" and record["type"] == "ObjectEvent"
    assert json.loads(record["event"])["epcList"] == doc["epcisBody"]["eventList"][0]["epcList"]
    # the same events again, fields in another order: recognised, nothing written
    again = document([dict(reversed(list(e.items()))) for e in doc["epcisBody"]["eventList"]])
    before = dict(led.state.data)
    assert {r["status"] for r in led.captured(again, LOGISTICS)} == {"duplicate"}
    assert led.state.data == before


def test_every_valid_fixture_document_and_event_is_captured_and_every_invalid_one_refused() -> None:
    """openepcis' capture documents and single events, and GS1's examples: captured exactly when valid."""
    led = TraceLedger()
    # the fixtures name goods of many companies: a customs office trusted with everything records them here
    led.ok("trace", "set_policy", {"org_type": "customs", "own": False, "steps": ["*"]}, *MAJORITY)
    paths = sorted([*FIXTURES.glob("openepcis/**/*.json"), *FIXTURES.glob("gs1-examples/**/*.jsonld")])
    anchored = refused = 0
    for path in paths:
        doc = json.loads(path.read_text(encoding="utf-8"))
        single = doc.get("type") != "EPCISDocument"
        valid = is_valid(doc)
        try:
            prepared = capture.prepare(path.read_bytes(), single=single)
        except capture.CaptureRefused as exc:
            assert not valid and exc.problems and exc.message, path
            refused += 1
            continue
        assert valid, path
        expected = document_hashes(capture.as_document(doc) if single else doc)
        assert prepared.ids == expected
        txs = capture.sign(prepared, capture.pack(prepared), TRACE.org(CUSTOMS).signer("admin"), TRACE.chain_id,
                           led.time_ms + 60_000)  # fmt: skip
        for t in txs:
            r = led.run_raw(t.raw)
            assert r["code"] == 0, (path, r["message"])
        for hash_id in expected:
            assert led.record(hash_id)["id"] == hash_id
        anchored += len(prepared)
    assert refused == 5 and anchored > 100


def test_a_brand_records_its_own_products_only() -> None:
    led = TraceLedger()
    commission = obj([SGTIN], "commissioning", "2026-10-01T08:00:00+08:00", action="ADD")
    assert led.captured(document([commission]), BRAND)[0]["status"] == "captured"
    foreign = obj([OTHER_SGTIN], "commissioning", "2026-10-01T08:00:00+08:00", action="ADD")
    r = led.capture(document([foreign]), BRAND)[0]
    assert r["code"] == TraceCode.NOT_PERMITTED and OTHER_BRAND in r["message"]
    mixed = obj([SGTIN, OTHER_SGTIN], "packing", "2026-10-01T09:00:00+08:00")
    assert led.capture(document([mixed]), BRAND)[0]["code"] == TraceCode.NOT_PERMITTED
    assert led.captured(document([foreign]), OTHER_BRAND)[0]["status"] == "captured"


@pytest.mark.parametrize(
    ("who", "step", "allowed"),
    [
        (LOGISTICS, "shipping", True),
        (LOGISTICS, "receiving", True),
        (LOGISTICS, "inspecting", False),
        (LOGISTICS, "commissioning", False),
        (CUSTOMS, "inspecting", True),
        (CUSTOMS, "shipping", False),
        (WAREHOUSE, "storing", True),
        (BANK, "shipping", False),
    ],
)
def test_business_steps_by_organisation_type(who: str, step: str, allowed: bool) -> None:
    led = TraceLedger()
    r = led.capture(document([obj([SGTIN], step, "2026-10-02T08:00:00+08:00")]), who)[0]
    assert (r["code"] == 0) is allowed, r
    if not allowed:
        assert r["code"] == TraceCode.NOT_PERMITTED and step in r["message"] and r["result"] is None


def test_permissions_change_by_governance_vote_only() -> None:
    led = TraceLedger()
    event = document([obj([SGTIN], "inspecting", "2026-10-03T08:00:00+08:00")])
    assert led.capture(event, LOGISTICS)[0]["code"] == TraceCode.NOT_PERMITTED
    args = {"org_type": "logistics", "own": False, "steps": ["shipping", "inspecting"]}
    assert led.run("trace", "set_policy", args, LOGISTICS)["code"] == Code.QUORUM_NOT_MET
    led.ok("trace", "set_policy", args, *MAJORITY)
    assert led.query("trace", "policy", {"org_type": "logistics"})["steps"] == ["inspecting", "shipping"]
    assert led.captured(event, LOGISTICS)[0]["status"] == "captured"


def test_company_prefixes_have_one_owner() -> None:
    led = TraceLedger()
    r = led.run("trace", "assign_prefix", {"prefix": "06141419", "org": OTHER_BRAND}, *MAJORITY)
    assert r["code"] == Code.ALREADY_EXISTS and BRAND in r["message"]
    assert led.query("trace", "prefixes", {}) == {"0614141": BRAND, "4012345": OTHER_BRAND}


def test_bad_events_are_refused_naming_the_event_and_change_nothing() -> None:
    led = TraceLedger()
    good = obj([SGTIN], "shipping", "2026-10-02T08:00:00+08:00")
    cases = [
        {**good, "type": "TeleportEvent"},
        {**good, "eventTime": "yesterday"},
        {**good, "epcList": [{"not": "a string"}]},
    ]
    for bad in cases:
        before = dict(led.state.data)
        r = led.run("trace", "capture", {"events": [json.dumps(good), json.dumps(bad)]}, LOGISTICS)
        assert r["code"] == TraceCode.BAD_EVENT and "event 1" in r["message"], r
        assert led.state.data == before
    r = led.run("trace", "capture", {"events": ["{not json"]}, LOGISTICS)
    assert r["code"] == TraceCode.BAD_EVENT


def test_capture_refuses_invalid_documents_naming_event_and_field() -> None:
    doc = document([obj([SGTIN], "shipping", "2026-10-02T08:00:00+08:00")])
    del doc["epcisBody"]["eventList"][0]["eventTime"]
    with pytest.raises(capture.CaptureRefused) as err:
        capture.prepare(json.dumps(doc).encode())
    assert err.value.problems[0].event == 0 and "eventTime" in err.value.message
    with pytest.raises(capture.CaptureRefused):
        capture.prepare(b"[1, 2]")
    with pytest.raises(capture.CaptureRefused):
        capture.prepare(b"{")


def test_a_declared_event_id_names_the_first_event_only() -> None:
    led = TraceLedger()
    a = obj([SGTIN], "shipping", "2026-10-02T08:00:00+08:00", eventID="urn:uuid:6a7f1f0a-0000-4000-8000-000000000001")
    b = obj([SGTIN], "receiving", "2026-10-03T08:00:00+08:00", eventID=a["eventID"])
    led.captured(document([a]), LOGISTICS)
    (second,) = led.captured(document([b]), LOGISTICS)
    assert second["eventID_taken"] == a["eventID"] and led.record(second["id"])["event"]
    assert json.loads(led.record(a["eventID"])["event"])["bizStep"] == "shipping"


def test_decimals_are_kept_exactly_in_the_anchored_text() -> None:
    led = TraceLedger()
    event = obj([], "shipping", "2026-10-02T08:00:00+08:00")
    event["quantityList"] = [{"epcClass": "urn:epc:class:lgtin:0614141.107346.LOT1", "quantity": 0.1, "uom": "KGM"}]
    del event["epcList"]
    (result,) = led.captured(document([event]), LOGISTICS)
    assert '"quantity":0.1' in led.record(result["id"])["event"]


def test_large_documents_are_packed_within_the_transaction_bounds() -> None:
    events = [
        obj([f"urn:epc:id:sgtin:0614141.107346.{n}"], "shipping", "2026-10-02T08:00:00+08:00") for n in range(150)
    ]
    prepared = capture.prepare(json.dumps(document(events)).encode())
    packs = capture.pack(prepared)
    assert [i for p in packs for i in p] == list(range(150)) and all(len(p) <= 64 for p in packs) and len(packs) == 3


def test_paths_exist() -> None:
    assert Path(FIXTURES).is_dir()
