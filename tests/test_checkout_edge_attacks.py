"""Attacks on the checkout edge (``liangcao checkout start --edge``): what is new with the relay.

The edge parses, asks the gate and relays admitted requests over kept-alive Unix-socket connections
(``server.Upstream``) to the application process, the same server on ``HOME/app.sock``. Everything here is
over real sockets: against a real ``checkout start --edge`` process where an outsider can see the effect,
and against an edge and an application server in this process (``Pair``, both real servers on a uvloop loop,
the application a small ASGI app that counts what it applied and can be slow or fail on demand) where the
effect is inside the relay (connections kept, requests applied twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvloop
from fastapi import FastAPI

from checkout_identity import operator
from liangcao.checkout import server as server_mod
from liangcao.checkout.codes import CheckoutCode
from liangcao.checkout.server import Server, Upstream
from liangcao.procs import free_port
from server_thread import ServerThread
from test_checkout_http import Gateway, _app_pids


def _statuses(raw: bytes) -> list[int]:
    return [int(m) for m in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


def _exchange(port: int, raw: bytes, wait_s: float = 3.0) -> bytes:
    """Send ``raw`` on a new connection and read until the server closes it (or ``wait_s`` of silence)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as s:
        s.sendall(raw)
        out = b""
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := s.recv(65536):
                out += chunk
        return out


def _body(raw: bytes) -> Any:
    return json.loads(raw.partition(b"\r\n\r\n")[2])


# ------------------------------------------------------------------------------------- in this process


class App:
    """The application behind the edge: a plain ASGI app that says what it received and counts what it applied.

    ``/echo`` answers the client address, headers, method, path and body it saw; ``/apply`` records its body;
    ``/apply-then-fail`` records its body, starts an answer and raises (the server then closes the connection
    without a byte of an answer); ``/slow?s=N`` answers after N seconds."""

    def __init__(self) -> None:
        self.applied: list[bytes] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                m = await receive()
                await send({"type": m["type"] + ".complete"})
                if m["type"] == "lifespan.shutdown":
                    return
        body = (await receive())["body"]
        path = scope["path"]
        if path in ("/slow", "/slow-apply"):
            await asyncio.sleep(float(scope["query_string"].decode().partition("=")[2]))
            if path == "/slow-apply":
                self.applied.append(body)
        elif path == "/chunked":  # an answer without a length, in pieces
            await send({"type": "http.response.start", "status": 200, "headers": [(b"x-kind", b"chunked")]})
            for part in (b"one,", b"", b"two,", b"three"):
                await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        elif path in ("/apply", "/apply-then-fail"):
            self.applied.append(body)
            if path == "/apply-then-fail":
                await send({"type": "http.response.start", "status": 200, "headers": []})
                raise RuntimeError("failed after the answer started")
        said = {
            "client": scope["client"][0] if scope.get("client") else None,
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
            "method": scope["method"],
            "path": path,
            "body": body.decode("latin-1"),
        }
        out = json.dumps(said).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(out))]})
        await send({"type": "http.response.body", "body": out})


