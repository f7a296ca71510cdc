"""EPCIS queries and provenance over anchored events: a tin of milk powder from raw milk to the shop."""

from __future__ import annotations

from typing import Any

import pytest

from liangcao.apps.trace.anchor import TraceCode
from liangcao.trace import query as tq
from liangcao.trace.facts import index_form
from liangcao.trace.hashing import document_hashes
from liangcao.trace.provenance import provenance
from liangcao.trace.query import QueryError
from liangcao.trace.validate import validate_document
from trace_ledger import BRAND, CUSTOMS, LOGISTICS, OTHER_BRAND, PLATFORM, WAREHOUSE, TraceLedger, document, obj

RAW1 = "urn:epc:class:lgtin:4012345.011111.RAW1"
RAW2 = "urn:epc:class:lgtin:4012345.011111.RAW2"
TINS = [f"urn:epc:id:sgtin:0614141.107346.{n}" for n in range(1, 5)]
CASE = "urn:epc:id:sscc:0614141.1234567890"
CASE2 = "urn:epc:id:sscc:0614141.1234567892"
PALLET = "urn:epc:id:sscc:0614141.1234567891"
DOCK = "urn:epc:id:sgln:0614141.00001.0"
CUSTOMS_POST = "urn:epc:id:sgln:0614141.00002.0"
TIN1_DL = "https://brand.example/01/10614141073464/21/1?linkType=all"


def agg(parent: str, children: list[str], action: str, step: str, when: str) -> dict[str, Any]:
    return {
        "type": "AggregationEvent",
        "eventTime": when,
        "eventTimeZoneOffset": "+08:00",
        "parentID": parent,
        "childEPCs": children,
        "action": action,
        "bizStep": step,
    }


class Story:
    """The events, in order, and who records each; ids filled in as they are captured."""

    def __init__(self) -> None:
        self.led = TraceLedger()
        self.ids: dict[str, str] = {}

    def add(self, name: str, event: dict[str, Any], who: str) -> str:
        doc = document([event])
        assert validate_document(doc) == []
        (result,) = self.led.captured(doc, who)
        assert result["id"] == document_hashes(doc)[0]
        self.ids[name] = result["id"]
        return result["id"]


@pytest.fixture(scope="module")
def story() -> Story:
    s = Story()
    for n, lot in enumerate((RAW1, RAW2)):
        farm = obj([], "commissioning", f"2026-09-0{n + 1}T06:00:00+08:00", action="ADD")
        farm["quantityList"] = [{"epcClass": lot, "quantity": 1500.5, "uom": "KGM"}]
        del farm["epcList"]
        s.add(f"farm{n}", farm, OTHER_BRAND)
    s.add(
        "transform",
        {
            "type": "TransformationEvent",
            "eventTime": "2026-09-05T10:00:00+08:00",
            "eventTimeZoneOffset": "+08:00",
            "inputQuantityList": [{"epcClass": RAW1, "quantity": 1000, "uom": "KGM"}, {"epcClass": RAW2, "quantity": 500, "uom": "KGM"}],
            "outputEPCList": TINS,
            "bizStep": "commissioning",
            "readPoint": {"id": DOCK},
        },
        BRAND,
    )  # fmt: skip
    s.add("pack_case", agg(CASE, TINS[:2], "ADD", "packing", "2026-09-06T10:00:00+08:00"), BRAND)
    s.add("pack_case2", agg(CASE2, TINS[2:], "ADD", "packing", "2026-09-06T10:05:00+08:00"), BRAND)
    s.add("pack_pallet", agg(PALLET, [CASE, CASE2], "ADD", "packing", "2026-09-06T11:00:00+08:00"), BRAND)
    s.add("ship", obj([PALLET], "shipping", "2026-09-07T08:00:00+08:00", readPoint={"id": DOCK}), LOGISTICS)
    s.add(
        "inspect",
        obj([PALLET], "inspecting", "2026-09-10T09:00:00+08:00", disposition="in_progress", bizLocation={"id": CUSTOMS_POST}),
        CUSTOMS,
    )  # fmt: skip
    s.add("unpack", agg(PALLET, [CASE], "DELETE", "unpacking", "2026-09-12T09:00:00+08:00"), WAREHOUSE)
    s.add("ship_again", obj([PALLET], "shipping", "2026-09-13T08:00:00+08:00"), LOGISTICS)
    s.add("receive_case", obj([CASE], "receiving", "2026-09-14T08:00:00+08:00"), PLATFORM)
    s.add("sell", obj([TINS[0]], "retail_selling", "2026-11-11T00:00:01+08:00", disposition="retail_sold"), PLATFORM)
    return s


