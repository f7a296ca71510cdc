"""EPCIS 2.0 queries over the events the ``trace`` contract anchored (read from committed state).

Theory of operation
-------------------
:func:`parse` turns the query parameters of the EPCIS 2.0 standard (section 8.2.7.1, and GS1's REST binding:
``openapi.yaml`` and ``query-schema.json``) into a :class:`Query`: the identifier, place and event-id lists
that choose an index, time bounds, and one predicate per other parameter. :func:`run` picks the most selective
index the ledger keeps (``liangcao.apps.trace.anchor``): declared event ids, then identifiers (``MATCH_*``),
then places (``EQ_readPoint``/``EQ_bizLocation``), else event time; scans it in (event time, hash) order,
ascending or descending, between ``GE_eventTime`` and ``LT_eventTime``, and keeps each candidate every
predicate accepts. Within one parameter the values are alternatives (OR): the binding separates them with
``|`` (``EQ_bizStep=shipping|receiving``), and a repeated parameter adds more; parameters combine with AND.

Pages are stateless: ``nextPageToken`` is the position after the last event scanned, so a page costs the same
wherever it starts, and no page reads more than ``query_scan_max`` index entries (a page may then be short,
with a token to go on). Ordering by anything but event time (``orderBy=recordTime`` or an extension field)
sorts the whole result, so it reads at most ``query_scan_max`` candidates and refuses a larger one
(``QueryTooLargeException``, 413), as ``maxEventCount`` does when more events match.

Parameters that name fields (``EQ_ILMD_cbvmda:lotNumber``, ``GE_example:temperature``, ``EXISTS_INNER_…``)
compare the field as each event's own ``@context`` expands it with the query's: ``ext:field`` matches
``{namespace}field``, so a query and a document may use different prefixes for one namespace. An unknown
parameter or a malformed value is refused with 400 naming it (``QueryParameterException``).
"""

from __future__ import annotations

import base64
import datetime as dt
import heapq
import itertools
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

import msgspec

from liangcao import limits
from liangcao.codes import Code
from liangcao.errors import LiangcaoError
from liangcao.trace import facts as fx
from liangcao.trace.hashing import _TIME, Hasher, bind

PREFIX = "trace/"
STANDARD_CONTEXT = "https://ref.gs1.org/standards/epcis/epcis-context.jsonld"
_decimal = msgspec.json.Decoder(float_hook=Decimal)
_END = "\U0010ffff"
SEPARATOR = "|"  # the binding's pipeDelimited lists

# Which roles each identifier parameter matches.
_MATCH_ROLES = {
    "MATCH_epc": {fx.EPC, fx.CHILD},
    "MATCH_parentID": {fx.PARENT},
    "MATCH_inputEPC": {fx.INPUT},
    "MATCH_outputEPC": {fx.OUTPUT},
    "MATCH_anyEPC": {fx.EPC, fx.CHILD, fx.PARENT, fx.INPUT, fx.OUTPUT},
    "MATCH_epcClass": {fx.QTY, fx.CHILD_QTY},
    "MATCH_inputEPCClass": {fx.INPUT_QTY},
    "MATCH_outputEPCClass": {fx.OUTPUT_QTY},
    "MATCH_anyEPCClass": {fx.QTY, fx.CHILD_QTY, fx.INPUT_QTY, fx.OUTPUT_QTY},
}
ACTIONS = ("ADD", "OBSERVE", "DELETE")
_EVENT_TIME_NAMES = ("eventTime", "https://ref.gs1.org/epcis/eventTime", "epcis:eventTime")
_RECORD_TIME_NAMES = ("recordTime", "https://ref.gs1.org/epcis/recordTime", "epcis:recordTime")
# Sensor fields (EPCIS 2.0 sections 7.3.8 and 8.2.7.1): where they live and how they compare.
_METADATA_URIS = ("deviceID", "dataProcessingMethod", "bizRules")
_REPORT_URIS = ("type", "microorganism", "chemicalSubstance", "uriValue", "deviceID", "dataProcessingMethod")
_REPORT_NUMBERS = ("value", "minValue", "maxValue", "meanValue", "sDev", "percValue")
_SENSOR_TIMES = {"time": "time", "startTime": "startTime", "endTime": "endTime"}
_TIME_PARAMS = {"GE_eventTime", "LT_eventTime", "GE_recordTime", "LT_recordTime"}
_CMP = ("EQ", "GT", "GE", "LT", "LE")
_FIELD = r"[A-Za-z][A-Za-z0-9_.-]*:[A-Za-z0-9_.-]+"  # prefix:localName (ASCII only: no Unicode classes)
# Families of parameters named after a field (query-schema.json's patternProperties), by where the field is.
_FIELD_FAMILY = re.compile(
    rf"^(EQ|GT|GE|LT|LE|EXISTS)_(INNER_)?(ILMD_|ERROR_DECLARATION_|SENSORELEMENT_|SENSORMETADATA_|SENSORREPORT_|"
    rf"readPoint_|bizLocation_)?({_FIELD})$",
    re.ASCII,
)
_UOM_FAMILY = re.compile(
    r"^(EQ|GT|GE|LT|LE)_(value|minValue|maxValue|meanValue|sDev|percValue|quantity)_([A-Z0-9]{2,4})$", re.ASCII
)
_TYPED_FAMILY = re.compile(r"^EQ_(bizTransaction|source|destination)_([A-Za-z][A-Za-z0-9_]*)$", re.ASCII)
_ATTR_FAMILY = re.compile(rf"^EQ_ATTR_({_FIELD}|[A-Za-z][A-Za-z0-9]*)_(.+)$", re.ASCII)
_HASATTR_FAMILY = re.compile(rf"^HASATTR_({_FIELD}|[A-Za-z][A-Za-z0-9]*)$", re.ASCII)


