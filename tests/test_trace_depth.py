"""Hostile nesting: EPCIS events, contexts and documents nested deeply are refused by an explicit bound.

The attack: an event nested a few hundred levels deep anchored when the trace contract ran near the top of
the stack and failed with RecursionError when it ran deeper (``audit``, ``node rebuild``), so honest peers
disagreed about one block. Now every walk is preceded by a check that loops instead of recursing, and the
outcome is the same at any stack depth.
"""

from __future__ import annotations

import base64
import copy
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from conftest import Live
from liangcao import limits
from liangcao.apps.trace.anchor import TraceCode
from liangcao.cli import app
from liangcao.codes import Code
from liangcao.ledger import tx as txm
from liangcao.trace import capture
from liangcao.trace.depth import TooDeep, check_json, json_depth, value_depth
from liangcao.trace.hashing import Hasher, event_hash
from liangcao.trace.validate import validate_document
from liangcao.trace.xml import read
from trace_ledger import BRAND_PREFIX, LOGISTICS, TRACE, TraceLedger, document, obj

T = TypeVar("T")
DEPTH = limits.trace_depth_max
CONTEXT = ["https://ref.gs1.org/standards/epcis/epcis-context.jsonld", {"ex": "https://ex.example/"}]
EPC = f"urn:epc:id:sgtin:{BRAND_PREFIX}.107346.1"


def at_depth(frames: int, fn: Callable[[], T]) -> T:
    """``fn()`` called from inside ``frames`` more Python frames."""
    if frames == 0:
        return fn()
    return at_depth(frames - 1, fn)


def nested_objects(levels: int) -> str:
    return '{"ex:a": ' * levels + '"x"' + "}" * levels


def nested_lists(levels: int) -> str:
    return "[" * levels + '"x"' + "]" * levels


def event_text(extension: str) -> str:
    """An ObjectEvent whose extension ``ex:n`` is the JSON text ``extension`` (the event adds one level)."""
    base = json.dumps(obj([EPC], "shipping", "2026-11-01T10:00:00+08:00", **{"ex:n": "@@"}))
    return base.replace('"@@"', extension)


def capture_tx(led: TraceLedger, events: list[str], context: str, nonce: str) -> bytes:
    args = {"events": events, "context": context}
    signer = TRACE.org(LOGISTICS).signer("admin")
    return txm.build(
        TRACE.chain_id, "trace", "capture", args, [signer], not_after=led.time_ms + 60_000, nonce=nonce
    ).raw


# ---- the depth counters -------------------------------------------------------------------------------------
def test_json_depth_counts_containers_and_ignores_brackets_inside_strings() -> None:
    assert json_depth(b'"x"') == 0 and json_depth("[]") == 1 and json_depth('{"a": [1, {"b": []}]}') == 4
    assert json_depth(r'{"a": "[[[{{{\"]]]", "b": ["\\", "]"]}') == 2
    assert json_depth(nested_lists(5000)) == 5000 and json_depth(nested_objects(40)) == 40
    with pytest.raises(TooDeep, match=f"the thing nests deeper than trace_depth_max={DEPTH}"):
        check_json(nested_lists(DEPTH + 1), "the thing")
    check_json(nested_lists(DEPTH), "the thing")
    with pytest.raises(TypeError):
        json_depth(12)  # type: ignore[arg-type]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab,:\n'),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(alphabet='[]{}"\\a'), inner, max_size=3),
    max_leaves=30,
)


@given(value=JSON)
def test_json_depth_agrees_with_the_decoded_value(value: Any) -> None:
    text = json.dumps(value)
    assert json_depth(text) == value_depth(value) == value_depth(msgspec.json.decode(text))


def test_value_depth_is_a_loop_and_stops_early() -> None:
    deep: Any = "x"
    for _ in range(100_000):
        deep = [deep]
    assert value_depth(deep, stop=DEPTH) == DEPTH + 1
    assert value_depth({"a": [{"b": 1}], "c": 2}) == 3


