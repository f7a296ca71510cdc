"""A small SDK for the credit service's HTTP API (httpx): the same answers as ``CreditService``, typed.

A refusal raises ``CreditError`` with the service's code and message (``code`` may also be a ``Code`` of
``liangcao.codes`` for malformed requests); a service that cannot be reached raises ``httpx.HTTPError``.
"""

from __future__ import annotations

from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from liangcao.credit import loans as L
from liangcao.credit import plans as P
from liangcao.credit.errors import CreditError
from liangcao.credit.service import DayReport, Deduction, LineView, LoanBook, Offer, Statement

_T = TypeVar("_T")


def _q(value: str) -> str:
    """An id as one path segment: '/', '?', '#', '%' and the rest percent-encoded, so an id reaches its
    own record (``x/../y`` or ``p?x`` must never address ``y`` or ``p``)."""
    return quote(str(value), safe="")


class CreditClient:
    """``CreditClient("http://127.0.0.1:8195", token=...)``; use as a context manager or call ``close()``.

    ``token``: a session (``liangcao credit token``, ``POST /v1/credit/sessions``) or the service's operator
    token (``DATA/operator.token``), sent as ``Authorization: Bearer``; the service answers nothing without
    one (``UNAUTHENTICATED``)."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        self._http = httpx.Client(
            base_url=url.rstrip("/") + "/v1/credit", timeout=timeout_s, transport=transport, headers=headers
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CreditClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, typ: type[_T], body: dict[str, Any] | None = None) -> _T:
        r = self._http.request(method, path, json=body)
        if r.status_code != 200:
            try:
                err = r.json()
                raise CreditError(err["code"], err["message"])
            except (ValueError, KeyError):
                raise CreditError(599, f"HTTP {r.status_code} from the credit service") from None
        return msgspec.json.decode(r.content, type=typ)

    def quote(self, amount_fen: int, periods: int, fee_payer: str = "shopper") -> P.Plan:
        body = {"amount_fen": amount_fen, "periods": periods, "fee_payer": fee_payer}
        return self._call("POST", "/quote", P.Plan, body)

    def checkout_installments(
        self, order_id: str, shopper: str, merchant: str, amount_fen: int, periods: int, fee_payer: str = "shopper"
    ) -> P.Plan:
        body = {
            "order_id": order_id,
            "shopper": shopper,
            "merchant": merchant,
            "amount_fen": amount_fen,
            "periods": periods,
            "fee_payer": fee_payer,
        }
        return self._call("POST", "/installments", P.Plan, body)

    def open_plan(
        self,
        order_id: str,
        shopper: str,
        merchant: str,
        amount_fen: int,
        periods: int,
        fee_payer: str = "shopper",
        *,
        funding_transfer_id: int,
    ) -> P.Plan:
        body = {
            "funding_transfer_id": funding_transfer_id,
            "order_id": order_id,
            "shopper": shopper,
            "merchant": merchant,
            "amount_fen": amount_fen,
            "periods": periods,
            "fee_payer": fee_payer,
        }
        return self._call("POST", "/plans", P.Plan, body)

    def line_account(self, shopper: str) -> int:
        return self._call("GET", f"/shoppers/{_q(shopper)}/line-account", dict[str, int])["account_id"]

    def plan(self, plan_id: str) -> P.Plan:
        return self._call("GET", f"/plans/{_q(plan_id)}", P.Plan)

    def repay(self, plan_id: str, amount_fen: int | None = None, request_id: str | None = None) -> P.Plan:
        """``amount_fen`` None repays everything owed (early repayment in full)."""
        return self._call(
            "POST", f"/plans/{_q(plan_id)}/repay", P.Plan, {"amount_fen": amount_fen, "request_id": request_id}
        )

    def refund(self, order_id: str, amount_fen: int, refund_id: str | None = None) -> P.Plan:
        body = {"order_id": order_id, "amount_fen": amount_fen, "refund_id": refund_id}
        return self._call("POST", "/refunds", P.Plan, body)

    def line(self, shopper: str) -> LineView:
        return self._call("GET", f"/shoppers/{_q(shopper)}", LineView)

    def statement(self, shopper: str) -> Statement:
        return self._call("GET", f"/shoppers/{_q(shopper)}/statement", Statement)

    def deposit(self, shopper: str, amount_fen: int, deposit_id: str) -> int:
        out = self._call(
            "POST",
            f"/shoppers/{_q(shopper)}/deposit",
            dict[str, int],
            {"amount_fen": amount_fen, "deposit_id": deposit_id},
        )
        return out["wallet_fen"]

    def apply_loan(self, merchant: str, receivables_fen: int = 0) -> Offer:
        return self._call("POST", f"/merchants/{_q(merchant)}/apply", Offer, {"receivables_fen": receivables_fen})

    def record_sale(
        self, merchant: str, sale_id: str, amount_fen: int, kind: int = 1, day: int | None = None
    ) -> Deduction | None:
        body = {"sale_id": sale_id, "amount_fen": amount_fen, "kind": kind, "day": day}
        return self._call("POST", f"/merchants/{_q(merchant)}/sales", Deduction | None, body)  # type: ignore[arg-type]

    def on_settlement(self, merchant: str, settlement_id: str, amount_fen: int) -> Deduction:
        body = {"settlement_id": settlement_id, "amount_fen": amount_fen}
        return self._call("POST", f"/merchants/{_q(merchant)}/settlements", Deduction, body)

    def draw_loan(self, offer_id: str, amount_fen: int, share_bp: int | None = None) -> L.Loan:
        return self._call(
            "POST", "/loans", L.Loan, {"offer_id": offer_id, "amount_fen": amount_fen, "share_bp": share_bp}
        )

    def loan(self, loan_id: str) -> L.Loan:
        return self._call("GET", f"/loans/{_q(loan_id)}", L.Loan)

    def repay_loan(self, loan_id: str, amount_fen: int, request_id: str | None = None) -> L.Loan:
        return self._call(
            "POST", f"/loans/{_q(loan_id)}/repay", L.Loan, {"amount_fen": amount_fen, "request_id": request_id}
        )

    def merchant_loans(self, merchant: str) -> list[L.Loan]:
        return self._call("GET", f"/merchants/{_q(merchant)}/loans", list[L.Loan])

    def loan_book(self) -> LoanBook:
        return self._call("GET", "/book", LoanBook)

    def run_day(self) -> DayReport:
        return self._call("POST", "/run-day", DayReport)
