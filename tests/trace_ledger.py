"""A traceability consortium as an in-memory replica, and EPCIS documents to capture on it."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from conftest import NOW_MS
from liangcao.node.genesis import Consortium, create_consortium
from liangcao.trace import capture
from scf_ledger import Ledger

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "epcis"
TYPES = ["brand", "logistics", "customs", "warehouse", "platform", "bank", "brand"]
BRAND, LOGISTICS, CUSTOMS, WAREHOUSE, PLATFORM, BANK, OTHER_BRAND = (f"org{i}" for i in range(1, 8))
TRACE: Consortium = create_consortium(7, org_types=TYPES, now_ms=NOW_MS, chain_id="trace-test")
BRAND_PREFIX = "0614141"  # the GS1 company prefix of the fixtures' example goods
OTHER_PREFIX = "4012345"
MAJORITY = (BRAND, LOGISTICS, CUSTOMS, WAREHOUSE)


def document(events: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "@context": ["https://ref.gs1.org/standards/epcis/epcis-context.jsonld"],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": "2026-11-01T00:00:00Z",
        "epcisBody": {"eventList": events},
    }


def obj(epcs: list[str], step: str, when: str, *, action: str = "OBSERVE", **extra: Any) -> dict[str, Any]:
    return {
        "type": "ObjectEvent",
        "eventTime": when,
        "eventTimeZoneOffset": "+08:00",
        "epcList": epcs,
        "action": action,
        "bizStep": step,
        **extra,
    }


def fixture(name: str) -> dict[str, Any]:
    return copy.deepcopy(json.loads((FIXTURES / name).read_text(encoding="utf-8")))


class TraceLedger(Ledger):
    def __init__(self, prefixes: bool = True) -> None:
        super().__init__(TRACE)
        if prefixes:
            self.ok("trace", "assign_prefix", {"prefix": BRAND_PREFIX, "org": BRAND}, *MAJORITY)
            self.ok("trace", "assign_prefix", {"prefix": OTHER_PREFIX, "org": OTHER_BRAND}, *MAJORITY)

    def capture(self, doc: dict[str, Any], who: str) -> list[dict[str, Any]]:
        """Capture a document as ``who``: every pack as one transaction; the receipts in order."""
        prepared = capture.prepare(json.dumps(doc).encode())
        org, _, name = who.partition("/")
        signer = self.consortium.org(org).signer(name or "admin")
        txs = capture.sign(prepared, capture.pack(prepared), signer, self.consortium.chain_id, self.time_ms + 60_000)
        out = []
        for t in txs:
            out.append(self.run_raw(t.raw))
        return out

    def captured(self, doc: dict[str, Any], who: str) -> list[dict[str, str]]:
        results: list[dict[str, str]] = []
        for r in self.capture(doc, who):
            assert r["code"] == 0, r
            results += r["result"]
        return results

    def record(self, hash_id: str) -> Any:
        return self.query("trace", "event", {"id": hash_id})
