"""Flow control: what a decision costs in the gate, and how fast a refused HTTP request is answered.

Run: ``.venv/bin/python bench/flow_gate.py [--json]``. Prints the machine's core count and peak RSS; with
``--json`` the last line is one JSON object: ``enter_exit_us`` (an admitted call through every check),
``refuse_us`` (a refused one), ``http_refused_p50_ms`` / ``http_refused_p99_ms`` (a refused request over
loopback HTTP, client to answer, against a uvicorn gateway in its own process), ``http_admitted_p50_ms``
(the same route admitted, for comparison), ``cores``, ``peak_rss_mb``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

from liangcao.flow import AdaptiveRule, BreakerRule, Gate, HotRule, Priority, Refused, ResourceRule, Rules, SystemRule


def _rules(rate: float) -> Rules:
    return Rules(
        resources=[
            ResourceRule(
                name="pay",
                rate_per_s=rate,
                burst=10,
                warmup_s=1.0,
                concurrency_max=1000,
                adaptive=AdaptiveRule(limit_max=1000),
                hot=HotRule(rate_per_s=1e9, hot_values_max=1000),
                breaker=BreakerRule(),
            )
        ],
        system=SystemRule(bbr=True, inflight_max=10_000),
    )


def gate_costs(n: int) -> tuple[float, float]:
    gate = Gate(_rules(1e9))
    t0 = time.perf_counter()
    for i in range(n):
        gate.enter("pay", Priority.PAY, hot=f"m{i % 100}").exit()
    admitted_us = (time.perf_counter() - t0) / n * 1e6
    tight = Gate(_rules(0.001))
    for _ in range(20):
        with contextlib.suppress(Refused):
            tight.enter("pay", Priority.PAY).exit()
    t0 = time.perf_counter()
    for _ in range(n):
        with contextlib.suppress(Refused):
            tight.enter("pay", Priority.PAY)
    refused_us = (time.perf_counter() - t0) / n * 1e6
    return admitted_us, refused_us


def serve(port: int) -> None:
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    from liangcao.flow.asgi import FlowMiddleware, by_route, flow_router

    gate = Gate(Rules(resources=[ResourceRule(name="limited", rate_per_s=0.001, burst=1), ResourceRule(name="open")]))
    app = FastAPI()
    app.include_router(flow_router(gate))

    @app.get("/limited")
    @app.get("/open")
    async def work() -> JSONResponse:
        await asyncio.sleep(0.05)  # the work a refusal saves
        return JSONResponse({"ok": True})

    classify = by_route([("*", "/limited", "limited", Priority.BROWSE), ("*", "/open", "open", Priority.BROWSE)])
    app.add_middleware(FlowMiddleware, gate=gate, classify=classify)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def http_latencies(n: int) -> dict[str, float]:
    import httpx

    from liangcao.procs import die_with_parent, free_port, port_open

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port)], preexec_fn=die_with_parent(9), stdout=subprocess.DEVNULL
    )
    try:
        if not port_open(port, 30):
            raise RuntimeError("gateway did not start")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            http.get("/limited")  # the one token
            refused, admitted = [], []
            for _ in range(n):
                t0 = time.perf_counter()
                r = http.get("/limited")
                refused.append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 429 and "retry-after" in r.headers
            for _ in range(max(10, n // 20)):
                t0 = time.perf_counter()
                assert http.get("/open").status_code == 200
                admitted.append((time.perf_counter() - t0) * 1000)
        refused.sort()
        admitted.sort()
        return {
            "http_refused_p50_ms": round(refused[len(refused) // 2], 3),
            "http_refused_p99_ms": round(refused[int(len(refused) * 0.99)], 3),
            "http_admitted_p50_ms": round(admitted[len(admitted) // 2], 3),
        }
    finally:
        proc.kill()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--serve", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    admitted_us, refused_us = gate_costs(args.calls)
    out: dict[str, Any] = {"enter_exit_us": round(admitted_us, 2), "refuse_us": round(refused_us, 2)}
    out.update(http_latencies(args.requests))
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out.update({"cores": os.cpu_count(), "peak_rss_mb": round(rss_kb / 1024, 1)})
    print(f"flow gate on {out['cores']} cores (peak RSS {out['peak_rss_mb']} MiB, this process and the gateway)")
    print(f"  admitted call, every check:  {out['enter_exit_us']:8.2f} us (enter + exit)")
    print(f"  refused call:                {out['refuse_us']:8.2f} us")
    print(
        f"  refused over HTTP:           {out['http_refused_p50_ms']:8.3f} ms p50, {out['http_refused_p99_ms']:.3f} ms p99"
    )
    print(f"  admitted over HTTP (50 ms):  {out['http_admitted_p50_ms']:8.3f} ms p50")
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
