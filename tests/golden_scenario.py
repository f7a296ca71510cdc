"""One deterministic run through every built-in contract, for byte-for-byte regression checks.

Every record type each contract stores is written, changed and read back; refusals (bad arguments, wrong
parties, wrong states) are included because their codes and messages are in the receipts too. The run is
deterministic (``liangcao.testing`` with its default seed), so its state hash, its receipts and its query
answers are fixed numbers: ``test_record_bytes`` keeps them equal to what the code gave before contract
records became typed structs.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from typing import Any

from liangcao import encoding
from liangcao.errors import ContractFailure
from liangcao.ledger import executor
from liangcao.testing import Chain
from liangcao.trace import capture

TYPES = [
    "core_enterprise", "supplier", "supplier", "bank", "warehouse", "regulator", "brand", "logistics", "customs",
    "shipper", "carrier", "terminal", "terminal",
]  # fmt: skip
CORE, T1, T2, BANK, WAREHOUSE, REGULATOR, BRAND, LOGISTICS, CUSTOMS, SHIPPER, CARRIER, PORT_A, PORT_B = (
    f"org{i}" for i in range(1, 14)
)
MAJORITY = (CORE, T1, T2, BANK, WAREHOUSE, REGULATOR, BRAND)


class Recorder(Chain):
    """A chain that keeps every block's receipts as stored bytes."""

    def __init__(self) -> None:
        self.receipts: list[bytes] = []
        super().__init__(TYPES, chain_id="golden")

    def apply(self, raws: Sequence[bytes]) -> executor.Execution:
        ex = super().apply(raws)
        self.receipts += ex.receipts
        return ex


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def filler(label: str, size: int) -> bytes:
    return (hashlib.sha256(label.encode()).digest() * (size // 32 + 1))[:size]


def scf(c: Recorder) -> dict[str, Any]:
    ids: dict[str, Any] = {}
    # tokens
    c.run("scf.tokens", "issue", {"to": BANK, "amount": 10**13}, BANK)
    c.run("scf.tokens", "issue", {"to": CORE, "amount": 10**13}, BANK)
    c.run("scf.tokens", "issue", {"to": T1, "amount": 5_000}, BANK)
    c.run("scf.tokens", "issue", {"to": T1, "amount": 5_000}, T1)  # not a bank
    c.run("scf.tokens", "issue", {"to": T1, "amount": 5_000}, f"{BANK}/peer0")  # a node's key
    c.run("scf.tokens", "issue", {"to": T1, "amount": 0}, BANK)
    c.run("scf.tokens", "issue", {"to": T1, "amount": 10**15 + 1}, BANK)
    c.run("scf.tokens", "issue", {"to": "Org-1", "amount": 1}, BANK)
    c.run("scf.tokens", "issue", {"to": "org99", "amount": 1}, BANK)
    c.run("scf.tokens", "redeem", {"bank": BANK, "amount": 1_000}, T1, BANK)
    c.run("scf.tokens", "redeem", {"bank": BANK, "amount": 10**9}, T1, BANK)
    c.run("scf.tokens", "redeem", {"bank": BANK, "amount": 1}, T1)
    c.run("scf.tokens", "transfer", {"bank": BANK, "to": T2, "amount": 500}, T1)
    c.run("scf.tokens", "transfer", {"bank": BANK, "to": T1, "amount": 1}, T1)
    c.run("scf.tokens", "pay", {"bank": BANK, "payer": T1, "payee": T2, "amount": 1}, T1)
    # invoices
    keys = []
    for n in range(1, 9):
        doc = hashlib.sha256(f"inv{n}".encode()).hexdigest()
        args = {"code": "3100", "number": f"{n:04d}", "seller": T1, "buyer": CORE, "amount": 10_000_000,
                "date": c.date(), "doc_hash": doc}  # fmt: skip
        keys.append(c.run("scf.invoices", "register", args, T1)["result"]["key"])
    c.run("scf.invoices", "register", {**args, "number": "0001"}, T1)  # registered already
    c.run("scf.invoices", "register", {**args, "number": "0100", "buyer": T1}, T1)
    c.run("scf.invoices", "register", {**args, "number": "0101"}, T2)  # not the seller
    c.run("scf.invoices", "register", {**args, "number": "01.1"}, T1)
    c.run("scf.invoices", "register", {**args, "number": "0102", "date": "2026-02-30"}, T1)
    c.run("scf.invoices", "confirm", {"key": keys[7], "due": c.date(60)}, CORE)
    c.run("scf.invoices", "confirm", {"key": keys[7], "due": c.date(60)}, CORE)
    c.run("scf.invoices", "confirm", {"key": keys[6], "due": c.date(-5)}, CORE)
    c.run("scf.invoices", "confirm", {"key": keys[6], "due": c.date(20)}, T1)
    c.run("scf.invoices", "confirm", {"key": keys[6], "due": c.date(20)}, CORE)
    c.run("scf.invoices", "confirm", {"key": f"{T1}:3100-9999", "due": c.date(20)}, CORE)
    c.run("scf.invoices", "bind", {"keys": [keys[0]], "seller": T1, "buyer": CORE, "instrument": "x"}, T1)
    # vouchers
    issue = {"to": T1, "face": 10_000_000, "maturity": c.date(90), "invoices": [keys[0]], "settlement_bank": BANK}
    v = c.run("scf.vouchers", "issue", issue, CORE)["result"]["voucher"]
    ids["v"] = v
    c.run("scf.vouchers", "issue", issue, CORE)  # the invoice is used
    c.run("scf.vouchers", "issue", {**issue, "invoices": [keys[1]], "face": 10_000_001}, CORE)
    c.run("scf.vouchers", "issue", {**issue, "invoices": [keys[1]], "maturity": c.date()}, CORE)
    c.run("scf.vouchers", "issue", {**issue, "invoices": [keys[1]], "settlement_bank": T2}, CORE)
    c.run("scf.vouchers", "issue", {**issue, "invoices": [keys[1]]}, T1)
    c.run("scf.vouchers", "issue", {**issue, "invoices": [keys[1], keys[1]]}, CORE)
    c.run("scf.vouchers", "accept", {"voucher": v}, T2)
    c.run("scf.vouchers", "accept", {"voucher": v}, T1)
    c.run("scf.vouchers", "accept", {"voucher": v}, T1)
    c.run("scf.vouchers", "accept", {"voucher": v + "x"}, T1)
    c.run("scf.vouchers", "accept", {"voucher": "V" + "0" * 64}, T1)
    a, b, rest = c.run("scf.vouchers", "split", {"voucher": v, "amounts": [3_000_000, 2_000_000]}, T1)["result"][
        "children"
    ]
    c.run("scf.vouchers", "split", {"voucher": v, "amounts": [1]}, T1)  # retired
    c.run("scf.vouchers", "split", {"voucher": a, "amounts": [3_000_001]}, T1)
    c.run("scf.vouchers", "split", {"voucher": a, "amounts": [3_000_000]}, T1)
    c.run("scf.vouchers", "split", {"voucher": a, "amounts": []}, T1)
    c.run("scf.vouchers", "offer", {"voucher": a, "to": T2}, T1)
    c.run("scf.vouchers", "offer", {"voucher": b, "to": T1}, T1)
    c.run("scf.vouchers", "reject", {"voucher": a}, T2)
    c.run("scf.vouchers", "reject", {"voucher": a}, T2)
    c.run("scf.vouchers", "offer", {"voucher": a, "to": T2}, T1)
    c.run("scf.vouchers", "split", {"voucher": a, "amounts": [1]}, T1)  # offered
    c.run("scf.vouchers", "accept", {"voucher": a}, T2)
    a1, a2 = c.run("scf.vouchers", "split", {"voucher": a, "amounts": [1_000_000]}, T2)["result"]["children"]
    c.run("scf.vouchers", "request_financing", {"voucher": b, "bank": T2, "rate_bps": 600}, T1)
    c.run("scf.vouchers", "request_financing", {"voucher": b, "bank": BANK, "rate_bps": 10_001}, T1)
    c.run("scf.vouchers", "request_financing", {"voucher": b, "bank": BANK, "rate_bps": 600}, T1)
    c.run("scf.vouchers", "cancel_financing", {"voucher": b}, T1)
    c.run("scf.vouchers", "cancel_financing", {"voucher": b}, T1)
    c.run("scf.vouchers", "request_financing", {"voucher": b, "bank": BANK, "rate_bps": 600}, T1)
    c.run("scf.vouchers", "cancel_financing", {"voucher": b}, BANK)
    c.run("scf.vouchers", "request_financing", {"voucher": b, "bank": BANK, "rate_bps": 600}, T1)
    c.run("scf.vouchers", "accept_financing", {"voucher": b}, T1)
    c.run("scf.vouchers", "accept_financing", {"voucher": b}, BANK)
    c.run("scf.vouchers", "request_financing", {"voucher": b, "bank": BANK, "rate_bps": 500}, BANK)
    c.run("scf.vouchers", "freeze", {"voucher": a1}, f"{REGULATOR}/peer0")
    c.run("scf.vouchers", "freeze", {"voucher": a1}, T1)
    c.run("scf.vouchers", "freeze", {"voucher": a1}, REGULATOR)
    c.run("scf.vouchers", "offer", {"voucher": a1, "to": T1}, T2)
    c.run("scf.vouchers", "freeze", {"voucher": a}, REGULATOR)  # retired
    c.run("scf.vouchers", "mark_overdue", {"voucher": v}, T2)
    c.run("scf.vouchers", "settle", {"voucher": v}, CORE)
    c.run("scf.vouchers", "settle", {"voucher": a}, CORE)
    v2 = c.run("scf.vouchers", "issue", {**issue, "invoices": [keys[1]], "maturity": c.date(30)}, CORE)["result"][
        "voucher"
    ]
    ids["v2"] = v2
    c.run("scf.vouchers", "offer", {"voucher": v2, "to": T2}, CORE)  # an offer is pending
    c.run("scf.vouchers", "accept", {"voucher": v2}, T1)
    c.advance(days=91)
    c.run("scf.vouchers", "split", {"voucher": rest, "amounts": [1]}, T1)  # matured
    c.run("scf.vouchers", "mark_overdue", {"voucher": v, "limit": 1}, LOGISTICS)
    c.run("scf.vouchers", "mark_overdue", {"voucher": v}, LOGISTICS)
    c.run("scf.vouchers", "mark_overdue", {"voucher": v}, LOGISTICS)
    c.run("scf.vouchers", "settle", {"voucher": v}, T1)
    c.run("scf.vouchers", "settle", {"voucher": v, "limit": 1}, CORE)
    c.run("scf.vouchers", "settle", {"voucher": v, "limit": 65}, CORE)
    c.run("scf.vouchers", "settle", {"voucher": v}, CORE)  # the frozen leaf waits
    c.run("scf.vouchers", "settle", {"voucher": v}, CORE)
    c.run("scf.vouchers", "unfreeze", {"voucher": a1}, REGULATOR)
    c.run("scf.vouchers", "settle", {"voucher": v}, CORE)
    c.run("scf.vouchers", "settle", {"voucher": v}, CORE)
    c.run("scf.vouchers", "settle", {"voucher": v2}, CORE)
    ids.update(a=a, b=b, rest=rest, a1=a1, a2=a2, keys=keys)
    return ids


def receipts(c: Recorder) -> dict[str, Any]:
    c.run("scf.receipts", "declare", {"lot": "L-1", "owner": T1, "goods": "steel coil", "quantity": 100}, WAREHOUSE)
    c.run("scf.receipts", "declare", {"lot": "L-1", "owner": T1, "goods": "steel coil", "quantity": 50}, WAREHOUSE)
    c.run("scf.receipts", "declare", {"lot": "L-1", "owner": T2, "goods": "steel coil", "quantity": 1}, WAREHOUSE)
    c.run("scf.receipts", "declare", {"lot": "L 2", "owner": T1, "goods": "x", "quantity": 1}, WAREHOUSE)
    c.run("scf.receipts", "declare", {"lot": "L-2", "owner": T1, "goods": "x", "quantity": 1}, T1)
    r1 = c.run("scf.receipts", "issue", {"warehouse": WAREHOUSE, "lot": "L-1", "quantity": 60}, WAREHOUSE, T1)[
        "result"
    ]["receipt"]
    c.run("scf.receipts", "issue", {"warehouse": WAREHOUSE, "lot": "L-1", "quantity": 91}, WAREHOUSE, T1)
    c.run("scf.receipts", "issue", {"warehouse": WAREHOUSE, "lot": "L-9", "quantity": 1}, WAREHOUSE, T1)
    r2 = c.run("scf.receipts", "issue", {"warehouse": WAREHOUSE, "lot": "L-1", "quantity": 40}, WAREHOUSE, T1)[
        "result"
    ]["receipt"]
    c.run("scf.receipts", "transfer", {"receipt": r1, "to": T2}, T1)
    c.run("scf.receipts", "transfer", {"receipt": r1, "to": T1}, T1)
    c.run("scf.receipts", "pledge", {"receipt": r1, "bank": BANK}, T2, BANK)
    c.run("scf.receipts", "pledge", {"receipt": r1, "bank": BANK}, T2, BANK)
    c.run("scf.receipts", "pledge", {"receipt": r2, "bank": T2}, T1, T2)
    c.run("scf.receipts", "transfer", {"receipt": r1, "to": T1}, T2)
    c.run("scf.receipts", "deliver", {"receipt": r1}, T2, WAREHOUSE)
    c.run("scf.receipts", "release", {"receipt": r1}, T2)
    c.run("scf.receipts", "release", {"receipt": r1}, BANK)
    c.run("scf.receipts", "release", {"receipt": r1}, BANK)
    c.run("scf.receipts", "deliver", {"receipt": r1}, T2, WAREHOUSE)
    c.run("scf.receipts", "deliver", {"receipt": r1}, T2, WAREHOUSE)
    c.run("scf.receipts", "cancel", {"receipt": r2}, T1)
    c.run("scf.receipts", "cancel", {"receipt": r2}, T1, WAREHOUSE)
    return {"r1": r1, "r2": r2}


def bills(c: Recorder) -> dict[str, Any]:
    issue = {"payee": T2, "acceptor": CORE, "amount": 1_000_000, "maturity": c.date(30), "settlement_bank": BANK}
    b1 = c.run("scf.bills", "issue", issue, T1)["result"]["bill"]
    c.run("scf.bills", "issue", {**issue, "payee": T1}, T1)
    c.run("scf.bills", "issue", {**issue, "settlement_bank": CORE}, T1)
    c.run("scf.bills", "endorse", {"bill": b1, "to": T1}, T2, T1)  # not accepted yet
    c.run("scf.bills", "accept", {"bill": b1}, T2)
    c.run("scf.bills", "accept", {"bill": b1}, CORE)
    c.run("scf.bills", "endorse", {"bill": b1, "to": T1}, T2)
    c.run("scf.bills", "endorse", {"bill": b1, "to": T1}, T2, T1)
    c.run("scf.bills", "pledge", {"bill": b1, "bank": BANK}, T1, BANK)
    c.run("scf.bills", "endorse", {"bill": b1, "to": T2}, T1, T2)
    c.run("scf.bills", "release", {"bill": b1}, BANK)
    c.run("scf.bills", "discount", {"bill": b1, "bank": BANK, "rate_bps": 500}, T1, BANK)
    b2 = c.run("scf.bills", "issue", {**issue, "payee": T1}, T2)["result"]["bill"]
    c.run("scf.bills", "accept", {"bill": b2}, CORE)
    c.run("scf.bills", "endorse", {"bill": b2, "to": LOGISTICS}, T1, LOGISTICS)
    c.run("scf.bills", "present", {"bill": b1}, BANK)
    c.advance(days=31)
    c.run("scf.bills", "endorse", {"bill": b2, "to": T1}, LOGISTICS, T1)
    c.run("scf.bills", "present", {"bill": b1}, BANK)
    c.run("scf.bills", "pay", {"bill": b1}, BANK)
    c.run("scf.bills", "pay", {"bill": b1}, CORE)
    c.run("scf.bills", "present", {"bill": b2}, LOGISTICS)
    c.run("scf.bills", "dishonour", {"bill": b2}, CORE)
    c.run("scf.bills", "recourse", {"bill": b2, "against": CUSTOMS}, LOGISTICS)
    c.run("scf.bills", "honour_recourse", {"bill": b2}, T1)
    c.run("scf.bills", "recourse", {"bill": b2, "against": T1}, LOGISTICS)
    c.run("scf.tokens", "issue", {"to": T1, "amount": 10_000_000}, BANK)
    c.run("scf.tokens", "issue", {"to": T2, "amount": 10_000_000}, BANK)
    c.run("scf.bills", "honour_recourse", {"bill": b2}, T1)
    c.run("scf.bills", "recourse", {"bill": b2, "against": T2}, T1)
    c.run("scf.bills", "honour_recourse", {"bill": b2}, T2)
    return {"b1": b1, "b2": b2}


def factoring(c: Recorder, keys: list[str]) -> dict[str, Any]:
    c.run(
        "scf.factoring", "open", {"seller": T1, "factor": T2, "advance_rate_bps": 8_000, "credit_line": 10**7}, T1, T2
    )
    c.run(
        "scf.factoring", "open", {"seller": T1, "factor": BANK, "advance_rate_bps": 10_001, "credit_line": 1}, T1, BANK
    )
    open_args = {"seller": T1, "factor": BANK, "advance_rate_bps": 8_000, "credit_line": 12_000_000}
    pool = c.run("scf.factoring", "open", open_args, T1, BANK)["result"]["pool"]
    vouchers = []
    for n, days in ((2, 30), (3, 60), (4, 90)):
        args = {"to": T1, "face": 5_000_000, "maturity": c.date(days), "invoices": [keys[n]], "settlement_bank": BANK}
        vid = c.run("scf.vouchers", "issue", args, CORE)["result"]["voucher"]
        c.run("scf.vouchers", "accept", {"voucher": vid}, T1)
        vouchers.append(vid)
    c.run("scf.factoring", "assign", {"pool": pool}, T1)
    c.run("scf.factoring", "assign", {"pool": pool, "vouchers": vouchers[:2]}, T2)
    c.run("scf.factoring", "assign", {"pool": pool, "vouchers": vouchers[:2], "invoices": [keys[5]]}, T1)  # unconfirmed
    c.run("scf.invoices", "confirm", {"key": keys[5], "due": c.date(45)}, CORE)
    c.run("scf.factoring", "assign", {"pool": pool, "vouchers": vouchers[:2], "invoices": [keys[5]]}, T1)
    c.run("scf.factoring", "assign", {"pool": pool, "vouchers": vouchers[:1]}, T1)
    c.run("scf.vouchers", "offer", {"voucher": vouchers[0], "to": T2}, BANK)
    c.run("scf.factoring", "draw", {"pool": pool, "amount": 12_000_001}, T1)
    c.run("scf.factoring", "draw", {"pool": pool, "amount": 11_000_000}, T1)
    c.run("scf.factoring", "repay", {"pool": pool, "amount": 11_000_001}, T1)
    c.run("scf.factoring", "repay", {"pool": pool, "amount": 1_000_000}, T1)
    c.run("scf.factoring", "withdraw", {"pool": pool, "voucher": vouchers[1]}, T1)
    c.run("scf.factoring", "assign", {"pool": pool, "vouchers": vouchers[2:]}, T1)
    c.run("scf.factoring", "withdraw", {"pool": pool, "voucher": vouchers[1]}, T1)
    c.run("scf.factoring", "collect_invoice", {"pool": pool, "invoice": keys[5]}, T1)
    c.run("scf.factoring", "collect_invoice", {"pool": pool, "invoice": keys[5]}, CORE)
    c.run("scf.factoring", "sweep", {"pool": pool}, LOGISTICS)
    c.advance(days=31)
    c.run("scf.vouchers", "settle", {"voucher": vouchers[0]}, CORE)
    c.run("scf.factoring", "sweep", {"pool": pool}, LOGISTICS)
    c.run("scf.factoring", "draw", {"pool": pool, "amount": 1}, T1)
    c.run("scf.factoring", "close", {"pool": pool}, T2)
    c.run("scf.factoring", "close", {"pool": pool}, BANK)
    c.run("scf.factoring", "close", {"pool": pool}, T1)
    c.run("scf.factoring", "assign", {"pool": pool, "vouchers": vouchers[1:2]}, T1)
    return {"pool": pool, "pool_vouchers": vouchers}


def trace(c: Recorder) -> dict[str, Any]:
    c.run("trace", "assign_prefix", {"prefix": "0614141", "org": BRAND}, BRAND)
    c.run("trace", "assign_prefix", {"prefix": "0614141", "org": BRAND}, *MAJORITY)
    c.run("trace", "assign_prefix", {"prefix": "06141410", "org": CORE}, *MAJORITY)
    c.run("trace", "assign_prefix", {"prefix": "4012345", "org": CORE}, *MAJORITY)
    c.run("trace", "set_policy", {"org_type": "customs", "own": False, "steps": ["inspecting", "*"]}, *MAJORITY)
    c.run("trace", "set_policy", {"org_type": "nobody", "own": False, "steps": []}, *MAJORITY)

    def event(epc: str, step: str, when: str, **extra: Any) -> dict[str, Any]:
        return {"type": "ObjectEvent", "eventTime": when, "eventTimeZoneOffset": "+08:00", "epcList": [epc],
                "action": "OBSERVE", "bizStep": step, **extra}  # fmt: skip

    def doc(events: list[dict[str, Any]]) -> bytes:
        return json.dumps(
            {"@context": ["https://ref.gs1.org/standards/epcis/epcis-context.jsonld"], "type": "EPCISDocument",
             "schemaVersion": "2.0", "creationDate": "2026-11-01T00:00:00Z", "epcisBody": {"eventList": events}}
        ).encode()  # fmt: skip

    def send(events: list[dict[str, Any]], who: str) -> None:
        prepared = capture.prepare(doc(events))  # capture.sign picks random nonces: built here instead
        c.block(*(c.tx("trace", "capture", capture.args_of(prepared, p), who) for p in capture.pack(prepared)))

    epc = "urn:epc:id:sgtin:0614141.107346.2017"
    other = "urn:epc:id:sgtin:4012345.011111.9876"
    place = {"readPoint": {"id": "urn:epc:id:sgln:0614141.00777.0"}}
    send([event(epc, "commissioning", "2026-01-02T10:00:00+08:00", eventID="urn:uuid:golden-1", **place)], BRAND)
    send([event(epc, "commissioning", "2026-01-02T10:00:00+08:00", eventID="urn:uuid:golden-1", **place)], BRAND)
    send([event(epc, "shipping", "2026-01-03T10:00:00+08:00", eventID="urn:uuid:golden-1")], LOGISTICS)
    send([event(other, "commissioning", "2026-01-03T11:00:00+08:00")], BRAND)
    send([event(other, "inspecting", "2026-01-04T11:00:00+08:00")], CUSTOMS)
    send([event(epc, "receiving", "2026-01-04T12:00:00+08:00")], f"{LOGISTICS}/peer0")
    c.run("trace", "capture", {"events": ["{"]}, BRAND)
    c.run("trace", "capture", {"events": ["[" * 40 + "]" * 40]}, BRAND)
    c.run("trace", "revoke_prefix", {"prefix": "4012345"}, *MAJORITY)
    c.run("trace", "revoke_prefix", {"prefix": "4012345"}, *MAJORITY)
    return {"epc": epc}


def dg(c: Recorder) -> dict[str, Any]:
    fps = {}
    for org in (SHIPPER, CARRIER, PORT_A, PORT_B):
        raw = filler(f"key-{org}", 32)
        fps[org] = c.run("dg", "register_key", {"key": b64(raw)}, org)["result"]["fp"]
    c.run("dg", "register_key", {"key": b64(filler("k", 31))}, CORE)
    c.run("dg", "register_key", {"key": b64(filler("k", 32))}, f"{CORE}/alice")

    def wrap(org: str, n: int) -> dict[str, str]:
        label = f"{org}-{n}"
        return {"epk": b64(filler("e" + label, 32)), "nonce": b64(filler("n" + label, 12)),
                "wrapped": b64(filler("w" + label, 48)), "fp": fps[org]}  # fmt: skip

    decl = f"{SHIPPER}/DG-1"
    sealed = {"ct": b64(filler("ct1", 300)), "nonce": b64(filler("nonce1", 12))}
    both = {SHIPPER: wrap(SHIPPER, 1), CARRIER: wrap(CARRIER, 1)}
    c.run("dg", "submit", {"id": f"{CORE}/DG-1", "carrier": CARRIER, "terminals": [], **sealed, "keys": both}, SHIPPER)
    c.run("dg", "submit", {"id": decl, "carrier": PORT_A, "terminals": [], **sealed, "keys": both}, SHIPPER)
    c.run("dg", "submit", {"id": decl, "carrier": CARRIER, "terminals": [PORT_A], **sealed, "keys": {}}, SHIPPER)
    c.run("dg", "submit", {"id": decl + "\n", "carrier": CARRIER, "terminals": [], **sealed, "keys": both}, SHIPPER)
    c.run("dg", "submit", {"id": decl, "carrier": CARRIER, "terminals": [PORT_A], **sealed, "keys": both}, SHIPPER)
    c.run("dg", "submit", {"id": decl, "carrier": CARRIER, "terminals": [PORT_A], **sealed, "keys": both}, SHIPPER)
    c.run("dg", "approve", {"id": decl, "version": 1, "keys": {PORT_A: wrap(PORT_A, 1)}}, SHIPPER)
    c.run("dg", "approve", {"id": decl, "version": 1, "keys": {PORT_B: wrap(PORT_B, 1)}}, CARRIER)
    c.run("dg", "approve", {"id": decl, "version": 1, "keys": {PORT_A: wrap(PORT_A, 1)}}, CARRIER)
    c.run("dg", "approve", {"id": decl, "version": 1, "keys": {PORT_A: wrap(PORT_A, 1)}}, CARRIER)
    sealed2 = {"ct": b64(filler("ct2", 280)), "nonce": b64(filler("nonce2", 12))}
    both2 = {SHIPPER: wrap(SHIPPER, 2), CARRIER: wrap(CARRIER, 2)}
    c.run("dg", "amend", {"id": decl, "prev": 2, **sealed2, "keys": both2}, SHIPPER)
    c.run("dg", "amend", {"id": decl, "prev": 1, **sealed2, "keys": both2}, CARRIER)
    c.run("dg", "amend", {"id": decl, "prev": 1, **sealed2, "keys": both2, "terminals": [PORT_A, PORT_B]}, SHIPPER)
    reason = {"ct": b64(filler("why", 40)), "nonce": b64(filler("why-n", 12))}
    c.run(
        "dg", "reject", {"id": decl, "version": 2, "reason": {"ct": b64(b"short"), "nonce": reason["nonce"]}}, CARRIER
    )
    c.run("dg", "reject", {"id": decl, "version": 2, "reason": "it leaks"}, CARRIER)
    c.run("dg", "reject", {"id": decl, "version": 2, "reason": reason}, CARRIER)
    both3 = {SHIPPER: wrap(SHIPPER, 3), CARRIER: wrap(CARRIER, 3)}
    c.run("dg", "amend", {"id": decl, "prev": 2, **sealed, "keys": both3}, SHIPPER)
    return {"decl": decl}


def wallet_and_consortium(c: Recorder) -> None:
    c.run("demo.wallet", "mint", {"to": f"{T1}/alice", "amount": 1_000}, CORE)
    c.run("demo.wallet", "mint", {"to": f"{T1}/alice", "amount": 1_000}, f"{CORE}/alice")
    c.run("demo.wallet", "mint", {"to": "nobody", "amount": 1}, CORE)
    c.run("demo.wallet", "transfer", {"to": f"{T2}/bob", "amount": 400, "memo": "tea"}, f"{T1}/alice")
    c.run("demo.wallet", "transfer", {"to": f"{T1}/alice", "amount": 1}, f"{T1}/alice")
    c.run("demo.wallet", "transfer", {"to": f"{T2}/bob", "amount": 10_000}, f"{T1}/alice")
    c.run("demo.wallet", "transfer", {"to": f"{T2}/bob", "amount": "1"}, f"{T1}/alice")
    c.run("consortium", "set_policy", {"name": "finality", "num": 2, "den": 3}, *MAJORITY)
    c.run("consortium", "set_policy", {"name": "finality", "num": 1, "den": 3}, *MAJORITY)
    fingerprint = hashlib.sha256(c.consortium.org(T2).members["bob"].cert).hexdigest()
    c.run("consortium", "revoke_cert", {"fingerprint": fingerprint, "reason": "lost"}, *MAJORITY)
    c.run("demo.wallet", "transfer", {"to": f"{T1}/alice", "amount": 1}, f"{T2}/bob")


def queries(c: Recorder, ids: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    v, pool = ids["v"], ids["pool"]
    out: list[tuple[str, str, dict[str, Any]]] = [
        ("consortium", "config", {}),
        ("consortium", "org", {"org_id": T1}),
        ("demo.wallet", "balance", {"member": f"{T1}/alice"}),
        ("demo.wallet", "supply", {}),
        ("scf.tokens", "supply", {"bank": BANK}),
        ("scf.tokens", "balance", {"bank": BANK, "org": T1}),
        ("scf.vouchers", "tree", {"voucher": ids["a1"]}),
        ("scf.vouchers", "tree", {"voucher": ids["v2"]}),
        ("scf.vouchers", "maturities", {"until": "2099-01-01"}),
        ("scf.vouchers", "maturities", {"until": "2099-01-01", "limit": 1}),
        ("scf.vouchers", "all_roots", {}),
        ("scf.vouchers", "all_roots", {"limit": 2}),
        ("scf.vouchers", "roots", {"org": CORE, "limit": 1}),
        ("scf.factoring", "pool", {"pool": pool}),
        ("scf.factoring", "pools", {"org": T1}),
        ("scf.factoring", "pools", {"org": BANK, "limit": 1}),
        ("scf.receipts", "lot", {"warehouse": WAREHOUSE, "lot": "L-1"}),
        ("scf.bills", "bill", {"bill": ids["b1"]}),
        ("scf.bills", "bill", {"bill": ids["b2"]}),
        ("trace", "policies", {}),
        ("trace", "policy", {"org_type": "customs"}),
        ("trace", "prefixes", {}),
        ("trace", "event", {"id": "urn:uuid:golden-1"}),
        ("dg", "versions", {"id": ids["decl"]}),
        ("dg", "declaration", {"id": ids["decl"]}),
        ("dg", "declaration", {"id": ids["decl"], "version": 1}),
        ("dg", "key", {"org": CARRIER}),
        ("dg", "key", {"org": CORE}),
        ("scf.vouchers", "voucher", {"voucher": "V" + "1" * 64}),
    ]
    for vid in [v, ids["v2"], ids["a"], ids["b"], ids["rest"], ids["a1"], ids["a2"], *ids["pool_vouchers"]]:
        out.append(("scf.vouchers", "voucher", {"voucher": vid}))
    for vid in (f"{v}.1", f"{v}.1.1"):
        out.append(("scf.vouchers", "voucher", {"voucher": vid}))
    for org in (CORE, T1, T2, BANK, LOGISTICS):
        out.append(("scf.vouchers", "portfolio", {"org": org}))
        out.append(("scf.vouchers", "portfolio", {"org": org, "limit": 1}))
        out.append(("scf.vouchers", "financed_book", {"org": org}))
        out.append(("scf.vouchers", "roots", {"org": org}))
        out.append(("scf.tokens", "balance", {"bank": BANK, "org": org}))
    for key in ids["keys"]:
        out.append(("scf.invoices", "invoice", {"key": key}))
    for rid in (ids["r1"], ids["r2"]):
        out.append(("scf.receipts", "receipt", {"receipt": rid}))
    return out


def run() -> tuple[Recorder, list[bytes]]:
    """The whole scenario; the chain and each query's canonical answer (or its refusal)."""
    c = Recorder()
    ids = scf(c)
    ids.update(receipts(c))
    ids.update(bills(c))
    ids.update(factoring(c, ids["keys"]))
    ids.update(trace(c))
    ids.update(dg(c))
    wallet_and_consortium(c)
    answers = []
    first = queries(c, ids)
    # a second page of every paged answer, through its cursor
    for contract, method, args in list(first):
        try:
            result = c.query(contract, method, args)
        except ContractFailure as exc:
            answers.append(encoding.canonical({"code": exc.code, "message": exc.message}))
            continue
        answers.append(encoding.canonical(result))
        if isinstance(result, dict) and result.get("next"):
            page2 = c.query(contract, method, {**args, "after": result["next"]})
            answers.append(encoding.canonical(page2))
    return c, answers


def digest(parts: Sequence[bytes]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(4, "big") + p)
    return h.hexdigest()