class Pair:
    """An edge (TCP, no gate) relaying to an application server on a Unix socket, both on one uvloop loop."""

    def __init__(self, home: Path, connections_max: int = 512) -> None:
        self.port = free_port()
        self.app = App()
        sock = str(home / "app.sock")
        self.app_server = Server(self.app, unix=sock)
        self.upstream = Upstream(sock, connections_max=connections_max)
        self.edge = Server(FastAPI(), "127.0.0.1", self.port, upstream=self.upstream)
        self.running = ServerThread([self.app_server, self.edge], self.port, uvloop.new_event_loop)

    def close(self) -> None:
        self.running.close()

    def exchange(self, raw: bytes, wait_s: float = 3.0) -> bytes:
        return _exchange(self.port, raw, wait_s)

    def concurrently(self, raws: list[bytes], wait_s: float = 5.0) -> list[bytes]:
        outs: list[bytes] = [b""] * len(raws)

        def one(i: int) -> None:
            outs[i] = self.exchange(raws[i], wait_s)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(raws))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return outs

    def on_loop(self, fn: Any) -> Any:
        """``fn()`` run on the servers' loop (their state is the loop's)."""
        got: list[Any] = []
        done = threading.Event()

        def run() -> None:
            got.append(fn())
            done.set()

        self.running.loop.call_soon_threadsafe(run)
        assert done.wait(5)
        return got[0]


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    p = Pair(tmp_path)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def errors() -> Iterator[list[logging.LogRecord]]:
    """Log records at ERROR or above from the servers and the loop (a traceback for the operator to read)."""
    got: list[logging.LogRecord] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            got.append(record)

    h = Catch(logging.ERROR)
    loggers = [logging.getLogger("asyncio"), logging.getLogger(server_mod.__name__)]
    for lg in loggers:
        lg.addHandler(h)
    try:
        yield got
    finally:
        for lg in loggers:
            lg.removeHandler(h)


def _get(path: str, close: bool = True, auth: bytes = b"") -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nhost: x\r\n" + auth + b"connection: close\r\n" * close + b"\r\n"


def _post(path: str, body: bytes, close: bool = True, auth: bytes = b"") -> bytes:
    return (
        b"POST " + path.encode() + b" HTTP/1.1\r\nhost: x\r\ncontent-length: " + str(len(body)).encode()
        + b"\r\n" + auth + b"connection: close\r\n" * close + b"\r\n" + body
    )  # fmt: skip


def _op(g: Gateway) -> bytes:
    """The operator's header line at ``g`` (the gateway answers nobody it does not know)."""
    return f"authorization: {operator(g.home)['Authorization']}\r\n".encode()


def test_kept_connections_the_application_closed_are_not_answered_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a quiet spell the application closes every kept-alive connection (its ``idle_s_max``): the next
    requests must go out on new ones, not fail on the second stale connection in a row."""
    monkeypatch.setattr(server_mod, "idle_s_max", 0.4)
    p = Pair(tmp_path)
    try:
        outs = p.concurrently([_get("/slow?s=0.2") for _ in range(4)])
        assert [_statuses(o) for o in outs] == [[200]] * 4
        assert p.on_loop(lambda: len(p.upstream.idle)) >= 2
        time.sleep(1.0)  # the application closes them all
        assert _statuses(p.exchange(_get("/echo"))) == [200]
        assert _statuses(p.exchange(_post("/apply", b"once"))) == [200]
        assert p.app.applied == [b"once"]
    finally:
        p.close()


def test_a_request_the_application_read_is_never_sent_twice(pair: Pair) -> None:
    """The application read a POST, applied it and closed the connection without a byte of an answer: the
    edge must not take that for a stale kept-alive connection and send the POST again (applied twice)."""
    with socket.create_connection(("127.0.0.1", pair.port), timeout=5) as s:
        s.sendall(_get("/echo", close=False))  # the next request goes out on a kept-alive connection
        assert _statuses(s.recv(65536)) == [200]
        s.sendall(_post("/apply-then-fail", b"pay-once", close=False))
        got = s.recv(65536)
    assert _statuses(got) == [503] and _body(got)["code"] == CheckoutCode.INTERNAL, got
    assert pair.app.applied == [b"pay-once"]
    # A 503 on a kept-alive client connection does not announce a close it does not do.
    assert b"connection: close" not in got.partition(b"\r\n\r\n")[0]


def test_clients_gone_while_relayed_leave_no_traceback_and_no_held_connection(
    tmp_path: Path, errors: list[logging.LogRecord]
) -> None:
    """Clients that send a request and hang up before its answer: the answer is dropped quietly (no task
    dying with a traceback per client, which an attacker could repeat to fill the log), the connections to
    the application go back to the kept ones and every slot is free again."""
    p = Pair(tmp_path, connections_max=3)
    try:
        for _ in range(6):
            with socket.create_connection(("127.0.0.1", p.port), timeout=3) as s:
                s.sendall(_get("/slow?s=0.3", close=False))
        time.sleep(1.5)  # two rounds of three (the slots) answered to no one
        assert p.on_loop(lambda: (p.upstream._slots._value, len(p.upstream.idle), len(p.edge.conns))) == (3, 3, 0)  # type: ignore[union-attr]
        assert _statuses(p.exchange(_get("/echo"))) == [200]
    finally:
        p.close()
    gc.collect()  # a task that died unobserved says so when it is collected
    assert not errors, [r.getMessage() for r in errors]


# ------------------------------------------------------------------------------ a real edge process


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """``liangcao checkout start --edge`` (flow control on), shared by the tests that leave it as it was."""
    g = Gateway(tmp_path_factory.mktemp("edge") / "gw", "--edge").start()
    try:
        yield g
    finally:
        g.stop()


def _log(g: Gateway) -> str:
    return (g.home / "gateway.log").read_text(errors="replace")


def test_a_request_without_host_does_not_fail_in_the_application(edge: Gateway) -> None:
    """HTTP/1.0 has no Host: the application process listens on a Unix socket, whose address is no (host,
    port) pair; a redirect built from it (a trailing slash) raised, answered 503 and counted a failure against
    the gate's resource (an outsider tripping the breaker with trailing slashes)."""
    before = httpx.get(edge.url + "/v1/flow", timeout=5).json()["resources"]["query"]["exits"]["error"]
    for raw in [b"GET /v1/orders/x/ HTTP/1.0\r\n\r\n", b"GET /v1/health/ HTTP/1.1\r\nconnection: close\r\n\r\n"]:
        got = _exchange(edge.port, raw)
        assert _statuses(got) and _statuses(got)[0] < 500, got
        assert b".sock" not in got, got  # the socket's path is not the client's business
    after = httpx.get(edge.url + "/v1/flow", timeout=5).json()["resources"]["query"]["exits"]["error"]
    assert after == before
    assert "Traceback" not in _log(edge)


