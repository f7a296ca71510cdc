"""Supply-chain finance against a hostile member: each test performs an attack and checks its refusal or outcome.

1. one holder splits its part into ~130 leaves: settlement goes on in pages, each leaf paid exactly once;
   what one holder can split is bounded by its share of ``voucher_leaves_max`` and by ``split_depth_max``;
2. instrument ids are whole transaction ids, and a record already at an id is never overwritten;
3. an invoice enters a factoring pool only once its buyer confirmed it, due when the buyer said;
4. the factor is repaid in the pool's token, never in one the buyer (or the voucher's issuer) picks;
5. read models are paged: no holder can push a read past ``range_results_max`` for everyone;
6. invoice numbers and warehouse lots are scoped by their owner: nobody can squat another's name.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import NOW_MS
from liangcao import encoding, limits
from liangcao.apps.scf.common import ScfCode
from liangcao.codes import Code
from liangcao.contracts.index import page
from liangcao.errors import ContractFailure
from liangcao.ledger import tx as txm
from liangcao.ledger.state import MemoryState
from liangcao.node.genesis import Consortium, create_consortium
from scf_ledger import BANK, CORE, DAY_MS, REGULATOR, T1, T2, T3, TYPES, WAREHOUSE, Ledger, register_invoice

# The SCF consortium (org1..org7 as in scf_ledger) and a second bank and a second warehouse.
HOSTILE: Consortium = create_consortium(
    9, org_types=[*TYPES, "bank", "warehouse"], now_ms=NOW_MS, chain_id="scf-hostile"
)
BANK2, WAREHOUSE2 = "org8", "org9"


def ledger() -> Ledger:
    led = Ledger(HOSTILE)
    led.ok("scf.tokens", "issue", {"to": BANK, "amount": 10**13}, BANK)
    led.ok("scf.tokens", "issue", {"to": CORE, "amount": 10**13}, BANK)
    return led


def held_voucher(led: Ledger, to: str, face: int, days: int, number: str, bank: str = BANK) -> str:
    """A voucher the core enterprise issued to ``to`` on a fresh invoice, accepted."""
    inv = register_invoice(led, to, CORE, face, number)
    args = {"to": to, "face": face, "maturity": led.today_iso(days), "invoices": [inv], "settlement_bank": bank}
    vid = str(led.ok("scf.vouchers", "issue", args, CORE)["voucher"])
    led.ok("scf.vouchers", "accept", {"voucher": vid}, to)
    return vid


def voucher(led: Ledger, vid: str) -> dict[str, Any]:
    v: dict[str, Any] = led.query("scf.vouchers", "voucher", {"voucher": vid})
    return v


def explode(led: Ledger, vid: str, holder: str, wanted: int) -> list[str]:
    """The attack: ``holder`` splits the part it holds into ``wanted`` leaves (as many as its budget allows),
    always splitting the leaf with the most budget left into equal pieces (so the tree stays shallow)."""
    leaves = [vid]
    while len(leaves) < wanted:
        v = max((voucher(led, lid) for lid in leaves), key=lambda x: (x["budget"], x["face"]))
        k = min(limits.split_children_max, v["budget"], wanted - len(leaves) + 1, v["face"])
        if k < 2:
            break
        amounts = [v["face"] // k] * (k - 1)
        children = led.ok("scf.vouchers", "split", {"voucher": v["id"], "amounts": amounts}, holder)["children"]
        leaves.remove(v["id"])
        leaves += children
    return leaves


def settle_all(led: Ledger, root: str, limit: int = limits.settle_page_max) -> list[dict[str, Any]]:
    """Settle page after page until the root says nothing remains; returns every page's result."""
    pages = []
    while True:
        r = led.ok("scf.vouchers", "settle", {"voucher": root, "limit": limit}, CORE)
        assert len(r["payments"]) <= limit
        pages.append(r)
        if r["done"]:
            return pages
        assert len(pages) <= limits.voucher_leaves_max  # every page pays at least one leaf