def names(s: Story, events: list[dict[str, Any]]) -> list[str]:
    back = {v: k for k, v in s.ids.items()}
    return [back[e["id"]] for e in events]


def q(s: Story, *params: tuple[str, str]) -> tq.Page:
    return tq.run(s.led.state, tq.parse(list(params)))


def found(s: Story, *params: tuple[str, str]) -> list[str]:
    page = q(s, *params)
    return names(s, page.records)


def test_provenance_of_a_tin_through_packing_and_transformation(story: Story) -> None:
    p = provenance(story.led.state, TINS[0])
    assert p["complete"]
    assert names(story, p["events"]) == [
        "farm0", "farm1", "transform", "pack_case", "pack_pallet", "ship", "inspect", "unpack", "receive_case", "sell",
    ]  # fmt: skip
    orgs = {e["id"]: e["org"] for e in p["events"]}
    assert orgs[story.ids["inspect"]] == CUSTOMS and orgs[story.ids["farm0"]] == OTHER_BRAND
    kinds = {(e["kind"], e["to"]) for e in p["edges"]}
    assert ("contained_in", index_form(CASE)) in kinds and ("made_from", "01/04012345111118/10/RAW1") in kinds
    inspect = next(e for e in p["events"] if e["id"] == story.ids["inspect"])
    assert [v["contained_in"] for v in inspect["via"][0]["path"]] == [index_form(CASE), index_form(PALLET)]
    # the same history by Digital Link, and the other case's tins never saw the platform's receiving
    assert names(story, provenance(story.led.state, TIN1_DL)["events"]) == names(story, p["events"])
    other = names(story, provenance(story.led.state, TINS[3])["events"])
    assert "receive_case" not in other and "ship_again" in other and "sell" not in other


def test_query_by_epc_any_epc_and_parent(story: Story) -> None:
    assert found(story, ("MATCH_epc", PALLET)) == ["ship", "inspect", "ship_again"]
    assert found(story, ("MATCH_anyEPC", PALLET)) == ["pack_pallet", "ship", "inspect", "unpack", "ship_again"]
    assert found(story, ("MATCH_parentID", CASE)) == ["pack_case"]
    assert found(story, ("MATCH_epc", TINS[0])) == ["pack_case", "sell"]
    assert found(story, ("MATCH_anyEPC", TIN1_DL)) == ["transform", "pack_case", "sell"]
    assert found(story, ("MATCH_epc", "urn:epc:idpat:sgtin:0614141.107346.*")) == ["pack_case", "pack_case2", "sell"]
    assert found(story, ("MATCH_anyEPCClass", RAW1)) == ["farm0", "transform"]


def test_query_by_type_time_step_disposition_and_place(story: Story) -> None:
    assert found(story, ("eventType", "TransformationEvent")) == ["transform"]
    assert found(story, ("eventType", "ObjectEvent"), ("EQ_bizStep", "shipping")) == ["ship", "ship_again"]
    assert found(story, ("EQ_bizStep", "https://ref.gs1.org/cbv/BizStep-inspecting")) == ["inspect"]
    assert found(story, ("EQ_disposition", "retail_sold|in_progress")) == ["inspect", "sell"]
    assert found(story, ("EQ_readPoint", DOCK)) == ["transform", "ship"]
    assert found(story, ("EQ_bizLocation", CUSTOMS_POST)) == ["inspect"]
    window = found(story, ("GE_eventTime", "2026-09-07T00:00:00Z"), ("LT_eventTime", "2026-09-13T00:00:00Z"))
    assert window == ["ship", "inspect", "unpack"]
    assert found(story, ("MATCH_epc", PALLET), ("GE_eventTime", "2026-09-08T00:00:00+08:00")) == [
        "inspect",
        "ship_again",
    ]


