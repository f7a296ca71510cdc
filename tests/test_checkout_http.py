"""The checkout gateway end to end over HTTP, as a real process (``liangcao checkout start``).

* ``kill -9`` of the gateway in the middle of a load of payments: after a restart, every payment that was
  acknowledged is there, and retrying every payment with its key charges none of them twice (the buyer's
  held money is exactly the sum of the orders paid).
* Bad input (an unknown order, a negative or float amount, an oversize body, no idempotency key, unknown
  fields) gets its stable code and a one-line message, and writes nothing (the order store is unchanged).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from checkout_identity import operator
from liangcao.checkout.codes import CheckoutCode
from liangcao.procs import die_with_parent, free_port, port_open


class Gateway:
    """``liangcao checkout start`` in a child process on a free loopback port."""

    def __init__(self, home: Path, *args: str) -> None:
        self.home = home
        self.port = free_port()
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> Gateway:
        cmd = [sys.executable, "-m", "liangcao.cli", "checkout", "start", "--home", str(self.home)]
        cmd += ["--port", str(self.port), *self.args]
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / "gateway.log", "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, preexec_fn=die_with_parent(signal.SIGKILL))
        if not port_open(self.port, 30):
            self.stop()
            raise RuntimeError("the gateway did not start")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the port opens before the app's startup ends
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    g = Gateway(tmp_path / "gw").start()
    try:
        yield g
    finally:
        g.stop()


def post(c: httpx.Client, path: str, body: Any, key: str | None) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return c.post(path, json=body, headers=headers)


def rows(home: Path) -> dict[str, int]:
    db = sqlite3.connect(f"file:{home / 'checkout.sqlite'}?mode=ro", uri=True)
    try:
        return {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("orders", "refunds", "idem")}
    finally:
        db.close()


def test_bad_input_gets_a_code_and_writes_nothing(gateway: Gateway) -> None:
    with httpx.Client(base_url=gateway.url, timeout=10, headers=operator(gateway.home)) as c:
        assert post(c, "/v1/wallets/ann/topup", {"amount": 10_000}, "t1").status_code == 200
        r = post(c, "/v1/orders", {"buyer": "ann", "merchant": "shop", "amount": 3_000}, "o1")
        assert r.status_code == 201
        oid = r.json()["id"]
        assert post(c, f"/v1/orders/{oid}/pay", {}, "p1").status_code == 200
        before = rows(gateway.home)
        wallet = c.get("/v1/wallets/ann").json()

        def refused(path: str, body: Any, key: str | None, status: int, code: CheckoutCode, **kw: Any) -> None:
            r = c.post(path, headers={"Idempotency-Key": key} if key else {}, **({"json": body} | kw))
            assert r.status_code == status, r.text
            got = r.json()
            assert got["code"] == code and got["name"] == code.name and got["message"], got
            assert "\n" not in got["message"] and "Traceback" not in got["message"]

        refused("/v1/orders/shop.unknown/pay", {}, "x1", 404, CheckoutCode.ORDER_NOT_FOUND)
        refused("/v1/orders/shop.unknown/refund", {"amount": 5}, "x2", 404, CheckoutCode.ORDER_NOT_FOUND)
        refused(f"/v1/orders/{oid}/refund", {"amount": -5}, "x3", 400, CheckoutCode.AMOUNT_INVALID)
        refused(f"/v1/orders/{oid}/refund", {"amount": 1.5}, "x4", 400, CheckoutCode.AMOUNT_NOT_INTEGER)
        refused(f"/v1/orders/{oid}/refund", {"amount": 100.0}, "x5", 400, CheckoutCode.AMOUNT_NOT_INTEGER)
        refused(f"/v1/orders/{oid}/refund", {"amount": "100"}, "x6", 400, CheckoutCode.AMOUNT_NOT_INTEGER)
        refused(f"/v1/orders/{oid}/refund", {"amount": 3_001}, "x7", 422, CheckoutCode.REFUND_EXCEEDS_PAID)
        refused(f"/v1/orders/{oid}/refund", {"amount": 5}, None, 428, CheckoutCode.IDEMPOTENCY_KEY_MISSING)
        refused(f"/v1/orders/{oid}/refund", {"amount": 5, "extra": 1}, "x8", 400, CheckoutCode.BAD_REQUEST)
        order = {"buyer": "ann", "merchant": "shop", "amount": -1}
        refused("/v1/orders", order, "x9", 400, CheckoutCode.AMOUNT_INVALID)
        refused("/v1/orders", order | {"amount": 0.5}, "x10", 400, CheckoutCode.AMOUNT_NOT_INTEGER)
        refused("/v1/orders", order | {"amount": 5, "buyer": "Ann!"}, "x11", 400, CheckoutCode.BAD_PARTY_ID)
        refused("/v1/orders", order | {"amount": 5, "currency": "USD"}, "x12", 400, CheckoutCode.UNSUPPORTED_CURRENCY)
        refused("/v1/wallets/ann/topup", {"amount": 2.5}, "x13", 400, CheckoutCode.AMOUNT_NOT_INTEGER)
        big = {"buyer": "ann", "merchant": "shop", "amount": 5, "note": "n" * 40_000}
        refused("/v1/orders", big, "x14", 413, CheckoutCode.BODY_TOO_LARGE)
        r = c.post(f"/v1/orders/{oid}/refund", content=b"{not json", headers={"Idempotency-Key": "x15"})
        assert r.status_code == 400 and r.json()["code"] == CheckoutCode.BAD_REQUEST
        # A key that answered one request cannot be used for another.
        refused(f"/v1/orders/{oid}/refund", {"amount": 5}, "p1", 422, CheckoutCode.IDEMPOTENCY_KEY_REUSED)
        assert rows(gateway.home) == before
        assert c.get("/v1/wallets/ann").json() == wallet
        assert c.get(f"/v1/orders/{oid}").json()["refunded"] == 0
        # Unknown endpoints and methods: JSON codes too, never a 500.
        r = c.get("/v1/nowhere")
        assert r.status_code == 404 and r.json()["code"] == CheckoutCode.ROUTE_NOT_FOUND
        r = c.delete("/v1/orders")
        assert r.status_code == 405 and r.json()["code"] == CheckoutCode.METHOD_NOT_ALLOWED
        assert c.get("/openapi.json").json()["paths"]["/v1/orders"]["post"]["requestBody"]


def _app_pids(home: Path) -> list[int]:
    """Application processes behind an edge for ``home`` (their command line names its Unix socket)."""
    sock = str(home / "app.sock").encode()
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                if sock in (d / "cmdline").read_bytes():
                    found.append(int(d.name))
    return found


@pytest.mark.parametrize("edge", [False, True], ids=["one-process", "edge"])
def test_kill9_mid_load_loses_no_acknowledged_payment_and_charges_no_retry_twice(tmp_path: Path, edge: bool) -> None:
    """With ``--edge`` the kill lands on the edge: its application process dies with it (nothing left
    running, nothing acknowledged lost), and the restarted pair finds every payment."""
    home = tmp_path / "gw"
    more = ("--edge",) if edge else ()
    gw = Gateway(home, "--no-flow", *more).start()  # admission is not under test here: every request goes in
    buyers = [f"b{i}" for i in range(4)]
    funds = 10_000_000
    orders: list[tuple[str, str, int]] = []  # (order id, buyer, amount)
    acked: dict[str, dict[str, Any]] = {}
    lock = threading.Lock()
    try:
        with httpx.Client(base_url=gw.url, timeout=10, headers=operator(gw.home)) as c:
            for b in buyers:
                assert post(c, f"/v1/wallets/{b}/topup", {"amount": funds}, f"top-{b}").status_code == 200
            for i in range(240):
                b, amount = buyers[i % 4], 1_000 + i
                r = post(c, "/v1/orders", {"buyer": b, "merchant": f"m{i % 3}", "amount": amount}, f"o{i}")
                orders.append((r.json()["id"], b, amount))
        stop = threading.Event()

        def payer(part: list[tuple[str, str, int]]) -> None:
            with httpx.Client(base_url=gw.url, timeout=10, headers=operator(gw.home)) as c:
                for oid, _, _ in part:
                    if stop.is_set():
                        return
                    try:
                        r = post(c, f"/v1/orders/{oid}/pay", {}, f"pay-{oid}")
                    except httpx.HTTPError:
                        return  # the gateway died under us: this payment was not acknowledged
                    if r.status_code == 200:
                        with lock:
                            acked[oid] = r.json()

        threads = [threading.Thread(target=payer, args=(orders[i::6],)) for i in range(6)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while len(acked) < 60 and time.monotonic() < deadline:
            time.sleep(0.005)
        gw.kill9()
        stop.set()
        for t in threads:
            t.join(15)
        assert 60 <= len(acked) < len(orders), "the kill must land in the middle of the load"
        deadline = time.monotonic() + 10
        while _app_pids(home) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _app_pids(home), "the application process outlived its edge"

        gw = Gateway(home, "--no-flow", *more).start()
        with httpx.Client(base_url=gw.url, timeout=10, headers=operator(gw.home)) as c:
            for oid, _, _ in orders:
                assert c.get(f"/v1/orders/{oid}").status_code == 200
            for oid in acked:  # every acknowledged payment survived
                assert c.get(f"/v1/orders/{oid}").json()["state"] == "paid"
            # The client retries every payment with its key (acknowledged or not): once each, whatever happened.
            for oid, _, _ in orders:
                r = post(c, f"/v1/orders/{oid}/pay", {}, f"pay-{oid}")
                assert r.status_code == 200, r.text
                if oid in acked:
                    assert r.json() == acked[oid] and r.headers.get("idempotent-replayed") == "true"
            for b in buyers:
                w = c.get(f"/v1/wallets/{b}").json()
                paid = sum(a for _, who, a in orders if who == b)
                assert w["held"] == paid and w["available"] == funds - paid, (b, w, paid)
    finally:
        gw.stop()


def test_the_http_server_frames_and_refuses_cleanly(gateway: Gateway) -> None:
    """The gateway's own HTTP/1.1 server: pipelining, keep-alive, 413 before reading, 411, 431, 100-continue."""
    import socket

    def exchange(raw: bytes, wait_s: float = 2.0) -> bytes:
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=wait_s) as s:
            s.sendall(raw)
            out = b""
            with contextlib.suppress(TimeoutError):
                while chunk := s.recv(65536):
                    out += chunk
            return out

    # Two pipelined requests on one connection, answered in order; the second asks to close.
    got = exchange(b"GET /v1/health HTTP/1.1\r\nhost: x\r\n\r\nGET /v1/nowhere HTTP/1.1\r\nconnection: close\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 200 ") and b"HTTP/1.1 404 " in got and b'"code":3090' in got
    # A declared body over body_bytes_max: 413 from the header alone, and the connection closed.
    got = exchange(b"POST /v1/orders HTTP/1.1\r\nidempotency-key: big\r\ncontent-length: 999999999\r\n\r\n{")
    assert got.startswith(b"HTTP/1.1 413 ") and b'"code": 3004' in got and b"connection: close" in got
    got = exchange(b"POST /v1/orders HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 411 ")
    got = exchange(b"GET /v1/health HTTP/1.1\r\nx-pad: " + b"a" * 20_000 + b"\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 431 ")
    got = exchange(b"NONSENSE\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 400 ")
    # Expect: 100-continue: the server asks for the body, then answers the request.
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as s:
        body = b'{"amount": 5}'
        s.sendall(
            b"POST /v1/wallets/zed/topup HTTP/1.1\r\nidempotency-key: e1\r\nexpect: 100-continue\r\n"
            + f"authorization: {operator(gateway.home)['Authorization']}\r\n".encode()
            + b"connection: close\r\ncontent-length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
        )
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue")
        s.sendall(body)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        assert out.startswith(b"HTTP/1.1 200 ") and b'"amount":5' in out
    assert rows(gateway.home)["orders"] == 0


