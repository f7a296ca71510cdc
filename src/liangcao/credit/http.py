"""The credit service's HTTP API: ``router(service)`` (mount it in any FastAPI app, e.g. the checkout
gateway) and ``create_app(service)`` (the standalone ``liangcao credit start`` service).

Bodies are read with msgspec, strictly: integers only (a float amount is refused), no unknown fields.
Every error is JSON ``{"code", "name", "message"}`` with the status the code registry gives
(``liangcao.codes.http_status``); the router answers its own errors, so it needs no app-level handler.
Money is integer fen throughout.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable
from typing import Any

import msgspec
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from liangcao import __version__, codes
from liangcao.codes import Code
from liangcao.credit.errors import CreditCode
from liangcao.credit.identity import WWW_AUTHENTICATE, CreditIdentity, forbidden, identity_in
from liangcao.credit.service import CreditService
from liangcao.errors import Fault, LiangcaoError
from liangcao.sessions import Caller

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


class SessionIn(msgspec.Struct, forbid_unknown_fields=True):
    role: str
    subject: str
    ttl_s: int = 3600


class LoanRepayIn(msgspec.Struct, forbid_unknown_fields=True):
    amount_fen: int
    request_id: str | None = None


def _error(code: int, message: str) -> JSONResponse:
    # a 401 names its scheme, as RFC 9110 asks (a client learns to send a bearer token)
    headers = {"WWW-Authenticate": WWW_AUTHENTICATE} if code == CreditCode.UNAUTHENTICATED else None
    return JSONResponse(
        {"code": int(code), "name": codes.name_of(code), "message": message},
        status_code=codes.http_status(code),
        headers=headers,
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
        value = msgspec.json.decode(bytes(data), type=t)
    except msgspec.ValidationError as exc:
        text = str(exc)
        # A money field (``*_fen``) that is not an integer is a bad amount; anything else (an unknown field,
        # a missing one, a wrong type) is a bad argument.
        code = CreditCode.BAD_AMOUNT if _MONEY_FIELD.search(text) else Code.INVALID_ARGUMENT
        raise LiangcaoError(code, f"invalid body: {text}") from None
    except msgspec.DecodeError as exc:
        raise LiangcaoError(Code.BAD_ENCODING, f"body is not JSON: {exc}") from None
    # msgspec keeps the last of two equal keys, other parsers (a proxy, a WAF, an audit log) the first: one
    # body, two shoppers or two amounts. Refused, as the checkout gateway does (a body that decoded above is
    # JSON, so only the duplicate can fail here).
    try:
        json.loads(data, object_pairs_hook=_no_duplicates)
    except _KeyTwice:
        raise LiangcaoError(Code.INVALID_ARGUMENT, "invalid body: a key appears twice in an object") from None
    except ValueError as exc:  # what msgspec read and json does not (e.g. an integer of thousands of digits)
        raise LiangcaoError(Code.INVALID_ARGUMENT, f"invalid body: {exc}") from None
    return value


class _KeyTwice(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _KeyTwice("a key appears twice")
    return out


#: A route's rule: refuses (``FORBIDDEN``) a caller who may not act on what the request names.
Rule = Callable[[Caller, Any], None]


async def _run(fn: Callable[..., Any], *args: Any) -> Response:
    try:
        return _json(await run_in_threadpool(fn, *args))
    except LiangcaoError as exc:
        return _error(exc.code, exc.message)
    except (Fault, sqlite3.Error) as exc:
        # The core or the store failed (nothing was half-written: the intent is finished on the next call
        # or on open). The router is mounted in apps without our handlers, so it answers JSON itself.
        return _error(Code.NOT_READY, f"the credit service is unavailable: {type(exc).__name__}")


def router(service: CreditService, identity: CreditIdentity | None = None) -> APIRouter:
    """The credit API over ``service``, under ``/v1/credit``. Every route needs a caller (``Authorization:
    Bearer <session or operator token>``; there is no open mode): ``identity`` is who may call, by default
    the session key and operator token in the folder of the service's records (made if need be). A host
    app that mounts the router passes the credit service's identity, not its own (another realm, another
    key). The rule of each route is in docs/credit.md, "Who is calling"."""
    r = APIRouter(prefix="/v1/credit", tags=["credit"])
    s = service
    ident = identity or identity_in(s.path.parent)

    # --- the rules: each runs in the worker thread just before its action, so a refusal writes nothing

    def anyone(c: Caller, b: Any) -> None:
        """Any authenticated caller (a quote stores nothing)."""

    def operator(what: str) -> Rule:
        def rule(c: Caller, b: Any) -> None:
            if c.role != "operator":
                raise forbidden(c, what)

        return rule

    def own(role: str, subject: Callable[[Any], str], what: str) -> Rule:
        """The operator, or ``role`` whose subject is the one the request names."""

        def rule(c: Caller, b: Any) -> None:
            if c.role == "operator":
                return
            name = subject(b)
            if c.role != role or c.subject != name:
                raise forbidden(c, f"{what} of {role} {name!r}")

        return rule

    def plan_party(plan_id: Callable[[Any], str], what: str, *, shopper: bool, merchant: bool) -> Rule:
        """The operator, the plan's shopper (``shopper``), its merchant (``merchant``): read from the plan
        (an unknown plan is the service's 404, whoever asks)."""

        def rule(c: Caller, b: Any) -> None:
            if c.role == "operator":
                return
            plan = s.plan(plan_id(b))
            if (shopper and c.role == "shopper" and c.subject == plan.shopper) or (
                merchant and c.role == "merchant" and c.subject == plan.merchant
            ):
                return
            raise forbidden(c, f"{what} plan {plan.plan_id!r}")

        return rule

    def merchant_of(lookup: Callable[[Any], str], what: str) -> Rule:
        """The operator, or the merchant the offer or loan belongs to (read from its record)."""

        def rule(c: Caller, b: Any) -> None:
            if c.role == "operator":
                return
            if c.role != "merchant" or c.subject != lookup(b):
                raise forbidden(c, what)

        return rule

    async def guarded(request: Request, t: type[Any] | None, rule: Rule, fn: Callable[[Any], Any]) -> Response:
        """Who (401 before the body is read), the body, then in the worker: the rule (403), the action."""
        try:
            c = ident.caller(request.headers.getlist("authorization"))
            body = await _read(request, t) if t is not None else None
        except LiangcaoError as exc:
            return _error(exc.code, exc.message)

        def act() -> Any:
            rule(c, body)
            return fn(body)

        return await _run(act)

    @r.post("/sessions", summary="Issue a session token (the operator token only)", status_code=201,
            openapi_extra=_body_schema(SessionIn))  # fmt: skip
    async def sessions_(request: Request) -> Response:
        header = request.headers.getlist("authorization")
        if not ident.is_operator_token(header):
            try:
                c = ident.caller(header)  # 401 without a good token
            except LiangcaoError as exc:
                return _error(exc.code, exc.message)
            # a session, even an operator's, cannot mint others: a stolen one stays one
            return _error(
                CreditCode.FORBIDDEN, f"{c.role} {c.subject!r} may not issue sessions: the operator token only"
            )
        try:
            b = await _read(request, SessionIn)
            token, expires_ms = ident.issue(b.role, b.subject, b.ttl_s)
        except LiangcaoError as exc:
            return _error(exc.code, exc.message)
        out = {"token": token, "role": b.role, "subject": b.subject, "expires_ms": expires_ms, "kid": ident.key.kid}
        return Response(msgspec.json.encode(out), status_code=201, media_type="application/json")

    @r.post(
        "/quote", summary="The schedule a checkout would make (nothing stored)", openapi_extra=_body_schema(QuoteIn)
    )
    async def quote(request: Request) -> Response:
        return await guarded(request, QuoteIn, anyone, lambda b: s.quote(b.amount_fen, b.periods, b.fee_payer))

    @r.post("/installments", summary="Buy on installments (3/6/12 periods)", openapi_extra=_body_schema(InstallmentIn))
    async def installments(request: Request) -> Response:
        return await guarded(
            request,
            InstallmentIn,
            own("shopper", lambda b: b.shopper, "buy on installments in the name"),
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
            operator("record plans (the gateway's call)"),
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
    async def line_account(shopper: str, request: Request) -> Response:
        return await guarded(
            request,
            None,
            own("shopper", lambda _: shopper, "read the line account"),
            lambda _: {"account_id": s.line_account(shopper)},
        )

    @r.get("/plans/{plan_id:path}", summary="A plan, penalty accrued to today")
    async def plan(plan_id: str, request: Request) -> Response:
        rule = plan_party(lambda _: plan_id, "read", shopper=True, merchant=True)
        return await guarded(request, None, rule, lambda _: s.plan(plan_id))

    @r.post(
        "/plans/{plan_id:path}/repay",
        summary="Repay (partial, on time, early; no amount: all)",
        openapi_extra=_body_schema(RepayIn),
    )
    async def repay(plan_id: str, request: Request) -> Response:
        return await guarded(
            request,
            RepayIn,
            plan_party(lambda _: plan_id, "repay", shopper=True, merchant=False),
            lambda b: (
                s.prepay(plan_id, b.request_id)
                if b.amount_fen is None
                else s.repay(plan_id, b.amount_fen, b.request_id)
            ),
        )

    @r.post("/refunds", summary="A merchant refund of an installment order", openapi_extra=_body_schema(RefundIn))
    async def refund(request: Request) -> Response:
        return await guarded(
            request,
            RefundIn,
            plan_party(lambda b: b.order_id, "refund", shopper=False, merchant=True),
            lambda b: s.refund(b.order_id, b.amount_fen, b.refund_id),
        )

    @r.get("/shoppers/{shopper}", summary="A shopper's line: line, available, outstanding, frozen")
    async def line(shopper: str, request: Request) -> Response:
        return await guarded(
            request, None, own("shopper", lambda _: shopper, "read the line"), lambda _: s.line(shopper)
        )

    @r.get("/shoppers/{shopper}/statement", summary="What the shopper owes today, plan by plan")
    async def statement(shopper: str, request: Request) -> Response:
        rule = own("shopper", lambda _: shopper, "read the statement")
        return await guarded(request, None, rule, lambda _: s.statement(shopper))

    @r.post(
        "/shoppers/{shopper}/deposit", summary="Money into the shopper's wallet", openapi_extra=_body_schema(DepositIn)
    )
    async def deposit(shopper: str, request: Request) -> Response:
        # money from outside the platform (a bank transfer in): the operator's, like the gateway's top-up
        return await guarded(
            request,
            DepositIn,
            operator("deposit money from outside"),
            lambda b: {"wallet_fen": s.deposit(shopper, b.amount_fen, b.deposit_id)},
        )

    @r.post(
        "/merchants/{merchant}/apply",
        summary="Apply for a merchant loan: an offer in under a second",
        openapi_extra=_body_schema(ApplyIn),
    )
    async def apply(merchant: str, request: Request) -> Response:
        rule = own("merchant", lambda _: merchant, "apply for a loan in the name")
        return await guarded(request, ApplyIn, rule, lambda b: s.apply_loan(merchant, b.receivables_fen))

    @r.post(
        "/merchants/{merchant}/sales",
        summary="A sale (refund, chargeback) settled to the merchant",
        openapi_extra=_body_schema(SaleIn),
    )
    async def sale(merchant: str, request: Request) -> Response:
        # the platform's settlement records: a merchant reporting its own sales would raise its own score
        return await guarded(
            request,
            SaleIn,
            operator("record settled sales"),
            lambda b: s.record_sale(merchant, b.sale_id, b.amount_fen, b.kind, b.day),
        )

    @r.post(
        "/merchants/{merchant}/settlements",
        summary="A settlement: its share repays the loan (随借随还)",
        openapi_extra=_body_schema(SettlementIn),
    )
    async def settlement(merchant: str, request: Request) -> Response:
        return await guarded(
            request,
            SettlementIn,
            operator("record settlements"),
            lambda b: s.on_settlement(merchant, b.settlement_id, b.amount_fen),
        )

    @r.get("/merchants/{merchant}/loans", summary="The merchant's view of its loans")
    async def merchant_loans(merchant: str, request: Request) -> Response:
        rule = own("merchant", lambda _: merchant, "read the loans")
        return await guarded(request, None, rule, lambda _: s.merchant_loans(merchant))

    @r.get("/offers/{offer_id}", summary="An offer")
    async def offer(offer_id: str, request: Request) -> Response:
        rule = merchant_of(lambda _: s.offer(offer_id).merchant, f"read offer {offer_id!r}")
        return await guarded(request, None, rule, lambda _: s.offer(offer_id))

    @r.post("/loans", summary="Draw an approved offer into the merchant's account", openapi_extra=_body_schema(DrawIn))
    async def draw(request: Request) -> Response:
        return await guarded(
            request,
            DrawIn,
            merchant_of(lambda b: s.offer(b.offer_id).merchant, "draw another merchant's offer"),
            lambda b: s.draw_loan(b.offer_id, b.amount_fen, b.share_bp),
        )

    @r.get("/loans/{loan_id}", summary="A loan, interest accrued to today")
    async def loan(loan_id: str, request: Request) -> Response:
        rule = merchant_of(lambda _: s.loan(loan_id).merchant, f"read loan {loan_id!r}")
        return await guarded(request, None, rule, lambda _: s.loan(loan_id))

    @r.post("/loans/{loan_id}/repay", summary="Early repayment of a loan", openapi_extra=_body_schema(LoanRepayIn))
    async def loan_repay(loan_id: str, request: Request) -> Response:
        return await guarded(
            request,
            LoanRepayIn,
            merchant_of(lambda _: s.loan(loan_id).merchant, f"repay loan {loan_id!r}"),
            lambda b: s.repay_loan(loan_id, b.amount_fen, b.request_id),
        )

    @r.get("/book", summary="The platform's view of the merchant-loan book")
    async def book(request: Request) -> Response:
        return await guarded(request, None, operator("read the loan book"), lambda _: s.loan_book())

    @r.post("/run-day", summary="The day's batch: accrue, mark overdue, freeze lines, collect installments")
    async def run_day(request: Request) -> Response:
        return await guarded(request, None, operator("run the day's batch"), lambda _: s.run_day())

    return r


def create_app(service: CreditService, identity: CreditIdentity | None = None) -> FastAPI:
    """The standalone credit service: the router, a health check (open: no one's data) and JSON errors for
    unknown routes. ``identity``: who may call (default: the key and operator token in the records' folder)."""
    app = FastAPI(
        title="liangcao credit",
        version=__version__,
        description="Installment plans (花呗分期), consumer credit lines and merchant loans (310) on the payments core.",
    )
    app.include_router(router(service, identity))

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

    def openapi() -> dict[str, Any]:
        # the description names the bearer session on every credit route (the health check stays open)
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            spec.setdefault("components", {})["securitySchemes"] = {
                "session": {"type": "http", "scheme": "bearer", "bearerFormat": "lc1.<claims>.<mac>"}
            }
            for path, ops in spec["paths"].items():
                if path.startswith("/v1/credit/"):
                    for op in ops.values():
                        op["security"] = [{"session": []}]
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
