"""The CBV 2.0 EPCIS event hash id: ``ni:///sha-256;<hex>?ver=CBV2.0``.

The pre-hash string of an event is built by the rules of CBV 2.0 section 8.9 (the reference
implementation is GS1's epcis-event-hash-generator): fields in the canonical property order, ``key=value``
pairs concatenated without separators, list members sorted by code point, timestamps in UTC with
milliseconds, numbers without trailing zeros, CBV vocabulary as GS1 Web URIs, EPCs as constrained canonical
GS1 Digital Link URIs, user extensions as ``{namespace}localName`` sorted, ``eventID`` and ``recordTime``
and ``errorDeclaration`` left out. The same event in any field order (or, once parsed, in XML) has the
same id.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from liangcao.trace.depth import check_value
from liangcao.trace.identifiers import normalise_identifier
from liangcao.trace.memo import text_cache

HASH_VERSION = "CBV2.0"
#: The CURIE prefixes of standard vocabulary values (CBV 2.0 hash rule 15): ``gs1:`` is always
#: ``https://gs1.org/voc/``, whatever namespace a document binds the prefix to (an XML document may bind
#: ``gs1`` to ``https://ref.gs1.org/voc/`` for its own elements; its values still mean the GS1 vocabulary).
DEFAULT_PREFIXES = {
    "gs1": "https://gs1.org/voc/",
    "cbv": "https://ref.gs1.org/cbv/",
    "epcis": "https://ref.gs1.org/epcis/",
}
#: The prefixes of the standard JSON-LD context (``epcis-context.jsonld``), for extension keys: a JSON
#: document may write ``cbvmda:lotNumber`` without declaring ``cbvmda``. That prefix is the CBV master-data
#: namespace as the XML binding writes it, ``urn:epcglobal:cbv:mda`` (the JSON-LD context file adds a colon),
#: so the same ILMD in XML and in JSON gets the same key. A document that declares ``cbvmda`` itself gets
#: what it declares (the vector ``epcisDocWithVariousEventTypes`` declares ``urn:epcglobal:cbv:mda:`` in both
#: of its forms and encodes ``{urn:epcglobal:cbv:mda:}``).
STANDARD_CONTEXT_PREFIXES = {
    **DEFAULT_PREFIXES,
    "cbvmda": "urn:epcglobal:cbv:mda",
    "rdfs": "http://www.w3.org/2000/01/rdf-schema#",
    "owl": "http://www.w3.org/2002/07/owl#",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
    "dcterms": "http://purl.org/dc/terms/",
}
CBV_URNS = {
    "urn:epcglobal:cbv:bizstep:": "https://ref.gs1.org/cbv/BizStep-",
    "urn:epcglobal:cbv:disp:": "https://ref.gs1.org/cbv/Disp-",
    "urn:epcglobal:cbv:btt:": "https://ref.gs1.org/cbv/BTT-",
    "urn:epcglobal:cbv:sdt:": "https://ref.gs1.org/cbv/SDT-",
    "urn:epcglobal:cbv:er:": "https://ref.gs1.org/cbv/ER-",
}
#: The GS1 Web Vocabulary under its other spelling: CBV 2.0's hash rule 15 defines ``gs1`` as
#: ``https://gs1.org/voc/`` and gives ``gs1:Temperature -> https://ref.gs1.org/voc/Temperature`` as its
#: example. Both name the same vocabulary, so a value written either way is written as the definition says.
GS1_VOC_ALIASES = ("https://ref.gs1.org/voc/", "http://gs1.org/voc/", "http://ref.gs1.org/voc/")
# Bare words of the standard vocabularies, by the field that holds them.
BARE = {
    "bizStep": "https://ref.gs1.org/cbv/BizStep-",
    "disposition": "https://ref.gs1.org/cbv/Disp-",
    "set": "https://ref.gs1.org/cbv/Disp-",
    "unset": "https://ref.gs1.org/cbv/Disp-",
    "bizTransaction.type": "https://ref.gs1.org/cbv/BTT-",
    "source.type": "https://ref.gs1.org/cbv/SDT-",
    "destination.type": "https://ref.gs1.org/cbv/SDT-",
    "sensorReport.type": "https://gs1.org/voc/",
    "sensorReport.exception": "https://gs1.org/voc/",
    "sensorReport.component": "https://ref.gs1.org/cbv/Comp-",
    "reason": "https://ref.gs1.org/cbv/ER-",
}
IGNORED = {"type", "eventID", "recordTime", "errorDeclaration", "@context", "comment", "rdfs:comment", "#text"}
EPC_LISTS = ("epcList", "inputEPCList", "childEPCs", "outputEPCList")
QUANTITY_LISTS = ("quantityList", "childQuantityList", "inputQuantityList", "outputQuantityList")
TYPED_LISTS = {"bizTransactionList": "bizTransaction", "destinationList": "destination", "sourceList": "source"}
METADATA_ORDER = (
    "time", "startTime", "endTime", "deviceID", "deviceMetadata", "rawData", "dataProcessingMethod", "bizRules",
)  # fmt: skip
REPORT_ORDER = (
    "type", "exception", "deviceID", "deviceMetadata", "rawData", "dataProcessingMethod", "time", "microorganism",
    "chemicalSubstance", "value", "component", "stringValue", "booleanValue", "hexBinaryValue", "uriValue",
    "minValue", "maxValue", "meanValue", "sDev", "percRank", "percValue", "uom", "coordinateReferenceSystem",
)  # fmt: skip
ORDER = (
    "eventTime", "eventTimeZoneOffset", "certificationInfo", "epcList", "parentID", "inputEPCList", "childEPCs",
    "quantityList", "childQuantityList", "inputQuantityList", "outputEPCList", "outputQuantityList", "action",
    "transformationID", "bizStep", "disposition", "persistentDisposition", "readPoint", "bizLocation",
    "sensorElementList", "bizTransactionList", "destinationList", "ilmd", "sourceList",
)  # fmt: skip
# The reference generator writes business transactions, sources, destinations and the ILMD after everything
# else, sorted together with the user extensions (its vectors show ``sensorElementList`` before
# ``bizTransactionList``, and ``destinationList`` before ``sourceList``): these fields are the event's tail.
TAIL = frozenset(("bizTransactionList", "destinationList", "ilmd", "sourceList"))
_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})$", re.ASCII)


@text_cache(maxsize=1 << 14)
def fix_time(value: str) -> str:
    """UTC with millisecond precision; a fourth fraction digit of 5 or more rounds up."""
    m = _TIME.match(value.strip())
    if m is None:
        return value.strip()
    base, frac, zone = m.groups()
    frac = frac or "0"
    ms = int((frac + "000")[:3]) + (1 if len(frac) > 3 and frac[3] >= "5" else 0)
    when = dt.datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone)) + dt.timedelta(milliseconds=ms)
    utc = when.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", re.ASCII)  # ASCII: \d moves with Unicode


def format_number(value: Any) -> str:
    """A number as the pre-hash writes it: 1.0 -> 1, 0.34340 -> 0.3434, 12 -> 12.

    This is the reference generator's rule, which the published vectors encode: the value is read as an
    IEEE 754 double, written as an integer when integral, else in the shortest form that reads back to the
    same double. Two implementations agree on an id only if they agree on this, so liangcao follows it even
    where it loses digits (a 24-digit sensor string value is rounded, as in ``SensorDataExamples``). The
    double exists only to produce this text: it never enters ledger state or arithmetic, and Python's
    conversions both ways are correctly rounded, so every peer writes the same text.
    """
    text = str(value).strip()
    if not _NUMBER.fullmatch(text):
        return text
    number = float(text)
    if number != number or number in (float("inf"), float("-inf")):
        return text
    return str(int(number)) if number == int(number) else repr(number)


@text_cache(maxsize=1 << 16)
def text_value(raw: str, field: str = "") -> str:
    """A text value as the pre-hash writes it. A function of the text and the field alone (values expand only
    the fixed GS1 prefixes), so it is cached: the same steps, places and identifiers recur across events."""
    text = raw.strip()
    if field.rsplit(".", 1)[-1].lower().endswith("time") and _TIME.match(text):
        return fix_time(text)
    if text.startswith("urn:epcglobal:cbv:"):
        for urn, web in CBV_URNS.items():
            if text.startswith(urn):
                return web + text[len(urn) :]
    bare = BARE.get(field) or BARE.get(field.rsplit(".", 1)[-1] if field.count(".") == 0 else "")
    if bare and ":" not in text and text:
        return bare + text
    text = Hasher.expand(text)
    if text.startswith(GS1_VOC_ALIASES):
        return DEFAULT_PREFIXES["gs1"] + text.partition("/voc/")[2]
    if _NUMBER.fullmatch(text):
        return format_number(text)
    return normalise_identifier(text) or text


class Hasher:
    """Pre-hash strings for the events of one document (its JSON-LD ``@context`` gives the prefixes)."""

    def __init__(self, context: Any = None, ignore: list[str] | tuple[str, ...] = ()) -> None:
        self.prefixes = bind(STANDARD_CONTEXT_PREFIXES, context)
        self.ignore_names = tuple(ignore)
        # Extension fields a document declares as repository metadata (``...:ignoreFields``), not event content.
        self.ignore = {self.key(name) for name in ignore}
        self._within: dict[str, Hasher] = {}

    def within(self, context: Any) -> Hasher:
        """The hasher for an event that carries its own ``@context``: its bindings over the document's.

        JSON-LD scopes a context to the object that holds it, so an event's prefixes apply to that event
        alone; the document's ``ignoreFields`` still apply (named with the document's prefixes).
        """
        if context is None:
            return self
        key = repr(context)
        if key not in self._within:
            inner = Hasher.__new__(Hasher)
            inner.prefixes = bind(self.prefixes, context)
            inner.ignore_names, inner.ignore, inner._within = self.ignore_names, self.ignore, {}
            self._within[key] = inner
        return self._within[key]

    # ---- values -----------------------------------------------------------------------------------------
    @staticmethod
    def expand(text: str) -> str:
        """A ``gs1:``, ``cbv:`` or ``epcis:`` value as its GS1 URI, whatever the document binds those to."""
        prefix, sep, rest = text.partition(":")
        if sep and prefix in DEFAULT_PREFIXES and not rest.startswith("//"):
            return DEFAULT_PREFIXES[prefix] + rest
        return text

    def value(self, raw: Any, field: str = "") -> str:
        if isinstance(raw, bool):
            return "true" if raw else "false"
        if isinstance(raw, int | float | Decimal):
            return format_number(raw)
        return text_value(str(raw), field)

    def key(self, name: str) -> str:
        prefix, sep, rest = name.partition(":")
        if sep and prefix in self.prefixes:
            return "{" + self.prefixes[prefix] + "}" + rest
        return name

    # ---- structures -------------------------------------------------------------------------------------
    def extension(self, name: str, value: Any) -> list[str]:
        """``{ns}local=value`` strings for one user extension (several if it holds a list).

        A list gives one string per member; an object gives ``{ns}local`` (``=text`` if it has ``#text``)
        followed by its members' strings, sorted. Written as a loop over an explicit stack rather than a
        recursion, so how deep the caller's stack is never matters.
        """
        out: list[str] = []
        # ("visit", name, value, sink): append the strings of one value to sink;
        # ("close", head, inner, sink): all of an object's members are in inner: append its string to sink.
        stack: list[tuple[str, str, Any, list[str]]] = [("visit", name, value, out)]
        while stack:
            op, n, v, sink = stack.pop()
            if op == "close":
                sink.append(n + "".join(sorted(v)))
            elif isinstance(v, list):
                stack.extend(("visit", n, item, sink) for item in reversed(v))
            elif isinstance(v, Mapping):
                inner: list[str] = []
                text = f"={self.value(v['#text'])}" if "#text" in v else ""
                stack.append(("close", self.key(n) + text, inner, sink))
                stack.extend(("visit", k, c, inner) for k, c in reversed(list(v.items())) if k != "#text")
            elif v is None or (text := self.value(v)) == "":
                sink.append(self.key(n))  # an empty element: its name alone, as for an empty object
            else:
                sink.append(f"{self.key(n)}={text}")
        return out

    def _extension_strings(self, obj: Mapping[str, Any], known: set[str] | tuple[str, ...]) -> list[str]:
        return [
            s
            for k, v in obj.items()
            if k not in known and k not in IGNORED and self.key(k) not in self.ignore
            for s in self.extension(k, v)
        ]

    def extensions(self, obj: Mapping[str, Any], known: set[str] | tuple[str, ...]) -> str:
        return "".join(sorted(self._extension_strings(obj, known)))

    def ordered(self, obj: Mapping[str, Any], order: tuple[str, ...], parent: str) -> str:
        out = []
        for name in order:
            if name in obj and obj[name] is not None and obj[name] != "":
                out.append(f"{name}={self.value(obj[name], f'{parent}.{name}')}")
        return "".join(out)

    def event(self, event: Mapping[str, Any], *, checked: bool = False) -> str:
        """The pre-hash string of one event. Raises TooDeep if it nests deeper than ``trace_depth_max``.

        The walk below recurses into user extensions; checking the depth first (without recursion) keeps
        it a few dozen frames deep, so the outcome never depends on how deep the caller's stack is.
        """
        if not checked:  # ``checked``: the caller bounded the event's JSON text (``depth.check_json``) already
            check_value(event, "the event")
        if "@context" in event:
            return self.within(event["@context"])._event(event)
        return self._event(event)

    def _event(self, event: Mapping[str, Any]) -> str:
        parts = [f"eventType={event.get('type', '')}"]
        tail: list[str] = []
        for name in ORDER:
            if name in event and event[name] is not None:
                (tail if name in TAIL else parts).append(self._field(name, event[name]))
        strays = self._sensor_strays(event.get("sensorElementList"))
        rest = [t for t in tail if t] + self._extension_strings(event, ORDER) + strays
        parts.append("".join(sorted(rest)))
        return "".join(parts)

    def _field(self, name: str, v: Any) -> str:
        if name in EPC_LISTS:
            items = sorted(f"epc={self.value(e)}" for e in v)
            return name + "".join(items) if items else ""
        if name in QUANTITY_LISTS:
            items = sorted("quantityElement" + self.ordered(q, ("epcClass", "quantity", "uom"), "q") for q in v)
            return name + "".join(items) if items else ""
        if name in TYPED_LISTS:
            member = TYPED_LISTS[name]
            items = sorted(
                (f"type={self.value(t['type'], f'{member}.type')}" if t.get("type") else "")
                + f"{member}={self.value(t.get(member, ''), member)}"
                for t in v
            )
            return name + "".join(items) if items else ""
        if name == "persistentDisposition":
            return self._persistent(v)
        if name in ("readPoint", "bizLocation"):
            return self._located(name, v)
        if name == "sensorElementList":
            return self._sensors(v)
        if name == "ilmd":
            return "ilmd" + self.extensions(v, ()) if isinstance(v, Mapping) else ""
        return f"{name}={self.value(v, name)}"

    def _persistent(self, v: Mapping[str, Any]) -> str:
        body = "".join(
            "".join(sorted(f"{which}={self.value(d, which)}" for d in v.get(which) or [])) for which in ("set", "unset")
        )
        return "persistentDisposition" + body if body else ""

    def _located(self, name: str, v: Any) -> str:
        if isinstance(v, str):
            return f"{name}id={self.value(v)}"
        ident = f"id={self.value(v['id'])}" if v.get("id") else ""
        return name + ident + self.extensions(v, ("id",))

    def _sensor_strays(self, elements: Any) -> list[str]:
        """Standard-looking fields a sensor element holds where the standard has none (``bizRules`` on a report).

        The reference generator leaves them out of the sensor element and writes them, with their full path,
        among the event's extensions; its vectors do the same, so liangcao follows.
        """
        if not isinstance(elements, list):
            return []
        out = []
        for el in elements:
            found = []
            meta = el.get("sensorMetadata") if isinstance(el, Mapping) else None
            if isinstance(meta, Mapping):
                found += [f"sensorMetadata{k}={self.value(v, k)}" for k, v in meta.items() if _stray(k, METADATA_ORDER)]
            for r in el.get("sensorReport") or [] if isinstance(el, Mapping) else []:
                found += [f"sensorReport{k}={self.value(v, k)}" for k, v in r.items() if _stray(k, REPORT_ORDER)]
            if found:
                out.append("sensorElement" + "".join(sorted(found)))
        return ["sensorElementList" + "".join(sorted(out))] if out else []

    def _sensors(self, elements: list[Mapping[str, Any]]) -> str:
        out = []
        for el in elements:
            text = "sensorElement"
            meta = el.get("sensorMetadata")
            if isinstance(meta, Mapping):
                text += "sensorMetadata" + self.ordered(meta, METADATA_ORDER, "sensorMetadata")
                text += self.extensions(
                    {k: v for k, v in meta.items() if not _stray(k, METADATA_ORDER)}, METADATA_ORDER
                )
            reports = el.get("sensorReport") or []
            text += "".join(
                sorted(
                    "sensorReport"
                    + self.ordered(r, REPORT_ORDER, "sensorReport")
                    + self.extensions({k: v for k, v in r.items() if not _stray(k, REPORT_ORDER)}, REPORT_ORDER)
                    for r in reports
                )
            )
            text += self.extensions(el, ("sensorMetadata", "sensorReport"))
            out.append(text)
        return "sensorElementList" + "".join(sorted(out)) if out else ""


def bind(prefixes: Mapping[str, str], context: Any) -> dict[str, str]:
    """``prefixes`` with the term definitions of a JSON-LD ``@context`` (a URL, an object or a list) over them."""
    out = dict(prefixes)
    for entry in context if isinstance(context, list) else [context]:
        if isinstance(entry, Mapping):
            for k, v in entry.items():
                if isinstance(v, str):
                    out[k] = v
    return out


def _stray(key: str, known: tuple[str, ...]) -> bool:
    return ":" not in key and key not in known and key not in IGNORED


def events_of(document: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The events of an EPCIS document or query document, in document order."""
    body = document.get("epcisBody") or {}
    if "eventList" in body:
        return list(body["eventList"])
    if "event" in body:
        return [body["event"]]
    results = (body.get("queryResults") or {}).get("resultsBody") or {}
    return list(results.get("eventList") or [])


def ignored_fields(document: Mapping[str, Any]) -> list[str]:
    """Field names a document (or its query results) lists under an ``ignoreFields`` extension."""
    found: list[str] = []
    body = document.get("epcisBody") or {}
    for holder in (document, document.get("epcisHeader") or {}, body, body.get("queryResults") or {}):
        if isinstance(holder, Mapping):
            for k, v in holder.items():
                if k.rsplit(":", 1)[-1] == "ignoreFields" and isinstance(v, list):
                    found.extend(str(x) for x in v)
    return found


def prehash(event: Mapping[str, Any], context: Any = None, ignore: list[str] | tuple[str, ...] = ()) -> str:
    """The pre-hash string of one event (JSON-LD form), before SHA-256."""
    return Hasher(context, ignore).event(event)


def hash_of_prehash(pre: str) -> str:
    return f"ni:///sha-256;{hashlib.sha256(pre.encode('utf-8')).hexdigest()}?ver={HASH_VERSION}"


def event_hash(event: Mapping[str, Any], context: Any = None, ignore: list[str] | tuple[str, ...] = ()) -> str:
    """The CBV 2.0 event hash id of one event (JSON-LD form)."""
    return hash_of_prehash(prehash(event, context, ignore))


def document_hashes(document: Mapping[str, Any]) -> list[str]:
    """The hash id of every event of an EPCIS (query) document, in document order."""
    hasher = Hasher(document.get("@context"), ignored_fields(document))
    return [hash_of_prehash(hasher.event(e)) for e in events_of(document)]
