"""EPCIS 2.0 documents against GS1's official JSON schema: the fixtures, and invalid documents of our own."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from liangcao.trace.validate import _validator, is_valid, validate_document

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "epcis"
DOCUMENTS = sorted([*FIXTURES.glob("gs1-examples/**/*.json*"), *FIXTURES.glob("openepcis/**/*.json")])
# Written against earlier drafts of the standard (GS1) or without a sensor report's type (openepcis):
# the fixtures' README says these five are invalid and every other document is valid.
INVALID = {
    "Example-TransactionEvents-2020_07_03y.jsonld": "destinationList",
    "object_event_all_possible_fields.jsonld": "ilmd",
    "SensorDataExample12.jsonld": "schemaVersion",
    "SensorDataExample17.jsonld": "schemaVersion",
}


def test_there_are_89_fixture_documents() -> None:
    assert len(DOCUMENTS) == 89


@pytest.mark.parametrize("path", DOCUMENTS, ids=[str(p.relative_to(FIXTURES)) for p in DOCUMENTS])
def test_fixture_document(path: Path) -> None:
    problems = validate_document(json.loads(path.read_text(encoding="utf-8")))
    if path.name in INVALID:
        assert problems and INVALID[path.name] in str(problems[0])
    elif path.parent.name == "capture-documents" and any("sensorReport" in p.path for p in problems):
        assert "'type' is a required property" in problems[0].message  # the openepcis document without type
    else:
        assert problems == []


@pytest.mark.parametrize("path", DOCUMENTS, ids=[str(p.relative_to(FIXTURES)) for p in DOCUMENTS])
def test_compiled_and_reference_validators_agree(path: Path) -> None:
    from liangcao.trace.validate import schema_dir

    document = json.loads(path.read_text(encoding="utf-8"))
    assert is_valid(document) == _validator(str(schema_dir())).is_valid(document)


def test_exactly_five_fixtures_are_invalid() -> None:
    invalid = [p.name for p in DOCUMENTS if validate_document(json.loads(p.read_text(encoding="utf-8")))]
    assert len(invalid) == 5 and set(INVALID) <= set(invalid)


def base() -> dict[str, Any]:
    path = FIXTURES / "gs1-examples" / "Example_9.6.1-ObjectEvent.jsonld"
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    assert validate_document(document) == []
    return document


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda e: e.pop("eventTime"), "'eventTime' is a required property"),
        (lambda e: e.__setitem__("action", "MAYBE"), "action"),
        (lambda e: e.__setitem__("epcList", "urn:epc:id:sgtin:1.2.3"), "is not of type 'array'"),
        (lambda e: e.__setitem__("eventTimeZoneOffset", 60), "eventTimeZoneOffset"),
        (lambda e: e.__setitem__("type", "TeleportationEvent"), "type"),
    ],
    ids=["missing eventTime", "bad action", "epcList not a list", "offset not a string", "unknown event type"],
)
def test_invalid_documents_name_the_event_and_field(change: Any, expected: str) -> None:
    document = base()
    broken = copy.deepcopy(document)
    change(broken["epcisBody"]["eventList"][-1])
    problems = validate_document(broken)
    assert problems, "the broken document was accepted"
    text = " ".join(str(p) for p in problems)
    assert expected in text
    last = len(broken["epcisBody"]["eventList"]) - 1
    assert any(p.event == last for p in problems) or "type" in expected


def test_cli_validate(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    run = [sys.executable, "-m", "liangcao.cli", "trace", "validate"]
    env = {**os.environ, "COLUMNS": "200"}
    good = FIXTURES / "gs1-examples" / "Example_9.6.1-ObjectEvent.jsonld"
    assert subprocess.run([*run, str(good)], capture_output=True, text=True, env=env).returncode == 0
    document = base()
    document["epcisBody"]["eventList"][0].pop("eventTime")
    bad = tmp_path / "bad.jsonld"
    bad.write_text(json.dumps(document))
    r = subprocess.run([*run, str(bad)], capture_output=True, text=True, env=env)
    assert r.returncode == 1 and "event 0" in r.stderr and "eventTime" in r.stderr and "Traceback" not in r.stderr
