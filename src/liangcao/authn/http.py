"""The relying party over HTTP: ``router(rp)`` is a FastAPI ``APIRouter`` (JSON endpoints and the page).

::

    GET  /authn/                               the page (register a device, confirm a payment)
    POST /authn/v1/registration/options        {shopper, device_name} -> {ceremony_id, expires_ms, publicKey}
    POST /authn/v1/registration                {shopper, ceremony_id, credential} -> the device
    GET  /authn/v1/credentials?shopper=        {credentials: [...]}
    POST /authn/v1/credentials/rename          {shopper, credential_id, name}
    POST /authn/v1/credentials/revoke          {shopper, credential_id}
    GET  /authn/v1/clone-alarms?shopper=       {alarms: [...]}
    POST /authn/v1/passwordless                {shopper, limit_fen}
    POST /authn/v1/payment/challenge           {shopper, order_id, payee, amount_fen, currency}
    POST /authn/v1/payment/verify              {shopper, challenge_id, credential, order_id, payee, amount_fen,
                                                currency} -> the confirmation

Bodies are read with msgspec (integers only for money: ``1999.0`` is refused, no unknown fields); every
refusal is JSON ``{code, name, message, detail}`` with the code's HTTP status (``liangcao.codes``), never a
traceback. The relying party blocks (fsync), so each call runs on the thread pool.

Who the shopper is: this router takes the ``shopper`` named in the request, which is right for the demo
page and for a gateway that calls it server-side. A gateway that exposes it to browsers passes
``shopper_of(request) -> str`` (its session), and a request naming another shopper is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from liangcao import codes
from liangcao.authn import codes as lim
from liangcao.authn.codes import AuthnCode, AuthnError
from liangcao.authn.page import PAGE
from liangcao.authn.rp import RelyingParty, check_text
from liangcao.errors import Fault, LiangcaoError

T = TypeVar("T")
#: a body is a credential (credential_json_bytes_max) plus a few short fields
body_bytes_max = lim.credential_json_bytes_max + 4_096


class _Options(msgspec.Struct, forbid_unknown_fields=True):
    shopper: str
    device_name: str


class _Register(msgspec.Struct, forbid_unknown_fields=True):
    shopper: str
    ceremony_id: str
    credential: dict[str, Any]


class _Which(msgspec.Struct, forbid_unknown_fields=True):
    shopper: str
    credential_id: str


class _Rename(msgspec.Struct, forbid_unknown_fields=True):
    shopper: str
    credential_id: str
    name: str


class _Limit(msgspec.Struct, forbid_unknown_fields=True):
    shopper: str
    limit_fen: int


class _Payment(msgspec.Struct, forbid_unknown_fields=True):
    shopper: str
    order_id: str
    payee: str
    amount_fen: int
    currency: str


class _Verify(msgspec.Struct, forbid_unknown_fields=True):
    shopper: str
    challenge_id: str
    credential: dict[str, Any]
    order_id: str
    payee: str
    amount_fen: int
    currency: str


def _refusal(exc: LiangcaoError | Fault) -> JSONResponse:
    status = codes.http_status(exc.code) if isinstance(exc, LiangcaoError) else 503
    body = {"code": exc.code, "name": codes.name_of(exc.code), "message": exc.message, "detail": exc.detail}
    return JSONResponse(body, status_code=status)


def _json(obj: Any) -> Response:
    return Response(msgspec.json.encode(obj), media_type="application/json")


async def _body(request: Request, kind: type[T]) -> T:
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > body_bytes_max:
            raise AuthnError(AuthnCode.BAD_REQUEST, f"body over {body_bytes_max} bytes")
    try:
        return msgspec.json.decode(bytes(data), type=kind)
    except msgspec.ValidationError as exc:
        raise AuthnError(AuthnCode.BAD_REQUEST, f"invalid body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise AuthnError(AuthnCode.BAD_REQUEST, f"body is not JSON: {exc}") from None


def router(
    rp: RelyingParty, *, prefix: str = "/authn", shopper_of: Callable[[Request], str] | None = None
) -> APIRouter:
    """The endpoints over ``rp``, under ``prefix``; ``shopper_of`` names the signed-in shopper (see above)."""
    r = APIRouter(prefix=prefix, tags=["authn"])

    def who(request: Request, named: str) -> str:
        if shopper_of is not None and shopper_of(request) != named:
            raise AuthnError(AuthnCode.UNKNOWN_SHOPPER, "the request names another shopper than the signed-in one")
        return named

    async def run(fn: Callable[..., Any], *args: Any) -> Response:
        try:
            out = await run_in_threadpool(fn, *args)
        except (LiangcaoError, Fault) as exc:
            return _refusal(exc)
        return _json(out.to_dict() if hasattr(out, "to_dict") else out)

    async def guarded(request: Request, kind: type[T], then: Callable[[T], Any]) -> Response:
        try:
            body = await _body(request, kind)
            out: Response = await then(body)
            return out
        except LiangcaoError as exc:
            return _refusal(exc)

    @r.get("/", response_class=HTMLResponse, summary="The page: register a device, confirm a payment")
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE, headers={"cache-control": "no-store"})

    @r.post("/v1/registration/options", summary="Open a registration ceremony")
    async def registration_options(request: Request) -> Response:
        async def then(b: _Options) -> Response:
            return await run(rp.registration_options, who(request, b.shopper), b.device_name)

        return await guarded(request, _Options, then)

    @r.post("/v1/registration", summary="Answer a registration ceremony: the device is stored")
    async def register(request: Request) -> Response:
        async def then(b: _Register) -> Response:
            return await run(rp.register, who(request, b.shopper), b.ceremony_id, b.credential)

        return await guarded(request, _Register, then)

    @r.get("/v1/credentials", summary="A shopper's devices")
    async def credentials(request: Request, shopper: str = "") -> Response:
        try:
            who(request, shopper)
            found = await run_in_threadpool(rp.credentials, check_text("shopper", shopper, lim.shopper_chars_max))
        except LiangcaoError as exc:
            return _refusal(exc)
        return _json({"credentials": [c.to_dict() for c in found]})

    @r.get("/v1/clone-alarms", summary="Assertions whose counter went backwards")
    async def clone_alarms(request: Request, shopper: str = "") -> Response:
        try:
            who(request, shopper)
            found = await run_in_threadpool(rp.clone_alarms, check_text("shopper", shopper, lim.shopper_chars_max))
        except LiangcaoError as exc:
            return _refusal(exc)
        return _json({"alarms": found})

    @r.post("/v1/credentials/rename", summary="Rename a device")
    async def rename(request: Request) -> Response:
        async def then(b: _Rename) -> Response:
            return await run(rp.rename, who(request, b.shopper), b.credential_id, b.name)

        return await guarded(request, _Rename, then)

    @r.post("/v1/credentials/revoke", summary="Revoke a device")
    async def revoke(request: Request) -> Response:
        async def then(b: _Which) -> Response:
            return await run(rp.revoke, who(request, b.shopper), b.credential_id)

        return await guarded(request, _Which, then)

    @r.post("/v1/passwordless", summary="Set the shopper's small-payment limit without confirmation (0: off)")
    async def passwordless(request: Request) -> Response:
        async def then(b: _Limit) -> Response:
            return await run(lambda: {"limit_fen": rp.set_passwordless_limit(who(request, b.shopper), b.limit_fen)})

        return await guarded(request, _Limit, then)

    @r.post("/v1/payment/challenge", summary="Open a payment confirmation bound to its terms")
    async def payment_challenge(request: Request) -> Response:
        async def then(b: _Payment) -> Response:
            return await run(
                rp.payment_challenge, who(request, b.shopper), b.order_id, b.payee, b.amount_fen, b.currency
            )

        return await guarded(request, _Payment, then)

    @r.post("/v1/payment/verify", summary="Accept the device's signature over exactly these terms, once")
    async def payment_verify(request: Request) -> Response:
        async def then(b: _Verify) -> Response:
            return await run(
                rp.verify_payment, who(request, b.shopper), b.challenge_id, b.credential, b.order_id, b.payee,
                b.amount_fen, b.currency,
            )  # fmt: skip

        return await guarded(request, _Verify, then)

    return r


def create_app(rp: RelyingParty) -> FastAPI:
    """A stand-alone service around the router (``liangcao authn serve``, the page's tests)."""
    app = FastAPI(title="liangcao authn", description="WebAuthn payment confirmation")
    app.include_router(router(rp))

    @app.get("/v1/health")
    async def health() -> Response:
        return _json({"status": "ok", "rp_id": rp.rp_id, "origin": rp.origin})

    return app
