"""The SCF consortium on the public test harness (``liangcao.testing``), with helpers to act as its parties
(shared by the SCF, trace and verification tests)."""

from __future__ import annotations

import hashlib
import re

from conftest import NOW_MS
from liangcao.node.genesis import Consortium, create_consortium
from liangcao.testing import DAY_MS, Chain, Receipt

TYPES = ["core_enterprise", "supplier", "supplier", "supplier", "bank", "warehouse", "regulator"]
CORE, T1, T2, T3, BANK, WAREHOUSE, REGULATOR = (f"org{i}" for i in range(1, 8))
SCF: Consortium = create_consortium(7, org_types=TYPES, now_ms=NOW_MS, chain_id="scf-test")
__all__ = ["BANK", "CORE", "DAY_MS", "REGULATOR", "SCF", "T1", "T2", "T3", "TYPES", "WAREHOUSE", "Ledger"]


class Ledger(Chain):
    """An in-memory replica of the SCF consortium (the harness's ``run``, ``ok``, ``query``, time travel)."""

    def __init__(self, consortium: Consortium = SCF) -> None:
        super().__init__(consortium=consortium)

    def run_raw(self, raw: bytes) -> Receipt:
        return self.block(raw)[0]

    def balance(self, org: str, bank: str = BANK) -> int:
        return int(self.query("scf.tokens", "balance", {"bank": bank, "org": org})["balance"])

    def today_iso(self, plus_days: int = 0) -> str:
        return self.date(plus_days)


def register_invoice(led: Ledger, seller: str, buyer: str, amount: int, number: str) -> str:
    doc = hashlib.sha256(number.encode()).hexdigest()
    return str(
        led.ok(
            "scf.invoices",
            "register",
            {
                "code": "3100",
                "number": number,
                "seller": seller,
                "buyer": buyer,
                "amount": amount,
                "date": led.today_iso(),
                "doc_hash": doc,
            },
            seller,
        )["key"]
    )


def mentions(blob: bytes, secret: bytes) -> bool:
    """Whether ``secret`` is in ``blob`` as a whole token (a number, a word, a hex string), not inside a longer
    run of digits and letters: a 3-digit rate turns up inside some hash's hex in one run in ten."""
    return re.search(rb"(?<![0-9A-Za-z])" + re.escape(secret) + rb"(?![0-9A-Za-z])", blob) is not None
