"""EPCIS 2.0 queries over the events the ``trace`` contract anchored (read from committed state).

A query picks the most selective index the ledger keeps (``liangcao.apps.trace.anchor``): declared event
ids, then identifiers (``MATCH_*``), then places (``EQ_readPoint``/``EQ_bizLocation``), else event time;
scans it in (event time, hash) order between ``GE_eventTime`` and ``LT_eventTime``, and filters each
candidate by every other parameter. Within one parameter the values are alternatives (OR); parameters
combine with AND, as in the EPCIS standard. Pages are stateless: ``nextPageToken`` is the position
after the last event scanned, so a page costs the same wherever it starts, and no page reads more than
``query_scan_max`` index entries (a page may then be short, with a token to go on).
"""

from __future__ import annotations

import base64
import datetime as dt
import heapq
import itertools
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

import msgspec

from liangcao import limits
from liangcao.codes import Code
from liangcao.errors import LiangcaoError
from liangcao.trace import facts as fx

PREFIX = "trace/"
STANDARD_CONTEXT = "https://ref.gs1.org/standards/epcis/epcis-context.jsonld"
_decimal = msgspec.json.Decoder(float_hook=Decimal)
_END = "\U0010ffff"

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
_LIST_PARAMS = {"eventType", "EQ_action", "EQ_bizStep", "EQ_disposition", "EQ_readPoint", "EQ_bizLocation",
                "EQ_eventID", *_MATCH_ROLES}  # fmt: skip
_TIME_PARAMS = {"GE_eventTime", "LT_eventTime", "GE_recordTime", "LT_recordTime"}
_INT_PARAMS = {"eventCountLimit", "perPage"}
KNOWN_PARAMS = _LIST_PARAMS | _TIME_PARAMS | _INT_PARAMS | {"nextPageToken", "orderBy", "orderDirection"}


class QueryError(LiangcaoError):
    """A query parameter that is unknown or malformed (EPCIS ``QueryParameterException``)."""


class Index(Protocol):
    def get(self, key: str) -> bytes | None: ...

    def scan(self, lo: str, hi: str) -> Iterator[tuple[str, bytes]]: ...


@dataclass
class Query:
    lists: dict[str, list[str]] = field(default_factory=dict)
    ge_time: int = 0
    lt_time: int = 10_000_000_000_000
    ge_record: int | None = None
    lt_record: int | None = None
    per_page: int = 30
    count_limit: int | None = None
    after: tuple[str, str] = ("", "")  # (time13, hex) of the last event of the previous page
    returned: int = 0  # events returned by earlier pages (for eventCountLimit)


def _time_param(name: str, value: str) -> int:
    try:
        return fx.time_ms(value)
    except fx.BadEvent as exc:
        raise QueryError(Code.INVALID_ARGUMENT, f"{name}: {exc}") from exc


def parse(params: Sequence[tuple[str, str]]) -> Query:
    """A query from its (name, value) parameters (repeated names and comma-separated values both work)."""
    q = Query()
    for name, value in params:
        if name not in KNOWN_PARAMS:
            raise QueryError(Code.INVALID_ARGUMENT, f"unknown query parameter {name!r}")
        if name in _LIST_PARAMS:
            q.lists.setdefault(name, []).extend(v.strip() for v in value.split(",") if v.strip())
        elif name == "GE_eventTime":
            q.ge_time = max(q.ge_time, _time_param(name, value))
        elif name == "LT_eventTime":
            q.lt_time = min(q.lt_time, _time_param(name, value))
        elif name == "GE_recordTime":
            q.ge_record = _time_param(name, value)
        elif name == "LT_recordTime":
            q.lt_record = _time_param(name, value)
        elif name in _INT_PARAMS:
            if not value.isdigit() or not 1 <= int(value) <= limits.query_per_page_max * 1000:
                raise QueryError(Code.INVALID_ARGUMENT, f"{name} must be a positive integer")
            if name == "perPage":
                if int(value) > limits.query_per_page_max:
                    raise QueryError(
                        Code.LIMIT_EXCEEDED, f"perPage is at most query_per_page_max={limits.query_per_page_max}"
                    )
                q.per_page = int(value)
            else:
                q.count_limit = int(value)
        elif name == "nextPageToken":
            q.after, q.returned = _read_token(value)
        elif name == "orderBy" and value not in ("eventTime", "https://ref.gs1.org/epcis/eventTime"):
            raise QueryError(Code.INVALID_ARGUMENT, "results are ordered by eventTime only")
        elif name == "orderDirection" and value != "ASC":
            raise QueryError(Code.INVALID_ARGUMENT, "orderDirection ASC is the only order supported")
    for t in q.lists.get("eventType", []):
        if t not in fx.EVENT_TYPES:
            raise QueryError(
                Code.INVALID_ARGUMENT, f"unknown eventType {t!r}; EPCIS 2.0 has {', '.join(fx.EVENT_TYPES)}"
            )
    return q