class QueryError(LiangcaoError):
    """A query parameter that is unknown or malformed (EPCIS ``QueryParameterException``), or a result too large
    (``QueryTooLargeException``: code ``TOO_LARGE``)."""


class Index(Protocol):
    def get(self, key: str) -> bytes | None: ...

    def scan(self, lo: str, hi: str) -> Iterator[tuple[str, bytes]]: ...


@dataclass
class Candidate:
    """One event under test: its record, decoded text, facts, and (lazily) how its context expands keys."""

    record: dict[str, Any]
    event: dict[str, Any]
    facts: fx.Facts
    index: Index | None = None
    _hasher: Hasher | None = None

    def master(self, ident: str) -> Mapping[str, Any] | None:
        return master_data(self.index, ident) if self.index is not None else None

    def key(self, name: str) -> str:
        if self._hasher is None:
            context = _decimal.decode(self.record["context"]) if self.record.get("context") else None
            self._hasher = Hasher(context).within(self.event.get("@context"))
        return self._hasher.key(name)


Predicate = Callable[[Candidate], bool]
#: Master data the ledger knows (``trace/m/<id>``): the vocabulary element's attributes and children.
MasterData = Callable[[str], Mapping[str, Any] | None]


def master_data(index: Index, ident: str) -> dict[str, Any] | None:
    """The master data the ledger holds for an identifier (``trace/m/<index form>``): its vocabulary type, the
    organisation that recorded it, its attributes and children; None if none."""
    raw = index.get(f"{PREFIX}m/{fx.index_form(ident)}")
    if raw is None:
        return None
    record = msgspec.json.decode(raw)
    attributes = _decimal.decode(record["attributes"]) if record.get("attributes") else {}
    return {**record, "attributes": attributes if isinstance(attributes, dict) else {}}


@dataclass
class Query:
    lists: dict[str, list[str]] = field(default_factory=dict)
    ge_time: int = 0
    lt_time: int = 10_000_000_000_000
    ge_record: int | None = None
    lt_record: int | None = None
    per_page: int = 30
    count_limit: int | None = None
    max_count: int | None = None
    order_by: str = "eventTime"
    desc: bool = False
    predicates: list[Predicate] = field(default_factory=list)
    within_ids: dict[str, list[str]] = field(default_factory=dict)  # WD_readPoint / WD_bizLocation, as given
    within: dict[str, list[str]] = field(default_factory=dict)  # and with their descendants (index forms)
    after: tuple[str, str] | None = None  # (time13, hex) of the last event scanned by the previous page
    offset: int = 0  # events skipped (results sorted by another field than event time)
    returned: int = 0  # events returned by earlier pages (for eventCountLimit)
    context: dict[str, str] = field(default_factory=dict)  # the query's own prefixes (a named query's @context)


# ---- values -------------------------------------------------------------------------------------------------
def _refuse(name: str, why: str) -> QueryError:
    return QueryError(Code.INVALID_ARGUMENT, f"{name}: {why}")


def values(raw: str) -> list[str]:
    """The alternatives of one parameter value (``a|b``), blanks dropped."""
    return [v.strip() for v in raw.split(SEPARATOR) if v.strip()]


def _time_param(name: str, value: str) -> int:
    try:
        return fx.time_ms(value)
    except fx.BadEvent as exc:
        raise _refuse(name, str(exc)) from exc


def _number(name: str, value: str) -> Decimal:
    try:
        d = Decimal(value.strip())
    except InvalidOperation:
        d = Decimal("NaN")
    if not d.is_finite():
        raise _refuse(name, f"{value!r} is not a number")
    return d


def _operand(name: str, value: str) -> tuple[str, Any]:
    """A comparison's operand: a timestamp (compared as instants) or a number."""
    if _TIME.match(value.strip()):
        return "time", _time_param(name, value)
    return "number", _number(name, value)


def _comparable(value: Any, kind: str) -> Any:
    """``value`` (from an event) as the operand's kind, or None if it is not one."""
    if isinstance(value, Mapping):
        value = value.get("#text")
    if isinstance(value, bool) or value is None:
        return None
    try:
        if kind == "time":
            return fx.time_ms(value) if isinstance(value, str) else None
        d = value if isinstance(value, Decimal) else Decimal(str(value).strip())
        return d if d.is_finite() else None
    except (fx.BadEvent, InvalidOperation):
        return None


def _text(value: Any) -> str | None:
    if isinstance(value, Mapping):
        value = value.get("#text")
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None or isinstance(value, list):
        return None
    return str(value).strip()


def _equal(value: Any, wanted: list[str]) -> bool:
    """An event value against ``EQ_`` alternatives: numbers as numbers, times as instants, else text."""
    text = _text(value)
    if text is None:
        return False
    for w in wanted:
        if text == w:
            return True
        for kind in ("number", "time"):
            a, b = _comparable(text, kind), _comparable(w, kind)
            if a is not None and b is not None and a == b:
                return True
    return False


def _compare(op: str, a: Any, b: Any) -> bool:
    return bool({"GT": a > b, "GE": a >= b, "LT": a < b, "LE": a <= b, "EQ": a == b}[op])


def _vocab(words: list[str], prefixes: tuple[str, ...]) -> set[str]:
    return {fx.bare(w, prefixes) for w in words}


# ---- walking an event -----------------------------------------------------------------------------------------
def _members(holder: Any) -> Iterator[tuple[str, Any]]:
    """(key, value) of an object, a list member's each; nothing for a scalar."""
    items = holder if isinstance(holder, list) else [holder]
    for item in items:
        if isinstance(item, Mapping):
            yield from ((k, v) for k, v in item.items() if isinstance(k, str))


