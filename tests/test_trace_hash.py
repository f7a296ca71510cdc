"""CBV 2.0 event hash ids: every JSON-LD reference vector, field-order invariance, identifier normalisation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liangcao.trace.hashing import document_hashes, events_of, fix_time, format_number
from liangcao.trace.identifiers import check_digit, constrain_dl, epc_urn_to_dl
from liangcao.trace.validate import validate_document
from liangcao.trace.xml import XmlRefused
from liangcao.trace.xml import read as read_xml

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "epcis" / "hash-vectors"
JSONLD = sorted(VECTORS.glob("*.jsonld"))


def expected(path: Path) -> list[str]:
    return [line.strip() for line in path.with_suffix(".hashes").read_text().splitlines() if line.strip()]


def test_vectors_are_there() -> None:
    assert len(JSONLD) >= 20, f"expected the reference vectors in {VECTORS}"


@pytest.mark.parametrize("path", JSONLD, ids=[p.stem for p in JSONLD])
def test_reference_vector(path: Path) -> None:
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document_hashes(document) == expected(path)


def shuffled(value: Any, rnd: Any) -> Any:
    if isinstance(value, dict):
        keys = list(value)
        rnd.shuffle(keys)
        return {k: shuffled(value[k], rnd) for k in keys}
    if isinstance(value, list):
        items = [shuffled(v, rnd) for v in value]
        rnd.shuffle(items)
        return items
    return value


@settings(max_examples=30, deadline=None)
@given(path=st.sampled_from(JSONLD), rnd=st.randoms(use_true_random=False))
def test_field_and_list_order_do_not_change_the_hash(path: Path, rnd: Any) -> None:
    document = json.loads(path.read_text(encoding="utf-8"))
    events = events_of(document)
    mixed = [shuffled(e, rnd) for e in events]
    body = {"eventList": mixed}
    again = {**document, "epcisBody": body}
    if "queryResults" in document["epcisBody"]:
        again["epcisBody"] = {**document["epcisBody"], "queryResults": {"resultsBody": body}}
        again["epcisBody"]["queryResults"].update(
            {k: v for k, v in document["epcisBody"]["queryResults"].items() if k != "resultsBody"}
        )
    assert document_hashes(again) == expected(path)


def test_any_change_of_a_value_changes_the_hash() -> None:
    document = json.loads((VECTORS / "ReferenceEventHashAlgorithm.jsonld").read_text())
    before = document_hashes(document)
    document["epcisBody"]["eventList"][0]["example:myField2"] = "1"
    assert document_hashes(document) != before
    del document["epcisBody"]["eventList"][0]["example:myField2"]
    assert document_hashes(document) != before


def test_identifiers() -> None:
    assert check_digit("629104150021") == "3"  # GTIN-13 6291041500213
    assert epc_urn_to_dl("urn:epc:id:sgtin:4012345.011111.9876") == "https://id.gs1.org/01/04012345111118/21/9876"
    assert epc_urn_to_dl("urn:epc:id:sscc:4012345.0000000333") == "https://id.gs1.org/00/040123450000003338"
    assert epc_urn_to_dl("urn:epc:id:sgln:4012345.00011.987") == "https://id.gs1.org/414/4012345000115/254/987"
    assert epc_urn_to_dl("urn:epc:id:sgln:4012345.00005.0") == "https://id.gs1.org/414/4012345000054"
    assert epc_urn_to_dl("urn:epc:id:nonsense:1.2") is None
    assert (
        constrain_dl("https://example.com/shop/gtin/09780345418913/lot/A1/ser/765tz?abc=1")
        == "https://id.gs1.org/01/09780345418913/21/765tz"
    )
    assert constrain_dl("http://transaction.acme.com/po/12345678") is None


def test_time_and_number_formats() -> None:
    assert fix_time("2020-03-04T11:00:30+01:00") == "2020-03-04T10:00:30.000Z"
    assert fix_time("2023-02-02T12:04:03.1415+01:00") == "2023-02-02T11:04:03.142Z"
    assert fix_time("2023-12-31T23:59:59.9996Z") == "2024-01-01T00:00:00.000Z"
    assert [format_number(x) for x in (1.0, "0.34340", 12, "-3.50", "+7")] == ["1", "0.3434", "12", "-3.5", "7"]
    # The reference generator reads numbers as doubles; its vectors keep what that does to long or tiny values.
    assert format_number("111100001111000011110000") == "111100001111000003641344"
    assert format_number("0.00001") == "1e-05"
    assert format_number("NaN") == "NaN" and format_number("12a") == "12a"


def test_cli_prints_each_hash_in_document_order(tmp_path: Path) -> None:
    path = VECTORS / "epcisDocWithVariousEventTypes.jsonld"
    run = [sys.executable, "-m", "liangcao.cli", "trace", "hash"]
    r = subprocess.run([*run, str(path)], capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 0 and r.stdout.split() == expected(path)
    bad = tmp_path / "bad.jsonld"
    bad.write_text('{"epcisBody": 3}')
    r = subprocess.run([*run, str(bad)], capture_output=True, text=True)
    assert r.returncode == 1 and "no epcisBody" in r.stderr and "Traceback" not in r.stderr


XML = sorted(VECTORS.glob("*.xml"))


@pytest.mark.parametrize("path", XML, ids=[p.stem for p in XML])
def test_xml_reference_vector(path: Path) -> None:
    """Every XML vector, read as the JSON-LD it means: the reference ids, and a schema-valid document."""
    document = read_xml(path.read_bytes())
    assert document_hashes(document) == expected(path)
    assert validate_document(document) == []


def test_all_xml_vectors_are_read() -> None:
    assert len(XML) == 17


@pytest.mark.parametrize("path", [p for p in XML if p.with_suffix(".jsonld").exists()], ids=lambda p: p.stem)
def test_the_same_event_in_json_and_xml_has_the_same_id(path: Path) -> None:
    as_json = json.loads(path.with_suffix(".jsonld").read_text(encoding="utf-8"))
    assert document_hashes(read_xml(path.read_bytes())) == document_hashes(as_json)


def test_bad_xml_is_refused_clearly() -> None:
    with pytest.raises(XmlRefused, match="well-formed"):
        read_xml(b"<EPCISDocument><EPCISBody>")
    with pytest.raises(XmlRefused, match="entities are refused"):
        read_xml(b'<!DOCTYPE d [<!ENTITY e SYSTEM "file:///etc/passwd">]><EPCISDocument>&e;</EPCISDocument>')
    with pytest.raises(XmlRefused, match="DTDs and entities are refused"):  # any DOCTYPE, as docs/trace.md says
        read_xml(b"<!DOCTYPE EPCISDocument><EPCISDocument/>")
    with pytest.raises(XmlRefused, match="root element is 'Invoice'"):
        read_xml(b"<Invoice/>")


def test_cli_hashes_xml_documents() -> None:
    path = VECTORS / "epcisDocWithVariousEventTypes.xml"
    r = subprocess.run(
        [sys.executable, "-m", "liangcao.cli", "trace", "hash", str(path)], capture_output=True, text=True
    )
    assert r.returncode == 0 and r.stdout.split() == expected(path)


# ---- CBV 2.0 hash rules the reference vectors do not pin (issue 25) -------------------------------------
CORPUS = VECTORS.parent / "openepcis-corpus"
OPENEPCIS = VECTORS.parent / "openepcis" / "capture-documents"
TWINS = [
    *[(p, OPENEPCIS / f"{p.stem}.json") for p in sorted((CORPUS / "XML/Capture/Documents").glob("*.xml"))],
    *[(p, CORPUS / "JSON/Query" / f"{p.stem}.json") for p in sorted((CORPUS / "XML/Query").glob("*.xml"))],
]
TWINS = [(x, j) for x, j in TWINS if j.exists()]


@pytest.mark.parametrize(("xml", "json_ld"), TWINS, ids=[x.stem + "-" + x.parent.name for x, _ in TWINS])
def test_openepcis_twins_get_the_same_ids(xml: Path, json_ld: Path) -> None:
    """The same events as XML and as JSON-LD: rules 15 (gs1: fixed), cbvmda, event-level @context."""
    assert document_hashes(read_xml(xml.read_bytes())) == document_hashes(json.loads(json_ld.read_text()))


def test_the_twin_corpus_is_there() -> None:
    assert len(TWINS) >= 44


def _one(event: dict[str, Any], context: Any = None) -> str:
    doc = {"@context": context or ["https://ref.gs1.org/standards/epcis/epcis-context.jsonld"],
           "epcisBody": {"eventList": [event]}}  # fmt: skip
    return document_hashes(doc)[0]


BASE = {"type": "ObjectEvent", "eventTime": "2026-01-01T00:00:00Z", "eventTimeZoneOffset": "+00:00",
        "epcList": ["urn:epc:id:sgtin:0614141.107346.1"], "action": "OBSERVE"}  # fmt: skip


def test_gs1_values_expand_to_the_gs1_vocabulary_whatever_the_prefix_is_bound_to() -> None:
    report = {"sensorElementList": [{"sensorReport": [{"type": "gs1:Temperature", "value": 3}]}]}
    bare = {"sensorElementList": [{"sensorReport": [{"type": "Temperature", "value": 3}]}]}
    rebound = [{"gs1": "https://ref.gs1.org/voc/"}]
    assert _one({**BASE, **report}, rebound) == _one({**BASE, **bare})
    spelled = {"sensorElementList": [{"sensorReport": [{"type": "https://ref.gs1.org/voc/Temperature", "value": 3}]}]}
    assert _one({**BASE, **spelled}) == _one({**BASE, **bare})


def test_an_undeclared_cbvmda_prefix_is_the_xml_bindings_namespace() -> None:
    from liangcao.trace.hashing import prehash

    event = {**BASE, "ilmd": {"cbvmda:lotNumber": "L1"}}
    assert "ilmd{urn:epcglobal:cbv:mda}lotNumber=L1" in prehash(event)
    assert "ilmd{urn:x:}lotNumber=L1" in prehash(event, [{"cbvmda": "urn:x:"}])


def test_an_events_own_context_is_honoured() -> None:
    inner = {**BASE, "@context": [{"ext": "https://ext.example/"}], "ext:colour": "red"}
    outer = {**BASE, "ext:colour": "red"}
    assert _one(inner) == _one(outer, [{"ext": "https://ext.example/"}])
    assert _one(inner) != _one(outer)


def test_an_empty_extension_is_its_name_alone() -> None:
    from liangcao.trace.hashing import prehash

    context = [{"ext": "https://ext.example/"}]
    assert prehash({**BASE, "ext:flag": ""}, context).endswith("{https://ext.example/}flag")
    assert _one({**BASE, "ext:flag": ""}, context) == _one({**BASE, "ext:flag": {}}, context)
    xml = (
        b'<epcis:EPCISDocument xmlns:epcis="urn:epcglobal:epcis:xsd:2" xmlns:ext="https://ext.example/" '
        b'schemaVersion="2.0" creationDate="2026-01-01T00:00:00Z"><EPCISBody><EventList><ObjectEvent>'
        b"<eventTime>2026-01-01T00:00:00Z</eventTime><eventTimeZoneOffset>+00:00</eventTimeZoneOffset>"
        b"<epcList><epc>urn:epc:id:sgtin:0614141.107346.1</epc></epcList><action>OBSERVE</action>"
        b"<ext:flag/></ObjectEvent></EventList></EPCISBody></epcis:EPCISDocument>"
    )
    assert document_hashes(read_xml(xml)) == [_one({**BASE, "ext:flag": ""}, context)]
