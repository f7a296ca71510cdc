"""Turning an EPCIS 2.0 capture document into signed ``trace.capture`` transactions.

The same code serves the node's ``/epcis/v2/capture`` endpoint (signing with a key the node holds for the
caller) and the SDK and CLI (signing on the caller's side):

1. ``parse`` reads the document (JSON-LD, or XML translated to JSON-LD by ``liangcao.trace.xml``) and
   refuses what is not an object, too large, or nested deeper than ``trace_depth_max`` (``VALUE_TOO_DEEP``,
   found before anything recursive reads it: ``liangcao.trace.depth``);
2. ``prepare`` validates it against GS1's schema (problems name the event and the field), checks what the
   ledger needs of each event (``liangcao.trace.facts``) and computes every event's hash id;
3. ``pack`` groups the events into transactions within ``trace_events_per_tx_max``, the transaction size
   and the write budget, keeping document order;
4. ``sign`` builds one transaction per pack.

Events travel as their JSON text, re-encoded compactly with decimals kept exactly as written (a sensor
value of ``0.34340`` stays a decimal, never a binary float).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec

from liangcao import limits
from liangcao.codes import Code
from liangcao.errors import LiangcaoError
from liangcao.ledger import tx as txm
from liangcao.trace.depth import TooDeep, check_json
from liangcao.trace.facts import BadEvent, facts
from liangcao.trace.hashing import Hasher, events_of, hash_of_prehash, ignored_fields
from liangcao.trace.validate import Problem, validate_document
from liangcao.trace.xml import XmlRefused, XsdInvalid, looks_like_xml, read

_exact = msgspec.json.Decoder(float_hook=Decimal)
_encode = msgspec.json.Encoder(decimal_format="number").encode
#: Master data a capture document's header may carry (anchored with its first transaction).
MASTERDATA_BYTES_MAX = 16 * 1024
#: Room left in a transaction for its envelope (chain id, names, nonce, signatures) around the events.
_TX_OVERHEAD_BYTES = 4 * 1024


class CaptureRefused(LiangcaoError):
    """A document that cannot be captured at all; ``problems`` name each event and field."""

    def __init__(self, code: int, message: str, problems: list[Problem] | None = None) -> None:
        self.problems = problems or []
        super().__init__(code, message, [p.__dict__ for p in self.problems] or None)


@dataclass
class Prepared:
    """A validated document: each event's text and hash id, in document order."""

    texts: list[str]
    ids: list[str]
    writes: list[int]  # state writes each event costs when anchored
    context: str = ""
    ignore: list[str] = field(default_factory=list)
    masterdata: str = ""  # the header's vocabulary elements, as JSON text (anchored with the first pack)

    def __len__(self) -> int:
        return len(self.texts)


def as_json(data: bytes, *, single: bool = False) -> bytes:
    """``data`` as JSON-LD text: JSON as it is, an EPCIS XML document (or, ``single``, event) translated after
    GS1's XSD accepted it. Raises CaptureRefused."""
    if len(data) > limits.capture_document_bytes_max:
        raise CaptureRefused(
            Code.TOO_LARGE, f"document is larger than capture_document_bytes_max={limits.capture_document_bytes_max}"
        )
    if not looks_like_xml(data):
        return data
    try:
        return _encode(read(data, single=single, validate=True))
    except XsdInvalid as exc:
        problems = [Problem(None, "$", p) for p in exc.problems]
        raise CaptureRefused(Code.INVALID_ARGUMENT, str(exc), problems) from exc
    except XmlRefused as exc:
        raise CaptureRefused(Code.BAD_ENCODING, str(exc)) from exc
    except TooDeep as exc:
        raise CaptureRefused(Code.VALUE_TOO_DEEP, str(exc)) from exc


