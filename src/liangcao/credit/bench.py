"""``liangcao credit bench``: installment purchases/s next to plain payments-core transfers/s in the same
run, and the merchant-loan decision latency with a year of sales history.

Both sides are one request at a time on the same embedded engine (fsync on), as a checkout makes them: a
plain transfer is one ``create_transfers`` call of one transfer; an installment purchase is a whole
``checkout_installments`` (the plan computed, the intent and the records in SQLite with synchronous FULL,
a linked chain of two transfers in the core). Loan decisions: ``apply_loan`` for merchants whose account
holds ``orders_per_day`` sales a day for 365 days (with refunds and chargebacks), each read from the core.
"""

from __future__ import annotations

import os
import random
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from liangcao.credit.loans import SaleKind
from liangcao.credit.service import CoreAccount, CreditService, ManualDays
from liangcao.payments import Account, AccountFlags, Engine, Transfer


def _pct(sorted_s: list[float], q: float) -> float:
    return sorted_s[min(len(sorted_s) - 1, int(q * len(sorted_s)))]


def run(
    *, purchases: int = 1_000, merchants: int = 50, orders_per_day: int = 20, say: Callable[[str], Any] = print
) -> dict[str, Any]:
    """Run the benchmark in a temporary folder; answers the figures (module docstring)."""
    rng = random.Random(310)
    clock = ManualDays(20_000)
    with tempfile.TemporaryDirectory(prefix="credit-bench-") as tmp, Engine(Path(tmp) / "pay") as engine:
        service = CreditService(engine, Path(tmp) / "credit.db", clock=clock)
        shoppers = [f"s{i}" for i in range(max(1, purchases // 10))]
        for s in shoppers:
            service.deposit(s, 100_000, f"d-{s}")
        # Plain transfers: one per call, between two accounts of the same engine.
        src, dst = 7_000_000_001, 7_000_000_002
        engine.create_accounts(
            [
                Account(src, ledger=156, code=int(CoreAccount.BANK)),
                Account(
                    dst,
                    ledger=156,
                    code=int(CoreAccount.MERCHANT),
                    flags=int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS),
                ),
            ]
        )
        say(f"plain transfers: {purchases} one at a time")
        t0 = time.perf_counter()
        for i in range(purchases):
            engine.create_transfers([Transfer(8_000_000_000 + i, src, dst, 10_000, ledger=156, code=1)])
        plain_s = time.perf_counter() - t0
        say(f"installment purchases: {purchases} one at a time")
        t0 = time.perf_counter()
        for i in range(purchases):
            service.checkout_installments(
                f"o{i}",
                shoppers[i % len(shoppers)],
                f"m{i % 10}",
                9_900 + i % 100,
                (3, 6, 12)[i % 3],
                "merchant" if i % 2 else "shopper",
            )
        inst_s = time.perf_counter() - t0

        say(f"sales history: {merchants} merchants x 365 days x {orders_per_day} orders")
        today = clock()
        for m in range(merchants):
            rows: list[tuple[str, int, SaleKind, int]] = []
            base = rng.randint(5_000, 50_000)
            for d in range(365):
                day = today - 365 + d
                for k in range(orders_per_day):
                    rows.append((f"{d}-{k}", day, SaleKind.SALE, max(100, int(rng.gauss(base, base / 3)))))
                if d % 7 == 0:
                    rows.append((f"{d}-r", day, SaleKind.REFUND, base // 2))
                if d % 97 == 0:
                    rows.append((f"{d}-c", day, SaleKind.CHARGEBACK, base // 4))
            service.import_sales(f"shop{m}", rows)
        say(f"loan decisions: {merchants}")
        lat: list[float] = []
        approved = 0
        for m in range(merchants):
            t0 = time.perf_counter()
            offer = service.apply_loan(f"shop{m}")
            lat.append(time.perf_counter() - t0)
            approved += offer.approved
        lat.sort()
        service.check()
        service.close()
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "cores": os.cpu_count(),
        "purchases": purchases,
        "plain_transfers_per_s": round(purchases / plain_s, 1),
        "installment_purchases_per_s": round(purchases / inst_s, 1),
        "installment_vs_plain": round((purchases / inst_s) / (purchases / plain_s), 3),
        "merchants": merchants,
        "sales_transfers_per_merchant": 365 * orders_per_day + 365 // 7 + 1 + 365 // 97 + 1,
        "loan_decisions_approved": approved,
        "loan_decision_p50_ms": round(_pct(lat, 0.50) * 1000, 2),
        "loan_decision_p99_ms": round(_pct(lat, 0.99) * 1000, 2),
        "loan_decision_max_ms": round(lat[-1] * 1000, 2),
        "loan_decision_bar_ms": 1000,
        "peak_rss_mib": round((self_kb + child_kb) / 1024, 1),
    }
