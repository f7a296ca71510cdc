"""Errors at the API boundary: every one is JSON ``{code, message, detail}``, translated once, here.

``code`` is stable (``liangcao.codes``) and the HTTP status follows it, from the code registry alone
(:func:`liangcao.codes.http_status`; any business refusal is 400). The handlers cover the whole exception tree: a :class:`~liangcao.errors.LiangcaoError` from a service,
an :class:`ApiError` raised by a router for an HTTP matter (a body too large, a bad header), request
validation, Starlette's own 404/405, input nested too deeply (``RecursionError``) and, last, anything else
(500 ``INTERNAL``: never a traceback on the wire).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from liangcao import codes
from liangcao.codes import Code
from liangcao.errors import LiangcaoError


class ErrorBody(BaseModel):
    code: int
    message: str
    detail: Any = None


#: The error answers every route documents in the OpenAPI document.
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "bad input"},
    401: {"model": ErrorBody, "description": "missing or invalid bearer token"},
    403: {"model": ErrorBody, "description": "forbidden, or the token lacks the scope (504 INSUFFICIENT_SCOPE)"},
    404: {"model": ErrorBody, "description": "not found"},
    413: {"model": ErrorBody, "description": "too large"},
    503: {"model": ErrorBody, "description": "node busy or shutting down"},
}


class ApiError(Exception):
    """An error of the HTTP exchange itself, with its status (a service raises ``LiangcaoError`` instead).
    Unlike a ``LiangcaoError`` it is not counted as an admission refusal in the metrics."""

    def __init__(self, status: int, code: int, message: str, detail: Any = None) -> None:
        self.status, self.code, self.message, self.detail = status, code, message, detail


def error(status: int, code: int, message: str, detail: Any = None) -> JSONResponse:
    return JSONResponse({"code": int(code), "message": message, "detail": detail}, status_code=status)


def _methods_of(request: Request) -> list[str]:
    """Every method some route of the app answers at the request's path (one path, several routes)."""
    from starlette.routing import Match

    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)  # PARTIAL: the path matches, the method does not
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def install(app: FastAPI) -> None:
    """Add the error handlers to ``app`` (whose ``state.metrics`` counts admission refusals)."""

    @app.exception_handler(LiangcaoError)
    async def _liangcao_error(request: Request, exc: LiangcaoError) -> JSONResponse:
        if exc.code in (Code.MEMPOOL_FULL, Code.TOO_LARGE) or exc.code < 300:
            request.app.state.metrics.rejected.labels(str(exc.code)).inc()
        return error(codes.http_status(exc.code), exc.code, exc.message, exc.detail)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error(exc.status, exc.code, exc.message, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [
            {"loc": ".".join(str(x) for x in e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in exc.errors()
        ]
        where = ", ".join(d["loc"] + ": " + d["msg"] for d in detail[:3])
        return error(400, Code.INVALID_ARGUMENT, f"invalid request: {where}", detail)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = Code.NOT_FOUND if exc.status_code == 404 else Code.INVALID_ARGUMENT
        response = error(exc.status_code, code, str(exc.detail))
        for name, value in (exc.headers or {}).items():  # e.g. Allow on 405
            response.headers[name] = value
        if exc.status_code == 405:  # Starlette names the first route's methods only: name every route's
            response.headers["Allow"] = ", ".join(_methods_of(request))
        return response

    @app.exception_handler(RecursionError)
    async def _too_deep(request: Request, exc: RecursionError) -> JSONResponse:
        # Bodies are scanned for depth before decoding (encoding.too_deep); this is the last line, so that
        # no nesting ever becomes a 500.
        return error(400, Code.VALUE_TOO_DEEP, "input nests too deeply")

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        return error(500, Code.INTERNAL, f"internal error ({type(exc).__name__}); the node logged it")
