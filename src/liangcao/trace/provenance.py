"""The provenance of one item: its own events, its containers' while it was inside, its inputs' before.

Starting from an EPC or a GS1 Digital Link URI (any form: ``liangcao.trace.facts.index_form``), the walk
reads the item's events in time order from the identifier index, then follows

- **aggregation**: an ``ADD`` (or ``OBSERVE``) of the item into a parent makes the parent's events part of
  the item's history from that moment until a ``DELETE`` removes the item (or empties the parent), so a
  pallet's shipping and a container's customs inspection appear in the history of each bottle inside;
- **transformation**: when the item is an output (by EPC or by class), each input's history up to the
  transformation is part of the item's (raw milk lots into a batch of milk powder); recursively, so the
  inputs' own containers and inputs come too;
- transaction events and every other event naming the item are its own.

Every event comes with the organisation that recorded it, its transaction and block, and the path by
which it joined the history (``via``). The walk is bounded (``provenance_events_max``,
``provenance_ids_max``) and reports when it stopped early.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec

from liangcao import limits
from liangcao.trace import facts as fx
from liangcao.trace.query import PREFIX, Index

_decimal = msgspec.json.Decoder(float_hook=Decimal)
NEVER = 10_000_000_000_000


@dataclass
class Step:
    ident: str
    lo: int  # window of event time, [lo, hi)
    hi: int
    via: list[dict[str, Any]] = field(default_factory=list)  # how this identifier joined the history


def _events_of(index: Index, ident: str, lo: int, hi: int) -> list[tuple[int, str, set[str]]]:
    prefix = f"{PREFIX}i/{ident} "
    out = []
    for key, value in index.scan(prefix + fx.time_key(lo), prefix + fx.time_key(hi)):
        time13, hx = key[len(prefix) :].split(" ")
        out.append((int(time13), hx, set(msgspec.json.decode(value).split(","))))
    return out


def provenance(index: Index, identifier: str) -> dict[str, Any]:
    """The item's history (see the module docstring) as ``{id, index_id, events, edges, complete}``."""
    start = fx.index_form(identifier)
    queue: deque[Step] = deque([Step(start, 0, NEVER)])
    seen_steps: set[tuple[str, int, int]] = set()
    events: dict[str, dict[str, Any]] = {}
    edges: list[dict[str, Any]] = []
    records: dict[str, tuple[dict[str, Any], dict[str, Any], fx.Facts]] = {}
    complete = True
    while queue:
        step = queue.popleft()
        if (step.ident, step.lo, step.hi) in seen_steps:
            continue
        if len(seen_steps) >= limits.provenance_ids_max:
            complete = False
            break
        seen_steps.add((step.ident, step.lo, step.hi))
        found = _events_of(index, step.ident, step.lo, step.hi)
        loaded = []
        for t, hx, roles in found:
            if hx not in records:
                raw = index.get(f"{PREFIX}e/{hx}")
                if raw is None:
                    continue
                record = msgspec.json.decode(raw)
                event = _decimal.decode(record["event"])
                records[hx] = (record, event, fx.facts(event, limits.trace_ids_per_event_max))
            loaded.append((t, hx, roles))
        # a parent emptied by a DELETE without children ends every containment in it at that moment
        for t, hx, roles in loaded:
            _, event, f = records[hx]
            if f.type == "AggregationEvent" and f.action == "DELETE" and fx.PARENT in roles and not f.of(fx.CHILD):
                step.hi = min(step.hi, t + 1)
        for t, hx, roles in loaded:
            if t >= step.hi:
                continue
            record, event, f = records[hx]
            if hx not in events:
                if len(events) >= limits.provenance_events_max:
                    complete = False
                    break
                events[hx] = {**_summary(record, event), "via": []}
            events[hx]["via"].append({"id": step.ident, "roles": sorted(roles), "path": step.via})
            if f.type == "AggregationEvent" and fx.CHILD in roles and f.action in ("ADD", "OBSERVE"):
                for parent in f.of(fx.PARENT):
                    end = _removed(loaded, records, parent, t, step.hi)
                    queue.append(Step(parent, t, end, [*step.via, {"contained_in": parent, "event": record["id"]}]))
                    edges.append({"from": step.ident, "to": parent, "kind": "contained_in", "event": record["id"]})
            if f.type == "TransformationEvent" and roles & {fx.OUTPUT, fx.OUTPUT_QTY}:
                for source in dict.fromkeys(f.of(fx.INPUT, fx.INPUT_QTY)):
                    queue.append(Step(source, 0, t + 1, [*step.via, {"made_from": source, "event": record["id"]}]))
                    edges.append({"from": step.ident, "to": source, "kind": "made_from", "event": record["id"]})
    ordered = sorted(events.values(), key=lambda e: (e["time_ms"], e["id"]))
    unique_edges = list({(e["from"], e["to"], e["kind"], e["event"]): e for e in edges}.values())
    return {"id": identifier, "index_id": start, "events": ordered, "edges": unique_edges, "complete": complete}


def _removed(loaded: list[tuple[int, str, set[str]]], records: dict[str, Any], parent: str, after: int, hi: int) -> int:
    """When the item left ``parent`` after ``after`` (a DELETE naming it), else ``hi``."""
    for t, hx, roles in loaded:
        _, _, f = records[hx]
        removal = t > after and fx.CHILD in roles and f.type == "AggregationEvent" and f.action == "DELETE"
        if removal and (parent in f.of(fx.PARENT) or not f.of(fx.PARENT)):
            return min(t, hi)
    return hi


def _summary(record: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": record["id"],
        "type": record["type"],
        "time_ms": record["time_ms"],
        "org": record["org"],
        "by": record["by"],
        "tx": record["tx"],
        "height": record["height"],
        "event": event,
    }