def test_pages_and_count_limit(story: Story) -> None:
    everything = found(story)
    assert len(everything) == len(story.ids) == 12
    seen: list[str] = []
    token = None
    while True:
        params = [("perPage", "5")] + ([("nextPageToken", token)] if token else [])
        page = q(story, *params)
        seen += names(story, page.records)
        token = page.next_token
        if token is None:
            break
    assert seen == everything
    limit = (("orderBy", "eventTime"), ("orderDirection", "ASC"), ("eventCountLimit", "3"), ("perPage", "2"))
    first = q(story, *limit)
    second = q(story, *limit, ("nextPageToken", first.next_token or ""))
    assert len(first.records) == 2 and len(second.records) == 1 and second.next_token is None


def test_query_document_is_valid_epcis(story: Story) -> None:
    page = q(story, ("MATCH_anyEPC", TINS[0]))
    doc = tq.query_document(page.records, story.led.time_ms)
    assert doc["type"] == "EPCISQueryDocument" and validate_document(doc) == []
    assert document_hashes(doc) == [r["id"] for r in page.records]


@pytest.mark.parametrize(
    "params",
    [
        [("EQ_colour", "red")],
        [("GE_eventTime", "last tuesday")],
        [("perPage", "0")],
        [("perPage", "100000")],
        [("eventType", "TeleportEvent")],
        [("nextPageToken", "not-a-token")],
        [("orderDirection", "SIDEWAYS")],
        [("eventCountLimit", "3")],
        [("EQ_action", "SHIPPED")],
        [("GE_quantity", "lots")],
    ],
)
def test_bad_parameters_are_refused_by_name(params: list[tuple[str, str]]) -> None:
    with pytest.raises(QueryError) as err:
        tq.parse(params)
    assert params[0][0] in err.value.message


# ---- issue 25: the binding's list syntax, order, declared ids, contexts, every parameter ----------------------
def test_pipes_separate_alternatives_and_desc_orders_pages(story: Story) -> None:
    assert found(story, ("EQ_bizStep", "shipping|receiving")) == ["ship", "ship_again", "receive_case"]
    assert found(story, ("eventType", "TransformationEvent|AggregationEvent"))[:2] == ["transform", "pack_case"]
    everything = found(story)
    assert found(story, ("orderDirection", "DESC")) == everything[::-1]
    assert found(story, ("orderBy", "eventTime")) == everything[::-1]  # the standard's default direction
    seen: list[str] = []
    token = None
    while True:
        page = q(story, ("orderDirection", "DESC"), ("perPage", "5"), *([("nextPageToken", token)] if token else []))
        seen += names(story, page.records)
        if (token := page.next_token) is None:
            break
    assert seen == everything[::-1]
    assert found(story, ("MATCH_anyEPC", PALLET), ("orderDirection", "DESC")) == [
        "ship_again", "unpack", "inspect", "ship", "pack_pallet",
    ]  # fmt: skip
    assert found(story, ("orderBy", "recordTime"), ("orderDirection", "ASC")) == everything
    limited = q(story, ("orderBy", "eventTime"), ("eventCountLimit", "2"))
    assert names(story, limited.records) == everything[::-1][:2] and limited.next_token is None


def test_max_event_count_refuses_a_larger_result(story: Story) -> None:
    with pytest.raises(QueryError, match="maxEventCount"):
        q(story, ("maxEventCount", "3"))
    assert len(q(story, ("maxEventCount", "12")).records) == 12


