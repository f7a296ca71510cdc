"""``liangcao trace``: GS1 EPCIS 2.0 documents checked and hashed offline, captured (signed on this side),
queried, an item's history, and the capture benchmark."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from liangcao.cli.common import (
    READER,
    Actor,
    AsJson,
    Home,
    Reader,
    Url,
    console,
    err,
    fail,
    member_id,
    node_errors,
    open_home,
    read,
)

app = typer.Typer(help="GS1 EPCIS 2.0 traceability.", no_args_is_help=True)


def epcis_document(file: Path) -> dict[str, Any]:
    """An EPCIS document from a JSON-LD or XML file (XML read as the JSON-LD it means)."""
    from liangcao.trace.depth import TooDeep, check_json
    from liangcao.trace.xml import XmlRefused, looks_like_xml, read

    try:
        data = file.read_bytes()
        if not looks_like_xml(data):
            check_json(data, "the document")  # before json.loads recurses into it
        document = read(data) if looks_like_xml(data) else json.loads(data.decode("utf-8"))
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror}")
    except (XmlRefused, TooDeep) as exc:
        fail(f"{file}: {exc}")
    except (ValueError, UnicodeDecodeError) as exc:
        fail(f"{file} is neither JSON nor XML: {exc}")
    if not isinstance(document, dict) or not isinstance(document.get("epcisBody"), dict):
        fail(f"{file} is not an EPCIS document: it has no epcisBody object")
    return document


@app.command("validate")
def trace_validate_cmd(
    file: Annotated[Path, typer.Argument(help="an EPCIS 2.0 document in JSON-LD or XML")],
) -> None:
    """Check a document against GS1's EPCIS 2.0 JSON schema; exit 1 listing each problem by event and field."""
    from liangcao.trace.validate import validate_document

    document = epcis_document(file)
    try:
        problems = validate_document(document)
    except FileNotFoundError as exc:
        fail(str(exc))
    if problems:
        for p in problems:
            err.print(str(p), soft_wrap=True, markup=False)
        raise typer.Exit(1)
    console.print(f"valid: {len(document['epcisBody'].get('eventList') or [])} events")


@app.command("hash")
def trace_hash_cmd(
    file: Annotated[Path, typer.Argument(help="an EPCIS 2.0 document or query document in JSON-LD or XML")],
    prehash: Annotated[bool, typer.Option("--prehash", help="print the pre-hash strings too")] = False,
) -> None:
    """Print the CBV 2.0 event hash id of each event, one per line, in document order."""
    from liangcao.trace.hashing import Hasher, events_of, hash_of_prehash, ignored_fields

    document = epcis_document(file)
    hasher = Hasher(document.get("@context"), ignored_fields(document))
    for n, event in enumerate(events_of(document)):
        if not isinstance(event, dict):
            fail(f"event {n} of {file} is not an object")
        pre = hasher.event(event)
        print(hash_of_prehash(pre))
        if prehash:
            print(pre)


@app.command("capture")
def trace_capture_cmd(
    home: Home,
    file: Annotated[Path, typer.Argument(help="an EPCIS 2.0 capture document in JSON-LD or XML")],
    as_: Actor,
    url: Url = None,
) -> None:
    """Validate, hash, sign (locally) and capture a document; print each event's id and status.

    Exit 1 if the document is invalid (each problem by event and field), 2 if the ledger refused events.
    """
    from liangcao.client import Client
    from liangcao.crypto.signer import load_signer
    from liangcao.node.home import member_dir
    from liangcao.trace.capture import CaptureRefused

    member_id(as_)
    h = open_home(home)
    try:
        signer = load_signer(member_dir(h.root, as_))
        data = file.read_bytes()
    except (FileNotFoundError, ValueError) as exc:
        fail(f"cannot load {exc}")
    try:
        with node_errors(), Client(url or h.url, chain_id=h.chain_id()) as c:
            results = c.capture(data, signer)
    except CaptureRefused as exc:
        for p in exc.problems or []:
            err.print(str(p), soft_wrap=True, markup=False)
        fail(exc.message)
    for r in results:
        print(f"{r['id']} {r['status']}")


@app.command("query")
def trace_query_cmd(
    home: Home,
    params: Annotated[list[str], typer.Argument(help="EPCIS query parameters as NAME=VALUE, e.g. MATCH_anyEPC=urn:…")],
    as_: Reader = READER,
    url: Url = None,
) -> None:
    """Query events (eventType, GE_eventTime, EQ_bizStep, MATCH_epc, perPage, …); print the query document."""
    pairs = {}
    for p in params:
        name, sep, value = p.partition("=")
        if not sep:
            fail(f"{p!r} is not NAME=VALUE")
        pairs[name] = value
    print(json.dumps(read(home, as_, url, lambda c: c.epcis_query(**pairs)), indent=1))


@app.command("history")
def trace_history_cmd(
    home: Home,
    identifier: Annotated[str, typer.Argument(help="an EPC URI or GS1 Digital Link URI")],
    as_: Reader = READER,
    url: Url = None,
    as_json: AsJson = False,
) -> None:
    """An item's history through packing and making: each event, who recorded it, in which block."""
    from rich.table import Table

    from liangcao.trace.query import iso

    p = read(home, as_, url, lambda c: c.provenance(identifier))
    if as_json:
        print(json.dumps(p, indent=1))
        return
    table = Table(title=f"history of {identifier}")
    for col in ("event time", "type", "bizStep", "recorded by", "block", "via"):
        table.add_column(col)
    for e in p["events"]:
        path = e["via"][0]["path"] if e["via"] else []
        via = " > ".join(next(iter(v.values())) for v in path) or "itself"
        table.add_row(iso(e["time_ms"]), e["type"], str(e["event"].get("bizStep", "")), e["org"], str(e["height"]), via)
    console.print(table)


@app.command("bench")
def trace_bench_cmd(
    events: Annotated[int, typer.Option(min=700, max=10_000_000, help="events to capture")] = 1_000_000,
    lookups: Annotated[int, typer.Option(min=10, max=100_000, help="history lookups by EPC")] = 2000,
    full: Annotated[bool, typer.Option("--full", help="the layout that copies each event into state")] = False,
    as_json: AsJson = False,
    restart: Annotated[
        bool, typer.Option("--restart", help="then time the node's restart on the store (start-up check included)")
    ] = False,
) -> None:
    """Bulk EPCIS capture into committed blocks, and history lookup latency by EPC, on a real node."""
    from liangcao.bench.trace import run_trace_bench

    run_trace_bench(events=events, lookups=lookups, as_json=as_json, console=console, compact=not full, restart=restart)