def parse(data: bytes) -> Any:
    """The document in ``data`` (JSON-LD). Raises CaptureRefused."""
    data = as_json(data)
    try:
        check_json(data, "the document")  # before the decoder recurses into it
        document = msgspec.json.decode(data)
    except TooDeep as exc:
        raise CaptureRefused(Code.VALUE_TOO_DEEP, str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise CaptureRefused(Code.BAD_ENCODING, f"document is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise CaptureRefused(Code.INVALID_ARGUMENT, "an EPCIS document is a JSON object")
    return document


def as_document(event: dict[str, Any]) -> dict[str, Any]:
    """A single event (EPCIS ``POST /events``) as a one-event document, its ``@context`` moved up."""
    body = {k: v for k, v in event.items() if k != "@context"}
    document: dict[str, Any] = {"type": "EPCISDocument", "schemaVersion": "2.0", "epcisBody": {"eventList": [body]}}
    document["creationDate"] = event.get("eventTime", "1970-01-01T00:00:00Z")
    if "@context" in event:
        document["@context"] = event["@context"]
    return document


def prepare(data: bytes, *, single: bool = False) -> Prepared:
    """Validate a capture document (or, with ``single``, one event) and compute the events' hash ids.

    Raises CaptureRefused naming every problem found.
    """
    xml = looks_like_xml(data)
    data = as_json(data, single=single)
    document = parse(data)
    if single and xml:  # a bare XML event arrives as the one-event document it means
        single = False
    if single:
        if document.get("type") == "EPCISDocument":
            raise CaptureRefused(Code.INVALID_ARGUMENT, "this takes one event; capture documents go to /capture")
        problems = validate_document(document)
        if problems:
            raise CaptureRefused(
                Code.INVALID_ARGUMENT, f"the event does not satisfy the schema: {problems[0]}", problems
            )
        data = _encode(as_document(_exact.decode(data)))
        document = parse(data)
    problems = validate_document(document, json_schema=not xml)  # XML: GS1's XSD accepted it in as_json
    if problems:
        raise CaptureRefused(
            Code.INVALID_ARGUMENT, f"the document does not satisfy the EPCIS 2.0 schema: {problems[0]}", problems
        )
    if document.get("type") != "EPCISDocument":
        raise CaptureRefused(Code.INVALID_ARGUMENT, f"capture takes an EPCISDocument, not {document.get('type')!r}")
    exact = _exact.decode(data)  # the same document with its decimals exact, for the texts that are anchored
    events = events_of(exact)
    if len(events) > limits.capture_events_max:
        raise CaptureRefused(Code.TOO_LARGE, f"more than capture_events_max={limits.capture_events_max} events")
    context = exact.get("@context")
    context_text = _encode(context).decode() if context is not None else ""
    if len(context_text.encode()) > limits.trace_context_bytes_max:
        raise CaptureRefused(Code.TOO_LARGE, "@context is larger than trace_context_bytes_max")
    ignore = ignored_fields(exact)
    hasher = Hasher(context, ignore)
    out = Prepared([], [], [], context_text, ignore, master_data(exact))
    bad: list[Problem] = []
    for n, event in enumerate(events):
        text = _encode(event).decode()
        where = f"$.epcisBody.eventList[{n}]"
        if len(text.encode()) > limits.trace_event_bytes_max:
            bad.append(Problem(n, where, f"event is larger than trace_event_bytes_max={limits.trace_event_bytes_max}"))
            continue
        try:
            f = facts(event, limits.trace_ids_per_event_max)
            hash_id = hash_of_prehash(hasher.event(event))
        except (BadEvent, TooDeep) as exc:
            bad.append(Problem(n, where, str(exc)))
            continue
        out.texts.append(text)
        out.ids.append(hash_id)
        out.writes.append(3 + len({i for _, i in f.ids}) + len(f.places))
    if bad:
        raise CaptureRefused(Code.INVALID_ARGUMENT, f"{len(bad)} event(s) cannot be anchored: {bad[0]}", bad)
    return out


def master_data(document: dict[str, Any]) -> str:
    """The vocabulary elements of a document's header (``epcisHeader.epcisMasterData.vocabularyList``) as the
    JSON text the ``trace`` contract anchors: ``[{id, type, attributes: {id: value}, children: [...]}]``.
    Raises CaptureRefused if there are more than ``masterdata_bytes_max`` of them."""
    header = document.get("epcisHeader")
    md = header.get("epcisMasterData") if isinstance(header, dict) else None
    vocabularies = md.get("vocabularyList") if isinstance(md, dict) else None
    out = []
    for vocabulary in vocabularies if isinstance(vocabularies, list) else []:
        kind = vocabulary.get("type", "") if isinstance(vocabulary, dict) else ""
        for element in vocabulary.get("vocabularyElementList") or [] if isinstance(vocabulary, dict) else []:
            if not isinstance(element, dict) or not isinstance(element.get("id"), str):
                continue
            attributes = {
                str(a["id"]): a.get("attribute")
                for a in element.get("attributes") or []
                if isinstance(a, dict) and isinstance(a.get("id"), str)
            }
            children = [c for c in element.get("children") or [] if isinstance(c, str)]
            out.append({"id": element["id"], "type": kind, "attributes": attributes, "children": children})
    if not out:
        return ""
    text = _encode(out).decode()
    if len(text.encode()) > MASTERDATA_BYTES_MAX:
        raise CaptureRefused(Code.TOO_LARGE, f"the master data is larger than {MASTERDATA_BYTES_MAX} bytes")
    return text


def pack(prepared: Prepared) -> list[list[int]]:
    """Event indexes grouped into transactions, in document order, each within every per-transaction bound."""
    budget = limits.tx_bytes_max - _TX_OVERHEAD_BYTES - len(prepared.context.encode()) - len(prepared.masterdata)
    writes_budget = limits.writes_per_tx_max - 8
    packs: list[list[int]] = []
    current: list[int] = []
    size = writes = 0
    for i, text in enumerate(prepared.texts):
        n = len(text.encode()) + 8  # JSON string quoting and escapes, roughly
        w = prepared.writes[i]
        if current and (
            len(current) >= limits.trace_events_per_tx_max or size + n > budget or writes + w > writes_budget
        ):
            packs.append(current)
            current, size, writes = [], 0, 0
        current.append(i)
        size += n
        writes += w
    if current:
        packs.append(current)
    return packs


def args_of(prepared: Prepared, indexes: list[int], *, compact: bool = False) -> dict[str, Any]:
    """The ``trace.capture`` arguments for some of a document's events; ``compact``: the layout that stores the
    event once (``liangcao.apps.trace.anchor``: needs a node that keeps the trace index, as every node does)."""
    args: dict[str, Any] = {"events": [prepared.texts[i] for i in indexes]}
    if compact:
        args["compact"] = True
    if prepared.context:
        args["context"] = prepared.context
    if prepared.ignore:
        args["ignore"] = prepared.ignore
    if prepared.masterdata and indexes and indexes[0] == 0:  # once, with the document's first events
        args["masterdata"] = prepared.masterdata
    return args


def sign(
    prepared: Prepared,
    packs: list[list[int]],
    signer: txm.Signer,
    chain_id: str,
    not_after: int,
    *,
    compact: bool = False,
) -> list[txm.Tx]:
    """One signed ``trace.capture`` transaction per pack (``compact``: see :func:`args_of`)."""
    tag = os.urandom(6).hex()
    return [
        txm.build(
            chain_id,
            "trace",
            "capture",
            args_of(prepared, p, compact=compact),
            [signer],
            not_after=not_after,
            nonce=f"c{tag}.{k}",
        )
        for k, p in enumerate(packs)
    ]
