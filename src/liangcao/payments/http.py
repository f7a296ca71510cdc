"""The payments service's HTTP API (FastAPI): batch endpoints, lookups, account queries, OpenAPI.

Bodies are read with msgspec, not pydantic: a batch of 8,190 transfers is decoded in a few milliseconds and
validated strictly (integers only, no unknown fields, no key twice in one object: JSON parsers disagree on
which of two values wins, so neither does). Every error is JSON ``{code, message, detail}``.
Per-event outcomes are not errors: a batch answers 200 with one result per event.
Every route but ``GET /v1/health`` needs ``Authorization: Bearer <token>`` (:mod:`liangcao.payments.identity`):
the check runs before routing, admission control and the body, so a refused request costs a header read.
JSON numbers carry u128 values exactly; clients whose JSON numbers are doubles (JavaScript) must use a
parser that keeps big integers.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import AsyncIterator
from typing import Any, Protocol

import msgspec
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from liangcao import __version__, limits
from liangcao.codes import Code
from liangcao.errors import LiangcaoError
from liangcao.flow import Gate, Priority
from liangcao.flow.asgi import Route, by_route, install, open_rules
from liangcao.payments.engine import PaymentsError
from liangcao.payments.errors import PayCode
from liangcao.payments.identity import OPEN_PATHS, WWW_AUTHENTICATE, PayIdentity, refusal
from liangcao.payments.types import (
    Account,
    AccountBalance,
    AccountFilter,
    CreateAccountResult,
    CreateTransferResult,
    QueryFilter,
    Transfer,
    TransferStatus,
)


class Backend(Protocol):
    """What the service needs of a backend (``Engine`` and ``PostgresBackend`` both are one)."""

    def create_accounts(self, accounts: list[Account]) -> list[int]: ...
    def create_transfers(self, transfers: list[Transfer]) -> list[int]: ...
    def pulse(self) -> None: ...
    def pulse_if_due(self) -> bool: ...
    def lookup_accounts(self, ids: list[int]) -> list[Account]: ...
    def lookup_transfers(self, ids: list[int]) -> list[Transfer]: ...
    def transfer_status(self, transfer_id: int) -> int | None: ...
    def get_account_transfers(self, f: AccountFilter) -> list[Transfer]: ...
    def get_account_balances(self, f: AccountFilter) -> list[AccountBalance]: ...
    def query_accounts(self, q: QueryFilter) -> list[Account]: ...
    def query_transfers(self, q: QueryFilter) -> list[Transfer]: ...


_Int = int | msgspec.UnsetType


# The wire forms are objects with named fields, while types.Account/Transfer are array-like (compact in the
# log); msgspec fixes that per type, hence these object-form twins, field for field in the same order.
# Optional fields default to UNSET, not 0, so that the keys an object holds can be counted.
class AccountIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    id: int
    ledger: int
    code: int
    flags: _Int = msgspec.UNSET
    debits_pending: _Int = msgspec.UNSET  # as in TigerBeetle's Account; must be zero
    debits_posted: _Int = msgspec.UNSET
    credits_pending: _Int = msgspec.UNSET
    credits_posted: _Int = msgspec.UNSET
    user_data_128: _Int = msgspec.UNSET
    user_data_64: _Int = msgspec.UNSET
    user_data_32: _Int = msgspec.UNSET
    timestamp: _Int = msgspec.UNSET  # zero, or the original time of an imported account


class TransferIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    id: int
    debit_account_id: _Int = msgspec.UNSET
    credit_account_id: _Int = msgspec.UNSET
    amount: _Int = msgspec.UNSET
    ledger: _Int = msgspec.UNSET
    code: _Int = msgspec.UNSET
    flags: _Int = msgspec.UNSET
    pending_id: _Int = msgspec.UNSET
    timeout: _Int = msgspec.UNSET
    user_data_128: _Int = msgspec.UNSET
    user_data_64: _Int = msgspec.UNSET
    user_data_32: _Int = msgspec.UNSET
    timestamp: _Int = msgspec.UNSET  # zero, or the original time of an imported transfer


class Ids(msgspec.Struct, forbid_unknown_fields=True):
    ids: list[int]


_accounts_in = msgspec.json.Decoder(list[AccountIn])
_transfers_in = msgspec.json.Decoder(list[TransferIn])
_ids_in = msgspec.json.Decoder(Ids)
_STATUS: dict[int, int] = {Code.TOO_LARGE: 413, Code.NOT_READY: 503, Code.NOT_FOUND: 404, Code.INTERNAL: 500}
_STATUS_NAMES = {int(s): s.name.lower() for s in TransferStatus}


def decode(decoder: msgspec.json.Decoder[Any], data: bytes) -> Any:
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise PaymentsError(Code.INVALID_ARGUMENT, f"invalid body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise PaymentsError(Code.BAD_ENCODING, f"body is not JSON: {exc}") from None


def accounts_from_json(data: bytes) -> list[Account]:
    """Accounts from a JSON array of objects (the wire form), strictly checked; PaymentsError if not."""
    return _events(data, _accounts_in, Account, "account")


def transfers_from_json(data: bytes) -> list[Transfer]:
    """Transfers from a JSON array of objects (the wire form), strictly checked; PaymentsError if not."""
    return _events(data, _transfers_in, Transfer, "transfer")


def _events(data: bytes, decoder: msgspec.json.Decoder[Any], kind: Any, what: str) -> list[Any]:
    unset = msgspec.UNSET
    astuple = msgspec.structs.astuple
    out = []
    keys = 0
    for item in decode(decoder, data):
        values = astuple(item)
        present = [v for v in values if v is not unset]
        keys += len(present)
        out.append(kind(*values) if len(present) == len(values) else kind(*(0 if v is unset else v for v in values)))
    _no_repeated_keys(data, keys, what)
    return out


def _no_repeated_keys(data: bytes, keys: int, what: str) -> None:
    """Refuse a body in which some object names a key twice.

    In a body that decoded (integers only, known field names) a colon can only separate a key from its
    value, so the colons count the keys as written; the fields that ended up set count the distinct ones.
    Only when they differ is the body parsed again, slowly, to name the object and the key."""
    if data.count(b":") == keys:
        return
    where: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _ in items:
            if key in seen and not where:
                where.append(key)
            seen.add(key)
        return dict(items)

    parsed = json.loads(data, object_pairs_hook=pairs)
    index = next(
        (i for i, o in enumerate(parsed if isinstance(parsed, list) else [parsed]) if where and where[0] in o), 0
    )
    key = where[0] if where else "?"
    raise PaymentsError(
        Code.INVALID_ARGUMENT,
        f"invalid body: {what} {index} names the key {key!r} more than once (nothing applied)",
        {"index": index, "key": key},
    )


def ids_from_json(data: bytes) -> list[int]:
    ids = decode(_ids_in, data).ids
    _no_repeated_keys(data, 1, "the body")
    return list(ids)


def _schema(t: Any) -> dict[str, Any]:
    schema, components = msgspec.json.schema_components([t], ref_template="#/components/schemas/{name}")
    (one,) = schema
    out: dict[str, Any] = {"content": {"application/json": {"schema": one}}, "required": True}
    out["x-components"] = components
    return out


def _json(obj: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(obj), status_code=status, media_type="application/json")


def _err(status: int, code: int, message: str, detail: Any = None) -> JSONResponse:
    return JSONResponse({"code": int(code), "message": message, "detail": detail}, status_code=status)


def _as_dict(obj: Any) -> dict[str, Any]:
    return msgspec.structs.asdict(obj)


def _results(codes: list[int], names: type[CreateAccountResult] | type[CreateTransferResult]) -> dict[str, Any]:
    # "exists" is its own list: the event was applied by an earlier request with the same id and fields.
    exists = int(names.EXISTS)
    failed = [
        {"index": i, "code": int(c), "result": names(c).name.lower()} for i, c in enumerate(codes) if c and c != exists
    ]
    return {
        "results": [int(c) for c in codes],
        "failed": failed,
        "exists": [i for i, c in enumerate(codes) if c == exists],
    }


#: Admission classes (liangcao.flow): creating transfers is paying; lookups and queries are queries.
FLOW_ROUTES: tuple[Route, ...] = (
    ("*", "/v1/health", None, Priority.PAY),
    ("*", "/v1/flow", None, Priority.PAY),
    ("POST", "/v1/transfers/lookup", "queries", Priority.QUERY),
    ("POST", "/v1/accounts/lookup", "queries", Priority.QUERY),
    ("POST", "/v1/transfers", "transfers", Priority.PAY),
    ("POST", "/v1/pulse", "transfers", Priority.PAY),
    ("POST", "/v1/accounts", "accounts", Priority.CONFIRM),
)


class CallerCheck:
    """ASGI middleware: the caller of every request but ``/v1/health`` is the operator or a session of this
    service (401 ``UNAUTHENTICATED``), a read-only session only reads (403 ``READ_ONLY``), and only the
    operator token changes the admission rules (403 ``OPERATOR_ONLY``). It answers
    before anything else runs: no body is read, no admission is counted, nothing is written."""

    def __init__(self, app: Any, identity: PayIdentity) -> None:
        self.app = app
        self.identity = identity

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        authorization: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                if authorization is not None:  # two headers: which one counts is not a guess we make
                    await _refuse(send, 401, PayCode.UNAUTHENTICATED, "more than one Authorization header")
                    return
                authorization = value
        try:
            caller = self.identity.caller(None if authorization is None else authorization.decode("latin-1"))
        except LiangcaoError as exc:
            await _refuse(send, 401, exc.code, exc.message)
            return
        refused = refusal(caller, scope["method"], scope["path"])
        if refused is not None:
            await _refuse(send, 403, *refused)
            return
        scope.setdefault("state", {})["caller"] = caller
        await self.app(scope, receive, send)


async def _refuse(send: Any, status: int, code: int, message: str) -> None:
    body = msgspec.json.encode({"code": int(code), "message": message, "detail": None})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", WWW_AUTHENTICATE.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app(
    backend: Backend,
    *,
    identity: PayIdentity,
    serialize: bool = False,
    expire_every_s: float = 1.0,
    gate: Gate | None = None,
) -> FastAPI:
    """The service over ``backend``, open only to the callers ``identity`` accepts
    (:func:`liangcao.payments.identity.identity_in`); ``serialize`` puts one lock around it (a backend that
    is not thread-safe); ``gate``: admission control (default: open rules, every decision counted at
    ``/v1/flow``)."""
    lock = threading.Lock() if serialize else None
    stop = threading.Event()

    def expirer() -> None:
        # Engine time passes even with no traffic: a pending transfer whose timeout has gone by is expired
        # within about a second, durably, not only when the next batch arrives.
        while not stop.wait(expire_every_s):
            try:
                call(backend.pulse_if_due)
            except LiangcaoError:
                continue

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if expire_every_s > 0:
            threading.Thread(target=expirer, name="pay-expirer", daemon=True).start()
        yield
        stop.set()

    app = FastAPI(
        title="liangcao payments",
        version=__version__,
        description="Batch double-entry payments: accounts, transfers, two-phase transfers, idempotent ids.",
        lifespan=lifespan,
    )

    def call(fn: Any, *args: Any) -> Any:
        if lock is None:
            return fn(*args)
        with lock:
            return fn(*args)

    def transfers_with_status(ids: list[int]) -> list[dict[str, Any]]:
        # Lookup and statuses in one call on the thread pool: the backend never blocks the event loop.
        return [_transfer_out(t, backend.transfer_status(t.id)) for t in backend.lookup_transfers(ids)]

    @app.exception_handler(LiangcaoError)
    async def _liangcao(_: Request, exc: LiangcaoError) -> JSONResponse:
        return _err(_STATUS.get(exc.code, 400), exc.code, exc.message, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return _err(400, Code.INVALID_ARGUMENT, f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = Code.NOT_FOUND if exc.status_code == 404 else Code.INVALID_ARGUMENT
        return _err(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        return _err(500, Code.INTERNAL, f"internal error: {type(exc).__name__}")

    async def body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limits.pay_http_body_bytes_max:
            raise PaymentsError(Code.TOO_LARGE, f"body over pay_http_body_bytes_max={limits.pay_http_body_bytes_max}")
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > limits.pay_http_body_bytes_max:
                raise PaymentsError(
                    Code.TOO_LARGE, f"body over pay_http_body_bytes_max={limits.pay_http_body_bytes_max}"
                )
        return bytes(data)

    @app.post("/v1/accounts", openapi_extra={"requestBody": _schema(list[AccountIn])}, summary="Create accounts")
    async def create_accounts(request: Request) -> Response:
        accounts = accounts_from_json(await body(request))
        codes = await _run(call, backend.create_accounts, accounts)
        return _json(_results(codes, CreateAccountResult))

    @app.post("/v1/transfers", openapi_extra={"requestBody": _schema(list[TransferIn])}, summary="Create transfers")
    async def create_transfers(request: Request) -> Response:
        transfers = transfers_from_json(await body(request))
        codes = await _run(call, backend.create_transfers, transfers)
        return _json(_results(codes, CreateTransferResult))

    @app.post("/v1/accounts/lookup", openapi_extra={"requestBody": _schema(Ids)}, summary="Look up accounts")
    async def lookup_accounts(request: Request) -> Response:
        ids = ids_from_json(await body(request))
        found = await _run(call, backend.lookup_accounts, ids)
        return _json([_as_dict(a) for a in found])

    @app.post("/v1/transfers/lookup", openapi_extra={"requestBody": _schema(Ids)}, summary="Look up transfers")
    async def lookup_transfers(request: Request) -> Response:
        ids = ids_from_json(await body(request))
        return _json(await _run(call, transfers_with_status, ids))

    @app.get("/v1/accounts/{account_id}", summary="One account")
    async def get_account(account_id: int) -> Response:
        found = await _run(call, backend.lookup_accounts, [account_id])
        if not found:
            raise PaymentsError(Code.NOT_FOUND, f"no account {account_id}")
        return _json(_as_dict(found[0]))

    @app.get("/v1/transfers/{transfer_id}", summary="One transfer")
    async def get_transfer(transfer_id: int) -> Response:
        found = await _run(call, transfers_with_status, [transfer_id])
        if not found:
            raise PaymentsError(Code.NOT_FOUND, f"no transfer {transfer_id}")
        return _json(found[0])

    # One Query object per parameter: FastAPI keeps per-parameter state in it.
    def limit_q() -> Any:
        return Query(100, ge=0, le=limits.pay_query_limit_max, description="0 answers nothing")

    def ts_q() -> Any:
        return Query(0, ge=0, description="0: no bound")

    def field_q() -> Any:
        return Query(0, ge=0, description="0: any")

    @app.get("/v1/accounts/{account_id}/transfers", summary="An account's transfers, in timestamp order")
    async def account_transfers(
        account_id: int,
        limit: int = limit_q(),
        timestamp_min: int = ts_q(),
        timestamp_max: int = ts_q(),
        reversed: bool = False,
        debits: bool = True,
        credits: bool = True,
        user_data_128: int = field_q(),
        user_data_64: int = field_q(),
        user_data_32: int = field_q(),
        code: int = field_q(),
    ) -> Response:
        f = AccountFilter(**_args(locals()))
        rows = await _run(call, backend.get_account_transfers, f)
        return _json([_as_dict(t) for t in rows])

    @app.get("/v1/accounts/{account_id}/balances", summary="An account's balance after each of its transfers")
    async def account_balances(
        account_id: int,
        limit: int = limit_q(),
        timestamp_min: int = ts_q(),
        timestamp_max: int = ts_q(),
        reversed: bool = False,
        debits: bool = True,
        credits: bool = True,
        user_data_128: int = field_q(),
        user_data_64: int = field_q(),
        user_data_32: int = field_q(),
        code: int = field_q(),
    ) -> Response:
        f = AccountFilter(**_args(locals()))
        rows = await _run(call, backend.get_account_balances, f)
        return _json([_as_dict(b) for b in rows])

    @app.get("/v1/accounts", summary="Accounts whose fields equal every nonzero parameter (query_accounts)")
    async def query_accounts(
        limit: int = limit_q(),
        timestamp_min: int = ts_q(),
        timestamp_max: int = ts_q(),
        reversed: bool = False,
        ledger: int = field_q(),
        code: int = field_q(),
        user_data_128: int = field_q(),
        user_data_64: int = field_q(),
        user_data_32: int = field_q(),
    ) -> Response:
        rows = await _run(call, backend.query_accounts, QueryFilter(**_args(locals())))
        return _json([_as_dict(a) for a in rows])

    @app.get("/v1/transfers", summary="Transfers whose fields equal every nonzero parameter (query_transfers)")
    async def query_transfers(
        limit: int = limit_q(),
        timestamp_min: int = ts_q(),
        timestamp_max: int = ts_q(),
        reversed: bool = False,
        ledger: int = field_q(),
        code: int = field_q(),
        user_data_128: int = field_q(),
        user_data_64: int = field_q(),
        user_data_32: int = field_q(),
    ) -> Response:
        rows = await _run(call, backend.query_transfers, QueryFilter(**_args(locals())))
        return _json([_as_dict(t) for t in rows])

    @app.post("/v1/pulse", summary="Let engine time pass: expire due pending transfers")
    async def pulse() -> Response:
        await _run(call, backend.pulse)
        return _json({"ok": True})

    @app.get("/v1/health", summary="Liveness")
    async def health() -> Response:
        return _json({"status": "ok", "backend": type(backend).__name__, "version": __version__})

    _components = {}
    for route_schema in (list[AccountIn], list[TransferIn], Ids):
        _components.update(_schema(route_schema)["x-components"])

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            spec.setdefault("components", {}).setdefault("schemas", {}).update(_components)
            spec["components"]["securitySchemes"] = {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the service's DATA/operator.token, or a session from 'liangcao pay token'",
                }
            }
            for where, path in spec.get("paths", {}).items():
                for op in path.values():
                    op.get("requestBody", {}).pop("x-components", None)
                    if where not in OPEN_PATHS:
                        op["security"] = [{"bearer": []}]
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    flow_gate = gate or Gate(open_rules(["transfers", "accounts", "queries"]))
    install(app, flow_gate, by_route(FLOW_ROUTES, default=("queries", Priority.QUERY)))
    app.add_middleware(CallerCheck, identity=identity)  # added last, so outermost: before admission control
    return app


def _args(names: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in names.items() if k not in ("call", "backend")}


def _transfer_out(t: Transfer, status: int | None) -> dict[str, Any]:
    out = _as_dict(t)
    out["status"] = _STATUS_NAMES.get(status or 0)
    return out


async def _run(call: Any, fn: Any, *args: Any) -> Any:
    # The backends block (fsync, PostgreSQL): run them on the thread pool so concurrent requests overlap,
    # which is what lets the engine's committer group their fsyncs.
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(call, fn, *args)
