"""Cluster mode across real processes: a token server (``python -m liangcao.flow.cluster``) and three gateway
processes (uvicorn + FlowMiddleware) share one global rate; with the server killed each falls back to its
local share, so the sum still holds."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from liangcao.flow.cluster import TokenServerCore
from liangcao.flow.rules import ResourceRule, Rules
from liangcao.procs import die_with_parent, free_ports, port_open

HERE = Path(__file__).parent
RATE = 40  # global calls/s
BURST = 20  # half a second of depth: a gateway starved of CPU for a moment loses no tokens
GATEWAYS = 3


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(HERE.parent / "src"))
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, *args], env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=die_with_parent(9)
        )


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> tuple[int, bytes]:
    """One keep-alive GET over a raw connection: a load generator light enough to outrun three gateways."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return status, head.lower()


async def _drive(ports: list[int], seconds: float, workers_per_gateway: int = 4, period_s: float = 0.01) -> list[int]:
    """Paced load on every gateway; the number of 200s each answered."""
    admitted = [0] * len(ports)
    deadline = time.monotonic() + seconds

    async def worker(i: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", ports[i])
        try:
            next_at = time.monotonic()
            while time.monotonic() < deadline:
                status, head = await _get(reader, writer, "/work")
                if status == 200:
                    admitted[i] += 1
                else:
                    assert status == 429 and b"retry-after:" in head
                next_at += period_s
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        finally:
            writer.close()

    await asyncio.gather(*(worker(i) for i in range(len(ports)) for _ in range(workers_per_gateway)))
    return admitted


def test_token_server_core_never_grants_more_than_the_global_bucket() -> None:
    t = [0.0]
    core = TokenServerCore(
        Rules(resources=[ResourceRule(name="r", rate_per_s=100, burst=20, cluster=True)]), lambda: t[0]
    )
    granted = 0
    for step in range(1000):  # 10 s, five clients asking for 7 every 10 ms
        t[0] = step * 0.01
        for _ in range(5):
            answer = core.handle({"leases": [["r", 7]]})
            granted += answer["grants"][0][1]
    assert granted == 20 + 999  # the depth, then exactly the rate
    assert core.handle({"leases": [["nope", 3]]})["grants"] == [["nope", 0, 1000]]
    assert "error" in core.handle({"leases": [["r", "x"]]})
    assert "error" in core.handle([1])


def test_token_server_reload_keeps_what_was_granted() -> None:
    t = [0.0]
    rules = Rules(resources=[ResourceRule(name="r", rate_per_s=10, burst=10, cluster=True)])
    core = TokenServerCore(rules, lambda: t[0])
    assert core.lease("r", 8) == (8, 0)
    core.load(Rules(resources=[ResourceRule(name="r", rate_per_s=100, burst=100, cluster=True)]))
    assert core.lease("r", 1000) == (92, 10)  # 8 of the new depth were already granted; next in 10 ms
    core.load(Rules(resources=[ResourceRule(name="r", rate_per_s=100)]))  # no longer a cluster resource
    assert core.lease("r", 1) == (0, 1000)


def test_three_gateway_processes_share_one_global_limit(tmp_path: Path) -> None:
    rules = {"version": 1, "resources": [{"name": "work", "rate_per_s": RATE, "burst": BURST, "cluster": True}]}
    rules_file = tmp_path / "rules.json"
    rules_file.write_text(json.dumps(rules))
    server_port, *ports = free_ports(1 + GATEWAYS)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        server_args = ["-m", "liangcao.flow.cluster", "--port", str(server_port), "--rules", str(rules_file)]
        server = _spawn(server_args, tmp_path / "server.log")
        procs.append(server)
        assert port_open(server_port, 20), "token server did not start"
        for port in ports:
            args = [str(HERE / "flow_gateway.py"), "--port", str(port), "--rules", str(rules_file)]
            args += ["--cluster-port", str(server_port), "--fallback-share", str(1 / GATEWAYS)]
            procs.append(_spawn(args, tmp_path / f"gateway-{port}.log"))
        for port in ports:
            assert port_open(port, 30), "gateway did not start"
        deadline = time.monotonic() + 10
        while not all(httpx.get(f"http://127.0.0.1:{p}/v1/flow").json()["cluster"]["live"] for p in ports):
            assert time.monotonic() < deadline, "gateways did not reach the token server"
            time.sleep(0.05)

        t0 = time.monotonic()
        admitted = asyncio.run(_drive(ports, 4.0))
        elapsed = time.monotonic() - t0
        total = sum(admitted)
        allowed = RATE * elapsed + BURST + GATEWAYS  # plus at most one idle lease per gateway
        offered = sum(
            sum(httpx.get(f"http://127.0.0.1:{p}/v1/flow").json()["resources"]["work"]["decisions"]["PAY"].values())
            for p in ports
        )
        print(f"cluster: {total} admitted of {offered} offered in {elapsed:.2f} s; limit {allowed:.0f}: {admitted}")
        assert offered > 2 * allowed, "the load must be well over the limit for the test to mean anything"
        assert total <= allowed * 1.02  # the global limit holds (2 % for the clocks of four processes)
        assert total >= 0.8 * RATE * elapsed  # and is used, not wasted in unused leases
        assert all(n > 0.1 * total / GATEWAYS for n in admitted)  # every gateway got a part
        for p in ports:
            assert httpx.get(f"http://127.0.0.1:{p}/v1/flow").json()["cluster"]["round_trips"] < 2000

        # The server dies: each gateway falls back to its local third of the rate.
        server.send_signal(signal.SIGKILL)
        server.wait(5)
        deadline = time.monotonic() + 10
        while any(httpx.get(f"http://127.0.0.1:{p}/v1/flow").json()["cluster"]["live"] for p in ports):
            assert time.monotonic() < deadline, "gateways did not notice the token server was gone"
            time.sleep(0.05)
        t0 = time.monotonic()
        admitted = asyncio.run(_drive(ports, 3.0))
        elapsed = time.monotonic() - t0
        total = sum(admitted)
        local_burst = GATEWAYS * -(-BURST // GATEWAYS)
        print(f"fallback: {total} admitted in {elapsed:.2f} s: {admitted}")
        assert total <= (RATE * elapsed + local_burst) * 1.02
        assert total >= 0.8 * RATE * elapsed
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
