"""The facts of an event and the index follower's entries, held to the plain reference they were sped up from.

``facts`` decides what a capture writes and refuses (its BadEvent message is a receipt's text), so a faster
version must give the same facts and the same refusal for every event, the malformed included: the reference
below is the implementation as it stood before (kept here as the specification), compared on generated events.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from liangcao import encoding
from liangcao.apps.trace.anchor import index_entries
from liangcao.node.trace_index import pack_entry, packed_entries
from liangcao.trace import facts as fx
from liangcao.trace.identifiers import DL_ROOT, normalise_identifier

#: The identifier normal form without its cache (a fault in the cache must not show on both sides)
_normalise = getattr(normalise_identifier, "__wrapped__", normalise_identifier)


def _ref_index_form(identifier: Any) -> str:
    dl = _normalise(identifier) if isinstance(identifier, str) else None
    text = dl[len(DL_ROOT) + 1 :] if dl else str(identifier)
    if len(text) > fx.id_chars_max or not encoding.printable(text) or " " in text:
        return "#" + hashlib.sha256(text.encode()).hexdigest()[:40]
    return text


def _ref_identifiers(event: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    for name, role in fx._ROLE_LISTS:
        epcs = event.get(name) or []
        if not isinstance(epcs, list) or not all(isinstance(e, str) and e for e in epcs):
            raise fx.BadEvent(f"{name} must be a list of identifiers (strings)")
        for epc in epcs:
            yield role, _ref_index_form(epc)
    parent = event.get("parentID")
    if parent is not None and not (isinstance(parent, str) and parent):
        raise fx.BadEvent("parentID must be an identifier (a string)")
    if parent:
        yield fx.PARENT, _ref_index_form(parent)
    for name, role in fx._QTY_LISTS:
        elements = event.get(name) or []
        if not isinstance(elements, list):
            raise fx.BadEvent(f"{name} must be a list of quantity elements")
        for q in elements:
            cls = q.get("epcClass") if isinstance(q, Mapping) else None
            if not (isinstance(cls, str) and cls):
                raise fx.BadEvent(f"each member of {name} needs an epcClass")
            yield role, _ref_index_form(cls)


def _ref_facts(event: Any, ids_max: int) -> fx.Facts:
    if not isinstance(event, Mapping):
        raise fx.BadEvent("an event is a JSON object")
    kind = event.get("type")
    if kind not in fx.EVENT_TYPES:
        raise fx.BadEvent(f"unknown event type {kind!r}; EPCIS 2.0 has {', '.join(fx.EVENT_TYPES)}")
    if "eventTime" not in event:
        raise fx.BadEvent("the event has no eventTime")
    f = fx.Facts(
        type=str(kind),
        time_ms=fx.time_ms(event["eventTime"]),
        action=str(event.get("action") or ""),
        biz_step=fx.bare(event.get("bizStep"), fx._STEP_PREFIXES),
        disposition=fx.bare(event.get("disposition"), fx._DISP_PREFIXES),
    )
    seen: set[tuple[str, str]] = set()
    for pair in _ref_identifiers(event):
        if pair not in seen:
            seen.add(pair)
            f.ids.append(pair)
            if len(f.ids) > ids_max:
                raise fx.BadEvent(f"the event names more than trace_ids_per_event_max={ids_max} identifiers")
    for name in (fx.READ_POINT, fx.BIZ_LOCATION):
        value = event.get(name)
        if isinstance(value, Mapping):
            value = value.get("id")
        if isinstance(value, str) and value:
            f.places.append((name, _ref_index_form(value)))
    return f


def _outcome(fn: Any, event: Any, ids_max: int) -> tuple[str, Any]:
    try:
        return "ok", fn(event, ids_max)
    except fx.BadEvent as exc:
        return "bad", str(exc)


IDENTIFIERS = st.sampled_from(
    [
        "urn:epc:id:sgtin:0614141.107346.2017",
        "https://brand.example/01/00614141073467/21/2017",
        "urn:epc:id:sscc:0614141.1234567890",
        "urn:epc:class:lgtin:4012345.012345.998877",
        "urn:epc:id:sgln:0614141.00001.0",
        "urn:epc:idpat:sgtin:0614141.107346.*",
        "urn:epc:id:sgtin:bad",
        "x" * 130,
        "urn:epc:id:giai:0614141." + "9" * 231,  # 255, 256 and 257 characters: around the caches' cut-off
        "urn:epc:id:giai:0614141." + "9" * 232,
        "urn:epc:id:giai:0614141." + "9" * 233,
        "urn:epc:id:giai:0614141.\U0001d518\u00e9",
        "has space",
        "tab\there",
        "",
    ]
) | st.text(max_size=20)
JUNK = st.one_of(st.none(), st.booleans(), st.integers(-2, 2), st.just(""), st.just({}), st.just([]), IDENTIFIERS)
ID_LIST = st.one_of(JUNK, st.lists(st.one_of(IDENTIFIERS, JUNK), max_size=12))
QTY_LIST = st.one_of(
    JUNK,
    st.lists(st.one_of(JUNK, st.fixed_dictionaries({"epcClass": st.one_of(IDENTIFIERS, JUNK)})), max_size=4),
)
PLACE = st.one_of(JUNK, st.fixed_dictionaries({"id": st.one_of(IDENTIFIERS, JUNK)}))
TIMES = st.sampled_from(["2026-11-11T00:00:00.123+08:00", "2026-11-11T00:00:00Z", "1969-12-31T23:59:59Z", "soon", 7])
KEYS = {
    "type": st.one_of(st.sampled_from(fx.EVENT_TYPES), JUNK),
    "eventTime": TIMES,
    "action": st.one_of(st.sampled_from(["ADD", "OBSERVE", "DELETE"]), JUNK),
    "bizStep": st.one_of(st.sampled_from(["urn:epcglobal:cbv:bizstep:shipping", "gs1:BizStep-packing"]), JUNK),
    "disposition": st.one_of(st.sampled_from(["https://ref.gs1.org/cbv/Disp-active", "cbv:Disp-sold"]), JUNK),
    "epcList": ID_LIST,
    "childEPCs": ID_LIST,
    "inputEPCList": ID_LIST,
    "outputEPCList": ID_LIST,
    "parentID": st.one_of(IDENTIFIERS, JUNK),
    "quantityList": QTY_LIST,
    "childQuantityList": QTY_LIST,
    "inputQuantityList": QTY_LIST,
    "outputQuantityList": QTY_LIST,
    "readPoint": PLACE,
    "bizLocation": PLACE,
}
EVENTS = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from(fx.EVENT_TYPES), "eventTime": TIMES},
        optional={k: v for k, v in KEYS.items() if k not in ("type", "eventTime")},
    ),
    st.fixed_dictionaries({}, optional=KEYS),
    JUNK,
)


@settings(max_examples=400, deadline=None)
@given(EVENTS, st.integers(1, 8))
def test_facts_agree_with_the_reference(event: Any, ids_max: int) -> None:
    assert _outcome(fx.facts, event, ids_max) == _outcome(_ref_facts, event, ids_max)


@settings(max_examples=200, deadline=None)
@given(EVENTS, st.binary(min_size=32, max_size=32))
def test_packed_entries_are_the_contract_entries_packed(event: Any, digest: bytes) -> None:
    try:
        f = fx.facts(event, 1000)
    except fx.BadEvent:
        return
    hx = digest.hex()
    assert packed_entries(f, hx) == [pack_entry(k, v) for k, v in index_entries(f, hx)]


def test_index_form_of_a_non_string_is_its_text() -> None:
    assert fx.index_form(12) == _ref_index_form(12) == "12"  # type: ignore[arg-type]
    assert fx.index_form("urn:epc:id:sgtin:0614141.107346.2017") == "01/10614141073464/21/2017"


def _kept_after(texts: list[str]) -> int:
    """Bytes still allocated after each text went through the cached functions, as a capture's would."""
    import gc
    import tracemalloc

    from liangcao.trace import hashing

    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for text in texts:
            assert fx.index_form(text).startswith("#")  # digested: too long for an index key, or not printable
            assert hashing.text_value(text, "epcList").startswith("https://id.gs1.org/8004/0614141")
            assert hashing.text_value(text, "epcList") == hashing.text_value.__wrapped__(text, "epcList")  # type: ignore[attr-defined]
        return int(tracemalloc.get_traced_memory()[0] - before)
    finally:
        tracemalloc.stop()


def test_long_texts_are_computed_but_not_kept() -> None:
    """A member sending events full of distinct 20 KB identifiers must not fill every peer's caches with them
    (65,536 entries of such texts would be gigabytes): what the caches keep stays small."""
    kept = _kept_after([f"urn:epc:id:giai:0614141.{n}" + "x" * 20_000 for n in range(150)])
    assert kept < 300_000, kept  # kept twice, 150 such texts would be over 6 MB
    # short but not ASCII: 4 bytes a character, and percent-encoded into 12 in the normal form
    kept = _kept_after([f"urn:epc:id:giai:0614141.{n}" + "\U0001d518" * 200 for n in range(400)])
    assert kept < 300_000, kept  # cached, 400 of them would hold about 1.2 MB
    # short ones are cached and give the same answers as computed afresh
    assert fx.index_form("urn:epc:id:sgtin:0614141.107346.2017") == _ref_index_form(
        "urn:epc:id:sgtin:0614141.107346.2017"
    )