def test_the_edge_stops_when_its_application_is_stopped_alone(tmp_path: Path) -> None:
    """A SIGTERM to the application process alone (an operator's ``kill``, a stray script): it stops cleanly
    (exit 0), and the edge must not go on answering 503 for ever; it stops, non-zero, saying why."""
    gw = Gateway(tmp_path / "gw", "--edge").start()
    try:
        (app,) = _app_pids(gw.home)
        os.kill(app, signal.SIGTERM)
        assert gw.proc is not None
        rc = gw.proc.wait(20)
        assert rc == 1 and "the edge stopped with it" in _log(gw)
    finally:
        gw.stop()
    assert not _app_pids(gw.home)


def test_the_edges_own_paths_answer_with_codes_and_only_whole_segments_are_its_own(edge: Gateway) -> None:
    """The edge serves ``/v1/flow`` and what lies under it (the gate lives there): what it does not serve
    answers with a stable code as the application would (FastAPI's bare ``{"detail": ...}`` came back), and a
    path that merely begins with the same letters is the application's. Encodings reach the same route on both
    sides (the edge and the application decode the path alike), so nothing crosses over by spelling."""
    for raw, status, code in [
        (_get("/v1/flowers"), 404, CheckoutCode.ROUTE_NOT_FOUND),
        (_get("/v1/flow/nope"), 404, CheckoutCode.ROUTE_NOT_FOUND),
        (_get("/v1/flow/../health"), 404, CheckoutCode.ROUTE_NOT_FOUND),
        (_get("/v1/flow%2F..%2Fhealth"), 404, CheckoutCode.ROUTE_NOT_FOUND),
        (b"DELETE /v1/flow/rules HTTP/1.1\r\nconnection: close\r\n\r\n", 405, CheckoutCode.METHOD_NOT_ALLOWED),
        (_post("/v1/flow", b"{}"), 405, CheckoutCode.METHOD_NOT_ALLOWED),
    ]:
        got = _exchange(edge.port, raw)
        assert _statuses(got) == [status], (raw, got)
        assert _body(got)["code"] == code, (raw, got)
    # The gate's status, however spelled, is the edge's; the application has no such route.
    for path in ["/v1/flow", "/v1/%66low", "/v1/flow/rules", "/v1/flow?x=1"]:
        got = _exchange(edge.port, _get(path))
        assert _statuses(got) == [200] and b"version" in got, (path, got)
    # An absolute-form target and the asterisk reach no route of either (and are not the gate's).
    for raw in [_get("http://evil/v1/flow"), b"OPTIONS * HTTP/1.1\r\nconnection: close\r\n\r\n"]:
        got = _exchange(edge.port, raw)
        assert _statuses(got) == [404] and _body(got)["code"] == CheckoutCode.ROUTE_NOT_FOUND, got


