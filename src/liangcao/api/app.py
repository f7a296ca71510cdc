"""The HTTP API of a node, versioned under ``/v1``.

Every error is JSON ``{code, message, detail}`` with a stable ``code`` (``liangcao.codes``) and a fitting
HTTP status; errors are translated once, here. Reads need a bearer token issued by the node's admin
(``liangcao token create``); submitting a transaction needs none, because it carries its own signatures.
The only requests that make the node sign (capture with custody, ``liangcao.api.epcis``) need a token
with the ``write`` scope. An event stream ends when the token that opened it expires or is revoked.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from liangcao import __version__, encoding, limits
from liangcao.api import attest, dg, epcis, explorer, verify
from liangcao.api.auth import WRITE, Grant, TokenAuth
from liangcao.api.epcis import Custody
from liangcao.codes import Code
from liangcao.contracts.runtime import ContractRuntime
from liangcao.errors import LiangcaoError
from liangcao.ledger import tx as txm
from liangcao.ledger.chain import tx_with_proofs
from liangcao.node.node import Committed, Node

# Bounds of the API itself (named in liangcao.limits).
wait_ms_max = limits.wait_ms_max
page_blocks_max = limits.page_blocks_max
page_state_max = limits.page_state_max
batch_txs_max = limits.batch_txs_max
batch_bytes_max = limits.batch_bytes_max
sse_queue_max = limits.sse_queue_max
replay_window_blocks = limits.replay_window_blocks
token_check_s = 1.0  # an idle event stream re-checks its token (expiry, revocation) this often

_STATUS: dict[int, int] = {
    Code.UNAUTHORIZED: 401,
    Code.FORBIDDEN: 403,
    Code.INSUFFICIENT_SCOPE: 403,
    Code.NOT_FOUND: 404,
    Code.TOO_LARGE: 413,
    Code.MEMPOOL_FULL: 503,
    Code.NOT_READY: 503,
    Code.INTERNAL: 500,
}
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class ErrorBody(BaseModel):
    code: int
    message: str
    detail: Any = None


class Submitted(BaseModel):
    tx_id: str
    status: str = Field(description="pending, or committed when the transaction is in a block")
    height: int | None = None
    index: int | None = None
    code: int | None = None
    receipt: dict[str, Any] | None = None


class BatchItem(BaseModel):
    tx_id: str | None = None
    status: str
    code: int | None = None
    message: str | None = None


class BatchResult(BaseModel):
    results: list[BatchItem]


class Health(BaseModel):
    status: str
    chain_id: str
    height: int
    block_hash: str
    mempool: int
    version: str
    time_ms: int = Field(description="the node's clock: clients compute not_after from it, not from their own")
    ordering: str = Field("solo", description="solo (embedded) or jetstream (the consortium's NATS cluster)")
    fork_alarms: list[dict[str, Any]] = Field(
        default_factory=list, description="peers that attested another block or state at a height we hold"
    )
    poison_messages: int = Field(
        0, description="stream messages (transactions, cuts, attestations) skipped as malformed"
    )
    clock_alarm: str = Field("", description="set while the next block is stamped ahead of this node's own clock")


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "bad input"},
    401: {"model": ErrorBody, "description": "missing or invalid bearer token"},
    403: {"model": ErrorBody, "description": "forbidden, or the token lacks the scope (504 INSUFFICIENT_SCOPE)"},
    404: {"model": ErrorBody, "description": "not found"},
    413: {"model": ErrorBody, "description": "too large"},
    503: {"model": ErrorBody, "description": "node busy or shutting down"},
}

TX_BODY_SCHEMA = {
    "type": "object",
    "required": ["body", "signatures"],
    "properties": {
        "body": {
            "type": "object",
            "required": ["chain_id", "contract", "method", "args", "nonce", "not_after"],
            "properties": {
                "chain_id": {"type": "string", "minLength": 1, "maxLength": limits.contract_name_chars_max},
                "contract": {"type": "string", "minLength": 1, "maxLength": limits.contract_name_chars_max},
                "method": {"type": "string", "minLength": 1, "maxLength": limits.method_name_chars_max},
                "args": {"type": "object"},
                "nonce": {"type": "string", "minLength": 1, "maxLength": limits.nonce_chars_max},
                "not_after": {"type": "integer", "minimum": 0},
            },
        },
        "signatures": {
            "type": "array",
            "minItems": 1,
            "maxItems": limits.signatures_max,
            "items": {
                "type": "object",
                "required": ["cert", "sig"],
                "properties": {"cert": {"type": "string"}, "sig": {"type": "string"}},
            },
        },
    },
}


class ApiError(Exception):
    def __init__(self, status: int, code: int, message: str, detail: Any = None) -> None:
        self.status, self.code, self.message, self.detail = status, code, message, detail


def _error(status: int, code: int, message: str, detail: Any = None) -> JSONResponse:
    return JSONResponse({"code": int(code), "message": message, "detail": detail}, status_code=status)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.txs = Counter("liangcao_txs_committed", "Transactions committed, by result", ["result"], registry=r)
        self.blocks = Counter("liangcao_blocks_committed", "Blocks committed", registry=r)
        self.height = Gauge("liangcao_height", "Height of the last committed block", registry=r)
        self.mempool = Gauge("liangcao_mempool_txs", "Transactions waiting in the mempool", registry=r)
        self.forks = Gauge(
            "liangcao_fork_alarms", "Attestations of another block or state seen (0 is healthy)", registry=r
        )
        self.block_txs = Histogram(
            "liangcao_block_txs", "Transactions per block", buckets=(1, 10, 50, 100, 250, 500, 1000, 2000), registry=r
        )
        self.latency = Histogram(
            "liangcao_commit_latency_seconds",
            "From admission to durable commit",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.rejected = Counter(
            "liangcao_txs_rejected", "Transactions refused at admission, by code", ["code"], registry=r
        )

    def on_block(self, info: Committed) -> None:
        self.blocks.inc()
        self.height.set(info.header.height)
        self.block_txs.observe(len(info.tx_ids))
        ok = sum(1 for c in info.codes if c == 0)
        self.txs.labels("ok").inc(ok)
        self.txs.labels("failed").inc(len(info.codes) - ok)
        now = time.time() * 1000
        for t in info.admitted_ms.values():
            self.latency.observe(max(0.0, (now - t) / 1000))


class Hub:
    """Bridges the commit thread to asyncio: waiting submitters and event-stream subscribers."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.waiters: dict[str, list[asyncio.Future[tuple[int, int, int]]]] = {}
        self.subscribers: set[asyncio.Queue[Committed | None]] = set()

    def on_block(self, info: Committed) -> None:  # commit thread
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._deliver, info)

    def _deliver(self, info: Committed) -> None:  # event loop
        for i, tx_id in enumerate(info.tx_ids):
            for fut in self.waiters.pop(tx_id, []):
                if not fut.done():
                    fut.set_result((info.header.height, i, info.codes[i]))
        for q in list(self.subscribers):
            try:
                q.put_nowait(info)
            except asyncio.QueueFull:  # a slow reader is cut off; it resumes with Last-Event-ID
                self.subscribers.discard(q)
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()  # make room for the end-of-stream marker
                q.put_nowait(None)

    def wait_for(self, tx_id: str) -> asyncio.Future[tuple[int, int, int]]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[int, int, int]] = loop.create_future()
        self.waiters.setdefault(tx_id, []).append(fut)
        return fut


