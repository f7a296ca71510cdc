"""liangcao.flow under attack: rules at the edges of their bounds, a clock that jumps back, a flood of hot
values, a probe that never answers, requests cancelled mid-flight, and a token server fed garbage, a huge
frame or a client that never reads. Each attack must leave the gate's limits and counts exact."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from typing import Any

import pytest

from liangcao.flow import FlowCode, FlowError, Gate, Priority, Refused, cluster
from liangcao.flow.asgi import FlowMiddleware
from liangcao.flow.cluster import ClusterClient, TokenServerCore, line_bytes_max, serve
from liangcao.flow.rules import Rules, rules_from_dict, rules_to_json


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def admitted(gate: Gate, resource: str, n: int, priority: Priority = Priority.PAY, hot: str | None = None) -> int:
    got = 0
    for _ in range(n):
        try:
            gate.enter(resource, priority, hot).exit()
            got += 1
        except Refused:
            pass
    return got


@pytest.mark.parametrize(
    "doc",
    [
        {"resources": [{"name": "a", "rate_per_s": 5e-324}]},  # 1/rate is infinite
        {"resources": [{"name": "a", "rate_per_s": 1e-300, "warmup_s": 3600, "cold_factor": 100}]},
        {"resources": [{"name": "a", "rate_per_s": 5e-324, "warmup_s": 10}]},
        {"resources": [{"name": "a", "hot": {"rate_per_s": 1e-300, "overrides": {"m": 1e9}}}]},
        {"resources": [{"name": "a", "hot": {"rate_per_s": 5e-324}}]},
        {"resources": [{"name": "a", "breaker": {"window_s": 5e-324}}]},  # window // 0 at every call
        {"system": {"window_s": 5e-324, "rt_ms_max": 5}},
        {"system": {"window_s": 0.01, "buckets": 600}},
        {"resources": [{"name": "a", "adaptive": {"window_s": 1e-9}}]},
    ],
)
def test_rates_too_small_to_compute_are_refused_and_a_reload_changes_nothing(doc: dict[str, Any]) -> None:
    clock = Clock()
    good = rules_from_dict({"version": 1, "resources": [{"name": "a", "rate_per_s": 10, "burst": 10}]})
    gate = Gate(good, clock=clock)
    assert admitted(gate, "a", 5) == 5
    with pytest.raises(FlowError) as exc:
        gate.reload(rules_from_dict(doc))
    assert exc.value.code == FlowCode.BAD_RULES
    assert rules_to_json(gate.rules) == rules_to_json(good) and gate.reloads == 0
    assert admitted(gate, "a", 10) == 5  # the same bucket, its 5 tokens used still missing
    clock.t += 1.0  # and no hot value or call can crash the gate at run time
    gate.enter("a", Priority.PAY, "m").exit()


def test_hot_override_depth_stays_within_burst_max() -> None:
    gate = Gate(rules_from_dict({"resources": [{"name": "a", "hot": {"rate_per_s": 1e-3, "overrides": {"m": 1e9}}}]}))
    gate.enter("a", Priority.PAY, "m").exit()
    assert gate.status()["resources"]["a"]["hot"]["hottest"]["m"] <= 10_000_000


def test_a_clock_jumping_back_neither_refuses_everything_nor_grants_a_second_burst() -> None:
    clock = Clock()
    gate = Gate(rules_from_dict({"resources": [{"name": "a", "rate_per_s": 10, "burst": 10}]}), clock=clock)
    assert admitted(gate, "a", 20) == 10
    clock.t -= 3600.0  # an hour back (an injected wall clock, a VM restored from a snapshot)
    assert admitted(gate, "a", 20) == 0  # no fresh burst out of nowhere
    clock.t += 0.5  # half a second later: half a second of refill, not an hour's wait
    assert admitted(gate, "a", 20) == 5
    clock.t += 1.0
    assert admitted(gate, "a", 20) == 10


def test_a_flood_of_unique_hot_values_stays_within_hot_values_max() -> None:
    rules = {"resources": [{"name": "a", "hot": {"rate_per_s": 1, "burst": 1, "hot_values_max": 100}}]}
    gate = Gate(rules_from_dict(rules))
    for i in range(5_000):
        gate.enter("a", Priority.PAY, f"m{i}" + "x" * 10_000).exit()  # long values are cut to a bounded key
    hot = gate.status()["resources"]["a"]["hot"]
    assert hot["values"] == 100 and hot["evicted"] == 4_900
    assert max(len(k) for k in gate._resources["a"].hot.buckets) <= 256  # type: ignore[union-attr]


def test_a_probe_that_never_answers_does_not_hold_the_breaker_half_open_for_ever() -> None:
    clock = Clock()
    rules = {
        "resources": [
            {
                "name": "a",
                "breaker": {"calls_min": 2, "error_ratio_max": 0.5, "open_s": 1.0, "slow_ms": 200, "probes": 1},
            }
        ]
    }
    gate = Gate(rules_from_dict(rules), clock=clock)
    for _ in range(2):
        gate.enter("a", Priority.PAY).exit(ok=False)
    with pytest.raises(Refused):
        gate.enter("a", Priority.PAY)
    clock.t += 1.0
    hung = gate.enter("a", Priority.PAY)  # the probe: its backend hangs and it never returns
    assert hung is not None
    with pytest.raises(Refused):
        gate.enter("a", Priority.PAY)
    # a probe slower than slow_ms has failed whatever it answers later: the breaker opens again, and after
    # open_s a new probe is let through (and closes it)
    clock.t += 0.3
    with pytest.raises(Refused):
        gate.enter("a", Priority.PAY)
    clock.t += 1.0
    gate.enter("a", Priority.PAY).exit()
    assert gate.status()["resources"]["a"]["breaker"]["state"] == "closed"
    hung.exit()  # the late answer of the old probe changes nothing
    assert gate.status()["resources"]["a"]["breaker"]["state"] == "closed"
    assert gate.inflight == 0


def test_browsing_cannot_starve_paying_of_concurrency() -> None:
    gate = Gate(rules_from_dict({"resources": [{"name": "a", "concurrency_max": 10}]}))
    browsing = []
    with pytest.raises(Refused):
        for _ in range(100):
            browsing.append(gate.enter("a", Priority.BROWSE))
    assert len(browsing) == 5
    paying = [gate.enter("a", Priority.PAY) for _ in range(5)]
    for t in browsing + paying:
        t.exit()
    assert gate.inflight == 0


def test_cancelled_and_failing_requests_give_their_slot_back() -> None:
    gate = Gate(rules_from_dict({"resources": [{"name": "a", "concurrency_max": 2}]}))
    started = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/boom":
            raise RuntimeError("boom")
        if scope["path"] == "/hang":
            started.set()
            await asyncio.sleep(3600)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    mw = FlowMiddleware(app, gate, lambda scope: ("a", Priority.PAY, None))
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.disconnect"}

    async def main() -> None:
        for _ in range(3):
            with pytest.raises(RuntimeError):
                await mw({"type": "http", "path": "/boom"}, receive, send)
        task = asyncio.create_task(mw({"type": "http", "path": "/hang"}, receive, send))
        await started.wait()
        assert gate.inflight == 1
        task.cancel()  # the client went away: the server cancels the request
        with pytest.raises(asyncio.CancelledError):
            await task
        await mw({"type": "http", "path": "/ok"}, receive, send)

    asyncio.run(main())
    assert gate.inflight == 0
    exits = gate.status()["resources"]["a"]["exits"]
    assert exits == {"ok": 1, "error": 4}


class Server:
    """A real token server (asyncio, TCP on 127.0.0.1) in a thread."""

    def __init__(self, rules: Rules) -> None:
        self.core = TokenServerCore(rules)
        self.port = 0
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)

            def up(port: int) -> None:
                self.port = port
                ready.set()

            self.task = self.loop.create_task(serve(self.core, "127.0.0.1", 0, up))
            with contextlib.suppress(asyncio.CancelledError):
                self.loop.run_until_complete(self.task)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(5)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(5)
        self.loop.close()

    def ask(self, payload: bytes, sock: socket.socket | None = None) -> Any:
        own = sock is None
        s = sock or socket.create_connection(("127.0.0.1", self.port), timeout=5)
        try:
            s.sendall(payload)
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    return None
                data += chunk
            return json.loads(data)
        finally:
            if own:
                s.close()


def test_token_server_survives_garbage_huge_frames_and_clients_that_never_read() -> None:
    rules = rules_from_dict({"resources": [{"name": "pay", "rate_per_s": 100, "burst": 100, "cluster": True}]})
    t0 = time.monotonic()
    srv = Server(rules)
    idle: list[socket.socket] = []
    try:
        for garbage in (
            b"not json\n",
            b"\xff\xfe\n",
            b"[1, 2]\n",
            b'{"leases": [["pay", -5], ["pay", 1.5], ["nope", 3]]}\n',
            b'{"leases": [["pay", 99999999999999999999999]]}\n',
            b'{"leases": "x"}\n',
            b"[" * 50_000 + b"\n",  # nesting deep enough to exhaust a recursive parser
        ):
            answer = srv.ask(garbage)  # every one answered on its connection, which stays usable
            assert "error" in answer or "grants" in answer, (garbage[:20], answer)
        # a frame over line_bytes_max closes that connection only
        assert srv.ask(b"x" * (line_bytes_max + 10) + b"\n") is None
        # clients that connect and never read (their answers pile up) or never send
        for _ in range(8):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            s.sendall(b'{"status": true}\n' * 2000)
            idle.append(s)
        answer = srv.ask(b'{"leases": [["pay", 10]]}\n')
        assert answer["grants"][0][:2] == ["pay", 10]
        # the negative and huge asks granted nothing beyond the bucket: its depth and what it refilled
        assert sum(srv.core.granted.values()) <= 100 + 100 * (time.monotonic() - t0) + 1
    finally:
        for s in idle:
            s.close()
        srv.close()


def test_silent_connections_cannot_lock_gateways_out_of_the_token_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every slot taken by sockets that connect and say nothing (or stopped reading): a gateway still gets in
    (the idlest is closed for it), and a gateway whose idle connection was closed reconnects at once
    instead of falling back."""
    monkeypatch.setattr(cluster, "clients_max", 8)
    monkeypatch.setattr(cluster, "idle_evict_s", 0.2)
    rules = rules_from_dict({"resources": [{"name": "pay", "rate_per_s": 1000, "burst": 100, "cluster": True}]})
    srv = Server(rules)
    silent = [socket.create_connection(("127.0.0.1", srv.port), timeout=5) for _ in range(8)]
    client = ClusterClient("127.0.0.1", srv.port, fallback_share=0.5, refill_s=0.01, lease_ttl_s=5.0)
    client.configure(rules.resources)
    try:
        time.sleep(0.3)  # the silent ones are now idle for longer than idle_evict_s
        client.start()
        deadline = time.monotonic() + 5
        while not client.live:
            assert time.monotonic() < deadline, f"the gateway never reached the server: {client.status()}"
            time.sleep(0.01)
        assert client.failures == 0
        # the server closes the gateway's connection as the idlest (it holds long leases, so it is quiet)
        time.sleep(0.3)
        for s in silent:
            s.close()
        silent = [socket.create_connection(("127.0.0.1", srv.port), timeout=5) for _ in range(8)]
        time.sleep(0.3)
        before = client.round_trips
        client._pools["pay"].batches.clear()  # its leases gone: it must ask again on a closed connection
        client._pools["pay"].tokens = 0
        client._kick.set()
        deadline = time.monotonic() + 5
        while client.round_trips == before:
            assert time.monotonic() < deadline, client.status()
            time.sleep(0.01)
        assert client.failures == 0 and client.live
    finally:
        client.close()
        for s in silent:
            s.close()
        srv.close()