def leaves_of(tree: dict[str, Any]) -> list[dict[str, Any]]:
    return [tree] if not tree["children"] else [leaf for c in tree["children"] for leaf in leaves_of(c)]


# ---- 1. settlement of a tree one holder split into many leaves ----------------------------------------------
def test_a_holder_splitting_into_130_leaves_cannot_block_settlement() -> None:
    led = ledger()
    root = held_voucher(led, T1, 10_000_000, 30, "s1")
    # tier 1 passes 2,000,000.00 to tier 2 (the attacker) and has the bank finance the 8,000,000.00 it keeps
    part, kept = led.ok("scf.vouchers", "split", {"voucher": root, "amounts": [2_000_000]}, T1)["children"]
    led.ok("scf.vouchers", "offer", {"voucher": part, "to": T2}, T1)
    led.ok("scf.vouchers", "accept", {"voucher": part}, T2)
    led.ok("scf.vouchers", "request_financing", {"voucher": kept, "bank": BANK, "rate_bps": 500}, T1)
    led.ok("scf.vouchers", "accept_financing", {"voucher": kept}, BANK)
    # the attack: tier 2 splits its part into 130 leaves and passes a few to tier 3
    leaves = explode(led, part, T2, 130)
    assert len(leaves) == 130
    for lid in leaves[:3]:
        led.ok("scf.vouchers", "offer", {"voucher": lid, "to": T3}, T2)
        led.ok("scf.vouchers", "accept", {"voucher": lid}, T3)
    # paying 131 leaves in one transaction would need two events each, more than events_per_tx_max
    assert 2 * (len(leaves) + 1) > limits.events_per_tx_max
    tree = led.query("scf.vouchers", "tree", {"voucher": root})
    owed: dict[str, int] = {}
    for leaf in leaves_of(tree):
        owed[leaf["holder"]] = owed.get(leaf["holder"], 0) + leaf["face"]
    assert owed[BANK] == 8_000_000 and sum(owed.values()) == 10_000_000
    before = {org: led.balance(org) for org in (CORE, BANK, T2, T3)}
    assert led.run("scf.vouchers", "settle", {"voucher": root}, CORE)["code"] == ScfCode.NOT_MATURE
    led.time_ms += 30 * DAY_MS
    assert led.run("scf.vouchers", "settle", {"voucher": root}, T2)["code"] == ScfCode.NOT_PARTY  # the issuer pays
    assert led.run("scf.vouchers", "settle", {"voucher": part}, CORE)["code"] == Code.INVALID_ARGUMENT  # the root
    pages = settle_all(led, root)
    assert len(pages) == 3  # 131 unpaid leaves, 64 a page
    paid = [p for page_ in pages for p in page_["payments"]]
    assert sorted(p["voucher"] for p in paid) == sorted(leaf["id"] for leaf in leaves_of(tree))  # each once
    assert [page_["remaining"] for page_ in pages] == [
        10_000_000 - sum(p["amount"] for pg in pages[: i + 1] for p in pg["payments"]) for i in range(3)
    ]
    assert pages[-1]["remaining"] == 0 and pages[-1]["paid"] == 10_000_000
    # the financing bank is paid; every holder exactly what it held; the issuer exactly the face
    assert led.balance(BANK) - before[BANK] == owed[BANK]
    assert led.balance(T2) - before[T2] == owed[T2] and led.balance(T3) - before[T3] == owed[T3]
    assert before[CORE] - led.balance(CORE) == 10_000_000
    # nothing is paid twice, and the tree says it is all paid
    assert led.run("scf.vouchers", "settle", {"voucher": root}, CORE)["code"] == ScfCode.NOT_ACTIVE
    after = led.query("scf.vouchers", "tree", {"voucher": root})
    assert (after["paid"], after["remaining"]) == (10_000_000, 0)
    assert {leaf["status"] for leaf in leaves_of(after)} == {"settled"}
    assert led.query("scf.vouchers", "maturities", {"until": led.today_iso()})["roots"] == []
    assert led.query("scf.vouchers", "financed_book", {"org": BANK})["outstanding"] == 0


