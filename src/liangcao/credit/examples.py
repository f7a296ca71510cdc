"""The worked examples of ``docs/credit.md``, run for real (an embedded engine in a temporary folder):
``liangcao credit examples`` prints them, ``--png`` draws the loan's repayment."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from liangcao.credit import loans as L
from liangcao.credit.service import CreditService, ManualDays, account_id
from liangcao.payments import Engine


def run() -> dict[str, Any]:
    """The 6-period plan for 1,199.00 (merchant pays the fee) and the 50,000.00 loan repaid from 10 % of
    6,000.00 a day: schedules, daily repayments and the balances the core ends with."""
    clock = ManualDays(20_000)
    with tempfile.TemporaryDirectory(prefix="credit-examples-") as tmp, Engine(Path(tmp) / "pay", fsync=False) as e:
        s = CreditService(e, Path(tmp) / "credit.db", clock=clock, fsync=False)
        plan = s.checkout_installments("order-1199", "ann", "shop", 119_900, 6, "merchant")
        merchant_after_checkout = _net(e, account_id("merchant", "shop"))
        today = clock()
        s.import_sales(
            "noodles", [(f"h{d}", today - 365 + d, L.SaleKind.SALE, 600_000 + 40_000 * (d % 3)) for d in range(365)]
        )
        offer = s.apply_loan("noodles")
        loan = s.draw_loan(offer.offer_id, 5_000_000)
        days: list[dict[str, int]] = []
        while s.loan(loan.loan_id).state is not L.LoanState.REPAID:
            clock.advance(1)
            d = s.record_sale("noodles", f"day{len(days) + 1}", 600_000)
            assert d is not None
            days.append(
                {
                    "day": len(days) + 1,
                    "deducted": d.deducted_fen,
                    "interest": d.interest_fen,
                    "principal": d.principal_fen,
                    "outstanding": s.loan(loan.loan_id).outstanding,
                }
            )
        s.check()
        out = {
            "plan": {
                "fee": plan.fee,
                "merchant_receives": merchant_after_checkout,
                "schedule": [(p.n, p.due_day - plan.start_day, p.principal, p.fee) for p in plan.schedule],
            },
            "offer": {"score": offer.score, "limit_fen": offer.limit_fen, "daily_rate_bp": offer.daily_rate_bp},
            "loan": {"days": days, "interest_fen": sum(x["interest"] for x in days)},
        }
        s.close()
        return out


def _net(e: Engine, acct: int) -> int:
    a = e.lookup_accounts([acct])[0]
    return a.credits_posted - a.debits_posted


def plot(result: dict[str, Any], path: Path) -> None:
    """The loan's outstanding principal and cumulative interest by day (PNG, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = result["loan"]["days"]
    xs = [0] + [d["day"] for d in days]
    outstanding = [50_000.0] + [d["outstanding"] / 100 for d in days]
    interest, acc = [0.0], 0
    for d in days:
        acc += d["interest"]
        interest.append(acc / 100)
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=120)
    ax.plot(xs, outstanding, label="outstanding principal (yuan)")
    ax.set_xlabel("days after drawdown (6,000.00 yuan of sales a day, 10 % to the loan)")
    ax.set_ylabel("yuan")
    ax2 = ax.twinx()
    ax2.plot(xs, interest, color="tab:orange", label="interest paid, cumulative (yuan)")
    ax2.set_ylabel("interest, yuan")
    ax.set_title("A 50,000.00 merchant loan at 3 bp/day repaid from daily settlements")
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    labels = ax.get_legend_handles_labels()[1] + ax2.get_legend_handles_labels()[1]
    ax.legend(lines, labels, loc="center right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