def _token(time13: str, hx: str, returned: int) -> str:
    return base64.urlsafe_b64encode(f"{time13}.{hx}.{returned}".encode()).decode().rstrip("=")


def _read_token(token: str) -> tuple[tuple[str, str], int]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        time13, hx, returned = raw.split(".")
        if not (re.fullmatch(r"\d{13}", time13) and re.fullmatch(r"[0-9a-f]{64}", hx) and returned.isdigit()):
            raise ValueError(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise QueryError(Code.INVALID_ARGUMENT, "nextPageToken is not one this node issued") from exc
    return (time13, hx), int(returned)


# ---- candidates -------------------------------------------------------------------------------------------
def _ranged(index: Index, prefix: str, q: Query, exact: bool) -> Iterator[tuple[str, str, str]]:
    """(time13, hex, value) of index keys ``<prefix><ident> <time13> <hex>`` within the query's times."""
    lo_t = max(f"{q.ge_time:013d}", q.after[0])
    if exact:
        lo = f"{prefix}{lo_t} "
        hi = prefix + fx.time_key(q.lt_time)
        for key, value in index.scan(lo, hi):
            time13, hx = key[len(prefix) :].split(" ")
            if (time13, hx) > q.after:
                yield time13, hx, msgspec.json.decode(value)
        return
    # a pattern: every identifier under the prefix, each in time order, merged into one time order
    for key, value in index.scan(prefix, prefix + _END):
        _ident, time13, hx = key[len(prefix) :].rsplit(" ", 2)
        if q.ge_time <= int(time13) < q.lt_time and (time13, hx) > q.after:
            yield time13, hx, msgspec.json.decode(value)


def _id_prefix(value: str) -> tuple[str, bool]:
    pattern = fx.pattern_prefix(value)
    return (pattern, False) if pattern is not None else (fx.index_form(value) + " ", True)


def _candidates(index: Index, q: Query) -> Iterator[tuple[str, str]]:
    streams: list[Iterator[tuple[str, str]]] = []
    matches = [(name, v) for name in _MATCH_ROLES for v in q.lists.get(name, [])]
    if "EQ_eventID" in q.lists:
        found = []
        for ident in q.lists["EQ_eventID"]:
            hx = ident[len("ni:///sha-256;") :][:64] if ident.startswith("ni:///sha-256;") else None
            if hx is None:
                raw = index.get(f"{PREFIX}d/{ident}")
                hx = msgspec.json.decode(raw) if raw is not None else None
            raw = index.get(f"{PREFIX}e/{hx}") if hx else None
            if raw is not None:
                rec = msgspec.json.decode(raw)
                found.append((f"{rec['time_ms']:013d}", str(hx)))
        streams.append(iter(sorted(t for t in found if t > q.after)))
    elif matches:
        name0 = matches[0][0]  # the first MATCH_ parameter drives the scan; the others filter
        for value in q.lists[name0]:
            prefix, exact = _id_prefix(value)
            roles = _MATCH_ROLES[name0]
            stream = (
                (t, h) for t, h, r in _ranged(index, f"{PREFIX}i/{prefix}", q, exact) if roles & set(r.split(","))
            )
            streams.append(stream if exact else iter(sorted(set(itertools.islice(stream, limits.query_scan_max)))))
    elif "EQ_readPoint" in q.lists or "EQ_bizLocation" in q.lists:
        which = "EQ_readPoint" if "EQ_readPoint" in q.lists else "EQ_bizLocation"
        for value in q.lists[which]:
            prefix = f"{PREFIX}l/{fx.index_form(value)} "
            streams.append((t, h) for t, h, _ in _ranged(index, prefix, q, True))
    else:
        streams.append((t, h) for t, h, _ in _ranged(index, f"{PREFIX}t/", q, True))
    last = None
    for item in heapq.merge(*streams):
        if item != last:
            yield item
            last = item


# ---- filters ----------------------------------------------------------------------------------------------
def _matches(q: Query, record: Mapping[str, Any], event: Mapping[str, Any], f: fx.Facts) -> bool:
    lists = q.lists
    if "eventType" in lists and f.type not in lists["eventType"]:
        return False
    if "EQ_action" in lists and f.action not in lists["EQ_action"]:
        return False
    if "EQ_bizStep" in lists and f.biz_step not in {fx.bare(s, fx._STEP_PREFIXES) for s in lists["EQ_bizStep"]}:
        return False
    if "EQ_disposition" in lists and f.disposition not in {
        fx.bare(s, fx._DISP_PREFIXES) for s in lists["EQ_disposition"]
    }:
        return False
    places = {(w, p) for w, p in f.places}
    for param, which in (("EQ_readPoint", fx.READ_POINT), ("EQ_bizLocation", fx.BIZ_LOCATION)):
        if param in lists and not any((which, fx.index_form(v)) in places for v in lists[param]):
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
    return not (q.lt_record is not None and rec >= q.lt_record)


def _id_matches(value: str, f: fx.Facts, roles: set[str]) -> bool:
    prefix, exact = _id_prefix(value)
    for role, ident in f.ids:
        if role in roles and ((ident + " " == prefix) if exact else ident.startswith(prefix)):
            return True
    return False


def event_out(record: Mapping[str, Any]) -> dict[str, Any]:
    """The event as captured, with its ``eventID`` (the declared one, else the hash id) and ``recordTime``."""
    event: dict[str, Any] = _decimal.decode(record["event"])
    event.setdefault("eventID", record["id"])
    event["recordTime"] = iso(int(record["record_ms"]))
    return event


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms // 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@dataclass
class Page:
    records: list[dict[str, Any]]
    next_token: str | None


def run(index: Index, q: Query) -> Page:
    """One page of records (``trace/e/`` values) matching ``q``, in event-time order."""
    limit = q.per_page
    if q.count_limit is not None:
        limit = min(limit, q.count_limit - q.returned)
    out: list[dict[str, Any]] = []
    scanned = 0
    position: tuple[str, str] | None = None
    for time13, hx in _candidates(index, q):
        scanned += 1
        if len(out) >= limit or scanned > limits.query_scan_max:
            break
        position = (time13, hx)
        raw = index.get(f"{PREFIX}e/{hx}")
        if raw is None:
            continue
        record = msgspec.json.decode(raw)
        event = _decimal.decode(record["event"])
        if _matches(q, record, event, fx.facts(event, limits.trace_ids_per_event_max)):
            out.append(record)
    else:
        return Page(out, None)
    more = q.count_limit is None or q.returned + len(out) < q.count_limit
    token = _token(*position, q.returned + len(out)) if position is not None and more else None
    return Page(out, token)


def query_document(records: list[dict[str, Any]], created_ms: int) -> dict[str, Any]:
    """An ``EPCISQueryDocument`` holding ``records``' events (their contexts merged into the document's)."""
    context: list[Any] = [STANDARD_CONTEXT]
    extra: dict[str, Any] = {}
    for r in records:
        ctx = _decimal.decode(r["context"]) if r.get("context") else None
        for entry in ctx if isinstance(ctx, list) else [ctx]:
            if isinstance(entry, dict):
                extra.update(entry)
    if extra:
        context.append(extra)
    return {
        "@context": context,
        "type": "EPCISQueryDocument",
        "schemaVersion": "2.0",
        "creationDate": iso(created_ms),
        "epcisBody": {
            "queryResults": {
                "queryName": "SimpleEventQuery",
                "resultsBody": {"eventList": [event_out(r) for r in records]},
            }
        },
    }