def test_overdue_marking_is_paged_too() -> None:
    led = ledger()
    root = held_voucher(led, T2, 1_000_000, 5, "o1")
    leaves = explode(led, root, T2, 100)
    led.time_ms += 6 * DAY_MS
    r1 = led.ok("scf.vouchers", "mark_overdue", {"voucher": root}, REGULATOR)
    r2 = led.ok("scf.vouchers", "mark_overdue", {"voucher": root}, T3)
    assert (len(r1["overdue"]), r1["more"], len(r2["overdue"]), r2["more"]) == (64, True, 36, False)
    assert sorted(r1["overdue"] + r2["overdue"]) == sorted(leaves)
    assert led.run("scf.vouchers", "mark_overdue", {"voucher": root}, T3)["code"] == ScfCode.NOT_ACTIVE
    assert settle_all(led, root)[-1]["paid"] == 1_000_000  # overdue leaves are still settled


def test_a_frozen_leaf_waits_and_the_others_are_paid() -> None:
    led = ledger()
    root = held_voucher(led, T1, 1_000, 10, "f1")
    a, b = led.ok("scf.vouchers", "split", {"voucher": root, "amounts": [300]}, T1)["children"]
    led.ok("scf.vouchers", "freeze", {"voucher": a}, REGULATOR)
    led.time_ms += 10 * DAY_MS
    r = led.ok("scf.vouchers", "settle", {"voucher": root}, CORE)
    assert (r["payments"], r["remaining"], r["done"], r["frozen"]) == (
        [{"voucher": b, "holder": T1, "amount": 700}],
        300,
        False,
        [a],
    )
    assert led.run("scf.vouchers", "settle", {"voucher": root}, CORE)["code"] == ScfCode.FROZEN
    led.ok("scf.vouchers", "unfreeze", {"voucher": a}, REGULATOR)
    assert led.ok("scf.vouchers", "settle", {"voucher": root}, CORE)["done"]


