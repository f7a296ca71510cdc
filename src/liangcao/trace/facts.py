"""What the ledger needs to know about one EPCIS event: its type, time, identifiers by role, places, step.

The trace contract anchors and indexes events by these facts, the query engine filters by them and the
provenance walk follows them, so all three agree on what "the EPCs of an event" means. Everything here is a
pure function of the event (deterministic on every peer); it does not validate the event against the
schema, which the capture path does before anything is signed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from liangcao import encoding
from liangcao.trace.hashing import _TIME
from liangcao.trace.identifiers import DL_ROOT, normalise_identifier
from liangcao.trace.memo import text_cache

EVENT_TYPES = ("ObjectEvent", "AggregationEvent", "TransactionEvent", "TransformationEvent", "AssociationEvent")

# Roles an identifier plays in an event. MATCH_epc looks at EPC and CHILD, MATCH_anyEPC at all of the
# instance-level ones, MATCH_parentID at PARENT; the quantity roles are classes (EQ_/MATCH_epcClass).
EPC, CHILD, PARENT, INPUT, OUTPUT = "epc", "child", "parent", "input", "output"
QTY, CHILD_QTY, INPUT_QTY, OUTPUT_QTY = "qty", "child_qty", "input_qty", "output_qty"
READ_POINT, BIZ_LOCATION = "readPoint", "bizLocation"
_ROLE_LISTS = (
    ("epcList", EPC),
    ("childEPCs", CHILD),
    ("inputEPCList", INPUT),
    ("outputEPCList", OUTPUT),
)
_QTY_LISTS = (
    ("quantityList", QTY),
    ("childQuantityList", CHILD_QTY),
    ("inputQuantityList", INPUT_QTY),
    ("outputQuantityList", OUTPUT_QTY),
)
#: Longest identifier kept whole in an index key; longer ones are indexed by a digest (exact match only).
id_chars_max = 120
_STEP_PREFIXES = (
    "https://ref.gs1.org/cbv/BizStep-",
    "urn:epcglobal:cbv:bizstep:",
    "cbv:BizStep-",
    "gs1:BizStep-",
)
_DISP_PREFIXES = ("https://ref.gs1.org/cbv/Disp-", "urn:epcglobal:cbv:disp:", "cbv:Disp-", "gs1:Disp-")


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class BadEvent(ValueError):
    """The event lacks what anchoring needs (a known type, a parsable time, identifiers within bounds)."""


@dataclass(slots=True)
class Facts:
    type: str
    time_ms: int
    action: str
    biz_step: str  # the bare CBV word ("shipping") or the URI as given for a private vocabulary
    disposition: str
    ids: list[tuple[str, str]] = field(default_factory=list)  # (role, index form)
    places: list[tuple[str, str]] = field(default_factory=list)  # (readPoint | bizLocation, index form)

    def of(self, *roles: str) -> list[str]:
        return [i for r, i in self.ids if r in roles]


def time_ms(text: str) -> int:
    """Milliseconds since the epoch of an EPCIS timestamp (with its offset); BadEvent if it is not one."""
    m = _TIME.match(text.strip()) if isinstance(text, str) else None
    if m is None:
        raise BadEvent(f"eventTime {text!r} is not an ISO 8601 timestamp with a zone offset")
    base, frac, zone = m.groups()
    delta = dt.datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone)) - _EPOCH
    ms = (delta.days * 86_400 + delta.seconds) * 1000 + int(((frac or "") + "000")[:3])
    if not 0 <= ms <= 9_999_999_999_999:
        raise BadEvent(f"eventTime {text!r} is outside the years 1970 to 2286")
    return ms


def time_key(ms: int) -> str:
    """An event time as it sorts in index keys (13 digits); past the last one, a bound above every key."""
    return f"{ms:013d}" if ms < 10_000_000_000_000 else "~"


def bare(value: Any, prefixes: tuple[str, ...]) -> str:
    """``shipping`` for ``https://ref.gs1.org/cbv/BizStep-shipping``, ``urn:epcglobal:cbv:bizstep:shipping``."""
    if not isinstance(value, str):
        return ""
    for p in prefixes:
        if value.startswith(p):
            return value[len(p) :]
    return value


def index_form(identifier: str) -> str:
    """The form identifiers take in index keys: a Digital Link path for GS1 keys, else the text itself.

    ``urn:epc:id:sgtin:0614141.107346.2017`` and ``https://brand.example/01/00614141073467/21/2017`` both give
    ``01/00614141073467/21/2017``, so a query by either finds the same events.
    """
    return _index_form(identifier) if isinstance(identifier, str) else _index_text(str(identifier))


