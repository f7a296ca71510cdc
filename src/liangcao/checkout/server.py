"""A small HTTP/1.1 server for the gateway's ASGI app: cheap enough that refusing costs little.

Why not uvicorn: without ``httptools`` uvicorn parses with ``h11`` (pure Python, general), which costs more
per request than this gateway spends paying an order; at midnight, when ten requests arrive for every one
the gateway can serve, parsing alone would use the CPU that paying needs, and flow control could not keep
paying alive. This server parses only what the gateway needs, on the event loop, and hands every request to
the ASGI app (where :class:`~liangcao.flow.asgi.FlowMiddleware` refuses in microseconds).

What it speaks (and refuses):

* HTTP/1.1 and 1.0, keep-alive (1.1 by default, ``Connection: close`` honoured), pipelined requests
  answered in order, ``Expect: 100-continue``.
* Request bodies by ``Content-Length`` only: ``Transfer-Encoding`` is refused (``411``) and the connection
  closed, and so is a second ``Content-Length`` (``400``: a proxy reading the other one would frame the
  stream differently, the classic request smuggling). A body over ``body_bytes_max`` is refused (``413``) from the header alone, before it is read,
  and the connection is closed (the unread body is not waited for).
* A request head over ``head_bytes_max`` is refused (``431``); bad request lines ``400``, and so are a method
  that is not a token, a target with control characters, spaces or raw non-ASCII bytes (they must be
  percent-encoded), a header name that is not a token and a header value with CR, LF, NUL or another
  control character (a bare LF is how a header hides inside another one).
* Time: a request must arrive whole (head and body) within ``request_s_max`` of its first byte, else
  ``408`` and the connection is closed (slowloris); a keep-alive connection with nothing to do, or whose
  client reads none of its answers, is closed after ``idle_s_max``.
* Memory: reading pauses while ``buffer_bytes_max`` is buffered, and while the client does not read its
  answers (the transport's write buffer is full) no further request is started, so a client that pipelines
  without reading cannot make the server buffer answers without bound.
* ``HEAD`` answers carry the head only (a body would be read as the next answer). All refusals are
  the gateway's JSON ``{"code", "name", "message"}``.
* Responses: the app's ``Content-Length`` when it gives one, else ``chunked``.
* The ASGI lifespan protocol (startup and shutdown), SIGTERM/SIGINT stop it gracefully.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from typing import Any, cast
from urllib.parse import unquote

from liangcao.checkout import limits
from liangcao.checkout.codes import CheckoutCode, CheckoutError
from liangcao.codes import name_of
from liangcao.flow import Gate, Refused, Ticket
from liangcao.flow.asgi import Classify

# JSON string literals as json.dumps writes them (C-accelerated, ASCII-escaped).
_json_str = json.encoder.encode_basestring_ascii

log = logging.getLogger(__name__)

#: One request head (request line and headers).
head_bytes_max = 16 * 1024
# What an edge adds to a head it relays: "content-length: N" and "x-forwarded-for: <an IPv6 address>".
_RELAY_HEAD_EXTRA = 256
#: Bytes buffered on one connection before reading pauses (pipelined requests waiting their turn).
buffer_bytes_max = 256 * 1024
#: Seconds in-flight requests get to finish when the server stops.
shutdown_s_max = 5.0
#: Seconds from a request's first byte until it must be whole (head and body): slower is ``408`` and closed.
request_s_max = 10.0
#: Seconds a keep-alive connection may sit with no request before it is closed.
idle_s_max = 60.0

# RFC 9110 token characters (methods, header names).
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
# A header value may hold visible ASCII, spaces, tabs and obs-text; never CR, LF, NUL or other controls.
_BAD_VALUE = frozenset(range(0x20)) - {0x09} | {0x7F}
# A request target is visible ASCII only (RFC 9112 3.2: anything else is percent-encoded).
_BAD_TARGET = frozenset(range(0x21)) | frozenset(range(0x7F, 0x100))

_REASONS = {
    100: "Continue", 200: "OK", 408: "Request Timeout", 201: "Created", 202: "Accepted", 204: "No Content", 400: "Bad Request",
    401: "Unauthorized", 402: "Payment Required", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    409: "Conflict", 411: "Length Required", 413: "Content Too Large", 422: "Unprocessable Content",
    428: "Precondition Required", 429: "Too Many Requests", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 503: "Service Unavailable",
}  # fmt: skip


def _error_bytes(status: int, code: CheckoutCode, message: str) -> bytes:
    body = json.dumps(CheckoutError(code, message).body()).encode()
    return (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


def refusal_bytes(exc: Refused, keep_alive: bool, head_only: bool) -> bytes:
    """The whole answer to a refused request: the same bytes as :func:`liangcao.flow.asgi.refusal_body` and
    :func:`~liangcao.flow.asgi.refusal_headers` give (a test holds them equal), formatted in one go because at
    midnight this runs for nine requests out of ten."""
    body = (
        f'{{"code": {int(exc.code)}, "name": {_json_str(name_of(exc.code))}, "message": {_json_str(exc.message)}, '
        f'"detail": {{"retry_after_ms": {exc.retry_after_ms}, "resource": {_json_str(exc.resource)}, '
        f'"priority": {_json_str(exc.priority)}}}}}'
    ).encode()
    head = (
        f"HTTP/1.1 {exc.http_status} {_REASONS.get(exc.http_status, 'Refused')}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
        f"retry-after: {exc.retry_after_s}\r\nx-retry-after-ms: {exc.retry_after_ms}\r\n"
    )
    if not keep_alive:
        head += "connection: close\r\n"
    return head.encode() + b"\r\n" + (b"" if head_only else body)  # a HEAD answer: the length, no body


class _Conn(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.peer: Any = None
        self.sock: Any = None
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        self.disconnected = asyncio.get_running_loop().create_future()
        self.paused = False
        self._continued = False  # "100 Continue" sent for the request waiting for its body
        self.last_status = 0
        self.write_paused = False  # the client does not read its answers: start no further request
        self.timer: asyncio.TimerHandle | None = None
        self.timer_kind = ""  # "request" (a request is arriving) or "idle" (nothing to do)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, but they speak its protocol
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        # ASGI's server is a (host, port) pair or None: a Unix socket's address is its path, which
        # Starlette would unpack as a pair (and put in the URL of a redirect)
        self.sock = None if self.server.unix is not None else transport.get_extra_info("sockname")
        self.server.conns.add(self)
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._disarm()
        self.server.conns.discard(self)
        if not self.disconnected.done():
            self.disconnected.set_result(None)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.transport is not None and not self.paused and not self.transport.is_closing():
            self.paused = True
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.timer_kind == "stalled":
            self._disarm()
        if self.task is None and not self.closed:
            self._next()

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = None
        self.timer_kind = ""

    def _watch(self) -> None:
        """Between requests: a deadline for the one arriving (from its first byte), or for idleness."""
        if self.closed or self.task is not None:
            self._disarm()
            return
        kind = "stalled" if self.write_paused else "request" if self.buf else "idle"
        if kind == self.timer_kind:  # a request keeps the deadline of its first byte
            return
        self._disarm()
        after = request_s_max if kind == "request" else idle_s_max
        self.timer = asyncio.get_running_loop().call_later(after, self._expired, kind)
        self.timer_kind = kind

    def _expired(self, kind: str) -> None:
        self.timer = None
        self.timer_kind = ""
        if self.task is not None or self.closed:
            return
        if kind == "request":
            self._fail(
                408, CheckoutCode.BAD_REQUEST, f"the request did not arrive whole within request_s_max={request_s_max}s"
            )
        elif self.transport is not None:  # idle, or stalled: not reading its answers for idle_s_max
            self.transport.abort() if kind == "stalled" else self.transport.close()
            self.closed = True

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.task is None:
            self._next()
        elif (
            len(self.buf) > buffer_bytes_max
            and not self.paused
            and self.transport is not None
            and not self.transport.is_closing()  # uvloop raises on a closed transport, asyncio ignores it
        ):
            self.paused = True
            self.transport.pause_reading()

    def _fail(self, status: int, code: CheckoutCode, message: str) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(_error_bytes(status, code, message))
            self.transport.close()
        self.closed = True

    def _next(self) -> None:
        """Answer the complete requests in the buffer: refusals at once, the first admitted one as a task."""
        server = self.server
        while self.task is None:
            if self.write_paused:  # resume_writing() comes back here; a client that never reads is closed
                self._watch()
                return
            req = self._parse_one()
            if req is None:
                self._watch()
                return
            scope, body, keep_alive = req
            ticket = None
            if server.gate is not None and server.classify is not None:
                try:
                    what = server.classify(scope)  # may refuse, too (a caller over its own rate)
                    if what is not None:
                        ticket = server.gate.enter(*what)
                except Refused as exc:  # answered here: no task, no ASGI call, the body already skipped
                    assert self.transport is not None
                    self.transport.write(refusal_bytes(exc, keep_alive, scope["method"] == "HEAD"))
                    server.refused += 1
                    if not keep_alive:
                        self.transport.close()
                        self.closed = True
                        return
                    continue
            self._disarm()
            self.task = asyncio.get_running_loop().create_task(self._serve(scope, body, keep_alive, ticket))
            server.tasks.add(self.task)  # a stop waits for it even when its client has gone
            self.task.add_done_callback(server.tasks.discard)

    def _parse_one(self) -> tuple[dict[str, Any], bytes, bool] | None:
        """The next complete request in the buffer (taken out of it), or None (incomplete, or refused)."""
        if self.closed or self.transport is None:
            return None
        if self.paused and len(self.buf) < buffer_bytes_max and not self.write_paused:
            self.paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()
        while self.buf.startswith(b"\r\n"):  # RFC 9112 2.2: empty lines before a request line are ignored
            del self.buf[:2]
        end = self.buf.find(b"\r\n\r\n")
        # Behind an edge a head arrives with the edge's content-length and x-forwarded-for lines added: a head
        # the edge took must not be refused here.
        room = head_bytes_max + (_RELAY_HEAD_EXTRA if self.server.unix is not None else 0)
        if end < 0:
            if len(self.buf) > room:
                self._fail(431, CheckoutCode.BAD_REQUEST, f"request head over head_bytes_max={head_bytes_max}")
            return None
        if end > room:
            self._fail(431, CheckoutCode.BAD_REQUEST, f"request head over head_bytes_max={head_bytes_max}")
            return None
        lines = bytes(self.buf[:end]).split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            self._fail(400, CheckoutCode.BAD_REQUEST, "not an HTTP/1.x request line")
            return None
        method, target, version = parts
        if not method or not _TOKEN.issuperset(method):
            self._fail(400, CheckoutCode.BAD_REQUEST, "the method is not a token")
            return None
        if not target or not _BAD_TARGET.isdisjoint(target):
            self._fail(
                400, CheckoutCode.BAD_REQUEST, "the request target must be visible ASCII (percent-encode the rest)"
            )
            return None
        headers: list[tuple[bytes, bytes]] = []
        length = -1
        keep_alive = version == b"HTTP/1.1"
        expect = False
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or not _TOKEN.issuperset(name) or not _BAD_VALUE.isdisjoint(value):
                self._fail(400, CheckoutCode.BAD_REQUEST, "a malformed header line (name a token, value no CR/LF/NUL)")
                return None
            name = name.lower()
            value = value.strip()
            headers.append((name, value))
            if name == b"content-length":
                if not value.isdigit() or len(value) > 12:
                    self._fail(400, CheckoutCode.BAD_REQUEST, "Content-Length must be a number")
                    return None
                if length >= 0:
                    self._fail(400, CheckoutCode.BAD_REQUEST, "Content-Length given twice")
                    return None
                length = int(value)
            elif name == b"transfer-encoding":
                self._fail(411, CheckoutCode.BAD_REQUEST, "send the body with a Content-Length (no Transfer-Encoding)")
                return None
            elif name == b"connection":
                v = value.lower()
                keep_alive = b"keep-alive" in v if version == b"HTTP/1.0" else b"close" not in v
            elif name == b"expect" and value.lower() == b"100-continue" and version == b"HTTP/1.1":
                # (an HTTP/1.0 client knows no 1xx answer: it would take the 100 for the answer; RFC 9110 10.1.1)
                expect = True
        length = max(length, 0)
        if length > limits.body_bytes_max:
            self._fail(
                413,
                CheckoutCode.BODY_TOO_LARGE,
                f"body over body_bytes_max={limits.body_bytes_max} bytes (nothing written)",
            )
            return None
        have = len(self.buf) - end - 4
        if have < length:
            if expect and have == 0 and not self._continued:
                self._continued = True
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            return None
        self._continued = False
        self._disarm()  # this request is whole: the next one gets its own deadline
        body = bytes(self.buf[end + 4 : end + 4 + length])
        del self.buf[: end + 4 + length]
        path, _, query = target.partition(b"?")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": version[5:].decode(),
            "method": method.decode("ascii", "replace"),
            "scheme": "http",
            "path": unquote(path.decode("latin-1")),
            "raw_path": path,
            "query_string": query,
            "root_path": "",
            "headers": headers,
            "client": self._client(headers),
            "server": self.sock,
            "state": dict(self.server.state),
        }
        return scope, body, keep_alive

    def _client(self, headers: list[tuple[bytes, bytes]]) -> Any:
        if self.server.unix is None:
            return self.peer
        # Behind an edge (the only one that can reach a Unix socket in the gateway's folder): its word.
        for k, v in headers:
            if k == b"x-forwarded-for":
                return (v.decode("latin-1").split(",")[0].strip(), 0)
        return None

    async def _serve(self, scope: dict[str, Any], body: bytes, keep_alive: bool, ticket: Ticket | None) -> None:
        upstream = self.server.upstream
        try:
            if upstream is not None and not upstream.owns(scope["path"]):
                await self._forward(upstream, scope, body, keep_alive)
            else:
                await self._serve_app(scope, body, keep_alive)
        finally:
            if ticket is not None:
                ticket.exit(self.last_status < 500)
        if self.task is None:
            self._next()

    async def _forward(self, upstream: Upstream, scope: dict[str, Any], body: bytes, keep_alive: bool) -> None:
        """Hand an admitted request to the application process and relay its answer."""
        transport = self.transport
        assert transport is not None
        self.last_status = 503
        try:
            status, head, answer = await upstream.exchange(scope, body)
        except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, TimeoutError):
            log.warning("the application process did not answer %s %s", scope["method"], scope["path"])
            out = _error_bytes(503, CheckoutCode.INTERNAL, "the gateway's application process did not answer")
            # the client's connection is intact (its request was read whole): kept alive if it asked so
            out = out.replace(b"\r\nconnection: close\r\n", b"\r\n", 1) if keep_alive else out
        else:
            self.last_status = status
            if not keep_alive:
                head += b"\r\nconnection: close"
            out = head + b"\r\n\r\n" + answer
        self.task = None
        if self.closed or transport.is_closing():  # the client hung up while its request was relayed
            return  # (uvloop raises on a write to a closed transport: a traceback per client gone)
        transport.write(out)
        if not keep_alive:
            transport.close()
            self.closed = True
        self._watch()

    async def _serve_app(self, scope: dict[str, Any], body: bytes, keep_alive: bool) -> None:
        transport = self.transport
        assert transport is not None
        sent_body = False
        started = False
        status = 0
        resp_headers: list[tuple[bytes, bytes]] = []
        chunked = False
        done = False
        head_only = scope["method"] == "HEAD"

        async def receive() -> dict[str, Any]:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            await self.disconnected
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal started, status, resp_headers, chunked, done
            if self.closed or done:
                return
            if message["type"] == "http.response.start":
                status = int(message["status"])
                self.last_status = status
                resp_headers = [(bytes(k).lower(), bytes(v)) for k, v in message.get("headers", [])]
                started = True
                return
            if message["type"] != "http.response.body":
                return
            data = bytes(message.get("body", b""))
            more = bool(message.get("more_body", False))
            out = bytearray()
            if resp_headers is not None and started and status:
                has_length = any(k == b"content-length" for k, _ in resp_headers)
                head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}".encode()]
                head += [k + b": " + v for k, v in resp_headers]
                if not has_length:
                    if more:
                        chunked = True
                        head.append(b"transfer-encoding: chunked")
                    else:
                        head.append(b"content-length: " + str(len(data)).encode())
                if not keep_alive:
                    head.append(b"connection: close")
                out += b"\r\n".join(head) + b"\r\n\r\n"
                status = 0  # the head is out
            if head_only:
                pass  # the head says what a GET would get; the body is not sent
            elif chunked:
                if data:
                    out += f"{len(data):x}\r\n".encode() + data + b"\r\n"
                if not more:
                    out += b"0\r\n\r\n"
            else:
                out += data
            if out:
                transport.write(bytes(out))
            if not more:
                done = True

        self.last_status = 503
        try:
            await self.server.app(scope, receive, send)
        except Exception:
            log.exception("the app failed on %s %s", scope["method"], scope["path"])
            if not started:
                self._fail(503, CheckoutCode.INTERNAL, "internal error (logged)")
                return
            done = False
        if not done:  # an app that stopped mid-answer: the client cannot trust this connection
            transport.close()
            self.closed = True
            return
        self.task = None
        if not keep_alive:
            transport.close()
            self.closed = True
        self._watch()


# Hop-by-hop headers: they describe the client's connection to the edge, not the request.
_HOP = frozenset({b"connection", b"keep-alive", b"expect", b"te", b"upgrade", b"proxy-connection", b"content-length"})
# Methods that change nothing: sent again after the application read one and closed without answering.
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})


class Upstream:
    """The application process behind an edge (``liangcao checkout start --edge``): keep-alive HTTP/1.1
    connections over a Unix socket, one request in flight on each.

    Why an edge at all: in one Python process the refusals of a surge and the paying share one core (the
    interpreter's lock), so every refused request takes time from a payment and waits behind one. With an
    edge, refusing (parse, ask the gate, answer) runs in its own process on its own core and answers within
    milliseconds, and the application process spends its core on admitted work only. Only the edge's own
    endpoints (``own_prefix``: flow-control status, rules and metrics, whose gate lives in the edge) are served
    by the edge's app.

    A request is sent a second time (on a new connection) only when the application cannot have read it (the
    kept connection was reset), or when it changes nothing (GET, HEAD, OPTIONS); a request unanswered within
    ``answer_s_max`` is answered 503 and its connection dropped."""

    def __init__(
        self, path: str, *, own_prefix: str = "/v1/flow", connections_max: int = 512, answer_s_max: float = 30.0
    ) -> None:
        self.path = path
        self.own_prefix = own_prefix
        #: connections to the application at once (kept idle or in use): past it a request waits its turn
        #: (with flow control on, the gate's limits keep far fewer in flight; with it off, file descriptors)
        self.connections_max = connections_max
        #: seconds an admitted request may take in the application (from taking a connection to the last
        #: byte of its answer): past it the client gets 503 and the connection to the application is dropped
        #: (a stopped or stuck application process must not hold clients, and their gate tickets, for ever)
        self.answer_s_max = answer_s_max
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._slots: asyncio.Semaphore | None = None

    async def exchange(self, scope: dict[str, Any], body: bytes) -> tuple[int, bytes, bytes]:
        """(status, response head without its blank line, body) of one request, over a kept-alive connection
        (a fresh one when none is idle). The client's address goes along as ``x-forwarded-for`` (the
        application process trusts it only on its Unix socket)."""
        if self._slots is None:  # made on the loop that serves (a semaphore belongs to one loop)
            self._slots = asyncio.Semaphore(self.connections_max)
        async with self._slots, asyncio.timeout(self.answer_s_max):
            return await self._exchange(scope, body)

    async def _exchange(self, scope: dict[str, Any], body: bytes) -> tuple[int, bytes, bytes]:
        target = scope["raw_path"] + (b"?" + scope["query_string"] if scope["query_string"] else b"")
        lines = [scope["method"].encode() + b" " + target + b" HTTP/1.1", b"content-length: " + str(len(body)).encode()]
        lines += [k + b": " + v for k, v in scope["headers"] if k not in _HOP and k != b"x-forwarded-for"]
        peer = scope.get("client")
        if peer:
            lines.append(b"x-forwarded-for: " + str(peer[0]).encode())
        data = b"\r\n".join(lines) + b"\r\n\r\n" + body
        for attempt in (1, 2):
            kept = self._kept() if attempt == 1 else None  # the second attempt: always a new connection
            reader, writer = kept or await asyncio.open_unix_connection(self.path)
            try:
                writer.write(data)
                head = await reader.readuntil(b"\r\n\r\n")
            except (OSError, asyncio.IncompleteReadError) as exc:
                writer.close()
                # A kept-alive connection the application closed while idle (its idle_s_max) just as the request
                # went out: the kernel resets a Unix socket closed with bytes unread (or the write finds it gone),
                # so an OSError means the request was not read: send it again, once, on a new connection. A clean
                # end with nothing back means it was read (the application failed before answering): only a
                # request that changes nothing is sent again; a POST applied once must not be applied twice.
                unread = isinstance(exc, OSError) or scope["method"] in _IDEMPOTENT
                if kept is None or not unread or (isinstance(exc, asyncio.IncompleteReadError) and exc.partial):
                    raise
                continue
            except BaseException:  # out of time (answer_s_max): the connection is in no state to be kept
                writer.close()
                raise
            try:
                status, head, answer, keep = await self._answer(reader, head[:-4], scope["method"] == "HEAD")
            except BaseException:
                writer.close()
                raise
            if keep and not writer.is_closing():
                self.idle.append((reader, writer))
            else:
                writer.close()
            return status, head, answer
        raise EOFError("unreachable")

    def _kept(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """A kept-alive connection the application has not closed (those it closed while idle are dropped)."""
        while self.idle:
            reader, writer = self.idle.pop()
            if reader.at_eof() or reader.exception() is not None or writer.is_closing():
                writer.close()
                continue
            return reader, writer
        return None

    @staticmethod
    async def _answer(reader: asyncio.StreamReader, head: bytes, head_only: bool) -> tuple[int, bytes, bytes, bool]:
        """(status, head, body, whether the application keeps the connection) of one answer."""
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = -1
        chunked = False
        keep = True
        kept: list[bytes] = [lines[0]]
        for line in lines[1:]:
            name = line.partition(b":")[0].strip().lower()
            if name == b"content-length":
                length = int(line.partition(b":")[2])
            elif name == b"transfer-encoding":
                chunked = True
                continue  # re-framed below with a length
            elif name == b"connection":
                keep = b"close" not in line.lower()  # it closes after this answer (after a refusal of its own)
                continue
            kept.append(line)
        if head_only or status in (204, 304) or 100 <= status < 200:
            return status, b"\r\n".join(kept), b"", keep
        if chunked:
            body = bytearray()
            while True:
                size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
                if size > limits.body_bytes_max * 64:
                    raise ValueError("an answer too large to relay")
                body += (await reader.readexactly(size + 2))[:-2]
                if size == 0:
                    break
            kept.append(b"content-length: " + str(len(body)).encode())
            return status, b"\r\n".join(kept), bytes(body), keep
        if length < 0:
            raise ValueError("an answer without a length")
        return status, b"\r\n".join(kept), await reader.readexactly(length), keep

    def owns(self, path: str) -> bool:
        """Whether the edge's own app serves ``path``: ``own_prefix`` and what lies under it, whole segments
        (``/v1/flowers`` is the application's)."""
        prefix = self.own_prefix
        return path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/")

    def close(self) -> None:
        for _, w in self.idle:
            w.close()
        self.idle.clear()


class Server:
    """Serve ``app`` on ``host:port`` until SIGTERM or SIGINT (:meth:`run`)."""

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 8290,
        *,
        gate: Gate | None = None,
        classify: Classify | None = None,
        upstream: Upstream | None = None,
        unix: str | None = None,
    ) -> None:
        """``app`` is served as it is; with ``gate`` and ``classify`` (the app then has no FlowMiddleware) the
        server asks the gate itself, as FlowMiddleware would, and answers refusals without calling the app.
        With ``upstream`` (an edge) admitted requests go to the application process and ``app`` serves only
        the edge's own endpoints; with ``unix`` the server listens on that Unix socket instead of TCP (the
        application process behind an edge), and takes the client's address from ``x-forwarded-for``."""
        self.app = app
        self.upstream = upstream
        self.unix = unix
        self.gate = gate
        self.classify = classify
        self.refused = 0
        self.host = host
        self.port = port
        self.conns: set[_Conn] = set()
        self.tasks: set[asyncio.Task[None]] = set()  # requests being served (their clients may have gone)
        self.state: dict[str, Any] = {}
        #: a stop was asked (SIGTERM or SIGINT) while :meth:`run` served
        self.stopping = False

    async def _lifespan(self, stage: str, queue: asyncio.Queue[dict[str, Any]], replies: asyncio.Queue[str]) -> None:
        await queue.put({"type": f"lifespan.{stage}"})
        reply = await replies.get()
        if reply.endswith("failed"):
            raise RuntimeError(f"the app's lifespan {stage} failed")

    async def serve(self, stop: asyncio.Event) -> None:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        replies: asyncio.Queue[str] = asyncio.Queue()

        async def send(message: dict[str, Any]) -> None:
            await replies.put(str(message["type"]))

        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        life = asyncio.create_task(self.app(scope, queue.get, send))
        await self._lifespan("startup", queue, replies)
        loop = asyncio.get_running_loop()
        if self.unix is not None:
            server = await loop.create_unix_server(lambda: _Conn(self), self.unix, backlog=4096)
        else:
            server = await loop.create_server(
                lambda: _Conn(self), self.host, self.port, backlog=4096, reuse_address=True
            )
        try:
            await stop.wait()
        finally:
            server.close()
            deadline = loop.time() + shutdown_s_max
            while self.tasks and loop.time() < deadline:
                await asyncio.sleep(0.05)
            for c in list(self.conns):
                if c.transport is not None:
                    c.transport.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._lifespan("shutdown", queue, replies), shutdown_s_max)
            life.cancel()
            if self.upstream is not None:
                self.upstream.close()

    def run(self) -> None:
        from liangcao.procs import raise_fd_limit

        raise_fd_limit()  # a connection per shopper: the usual 1,024 open files are not enough at midnight

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()

            def asked() -> None:
                self.stopping = True
                stop.set()

            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, asked)
            await self.serve(stop)

        # uvloop (libuv) when installed: the loop's own cost per read and write is what a refusal is mostly
        # made of, and libuv's is a fraction of the pure-Python selector loop's.
        try:
            import uvloop
        except ImportError:  # pragma: no cover (a dependency; kept optional for embedders)
            asyncio.run(main())
        else:
            uvloop.run(main())
