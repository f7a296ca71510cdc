"""The compact capture layout (issue 25, scale): one state record per event, the EPCIS index kept by the node.

Each test captures the same EPCIS documents twice on real SQLite stores, once with ``compact`` and once in
the full layout, and checks that every query, provenance and event read through the node's
:class:`~liangcao.node.trace_index.TraceView` answers what the full layout answers from state alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import Chain, open_ledger
from liangcao import encoding
from liangcao.apps.trace.anchor import TX_REF_HEX
from liangcao.bench.trace import documents
from liangcao.ledger.store import Store
from liangcao.node.trace_index import TraceIndex, TraceView, pack_entry, unpack_entry
from liangcao.trace import capture
from liangcao.trace import query as tq
from liangcao.trace.provenance import provenance
from trace_ledger import (
    BRAND,
    BRAND_PREFIX,
    CUSTOMS,
    FIXTURES,
    LOGISTICS,
    MAJORITY,
    TRACE,
    WAREHOUSE,
    document,
    obj,
)

CASES = 30  # of the bench's workload: 7 events each


class TraceChain(Chain):
    def __init__(self, path: Path) -> None:
        ledger = open_ledger(path)
        ledger.apply(TRACE.genesis)
        super().__init__(ledger, TRACE)
        signers = [self.signer(o, "admin") for o in MAJORITY]
        assert self.run("trace", "assign_prefix", {"prefix": BRAND_PREFIX, "org": BRAND}, *signers)["code"] == 0

    def capture(self, data: bytes, org: str, *, compact: bool) -> list[dict[str, Any]]:
        prepared = capture.prepare(data)
        txs = capture.sign(prepared, capture.pack(prepared), self.signer(org, "admin"), TRACE.chain_id,
                           self.time_ms + 60_000, compact=compact)  # fmt: skip
        receipts = self.commit(txs)
        assert all(r["code"] == 0 for r in receipts), receipts
        return [x for r in receipts for x in r["result"]]


def _workload(c: TraceChain, *, compact: bool) -> list[dict[str, Any]]:
    results = []
    for org, data in zip((BRAND, LOGISTICS, WAREHOUSE), documents(0, CASES).values(), strict=True):
        results += c.capture(data, org, compact=compact)
    # GS1's examples (every event type, sensor data, their own contexts and declared eventIDs), recorded by a
    # customs office the consortium trusts with everything
    signers = [c.signer(o, "admin") for o in MAJORITY]
    assert c.run("trace", "set_policy", {"org_type": "customs", "own": False, "steps": ["*"]}, *signers)["code"] == 0
    for path in sorted(FIXTURES.glob("gs1-examples/**/*.jsonld")):
        try:
            results += c.capture(path.read_bytes(), CUSTOMS, compact=compact)
        except capture.CaptureRefused:
            continue
    return results


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TraceChain, TraceChain, TraceView, Store]]:
    root = tmp_path_factory.mktemp("layout")
    full, compact = TraceChain(root / "full.sqlite"), TraceChain(root / "compact.sqlite")
    assert _workload(full, compact=False) == _workload(compact, compact=True)
    index = TraceIndex(root / "trace-index.sqlite", compact.ledger.store.path)
    view = TraceView(compact.ledger.store, index)
    yield full, compact, view, full.ledger.store
    index.close()
    full.ledger.close()
    compact.ledger.close()


def _same(record: dict[str, Any]) -> dict[str, Any]:
    """What both layouts must agree on (the transaction, its block and time differ between the two chains)."""
    return {k: v for k, v in record.items() if k not in ("tx", "height", "record_ms")}


QUERIES = [
    [("MATCH_anyEPC", "urn:epc:id:sgtin:0614141.107346.9")],
    [("MATCH_anyEPC", "urn:epc:id:sscc:0614141.0000000004")],
    [("MATCH_epc", "urn:epc:idpat:sgtin:0614141.107346.*")],
    [("MATCH_parentID", "urn:epc:id:sscc:0614141.0000000007")],
    [("EQ_bizStep", "shipping|receiving"), ("orderDirection", "DESC")],
    [("eventType", "AggregationEvent")],
    [("EQ_bizLocation", "urn:epc:id:sgln:0614141.00009.0"), ("perPage", "5")],
    [("EQ_readPoint", "urn:epc:id:sgln:0614141.00001.0"), ("orderDirection", "DESC"), ("perPage", "7")],
    [("GE_eventTime", "2026-09-21T14:30:00Z"), ("LT_eventTime", "2026-09-21T15:00:00Z")],
    [("MATCH_anyEPC", "urn:epc:id:sgtin:0614141.107346.2017")],
    [("eventType", "TransformationEvent|AssociationEvent|TransactionEvent")],
    [("EXISTS_sensorElementList", "true")],
    [("EQ_eventID", "ni:///sha-256;df7bb3c352fef055578554f09f5e2aa41782150ced7bd0b8af24dd3ccb30ba69?ver=CBV2.0")],
    [("MATCH_anyEPCClass", "urn:epc:class:lgtin:4012345.011111.4444")],
    [("LT_eventTime", "2026-01-01T00:00:00Z"), ("orderDirection", "DESC"), ("perPage", "4")],
]


@pytest.mark.parametrize("params", QUERIES, ids=[p[0][0] for p in QUERIES])
def test_every_query_answers_what_the_full_layout_answers(pair: Any, params: list[tuple[str, str]]) -> None:
    _, _, view, full_store = pair
    pages = seen = 0
    token: str | None = None
    while True:
        extra = [("nextPageToken", token)] if token else []
        a = tq.run(view, tq.parse(params + extra))
        b = tq.run(full_store, tq.parse(params + extra))
        assert [_same(r) for r in a.records] == [_same(r) for r in b.records]
        assert [tq.event_out(r) for r in a.records] == [tq.event_out(r) for r in b.records]
        assert (a.next_token is None) == (b.next_token is None)
        pages += 1
        seen += len(a.records)
        if a.next_token is None or pages > 40:
            break
        token = a.next_token
    assert pages <= 40 and seen > 0


def test_provenance_and_event_ids_agree(pair: Any) -> None:
    _, compact, view, full_store = pair
    for n in (0, 5, 77, 4 * CASES - 1):
        epc = f"urn:epc:id:sgtin:0614141.107346.{n}"
        a, b = provenance(view, epc), provenance(full_store, epc)
        assert [_same(e) for e in a["events"]] == [_same(e) for e in b["events"]]
        assert len(a["events"]) == 4
    some = tq.run(full_store, tq.parse([("eventType", "ObjectEvent"), ("perPage", "3")])).records
    for record in some:
        (got,) = tq.run(view, tq.parse([("EQ_eventID", record["id"])])).records
        assert _same(got) == _same(record)
        assert got["tx"] in compact.ledger.store.block_tx_ids(got["height"])


def test_state_holds_one_small_record_per_event(pair: Any) -> None:
    full, compact, _, _ = pair
    events = 7 * CASES
    full_keys = [k for k, _ in full.ledger.store.range("trace/") if k[6:8] in ("e/", "i/", "l/", "t/")]
    compact_rows = [(k, v) for k, v in compact.ledger.store.range("trace/") if k[6:8] in ("e/", "i/", "l/", "t/")]
    assert all(k.startswith("trace/e/") for k, _ in compact_rows)
    assert len(compact_rows) >= events and len(full_keys) > 3 * len(compact_rows)
    for _, value in compact_rows[:50]:
        ref = encoding.decode(value)
        assert set(ref) == {"by", "height", "n", "tx"} and len(ref["tx"]) == TX_REF_HEX and len(value) < 80


def test_the_contract_query_gives_the_reference(pair: Any) -> None:
    _, compact, _, full_store = pair
    record = tq.run(full_store, tq.parse([("eventType", "AggregationEvent"), ("perPage", "1")])).records[0]
    got = compact.ledger.query("trace", "event", {"id": record["id"]})
    assert got["by"] == record["by"] and got["n"] >= 0
    with pytest.raises(Exception, match="no event"):
        compact.ledger.query("trace", "event", {"id": record["id"].replace("?ver", "0?ver")})


def test_a_duplicate_is_neither_stored_nor_indexed_again(tmp_path: Path) -> None:
    c = TraceChain(tmp_path / "s.sqlite")
    data = json.dumps(document([obj(["urn:epc:id:sgtin:0614141.107346.1"], "shipping", "2026-01-02T10:00:00Z")]))
    first = c.capture(data.encode(), LOGISTICS, compact=True)
    again = c.capture(data.encode(), LOGISTICS, compact=True)
    assert [r["status"] for r in first + again] == ["captured", "duplicate"]
    index = TraceIndex(tmp_path / "i.sqlite", c.ledger.store.path)
    try:
        view = TraceView(c.ledger.store, index)
        rows = list(index.scan("trace/", "trace/\U0010ffff"))
        assert len(rows) == 2  # the time entry and the EPC's
        page = tq.run(view, tq.parse([("MATCH_epc", "urn:epc:id:sgtin:0614141.107346.1")]))
        assert [r["id"] for r in page.records] == [first[0]["id"]]
    finally:
        index.close()


def test_the_index_is_a_function_of_the_blocks(pair: Any, tmp_path: Path) -> None:
    """Built again from nothing it is the same, entry for entry; on another chain's store it starts over."""
    _, compact, view, _ = pair
    again = TraceIndex(tmp_path / "again.sqlite", compact.ledger.store.path)
    try:
        again.sync(compact.ledger.store)
        everything = ("trace/", "trace/\U0010ffff")
        assert list(again.scan(*everything)) == list(view.index.scan(*everything))
        assert again.indexed_height() == compact.ledger.store.height()
        other = TraceChain(tmp_path / "other.sqlite")
        other.capture(documents(0, 1)["org1"], BRAND, compact=True)
        again.sync(other.ledger.store)  # the block at the indexed height is not this store's: start over
        # 4 commissioning events (time, EPC, read point) and a packing (time, parent, 4 children)
        assert len(list(again.scan(*everything))) == 4 * 3 + 6
        other.ledger.close()
    finally:
        again.close()


_IDENT = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x2FF, blacklist_characters="~"), min_size=1)


@settings(max_examples=60, deadline=None)
@given(
    a=st.tuples(_IDENT, st.integers(0, 10**13 - 1), st.binary(min_size=32, max_size=32)),
    b=st.tuples(_IDENT, st.integers(0, 10**13 - 1), st.binary(min_size=32, max_size=32)),
    value=st.sampled_from(["epc", "child", "epc,child", "readPoint", "ObjectEvent", "x,y"]),
)
def test_stored_entries_round_trip_and_keep_the_key_order(
    a: tuple[str, int, bytes], b: tuple[str, int, bytes], value: str
) -> None:
    ka, kb = (f"i/{i} {t:013d} {h.hex()}" for i, t, h in (a, b))
    pa, pb = pack_entry(ka, value), pack_entry(kb, value)
    assert unpack_entry(*pa) == ("trace/" + ka, encoding.canonical(value))
    assert (pa[0] < pb[0]) == (ka.encode() < kb.encode())
    assert len(pa[0]) == len(ka.encode()) - 32