def test_a_head_the_edge_takes_is_not_refused_by_the_application(edge: Gateway) -> None:
    """A head just under ``head_bytes_max`` (big cookies): the edge took it, then the application refused it
    with 431 because the edge's added lines (its length, the client's address) pushed it over the same limit.
    One byte over is still the edge's 431."""
    start = b"GET /v1/health HTTP/1.1\r\nconnection: close\r\nx-pad: "
    for over, status in [(0, 200), (1, 431)]:
        raw = start + b"a" * (server_mod.head_bytes_max - len(start) + over) + b"\r\n\r\n"
        assert raw.find(b"\r\n\r\n") == server_mod.head_bytes_max + over
        got = _exchange(edge.port, raw)
        assert _statuses(got) == [status], got


# ------------------------------------------------------------------------------------ what held


def test_a_client_cannot_speak_for_the_edge(pair: Pair) -> None:
    """``X-Forwarded-For`` sent by a client (any casing, several, named in Connection) never reaches the
    application: it sees the edge's word alone, the client's real address. Hop-by-hop headers stop at the
    edge; the application gets one Content-Length, the edge's."""
    got = pair.exchange(
        b"POST /echo HTTP/1.1\r\nhost: x\r\nX-Forwarded-For: 6.6.6.6\r\nx-FORWARDED-for: 7.7.7.7, 8.8.8.8\r\n"
        b"connection: keep-alive, x-forwarded-for\r\nforwarded: for=9.9.9.9\r\nkeep-alive: timeout=5\r\n"
        b"te: trailers\r\nupgrade: h2c\r\nexpect: 100-continue\r\ncontent-length: 3\r\n\r\nabc"
        b"GET /echo HTTP/1.1\r\nx-forwarded-for: 6.6.6.6\r\nconnection: close\r\n\r\n"
    )
    first, second = got.split(b"HTTP/1.1 ")[1:]
    for answer in (first, second):
        said = json.loads(answer.partition(b"\r\n\r\n")[2])
        names = [k for k, _ in said["headers"]]
        assert said["client"] == "127.0.0.1", said
        assert [v for k, v in said["headers"] if k == "x-forwarded-for"] == ["127.0.0.1"], said
        assert not {"connection", "keep-alive", "te", "upgrade", "expect"} & set(names), said
        assert names.count("content-length") == 1, said
    assert json.loads(first.partition(b"\r\n\r\n")[2])["body"] == "abc"