def _sensor_doc() -> dict[str, Any]:
    tin = "urn:epc:id:sgtin:0614141.107346.99"
    return {
        "@context": ["https://ref.gs1.org/standards/epcis/epcis-context.jsonld", {"ext": "https://ext.example/"}],
        "type": "EPCISDocument", "schemaVersion": "2.0", "creationDate": "2026-11-01T00:00:00Z",
        "epcisBody": {"eventList": [
            {
                "type": "ObjectEvent", "eventTime": "2026-09-01T08:00:00+08:00", "eventTimeZoneOffset": "+08:00",
                "eventID": "ni:///sha-256;" + "ab" * 32 + "?ver=CBV2.0",
                "epcList": [tin], "action": "ADD", "bizStep": "commissioning", "disposition": "active",
                "persistentDisposition": {"set": ["completeness_verified"]},
                "bizTransactionList": [{"type": "po", "bizTransaction": "urn:epcglobal:cbv:bt:0614141000005:PO1"}],
                "sourceList": [{"type": "location", "source": "urn:epc:id:sgln:0614141.00001.0"}],
                "quantityList": [{"epcClass": "urn:epc:class:lgtin:0614141.107346.L1", "quantity": 12.5, "uom": "KGM"}],
                "ilmd": {"cbvmda:lotNumber": "L1", "ext:grade": {"ext:score": 7}},
                "sensorElementList": [{
                    "sensorMetadata": {"time": "2026-09-01T07:00:00Z", "deviceID": "urn:epc:id:giai:0614141.1"},
                    "sensorReport": [{"type": "Temperature", "value": 26.5, "uom": "CEL", "booleanValue": True,
                                      "stringValue": "ok", "hexBinaryValue": "F0A1", "percRank": 50}],
                }],
                "ext:colour": "red", "ext:weight": 3, "ext:box": {"ext:inner": "2026-01-01T00:00:00Z"},
            },
            {
                "type": "ObjectEvent", "eventTime": "2026-09-02T08:00:00+08:00", "eventTimeZoneOffset": "+08:00",
                "@context": [{"ext": "https://other.example/"}],
                "epcList": [tin], "action": "OBSERVE", "bizStep": "shipping",
                "errorDeclaration": {"declarationTime": "2026-09-03T00:00:00Z", "reason": "incorrect_data",
                                     "correctiveEventIDs": ["urn:uuid:fix-1"]},
                "ext:colour": "blue",
            },
        ]},
    }  # fmt: skip


@pytest.fixture(scope="module")
def sensors() -> tuple[TraceLedger, list[str]]:
    led = TraceLedger()
    doc = _sensor_doc()
    assert validate_document(doc) == []
    results = led.captured(doc, BRAND)
    return led, [r["id"] for r in results]


@pytest.mark.parametrize(
    ("params", "which"),
    [
        ([("EQ_persistentDisposition_set", "completeness_verified")], [0]),
        ([("EQ_quantity", "12.5")], [0]),
        ([("GT_quantity", "12")], [0]),
        ([("LE_quantity", "12")], []),
        ([("GE_quantity_KGM", "10")], [0]),
        ([("GE_quantity_LBR", "10")], []),
        ([("EQ_bizTransaction_po", "urn:epcglobal:cbv:bt:0614141000005:PO1")], [0]),
        ([("EQ_source_location", "urn:epc:id:sgln:0614141.00001.0")], [0]),
        ([("EQ_ILMD_cbvmda:lotNumber", "L1")], [0]),
        ([("EXISTS_INNER_ILMD_ext:score", "true")], [0]),
        ([("GE_INNER_ILMD_ext:score", "7")], [0]),
        ([("GT_INNER_ILMD_ext:score", "7")], []),
        ([("EQ_ext:colour", "red|green")], [0]),
        ([("EXISTS_ext:colour", "")], [0, 1]),  # no query context: the prefix as each event binds it
        ([("GE_ext:weight", "3")], [0]),
        ([("LT_INNER_ext:inner", "2026-06-01T00:00:00Z")], [0]),
        ([("EQ_type", "Temperature")], [0]),
        ([("EQ_type", "gs1:Temperature")], [0]),
        ([("GE_value", "26")], [0]),
        ([("GE_value_CEL", "26.5"), ("LT_value_CEL", "27")], [0]),
        ([("GE_value_FAH", "0")], []),
        ([("EQ_uom", "CEL")], [0]),
        ([("EQ_booleanValue", "true")], [0]),
        ([("EQ_stringValue", "ok")], [0]),
        ([("EQ_hexBinaryValue", "f0a1")], [0]),
        ([("GE_percRank", "50")], [0]),
        ([("EQ_deviceID", "urn:epc:id:giai:0614141.1")], [0]),
        ([("GE_time", "2026-09-01T06:00:00Z")], [0]),
        ([("EXISTS_sensorElementList", "true")], [0]),
        ([("EXISTS_errorDeclaration", "true")], [1]),
        ([("EQ_errorReason", "incorrect_data")], [1]),
        ([("EQ_correctiveEventID", "urn:uuid:fix-1")], [1]),
        ([("GE_errorDeclarationTime", "2026-09-02T00:00:00Z")], [1]),
        ([("LT_errorDeclarationTime", "2026-09-02T00:00:00Z")], []),
        ([("EQ_action", "ADD|OBSERVE")], [0, 1]),
    ],
)
def test_every_parameter_filters(sensors: tuple[TraceLedger, list[str]], params: list[tuple[str, str]], which: list[int]) -> None:  # fmt: skip
    led, ids = sensors
    page = tq.run(led.state, tq.parse(params))
    assert [r["id"] for r in page.records] == [ids[i] for i in which]