# ---- the contract: the same outcome at any stack depth ----------------------------------------------------
CASES = {
    "within the bound": ([event_text(nested_objects(DEPTH - 1))], json.dumps(CONTEXT), 0),
    "one level too deep": ([event_text(nested_objects(DEPTH))], json.dumps(CONTEXT), TraceCode.TOO_DEEP),
    "500 levels": ([event_text(nested_objects(500))], json.dumps(CONTEXT), TraceCode.TOO_DEEP),
    "5000 levels": ([event_text(nested_lists(5000))], json.dumps(CONTEXT), TraceCode.TOO_DEEP),
    "second event deep": (
        [event_text('"plain"'), event_text(nested_lists(300))],
        json.dumps(CONTEXT),
        TraceCode.TOO_DEEP,
    ),
    "deep context": ([event_text('"plain"')], nested_lists(1500), TraceCode.TOO_DEEP),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_capture_outcome_is_the_same_at_the_top_and_inside_800_frames(case: str) -> None:
    events, context, code = CASES[case]
    top, deep = TraceLedger(), TraceLedger()
    raw = capture_tx(top, events, context, f"depth-{case}")
    at_top = top.apply([raw])
    nested = at_depth(800, lambda: deep.apply([raw]))
    assert at_top.receipts == nested.receipts and at_top.state_hash == nested.state_hash
    decoded = msgspec.json.decode(at_top.receipts[0])
    assert decoded["code"] == code, decoded
    if code == TraceCode.TOO_DEEP:
        which = "the context" if case == "deep context" else f"event {len(events) - 1}"
        assert decoded["message"] == f"{which} nests deeper than trace_depth_max={DEPTH}"
        assert top.state.data == deep.state.data


def test_a_deep_event_never_raises_recursion_error_even_near_the_interpreter_limit() -> None:
    """Called with little stack left, the contract still refuses by the bound, never by RecursionError."""
    led = TraceLedger()
    raw = capture_tx(led, [event_text(nested_lists(5000))], json.dumps(CONTEXT), "near-limit")
    spare = sys.getrecursionlimit() - len(_stack()) - 120
    ex = at_depth(spare, lambda: led.apply([raw]))
    assert msgspec.json.decode(ex.receipts[0])["code"] == TraceCode.TOO_DEEP


def _stack() -> list[Any]:
    frames, f = [], sys._getframe()
    while f is not None:
        frames.append(f)
        f = f.f_back  # type: ignore[assignment]
    return frames


# ---- hashing, validation and bundles refuse by the bound too --------------------------------------------------
def test_hasher_and_validator_refuse_deep_values_without_recursing() -> None:
    deep: Any = "x"
    for _ in range(5000):
        deep = {"ex:a": deep}
    event = obj([EPC], "shipping", "2026-11-01T10:00:00+08:00", **{"ex:n": deep})
    with pytest.raises(TooDeep, match="the event nests deeper"):
        event_hash(event, CONTEXT)
    problems = validate_document(document([event]))
    assert [(p.event, p.path) for p in problems] == [(None, "$")] and "trace_depth_max" in problems[0].message
    # within the bound the hash is the same whatever the stack depth
    ok = obj([EPC], "shipping", "2026-11-01T10:00:00+08:00", **{"ex:n": json.loads(nested_objects(DEPTH - 2))})
    assert at_depth(850, lambda: Hasher(CONTEXT).event(ok)) == Hasher(CONTEXT).event(ok)


# ---- the capture path: JSON and XML documents ------------------------------------------------------------------
def deep_xml(levels: int) -> bytes:
    event = (
        "<ObjectEvent><eventTime>2026-11-01T10:00:00+08:00</eventTime>"
        "<eventTimeZoneOffset>+08:00</eventTimeZoneOffset>"
        f"<epcList><epc>{EPC}</epc></epcList><action>OBSERVE</action><bizStep>shipping</bizStep>"
        + "<ex:a>" * levels
        + "x"
        + "</ex:a>" * levels
        + "</ObjectEvent>"
    )
    return (
        '<epcis:EPCISDocument xmlns:epcis="urn:epcglobal:epcis:xsd:2" xmlns:ex="https://ex.example/" '
        'schemaVersion="2.0" creationDate="2026-11-01T00:00:00Z"><EPCISBody><EventList>'
        + event
        + "</EventList></EPCISBody></epcis:EPCISDocument>"
    ).encode()


def deep_json_document(levels: int) -> bytes:
    doc = json.dumps({**document([]), "@context": CONTEXT}).replace('"eventList": []', '"eventList": [@@]')
    return doc.replace("@@", event_text(nested_lists(levels))).encode()


@pytest.mark.parametrize("levels", [500, 5000])
def test_prepare_refuses_deep_json_and_xml_with_a_stable_code(levels: int) -> None:
    for data in (deep_json_document(levels), deep_xml(levels), nested_lists(levels * 10).encode()):
        with pytest.raises(capture.CaptureRefused) as refused:
            at_depth(800, lambda data=data: capture.prepare(data))  # type: ignore[misc]
        assert refused.value.code == Code.VALUE_TOO_DEEP
        assert f"nests deeper than trace_depth_max={DEPTH}" in refused.value.message
    with pytest.raises(capture.CaptureRefused) as refused:
        capture.prepare(deep_json_document(levels), single=True)
    assert refused.value.code == Code.VALUE_TOO_DEEP


def test_shallow_xml_still_reads_and_deep_xml_stops_while_parsing() -> None:
    assert read(deep_xml(3))["epcisBody"]["eventList"][0]["ex:a"] == {"ex:a": {"ex:a": "x"}}
    with pytest.raises(TooDeep, match="the XML document nests deeper"):
        read(deep_xml(100_000))


def test_the_cli_refuses_a_deep_file_cleanly(tmp_path: Path) -> None:
    runner = CliRunner()
    for name, data in (("deep.jsonld", deep_json_document(5000)), ("deep.xml", deep_xml(5000))):
        path = tmp_path / name
        path.write_bytes(data)
        for cmd in (["trace", "hash", str(path)], ["trace", "validate", str(path)]):
            r = runner.invoke(app, cmd)
            assert r.exit_code == 1 and not isinstance(r.exception, RecursionError), (cmd, r.output)
            assert "nests deeper than trace_depth_max" in " ".join(r.output.split())  # rich wraps at 80 columns
    bundle = tmp_path / "bundle.json"
    bundle.write_text(nested_lists(5000))
    r = runner.invoke(app, ["verify-proof", str(bundle)])
    assert r.exit_code == 1 and "nests deeper" in " ".join(r.output.split())


# ---- the HTTP EPCIS binding: a clean 400, never a 500 -------------------------------------------------------
@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    live = Live(tmp_path_factory.mktemp("trace-depth") / "net", ["brand", "logistics", "customs"], custody=True)
    yield live
    live.stop()


def test_http_capture_answers_deep_json_and_xml_with_400(net: Live) -> None:
    token = net.home.auth().create("org2/alice", 1, scope="write")
    with httpx.Client(base_url=net.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
        bodies = {
            "json document": (deep_json_document(5000), "application/json"),
            "xml document": (deep_xml(5000), "application/xml"),
            "xml 500": (deep_xml(500), "application/xml"),
            "bare nesting": (nested_lists(200_000).encode(), "application/json"),
        }
        for what, (body, kind) in bodies.items():
            for path in ("/epcis/v2/capture", "/epcis/v2/events"):
                r = c.post(path, content=body, headers={"Content-Type": kind})
                assert r.status_code == 400, (what, path, r.status_code, r.text[:300])
                assert r.json()["code"] == Code.VALUE_TOO_DEEP, (what, path, r.text[:300])
        # a shallow event still goes through the same endpoint
        ok = json.dumps(document([obj([EPC], "shipping", "2026-11-01T10:00:00+08:00")])).encode()
        r = c.post("/epcis/v2/capture", content=ok, headers={"Content-Type": "application/json"})
        assert r.status_code == 202, r.text


def test_a_bundle_with_deep_leaves_is_reported_not_crashed(net: Live) -> None:
    """A verification bundle comes from anywhere: deep leaves make it fail its checks, never crash them."""
    import hashlib

    from liangcao.trace import bundle_check

    token = net.home.auth().create("org2/alice", 1, scope="write")
    item = "urn:epc:id:sgtin:0614141.107346.77"
    with httpx.Client(base_url=net.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
        one = {"@context": CONTEXT[:1], **obj([item], "shipping", "2026-11-01T10:00:00+08:00")}
        r = c.post("/epcis/v2/events", content=json.dumps(one).encode(), headers={"Content-Type": "application/json"})
        assert r.status_code == 201, r.text
        bundle = c.get("/v1/trace/verify", params={"id": item}).json()
    assert bundle["events"]
    fingerprints = [hashlib.sha256(base64.b64decode(o["ca_cert"])).hexdigest() for o in bundle["organisations"]]
    trust = bundle_check.Trust.from_anchors(fingerprints, 1)
    honest = bundle_check.check_bundle(bundle, trust, item)  # one node attests: short of quorum, but well formed
    assert not any("malformed" in p for p in honest.events[0].problems), honest.events[0].problems
    deep_receipt = copy.deepcopy(bundle)
    deep_receipt["events"][0]["proof"]["receipt"]["leaf"] = nested_lists(5000)
    deep_event = copy.deepcopy(bundle)
    tx_proof = deep_event["events"][0]["proof"]["tx"]
    tx = json.loads(tx_proof["leaf"])
    tx["body"]["args"]["events"][0] = event_text(nested_lists(5000))
    tx_proof["leaf"] = json.dumps(tx, separators=(",", ":"), sort_keys=True)
    rc_proof = deep_event["events"][0]["proof"]["receipt"]
    receipt = json.loads(rc_proof["leaf"])
    receipt["tx_id"] = txm.parse(tx_proof["leaf"]).tx_id  # so the check reaches the event text itself
    rc_proof["leaf"] = json.dumps(receipt)
    for hostile in (deep_receipt, deep_event):
        result = at_depth(800, lambda hostile=hostile: bundle_check.check_bundle(hostile, trust, item))  # type: ignore[misc]
        assert not result.verified and any("malformed" in p for p in result.events[0].problems)