def test_what_one_holder_can_split_is_its_share_of_the_budget() -> None:
    led = ledger()
    root = held_voucher(led, T1, 1_000_000, 30, "b1")
    small, big = led.ok("scf.vouchers", "split", {"voucher": root, "amounts": [10_000]}, T1)["children"]
    # the budget follows the money: 1 % of the face carries about 1 % of voucher_leaves_max
    assert (voucher(led, small)["budget"], voucher(led, big)["budget"]) == (10, 990)
    led.ok("scf.vouchers", "offer", {"voucher": small, "to": T2}, T1)
    led.ok("scf.vouchers", "accept", {"voucher": small}, T2)
    # tier 1 (the attacker here) spends all of its own budget ...
    mine = explode(led, big, T1, limits.voucher_leaves_max)
    assert len(mine) == 990
    state = dict(led.state.data)
    fat = max(mine, key=lambda lid: voucher(led, lid)["face"])
    r = led.run("scf.vouchers", "split", {"voucher": fat, "amounts": [1]}, T1)
    assert r["code"] == Code.LIMIT_EXCEEDED and "voucher_leaves_max" in r["message"]
    assert led.state.data == state
    # ... but cannot touch tier 2's: tier 2 still makes its 10 parts, and no more
    assert led.run("scf.vouchers", "split", {"voucher": small, "amounts": [1] * 10}, T2)["code"] == Code.LIMIT_EXCEEDED
    led.ok("scf.vouchers", "split", {"voucher": small, "amounts": [1] * 9}, T2)
    tree = led.query("scf.vouchers", "tree", {"voucher": root})
    assert len(leaves_of(tree)) == limits.voucher_leaves_max
    led.time_ms += 30 * DAY_MS
    pages = settle_all(led, root)
    assert len(pages) == -(-limits.voucher_leaves_max // limits.settle_page_max) and pages[-1]["paid"] == 1_000_000


def test_split_depth_is_bounded() -> None:
    led = ledger()
    vid = held_voucher(led, T1, 1_000_000, 30, "d1")
    for _ in range(limits.split_depth_max):
        vid = led.ok("scf.vouchers", "split", {"voucher": vid, "amounts": [1]}, T1)["children"][1]
    assert vid.count(".") == limits.split_depth_max
    r = led.run("scf.vouchers", "split", {"voucher": vid, "amounts": [1]}, T1)
    assert r["code"] == Code.LIMIT_EXCEEDED and "split_depth_max" in r["message"]


@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_paged_settlement_pays_each_leaf_holder_exactly_its_face(data: st.DataObject) -> None:
    """Property: whatever holders split, pass on or finance, paged settlement pays every leaf once, exactly its
    face, to its holder; the issuer pays exactly the root's face and the root says nothing remains."""
    led = ledger()
    face = data.draw(st.integers(2, 10**9), label="face")
    root = held_voucher(led, T1, face, 20, "p1")
    for _ in range(data.draw(st.integers(0, 12), label="actions")):
        tree = led.query("scf.vouchers", "tree", {"voucher": root})
        leaf = data.draw(st.sampled_from([x for x in leaves_of(tree) if x["offer_to"] is None]))
        v = voucher(led, leaf["id"])
        action = data.draw(st.sampled_from(["split", "split", "offer", "finance"]))
        if action == "split" and v["face"] > 1 and v["budget"] > 1:
            n = data.draw(st.integers(1, min(limits.split_children_max - 1, v["budget"] - 1, v["face"] - 1)))
            cuts = sorted(data.draw(st.lists(st.integers(1, v["face"] - 1), min_size=n, max_size=n, unique=True)))
            amounts = [b - a for a, b in zip([0, *cuts[:-1]], cuts, strict=True)]
            led.ok("scf.vouchers", "split", {"voucher": v["id"], "amounts": amounts}, v["holder"])
        elif action == "offer":
            to = data.draw(st.sampled_from([o for o in (T1, T2, T3) if o != v["holder"]]))
            led.ok("scf.vouchers", "offer", {"voucher": v["id"], "to": to}, v["holder"])
            led.ok("scf.vouchers", "accept", {"voucher": v["id"]}, to)
        elif action == "finance" and v["financed_by"] is None:
            led.ok(
                "scf.vouchers", "request_financing", {"voucher": v["id"], "bank": BANK, "rate_bps": 300}, v["holder"]
            )
            led.ok("scf.vouchers", "accept_financing", {"voucher": v["id"]}, BANK)
    tree = led.query("scf.vouchers", "tree", {"voucher": root})
    owed: dict[str, int] = {}
    for leaf in leaves_of(tree):
        owed[leaf["holder"]] = owed.get(leaf["holder"], 0) + leaf["face"]
    assert sum(owed.values()) == face
    before = {org: led.balance(org) for org in (CORE, T1, T2, T3, BANK)}
    led.time_ms += 20 * DAY_MS
    pages = settle_all(led, root, data.draw(st.integers(1, limits.settle_page_max), label="page"))
    paid = [p for page_ in pages for p in page_["payments"]]
    assert sorted(p["voucher"] for p in paid) == sorted(leaf["id"] for leaf in leaves_of(tree))
    by_leaf = {leaf["id"]: leaf for leaf in leaves_of(tree)}
    assert all(
        p["amount"] == by_leaf[p["voucher"]]["face"] and p["holder"] == by_leaf[p["voucher"]]["holder"] for p in paid
    )
    assert before[CORE] - led.balance(CORE) == face - owed.get(CORE, 0)
    for org in (T1, T2, T3, BANK):
        assert led.balance(org) - before[org] == owed.get(org, 0)
    assert (pages[-1]["paid"], pages[-1]["remaining"]) == (face, 0)


# ---- 2. ids ------------------------------------------------------------------------------------------------------
def planned(led: Ledger, contract: str, method: str, args: dict[str, Any], *who: str) -> txm.Tx:
    """A transaction signed but not yet submitted: its id (and so the instrument's) is known in advance."""
    led.n += 1
    signers = [led.consortium.org(w).signer("admin") for w in who]
    return txm.build(
        led.consortium.chain_id, contract, method, args, signers, not_after=led.time_ms + 60_000, nonce=f"p{led.n}"
    )


def test_instrument_ids_are_whole_tx_ids_and_never_overwrite() -> None:
    led = ledger()
    inv = register_invoice(led, T1, CORE, 5_000, "i1")
    issue = {"to": T1, "face": 5_000, "maturity": led.today_iso(30), "invoices": [inv], "settlement_bank": BANK}
    cases: list[tuple[str, str, dict[str, Any], tuple[str, ...], str]] = [
        ("scf.vouchers", "issue", issue, (CORE,), "scf.vouchers/v/V{}"),
        (
            "scf.bills",
            "issue",
            {"payee": T1, "acceptor": CORE, "amount": 700, "maturity": led.today_iso(9), "settlement_bank": BANK},
            (CORE,),
            "scf.bills/b/B{}",
        ),
        (
            "scf.factoring",
            "open",
            {"seller": T1, "factor": BANK, "advance_rate_bps": 8_000, "credit_line": 1_000},
            (T1, BANK),
            "scf.factoring/p/P{}",
        ),
    ]
    led.ok("scf.receipts", "declare", {"lot": "l1", "owner": T1, "goods": "rice", "quantity": 10}, WAREHOUSE)
    receipt = {"warehouse": WAREHOUSE, "lot": "l1", "quantity": 4}
    cases.append(("scf.receipts", "issue", receipt, (WAREHOUSE, T1), "scf.receipts/r/R{}"))
    for contract, method, args, who, key in cases:
        # a record already at the id the transaction would create (a collision) is refused, not overwritten
        t = planned(led, contract, method, args, *who)
        led.state.apply({key.format(t.tx_id): encoding.canonical({"victim": True})}, [])
        before = dict(led.state.data)
        r = led.run_raw(t.raw)
        assert r["code"] == Code.ALREADY_EXISTS, (contract, r)
        assert led.state.data == before
        # otherwise the id is the letter and the whole 64-digit transaction id
        t = planned(led, contract, method, args, *who)
        r = led.run_raw(t.raw)
        assert r["code"] == 0, r
        created = next(iter(r["result"].values()))
        assert created == key.rsplit("/", 1)[1].format(t.tx_id) and len(created) == 65
    # 80-bit prefixes are not ids any more
    with pytest.raises(ContractFailure) as short:
        led.query("scf.vouchers", "voucher", {"voucher": "V" + "0" * 20})
    assert short.value.code == Code.INVALID_ARGUMENT


def test_a_split_never_overwrites_an_existing_part() -> None:
    led = ledger()
    vid = held_voucher(led, T1, 1_000, 30, "c1")
    led.state.apply({f"scf.vouchers/v/{vid}.2": encoding.canonical({"victim": True})}, [])
    before = dict(led.state.data)
    assert led.run("scf.vouchers", "split", {"voucher": vid, "amounts": [1]}, T1)["code"] == Code.ALREADY_EXISTS
    assert led.state.data == before


# ---- 3 and 4. factoring: buyer-confirmed invoices, repaid in the pool's token --------------------------------------
def pool(led: Ledger) -> str:
    args = {"seller": T1, "factor": BANK, "advance_rate_bps": 8_000, "credit_line": 10**9}
    return str(led.ok("scf.factoring", "open", args, T1, BANK)["pool"])


def test_a_pool_takes_only_invoices_their_buyer_confirmed_due_when_the_buyer_said() -> None:
    led = ledger()
    pid = pool(led)
    inv = register_invoice(led, T1, T2, 1_000_000, "q1")
    before = dict(led.state.data)
    # the attack: the seller alone puts an invoice in the pool (and names its due date)
    assert led.run("scf.factoring", "assign", {"pool": pid, "invoices": [inv]}, T1)["code"] == ScfCode.NOT_CONFIRMED
    forged = {"pool": pid, "invoices": [{"key": inv, "due": led.today_iso(300)}]}
    assert led.run("scf.factoring", "assign", forged, T1)["code"] == Code.INVALID_ARGUMENT
    assert led.run("scf.invoices", "confirm", {"key": inv, "due": led.today_iso(300)}, T1)["code"] == ScfCode.NOT_PARTY
    assert led.run("scf.factoring", "draw", {"pool": pid, "amount": 1}, T1)["code"] == ScfCode.OVER_ADVANCE
    assert led.state.data == before
    # the buyer confirms: the asset falls due when the buyer said, and the seller can draw against it
    led.ok("scf.invoices", "confirm", {"key": inv, "due": led.today_iso(30)}, T2)
    r = led.run("scf.invoices", "confirm", {"key": inv, "due": led.today_iso(300)}, T2)
    assert r["code"] == Code.ALREADY_EXISTS  # a confirmation is for good
    led.ok("scf.factoring", "assign", {"pool": pid, "invoices": [inv]}, T1)
    p = led.query("scf.factoring", "pool", {"pool": pid})
    assert [(a["id"], a["maturity"]) for a in p["assets"]] == [(inv, led.today_iso(30))]
    assert p["capacity"] == 800_000
    led.ok("scf.factoring", "draw", {"pool": pid, "amount": 800_000}, T1)
    led.time_ms += 30 * DAY_MS  # due: it leaves the eligible balance
    assert led.query("scf.factoring", "pool", {"pool": pid})["capacity"] == 0
    # a due date before the invoice, or past the pool's tenor, is refused
    late = register_invoice(led, T1, T2, 1_000, "q2")
    r = led.run("scf.invoices", "confirm", {"key": late, "due": led.today_iso(-1)}, T2)
    assert r["code"] == ScfCode.BAD_DATE
    led.ok("scf.invoices", "confirm", {"key": late, "due": led.today_iso(limits.pool_tenor_days_max + 1)}, T2)
    assert led.run("scf.factoring", "assign", {"pool": pid, "invoices": [late]}, T1)["code"] == ScfCode.NOT_ELIGIBLE


def test_a_seller_cannot_be_its_own_buyer() -> None:
    led = ledger()
    args = {"code": "3100", "number": "x1", "seller": T1, "buyer": T1, "amount": 10**9, "date": led.today_iso()}
    r = led.run("scf.invoices", "register", {**args, "doc_hash": "ab" * 32}, T1)
    assert r["code"] == Code.INVALID_ARGUMENT


def test_the_factor_is_repaid_in_the_pools_token_only() -> None:
    led = ledger()
    pid = pool(led)
    # a voucher that would settle in another bank's token cannot enter the pool
    other = held_voucher(led, T1, 5_000, 30, "r1", bank=BANK2)
    before = dict(led.state.data)
    r = led.run("scf.factoring", "assign", {"pool": pid, "vouchers": [other]}, T1)
    assert r["code"] == ScfCode.NOT_ELIGIBLE and BANK2 in r["message"]
    assert led.state.data == before
    # the buyer cannot name the token it repays in ...
    inv = register_invoice(led, T1, T2, 5_000, "r2")
    led.ok("scf.invoices", "confirm", {"key": inv, "due": led.today_iso(20)}, T2)
    led.ok("scf.factoring", "assign", {"pool": pid, "invoices": [inv]}, T1)
    led.ok("scf.factoring", "draw", {"pool": pid, "amount": 4_000}, T1)
    led.ok("scf.tokens", "issue", {"to": T2, "amount": 10_000}, BANK2)
    forged = {"pool": pid, "invoice": inv, "bank": BANK2}
    assert led.run("scf.factoring", "collect_invoice", forged, T2)["code"] == Code.INVALID_ARGUMENT
    # ... it pays in the factor's token, which it must hold
    r = led.run("scf.factoring", "collect_invoice", {"pool": pid, "invoice": inv}, T2)
    assert r["code"] == Code.INSUFFICIENT_FUNDS
    led.ok("scf.tokens", "issue", {"to": T2, "amount": 5_000}, BANK)
    factor, seller = led.balance(BANK), led.balance(T1)
    led.ok("scf.factoring", "collect_invoice", {"pool": pid, "invoice": inv}, T2)
    assert led.balance(BANK) - factor == 4_000 and led.balance(T1) - seller == 1_000  # advance repaid, surplus on
    assert led.balance(T2, BANK2) == 10_000  # the other bank's token never moved
    assert led.query("scf.factoring", "pool", {"pool": pid})["advanced"] == 0


def test_sweep_is_paged() -> None:
    led = ledger()
    pid = pool(led)
    vid = held_voucher(led, T1, 100_000, 10, "w1")
    leaves = explode(led, vid, T1, 70)
    for i in range(0, len(leaves), limits.pool_assign_max):
        led.ok("scf.factoring", "assign", {"pool": pid, "vouchers": leaves[i : i + limits.pool_assign_max]}, T1)
    led.ok("scf.factoring", "draw", {"pool": pid, "amount": 50_000}, T1)
    led.time_ms += 10 * DAY_MS
    settle_all(led, vid)
    first = led.ok("scf.factoring", "sweep", {"pool": pid}, T3)
    second = led.ok("scf.factoring", "sweep", {"pool": pid}, T3)
    assert (len(first["collected"]), first["more"], len(second["collected"]), second["more"]) == (64, True, 6, False)
    p = led.query("scf.factoring", "pool", {"pool": pid})
    assert (p["advanced"], p["collected"], p["assets"]) == (0, 100_000, [])


# ---- 5. paged read models -------------------------------------------------------------------------------------
def test_read_models_are_paged_so_no_holder_can_make_them_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    led = ledger()
    roots = [held_voucher(led, T2, 10_000, 10 + i, f"m{i}") for i in range(5)]
    parts = [leaf for r in roots[:3] for leaf in explode(led, r, T2, 70)]  # 210 parts held by tier 2
    f0 = voucher(led, parts[0])["face"]
    led.ok("scf.vouchers", "request_financing", {"voucher": parts[0], "bank": BANK, "rate_bps": 100}, T2)
    led.ok("scf.vouchers", "accept_financing", {"voucher": parts[0]}, BANK)
    # a node whose range_results_max the attacker's parts exceed: one unpaged read of them would fail
    monkeypatch.setattr(limits, "range_results_max", 100)
    until = led.today_iso(60)
    seen: list[dict[str, Any]] = []
    after = ""
    while True:
        m = led.query("scf.vouchers", "maturities", {"until": until, "after": after, "limit": 2})
        seen += m["roots"]
        if m["next"] is None:
            break
        after = m["next"]
    assert [r["id"] for r in seen] == roots  # by maturity, each once
    assert all(r["outstanding"] == 10_000 == sum(r["holders"].values()) for r in seen)
    assert seen[0]["holders"] == {BANK: f0, T2: 10_000 - f0}
    early = led.query("scf.vouchers", "maturities", {"until": led.today_iso(11)})
    assert [r["id"] for r in early["roots"]] == roots[:2] and early["next"] is None
    held: list[str] = []
    after = ""
    while True:
        p = led.query("scf.vouchers", "portfolio", {"org": T2, "after": after, "limit": 50})
        assert len(p["vouchers"]) <= 50 and p["total"] == 50_000 - f0
        held += [v["id"] for v in p["vouchers"]]
        if p["next"] is None:
            break
        after = p["next"]
    assert held == sorted(set(parts[1:]) | set(roots[3:]))
    book = led.query("scf.vouchers", "financed_book", {"org": BANK})
    assert [v["id"] for v in book["vouchers"]] == [parts[0]] and book["outstanding"] == book["total"] == f0
    first = led.query("scf.vouchers", "roots", {"org": CORE, "limit": 3})
    rest = led.query("scf.vouchers", "all_roots", {"after": f"{CORE}/{first['roots'][-1]}"})
    assert first["roots"] + rest["roots"] == sorted(roots) and rest["next"] is None
    with pytest.raises(ContractFailure) as too_many:
        led.query("scf.vouchers", "portfolio", {"org": T2, "limit": limits.scf_page_max + 1})
    assert too_many.value.code == Code.INVALID_ARGUMENT


class Keys:
    """Just enough of a contract context for ``page``: a key space of given keys."""

    def __init__(self, keys: set[str]) -> None:
        self.state = MemoryState()
        self.state.data = {f"c/{k}": b"1" for k in keys}

    def range(self, prefix: str) -> Any:
        for key, _ in self.state.range(f"c/{prefix}"):
            yield key[2:], 1


KEY = st.text(alphabet="-./09:AZ_az", min_size=1, max_size=6)


@settings(max_examples=200, deadline=None)
@given(keys=st.sets(KEY, max_size=40), after=st.one_of(st.just(""), KEY), limit=st.integers(1, 7))
def test_a_page_resumes_exactly_after_its_cursor(keys: set[str], after: str, limit: int) -> None:
    ctx: Any = Keys({f"x/{k}" for k in keys} | {"w", "y/z"})
    got, cursor = page(ctx, "x/", after, limit)
    expected = sorted(k for k in keys if k > after)
    assert [k for k, _ in got] == expected[:limit]
    assert cursor == (expected[limit - 1] if len(expected) > limit else None)
    # and following the cursors reads every key once, in order
    everything, cursor = page(ctx, "x/", "", limit)
    while cursor is not None:
        more, cursor = page(ctx, "x/", cursor, limit)
        everything += more
    assert [k for k, _ in everything] == sorted(keys)


# ---- 6. names scoped by their owner ---------------------------------------------------------------------------
def test_nobody_can_squat_another_sellers_invoice_number() -> None:
    led = ledger()

    def register(seller: str, signer: str) -> dict[str, Any]:
        args = {"code": "3100", "number": "77", "seller": seller, "buyer": CORE, "amount": 5_000}
        doc = hashlib.sha256(b"77").hexdigest()
        return led.run("scf.invoices", "register", {**args, "date": led.today_iso(), "doc_hash": doc}, signer)

    # the attack: tier 2 registers tier 1's invoice number first (in its own name; in tier 1's it cannot)
    assert register(T1, T2)["code"] == ScfCode.NOT_PARTY
    squat = register(T2, T2)
    assert squat["code"] == 0 and squat["result"]["key"] == f"{T2}:3100-77"
    # tier 1 still registers its invoice and is paid with a voucher on it
    mine = register(T1, T1)
    assert mine["code"] == 0 and mine["result"]["key"] == f"{T1}:3100-77"
    args = {"to": T1, "face": 5_000, "maturity": led.today_iso(30), "invoices": [f"{T1}:3100-77"]}
    led.ok("scf.vouchers", "issue", {**args, "settlement_bank": BANK}, CORE)
    # the squatter's invoice cannot back a voucher to tier 1
    r = led.run("scf.vouchers", "issue", {**args, "invoices": [f"{T2}:3100-77"], "settlement_bank": BANK}, CORE)
    assert r["code"] == Code.INVALID_ARGUMENT


def test_nobody_can_squat_another_warehouses_lot() -> None:
    led = ledger()
    # the attack: another warehouse declares the lot name first
    led.ok("scf.receipts", "declare", {"lot": "milk", "owner": T2, "goods": "milk", "quantity": 5}, WAREHOUSE2)
    led.ok(
        "scf.receipts", "declare", {"lot": "milk", "owner": T1, "goods": "infant formula", "quantity": 100}, WAREHOUSE
    )
    mine = {"warehouse": WAREHOUSE, "lot": "milk"}
    led.ok("scf.receipts", "issue", {**mine, "quantity": 100}, WAREHOUSE, T1)
    assert led.query("scf.receipts", "lot", mine)["reserved"] == 100
    assert led.query("scf.receipts", "lot", {"warehouse": WAREHOUSE2, "lot": "milk"})["stock"] == 5
    # nor can it issue receipts against this warehouse's lot
    r = led.run("scf.receipts", "issue", {**mine, "quantity": 1}, WAREHOUSE2, T1)
    assert r["code"] == ScfCode.NOT_PARTY
    r = led.run("scf.receipts", "declare", {"lot": "milk", "owner": T2, "goods": "milk", "quantity": 5}, WAREHOUSE)
    assert r["code"] == Code.INVALID_ARGUMENT  # a warehouse's own lot keeps its owner and goods