def test_request_id_is_the_capture_transaction(sensors: tuple[TraceLedger, list[str]]) -> None:
    led, ids = sensors
    tx = tq.run(led.state, tq.parse([("EQ_eventID", ids[0])])).records[0]["tx"]
    got = tq.run(led.state, tq.parse([("EQ_requestID", tx)])).records
    assert [r["id"] for r in got] == ids  # both events came in one capture transaction


def test_extension_fields_compare_by_namespace_not_prefix(sensors: tuple[TraceLedger, list[str]]) -> None:
    led, ids = sensors
    # the second event binds ext to another namespace in its own @context: "ext:colour=blue" there is not ours
    mine = tq.parse([("EQ_x:colour", "blue")], context=[{"x": "https://other.example/"}])
    assert [r["id"] for r in tq.run(led.state, mine).records] == [ids[1]]
    theirs = tq.parse([("EQ_x:colour", "red|blue")], context=[{"x": "https://ext.example/"}])
    assert [r["id"] for r in tq.run(led.state, theirs).records] == [ids[0]]


def test_a_declared_hash_shaped_event_id_is_found(sensors: tuple[TraceLedger, list[str]]) -> None:
    led, ids = sensors
    declared = "ni:///sha-256;" + "ab" * 32 + "?ver=CBV2.0"
    assert declared != ids[0]
    assert [r["id"] for r in tq.run(led.state, tq.parse([("EQ_eventID", declared)])).records] == [ids[0]]
    assert led.record(declared)["id"] == ids[0]


def test_every_event_of_a_query_document_rehashes_to_its_id(sensors: tuple[TraceLedger, list[str]]) -> None:
    led, ids = sensors
    doc = tq.query_document(tq.run(led.state, tq.parse([])).records, led.time_ms)
    assert validate_document(doc) == []
    assert document_hashes(doc) == ids
    alone = tq.event_out(tq.run(led.state, tq.parse([("EQ_eventID", ids[1])])).records[0])
    assert "@context" in alone
    assert document_hashes({"@context": alone.pop("@context"), "epcisBody": {"eventList": [alone]}}) == [ids[1]]


def test_master_data_hierarchies_and_attributes() -> None:
    led = TraceLedger()
    site, dock = "urn:epc:id:sgln:0614141.00010.0", "urn:epc:id:sgln:0614141.00010.7"
    doc = document([obj(["urn:epc:id:sgtin:0614141.107346.77"], "receiving", "2026-09-01T08:00:00+08:00",
                        bizLocation={"id": dock})])  # fmt: skip
    doc["epcisHeader"] = {"epcisMasterData": {"vocabularyList": [{
        "type": "urn:epcglobal:epcis:vtype:BusinessLocation",
        "vocabularyElementList": [
            {"id": site, "attributes": [{"id": "urn:epcglobal:cbv:mda#name", "attribute": "Shanghai DC"}],
             "children": [dock]},
            {"id": dock, "attributes": [{"id": "urn:epcglobal:cbv:mda#sst", "attribute": "201"}]},
        ],
    }]}}  # fmt: skip
    assert validate_document(doc) == []
    (captured,) = led.captured(doc, BRAND)

    def ids(*params: tuple[str, str]) -> list[str]:
        return [r["id"] for r in tq.run(led.state, tq.parse(list(params))).records]

    assert ids(("WD_bizLocation", site)) == [captured["id"]]
    assert ids(("EQ_bizLocation", site)) == []
    assert ids(("HASATTR_bizLocation", "urn:epcglobal:cbv:mda#sst")) == [captured["id"]]
    assert ids(("EQ_ATTR_bizLocation_urn:epcglobal:cbv:mda#sst", "201")) == [captured["id"]]
    assert ids(("EQ_ATTR_bizLocation_urn:epcglobal:cbv:mda#sst", "202")) == []
    # another organisation cannot rewrite the brand's master data
    doc["epcisBody"]["eventList"][0]["eventTime"] = "2026-09-02T08:00:00+08:00"
    (receipt,) = led.capture(doc, CUSTOMS)
    assert receipt["code"] == TraceCode.NOT_PERMITTED and "belongs to org1" in receipt["message"]