def test_the_application_frames_what_the_edge_relays_as_the_edge_did(pair: Pair) -> None:
    """Requests pipelined on one connection reach the application one by one, each with its own body (the
    edge sends a length of its own; a body that looks like a request stays a body), duplicate headers as
    sent, HTTP/1.0 keep-alive honoured, ``Expect: 100-continue`` answered by the edge."""
    smuggled = b"POST /apply HTTP/1.1\r\ncontent-length: 5\r\n\r\nevil!"
    raw = (
        _post("/apply", smuggled, close=False)
        + b"GET /echo?a=1&a=2 HTTP/1.0\r\nconnection: keep-alive\r\nx-dup: 1\r\nx-dup: 2\r\nhost: a\r\nhost: b\r\n\r\n"
        + b"GET /echo HTTP/1.0\r\n\r\n"
    )
    got = pair.exchange(raw)
    assert _statuses(got) == [200, 200, 200], got
    assert pair.app.applied == [smuggled]
    second = json.loads(got.split(b"HTTP/1.1 ")[2].partition(b"\r\n\r\n")[2])
    assert [v for k, v in second["headers"] if k == "x-dup"] == ["1", "2"], second
    assert [v for k, v in second["headers"] if k == "host"] == ["a", "b"], second
    assert got.rstrip().endswith(b"}") and got.count(b"connection: close") == 1  # the 1.0 one without keep-alive
    with socket.create_connection(("127.0.0.1", pair.port), timeout=3) as s:
        s.sendall(b"POST /apply HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 4\r\nconnection: close\r\n\r\n")
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"late")
        assert _statuses(s.recv(65536)) == [200]
    assert pair.app.applied == [smuggled, b"late"]


def test_an_answer_without_a_length_is_relayed_with_one(pair: Pair) -> None:
    got = pair.exchange(_get("/chunked", close=False) + b"HEAD /chunked HTTP/1.1\r\n\r\n" + _get("/echo"))
    head, _, rest = got.partition(b"\r\n\r\n")
    assert _statuses(head) == [200] and b"content-length: 13\r\n" in head + b"\r\n"
    assert b"transfer-encoding" not in head and rest.startswith(b"one,two,threeHTTP/1.1 200 "), got
    head2, _, rest2 = rest[len(b"one,two,three") :].partition(b"\r\n\r\n")
    assert b"x-kind: chunked" in head2 and rest2.startswith(b"HTTP/1.1 200 "), got  # HEAD: no body
    assert _statuses(got) == [200, 200, 200]


def test_requests_past_connections_max_wait_their_turn(tmp_path: Path) -> None:
    """Without flow control, many slow admitted requests at once: at most ``connections_max`` connections to
    the application, the rest wait (none refused, none lost), and every slot comes back."""
    p = Pair(tmp_path, connections_max=2)
    try:
        seen: list[int] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                seen.append(p.on_loop(lambda: len(p.app_server.conns)))
                time.sleep(0.02)

        t = threading.Thread(target=sample)
        t.start()
        outs = p.concurrently([_get("/slow?s=0.15") for _ in range(8)])
        stop.set()
        t.join()
        assert [_statuses(o) for o in outs] == [[200]] * 8
        assert max(seen) <= 2, seen
        assert p.on_loop(lambda: (p.upstream._slots._value, len(p.upstream.idle))) == (2, 2)  # type: ignore[union-attr]
    finally:
        p.close()


def test_pipelined_answers_keep_their_order_when_some_are_refused(edge: Gateway) -> None:
    """Forty settlement reports pipelined on one connection (the ``report`` resource: 20/s, 4 at once): the
    edge relays some and refuses the rest itself; every request gets its answer, in the order asked (each
    relayed answer is the report of the merchant at its place)."""
    n = 40
    raw = b"".join(_get(f"/v1/merchants/m{i}/settlement", close=i == n - 1, auth=_op(edge)) for i in range(n))
    got = _exchange(edge.port, raw, wait_s=10)
    answers = got.split(b"HTTP/1.1 ")[1:]
    assert len(answers) == n, got[:2000]
    kinds = []
    for i, a in enumerate(answers):
        status = int(a[:3])
        body = json.loads(a.partition(b"\r\n\r\n")[2])
        if status == 200:
            assert body["merchant"] == f"m{i}", (i, body)
        else:
            assert status == 429 and body["detail"]["resource"] == "report", (i, a)
        kinds.append(status)
    assert 200 in kinds and 429 in kinds, kinds


