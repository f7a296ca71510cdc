"""Typed records store the same bytes as the dicts they replaced: no chain migration, no changed receipt.

The golden run (``golden_scenario``) goes through every built-in contract, its refusals included. Its
numbers were recorded on the code before contract records became msgspec structs (commit 0e9f211), so a
change in any stored value, receipt (code, message, result, events) or query answer fails here.

A change that means to alter what a contract records (a new rule, a new field) alters these numbers too: it
says so in its commit and records the new ones (``cd tests && python -c "import golden_scenario as g;
c, a = g.run(); print(c.state_hash, g.digest(c.receipts), g.digest(a))"``). A refactor never does.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

import golden_scenario
from liangcao import encoding
from liangcao.apps.scf.bills import Bill
from liangcao.apps.scf.common import ScfCode
from liangcao.apps.scf.factoring import Asset, Pool
from liangcao.apps.scf.invoices import Confirmation, Invoice
from liangcao.apps.scf.receipts import Lot, WarehouseReceipt
from liangcao.apps.scf.tokens import Token
from liangcao.apps.scf.vouchers import Financing, Voucher
from liangcao.apps.shipping.dangerous_goods import Decision, Head, KeyEntry, SealedReason, Version, Wrap
from liangcao.contracts.base import Record
from liangcao.contracts.consortium import ChainRecord, OrgRecord, Revocation
from liangcao.contracts.consortium import Policy as ConsortiumPolicy
from liangcao.errors import InvariantViolation
from liangcao.testing import Chain

# Recorded on commit 0e9f211 (records as dicts), before records became typed structs.
GOLDEN_STATE_HASH = "7188d289802e83183bcc3c4911cf6edefe1769637e1d459a980be624f3bc1f2b"
GOLDEN_RECEIPTS = "f3e05d195855c0e680987722097259b73de596b0c53d9def8cc70f95cb00c062"
# Queries re-recorded when the organisation types factor, spv, rating_agency and investor were added (receivable
# ABS): the trace contract's policy table lists every type. State and receipts are unchanged.
GOLDEN_QUERIES = "0d42273fffc1d3bced78f129a0f8378f1b389dea7576cc2c38b1ace348998ff0"


def test_golden_run_gives_the_recorded_bytes() -> None:
    chain, answers = golden_scenario.run()
    assert len(chain.receipts) == 232 and len(answers) == 79
    assert golden_scenario.digest(chain.receipts) == GOLDEN_RECEIPTS
    assert chain.state_hash == GOLDEN_STATE_HASH
    assert golden_scenario.digest(answers) == GOLDEN_QUERIES


# ---- each record type: the dict the old code built and the struct the new code builds, byte for byte ------------
V = "V" + "ab" * 32
P = "P" + "cd" * 32
TX = "ef" * 32
WRAP = {"epk": "ZXBr", "nonce": "bm9uY2U=", "wrapped": "d3JhcHBlZA==", "fp": "0" * 32}


def _old_voucher() -> dict[str, Any]:
    # as scf.vouchers.issue built it (before records were typed)
    return {
        "id": V, "root": V, "parent": None, "children": [], "issuer": "org1", "holder": "org1", "offer_to": "org2",
        "face": 1_000_000, "maturity_day": 20_500, "maturity": "2026-02-16", "settlement_bank": "org4",
        "invoices": ["org2:3100-0001"], "status": "active", "financing": None, "financed_by": None, "frozen": False,
        "pool": None, "issued_day": 20_454, "budget": 1000, "paid": 0,
    }  # fmt: skip


def _new_voucher() -> Voucher:
    return Voucher(
        id=V, root=V, parent=None, children=[], issuer="org1", holder="org1", offer_to="org2", face=1_000_000,
        maturity_day=20_500, maturity="2026-02-16", settlement_bank="org4", invoices=["org2:3100-0001"],
        status="active", financing=None, financed_by=None, frozen=False, pool=None, issued_day=20_454, budget=1000,
        paid=0,
    )  # fmt: skip


def _old_invoice() -> dict[str, Any]:
    return {"key": "org2:3100-0001", "seller": "org2", "buyer": "org1", "amount": 5, "day": 20_454,
            "date": "2026-01-01", "doc_hash": "a" * 64, "used_by": None, "confirmed": None}  # fmt: skip


def _new_invoice() -> Invoice:
    return Invoice(key="org2:3100-0001", seller="org2", buyer="org1", amount=5, day=20_454, date="2026-01-01",
                   doc_hash="a" * 64, used_by=None, confirmed=None)  # fmt: skip


def _old_version() -> dict[str, Any]:
    record = {"id": "org10/DG-1", "version": 1, "prev": 0, "shipper": "org10", "carrier": "org11",
              "terminals": ["org12"]}  # fmt: skip
    record.update({"status": "submitted", "ct": "Y3Q=", "nonce": "bm9uY2U=", "keys": {"org10": WRAP, "org11": WRAP},
                   "by": "org10/admin", "tx": TX, "height": 7, "time_ms": 1, "decision": None})  # fmt: skip
    return record


def _new_version() -> Version:
    wrap = msgspec.convert(WRAP, Wrap)
    return Version(id="org10/DG-1", version=1, prev=0, shipper="org10", carrier="org11", terminals=["org12"],
                   status="submitted", ct="Y3Q=", nonce="bm9uY2U=", keys={"org10": wrap, "org11": wrap},
                   by="org10/admin", tx=TX, height=7, time_ms=1, decision=None)  # fmt: skip


def _cases() -> dict[str, tuple[Any, Any]]:
    old_v, new_v = _old_voucher(), _new_voucher()
    part_old = {**{k: x for k, x in old_v.items() if k != "paid"}, "id": V + ".1", "parent": V, "children": [],
                "face": 400_000, "offer_to": None, "budget": 400}  # fmt: skip
    part_new = new_v.replace(id=V + ".1", parent=V, children=[], face=400_000, offer_to=None, budget=400,
                             paid=msgspec.UNSET)  # fmt: skip
    financed_old = {**part_old, "financing": {"bank": "org4", "rate_bps": 600}}
    financed_new = part_new.replace(financing=Financing(bank="org4", rate_bps=600))
    confirmed = {"due_day": 20_500, "due": "2026-02-16", "by": "org1/admin", "height": 9}
    old_dg, new_dg = _old_version(), _new_version()
    approved_old = {**old_dg, "status": "approved", "keys": {**old_dg["keys"], "org12": WRAP}}
    approved_old["decision"] = {"by": "org11/admin", "tx": TX, "height": 8, "time_ms": 2}
    approved_new = new_dg.replace(
        status="approved",
        keys={**new_dg.keys, "org12": msgspec.convert(WRAP, Wrap)},
        decision=Decision(by="org11/admin", tx=TX, height=8, time_ms=2),
    )
    reason = {"ct": "cmVhc29uIHNlYWxlZCBoZXJl", "nonce": "bm9uY2U="}
    rejected_old = {**old_dg, "status": "rejected"}
    rejected_old["decision"] = {"by": "org11/admin", "tx": TX, "height": 8, "time_ms": 2, "reason": reason}
    rejected_new = new_dg.replace(
        status="rejected",
        decision=Decision(by="org11/admin", tx=TX, height=8, time_ms=2, reason=msgspec.convert(reason, SealedReason)),
    )
    asset_v = {"id": V, "kind": "voucher", "face": 5, "maturity_day": 20_500}
    asset_v["maturity"] = "2026-02-16"
    asset_i = {"id": "org2:3100-0001", "kind": "invoice", "face": 5, "maturity_day": 20_500, "buyer": "org1"}
    asset_i["maturity"] = "2026-02-16"
    return {
        "voucher (root)": (old_v, new_v),
        "voucher (a part: no paid field)": (part_old, part_new),
        "voucher (financing requested)": (financed_old, financed_new),
        "voucher (split: retired)": (
            {**old_v, "status": "retired", "children": [V + ".1", V + ".2"]},
            new_v.replace(status="retired", children=[V + ".1", V + ".2"]),
        ),
        "invoice (registered)": (_old_invoice(), _new_invoice()),
        "invoice (confirmed)": (
            {**_old_invoice(), "confirmed": confirmed},
            _new_invoice().replace(confirmed=Confirmation(due_day=20_500, due="2026-02-16", by="org1/admin", height=9)),
        ),
        "token": (
            {"bank": "org4", "currency": "CNY", "issued": 10, "redeemed": 0},
            Token(bank="org4").replace(issued=10),
        ),
        "bill": (
            {
                "id": "B" + "1" * 64,
                "drawer": "org2",
                "payee": "org3",
                "acceptor": "org1",
                "amount": 9,
                "maturity_day": 20_500,
                "maturity": "2026-02-16",
                "settlement_bank": "org4",
                "holder": "org3",
                "endorsers": [],
                "status": "issued",
                "pledged_to": None,
                "discounted_by": None,
                "recourse_against": None,
            },
            Bill(
                id="B" + "1" * 64,
                drawer="org2",
                payee="org3",
                acceptor="org1",
                amount=9,
                maturity_day=20_500,
                maturity="2026-02-16",
                settlement_bank="org4",
                holder="org3",
                endorsers=[],
                status="issued",
                pledged_to=None,
                discounted_by=None,
                recourse_against=None,
            ),
        ),
        "lot": (
            {"lot": "L-1", "warehouse": "org5", "owner": "org2", "goods": "rice", "stock": 3, "reserved": 0},
            Lot(lot="L-1", warehouse="org5", owner="org2", goods="rice", stock=3, reserved=0),
        ),
        "warehouse receipt": (
            {
                "id": "R" + "2" * 64,
                "lot": "L-1",
                "warehouse": "org5",
                "goods": "rice",
                "quantity": 2,
                "holder": "org2",
                "pledged_to": "org4",
                "status": "open",
            },
            WarehouseReceipt(
                id="R" + "2" * 64,
                lot="L-1",
                warehouse="org5",
                goods="rice",
                quantity=2,
                holder="org2",
                pledged_to="org4",
                status="open",
            ),
        ),
        "pool": (
            {
                "id": P,
                "seller": "org2",
                "factor": "org4",
                "token": "org4",
                "advance_rate_bps": 8000,
                "credit_line": 100,
                "advanced": 0,
                "collected": 0,
                "assets_in": 0,
                "status": "open",
                "opened": "2026-01-01",
            },
            Pool(
                id=P,
                seller="org2",
                factor="org4",
                token="org4",
                advance_rate_bps=8000,
                credit_line=100,
                advanced=0,
                collected=0,
                assets_in=0,
                status="open",
                opened="2026-01-01",
            ),
        ),
        "pool asset (voucher: no buyer field)": (
            asset_v,
            Asset(id=V, kind="voucher", face=5, maturity_day=20_500, maturity="2026-02-16"),
        ),
        "pool asset (invoice)": (
            asset_i,
            Asset(
                id="org2:3100-0001", kind="invoice", face=5, maturity_day=20_500, buyer="org1", maturity="2026-02-16"
            ),
        ),
        "dg key": (
            {"org": "org10", "key": "a2V5", "fp": "0" * 32, "height": 3},
            KeyEntry(org="org10", key="a2V5", fp="0" * 32, height=3),
        ),
        "dg version (submitted)": (old_dg, new_dg),
        "dg version (approved: decision without reason)": (approved_old, approved_new),
        "dg version (rejected: sealed reason)": (rejected_old, rejected_new),
        "dg version (superseded)": ({**old_dg, "status": "superseded"}, new_dg.replace(status="superseded")),
        "dg head": ({"version": 1, "status": "submitted"}, Head(version=1, status="submitted")),
        "consortium org": (
            {"org_id": "org1", "name": "One", "type": "bank", "ca_cert": "Y2E=", "active": True},
            OrgRecord(org_id="org1", name="One", type="bank", ca_cert="Y2E=", active=True),
        ),
        "consortium org (removed)": (
            {"org_id": "org1", "name": "One", "type": "bank", "ca_cert": "Y2E=", "active": False},
            OrgRecord(org_id="org1", name="One", type="bank", ca_cert="Y2E=", active=True).replace(active=False),
        ),
        "consortium chain": (
            {"chain_id": "c", "name": "n", "created_ms": 5},
            ChainRecord(chain_id="c", name="n", created_ms=5),
        ),
        "consortium revocation": (
            {"fingerprint": "f" * 64, "reason": "", "height": 4},
            Revocation(fingerprint="f" * 64, reason="", height=4),
        ),
        "consortium policy": ({"num": 1, "den": 2}, ConsortiumPolicy(num=1, den=2)),
    }


CASES = _cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_old_dict_and_the_typed_record_store_the_same_bytes(name: str) -> None:
    old, new = CASES[name]
    stored = encoding.canonical(old)
    assert encoding.canonical(msgspec.to_builtins(new)) == stored
    # and the stored bytes read back as the record type and write back unchanged
    again = msgspec.json.decode(stored, type=type(new))
    assert again == new and encoding.canonical(again.to_value()) == stored


#: Where each record type lives (full key prefixes), for the round trip of a whole chain's state.
RECORD_TYPES: dict[str, type[Record]] = {
    "consortium/org/": OrgRecord,
    "consortium/chain": ChainRecord,
    "consortium/revoked/": Revocation,
    "consortium/policy/": ConsortiumPolicy,
    "scf.tokens/token/": Token,
    "scf.invoices/inv/": Invoice,
    "scf.vouchers/v/": Voucher,
    "scf.bills/b/": Bill,
    "scf.receipts/lot/": Lot,
    "scf.receipts/r/": WarehouseReceipt,
    "scf.factoring/p/": Pool,
    "scf.factoring/a/": Asset,
    "dg/k/": KeyEntry,
    "dg/d/": Version,
    "dg/h/": Head,
}


def test_every_record_of_the_golden_run_reads_as_its_type_and_writes_back_the_same_bytes() -> None:
    chain, _ = golden_scenario.run()
    seen: dict[str, int] = {}
    for key, raw in chain.state.data.items():
        for prefix, record_type in RECORD_TYPES.items():
            if key.startswith(prefix):
                record = msgspec.json.decode(raw, type=record_type)
                assert encoding.canonical(record.to_value()) == raw, key
                seen[prefix] = seen.get(prefix, 0) + 1
    assert set(seen) == set(RECORD_TYPES), set(RECORD_TYPES) - set(seen)


def test_an_invoice_registered_before_confirmation_existed_keeps_its_bytes_and_reads_as_unconfirmed() -> None:
    chain = Chain(["core_enterprise", "supplier", "bank"])
    legacy = {k: x for k, x in _old_invoice().items() if k != "confirmed"}  # as first released: no such field
    legacy.update(key="org2:3100-0001", seller="org2", buyer="org1", amount=500, day=chain.today, date=chain.date())
    chain.state.apply({"scf.invoices/inv/org2:3100-0001": encoding.canonical(legacy)}, [])
    assert chain.query("scf.invoices", "invoice", {"key": "org2:3100-0001"}) == legacy
    chain.ok("scf.tokens", "issue", {"to": "org1", "amount": 10_000}, "org3")
    issue = {"to": "org2", "face": 500, "maturity": chain.date(30), "invoices": ["org2:3100-0001"],
             "settlement_bank": "org3"}  # fmt: skip
    vid = chain.ok("scf.vouchers", "issue", issue, "org1")["voucher"]
    # binding rewrote the record: used_by changed, and still no confirmation field
    assert chain.state.data["scf.invoices/inv/org2:3100-0001"] == encoding.canonical({**legacy, "used_by": vid})
    # a pool reads the missing field as "not confirmed"
    chain.state.apply({"scf.invoices/inv/org2:3100-0002": encoding.canonical({**legacy, "key": "org2:3100-0002"})}, [])
    pool = chain.ok(
        "scf.factoring", "open", {"seller": "org2", "factor": "org3", "advance_rate_bps": 8000, "credit_line": 100},
        "org2", "org3",
    )["pool"]  # fmt: skip
    chain.fails(
        ScfCode.NOT_CONFIRMED, "scf.factoring", "assign", {"pool": pool, "invoices": ["org2:3100-0002"]}, "org2"
    )


def test_a_stored_value_that_does_not_fit_its_record_type_stops_the_commit() -> None:
    """Never a receipt: dropping the unknown field on the next write would change stored bytes."""
    chain = Chain(["core_enterprise", "supplier", "bank"])
    chain.state.apply({f"scf.vouchers/v/{V}": encoding.canonical({**_old_voucher(), "colour": "red"})}, [])
    with pytest.raises(InvariantViolation, match="does not hold a Voucher"):
        chain.run("scf.vouchers", "accept", {"voucher": V}, "org2")


def test_trace_records_store_the_bytes_their_dicts_did() -> None:
    from liangcao.apps.trace.anchor import EventRecord, RecordingPolicy

    event = {"id": "ni:///sha-256;" + "a" * 64 + "?ver=CBV2.0", "type": "ObjectEvent", "time_ms": 5, "org": "org7",
             "by": "org7/admin", "tx": TX, "height": 3, "record_ms": 6, "event": '{"type":"ObjectEvent"}',
             "context": "", "ignore": []}  # fmt: skip
    new = EventRecord(**event)
    assert encoding.canonical(new.to_value()) == encoding.canonical(event)
    policy = {"own": False, "steps": ["*", "inspecting"]}
    assert encoding.canonical(RecordingPolicy(own=False, steps=["*", "inspecting"]).to_value()) == encoding.canonical(
        policy
    )
    chain, _ = golden_scenario.run()
    for prefix, record_type in (("trace/e/", EventRecord), ("trace/p/", RecordingPolicy)):
        stored = [raw for key, raw in chain.state.data.items() if key.startswith(prefix)]
        assert stored, prefix
        for raw in stored:
            assert encoding.canonical(msgspec.json.decode(raw, type=record_type).to_value()) == raw


def test_released_argument_rules_keep_their_text() -> None:
    """A refused argument's receipt quotes its rule, so the rules built from one definition are the old text."""
    from liangcao.apps.scf.invoices import InvoiceKey
    from liangcao.apps.shipping.dangerous_goods import DeclId
    from liangcao.domain import MemberId, Money, OrgId

    def info(t: Any) -> Any:
        return msgspec.inspect.type_info(t)

    assert info(OrgId).pattern == r"^[a-z0-9][a-z0-9_-]{0,31}$"
    assert info(MemberId).pattern == r"^[a-z0-9][a-z0-9_-]{0,31}/[^/\s]{1,64}$"
    assert info(InvoiceKey).pattern == r"^[a-z0-9][a-z0-9_-]{0,31}:[0-9A-Za-z]{1,20}-[0-9A-Za-z]{1,20}$"
    assert info(DeclId).pattern == r"^[a-z0-9][a-z0-9_-]{0,31}/[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z"
    assert (info(Money).gt, info(Money).le) == (0, 10**15)
