"""The checkout page: an order's amount and the payment methods offered, served by the gateway's own app.

::

    GET /checkout/{order_id}            the page (plain HTML, ``web/checkout.html``)
    GET /checkout/assets/checkout.js    its script (``web/checkout.js``; no CDN, no build step)
    GET /v1/orders/{order_id}/offers    {order, methods: [{method, kind, periods?, fee_payer?, fee_rate_bp?,
                                         fee?, shopper_total?, schedule?: [{n, due_day, principal, fee,
                                         due}]}]}

The offers are computed on the server: an installment option is ``CreditService.quote`` for the order's
amount with the method's periods and fee payer (``liangcao checkout start --installment-fee-payer``), so the
page shows the figures the plan will have. The page pays by ``POST /v1/orders/{id}/pay`` with the method and
an idempotency key; an answer ``STEP_UP_REQUIRED`` is confirmed with ``navigator.credentials.get`` on the
challenge and sent again with the same key (``PasskeyStepUp``). Every value the page shows is set with
``textContent`` (never ``innerHTML``) and every handler is attached from the script (no inline handlers).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import msgspec
from fastapi import APIRouter
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from liangcao.checkout.service import Checkout
from liangcao.errors import LiangcaoError


def _asset(name: str) -> bytes:
    return resources.files("liangcao.checkout").joinpath("web", name).read_bytes()


def offers(co: Checkout, order_id: str) -> dict[str, Any]:
    """The order and every method it may be paid with, installments with their schedule and fee."""
    body = co.get_order(order_id)
    amount = int(body["amount"])
    out: list[dict[str, Any]] = []
    for name, m in co.methods.items():
        credit, periods = getattr(m, "credit", None), getattr(m, "periods", None)
        if credit is None or periods is None:
            out.append({"method": name, "kind": "wallet" if name == "wallet" else "other"})
            continue
        option: dict[str, Any] = {"method": name, "kind": "installments", "periods": periods}
        fee_payer = str(getattr(m, "fee_payer", "shopper"))
        try:
            plan = credit.quote(amount, periods, fee_payer)
        except LiangcaoError as exc:  # e.g. over the credit service's installment_amount_fen_max
            option.update(available=False, reason=exc.message)
            out.append(option)
            continue
        schedule = [
            {"n": p.n, "due_day": p.due_day, "principal": p.principal, "fee": p.fee, "due": p.principal + p.fee}
            for p in plan.schedule
        ]
        option.update(
            available=True,
            fee_payer=fee_payer,
            fee_rate_bp=plan.fee_rate_bp,
            fee=plan.fee,
            shopper_total=sum(p["due"] for p in schedule),
            schedule=schedule,
        )
        out.append(option)
    return {"order": body, "methods": out}


def router(co: Checkout) -> APIRouter:
    """The page, its script and the offers endpoint, to pass to ``create_app(..., routers=[...])``."""
    r = APIRouter()
    html, js = _asset("checkout.html"), _asset("checkout.js")
    # The page talks only to its own origin; nothing else may be loaded or framed.
    csp = (
        "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self' 'unsafe-inline'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
    headers = {"content-security-policy": csp, "x-content-type-options": "nosniff", "cache-control": "no-store"}

    @r.get("/checkout/assets/checkout.js", include_in_schema=False)
    async def script() -> Response:
        return Response(js, media_type="text/javascript; charset=utf-8", headers=headers)

    @r.get("/checkout/{order_id}", summary="The checkout page of an order")
    async def page(order_id: str) -> Response:
        return Response(html, media_type="text/html; charset=utf-8", headers=headers)

    @r.get("/v1/orders/{order_id}/offers", summary="The payment methods offered for an order, with schedules")
    async def order_offers(order_id: str) -> Response:
        # quote and the order read touch SQLite: the thread pool, not the event loop
        body = await run_in_threadpool(offers, co, order_id)
        return Response(msgspec.json.encode(body), media_type="application/json")

    return r