def test_bad_rules_through_the_edge_change_nothing(edge: Gateway) -> None:
    before = httpx.get(edge.url + "/v1/flow/rules", timeout=5).content
    for body, status in [
        (b"{bad}", 400),
        (b"", 400),
        (b"[]", 400),
        (b'{"version": 2, "resources": [{"name": "pay", "concurrency_max": -1}]}', 400),
        (b'{"version": 2, "resources": "pay"}', 400),
        (b'{"version": 1.5}', 400),
        (b" " * (server_mod.limits.body_bytes_max + 1), 413),
    ]:
        token = (edge.home / "operator.token").read_text().strip()
        put = _post("/v1/flow/rules", body).replace(b"POST ", b"PUT ", 1)
        got = _exchange(edge.port, put.replace(b"\r\n", f"\r\nauthorization: Bearer {token}\r\n".encode(), 1))
        assert _statuses(got) == [status], (body[:40], got)
        assert isinstance(_body(got)["code"], int) and _body(got)["message"], got
    assert httpx.get(edge.url + "/v1/flow/rules", timeout=5).content == before
    assert "Traceback" not in _log(edge)


def test_the_application_killed_mid_request_is_a_503_with_a_code(tmp_path: Path) -> None:
    """The application process stops (SIGSTOP: a request is in its hands) and is then killed: the client gets
    503 ``INTERNAL`` at once, not a hang, the POST is not sent anywhere else, and the edge exits 1."""
    gw = Gateway(tmp_path / "gw", "--edge").start()
    try:
        (app,) = _app_pids(gw.home)
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
            s.sendall(_get("/v1/health", close=False))  # the POST then goes out on a kept-alive connection
            assert _statuses(s.recv(65536)) == [200]
            os.kill(app, signal.SIGSTOP)
            body = b'{"amount": 5}'
            s.sendall(
                b"POST /v1/wallets/ann/topup HTTP/1.1\r\nidempotency-key: k1\r\ncontent-length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
            time.sleep(0.5)
            os.kill(app, signal.SIGKILL)
            t0 = time.monotonic()
            got = s.recv(65536)
            assert time.monotonic() - t0 < 5
        assert _statuses(got) == [503] and _body(got)["code"] == CheckoutCode.INTERNAL, got
        assert gw.proc is not None and gw.proc.wait(20) == 1
        assert "Traceback" not in _log(gw)
    finally:
        gw.stop()


def test_out_of_file_descriptors_the_edge_answers_or_closes_and_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both processes started with 160 open files at most (the edge cannot raise it) and 300 clients at once
    (``--no-flow``): each client gets an answer (200, or 503 with a code when the edge has no descriptor left
    for a connection to the application) or a closed connection, never a hang; afterwards all is served."""
    import resource

    import test_checkout_http

    dies = test_checkout_http.die_with_parent

    def low(sig: int) -> Any:
        then = dies(sig)

        def setup() -> None:
            then()
            resource.setrlimit(resource.RLIMIT_NOFILE, (160, 160))

        return setup

    monkeypatch.setattr(test_checkout_http, "die_with_parent", low)
    gw = Gateway(tmp_path / "gw", "--edge", "--no-flow").start()
    socks: list[socket.socket] = []
    try:
        for _ in range(300):
            socks.append(socket.create_connection(("127.0.0.1", gw.port), timeout=3))
        for s in socks:
            with contextlib.suppress(OSError):
                s.sendall(_get("/v1/health", close=False))
        seen: dict[int, int] = {}
        for s in socks:
            try:
                got = s.recv(65536)
            except ConnectionResetError:
                got = b""
            st = _statuses(got)[0] if got else 0
            assert st in (0, 200, 503), got
            if st == 503:
                assert _body(got)["code"] == CheckoutCode.INTERNAL
            seen[st] = seen.get(st, 0) + 1
        assert seen.get(0, 0) + seen.get(503, 0) > 0, seen  # the limit was reached
        for s in socks:
            s.close()
        socks.clear()
        time.sleep(0.5)
        assert httpx.get(gw.url + "/v1/health", timeout=5).status_code == 200
        assert gw.proc is not None and gw.proc.poll() is None
        assert "Traceback" not in _log(gw)
    finally:
        for s in socks:
            s.close()
        gw.stop()


def test_a_stuck_application_holds_no_client_for_ever(pair: Pair) -> None:
    """An admitted request the application does not answer (a stopped or stuck process): past the edge's
    ``answer_s_max`` the client gets 503 with a code, not a hang; that connection to the application is
    dropped (its answer may still come), every slot comes back, and the next request is served."""
    pair.upstream.answer_s_max = 0.5
    t0 = time.monotonic()
    got = pair.exchange(_get("/slow?s=3"), wait_s=10)
    assert time.monotonic() - t0 < 2.5
    assert _statuses(got) == [503] and _body(got)["code"] == CheckoutCode.INTERNAL, got
    assert pair.on_loop(lambda: (pair.upstream._slots._value, len(pair.upstream.idle))) == (512, 0)  # type: ignore[union-attr]
    assert _statuses(pair.exchange(_get("/echo"))) == [200]


def test_spellings_the_gate_does_not_classify_reach_no_route(edge: Gateway) -> None:
    """The gate classifies by the decoded path and method; a spelling it does not classify (so lets through
    unasked) must not reach a route that moves money: the application routes on the same decoded path and
    finds none (404/405 with a code), and nothing was written. (``/v1/wallets/ann%2Ftopup`` is a top-up on
    both sides: classified as one by the gate and routed as one by the application.)"""
    body = b'{"amount": 5}'
    for path, method in [
        ("/v1//wallets/ann/topup", "POST"),
        ("/v1/wallets//ann/topup", "POST"),
        ("/V1/wallets/ann/topup", "POST"),
        ("/v1/wallets/ann/topup", "post"),
        ("http://x/v1/wallets/ann/topup", "POST"),
        ("/v1/flow/../wallets/ann/topup", "POST"),
    ]:
        raw = _post(path, body, auth=_op(edge)).replace(b"POST ", method.encode() + b" ", 1)
        raw = raw.replace(
            b"\r\n\r\n", b"\r\nidempotency-key: spell-" + str(abs(hash(path + method))).encode() + b"\r\n\r\n", 1
        )
        got = _exchange(edge.port, raw)
        assert _statuses(got)[0] in (404, 405), (path, method, got)
        assert _body(got)["code"] in (CheckoutCode.ROUTE_NOT_FOUND, CheckoutCode.METHOD_NOT_ALLOWED), got
    assert httpx.get(edge.url + "/v1/wallets/ann", timeout=5, headers=operator(edge.home)).json()["available"] == 0


def test_a_stop_waits_for_work_whose_client_has_gone(tmp_path: Path) -> None:
    """The edge gave up on a slow request (``answer_s_max``) and closed its connection; the application is
    stopped just then: its stop waits for that request's work as for any other (up to ``shutdown_s_max``)
    instead of abandoning it half done when the loop ends."""
    p = Pair(tmp_path)
    try:
        p.upstream.answer_s_max = 0.2
        assert _statuses(p.exchange(_post("/slow-apply?s=0.8", b"finish-me"))) == [503]
    finally:
        p.close()
    assert p.app.applied == [b"finish-me"]


def test_an_http10_client_gets_no_100_continue(pair: Pair) -> None:
    """``Expect: 100-continue`` from an HTTP/1.0 client is ignored (RFC 9110 10.1.1): it knows no 1xx answer
    and would take the 100 for the answer to its request."""
    with socket.create_connection(("127.0.0.1", pair.port), timeout=3) as s:
        s.sendall(b"POST /apply HTTP/1.0\r\nexpect: 100-continue\r\ncontent-length: 4\r\n\r\n")
        s.settimeout(0.5)
        with pytest.raises(TimeoutError):
            s.recv(100)
        s.settimeout(3)
        s.sendall(b"body")
        got = s.recv(65536)
    assert got.startswith(b"HTTP/1.1 200 ") and pair.app.applied == [b"body"], got