def create_app(node: Node, auth: TokenAuth, custody: Custody | None = None) -> FastAPI:
    """The FastAPI application serving ``node`` (``custody``: member keys the node may sign captures with)."""
    hub = Hub()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub.loop = asyncio.get_running_loop()
        yield

    app = FastAPI(
        lifespan=lifespan,
        title="liangcao node API",
        version=__version__,
        description="A consortium ledger node: submit signed transactions, read blocks, state and proofs, "
        "follow committed events. Errors are JSON {code, message, detail}.",
    )
    metrics = Metrics()
    node.listeners.append(hub.on_block)
    node.listeners.append(metrics.on_block)
    app.state.node, app.state.hub, app.state.metrics = node, hub, metrics
    bearer = HTTPBearer(auto_error=False)
    local_runtime: dict[int, ContractRuntime] = {}

    # ---- errors -----------------------------------------------------------------------------------------
    @app.exception_handler(LiangcaoError)
    async def _liangcao_error(request: Request, exc: LiangcaoError) -> JSONResponse:
        if exc.code in (Code.MEMPOOL_FULL, Code.TOO_LARGE) or exc.code < 300:
            metrics.rejected.labels(str(exc.code)).inc()
        return _error(_STATUS.get(exc.code, 400), exc.code, exc.message, exc.detail)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [
            {"loc": ".".join(str(x) for x in e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in exc.errors()
        ]
        where = ", ".join(d["loc"] + ": " + d["msg"] for d in detail[:3])
        return _error(400, Code.INVALID_ARGUMENT, f"invalid request: {where}", detail)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = Code.NOT_FOUND if exc.status_code == 404 else Code.INVALID_ARGUMENT
        response = _error(exc.status_code, code, str(exc.detail))
        for name, value in (exc.headers or {}).items():  # e.g. Allow on 405
            response.headers[name] = value
        return response

    @app.exception_handler(RecursionError)
    async def _too_deep(request: Request, exc: RecursionError) -> JSONResponse:
        # Bodies are scanned for depth before decoding (encoding.too_deep); this is the last line, so that
        # no nesting ever becomes a 500.
        return _error(400, Code.VALUE_TOO_DEEP, "input nests too deeply")

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, Code.INTERNAL, f"internal error ({type(exc).__name__}); the node logged it")

    # ---- helpers ----------------------------------------------------------------------------------------
    def reader_grant(
        request: Request,
        creds: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
    ) -> Grant:
        if creds is not None:
            return auth.check(creds.credentials)
        # RFC 6750 section 2.3: a browser's EventSource cannot set headers, so reads may carry the token
        # in the query (the explorer's live view); only for GET, never for writes.
        token = request.query_params.get("access_token") if request.method == "GET" else None
        if token:
            return auth.check(token)
        raise ApiError(
            401, Code.UNAUTHORIZED, "reads need a bearer token: ask the node's admin (liangcao token create)"
        )

    def reader_member(grant: Grant = Depends(reader_grant)) -> str:  # noqa: B008
        return grant.member

    def writer_member(
        creds: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
    ) -> str:
        """The member a ``write`` token names: only such a token may make the node sign (never from the query)."""
        if creds is None:
            raise ApiError(
                401, Code.UNAUTHORIZED, "this request needs a bearer token with the write scope (Authorization header)"
            )
        grant = auth.check(creds.credentials)
        if not grant.allows(WRITE):
            raise ApiError(
                403,
                Code.INSUFFICIENT_SCOPE,
                f"this token only reads; making the node sign as {grant.member} needs a write token "
                "(liangcao token create --scope write), or sign on your side with the SDK",
                {"scope_needed": WRITE, "scopes": sorted(grant.scopes)},
            )
        return grant.member

    def runtime() -> ContractRuntime:
        import threading

        key = threading.get_ident()
        rt = local_runtime.get(key)
        if rt is None:
            from liangcao.apps.bundle import default_registry

            rt = local_runtime[key] = ContractRuntime(default_registry())
        return rt

    async def read_body(request: Request, size_max: int) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > size_max:
            raise ApiError(413, Code.TOO_LARGE, f"request body is larger than {size_max} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > size_max:
                raise ApiError(413, Code.TOO_LARGE, f"request body is larger than {size_max} bytes")
        return bytes(body)

    def committed_body(tx_id: str, pos: tuple[int, int, int]) -> dict[str, Any]:
        height, idx, code = pos
        receipts = node.reader().receipts(height)
        receipt = encoding.decode(receipts[idx]) if idx < len(receipts) else None
        return {"tx_id": tx_id, "status": "committed", "height": height, "index": idx, "code": code, "receipt": receipt}

    def lookup_committed(tx_id: str) -> tuple[int, int, int] | None:
        pos = node.position(tx_id)
        if pos is not None:
            return pos
        found = node.reader().tx_position(tx_id)
        if found is None:
            return None
        rc = node.reader().receipts(found[0])
        receipt: Any = encoding.decode(rc[found[1]]) if found[1] < len(rc) else {"code": -1}
        return found[0], found[1], int(receipt["code"])

    epcis.mount(
        app,
        node,
        reader_member=reader_member,
        writer_member=writer_member,
        runtime=runtime,
        read_body=read_body,
        wait_for=hub.wait_for,
        lookup=lookup_committed,
        custody=custody or Custody(None),
        errors=ERRORS,
    )

    dg.mount(app, node, reader_member=reader_member, runtime=runtime, errors=ERRORS)
    explorer.mount(app)

    # ---- writes -----------------------------------------------------------------------------------------
    @app.post(
        "/v1/txs",
        response_model=Submitted,
        status_code=202,
        responses={**ERRORS, 200: {"model": Submitted, "description": "committed (with wait=true)"}},
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": TX_BODY_SCHEMA}}}},
        summary="Submit a signed transaction",
    )
    async def submit(
        request: Request,
        wait: bool = Query(False, description="wait until the transaction is committed"),
        timeout_ms: int = Query(10_000, ge=0, le=wait_ms_max),
    ) -> Any:
        raw = await read_body(request, limits.tx_bytes_max)
        tx, status = node.submit(raw)
        if status == "committed" or wait:
            pos = lookup_committed(tx.tx_id) if status == "committed" else None
            if pos is None:
                fut = hub.wait_for(tx.tx_id)
                pos = lookup_committed(tx.tx_id)  # committed between submit and wait_for?
                if pos is None:
                    try:
                        pos = await asyncio.wait_for(fut, timeout_ms / 1000)
                    except TimeoutError:
                        return JSONResponse({"tx_id": tx.tx_id, "status": "pending"}, status_code=202)
            return JSONResponse(committed_body(tx.tx_id, pos), status_code=200)
        return JSONResponse({"tx_id": tx.tx_id, "status": "pending"}, status_code=202)

    @app.post(
        "/v1/batch/txs",
        response_model=BatchResult,
        responses=ERRORS,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["txs"],
                            "properties": {"txs": {"type": "array", "items": TX_BODY_SCHEMA}},
                        }
                    }
                },
            }
        },
        summary="Submit many signed transactions; one result per transaction, in order",
    )
    async def submit_batch(request: Request) -> Any:
        raw = await read_body(request, batch_bytes_max)
        try:
            doc = msgspec.json.decode(raw)
        except msgspec.DecodeError as exc:
            raise ApiError(400, Code.BAD_ENCODING, f"body is not JSON: {exc}") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("txs"), list):
            raise ApiError(400, Code.MALFORMED_TX, 'body must be {"txs": [transaction, ...]}')
        if len(doc["txs"]) > batch_txs_max:
            raise ApiError(413, Code.TOO_LARGE, f"more than batch_txs_max={batch_txs_max} transactions")
        results: list[dict[str, Any] | None] = []
        datas: list[bytes] = []
        for item in doc["txs"]:
            try:
                datas.append(msgspec.json.encode(item))
                results.append(None)
            except (TypeError, ValueError) as exc:
                results.append({"status": "rejected", "code": int(Code.BAD_ENCODING), "message": str(exc)})
        # Off the event loop: admission may wait on the ordering service (JetStream acknowledgements).
        admitted = iter(await run_in_threadpool(node.submit_many, datas))
        for k, r in enumerate(results):
            if r is not None:
                continue
            outcome = next(admitted)
            if isinstance(outcome, LiangcaoError):
                results[k] = {"status": "rejected", "code": outcome.code, "message": outcome.message}
            else:
                results[k] = {"tx_id": outcome[0].tx_id, "status": outcome[1]}
        return {"results": results}

    # ---- reads ------------------------------------------------------------------------------------------
    @app.get("/v1/txs/{tx_id}", responses=ERRORS, summary="A transaction with its receipt, block header and proofs")
    def get_tx(tx_id: str = Path(pattern=_HEX64.pattern), member: str = Depends(reader_member)) -> dict[str, Any]:
        store = node.reader()
        info = tx_with_proofs(store, tx_id)
        if info is None:
            pending = node.mempool.contains(tx_id)
            raise ApiError(404, Code.NOT_FOUND, f"transaction {tx_id} is {'pending' if pending else 'unknown'}")
        return {**info, **explorer.who_and_finality(store, node.runtime.certs, info, forked=bool(node.fork_alarms))}

    @app.get("/v1/head", responses=ERRORS, summary="The latest block header")
    def get_head(member: str = Depends(reader_member)) -> dict[str, Any]:
        head = node.reader().head()
        if head is None:
            raise ApiError(503, Code.NOT_READY, "no blocks yet")
        return {"header": head.to_dict(), "block_hash": head.hash}

    @app.get("/v1/blocks", responses=ERRORS, summary="Block headers, newest first")
    def list_blocks(
        before: int | None = Query(None, ge=0, le=limits.int_max, description="only blocks below this height"),
        limit: int = Query(20, ge=1, le=page_blocks_max),
        member: str = Depends(reader_member),
    ) -> dict[str, Any]:
        store = node.reader()
        top = store.height() if before is None else min(before - 1, store.height())
        headers = []
        for h in range(top, max(-1, top - limit), -1):
            header = store.header(h)
            if header is not None:
                headers.append({"header": header.to_dict(), "block_hash": header.hash})
        return {"blocks": headers}

    @app.get(
        "/v1/blocks/{height}",
        responses=ERRORS,
        summary="A whole block: header, seal, transactions, receipts, attestations",
    )
    def get_block(height: int = Path(ge=0, le=limits.int_max), member: str = Depends(reader_member)) -> dict[str, Any]:
        store = node.reader()
        block = store.block(height)
        if block is None:
            raise ApiError(404, Code.NOT_FOUND, f"no block at height {height}")
        atts: list[Any] = [encoding.decode(a) for a in store.attestations(height)]
        txs: list[Any] = [encoding.decode(r) for r in store.block_txs(height)]
        return {
            **block.to_dict(),
            "block_hash": block.hash,
            "tx_ids": [txm.body_id(t["body"]) for t in txs],
            "receipts": [encoding.decode(r) for r in store.receipts(height)],
            "attestations": [{**a, **explorer.signer_of(a["cert"])} for a in atts],
        }

    @app.get("/v1/blocks/{height}/header", responses=ERRORS, summary="A block header")
    def get_header(height: int = Path(ge=0, le=limits.int_max), member: str = Depends(reader_member)) -> dict[str, Any]:
        header = node.reader().header(height)
        if header is None:
            raise ApiError(404, Code.NOT_FOUND, f"no block at height {height}")
        return {"header": header.to_dict(), "block_hash": header.hash}

    @app.get("/v1/state", responses=ERRORS, summary="State entries under a key prefix, in key order")
    def list_state(
        prefix: str = Query("", max_length=limits.key_bytes_max),
        limit: int = Query(100, ge=1, le=page_state_max),
        member: str = Depends(reader_member),
    ) -> dict[str, Any]:
        entries: list[dict[str, Any]] = []
        for key, value in node.reader().range(prefix):
            if len(entries) >= limit:
                break
            entries.append({"key": key, "value": encoding.decode(value)})
        return {"entries": entries}

    @app.get("/v1/state/{key:path}", responses=ERRORS, summary="One state value and its recent history")
    def get_state(
        key: str = Path(max_length=limits.key_bytes_max),
        history: int = Query(0, ge=0, le=100),
        member: str = Depends(reader_member),
    ) -> dict[str, Any]:
        store = node.reader()
        value = store.get(key)
        if value is None:
            raise ApiError(404, Code.NOT_FOUND, f"no state at key {key!r}")
        out: dict[str, Any] = {"key": key, "value": encoding.decode(value)}
        if history:
            out["history"] = [
                {"height": h, "index": i, "value": None if v is None else encoding.decode(v)}
                for h, i, v in store.key_history(key, history)
            ]
        return out

    @app.post(
        "/v1/query/{contract}/{method}",
        responses=ERRORS,
        openapi_extra={"requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}}},
        summary="Run a contract's query on the committed state",
    )
    async def run_query(
        request: Request,
        contract: str = Path(max_length=limits.contract_name_chars_max),
        method: str = Path(max_length=limits.method_name_chars_max),
        member: str = Depends(reader_member),
    ) -> Any:
        raw = await read_body(request, limits.tx_bytes_max)
        args = encoding.decode(raw or b"{}")
        if not isinstance(args, dict):
            raise ApiError(400, Code.INVALID_ARGUMENT, "query arguments must be a JSON object")

        def run() -> Any:
            store = node.reader()
            head = store.head()
            if head is None:
                raise ApiError(503, Code.NOT_READY, "no blocks yet")
            return runtime().query(store, contract, method, args, height=head.height, time_ms=head.time_ms)

        result = await asyncio.to_thread(run)
        return {"result": result}

    @app.get("/v1/attestations/{height}", responses=ERRORS, summary="Attestations of a block, by member")
    def get_attestations(
        height: int = Path(ge=0, le=limits.int_max), member: str = Depends(reader_member)
    ) -> dict[str, Any]:
        return {"height": height, "attestations": [encoding.decode(a) for a in node.reader().attestations(height)]}

    @app.post("/v1/attestations", responses=ERRORS, summary="Another organisation's peer attests a block")
    async def post_attestation(request: Request, member: str = Depends(reader_member)) -> dict[str, Any]:
        # The attestation authenticates itself (liangcao.api.attest); the token only says who may post.
        att = encoding.decode(await read_body(request, 16_384))
        return await run_in_threadpool(attest.accept, node, att)

    @app.get(
        "/v1/events",
        responses={**ERRORS, 200: {"content": {"text/event-stream": {}}, "description": "server-sent events"}},
        response_class=StreamingResponse,
        summary="Committed events as server-sent events, resumable from a height or Last-Event-ID",
    )
    async def events(
        request: Request,
        from_height: int = Query(0, ge=0, le=limits.int_max),
        contract: str | None = Query(None, max_length=limits.contract_name_chars_max),
        name: str | None = Query(None, max_length=64),
        blocks: bool = Query(True, description="also send a 'block' message per committed block"),
        follow: bool = Query(True, description="keep the stream open for new blocks"),
        grant: Grant = Depends(reader_grant),  # noqa: B008
    ) -> StreamingResponse:
        last = request.headers.get("last-event-id")
        start = from_height
        skip_upto: tuple[int, int, int] | None = None
        if last:
            m = re.fullmatch(r"(\d+)(?:-(\d+)-(\d+))?", last.strip())
            if m is None:
                raise ApiError(400, Code.INVALID_ARGUMENT, "Last-Event-ID must look like H or H-I-S")
            start = int(m.group(1))
            skip_upto = (start, int(m.group(2) or 1 << 62), int(m.group(3) or 0))
        queue: asyncio.Queue[Committed | None] = asyncio.Queue(sse_queue_max)
        if follow:
            hub.subscribers.add(queue)
        return StreamingResponse(
            _stream(
                node,
                queue,
                hub,
                start,
                skip_upto,
                contract,
                name,
                blocks,
                follow,
                lambda: auth.still_valid(grant),
                grant.exp,
            ),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    # ---- operations -------------------------------------------------------------------------------------
    @app.get("/v1/health", response_model=Health, responses=ERRORS, summary="Liveness and the head")
    def health() -> Any:
        head = node.reader().head()
        if head is None:
            raise ApiError(503, Code.NOT_READY, "no blocks yet")
        status = "failed" if node.failed is not None else ("fork" if node.fork_alarms else "ok")
        body = {
            "status": status,
            "chain_id": head.chain_id,
            "height": head.height,
            "block_hash": head.hash,
            "mempool": len(node.mempool),
            "version": __version__,
            "time_ms": node.clock.now_ms(),
            "ordering": "solo" if node.link is None else "jetstream",
            "fork_alarms": list(node.fork_alarms),
            "poison_messages": node.poison_messages,
            "clock_alarm": node.clock_alarm,
        }
        return JSONResponse(body, status_code=503 if node.failed is not None else 200)

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
    def prometheus() -> Response:
        metrics.mempool.set(len(node.mempool))
        metrics.forks.set(len(node.fork_alarms))
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    verify.mount(app, node, ERRORS)
    return app


def _sse(event: str, ident: str, data: Any) -> bytes:
    return f"event: {event}\nid: {ident}\ndata: {msgspec.json.encode(data).decode()}\n\n".encode()


def _sse_end(why: str) -> bytes:
    """The last message of a stream whose token no longer holds (no id: a resume starts where the last one was)."""
    data = {"code": int(Code.UNAUTHORIZED), "message": why}
    return f"event: end\ndata: {msgspec.json.encode(data).decode()}\n\n".encode()


async def _stream(
    node: Node,
    queue: asyncio.Queue[Committed | None],
    hub: Hub,
    start: int,
    skip_upto: tuple[int, int, int] | None,
    contract: str | None,
    name: str | None,
    blocks: bool,
    follow: bool,
    token_void: Callable[[], str | None],
    token_exp_ms: int,
) -> AsyncIterator[bytes]:
    """Replay, then live blocks. Ends (with an ``end`` message) as soon as ``token_void()`` says why the token
    that opened the stream no longer holds: checked between replay windows, before every live block and at
    least every ``token_check_s`` while idle."""

    def wanted(ev: dict[str, Any]) -> bool:
        return (contract is None or ev["contract"] == contract) and (name is None or ev["name"] == name)

    def after_resume(h: int, i: int, s: int) -> bool:
        return skip_upto is None or (h, i, s) > skip_upto

    getter: asyncio.Task[Committed | None] | None = None
    try:
        # 1. Replay from the store, in windows of heights, up to the head as it is now.
        store = node.reader()
        sent_height = start - 1
        top = store.height()
        for lo in range(start, top + 1, replay_window_blocks):
            if (why := token_void()) is not None:
                yield _sse_end(why)
                return
            hi = min(top, lo + replay_window_blocks - 1)
            rows = await asyncio.to_thread(store.events, contract, name, lo, 1 << 30, hi)
            by_height: dict[int, list[dict[str, Any]]] = {}
            for r in rows:
                by_height.setdefault(r["height"], []).append(r)
            for hh in range(lo, hi + 1):
                evs = by_height.get(hh, [])
                ids = await asyncio.to_thread(store.block_tx_ids, hh) if evs else []
                for r in evs:
                    if after_resume(hh, r["idx"], r["seq"]):
                        yield _sse("contract", f"{hh}-{r['idx']}-{r['seq']}", {**r, "tx_id": ids[r["idx"]]})
                if blocks and after_resume(hh, 1 << 62, 1 << 62) and (header := store.header(hh)) is not None:
                    ids = ids or await asyncio.to_thread(store.block_tx_ids, hh)
                    yield _sse("block", str(hh), {"header": header.to_dict(), "block_hash": header.hash, "tx_ids": ids})
                sent_height = hh
        if not follow:
            return
        # 2. Live blocks, skipping what the replay already sent; the token is re-checked while waiting.
        while True:
            if (why := token_void()) is not None:
                yield _sse_end(why)
                return
            if getter is None:
                getter = asyncio.ensure_future(queue.get())
            left_s = max(0.0, token_exp_ms / 1000 - time.time())
            done, _ = await asyncio.wait({getter}, timeout=min(token_check_s, left_s + 0.001))
            if not done:
                continue
            info, getter = getter.result(), None
            if (why := token_void()) is not None:
                yield _sse_end(why)
                return
            if info is None:
                return
            hh = info.header.height
            if hh <= sent_height:
                continue
            for i, evs in enumerate(info.events):
                for s, ev in enumerate(evs):
                    if wanted(ev):
                        data = {"height": hh, "idx": i, "seq": s, **ev, "tx_id": info.tx_ids[i]}
                        yield _sse("contract", f"{hh}-{i}-{s}", data)
            if blocks:
                block_msg = {"header": info.header.to_dict(), "block_hash": info.header.hash, "tx_ids": info.tx_ids}
                yield _sse("block", str(hh), block_msg)
            sent_height = hh
    finally:
        if getter is not None:
            getter.cancel()
        hub.subscribers.discard(queue)
