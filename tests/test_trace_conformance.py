"""EPCIS 2.0 conformance, measured on every run against public test material this repository did not write.

Four figures, printed at the end of the run (``pytest tests/test_trace_conformance.py``) and recorded in
``docs/trace.md``:

1. documents whose acceptance agrees with their label: openEPCIS's labelled corpus (capture documents and
   bare events, valid and invalid, JSON and XML; query documents; query definitions) and GS1's examples with
   the fixtures' labels;
2. XML/JSON twins (the same events in both bindings) that get equal CBV 2.0 hash ids;
3. operations of GS1's REST binding (``gs1-binding/openapi.yaml``) this node implements;
4. query parameters accepted: the binding's ``/events`` parameters and ``query-schema.json``'s named
   parameters and parameter families.

Each figure is asserted at least as good as the one recorded, so a regression fails the run; what still
disagrees is listed by name with the reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from liangcao.api import epcis, epcis_queries
from liangcao.trace import capture as cap
from liangcao.trace import query as tq
from liangcao.trace.capture import CaptureRefused
from liangcao.trace.hashing import document_hashes
from liangcao.trace.validate import validate_document
from liangcao.trace.xml import XmlRefused, read, read_poll

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "epcis"
CORPUS = FIXTURES / "openepcis-corpus"
BINDING = FIXTURES / "gs1-binding"
# The fixtures' README: these GS1 examples and one openepcis document do not satisfy GS1's JSON schema.
JSON_INVALID = {"Example-TransactionEvents-2020_07_03y.jsonld", "object_event_all_possible_fields.jsonld",
                "SensorDataExample12.jsonld", "SensorDataExample17.jsonld", "SensorData_with_combined_events.json"}  # fmt: skip
#: Where liangcao follows GS1's XSD rather than the corpus' label (the XSD is the XML binding's schema).
XSD_OVER_LABEL = {
    "XML/Capture/Documents/JumbledFieldsOrder.xml": "its fields are out of the XSD's sequence",
    "XML/Capture/Documents/Namespace_document.xml": "its event elements are namespace-qualified",
    "XML/Capture/Events/Namespace_event.xml": "its event elements are namespace-qualified",
}
#: Where liangcao follows GS1's JSON schema rather than the corpus' label (the fixtures' README labels this
#: document's capture twin invalid for the same reason).
SCHEMA_OVER_LABEL = {
    "JSON/Query/SensorData_with_combined_events.json": "a sensor report without its type",
    "XML/Query/SensorData_with_combined_events.xml": "a sensor report without its type",
}
FIGURES: dict[str, tuple[int, int]] = {}
#: The figures recorded in docs/trace.md; a run may do better, never worse.
RECORDED = {"labels": 179, "twins": 44, "operations": 63, "parameters": 55, "schema_parameters": 60, "families": 108}


def _capture_accepts(path: Path, single: bool) -> tuple[bool, str]:
    try:
        cap.prepare(path.read_bytes(), single=single)
    except CaptureRefused as exc:
        return False, exc.message
    return True, ""


def _query_document_accepts(path: Path) -> tuple[bool, str]:
    """A query document is what a repository answers, read by a consumer: its events are checked (GS1's JSON
    schema on what they mean), a Poll inside one against GS1's query XSD."""
    if b"Poll>" in path.read_bytes():
        return _query_accepts(path)
    try:
        if path.suffix == ".xml":
            problems = validate_document(read(path.read_bytes()))
        else:
            problems = validate_document(json.loads(path.read_text(encoding="utf-8")))
    except XmlRefused as exc:
        return False, str(exc)
    return (not problems), (str(problems[0]) if problems else "")


def _query_accepts(path: Path) -> tuple[bool, str]:
    try:
        if path.suffix == ".xml":
            _name, params = read_poll(path.read_bytes())
            tq.parse(params)
        else:
            tq.parse_definition(json.loads(path.read_text(encoding="utf-8")))
    except (XmlRefused, tq.QueryError) as exc:
        return False, str(exc)
    return True, ""