def _nested(holder: Any) -> Iterator[tuple[str, Any]]:
    """(key, value) of every object member below the top level of ``holder`` (a loop, not a recursion)."""
    stack = [v for _, v in _members(holder)]
    while stack:
        item = stack.pop()
        for k, v in _members(item):
            yield k, v
            stack.append(v)


def _sensor_parts(event: Mapping[str, Any], which: str) -> list[Any]:
    out: list[Any] = []
    for element in event.get("sensorElementList") or []:
        if not isinstance(element, Mapping):
            continue
        if which == "element":
            out.append(element)
        elif which == "metadata" and isinstance(element.get("sensorMetadata"), Mapping):
            out.append(element["sensorMetadata"])
        elif which == "report":
            out.extend(r for r in element.get("sensorReport") or [] if isinstance(r, Mapping))
    return out


def _holders(c: Candidate, where: str) -> list[Any]:
    """The objects whose extension fields a field parameter's family names."""
    e = c.event
    if where == "":
        return [{k: v for k, v in e.items() if ":" in k and not k.startswith("@")}]
    if where == "ILMD_":
        return [e.get("ilmd")]
    if where == "ERROR_DECLARATION_":
        return [e.get("errorDeclaration")]
    if where in ("readPoint_", "bizLocation_"):
        return [e.get(where[:-1])]
    return _sensor_parts(e, {"SENSORELEMENT_": "element", "SENSORMETADATA_": "metadata"}.get(where, "report"))


def _field_values(c: Candidate, where: str, inner: bool, name: str, qkey: str | None) -> list[Any]:
    found = []
    for holder in _holders(c, where):
        members = _nested(holder) if inner else _members(holder)
        for k, v in members:
            if ":" in k and (c.key(k) == (qkey or c.key(name))):
                found.append(v)
    return found


# ---- parsing --------------------------------------------------------------------------------------------------
def _int_param(name: str, value: str, most: int) -> int:
    if not re.fullmatch(r"[0-9]{1,12}", value.strip(), re.ASCII) or not 1 <= int(value) <= most:
        raise _refuse(name, f"must be a positive integer of at most {most}")
    return int(value)


