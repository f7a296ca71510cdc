"""The SCF consortium as an in-memory replica, with helpers to act as its parties (shared by the SCF tests)."""

from __future__ import annotations

import hashlib
from typing import Any

from conftest import NOW_MS, Replica
from liangcao import encoding
from liangcao.apps.scf.common import iso_of
from liangcao.genesis import Consortium, create_consortium
from liangcao.ledger import tx as txm

DAY_MS = 86_400_000
TYPES = ["core_enterprise", "supplier", "supplier", "supplier", "bank", "warehouse", "regulator"]
CORE, T1, T2, T3, BANK, WAREHOUSE, REGULATOR = (f"org{i}" for i in range(1, 8))
SCF: Consortium = create_consortium(7, org_types=TYPES, now_ms=NOW_MS, chain_id="scf-test")


class Ledger(Replica):
    """An in-memory replica of the SCF consortium with helpers to act as its parties."""

    def __init__(self, consortium: Consortium = SCF) -> None:
        super().__init__(consortium)
        self.n = 0

    def run_raw(self, raw: bytes) -> dict[str, Any]:
        ex = self.apply([raw])
        receipt: dict[str, Any] = encoding.decode(ex.receipts[0])  # type: ignore[assignment]
        return receipt

    def run(self, contract: str, method: str, args: dict[str, Any], *who: str) -> dict[str, Any]:
        self.n += 1
        c = self.consortium
        signers = [c.org(w.split("/")[0]).signer(w.split("/")[1] if "/" in w else "admin") for w in who]
        t = txm.build(c.chain_id, contract, method, args, signers, not_after=self.time_ms + 60_000, nonce=f"n{self.n}")
        return self.run_raw(t.raw)

    def ok(self, contract: str, method: str, args: dict[str, Any], *who: str) -> Any:
        r = self.run(contract, method, args, *who)
        assert r["code"] == 0, r
        return r["result"]

    def query(self, contract: str, method: str, args: dict[str, Any]) -> Any:
        return self.runtime.query(self.state, contract, method, args, height=self.height, time_ms=self.time_ms)

    def balance(self, org: str, bank: str = BANK) -> int:
        return int(self.query("scf.tokens", "balance", {"bank": bank, "org": org})["balance"])

    def today_iso(self, plus_days: int = 0) -> str:
        return iso_of(self.time_ms // DAY_MS + plus_days)


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
