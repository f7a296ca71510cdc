"""An ABS consortium on the public test harness: the SCF story's parties plus the deal's, and helpers."""

from __future__ import annotations

import hashlib
from typing import Any

from liangcao.apps.abs.deal import AbsDeal
from liangcao.testing import DAY_MS, Chain

TYPES = [
    "core_enterprise",  # org1: obligor A
    "core_enterprise",  # org2: obligor B
    "supplier",  # org3: sells its receivables to the originator
    "factor",  # org4: the originator (and servicer)
    "spv",  # org5: the manager's plan
    "bank",  # org6: custodian, its token is the cash
    "rating_agency",  # org7
    "investor",  # org8
    "investor",  # org9
    "investor",  # org10
    "regulator",  # org11
    "bank",  # org12: another bank (a voucher settling in its token is not eligible)
    "spv",  # org13: a second plan (a second deal)
]
CORE_A, CORE_B, SUPPLIER, ORIGINATOR, SPV, BANK, AGENCY, INV1, INV2, INV3, REGULATOR, BANK2, SPV2 = (
    f"org{i}" for i in range(1, 14)
)
__all__ = ["DAY_MS", "AbsLedger", "deal_terms"]


def deal_terms(ledger: AbsLedger, **over: Any) -> dict[str, Any]:
    """A small deal: 1,000,000 fen of notes (700k senior, 200k mezzanine, 100k subordinated)."""
    terms: dict[str, Any] = {
        "spv": SPV,
        "originator": ORIGINATOR,
        "servicer": ORIGINATOR,
        "custodian": BANK,
        "tranches": [
            {
                "name": "senior",
                "face": 700_000,
                "coupon_bps": 400,
                "day_count": "act365",
                "legal_maturity": ledger.date(400),
            },
            {
                "name": "mezzanine",
                "face": 200_000,
                "coupon_bps": 700,
                "day_count": "act360",
                "legal_maturity": ledger.date(400),
            },
            {
                "name": "subordinated",
                "face": 100_000,
                "coupon_bps": 0,
                "day_count": "act365",
                "legal_maturity": ledger.date(400),
            },
        ],
        "fees": [{"payee": BANK, "what": "custody", "amount": 500}, {"payee": REGULATOR, "what": "tax", "amount": 300}],
        "payment_dates": [ledger.date(90), ledger.date(180), ledger.date(270)],
        "revolving_end": ledger.date(150),
        "due_within_days": 10,
        "obligor_limit_bps": 6_000,
        "discount_bps": 500,
        "required_bps": 9_000,
        "breach_days": 30,
        "default_days": 30,
        "default_rate_max_bps": 1_000,
        "servicer_grace_days": 3,
    }
    terms.update(over)
    return terms


class AbsLedger(Chain):
    """One in-memory peer with the ABS contract (and the built-in SCF contracts)."""

    def __init__(self) -> None:
        super().__init__(TYPES, contracts=[AbsDeal()])
        self.invoices = 0
        self.spvs: dict[str, str] = {}
        for org in (ORIGINATOR, INV1, INV2, INV3, CORE_A, CORE_B, BANK):
            self.ok("scf.tokens", "issue", {"to": org, "amount": 10**10}, BANK)
        self.ok("scf.tokens", "issue", {"to": CORE_A, "amount": 10**10}, BANK2)

    def balance(self, org: str, bank: str = BANK) -> int:
        return int(self.query("scf.tokens", "balance", {"bank": bank, "org": org})["balance"])

    def voucher(self, obligor: str, face: int, days: int, *, bank: str = BANK, to: str = ORIGINATOR) -> str:
        """A voucher ``obligor`` issues to the supplier, which the originator then buys (offer and accept)."""
        self.invoices += 1
        number = f"abs{self.invoices}"
        inv = self.ok(
            "scf.invoices",
            "register",
            {
                "code": "3100",
                "number": number,
                "seller": SUPPLIER,
                "buyer": obligor,
                "amount": face,
                "date": self.date(0),
                "doc_hash": hashlib.sha256(number.encode()).hexdigest(),
            },
            SUPPLIER,
        )["key"]
        vid = self.ok(
            "scf.vouchers",
            "issue",
            {"to": SUPPLIER, "face": face, "maturity": self.date(days), "invoices": [inv], "settlement_bank": bank},
            obligor,
        )["voucher"]
        self.ok("scf.vouchers", "accept", {"voucher": vid}, SUPPLIER)
        if to != SUPPLIER:
            self.ok("scf.vouchers", "offer", {"voucher": vid, "to": to}, SUPPLIER)
            self.ok("scf.vouchers", "accept", {"voucher": vid}, to)
        return str(vid)

    def open_deal(self, spv: str = SPV, **over: Any) -> str:
        terms = deal_terms(self, spv=spv, **over)
        return str(self.ok("abs.deal", "open", terms, spv, ORIGINATOR, actor=f"{spv}/admin")["deal"])

    def launched(self, spv: str = SPV, **over: Any) -> str:
        """A deal opened, its investors KYC'd, every tranche subscribed and launched."""
        deal = self.open_deal(spv, **over)
        self.spvs[deal] = spv
        for org in (INV1, INV2, INV3, ORIGINATOR):
            self.ok("abs.deal", "kyc", {"deal": deal, "org": org}, spv)
        self.ok("abs.deal", "subscribe", {"deal": deal, "tranche": "senior", "amount": 400_000}, INV1)
        self.ok("abs.deal", "subscribe", {"deal": deal, "tranche": "senior", "amount": 300_000}, INV2)
        self.ok("abs.deal", "subscribe", {"deal": deal, "tranche": "mezzanine", "amount": 200_000}, INV3)
        self.ok("abs.deal", "subscribe", {"deal": deal, "tranche": "subordinated", "amount": 100_000}, ORIGINATOR)
        self.ok("abs.deal", "launch", {"deal": deal}, spv)
        return deal

    def purchase(self, deal: str, vouchers: list[str]) -> Any:
        """The originator offers ``vouchers`` to the deal and the SPV buys them: the refusal of either step,
        or the purchase's receipt (a refused purchase leaves the offers pending: ``decline`` them)."""
        args = {"deal": deal, "vouchers": vouchers}
        offered = self.run("abs.deal", "offer", args, ORIGINATOR)
        if not offered.ok:
            return offered
        return self.run("abs.deal", "purchase", args, self.spvs.get(deal, SPV))

    def deal(self, deal: str) -> dict[str, Any]:
        return dict(self.query("abs.deal", "deal", {"deal": deal}))