def _bool_param(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v not in ("true", "false", "1", "0", ""):
        raise _refuse(name, "must be true or false")
    return v in ("true", "1", "")


def parse(params: Sequence[tuple[str, str]], context: Any = None, masterdata: MasterData | None = None) -> Query:
    """A query from its (name, value) parameters (``|``-separated alternatives; repeated names add more).

    ``context``: the query's own ``@context`` (a named query's), naming the prefixes its field parameters use;
    ``masterdata``: the vocabulary the ledger knows, for ``WD_``, ``HASATTR_`` and ``EQ_ATTR_``.
    """
    q = Query(context=bind({}, context))
    have: set[str] = set()
    for name, value in params:
        _one(q, name, value, masterdata)
        have.add(name)
    for t in q.lists.get("eventType", []):
        if t not in fx.EVENT_TYPES:
            raise _refuse("eventType", f"unknown eventType {t!r}; EPCIS 2.0 has {', '.join(fx.EVENT_TYPES)}")
    for a in q.lists.get("EQ_action", []):
        if a not in ACTIONS:
            raise _refuse("EQ_action", f"{a!r} is not ADD, OBSERVE or DELETE")
    if "eventCountLimit" in have and "maxEventCount" in have:
        raise _refuse("eventCountLimit", "eventCountLimit and maxEventCount are mutually exclusive")
    if "eventCountLimit" in have and "orderBy" not in have:
        raise _refuse("eventCountLimit", "eventCountLimit needs orderBy (which events come first)")
    if "orderBy" in have and "orderDirection" not in have:
        q.desc = True  # the standard's default once orderBy is given
    return q


def _one(q: Query, name: str, value: str, masterdata: MasterData | None) -> None:
    lists = q.lists
    if name in _MATCH_ROLES or name in ("eventType", "EQ_bizStep", "EQ_disposition", "EQ_readPoint",
                                         "EQ_bizLocation", "EQ_eventID", "EQ_action"):  # fmt: skip
        lists.setdefault(name, []).extend(values(value))
    elif name in ("WD_readPoint", "WD_bizLocation"):
        q.within_ids.setdefault(name[3:], []).extend(values(value))
    elif name == "GE_eventTime":
        q.ge_time = max(q.ge_time, _time_param(name, value))
    elif name == "LT_eventTime":
        q.lt_time = min(q.lt_time, _time_param(name, value))
    elif name == "GE_recordTime":
        q.ge_record = _time_param(name, value)
    elif name == "LT_recordTime":
        q.lt_record = _time_param(name, value)
    elif name == "perPage":
        n = _int_param(name, value, limits.query_per_page_max * 1000)
        if n > limits.query_per_page_max:
            raise QueryError(Code.LIMIT_EXCEEDED, f"perPage is at most query_per_page_max={limits.query_per_page_max}")
        q.per_page = n
    elif name == "eventCountLimit":
        q.count_limit = _int_param(name, value, 10**12)
    elif name == "maxEventCount":
        q.max_count = _int_param(name, value, 10**12)
    elif name == "nextPageToken":
        q.after, q.offset, q.returned = _read_token(value)
    elif name == "orderBy":
        v = value.strip()
        if v in _EVENT_TIME_NAMES:
            q.order_by = "eventTime"
        elif v in _RECORD_TIME_NAMES:
            q.order_by = "recordTime"
        elif re.fullmatch(_FIELD, v, re.ASCII):
            q.order_by = v
        else:
            raise _refuse(name, "orders by eventTime, recordTime or an extension field (prefix:name)")
    elif name == "orderDirection":
        if value.strip() not in ("ASC", "DESC"):
            raise _refuse(name, "must be ASC or DESC")
        q.desc = value.strip() == "DESC"
    else:
        q.predicates.append(_predicate(q, name, value, masterdata))


def _predicate(q: Query, name: str, value: str, masterdata: MasterData | None) -> Predicate:
    vals = values(value)
    if name in ("EQ_persistentDisposition_set", "EQ_persistentDisposition_unset"):
        which, wanted = name.rsplit("_", 1)[1], _vocab(vals, fx._DISP_PREFIXES)

        def persistent(c: Candidate) -> bool:
            pd = c.event.get("persistentDisposition")
            got = pd.get(which) if isinstance(pd, Mapping) else None
            return any(fx.bare(d, fx._DISP_PREFIXES) in wanted for d in got or [])

        return persistent
    if name == "EQ_requestID":  # the request that captured the event: on a ledger, its capture transaction
        return lambda c: c.record.get("tx") in vals
    if name == "EQ_transformationID":
        return lambda c: _text(c.event.get("transformationID")) in vals
    if name in ("EQ_quantity", "GT_quantity", "GE_quantity", "LT_quantity", "LE_quantity"):
        return _quantity(name[:2], name, value, None)
    if name == "EXISTS_errorDeclaration":
        want = _bool_param(name, value)
        return lambda c: (isinstance(c.event.get("errorDeclaration"), Mapping)) == want or not want
    if name in ("GE_errorDeclarationTime", "LT_errorDeclarationTime", "GE_errorDeclaration_Time",
                "LT_errorDeclaration_Time"):  # fmt: skip
        bound, op = _time_param(name, value), name[:2]

        def declared(c: Candidate) -> bool:
            decl = c.event.get("errorDeclaration")
            when = _comparable(decl.get("declarationTime"), "time") if isinstance(decl, Mapping) else None
            return when is not None and _compare(op, when, bound)

        return declared
    if name == "EQ_errorReason":
        wanted = _vocab(vals, ("https://ref.gs1.org/cbv/ER-", "urn:epcglobal:cbv:er:", "cbv:ER-"))

        def reason(c: Candidate) -> bool:
            decl = c.event.get("errorDeclaration")
            got = decl.get("reason") if isinstance(decl, Mapping) else None
            return isinstance(got, str) and fx.bare(got, ("https://ref.gs1.org/cbv/ER-", "urn:epcglobal:cbv:er:",
                                                           "cbv:ER-")) in wanted  # fmt: skip

        return reason
    if name == "EQ_correctiveEventID":

        def corrective(c: Candidate) -> bool:
            decl = c.event.get("errorDeclaration")
            ids = decl.get("correctiveEventIDs") if isinstance(decl, Mapping) else None
            return any(i in vals for i in ids or [])

        return corrective
    if name == "EXISTS_sensorElementList":
        want = _bool_param(name, value)
        return lambda c: bool(c.event.get("sensorElementList")) == want or not want
    if name in ("GE_time", "LT_time", "GE_startTime", "LT_startTime", "GE_endTime", "LT_endTime"):
        bound, op, fname = _time_param(name, value), name[:2], name[3:]

        def sensor_time(c: Candidate) -> bool:
            for part in _sensor_parts(c.event, "metadata") + _sensor_parts(c.event, "report"):
                when = _comparable(part.get(fname), "time")
                if when is not None and _compare(op, when, bound):
                    return True
            return False

        return sensor_time
    if name in ("EQ_deviceID", "EQ_dataProcessingMethod", "EQ_bizRules", "EQ_microorganism", "EQ_chemicalSubstance",
                "EQ_stringValue", "EQ_hexBinaryValue", "EQ_uriValue", "EQ_type", "EQ_uom", "EQ_exception",
                "EQ_component", "EQ_coordinateReferenceSystem"):  # fmt: skip
        fname = name[3:]
        wanted_set = set(vals) | {_expand_gs1(v) for v in vals} if fname in ("type", "exception") else set(vals)
        if fname == "hexBinaryValue":
            wanted_set = {v.lower() for v in vals}

        def sensor_field(c: Candidate) -> bool:
            for part in _sensor_parts(c.event, "metadata") + _sensor_parts(c.event, "report"):
                got = _text(part.get(fname))
                if got is None:
                    continue
                if fname == "hexBinaryValue":
                    got = got.lower()
                if got in wanted_set or (fname in ("type", "exception") and _expand_gs1(got) in wanted_set):
                    return True
            return False

        return sensor_field
    if name == "EQ_booleanValue":
        want = _bool_param(name, value)
        return lambda c: any(r.get("booleanValue") is want for r in _sensor_parts(c.event, "report"))
    if name in ("GE_percRank", "LT_percRank", "GT_percRank", "LE_percRank", "EQ_percRank") or (
        name[:3] in ("EQ_", "GT_", "GE_", "LT_", "LE_") and name[3:] in _REPORT_NUMBERS
    ):
        return _sensor_number(name[:2], name[3:], name, value, None)
    if m := _UOM_FAMILY.match(name):
        op, fname, uom = m.groups()
        if fname == "quantity":
            return _quantity(op, name, value, uom)
        return _sensor_number(op, fname, name, value, uom)
    if m := _TYPED_FAMILY.match(name):
        member, kind = m.groups()
        return _typed(member, kind, vals)
    if m := _FIELD_FAMILY.match(name):
        op, inner, where, fname = m.groups()
        return _field(q, op, bool(inner), where or "", fname, name, value)
    if m := _HASATTR_FAMILY.match(name):
        return _master(m.group(1), None, vals, masterdata)
    if m := _ATTR_FAMILY.match(name):
        return _master(m.group(1), m.group(2), vals, masterdata)
    raise _refuse(name, "unknown query parameter")


def _expand_gs1(text: str) -> str:
    return (
        "https://gs1.org/voc/" + text[4:]
        if text.startswith("gs1:")
        else (text if ":" in text else "https://gs1.org/voc/" + text)
    )


def _quantity(op: str, name: str, value: str, uom: str | None) -> Predicate:
    bound = _number(name, value) if op != "EQ" else None
    wanted = [_number(name, v) for v in values(value)] if op == "EQ" else []

    def quantity(c: Candidate) -> bool:
        for list_name in ("quantityList", "childQuantityList", "inputQuantityList", "outputQuantityList"):
            for qe in c.event.get(list_name) or []:
                if not isinstance(qe, Mapping) or (uom is not None and qe.get("uom") != uom):
                    continue
                got = _comparable(qe.get("quantity"), "number")
                if got is None:
                    continue
                if (op == "EQ" and got in wanted) or (op != "EQ" and _compare(op, got, bound)):
                    return True
        return False

    return quantity


def _sensor_number(op: str, fname: str, name: str, value: str, uom: str | None) -> Predicate:
    wanted = [_number(name, v) for v in values(value)] if op == "EQ" else []
    bound = _number(name, value) if op != "EQ" else None

    def sensor_number(c: Candidate) -> bool:
        for r in _sensor_parts(c.event, "report"):
            if uom is not None and r.get("uom") != uom:
                continue
            got = _comparable(r.get(fname), "number")
            if got is not None and ((op == "EQ" and got in wanted) or (op != "EQ" and _compare(op, got, bound))):
                return True
        return False

    return sensor_number


_TYPE_PREFIXES = {
    "bizTransaction": ("https://ref.gs1.org/cbv/BTT-", "urn:epcglobal:cbv:btt:", "cbv:BTT-"),
    "source": ("https://ref.gs1.org/cbv/SDT-", "urn:epcglobal:cbv:sdt:", "cbv:SDT-"),
    "destination": ("https://ref.gs1.org/cbv/SDT-", "urn:epcglobal:cbv:sdt:", "cbv:SDT-"),
}


def _typed(member: str, kind: str, vals: list[str]) -> Predicate:
    """``EQ_bizTransaction_po``, ``EQ_source_location``…: a member of that type with one of the values."""
    prefixes = _TYPE_PREFIXES[member]
    list_name = {"bizTransaction": "bizTransactionList", "source": "sourceList", "destination": "destinationList"}[
        member
    ]
    wanted = {fx.index_form(v) for v in vals} | set(vals)

    def typed(c: Candidate) -> bool:
        for t in c.event.get(list_name) or []:
            if not isinstance(t, Mapping) or fx.bare(t.get("type", ""), prefixes) != kind:
                continue
            got = t.get(member)
            if isinstance(got, str) and (got in wanted or fx.index_form(got) in wanted):
                return True
        return False

    return typed


def _field(q: Query, op: str, inner: bool, where: str, fname: str, name: str, value: str) -> Predicate:
    prefix, _, local = fname.partition(":")
    qkey = "{" + q.context[prefix] + "}" + local if prefix in q.context else None
    if op == "EXISTS":
        want = _bool_param(name, value)
        return lambda c: bool(_field_values(c, where, inner, fname, qkey)) == want or not want
    if op == "EQ":
        vals = values(value)
        return lambda c: any(_equal(v, vals) for v in _field_values(c, where, inner, fname, qkey))
    kind, bound = _operand(name, value)

    def compare(c: Candidate) -> bool:
        for v in _field_values(c, where, inner, fname, qkey):
            got = _comparable(v, kind)
            if got is not None and _compare(op, got, bound):
                return True
        return False

    return compare


# ---- master data ----------------------------------------------------------------------------------------------
_MASTER_FIELDS = {"readPoint": "readPoint", "bizLocation": "bizLocation", "epc": "epcList", "epcClass": "quantityList"}


def _expand_within(index: Index, q: Query) -> None:
    """``WD_`` places with their descendants by the master data the ledger holds (read once per query)."""
    if q.within_ids and not q.within:
        q.within = {w: _descendants(ids, lambda i: master_data(index, i)) for w, ids in q.within_ids.items()}


def _descendants(ids: list[str], masterdata: MasterData | None) -> list[str]:
    """``ids`` and every descendant the master data names (its ``children``, transitively), index forms."""
    out: list[str] = []
    seen: set[str] = set()
    stack = list(ids)
    while stack and len(seen) < limits.query_per_page_max * 10:
        ident = stack.pop()
        form = fx.index_form(ident)
        if form in seen:
            continue
        seen.add(form)
        out.append(form)
        entry = masterdata(ident) if masterdata is not None else None
        stack.extend(str(ch) for ch in (entry or {}).get("children") or [] if isinstance(ch, str))
    return out


def _master(field_name: str, attr: str | None, vals: list[str], masterdata: MasterData | None) -> Predicate:
    """``HASATTR_bizLocation=attr``: the field's vocabulary element has the attribute; ``EQ_ATTR_bizLocation_attr=v``:
    and its value is one of ``vals``."""
    if field_name not in _MASTER_FIELDS and ":" not in field_name:
        raise _refuse(f"EQ_ATTR_{field_name}", "names readPoint, bizLocation, epc, epcClass or an extension field")

    def ids(c: Candidate) -> list[str]:
        if ":" in field_name:  # a vocabulary-valued extension field
            return [t for v in _field_values(c, "", False, field_name, None) if (t := _text(v))]
        v = c.event.get(_MASTER_FIELDS[field_name])
        if field_name in ("readPoint", "bizLocation"):
            v = v.get("id") if isinstance(v, Mapping) else v
            return [v] if isinstance(v, str) else []
        if field_name == "epcClass":
            return [str(qe.get("epcClass")) for qe in v or [] if isinstance(qe, Mapping)]
        return [e for e in v or [] if isinstance(e, str)]

    def matches(c: Candidate) -> bool:
        for ident in ids(c):
            entry = masterdata(ident) if masterdata is not None else c.master(ident)
            attributes = (entry or {}).get("attributes") or {}
            if attr is None and any(a in attributes for a in vals):
                return True
            if attr is not None and attr in attributes and _equal(attributes[attr], vals):
                return True
        return False

    return matches


# ---- tokens ---------------------------------------------------------------------------------------------------
def _token(after: tuple[str, str] | None, offset: int, returned: int) -> str:
    raw = f"t.{after[0]}.{after[1]}.{returned}" if after is not None else f"o.{offset}.{returned}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _read_token(token: str) -> tuple[tuple[str, str] | None, int, int]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        parts = raw.split(".")
        if parts[0] == "t" and len(parts) == 4:
            _, time13, hx, returned = parts
            if re.fullmatch(r"[0-9]{13}", time13) and re.fullmatch(r"[0-9a-f]{64}", hx) and returned.isdecimal():
                return (time13, hx), 0, int(returned)
        if parts[0] == "o" and len(parts) == 3 and parts[1].isdecimal() and parts[2].isdecimal():
            return None, int(parts[1]), int(parts[2])
        raise ValueError(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise QueryError(Code.INVALID_ARGUMENT, "nextPageToken is not one this node issued") from exc


# ---- candidates -----------------------------------------------------------------------------------------------
def _rscan(index: Index, lo: str, hi: str) -> Iterator[tuple[str, bytes]]:
    """``index.scan`` in descending key order: the index's own ``rscan`` (a node's trace view), SQL on a store,
    else the (small, in-memory) slice reversed."""
    rscan = getattr(index, "rscan", None)
    if rscan is not None:
        return rscan(lo, hi)  # type: ignore[no-any-return]
    db = getattr(index, "db", None)
    if db is not None:
        cur = db.execute(
            "SELECT key, value FROM state WHERE key >= ? AND key < ? AND value IS NOT NULL ORDER BY key DESC",
            (lo.encode(), hi.encode()),
        )
        return ((bytes(k).decode(), bytes(v)) for k, v in cur)
    return reversed(list(index.scan(lo, hi)))


def _past(q: Query, pos: tuple[str, str]) -> bool:
    """Whether ``pos`` comes after the previous page's last position in the query's direction."""
    if q.after is None:
        return True
    return pos < q.after if q.desc else pos > q.after


def _ranged(index: Index, prefix: str, q: Query, exact: bool) -> Iterator[tuple[str, str, str]]:
    """(time13, hex, value) of index keys ``<prefix><ident> <time13> <hex>`` within the query's times."""
    if exact:
        lo_t, hi_t = f"{q.ge_time:013d}", fx.time_key(q.lt_time)
        if q.after is not None and not q.desc:
            lo_t = max(lo_t, q.after[0])
        if q.after is not None and q.desc:
            hi_t = min(hi_t, q.after[0] + "~")
        lo, hi = f"{prefix}{lo_t} ", prefix + hi_t
        rows = _rscan(index, lo, hi) if q.desc else index.scan(lo, hi)
        for key, value in rows:
            time13, hx = key[len(prefix) :].split(" ")
            if _past(q, (time13, hx)):
                yield time13, hx, msgspec.json.decode(value)
        return
    # a pattern: every identifier under the prefix, each in time order, merged into one time order
    for key, value in index.scan(prefix, prefix + _END):
        _ident, time13, hx = key[len(prefix) :].rsplit(" ", 2)
        if q.ge_time <= int(time13) < q.lt_time and _past(q, (time13, hx)):
            yield time13, hx, msgspec.json.decode(value)


def _id_prefix(value: str) -> tuple[str, bool]:
    pattern = fx.pattern_prefix(value)
    return (pattern, False) if pattern is not None else (fx.index_form(value) + " ", True)


def resolve(index: Index, ident: str) -> str | None:
    """The hex of the event an id names: its CBV hash id, else an ``eventID`` it declared (``trace/d/``).

    A declared id may itself be a ``ni:///sha-256;…`` URI (most documents declare their own hash id, computed
    by some other generator): so a hash-shaped id that is not an anchored event's is looked up as declared.
    """
    hx = ident[len("ni:///sha-256;") :][:64] if ident.startswith("ni:///sha-256;") else ""
    raw = index.get(f"{PREFIX}e/{hx}") if re.fullmatch(r"[0-9a-f]{64}", hx, re.ASCII) else None
    if raw is not None and msgspec.json.decode(raw).get("id") == ident:
        return hx
    alias = index.get(f"{PREFIX}d/{ident}")
    declared = msgspec.json.decode(alias) if alias is not None else None
    if isinstance(declared, str) and declared:
        return declared
    return hx if raw is not None else None


def _candidates(index: Index, q: Query) -> Iterator[tuple[str, str]]:
    streams: list[Iterator[tuple[str, str]]] = []
    matches = [(name, v) for name in _MATCH_ROLES for v in q.lists.get(name, [])]
    if "EQ_eventID" in q.lists:
        found = []
        for ident in q.lists["EQ_eventID"]:
            hx = resolve(index, ident)
            raw = index.get(f"{PREFIX}e/{hx}") if hx else None
            if raw is not None:
                rec = msgspec.json.decode(raw)
                found.append((f"{rec['time_ms']:013d}", str(hx)))
        streams.append(iter(sorted((t for t in set(found) if _past(q, t)), reverse=q.desc)))
    elif matches:
        name0 = matches[0][0]  # the first MATCH_ parameter drives the scan; the others filter
        for value in q.lists[name0]:
            prefix, exact = _id_prefix(value)
            roles = _MATCH_ROLES[name0]
            stream = (
                (t, h) for t, h, r in _ranged(index, f"{PREFIX}i/{prefix}", q, exact) if roles & set(r.split(","))
            )
            streams.append(
                stream if exact else iter(sorted(set(itertools.islice(stream, limits.query_scan_max)), reverse=q.desc))
            )
    elif "EQ_readPoint" in q.lists or "EQ_bizLocation" in q.lists or q.within:
        if "EQ_readPoint" in q.lists or "EQ_bizLocation" in q.lists:
            which = "EQ_readPoint" if "EQ_readPoint" in q.lists else "EQ_bizLocation"
            places = [fx.index_form(v) for v in q.lists[which]]
        else:
            places = next(iter(q.within.values()))
        for place in places:
            streams.append((t, h) for t, h, _ in _ranged(index, f"{PREFIX}l/{place} ", q, True))
    else:
        streams.append((t, h) for t, h, _ in _ranged(index, f"{PREFIX}t/", q, True))
    last = None
    for item in heapq.merge(*streams, reverse=q.desc):
        if item != last:
            yield item
            last = item


# ---- filters --------------------------------------------------------------------------------------------------
def _matches(q: Query, c: Candidate) -> bool:
    lists, f, record, event = q.lists, c.facts, c.record, c.event
    if "eventType" in lists and f.type not in lists["eventType"]:
        return False
    if "EQ_action" in lists and f.action not in lists["EQ_action"]:
        return False
    if "EQ_bizStep" in lists and f.biz_step not in _vocab(lists["EQ_bizStep"], fx._STEP_PREFIXES):
        return False
    if "EQ_disposition" in lists and f.disposition not in _vocab(lists["EQ_disposition"], fx._DISP_PREFIXES):
        return False
    places = set(f.places)
    for param, which in (("EQ_readPoint", fx.READ_POINT), ("EQ_bizLocation", fx.BIZ_LOCATION)):
        if param in lists and not any((which, fx.index_form(v)) in places for v in lists[param]):
            return False
    for which, forms in q.within.items():
        if not any((which, p) in places for p in forms):
            return False
    for name, roles in _MATCH_ROLES.items():
        if name in lists and not any(_id_matches(v, f, roles) for v in lists[name]):
            return False
    if "EQ_eventID" in lists:
        ids = {record["id"], event.get("eventID")}
        if not ids & set(lists["EQ_eventID"]):
            return False
    rec = int(record["record_ms"])
    if q.ge_record is not None and rec < q.ge_record:
        return False
    if q.lt_record is not None and rec >= q.lt_record:
        return False
    return all(p(c) for p in q.predicates)


def _id_matches(value: str, f: fx.Facts, roles: set[str]) -> bool:
    prefix, exact = _id_prefix(value)
    for role, ident in f.ids:
        if role in roles and ((ident + " " == prefix) if exact else ident.startswith(prefix)):
            return True
    return False


def context_of(record: Mapping[str, Any], event: Mapping[str, Any] | None = None) -> list[Any]:
    """The ``@context`` an event needs to be read (and re-hashed) alone: the standard context, the bindings of the
    document it was captured in, then its own (an event's context is applied after its document's)."""
    out: list[Any] = [STANDARD_CONTEXT]
    captured = _decimal.decode(record["context"]) if record.get("context") else None
    own = (event or {}).get("@context")
    for ctx in (captured, own):
        for entry in ctx if isinstance(ctx, list) else [ctx]:
            if isinstance(entry, dict) and entry and entry not in out:  # the schema wants unique entries
                out.append(entry)
    return out


def event_out(record: Mapping[str, Any], *, standalone: bool = True) -> dict[str, Any]:
    """The event as captured, with its ``eventID`` (the declared one, else the hash id), ``recordTime`` and the
    ``@context`` it was captured under (``standalone``: with the standard context, for an event served alone;
    otherwise only the bindings a query document's standard context lacks)."""
    event: dict[str, Any] = _decimal.decode(record["event"])
    context = context_of(record, event)
    event.pop("@context", None)
    out: dict[str, Any] = {}
    if standalone:
        out["@context"] = context
    elif len(context) > 1:
        out["@context"] = context[1:]
    out.update(event)
    out.setdefault("eventID", record["id"])
    out["recordTime"] = iso(int(record["record_ms"]))
    ignore = record.get("ignore") or []
    if ignore:
        # The fields the capture document declared as repository metadata are not the event's content: its
        # hash id leaves them out, so a consumer re-hashing the event alone must not see them either.
        hasher = Hasher(context)
        names = {hasher.key(n) for n in ignore}
        for k in [k for k in out if ":" in k and hasher.key(k) in names]:
            del out[k]
    return out


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms // 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@dataclass
class Page:
    records: list[dict[str, Any]]
    next_token: str | None


def _load(index: Index, hx: str) -> Candidate | None:
    raw = index.get(f"{PREFIX}e/{hx}")
    if raw is None:
        return None
    record = msgspec.json.decode(raw)
    event = _decimal.decode(record["event"])
    return Candidate(record, event, fx.facts(event, limits.trace_ids_per_event_max), index)


def matches(q: Query, record: dict[str, Any], index: Index | None = None) -> bool:
    """Whether one anchored event (its ``trace/e/`` record) satisfies every parameter of ``q`` but paging:
    what a subscription asks of each newly captured event (``index``: the state, for master data)."""
    event = _decimal.decode(record["event"])
    c = Candidate(record, event, fx.facts(event, limits.trace_ids_per_event_max), index)
    if index is not None:
        _expand_within(index, q)
    if not q.ge_time <= c.facts.time_ms < q.lt_time:
        return False
    return _matches(q, c)


def _sort_key(q: Query, c: Candidate) -> tuple[int, Any, str]:
    if q.order_by == "recordTime":
        return (0, int(c.record["record_ms"]), c.record["id"])
    found = _field_values(c, "", False, q.order_by, None)
    value = found[0] if found else None
    for kind in ("time", "number"):
        got = _comparable(value, kind)
        if got is not None:
            return (0 if kind == "time" else 1, got, c.record["id"])
    text = _text(value)
    # Events lacking the field may come anywhere (the standard): here, last.
    return (2, text, c.record["id"]) if text is not None else (3, "", c.record["id"])


def run(index: Index, q: Query) -> Page:
    """One page of records (``trace/e/`` values) matching ``q``, in the query's order."""
    _expand_within(index, q)
    if q.max_count is not None and q.after is None and q.offset == 0:
        total = _count(index, q, q.max_count + 1)
        if total > q.max_count:
            raise QueryError(Code.TOO_LARGE, f"QueryTooLargeException: more than maxEventCount={q.max_count} events")
    if q.order_by != "eventTime":
        return _run_sorted(index, q)
    limit = q.per_page
    if q.count_limit is not None:
        limit = min(limit, q.count_limit - q.returned)
    out: list[dict[str, Any]] = []
    position: tuple[str, str] | None = None
    for scanned, (time13, hx) in enumerate(_candidates(index, q), 1):
        if len(out) >= limit or scanned > limits.query_scan_max:
            break
        position = (time13, hx)
        c = _load(index, hx)
        if c is not None and _matches(q, c):
            out.append(c.record)
    else:
        return Page(out, None)
    more = q.count_limit is None or q.returned + len(out) < q.count_limit
    token = _token(position, 0, q.returned + len(out)) if position is not None and more else None
    return Page(out, token)


def _all(index: Index, q: Query, most: int) -> list[Candidate]:
    found: list[Candidate] = []
    for n, (_, hx) in enumerate(_candidates(index, q)):
        if n >= limits.query_scan_max:
            raise QueryError(
                Code.TOO_LARGE,
                f"QueryTooLargeException: the query reads more than query_scan_max={limits.query_scan_max}",
            )
        c = _load(index, hx)
        if c is not None and _matches(q, c):
            found.append(c)
            if len(found) >= most:
                break
    return found


def _count(index: Index, q: Query, most: int) -> int:
    unpaged = Query(**{**q.__dict__, "after": None, "offset": 0, "returned": 0, "max_count": None})
    return len(_all(index, unpaged, most))


def _run_sorted(index: Index, q: Query) -> Page:
    unpaged = Query(**{**q.__dict__, "after": None, "offset": 0, "desc": False})
    found = _all(index, unpaged, limits.query_scan_max)
    found.sort(key=lambda c: _sort_key(q, c), reverse=q.desc)
    limit = q.per_page
    if q.count_limit is not None:
        found = found[: q.count_limit]
        limit = min(limit, q.count_limit - q.returned)
    page = found[q.offset : q.offset + max(0, limit)]
    end = q.offset + len(page)
    token = _token(None, end, q.returned + len(page)) if end < len(found) else None
    return Page([c.record for c in page], token)


def query_document(records: list[dict[str, Any]], created_ms: int, query_name: str = "SimpleEventQuery",
                   subscription_id: str | None = None) -> dict[str, Any]:  # fmt: skip
    """An ``EPCISQueryDocument`` holding ``records``' events. The document's context is the standard one; each
    event that was captured under other bindings carries them as its own ``@context``, so every event reads,
    and re-hashes to its id, as it was captured (merging the contexts would let one binding of a prefix win)."""
    results: dict[str, Any] = {"queryName": query_name}
    if subscription_id is not None:
        results["subscriptionID"] = subscription_id
    results["resultsBody"] = {"eventList": [event_out(r, standalone=False) for r in records]}
    return {
        "@context": [STANDARD_CONTEXT],
        "type": "EPCISQueryDocument",
        "schemaVersion": "2.0",
        "creationDate": iso(created_ms),
        "epcisBody": {"queryResults": results},
    }


# ---- named queries --------------------------------------------------------------------------------------------
#: What a query definition may name besides its parameters (a JSON-LD context; the query schema's own URL).
_DEFINITION_META = ("@context",)
query_name_chars_max = 100
QUERY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", re.ASCII)


def definition_params(query: Any) -> tuple[list[tuple[str, str]], Any]:
    """The (name, value) parameters and the ``@context`` of a query definition (the JSON object of GS1's
    ``query-schema.json``: arrays are alternatives, numbers and booleans scalars). Raises QueryError."""
    if not isinstance(query, Mapping):
        raise QueryError(Code.INVALID_ARGUMENT, "a query definition is a JSON object of query parameters")
    params: list[tuple[str, str]] = []
    for name, value in query.items():
        if name in _DEFINITION_META:
            continue
        items = value if isinstance(value, list) else [value]
        if not items and isinstance(value, list):
            raise _refuse(name, "an empty list matches nothing")
        for item in items:
            if isinstance(item, bool):
                params.append((name, "true" if item else "false"))
            elif item is None:
                params.append((name, ""))
            elif isinstance(item, int | float | Decimal | str):
                text = str(item)
                if isinstance(item, str) and SEPARATOR in text and isinstance(value, list):
                    raise _refuse(name, f"a list member may not contain {SEPARATOR!r}")
                params.append((name, text))
            else:
                raise _refuse(name, "values are strings, numbers, booleans or lists of them")
    context = query.get("@context")
    # The query schema's own URL may stand as the context: it binds no prefix.
    return params, context if isinstance(context, list | dict) else None


def parse_definition(query: Any, masterdata: MasterData | None = None) -> Query:
    """A named query's definition as a :class:`Query` (refusing it as :func:`parse` refuses parameters)."""
    params, context = definition_params(query)
    return parse(params, context, masterdata)
