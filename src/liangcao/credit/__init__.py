"""Credit at the checkout (house plan §11): consumer credit lines, installment plans and merchant loans.

All money lives in the payments core: a line is an account whose limit flags make the core itself refuse an
overdraw. The API the checkout gateway uses (stable; see ``docs/credit.md``)::

    service = CreditService(engine_or_postgres_backend, "credit.db", clock=wall_days)
    plan = service.quote(amount_fen, periods, fee_payer)               # the schedule, nothing stored
    plan = service.checkout_installments(order_id, shopper, merchant, amount_fen, periods, fee_payer)
    plan = service.refund(order_id, amount_fen, refund_id=None)
    service.register_merchant(merchant, core_account_id)               # pay merchants into your accounts
    service.line_account(shopper)                                      # the source for a gateway's own hold
    service.open_plan(order_id, shopper, merchant, amount_fen, periods, fee_payer,
                      funding_transfer_id=post_id)                     # after that hold was posted
    service.on_settlement(merchant, settlement_id, amount_fen)         # a merchant loan's share of a settlement
    app.include_router(liangcao.credit.http.router(service, identity)) # HTTP under /v1/credit: callers
                                       # hold credit sessions (liangcao.credit.identity; docs/credit.md)

Refusals are ``CreditError`` with a ``CreditCode`` (3400-3499); nothing is changed by a refusal.
"""

from liangcao.credit.errors import CreditCode, CreditError
from liangcao.credit.loans import Loan, LoanState, SaleKind
from liangcao.credit.plans import FeePayer, Period, Plan, PlanState
from liangcao.credit.service import CreditService, ManualDays, RuleLinePolicy, account_id, wall_days

__all__ = [
    "CreditCode",
    "CreditError",
    "CreditService",
    "FeePayer",
    "Loan",
    "LoanState",
    "ManualDays",
    "Period",
    "Plan",
    "PlanState",
    "RuleLinePolicy",
    "SaleKind",
    "account_id",
    "wall_days",
]
