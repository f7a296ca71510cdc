"""EPCIS 2.0 XML documents, read into the JSON-LD form the rest of liangcao works with.

XML capture is translated rather than handled by a second code path, so that one schema check, one hash
algorithm and one anchored form serve both bindings: an event captured as XML is stored as the JSON-LD event
it means, and gets the same CBV 2.0 hash id as that JSON-LD event (the reference vectors check this).

The mapping follows the EPCIS 2.0 standard's XML/JSON correspondence:

- the document's namespace declarations become its ``@context`` (prefix -> namespace), and namespaced
  elements or attributes become ``prefix:localName`` keys (user extensions), nested as objects, repeated
  ones as lists;
- EPCIS 1.x ``<extension>`` wrappers (around quantity lists, sources, ILMD, TransformationEvent, ...) and
  ``<baseExtension>`` are unwrapped;
- lists of EPCs, quantities, business transactions, sources and destinations, persistent dispositions and
  sensor elements take their JSON shapes; sensor metadata and reports are XML attributes; quantities and
  sensor values become exact decimals, ``booleanValue`` a boolean.

Parsing goes through ``defusedxml``: entity expansion and external DTDs, the classic XML bombs, are refused.
Elements nested deeper than ``limits.trace_depth_max`` are refused while parsing (``TooDeep``), before the
translation below, which recurses once per level, walks them.
"""

from __future__ import annotations

import io
from decimal import Decimal, InvalidOperation
from typing import Any
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as safe_et
from defusedxml import DefusedXmlException

from liangcao import limits
from liangcao.trace import xsd
from liangcao.trace.depth import TooDeep
from liangcao.trace.xsd import wrap_event

EVENT_TYPES = ("ObjectEvent", "AggregationEvent", "TransactionEvent", "TransformationEvent", "AssociationEvent")
CONTEXT_URL = "https://ref.gs1.org/standards/epcis/epcis-context.jsonld"
_EPC_LISTS = {"epcList", "childEPCs", "inputEPCList", "outputEPCList"}
_QUANTITY_LISTS = {"quantityList", "childQuantityList", "inputQuantityList", "outputQuantityList"}
_TYPED_LISTS = {"bizTransactionList": "bizTransaction", "sourceList": "source", "destinationList": "destination"}
_NUMERIC = {"value", "minValue", "maxValue", "meanValue", "sDev", "percRank", "percValue", "quantity"}
# Namespaces of the standard itself: never user extensions, never worth a context entry.
_STANDARD_NS = {
    "urn:epcglobal:epcis:xsd:1", "urn:epcglobal:epcis:xsd:2", "urn:epcglobal:epcis-query:xsd:1",
    "urn:epcglobal:epcis-query:xsd:2", "urn:epcglobal:xsd:1", "urn:epcglobal:xsd:2",
    "http://www.w3.org/2001/XMLSchema-instance", "http://www.w3.org/2001/XMLSchema",
    "http://www.unece.org/cefact/namespaces/StandardBusinessDocumentHeader", "urn:epcglobal:epcis-masterdata:xsd:1",
    "urn:epcglobal:epcis-masterdata:xsd:2",
}  # fmt: skip
# EPCIS 1.x wrote CBV words as URNs; the JSON binding writes the bare word (the hash id is the same).
_CBV_URNS = {
    "bizStep": "urn:epcglobal:cbv:bizstep:", "disposition": "urn:epcglobal:cbv:disp:",
    "set": "urn:epcglobal:cbv:disp:", "unset": "urn:epcglobal:cbv:disp:", "reason": "urn:epcglobal:cbv:er:",
    "bizTransaction": "urn:epcglobal:cbv:btt:", "source": "urn:epcglobal:cbv:sdt:",
    "destination": "urn:epcglobal:cbv:sdt:",
}  # fmt: skip
# The standard's single-valued fields (everything else is a list, an object or a namespaced extension).
_SCALARS = {"eventTime", "recordTime", "eventTimeZoneOffset", "eventID", "parentID", "action", "bizStep",
            "disposition", "transformationID"}  # fmt: skip
# Prefixes a JSON-LD reader would confuse with URI schemes.
_SCHEME_PREFIXES = {"http", "https", "urn", "ni", "mailto", "tel"}


class XmlRefused(ValueError):
    """The bytes are not a well-formed, safe EPCIS XML document."""


