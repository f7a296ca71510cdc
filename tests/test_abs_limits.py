"""abs.deal at its limits: a waterfall paying abs_holders_max holders in each tranche fits in one
transaction, and the next holder is refused."""

from __future__ import annotations

from abs_ledger import deal_terms
from liangcao.apps.abs.common import abs_holders_max
from liangcao.apps.abs.deal import AbsDeal
from liangcao.codes import Code
from liangcao.testing import Chain

ORIGINATOR, SPV, BANK, REGULATOR = "org1", "org2", "org3", "org4"
INVESTORS = [f"org{i}" for i in range(5, 5 + abs_holders_max + 1)]


def test_a_waterfall_pays_every_holder_of_every_tranche() -> None:
    led = Chain(["factor", "spv", "bank", "regulator"] + ["investor"] * len(INVESTORS), contracts=[AbsDeal()])
    terms = deal_terms(
        led,
        spv=SPV,
        originator=ORIGINATOR,
        servicer=ORIGINATOR,
        custodian=BANK,
        servicer_grace_days=31,
        fees=[{"payee": BANK, "what": "custody", "amount": 500}, {"payee": REGULATOR, "what": "tax", "amount": 300}],
    )
    deal = led.ok("abs.deal", "open", terms, SPV, ORIGINATOR)["deal"]
    holders = INVESTORS[:abs_holders_max]
    for org in INVESTORS:
        led.ok("scf.tokens", "issue", {"to": org, "amount": 10**9}, BANK)
        led.ok("abs.deal", "kyc", {"deal": deal, "org": org}, SPV)
    for tranche, face in (("senior", 700_000), ("mezzanine", 200_000), ("subordinated", 100_000)):
        for org in holders:
            led.ok("abs.deal", "subscribe", {"deal": deal, "tranche": tranche, "amount": face // len(holders)}, org)
    # one more holder would be one too many
    r = led.run(
        "abs.deal", "transfer", {"deal": deal, "tranche": "senior", "to": INVESTORS[-1], "amount": 1}, holders[0]
    )
    assert r["code"] == Code.LIMIT_EXCEEDED and "abs_holders_max" in r["message"]
    led.ok("abs.deal", "launch", {"deal": deal}, SPV)
    for _ in range(3):
        led.advance(days=30)
        led.ok("abs.deal", "report", {"deal": deal, "performing": 0, "delinquent": 0, "defaulted": 0}, ORIGINATOR)
    r = led.run("abs.deal", "distribute", {"deal": deal}, SPV)
    assert r.ok, r["message"]
    receipt = r["result"]
    assert receipt["status"] == "amortising"  # no receivable was ever bought: the pool trigger fired
    assert receipt["available"] == 1_000_000 == receipt["paid_out"]
    transfers = [e for e in r["events"] if e["name"] == "transferred"]
    assert len(transfers) == 2 + 5 * abs_holders_max  # fees; interest and principal twice; the residual once
    steps = {s["step"]: s for s in receipt["steps"]}
    assert len(steps["senior_principal"]["payees"]) == abs_holders_max
    assert steps["senior_principal"]["paid"] == 700_000 and steps["mezzanine_principal"]["paid"] == 200_000
