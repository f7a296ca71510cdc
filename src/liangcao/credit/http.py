"""The credit service's HTTP API: ``router(service)`` (mount it in any FastAPI app, e.g. the checkout
gateway) and ``create_app(service)`` (the standalone ``liangcao credit start`` service).

Bodies are read with msgspec, strictly: integers only (a float amount is refused), no unknown fields.
Every error is JSON ``{"code", "name", "message"}`` with the status the code registry gives
(``liangcao.codes.http_status``); the router answers its own errors, so it needs no app-level handler.
Money is integer fen throughout.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from typing import Any

import msgspec
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from liangcao import __version__, codes
from liangcao.codes import Code
from liangcao.credit.errors import CreditCode
from liangcao.credit.service import CreditService
from liangcao.errors import Fault, LiangcaoError

#: The largest request body the credit API reads.
credit_http_body_bytes_max = 64 * 1024
_MONEY_FIELD = re.compile(r"at `\$\.\w*_fen`")


class InstallmentIn(msgspec.Struct, forbid_unknown_fields=True):
    order_id: str
    shopper: str
    merchant: str
    amount_fen: int
    periods: int
    fee_payer: str = "shopper"


class OpenPlanIn(msgspec.Struct, forbid_unknown_fields=True):
    order_id: str
    shopper: str
    merchant: str
    amount_fen: int
    periods: int
    funding_transfer_id: int
    fee_payer: str = "shopper"


class QuoteIn(msgspec.Struct, forbid_unknown_fields=True):
    amount_fen: int
    periods: int
    fee_payer: str = "shopper"


class RepayIn(msgspec.Struct, forbid_unknown_fields=True):
    amount_fen: int | None = None  # None: everything owed (early repayment in full)
    request_id: str | None = None


class RefundIn(msgspec.Struct, forbid_unknown_fields=True):
    order_id: str
    amount_fen: int
    refund_id: str | None = None


class DepositIn(msgspec.Struct, forbid_unknown_fields=True):
    amount_fen: int
    deposit_id: str


class ApplyIn(msgspec.Struct, forbid_unknown_fields=True):
    receivables_fen: int = 0


class DrawIn(msgspec.Struct, forbid_unknown_fields=True):
    offer_id: str
    amount_fen: int
    share_bp: int | None = None


class SaleIn(msgspec.Struct, forbid_unknown_fields=True):
    sale_id: str
    amount_fen: int
    kind: int = 1  # 1 sale, 2 refund, 3 chargeback
    day: int | None = None


class SettlementIn(msgspec.Struct, forbid_unknown_fields=True):
    settlement_id: str
    amount_fen: int


class LoanRepayIn(msgspec.Struct, forbid_unknown_fields=True):
    amount_fen: int
    request_id: str | None = None


def _error(code: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"code": int(code), "name": codes.name_of(code), "message": message}, status_code=codes.http_status(code)
    )


def _json(obj: Any) -> Response:
    return Response(msgspec.json.encode(obj), media_type="application/json")


def _body_schema(t: Any) -> dict[str, Any]:
    schema = msgspec.json.schema(t)
    defs = schema.pop("$defs", {})
    one = defs.get(t.__name__, schema)
    return {"requestBody": {"content": {"application/json": {"schema": one}}, "required": True}}


async def _read(request: Request, t: type[Any]) -> Any:
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > credit_http_body_bytes_max:
            raise LiangcaoError(Code.TOO_LARGE, f"body over credit_http_body_bytes_max={credit_http_body_bytes_max}")
    try:
        return msgspec.json.decode(bytes(data), type=t)
    except msgspec.ValidationError as exc:
        text = str(exc)
        # A money field (``*_fen``) that is not an integer is a bad amount; anything else (an unknown field,
        # a missing one, a wrong type) is a bad argument.
        code = CreditCode.BAD_AMOUNT if _MONEY_FIELD.search(text) else Code.INVALID_ARGUMENT
        raise LiangcaoError(code, f"invalid body: {text}") from None
    except msgspec.DecodeError as exc:
        raise LiangcaoError(Code.BAD_ENCODING, f"body is not JSON: {exc}") from None


async def _run(fn: Callable[..., Any], *args: Any) -> Response:
    try:
        return _json(await run_in_threadpool(fn, *args))
    except LiangcaoError as exc:
        return _error(exc.code, exc.message)
    except (Fault, sqlite3.Error) as exc:
        # The core or the store failed (nothing was half-written: the intent is finished on the next call
        # or on open). The router is mounted in apps without our handlers, so it answers JSON itself.
        return _error(Code.NOT_READY, f"the credit service is unavailable: {type(exc).__name__}")


def router(service: CreditService) -> APIRouter:
    """The credit API over ``service``, under ``/v1/credit``. The checkout gateway mounts it as is."""
    r = APIRouter(prefix="/v1/credit", tags=["credit"])
    s = service

    async def guarded(request: Request, t: type[Any], fn: Callable[[Any], Any]) -> Response:
        try:
            body = await _read(request, t)
        except LiangcaoError as exc:
            return _error(exc.code, exc.message)
        return await _run(fn, body)

    @r.post(
        "/quote", summary="The schedule a checkout would make (nothing stored)", openapi_extra=_body_schema(QuoteIn)
    )
    async def quote(request: Request) -> Response:
        return await guarded(request, QuoteIn, lambda b: s.quote(b.amount_fen, b.periods, b.fee_payer))

    @r.post("/installments", summary="Buy on installments (3/6/12 periods)", openapi_extra=_body_schema(InstallmentIn))
    async def installments(request: Request) -> Response:
        return await guarded(
            request,
            InstallmentIn,
            lambda b: s.checkout_installments(b.order_id, b.shopper, b.merchant, b.amount_fen, b.periods, b.fee_payer),
        )

    @r.post(
        "/plans",
        summary="Record the plan of an order a gateway already paid from the line (its own hold)",
        openapi_extra=_body_schema(OpenPlanIn),
    )
    async def open_plan(request: Request) -> Response:
        return await guarded(
            request,
            OpenPlanIn,
            lambda b: s.open_plan(
                b.order_id,
                b.shopper,
                b.merchant,
                b.amount_fen,
                b.periods,
                b.fee_payer,
                funding_transfer_id=b.funding_transfer_id,
            ),
        )

    @r.get("/shoppers/{shopper}/line-account", summary="The payments-core account of the shopper's line")
    async def line_account(shopper: str) -> Response:
        return await _run(lambda: {"account_id": s.line_account(shopper)})

    @r.get("/plans/{plan_id:path}", summary="A plan, penalty accrued to today")
    async def plan(plan_id: str) -> Response:
        return await _run(s.plan, plan_id)

    @r.post(
        "/plans/{plan_id:path}/repay",
        summary="Repay (partial, on time, early; no amount: all)",
        openapi_extra=_body_schema(RepayIn),
    )
    async def repay(plan_id: str, request: Request) -> Response:
        return await guarded(
            request,
            RepayIn,
            lambda b: (
                s.prepay(plan_id, b.request_id)
                if b.amount_fen is None
                else s.repay(plan_id, b.amount_fen, b.request_id)
            ),
        )

    @r.post("/refunds", summary="A merchant refund of an installment order", openapi_extra=_body_schema(RefundIn))
    async def refund(request: Request) -> Response:
        return await guarded(request, RefundIn, lambda b: s.refund(b.order_id, b.amount_fen, b.refund_id))

    @r.get("/shoppers/{shopper}", summary="A shopper's line: line, available, outstanding, frozen")
    async def line(shopper: str) -> Response:
        return await _run(s.line, shopper)

    @r.get("/shoppers/{shopper}/statement", summary="What the shopper owes today, plan by plan")
    async def statement(shopper: str) -> Response:
        return await _run(s.statement, shopper)

    @r.post(
        "/shoppers/{shopper}/deposit", summary="Money into the shopper's wallet", openapi_extra=_body_schema(DepositIn)
    )
    async def deposit(shopper: str, request: Request) -> Response:
        return await guarded(
            request, DepositIn, lambda b: {"wallet_fen": s.deposit(shopper, b.amount_fen, b.deposit_id)}
        )

    @r.post(
        "/merchants/{merchant}/apply",
        summary="Apply for a merchant loan: an offer in under a second",
        openapi_extra=_body_schema(ApplyIn),
    )
    async def apply(merchant: str, request: Request) -> Response:
        return await guarded(request, ApplyIn, lambda b: s.apply_loan(merchant, b.receivables_fen))

    @r.post(
        "/merchants/{merchant}/sales",
        summary="A sale (refund, chargeback) settled to the merchant",
        openapi_extra=_body_schema(SaleIn),
    )
    async def sale(merchant: str, request: Request) -> Response:
        return await guarded(request, SaleIn, lambda b: s.record_sale(merchant, b.sale_id, b.amount_fen, b.kind, b.day))

    @r.post(
        "/merchants/{merchant}/settlements",
        summary="A settlement: its share repays the loan (随借随还)",
        openapi_extra=_body_schema(SettlementIn),
    )
    async def settlement(merchant: str, request: Request) -> Response:
        return await guarded(request, SettlementIn, lambda b: s.on_settlement(merchant, b.settlement_id, b.amount_fen))

    @r.get("/merchants/{merchant}/loans", summary="The merchant's view of its loans")
    async def merchant_loans(merchant: str) -> Response:
        return await _run(s.merchant_loans, merchant)

    @r.get("/offers/{offer_id}", summary="An offer")
    async def offer(offer_id: str) -> Response:
        return await _run(s.offer, offer_id)

    @r.post("/loans", summary="Draw an approved offer into the merchant's account", openapi_extra=_body_schema(DrawIn))
    async def draw(request: Request) -> Response:
        return await guarded(request, DrawIn, lambda b: s.draw_loan(b.offer_id, b.amount_fen, b.share_bp))

    @r.get("/loans/{loan_id}", summary="A loan, interest accrued to today")
    async def loan(loan_id: str) -> Response:
        return await _run(s.loan, loan_id)

    @r.post("/loans/{loan_id}/repay", summary="Early repayment of a loan", openapi_extra=_body_schema(LoanRepayIn))
    async def loan_repay(loan_id: str, request: Request) -> Response:
        return await guarded(request, LoanRepayIn, lambda b: s.repay_loan(loan_id, b.amount_fen, b.request_id))

    @r.get("/book", summary="The platform's view of the merchant-loan book")
    async def book() -> Response:
        return await _run(s.loan_book)

    @r.post("/run-day", summary="The day's batch: accrue, mark overdue, freeze lines, collect installments")
    async def run_day() -> Response:
        return await _run(s.run_day)

    return r


def create_app(service: CreditService) -> FastAPI:
    """The standalone credit service: the router, a health check and JSON errors for unknown routes."""
    app = FastAPI(
        title="liangcao credit",
        version=__version__,
        description="Installment plans (花呗分期), consumer credit lines and merchant loans (310) on the payments core.",
    )
    app.include_router(router(service))

    @app.get("/v1/health", summary="Liveness")
    async def health() -> Response:
        return await _run(lambda: {"status": "ok", "day": service.today()})

    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = Code.NOT_FOUND if exc.status_code == 404 else Code.INVALID_ARGUMENT
        return JSONResponse(
            {"code": int(code), "name": codes.name_of(code), "message": str(exc.detail)}, status_code=exc.status_code
        )

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        return _error(Code.INTERNAL, f"internal error: {type(exc).__name__}")

    return app