def looks_like_xml(data: bytes) -> bool:
    return data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<")


def _split(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return "", tag


def _decimal(text: str) -> Decimal | str:
    try:
        d = Decimal(text.strip())
    except InvalidOperation:
        return text.strip()
    return d if d.is_finite() else text.strip()


class _Reader:
    def __init__(self, declared: list[tuple[str, str]]) -> None:
        self.context: dict[str, str] = {}
        self.prefix_of: dict[str, str] = {}
        for prefix, uri in declared:
            if not prefix or uri in _STANDARD_NS:
                continue
            self.context.setdefault(prefix, uri)
            # Several prefixes may name one namespace: keys use the first that is not a URI scheme.
            if uri not in self.prefix_of or self.prefix_of[uri] in _SCHEME_PREFIXES:
                self.prefix_of[uri] = prefix

    def name(self, tag: str) -> str:
        ns, local = _split(tag)
        if not ns or ns in _STANDARD_NS:
            return local
        if ns not in self.prefix_of:  # a default (unprefixed) namespace on an extension element
            prefix = f"ns{len(self.prefix_of) + 1}"
            while prefix in self.context:
                prefix += "_"
            self.prefix_of[ns] = prefix
            self.context[prefix] = ns
        return f"{self.prefix_of[ns]}:{local}"

    def is_extension(self, tag: str) -> bool:
        ns, _ = _split(tag)
        return bool(ns) and ns not in _STANDARD_NS

    # ---- user extensions ---------------------------------------------------------------------------------
    def extension(self, el: Element) -> Any:
        children = list(el)
        attrs = {self.name(k): v for k, v in el.attrib.items() if not k.startswith("{http://www.w3.org/2001/XMLSchema")}
        text = (el.text or "").strip()
        if not children and not attrs:
            return text
        out: dict[str, Any] = dict(attrs)
        for child in children:
            _add(out, self.name(child.tag), self.extension(child))
        if text:
            out["#text"] = text
        return out

    # ---- events ------------------------------------------------------------------------------------------
    def event(self, el: Element) -> dict[str, Any]:
        out: dict[str, Any] = {"type": _split(el.tag)[1]}
        self._fields(el, out)
        return out

    def _fields(self, el: Element, out: dict[str, Any]) -> None:
        for child in el:
            if not isinstance(child.tag, str):
                continue  # comments and processing instructions
            name = self.name(child.tag)
            if self.is_extension(child.tag):
                _add(out, name, self.extension(child))
            elif name in ("extension", "baseExtension"):
                self._fields(child, out)
            elif name in _EPC_LISTS:
                out[name] = [(e.text or "").strip() for e in child if _local(e) == "epc"]
            elif name in _QUANTITY_LISTS:
                out[name] = [self._quantity(q) for q in child if _local(q) == "quantityElement"]
            elif name in _TYPED_LISTS:
                member = _TYPED_LISTS[name]
                out[name] = [self._typed(t, member) for t in child if _local(t) == member]
            elif name in ("readPoint", "bizLocation"):
                place: dict[str, Any] = {}
                self._fields(child, place)
                out[name] = place
            elif name == "persistentDisposition":
                pd: dict[str, list[str]] = {}
                for d in child:
                    if _local(d) in ("set", "unset"):
                        pd.setdefault(_local(d), []).append(_word(_local(d), d.text))
                out[name] = pd
            elif name == "ilmd":
                ilmd: dict[str, Any] = {}
                self._fields(child, ilmd)
                out[name] = ilmd
            elif name == "sensorElementList":
                out[name] = [self._sensor(s) for s in child if _local(s) == "sensorElement"]
            elif name == "errorDeclaration":
                decl: dict[str, Any] = {}
                for d in child:
                    if not isinstance(d.tag, str):
                        continue
                    if self.is_extension(d.tag):
                        _add(decl, self.name(d.tag), self.extension(d))
                    elif _local(d) == "correctiveEventIDs":
                        decl["correctiveEventIDs"] = [
                            (c.text or "").strip() for c in d if _local(c) == "correctiveEventID"
                        ]
                    elif _local(d) == "extension":
                        for e in d:
                            _add(decl, self.name(e.tag), self.extension(e))
                    else:
                        decl[_local(d)] = _word(_local(d), d.text)
                out[name] = decl
            elif name == "certificationInfo":
                _add(out, name, (child.text or "").strip())
            elif name == "id":
                out["id"] = (child.text or "").strip()
            elif name in _SCALARS:
                out[name] = _word(name, child.text)
            else:  # never dropped, never guessed at: an element the standard does not have is refused
                raise XmlRefused(f"unknown element <{name}> in {_local(el)}: EPCIS 2.0 has no such field")

    def _quantity(self, el: Element) -> dict[str, Any]:
        q: dict[str, Any] = {}
        for f in el:
            if isinstance(f.tag, str):
                text = (f.text or "").strip()
                q[self.name(f.tag)] = _decimal(text) if _local(f) == "quantity" else text
        return q

    def _typed(self, el: Element, member: str) -> dict[str, Any]:
        t: dict[str, Any] = {}
        if el.get("type"):
            t["type"] = _word(member, el.get("type"))
        t[member] = (el.text or "").strip()
        return t

    def _attributes(self, el: Element) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in el.attrib.items():
            ns, local = _split(key)
            if ns:
                out[self.name(key)] = value.strip()
            elif local in _NUMERIC:
                out[local] = _decimal(value)
            elif local == "booleanValue":
                out[local] = value.strip().lower() == "true"
            else:
                out[local] = value.strip()
        for child in el:
            if isinstance(child.tag, str):
                _add(out, self.name(child.tag), self.extension(child))
        return out

    def _sensor(self, el: Element) -> dict[str, Any]:
        s: dict[str, Any] = {}
        for child in el:
            if not isinstance(child.tag, str):
                continue
            local = _local(child)
            if local == "sensorMetadata" and not self.is_extension(child.tag):
                s["sensorMetadata"] = self._attributes(child)
            elif local == "sensorReport" and not self.is_extension(child.tag):
                s.setdefault("sensorReport", []).append(self._attributes(child))
            elif local == "extension" and not self.is_extension(child.tag):
                for e in child:
                    _add(s, self.name(e.tag), self.extension(e))
            else:
                _add(s, self.name(child.tag), self.extension(child))
        return s


def _word(field: str, text: str | None) -> str:
    value = (text or "").strip()
    urn = _CBV_URNS.get(field)
    return value[len(urn) :] if urn and value.startswith(urn) and len(value) > len(urn) else value


def _local(el: Element) -> str:
    return _split(el.tag)[1] if isinstance(el.tag, str) else ""


def _add(out: dict[str, Any], key: str, value: Any) -> None:
    """Repeated XML elements become a JSON list."""
    if key not in out:
        out[key] = value
    elif isinstance(out[key], list):
        out[key].append(value)
    else:
        out[key] = [out[key], value]


def _event_elements(root: Element) -> list[Element]:
    events: list[Element] = []
    for holder in root.iter():
        if _local(holder) != "EventList":
            continue
        for child in holder:
            if not isinstance(child.tag, str):
                continue  # a comment
            if _local(child) in EVENT_TYPES:
                events.append(child)
            elif _local(child) == "extension":  # EPCIS 1.x put newer event types in an extension
                events.extend(e for e in child.iter() if _local(e) in EVENT_TYPES)
            else:  # never dropped: a document whose events cannot all be read is refused whole
                raise XmlRefused(
                    f"unknown event element <{_local(child)}> in EventList; EPCIS 2.0 has {', '.join(EVENT_TYPES)}"
                )
    return events


def _parse(data: bytes) -> tuple[Element, list[tuple[str, str]]]:
    """The root element and the namespace declarations, in one pass that stops at ``trace_depth_max``."""
    declared: list[tuple[str, str]] = []
    depth = 0
    # forbid_dtd: a document type declaration of any kind is refused (docs/trace.md), not only entities
    parser = safe_et.iterparse(io.BytesIO(data), events=("start", "end", "start-ns"), forbid_dtd=True)
    for kind, item in parser:
        if kind == "start":
            depth += 1
            if depth > limits.trace_depth_max:
                raise TooDeep("the XML document")
        elif kind == "end":
            depth -= 1
        else:
            declared.append(item)
    root = parser.root  # type: ignore[attr-defined]
    if root is None:  # pragma: no cover - a well-formed document has a root
        raise XmlRefused("the document has no root element")
    return root, declared


class XsdInvalid(XmlRefused):
    """The document is well-formed but does not satisfy GS1's XSD; ``problems`` say where and why."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"the document does not satisfy GS1's EPCIS 2.0 XSD: {problems[0]}")


def read(data: bytes, *, single: bool = False, validate: bool = False) -> dict[str, Any]:
    """The EPCIS (query) document in the XML ``data`` as a JSON-LD document.

    ``single``: a bare event (``POST /events``) is read as a one-event document; ``validate``: the bytes
    must satisfy GS1's XSD (``liangcao.trace.xsd``), checked after the safe parse. Raises XmlRefused
    (XsdInvalid), or TooDeep for elements nested deeper than ``trace_depth_max``.
    """
    try:
        root, declared = _parse(data)
    except DefusedXmlException as exc:
        raise XmlRefused(
            f"the XML uses a forbidden construct ({type(exc).__name__}): DTDs and entities are refused"
        ) from exc
    except safe_et.ParseError as exc:
        raise XmlRefused(f"the document is not well-formed XML: {exc}") from exc
    reader = _Reader(declared)
    kind = _local(root)
    if single and kind in EVENT_TYPES:
        if validate:
            _check_xsd(wrap_event(data), query=False)
        return {"type": "EPCISDocument", "schemaVersion": "2.0", "creationDate": "1970-01-01T00:00:00Z",
                "epcisBody": {"eventList": [reader.event(root)]}, "@context": _context(reader)}  # fmt: skip
    if validate:
        _check_xsd(data, query=kind == "EPCISQueryDocument")
    if kind not in ("EPCISDocument", "EPCISQueryDocument"):
        raise XmlRefused(f"the root element is {kind!r}, not EPCISDocument or EPCISQueryDocument")
    document: dict[str, Any] = {"type": kind}
    for attr in ("schemaVersion", "creationDate"):
        if root.get(attr) is not None:
            document[attr] = root.get(attr, "").strip()
    for child in root:
        if isinstance(child.tag, str) and reader.is_extension(child.tag):
            if _local(child) == "ignoreFields":
                document[reader.name(child.tag)] = [reader.name(f.tag) for f in child if isinstance(f.tag, str)]
            else:
                document[reader.name(child.tag)] = reader.extension(child)
    events = [reader.event(e) for e in _event_elements(root)]
    if kind == "EPCISDocument":
        document["epcisBody"] = {"eventList": events}
    else:
        query_name = next((q.text or "" for q in root.iter() if _local(q) == "queryName"), "SimpleEventQuery")
        results: dict[str, Any] = {"queryName": query_name.strip(), "resultsBody": {"eventList": events}}
        subscription = next((q.text or "" for q in root.iter() if _local(q) == "subscriptionID"), "")
        if subscription.strip():
            results["subscriptionID"] = subscription.strip()
        document["epcisBody"] = {"queryResults": results}
    document["@context"] = _context(reader)
    return document


def _context(reader: _Reader) -> list[Any]:
    return [CONTEXT_URL, *({k: v} for k, v in reader.context.items())] if reader.context else [CONTEXT_URL]


def _check_xsd(data: bytes, *, query: bool) -> None:
    problems = xsd.problems(data, query=query)
    if problems:
        raise XsdInvalid(problems)


def read_poll(data: bytes) -> tuple[str, list[tuple[str, str]]]:
    """The query name and parameters of an EPCIS XML ``Poll`` (an ``EPCISQueryDocument`` asking a query),
    checked against GS1's query XSD. Raises XmlRefused."""
    try:
        root, _ = _parse(data)
    except DefusedXmlException as exc:
        raise XmlRefused("the XML uses a forbidden construct: DTDs and entities are refused") from exc
    except safe_et.ParseError as exc:
        raise XmlRefused(f"the document is not well-formed XML: {exc}") from exc
    _check_xsd(data, query=True)
    poll = next((e for e in root.iter() if _local(e) == "Poll"), None)
    if poll is None:
        raise XmlRefused("the query document holds no Poll")
    name = next(((e.text or "").strip() for e in poll if _local(e) == "queryName"), "")
    params: list[tuple[str, str]] = []
    for param in (e for e in poll.iter() if _local(e) == "param"):
        pname = next(((e.text or "").strip() for e in param if _local(e) == "name"), "")
        value = next((e for e in param if _local(e) == "value"), None)
        if value is None:
            continue
        strings = [(s.text or "").strip() for s in value if _local(s) == "string"]
        for v in strings or [(value.text or "").strip()]:
            params.append((pname, v))
    return name, params