def labelled() -> Iterator[tuple[str, bool, Any]]:
    """(name, label: should be accepted, check) of every labelled document."""
    for path in sorted(CORPUS.rglob("*.json")) + sorted(CORPUS.rglob("*.xml")):
        rel = str(path.relative_to(CORPUS))
        valid = "/Invalid/" not in rel
        if "/Capture/" in rel:
            single = "/Events/" in rel or path.name.startswith("ObjectEvent_bare_event")
            yield rel, valid, lambda p=path, s=single: _capture_accepts(p, s)
        elif "/Queries/" in rel:
            yield rel, valid, lambda p=path: _query_accepts(p)
        else:
            yield rel, valid, lambda p=path: _query_document_accepts(p)
    for path in sorted([*FIXTURES.glob("gs1-examples/**/*.json*"), *FIXTURES.glob("openepcis/**/*.json")]):
        single = path.parent.name == "capture-events"
        yield (
            str(path.relative_to(FIXTURES)),
            path.name not in JSON_INVALID,
            lambda p=path, s=single: _capture_accepts(p, s),
        )


LABELLED = list(labelled())


@pytest.fixture(scope="module", autouse=True)
def report(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print the figures once the run ends (after output capture), whatever else ran."""
    writer = request.config.pluginmanager.getplugin("terminalreporter")

    def show() -> None:
        if writer is not None and FIGURES:
            writer.write_line("")
            writer.write_line("EPCIS 2.0 conformance (issue 25, tests/test_trace_conformance.py):")
            for name, (good, total) in FIGURES.items():
                writer.write_line(f"  {name}: {good}/{total}")

    request.config.add_cleanup(show)
    yield


def test_documents_are_accepted_as_labelled() -> None:
    disagree = []
    for name, valid, check in LABELLED:
        accepted, why = check()
        if accepted != valid and name not in XSD_OVER_LABEL and name not in SCHEMA_OVER_LABEL:
            disagree.append(f"{name}: labelled {'valid' if valid else 'invalid'}, {why or 'accepted'}")
        elif accepted != valid:
            # refused for the reason recorded, and only it
            assert not accepted and ("XSD" in why or "'type' is a required property" in why), (name, why)
    agree = len(LABELLED) - len(disagree) - len(XSD_OVER_LABEL) - len(SCHEMA_OVER_LABEL)
    FIGURES["documents agreeing with their label"] = (agree, len(LABELLED))
    assert agree >= RECORDED["labels"] and not disagree, disagree


def test_xml_and_json_twins_get_the_same_ids() -> None:
    pairs = [(p, FIXTURES / "openepcis" / "capture-documents" / f"{p.stem}.json")
             for p in sorted((CORPUS / "XML/Capture/Documents").glob("*.xml"))]  # fmt: skip
    pairs += [(p, CORPUS / "JSON/Query" / f"{p.stem}.json") for p in sorted((CORPUS / "XML/Query").glob("*.xml"))]
    pairs += [(p, p.with_suffix(".jsonld")) for p in sorted((FIXTURES / "hash-vectors").glob("*.xml"))]
    pairs = [(x, j) for x, j in pairs if j.exists()]
    same = [
        x.name for x, j in pairs if document_hashes(read(x.read_bytes())) == document_hashes(json.loads(j.read_text()))
    ]
    FIGURES["XML/JSON twins with equal ids"] = (len(same), len(pairs))
    assert len(same) == len(pairs) and len(same) >= RECORDED["twins"]


def _binding() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load((BINDING / "openapi.yaml").read_text(encoding="utf-8"))
    return spec


def _shape(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path.replace(":path}", "}")).rstrip("/") or "/"


def test_binding_operations_are_implemented() -> None:
    ours = set()
    for route in [*epcis.router.routes, *epcis_queries.router.routes]:
        path = getattr(route, "path", "")
        if not path.startswith(epcis.BASE):
            continue
        shape = _shape(path[len(epcis.BASE) :] or "/")
        for method in getattr(route, "methods", None) or {"GET"}:  # a WebSocket route answers a GET upgrade
            ours.add((method.lower(), shape))
    wanted = [(m, _shape(p)) for p, ops in _binding()["paths"].items() for m in ops
              if m in ("get", "post", "put", "delete", "options", "patch")]  # fmt: skip
    missing = [w for w in wanted if w not in ours]
    FIGURES["REST binding operations implemented"] = (len(wanted) - len(missing), len(wanted))
    assert not missing and len(wanted) >= RECORDED["operations"], missing


SAMPLE_TIME = "2026-01-01T00:00:00Z"


def _sample(name: str, schema: dict[str, Any]) -> str:
    if name in ("eventType", "perPage"):
        return {"eventType": "ObjectEvent", "perPage": "30"}[name]
    items: dict[str, Any] = (schema.get("items") if schema.get("type") == "array" else schema) or {}
    kind = items.get("type")
    if items.get("enum"):
        return str(items["enum"][0])
    if items.get("format") == "date-time" or "Time" in name or name.endswith("_Time"):
        return SAMPLE_TIME
    if kind in ("number", "integer"):
        return "1"
    if kind == "boolean":
        return "true"
    if name.startswith(("MATCH_", "EQ_readPoint", "WD_", "EQ_bizLocation")):
        return "urn:epc:id:sgtin:0614141.107346.1"
    return "shipping" if name == "EQ_bizStep" else "x:y"


def _accepts(name: str, value: str) -> str | None:
    params = [(name, value)]
    if name == "eventCountLimit":
        params.append(("orderBy", "eventTime"))
    if name == "nextPageToken":
        params = [(name, tq._token(("0" * 13, "0" * 64), 0, 0))]
    if name == "orderBy":
        params = [(name, "eventTime")]
    try:
        tq.parse(params)
    except tq.QueryError as exc:
        return exc.message
    return None


def test_binding_query_parameters_are_accepted() -> None:
    spec = _binding()
    components = spec["components"]["parameters"]
    named = []
    for p in spec["paths"]["/events"]["get"]["parameters"]:
        param = components[p["$ref"].rsplit("/", 1)[1]] if "$ref" in p else p
        if param.get("in") == "query":
            named.append((param["name"], param.get("schema", {})))
    refused = {n: why for n, s in named if (why := _accepts(n, _sample(n, s))) is not None}
    FIGURES["binding /events query parameters accepted"] = (len(named) - len(refused), len(named))
    assert not refused and len(named) >= RECORDED["parameters"], refused


def _family_name(pattern: str) -> str:
    name = pattern.strip("^$")
    for regex, example in (
        (r"[a-z][a-zA-Z0-9]*\\:\\w+", "ext:field"), (r"[A-Z0-9]{2,4}", "KGM"), (r"[a-z][a-zA-Z0-9_]+", "po"),
        (r"\\w+_\\w+", "bizLocation_attr"),
    ):  # fmt: skip
        name = name.replace(regex, example)
    return name


def test_query_schema_parameters_are_accepted() -> None:
    schema = json.loads((BINDING / "query-schema.json").read_text(encoding="utf-8"))
    defs = schema["definitions"]
    query = defs["EPCIS-Query"]
    named = [(n, s) for n, s in query["properties"].items() if n != "@context"]

    def resolve(s: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in s:
            return resolve(defs[s["$ref"].rsplit("/", 1)[1]])
        if s.get("type") == "array" and "$ref" in s.get("items", {}):
            return {**s, "items": resolve(s["items"])}
        return s

    refused = {n: why for n, s in named if (why := _accepts(n, _sample(n, resolve(s)))) is not None}
    families = {p: _family_name(p) for p in query["patternProperties"]}
    bad_families = {}
    for example in families.values():
        numeric = example.startswith(("GT_", "GE_", "LT_", "LE_")) or re.search(r"_[A-Z0-9]{2,4}$", example)
        value = "1" if numeric else "true" if example.startswith("EXISTS_") else "x"
        if (why := _accepts(example, value)) is not None:
            bad_families[example] = why
    FIGURES["query-schema named parameters accepted"] = (len(named) - len(refused), len(named))
    FIGURES["query-schema parameter families accepted"] = (len(families) - len(bad_families), len(families))
    assert not refused and not bad_families, (refused, bad_families)
    assert len(named) >= RECORDED["schema_parameters"] and len(families) >= RECORDED["families"]
