"""Attacks on the checkout gateway (issue 18): a hostile shopper, merchant or network.

Each test is an attack that once worked, or one that must keep failing: money that must not move twice, keys
that must not answer another request, and the gateway's own HTTP/1.1 server (``server.py``) fed smuggled,
slow, oversize and malformed requests. The server runs in this process over an embedded payments core.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop
from fastapi import FastAPI

from checkout_identity import merchant, operator
from liangcao.checkout import server as server_mod
from liangcao.checkout.codes import CheckoutCode, CheckoutError
from liangcao.checkout.http import classify, create_app, default_rules
from liangcao.checkout.server import Server, Upstream
from liangcao.checkout.service import Checkout, Pending
from liangcao.flow import Gate
from liangcao.flow.asgi import flow_router
from liangcao.payments import Engine
from liangcao.procs import free_port
from server_thread import ServerThread


@pytest.fixture
def co(tmp_path: Path) -> Iterator[Checkout]:
    e = Engine(tmp_path / "pay", fsync=False)
    c = Checkout(tmp_path / "co", e, fee_bps=60)
    _AUTH[:] = [f"authorization: {operator(c.home)['Authorization']}\r\n".encode()]
    try:
        yield c
    finally:
        c.close()
        e.close()


def _code(fn: Any, *args: Any) -> CheckoutCode:
    with pytest.raises(CheckoutError) as exc:
        r = fn(*args)
        raise AssertionError(f"not refused: {r}")
    return CheckoutCode(exc.value.code)


# ------------------------------------------------------------------------------------------------ money


def test_a_client_key_cannot_take_the_auto_confirm_sweeps_key(co: Checkout) -> None:
    """A shopper who uses ``auto:<order>:1`` as an Idempotency-Key must not stall auto-confirmation (the
    sweep's insert of its own key collided, the sweep raised, and every due order waited for ever)."""
    now = [1_000_000]
    co.clock_ms = lambda: now[0]
    co.topup("t", "ann", 10_000)
    oid = co.create_order("o", "ann", "shop", 1_000).body["id"]
    other = co.create_order("o2", "ann", "shop", 2_000).body["id"]
    assert co.pay("p", oid).status == 200 and co.pay("p2", other).status == 200
    assert _code(co.topup, f"auto:{oid}:1", "ann", 1) == CheckoutCode.BAD_REQUEST
    # A key taken before keys were checked (an older store): that order is skipped, the others settle.
    with co.store.tx() as db:
        db.execute(
            "INSERT INTO idem (key, fingerprint, op, order_id, intent, chain, status, body, created_ms) "
            "VALUES (?, x'00', 'topup', '', '{}', x'5b5d', 200, '{}', 0)",
            (f"auto:{other}:1",),
        )
    now[0] += co.auto_confirm_ms + 1
    assert co.auto_confirm_due() == 1
    assert co.get_order(oid)["state"] == "settled" and co.get_order(other)["state"] == "paid"
    with co.store.tx() as db:
        db.execute("DELETE FROM idem WHERE key = ?", (f"auto:{other}:1",))
    assert co.auto_confirm_due() == 1
    assert co.get_order(other)["state"] == "settled"


def test_keys_never_answer_another_request(co: Checkout) -> None:
    co.topup("t", "ann", 10_000)
    oid = co.create_order("o", "ann", "shop", 1_000).body["id"]
    oid2 = co.create_order("o2", "ann", "shop", 1_000).body["id"]
    assert _code(co.create_order, "o", "ann", "shop", 1_001) == CheckoutCode.IDEMPOTENCY_KEY_REUSED
    assert co.pay("p", oid).status == 200
    assert _code(co.pay, "p", oid2) == CheckoutCode.IDEMPOTENCY_KEY_REUSED
    assert co.refund("r", oid, 100).status == 200
    assert _code(co.refund, "r", oid, 101) == CheckoutCode.IDEMPOTENCY_KEY_REUSED
    assert _code(co.topup, "r", "ann", 100) == CheckoutCode.IDEMPOTENCY_KEY_REUSED
    # A second pay of a paid order with another key moves nothing.
    assert _code(co.pay, "p-again", oid) == CheckoutCode.ORDER_NOT_PAYABLE
    # A wholly refunded order can be neither confirmed nor refunded again, nor paid.
    assert co.pay("p3", oid2).status == 200 and co.refund("r3", oid2, 1_000).status == 200
    assert _code(co.confirm, "c3", oid2) == CheckoutCode.ORDER_NOT_CONFIRMABLE
    assert _code(co.refund, "r4", oid2, 1) == CheckoutCode.ORDER_NOT_REFUNDABLE
    assert _code(co.pay, "p4", oid2) == CheckoutCode.ORDER_NOT_PAYABLE
    # The refund posted 900 of the hold into escrow and released 100.
    assert co.wallet("ann") == {"buyer": "ann", "available": 9_100, "held": 0}


def test_refunds_are_cumulative_across_settlement(co: Checkout) -> None:
    co.topup("t", "ann", 10_000)
    co.topup("t2", "bob", 10_000)
    oid = co.create_order("o", "ann", "shop", 1_000).body["id"]
    co.pay("p", oid)
    assert co.refund("r1", oid, 300).status == 200  # partial post: 700 in escrow
    assert co.refund("r2", oid, 200).status == 200  # out of escrow
    assert co.confirm("c", oid).status == 200
    assert _code(co.confirm, "c2", oid) == CheckoutCode.ORDER_NOT_CONFIRMABLE
    assert _code(co.refund, "r3", oid, 501) == CheckoutCode.REFUND_EXCEEDS_PAID
    o = co.get_order(oid)
    assert o["refunded"] == 500 and o["settled"] == 500 and o["fee"] == 3
    # The merchant got 497 (the platform kept 3): a reverse refund of 500 is more than it holds.
    r = co.refund("r4", oid, 500)
    assert r.status != 200 and r.body["code"] == CheckoutCode.MERCHANT_FUNDS_SHORT
    assert co.refund("r5", oid, 497).status == 200
    assert _code(co.refund, "r6", oid, 4) == CheckoutCode.REFUND_EXCEEDS_PAID
    o = co.get_order(oid)
    assert o["refunded"] == 997 and o["state"] == "settled"
    assert co.wallet("ann")["available"] == 10_000 - 3


def test_one_fen_orders_and_fee_rounding(co: Checkout) -> None:
    co.topup("t", "ann", 10_000)
    for i, amount in enumerate([1, 2, 166, 167, 10_000]):
        oid = co.create_order(f"o{i}", "ann", "shop", amount).body["id"] if amount <= 10_000 else ""
        co.topup(f"tt{i}", "ann", amount)
        assert co.pay(f"p{i}", oid).status == 200
        o = co.confirm(f"c{i}", oid).body
        assert o["fee"] >= 0 and o["fee"] == amount * 60 // 10_000 and o["settled"] == amount
    fees = sum(a * 60 // 10_000 for a in [1, 2, 166, 167, 10_000])
    assert co.settlement_report("shop")["balance"] + fees == 1 + 2 + 166 + 167 + 10_000
    # A merchant paying itself: its wallet and its shop are different accounts; the platform keeps its fee.
    co.topup("self-t", "shop", 5_000)
    oid = co.create_order("self-o", "shop", "shop", 5_000).body["id"]
    assert co.pay("self-p", oid).status == 200 and co.confirm("self-c", oid).status == 200
    assert co.wallet("shop")["available"] == 0
    assert co.settlement_report("shop")["balance"] + fees + 30 == 1 + 2 + 166 + 167 + 10_000 + 5_000


def test_amounts_must_be_plain_integers(co: Checkout) -> None:
    for bad, code in [
        (1.0, CheckoutCode.AMOUNT_NOT_INTEGER),
        ("100", CheckoutCode.AMOUNT_NOT_INTEGER),
        (True, CheckoutCode.AMOUNT_NOT_INTEGER),
        (None, CheckoutCode.AMOUNT_NOT_INTEGER),
        (0, CheckoutCode.AMOUNT_INVALID),
        (-1, CheckoutCode.AMOUNT_INVALID),
        (10**10 + 1, CheckoutCode.AMOUNT_INVALID),
        (2**64, CheckoutCode.AMOUNT_INVALID),
        (2**128, CheckoutCode.AMOUNT_INVALID),
    ]:
        assert _code(co.create_order, "k", "ann", "shop", bad) == code, bad
        assert _code(co.topup, "k", "ann", bad) == code, bad
    assert co.store.one("SELECT COUNT(*) FROM idem")[0] == 0


# ----------------------------------------------------------------------------------------- the server


class Live:
    """The gateway's own server in a thread of this process (with flow control, as ``checkout start``).

    ``setup``: ``asyncio`` (the standard loop), ``uvloop`` (the loop ``checkout start`` runs on) or ``edge``
    (``checkout start --edge``: an edge server with the gate relaying to the application's server on a Unix
    socket, both on one uvloop loop here): every attack below must fare the same through all three."""

    def __init__(self, co: Checkout, setup: str = "asyncio", home: Path | None = None) -> None:
        self.port = free_port()
        self.gate = Gate(default_rules())
        self.servers: list[Server] = []
        if setup == "edge":
            assert home is not None
            sock = str(home / "app.sock")
            self.servers.append(Server(create_app(co, None, auto_confirm_every_s=0), unix=sock))
            own = FastAPI()
            own.include_router(flow_router(self.gate))
            edge = Server(own, "127.0.0.1", self.port, gate=self.gate, classify=classify, upstream=Upstream(sock))
            self.servers.append(edge)
        else:
            app = create_app(co, self.gate, middleware=False, auto_confirm_every_s=0)
            self.servers.append(Server(app, "127.0.0.1", self.port, gate=self.gate, classify=classify))
        loop = uvloop.new_event_loop if setup in ("uvloop", "edge") else asyncio.new_event_loop
        self.running = ServerThread(self.servers, self.port, loop)

    def close(self) -> None:
        self.running.close()

    def connect(self, timeout: float = 3.0) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def exchange(self, raw: bytes, wait_s: float = 2.0) -> bytes:
        with self.connect(wait_s) as s:
            s.sendall(raw)
            out = b""
            with contextlib.suppress(TimeoutError, ConnectionResetError):
                while chunk := s.recv(65536):
                    out += chunk
            return out


@pytest.fixture(params=["asyncio", "uvloop", "edge"])
def live(co: Checkout, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Live]:
    lv = Live(co, request.param, tmp_path)
    try:
        yield lv
    finally:
        lv.close()


def _statuses(raw: bytes) -> list[int]:
    return [int(m) for m in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


#: the operator's header line of the current test's gateway (set by the ``co`` fixture): top-ups are theirs
_AUTH: list[bytes] = [b""]


def _topup(amount: int, key: str, extra: bytes = b"") -> bytes:
    body = json.dumps({"amount": amount}).encode()
    return (
        b"POST /v1/wallets/ann/topup HTTP/1.1\r\nidempotency-key: " + key.encode() + b"\r\n" + _AUTH[0] + extra
        + b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip


def test_two_content_lengths_are_refused(live: Live, co: Checkout) -> None:
    """Smuggling: a proxy that reads the first Content-Length and this server the last see different bodies."""
    body = b'{"amount": 5}'
    smuggled = _topup(7, "inner")
    raw = (
        b"POST /v1/wallets/ann/topup HTTP/1.1\r\nidempotency-key: outer\r\ncontent-length: "
        + str(len(body) + len(smuggled)).encode()
        + b"\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
        + smuggled
    )
    got = live.exchange(raw)
    assert _statuses(got) == [400], got
    assert co.wallet("ann")["available"] == 0


def test_header_values_with_bare_cr_lf_or_nul_are_refused(live: Live, co: Checkout) -> None:
    for bad in [b"x: a\nContent-Length: 3\r\n", b"x: a\rb\r\n", b"x: a\x00b\r\n", b"x: a\r\n b\r\n"]:
        got = live.exchange(_topup(5, "k-" + str(hash(bad)), bad))
        assert _statuses(got) == [400], (bad, got)
    got = live.exchange(b"GET /v1/health\x00 HTTP/1.1\r\n\r\n")
    assert _statuses(got) == [400], got
    assert co.wallet("ann")["available"] == 0


def test_a_head_request_gets_no_body(live: Live) -> None:
    """HEAD answered with a body breaks framing: the next pipelined answer would be read as that body."""
    got = live.exchange(b"HEAD /v1/health HTTP/1.1\r\n\r\nGET /v1/health HTTP/1.1\r\nconnection: close\r\n\r\n")
    _, _, rest = got.partition(b"\r\n\r\n")
    assert rest.startswith(b"HTTP/1.1 200 "), got


def test_slowloris_is_cut_off(live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that sends its head a byte at a time (or nothing) loses its connection after request_s_max."""
    monkeypatch.setattr(server_mod, "request_s_max", 0.5)
    monkeypatch.setattr(server_mod, "idle_s_max", 0.5)
    with live.connect(5) as s:
        t0 = time.monotonic()
        closed = False
        for b in b"GET /v1/health HTTP/1.1\r\nx-slow: " + b"a" * 100:
            try:
                s.sendall(bytes([b]))
            except OSError:
                closed = True
                break
            time.sleep(0.05)
            if time.monotonic() - t0 > 3:
                break
        if not closed:
            s.settimeout(3)
            with contextlib.suppress(ConnectionResetError):
                out = s.recv(1000)
                closed = out == b"" or out.startswith(b"HTTP/1.1 408")
        assert closed and time.monotonic() - t0 < 4
    with live.connect(5) as idle:  # connected, never sends: closed too
        idle.settimeout(3)
        t0 = time.monotonic()
        with contextlib.suppress(ConnectionResetError):
            idle.recv(100)
        assert time.monotonic() - t0 < 2.5


def test_bad_query_numbers_get_a_4xx(live: Live) -> None:
    for q in [b"/v1/merchants/shop/settlement?to_ms=99999999999999999999999", b"/v1/merchants/shop/orders?limit=-5"]:
        got = live.exchange(b"GET " + q + b" HTTP/1.1\r\nconnection: close\r\n\r\n")
        st = _statuses(got)[0]
        assert 200 <= st < 500, got


def test_a_client_that_never_reads_cannot_grow_the_servers_buffers(live: Live) -> None:
    """Thousands of pipelined requests and no reading: the server stops taking requests, not memory."""
    with live.connect(5) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        one = b"GET /v1/health HTTP/1.1\r\nhost: x\r\n\r\n"
        s.setblocking(False)
        sent = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and sent < 20_000_000:
            try:
                sent += s.send(one * 1000)
            except BlockingIOError:
                time.sleep(0.01)
        time.sleep(0.3)
        buffered = [
            c.transport.get_write_buffer_size() + len(c.buf) for srv in live.servers for c in srv.conns if c.transport
        ]
        # Bounded, not 20 MB: what was read before reading paused (buffer_bytes_max, plus the one read that
        # crossed it: asyncio reads up to 256 KiB at a time) and the answers the client does not read (the
        # transport's write buffer, up to its high-water mark before writing pauses, plus one answer).
        assert buffered and max(buffered) < 3 * server_mod.buffer_bytes_max, (sent, buffered)


def test_bad_framing_pipelined_behind_a_good_request_changes_nothing(live: Live, co: Checkout) -> None:
    for bad in [
        b"POST /v1/wallets/ann/topup HTTP/1.1\r\ncontent-length: -5\r\n\r\n",
        b"POST /v1/wallets/ann/topup HTTP/1.1\r\ncontent-length: +5\r\n\r\n",
        b"POST /v1/wallets/ann/topup HTTP/1.1\r\ncontent-length: 5, 5\r\n\r\n",
        b"POST /v1/wallets/ann/topup HTTP/1.1\r\ncontent-length : 5\r\n\r\n",
        b"POST /v1/wallets/ann/topup HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n",
        b"GET /v1/\xe4\xbd\xa0 HTTP/1.1\r\n\r\n",
        b"GET /v1/a b HTTP/1.1\r\n\r\n",
        b"G(T /v1/health HTTP/1.1\r\n\r\n",
        b"GET /v1/health HTTP/2.0\r\n\r\n",
    ]:
        got = live.exchange(b"GET /v1/health HTTP/1.1\r\n\r\n" + bad + _topup(9, "after-" + str(hash(bad))))
        st = _statuses(got)
        assert st[0] == 200 and 400 <= st[1] < 500 and len(st) == 2, (bad, got)
    assert co.wallet("ann")["available"] == 0
    # Percent-encoded non-ASCII is fine (and finds no such order).
    got = live.exchange(b"GET /v1/orders/%E4%BD%A0 HTTP/1.1\r\nconnection: close\r\n\r\n")
    assert _statuses(got) == [401], got  # who asks comes first
    got = live.exchange(b"GET /v1/orders/%E4%BD%A0 HTTP/1.1\r\n" + _AUTH[0] + b"connection: close\r\n\r\n")
    assert _statuses(got) == [404], got


def test_http10_closes_and_a_client_gone_mid_body_writes_nothing(live: Live, co: Checkout) -> None:
    got = live.exchange(b"GET /v1/health HTTP/1.0\r\n\r\n", wait_s=3)
    assert got.startswith(b"HTTP/1.1 200 ") and b"connection: close" in got
    raw = _topup(5, "gone")
    with live.connect() as s:
        s.sendall(raw[:-3])
    time.sleep(0.2)
    assert co.wallet("ann")["available"] == 0 and co.store.one("SELECT COUNT(*) FROM idem")[0] == 0


# ------------------------------------------------------------------------------------------ races


def test_concurrent_operations_on_one_order_are_serialised(co: Checkout) -> None:
    now = [1_000_000]
    co.clock_ms = lambda: now[0]
    co.topup("t", "ann", 10_000)
    oid = co.create_order("o", "ann", "shop", 1_000).body["id"]
    # Cancel (or a second pay) while a pay is in flight: refused, the pay completes once.
    started = co.begin_pay("p", oid)
    assert _code(co.cancel, "c", oid) == CheckoutCode.REQUEST_IN_PROGRESS
    assert _code(co.pay, "p2", oid) == CheckoutCode.REQUEST_IN_PROGRESS
    assert co.finish(started).status == 200
    assert _code(co.cancel, "c", oid) == CheckoutCode.ORDER_NOT_CANCELLABLE
    # Two refunds at once: one waits its turn; together they can never pass what was paid.
    started = co.begin_refund("r1", oid, 600)
    assert _code(co.refund, "r2", oid, 600) == CheckoutCode.REQUEST_IN_PROGRESS
    # The window ends while the refund is in flight: the sweep leaves the order alone ...
    now[0] += co.auto_confirm_ms + 1
    assert co.auto_confirm_due() == 0
    assert co.finish(started).status == 200
    assert _code(co.refund, "r2", oid, 600) == CheckoutCode.REFUND_EXCEEDS_PAID
    # ... and settles what is left on its next pass; a confirm after it is refused.
    assert co.auto_confirm_due() == 1
    o = co.get_order(oid)
    assert o["state"] == "settled" and o["settled"] == 400 and o["fee"] == 2 and o["refunded"] == 600
    assert _code(co.confirm, "c2", oid) == CheckoutCode.ORDER_NOT_CONFIRMABLE
    assert co.wallet("ann") == {"buyer": "ann", "available": 9_600, "held": 0}
    assert co.settlement_report("shop")["balance"] == 398


def test_refunds_from_many_connections_never_pass_what_was_paid(live: Live, co: Checkout) -> None:
    import httpx

    co.topup("t", "ann", 100_000)
    co.topup("t2", "shop-owner", 100_000)
    url = f"http://127.0.0.1:{live.port}"
    for settled in (False, True):
        oid = co.create_order(f"o{settled}", "ann", "shop", 1_000).body["id"]
        co.pay(f"p{settled}", oid)
        if settled:
            co.confirm(f"c{settled}", oid)
            co.topup("t3", "ann", 1)  # the merchant has money from the first order's rest too
        results: list[int] = []

        def hammer(n: int, oid: str = oid, results: list[int] = results) -> None:
            with httpx.Client(base_url=url, timeout=10, headers=merchant(co.home, "shop")) as c:
                for i in range(15):
                    r = c.post(
                        f"/v1/orders/{oid}/refund", json={"amount": 70}, headers={"idempotency-key": f"{oid}{n}-{i}"}
                    )
                    results.append(r.status_code)

        threads = [threading.Thread(target=hammer, args=(n,)) for n in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        o = co.get_order(oid)
        ok = [r for r in o["refunds"] if r["state"] == "succeeded"]
        assert sum(r["amount"] for r in ok) == o["refunded"] <= (o["settled"] if settled else 1_000)
        assert all(s in (200, 409, 422) for s in results), sorted(set(results))
        assert not any(r["state"] == "requested" for r in o["refunds"])


# ------------------------------------------------------------------------------------------ crashes


def _reopen(co: Checkout, e: Engine, home: Path) -> Checkout:
    """As if the process died: the store and batcher go away without finishing anything; a new one recovers."""
    co.store.close()
    co.batcher.close()
    return Checkout(home, e, clock_ms=co.clock_ms, fee_bps=co.fee_bps)


@pytest.mark.parametrize("cut", ["after_intent", "after_money"])
def test_kill_at_each_step_of_confirm_and_refunds_moves_money_once(tmp_path: Path, cut: str) -> None:
    from liangcao.checkout import money

    e = Engine(tmp_path / "pay", fsync=False)
    co = Checkout(tmp_path / "co", e, fee_bps=60)
    try:
        co.topup("t", "ann", 10_000)
        a = co.create_order("o1", "ann", "shop", 1_000).body["id"]
        b = co.create_order("o2", "ann", "shop", 2_000).body["id"]
        co.pay("pa", a)
        co.pay("pb", b)
        steps: list[tuple[str, tuple[Any, ...]]] = [
            ("begin_refund", ("ra", a, 300)),  # partial post
            ("begin_confirm", ("ca", a)),  # settle from escrow
            ("begin_refund", ("ra2", a, 100)),  # reverse, after settlement
            ("begin_refund", ("rb", b, 2_000)),  # void
        ]
        for name, args in steps:
            started = getattr(co, name)(*args)
            assert isinstance(started, Pending)
            if cut == "after_money":
                assert money.outcome(co.batcher.send(started.chain))[0]  # the money moved; the answer is lost
            co = _reopen(co, e, tmp_path / "co")  # recover() finishes it with the stored chain
        oa, ob = co.get_order(a), co.get_order(b)
        assert oa["state"] == "settled" and oa["refunded"] == 400 and oa["settled"] == 700 and oa["fee"] == 4
        assert ob["state"] == "refunded" and ob["payment"] == "voided"
        # Retrying each with its key replays, and nothing moved twice.
        assert co.refund("ra", a, 300).replayed and co.confirm("ca", a).replayed and co.refund("rb", b, 2_000).replayed
        assert co.wallet("ann") == {"buyer": "ann", "available": 10_000 - 700 + 100, "held": 0}
        assert co.settlement_report("shop")["balance"] == 700 - 4 - 100
        ids = [
            money.transfer_id(a, "payout", 1),
            money.transfer_id(a, "refund1", 0),
            money.transfer_id(b, "refund1", 0),
        ]
        assert len(e.lookup_transfers(ids)) == 3
    finally:
        co.close()
        e.close()


def test_a_stepped_up_payment_survives_a_gateway_restart(tmp_path: Path) -> None:
    """Risk asks for a step-up, the gateway restarts, then the assertion arrives: it pays, once, and the
    decision is on the order."""
    from liangcao.authn import RelyingParty, SoftAuthenticator
    from liangcao.checkout.guards import GuardChain
    from liangcao.checkout.plugins import PasskeyStepUp, risk_guard
    from liangcao.risk.engine import RiskConfig, RiskEngine

    class Clock:
        t = 1_800_000_000_000

        def now_ms(self) -> int:
            return self.t

    origin = "http://localhost:8765"
    rules = {
        "thresholds": {"step_up": 0.99, "block": 0.999},
        "rules": [
            {"id": "big", "reason": "LARGE_AMOUNT", "action": "step_up", "when": [["amount_fen", ">=", 100_000]]}
        ],
    }
    clock = Clock()
    dev = SoftAuthenticator()

    def open_gateway(e: Engine) -> tuple[Checkout, Any]:
        rp = RelyingParty("localhost", origin, tmp_path / "authn", clock)
        risk = RiskEngine(None, clock=clock, rules=rules, config=RiskConfig(learn_per_decide=0))
        guards = GuardChain([risk_guard(risk)], PasskeyStepUp(rp))
        return Checkout(tmp_path / "co", e, clock_ms=clock.now_ms, guards=guards), rp

    with Engine(tmp_path / "pay", fsync=False) as e:
        co, rp = open_gateway(e)
        opts = rp.registration_options("alice", "phone")
        rp.register("alice", opts["ceremony_id"], dev.create(opts["publicKey"], origin))
        co.topup("t", "alice", 1_000_000)
        big = co.create_order("o1", "alice", "shop", 200_000).body["id"]
        with pytest.raises(CheckoutError) as info:
            co.pay("p1", big)
        challenge = info.value.detail["challenge"]
        co.close()
        rp.close()
        co, rp = open_gateway(e)  # the gateway restarted; the shopper's phone answers now
        try:
            assertion = dev.get(challenge["publicKey"], origin)
            step_up = {"challenge_id": challenge["challenge_id"], "credential": assertion}
            r = co.pay("p1", big, step_up=step_up)
            assert r.status == 200 and r.body["decisions"]["step_up"]["verified"]
            assert r.body["decisions"]["risk"]["action"] == "step_up"
            assert co.pay("p1", big, step_up=step_up).replayed
            assert co.wallet("alice")["held"] == 200_000
        finally:
            co.close()
            rp.close()


def test_amounts_over_http_and_stray_empty_lines(live: Live, co: Checkout) -> None:
    import httpx

    url = f"http://127.0.0.1:{live.port}/v1/wallets/ann/topup"
    for i, raw in enumerate(
        [b'{"amount": 1e2}', b'{"amount": 100.0}', b'{"amount": "100"}', b'{"amount": true}', b'{"amount": -100}',
         b'{"amount": 100000000000000000000000000000}', b'{"amount": 1, "amount": 2}', b'{"amount": NaN}',
         b'{"amount": [100]}', b"[]", b'{"amount": 100, "x": 1}']
    ):  # fmt: skip
        head = {"idempotency-key": f"h{i}", "content-type": "application/json"} | operator(co.home)
        r = httpx.post(url, content=raw, headers=head)
        assert 400 <= r.status_code < 500 and r.json()["code"] in (3001, 3002, 3003), (raw, r.text)
    assert co.wallet("ann")["available"] == 0 and co.store.one("SELECT COUNT(*) FROM idem")[0] == 0
    got = live.exchange(
        b"\r\n\r\nGET /v1/health HTTP/1.1\r\n\r\n\r\nGET /v1/health HTTP/1.1\r\nconnection: close\r\n\r\n"
    )
    assert _statuses(got) == [200, 200], got


def test_installment_refunds_before_and_after_settlement_survive_a_kill(tmp_path: Path) -> None:
    """Installments: one partial refund before settlement (a second is refused), then a refund after it that
    goes through the credit plan, cut after its intent: the restart refunds it through the plan once."""
    from liangcao.checkout.plugins import InstallmentsMethod
    from liangcao.credit import CreditService

    with Engine(tmp_path / "pay", fsync=False) as e:
        credit = CreditService(e, tmp_path / "credit.db", fsync=False)
        co = Checkout(tmp_path / "co", e, methods=[InstallmentsMethod(credit, 3)])
        try:
            oid = str(co.create_order("o1", "ann", "shop", 120_000).body["id"])
            assert co.pay("p1", oid, "installments-3").status == 200
            assert co.refund("r1", oid, 20_000).status == 200
            assert _code(co.refund, "r2", oid, 1_000) == CheckoutCode.ORDER_NOT_REFUNDABLE
            assert co.confirm("c1", oid).body["settled"] == 100_000
            assert credit.plan(oid).principal == 100_000
            started = co.begin_refund("r3", oid, 30_000)
            assert isinstance(started, Pending) and started.intent.get("via") == "installments-3"
            co.store.close()
            co.batcher.close()
            co = Checkout(tmp_path / "co", e, methods=[InstallmentsMethod(credit, 3)])
            o = co.get_order(oid)
            assert o["refunded"] == 50_000 and [r["state"] for r in o["refunds"]] == ["succeeded", "succeeded"]
            assert co.refund("r3", oid, 30_000).replayed
            assert credit.plan(oid).refunded == 30_000 and credit.line("ann").outstanding_fen == 70_000
            assert _code(co.refund, "r4", oid, 70_001) == CheckoutCode.REFUND_EXCEEDS_PAID
        finally:
            co.close()
            credit.close()


def test_an_installment_order_without_its_plugin_neither_cashes_out_nor_loses_its_plan(tmp_path: Path) -> None:
    """The gateway restarted without ``--credit``: a refund of a credit purchase must not be paid into the
    wallet (cash out of a credit line), and a settlement must still open the plan once the method is back."""
    from liangcao.checkout.plugins import InstallmentsMethod
    from liangcao.credit import CreditService

    with Engine(tmp_path / "pay", fsync=False) as e:
        credit = CreditService(e, tmp_path / "credit.db", fsync=False)
        co = Checkout(tmp_path / "co", e, methods=[InstallmentsMethod(credit, 3)])
        try:
            a = str(co.create_order("o1", "ann", "shop", 50_000).body["id"])
            b = str(co.create_order("o2", "ann", "shop", 40_000).body["id"])
            assert co.pay("p1", a, "installments-3").status == 200
            assert co.pay("p2", b, "installments-3").status == 200
            assert co.confirm("c1", a).status == 200
            co.close()
            co = Checkout(tmp_path / "co", e)  # no installments plugged in
            assert _code(co.refund, "r1", a, 10_000) == CheckoutCode.METHOD_UNAVAILABLE
            assert _code(co.refund, "r2", b, 10_000) == CheckoutCode.METHOD_UNAVAILABLE
            assert co.wallet("ann")["available"] == 0
            assert co.confirm("c2", b).status == 200  # the merchant is paid; the plan waits for its method
            co.close()
            co = Checkout(tmp_path / "co", e, methods=[InstallmentsMethod(credit, 3)])
            assert credit.plan(b).principal == 40_000
            assert co.refund("r3", b, 10_000).status == 200 and credit.plan(b).refunded == 10_000
            assert co.wallet("ann")["available"] == 0
        finally:
            co.close()
            credit.close()


def test_a_refused_head_request_gets_no_body_either(live: Live) -> None:
    from liangcao.flow import ResourceRule, Rules

    live.gate.reload(Rules(version=2, resources=[ResourceRule(name="query", rate_per_s=0.001, burst=1)]))
    raw = b"HEAD /v1/orders/shop.x HTTP/1.1\r\n\r\n" * 3 + b"GET /v1/health HTTP/1.1\r\nconnection: close\r\n\r\n"
    got = live.exchange(raw)
    assert _statuses(got) == [405, 429, 429, 200], got
    assert got.count(b"{") == 1, got  # the health answer's body only


def test_a_restart_without_the_method_of_an_open_refund_still_starts(tmp_path: Path) -> None:
    """A refund through the credit plan cut by a kill, and the gateway restarted without ``--credit``: it
    starts (the refund waits, the order stays busy), and the restart with the method finishes it once."""
    from liangcao.checkout.plugins import InstallmentsMethod
    from liangcao.credit import CreditService

    with Engine(tmp_path / "pay", fsync=False) as e:
        credit = CreditService(e, tmp_path / "credit.db", fsync=False)
        co = Checkout(tmp_path / "co", e, methods=[InstallmentsMethod(credit, 3)])
        try:
            a = str(co.create_order("o1", "ann", "shop", 50_000).body["id"])
            co.pay("p1", a, "installments-3")
            co.confirm("c1", a)
            assert isinstance(co.begin_refund("r1", a, 5_000), Pending)
            co.store.close()
            co.batcher.close()
            co = Checkout(tmp_path / "co", e)
            assert _code(co.refund, "r1", a, 5_000) == CheckoutCode.METHOD_UNAVAILABLE
            assert _code(co.refund, "r2", a, 5_000) == CheckoutCode.REQUEST_IN_PROGRESS
            co.close()
            co = Checkout(tmp_path / "co", e, methods=[InstallmentsMethod(credit, 3)])
            assert co.refund("r1", a, 5_000).replayed and credit.plan(a).refunded == 5_000
        finally:
            co.close()
            credit.close()


def test_a_body_dripped_a_byte_at_a_time_is_cut_off(live: Live, co: Checkout, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_mod, "request_s_max", 0.5)
    raw = _topup(5, "drip")
    head, _, body = raw.partition(b"\r\n\r\n")
    with live.connect(5) as s:
        s.sendall(head + b"\r\n\r\n")
        t0 = time.monotonic()
        out = b""
        for b in body:
            try:
                s.sendall(bytes([b]))
                time.sleep(0.1)
            except OSError:
                break
        s.settimeout(2)
        with contextlib.suppress(OSError):
            while chunk := s.recv(1000):
                out += chunk
        assert _statuses(out) == [408] and time.monotonic() - t0 < 3, out
    assert co.wallet("ann")["available"] == 0


@pytest.mark.parametrize("keep_alive", [True, False])
@pytest.mark.parametrize("head_only", [True, False])
def test_the_servers_refusal_bytes_are_the_middlewares(keep_alive: bool, head_only: bool) -> None:
    """The server formats a refusal in one go; the bytes must be those FlowMiddleware sends (body and
    headers), whatever the message holds (quotes, backslashes, non-ASCII hot values)."""
    from liangcao.checkout.server import _REASONS, refusal_bytes
    from liangcao.flow import FlowCode, Refused
    from liangcao.flow.asgi import refusal_body, refusal_headers

    for code, msg in [
        (FlowCode.RATE_LIMITED, "report: over 20/s; retry in 50 ms"),
        (FlowCode.HOT_PARAMETER_LIMITED, "pay: value 'sh\"op\\\\1 店' over its rate; retry in 3 ms"),
        (FlowCode.SYSTEM_OVERLOADED, "browse: 40 in flight over capacity; retry in 90000 ms"),
    ]:
        exc = Refused(code, msg, retry_after_ms=90_000 if "90000" in msg else 50, resource="pay", priority="BROWSE")
        body = refusal_body(exc)
        head = [f"HTTP/1.1 {exc.http_status} {_REASONS[exc.http_status]}".encode()]
        head += [k + b": " + v for k, v in refusal_headers(exc, len(body))]
        if not keep_alive:
            head.append(b"connection: close")
        expected = b"\r\n".join(head) + b"\r\n\r\n" + (b"" if head_only else body)
        assert refusal_bytes(exc, keep_alive, head_only) == expected