@text_cache(maxsize=1 << 16)
def _index_form(identifier: str) -> str:
    # cached: a capture names the same items and places in several events (packed, shipped, received, all at
    # one read point), and the precompute worker and the index follower each work this out for every event
    dl = normalise_identifier(identifier)
    return _index_text(dl[len(DL_ROOT) + 1 :] if dl else identifier)


def _index_text(text: str) -> str:
    if len(text) > id_chars_max or not encoding.printable(text) or " " in text:
        return "#" + hashlib.sha256(text.encode()).hexdigest()[:40]
    return text


def pattern_prefix(pattern: str) -> str | None:
    """The index prefix an EPC pattern (``urn:epc:idpat:sgtin:0614141.107346.*``) matches, else None."""
    if not pattern.startswith("urn:epc:idpat:") or not pattern.endswith("*"):
        return None
    dl = normalise_identifier(pattern)
    if dl is None:
        return None
    text = dl[len(DL_ROOT) + 1 :]
    return text[:-1] if text.endswith("*") else text + "/"


def _place(value: Any) -> str | None:
    if isinstance(value, Mapping):
        value = value.get("id")
    return index_form(value) if isinstance(value, str) and value else None


def _identifiers(event: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """Each (role, index form) of an event in order, refusing a malformed list before any of its members."""
    get = event.get
    for name, role in _ROLE_LISTS:
        epcs = get(name)
        if not epcs:  # absent, null or empty (any falsy value) names nothing
            continue
        if not isinstance(epcs, list):
            raise BadEvent(f"{name} must be a list of identifiers (strings)")
        for epc in epcs:
            if not (isinstance(epc, str) and epc):
                raise BadEvent(f"{name} must be a list of identifiers (strings)")
        for epc in epcs:
            yield role, _index_form(epc)
    parent = get("parentID")
    if parent is not None and not (isinstance(parent, str) and parent):
        raise BadEvent("parentID must be an identifier (a string)")
    if parent:
        yield PARENT, _index_form(parent)
    for name, role in _QTY_LISTS:
        elements = get(name)
        if not elements:
            continue
        if not isinstance(elements, list):
            raise BadEvent(f"{name} must be a list of quantity elements")
        for q in elements:
            cls = q.get("epcClass") if isinstance(q, Mapping) else None
            if not (isinstance(cls, str) and cls):
                raise BadEvent(f"each member of {name} needs an epcClass")
            yield role, _index_form(cls)


def facts(event: Any, ids_max: int = 1000) -> Facts:
    """The facts of one event (a decoded JSON object). Raises BadEvent naming what is missing.

    On every capture's path three times (the precompute worker, the contract when nothing was precomputed,
    the index follower), so written for speed; ``tests/test_trace_facts.py`` holds it to a plain reference."""
    if not isinstance(event, Mapping):
        raise BadEvent("an event is a JSON object")
    get = event.get
    kind = get("type")
    if kind not in EVENT_TYPES:
        raise BadEvent(f"unknown event type {kind!r}; EPCIS 2.0 has {', '.join(EVENT_TYPES)}")
    if "eventTime" not in event:
        raise BadEvent("the event has no eventTime")
    ids: list[tuple[str, str]] = []
    f = Facts(
        type=str(kind),
        time_ms=time_ms(event["eventTime"]),
        action=str(get("action") or ""),
        biz_step=bare(get("bizStep"), _STEP_PREFIXES),
        disposition=bare(get("disposition"), _DISP_PREFIXES),
        ids=ids,
    )
    seen: set[tuple[str, str]] = set()
    for pair in _identifiers(event):
        if pair not in seen:
            seen.add(pair)
            ids.append(pair)
            if len(ids) > ids_max:
                raise BadEvent(f"the event names more than trace_ids_per_event_max={ids_max} identifiers")
    for name in (READ_POINT, BIZ_LOCATION):
        place = _place(get(name))
        if place is not None:
            f.places.append((name, place))
    return f


def hex_of(hash_id: str) -> str:
    """The hex digest inside ``ni:///sha-256;<hex>?ver=CBV2.0``."""
    m = re.fullmatch(r"ni:///sha-256;([0-9a-f]{64})\?ver=CBV2\.0", hash_id)
    if m is None:
        raise ValueError(f"{hash_id!r} is not a CBV 2.0 event hash id")
    return m.group(1)