def test_a_rules_upload_without_a_length_is_cut_at_rules_bytes_max() -> None:
    """``PUT /v1/flow/rules`` sent chunked (no Content-Length): the body is read only up to rules_bytes_max."""
    from fastapi import FastAPI

    from liangcao.flow.asgi import flow_router
    from liangcao.flow.rules import rules_bytes_max

    gate = Gate(rules_from_dict({"version": 3, "resources": [{"name": "a", "rate_per_s": 10}]}))
    app = FastAPI()
    app.include_router(flow_router(gate))
    sent = 0
    status: list[int] = []
    out = bytearray()

    async def receive() -> Any:
        nonlocal sent
        if sent >= 4 * rules_bytes_max:
            return {"type": "http.request", "body": b"", "more_body": False}
        sent += 65536
        return {"type": "http.request", "body": b" " * 65536, "more_body": True}

    async def send(message: Any) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])
        else:
            out.extend(message.get("body", b""))

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "PUT",
        "path": "/v1/flow/rules",
        "raw_path": b"/v1/flow/rules",
        "query_string": b"",
        "headers": [(b"transfer-encoding", b"chunked")],
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 5000),
        "scheme": "http",
        "root_path": "",
    }
    asyncio.run(app(scope, receive, send))
    assert status == [413] and json.loads(out)["name"] == "BAD_RULES"
    assert sent <= rules_bytes_max + 2 * 65536  # it stopped reading
    assert gate.rules.version == 3 and gate.reloads == 0