@pytest.mark.parametrize("server", ["fast", "uvicorn", "edge"])
def test_flow_control_refuses_by_priority_and_rules_change_at_run_time(tmp_path: Path, server: str) -> None:
    """Reports are limited more than payments; a refusal is a fast 429 with Retry-After; rules reload live.
    The same with the gateway's own server (it asks the gate itself), with uvicorn (FlowMiddleware) and with
    the edge in front of the application process (the gate, its rules and metrics live in the edge)."""
    args = ("--edge",) if server == "edge" else ("--server", server)
    gateway = Gateway(tmp_path / "gw", *args).start()
    try:
        check_flow_control(gateway, metrics="/v1/flow/metrics" if server == "edge" else "/metrics")
        if server == "edge":
            assert len(_app_pids(gateway.home)) == 1
    finally:
        gateway.stop()
    if server == "edge":  # a graceful stop of the edge stops its application process too
        assert not _app_pids(gateway.home)


def check_flow_control(gateway: Gateway, metrics: str = "/metrics") -> None:
    op = operator(gateway.home)
    with httpx.Client(base_url=gateway.url, timeout=10) as c:
        rules = c.get("/v1/flow/rules").json()
        for r in rules["resources"]:
            if r["name"] == "report":
                r.update(rate_per_s=0.01, burst=1)
        rules["version"] = 7
        # Only the operator changes the rules: no token, or another, is 401 OPERATOR_ONLY and changes nothing.
        for auth in ({}, {"Authorization": "Bearer " + "x" * 43}, {"Authorization": "bearer"}):
            r = c.put("/v1/flow/rules", json=rules, headers=auth)
            assert r.status_code == 401 and r.json()["code"] == CheckoutCode.OPERATOR_ONLY, r.text
        assert c.get("/v1/flow").json()["version"] != 7
        token = (gateway.home / "operator.token").read_text().strip()
        assert (gateway.home / "operator.token").stat().st_mode & 0o077 == 0  # the owner's only
        r = c.put("/v1/flow/rules", json=rules, headers={"Authorization": f"Bearer {token}"})
        assert r.json()["version"] == 7, r.text
        answers = [c.get("/v1/merchants/shop/settlement", headers=op) for _ in range(3)]
        refused = [r for r in answers if r.status_code == 429]
        assert refused, [r.status_code for r in answers]
        r = refused[0]
        assert r.json()["name"] == "RATE_LIMITED" and int(r.headers["retry-after"]) >= 1
        assert int(r.headers["x-retry-after-ms"]) > 0
        # Paying is not touched by the reports' limit.
        r = c.post("/v1/wallets/ann/topup", json={"amount": 100}, headers=op | {"Idempotency-Key": "t-flow"})
        assert r.status_code == 200, r.text
        status = c.get("/v1/flow").json()
        assert status["version"] == 7 and status["resources"]["report"]["refused"] >= 1
        assert "liangcao_flow_decisions_total" in c.get(metrics, headers=op).text


def test_the_edge_stops_when_its_application_process_dies(tmp_path: Path) -> None:
    """``kill -9`` of the application process behind an edge: the edge does not go on answering 503 for ever;
    it stops with a non-zero status and says why (its supervisor starts the pair again), and a restart on the
    same folder serves what was written."""
    home = tmp_path / "gw"
    gw = Gateway(home, "--edge").start()
    try:
        with httpx.Client(base_url=gw.url, timeout=10, headers=operator(gw.home)) as c:
            assert post(c, "/v1/wallets/ann/topup", {"amount": 500}, "t-edge").status_code == 200
        (app,) = _app_pids(home)
        os.kill(app, signal.SIGKILL)
        assert gw.proc is not None
        assert gw.proc.wait(20) == 1
        assert b"the application process exited" in (home / "gateway.log").read_bytes()
    finally:
        gw.stop()
    gw = Gateway(home, "--edge").start()
    try:
        with httpx.Client(base_url=gw.url, timeout=10, headers=operator(gw.home)) as c:
            assert c.get("/v1/wallets/ann").json()["available"] == 500
    finally:
        gw.stop()
