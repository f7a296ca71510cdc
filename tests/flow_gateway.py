"""A minimal gateway for the flow tests: FastAPI + FlowMiddleware + flow_router, optionally in cluster mode.

Run: ``python tests/flow_gateway.py --port P --rules F [--cluster-port C --fallback-share S]``.
``GET /work?ms=N`` answers after N ms (``/fail`` answers 500); ``x-priority`` names the priority and
``x-merchant`` the hot value; the resource is the first path segment.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from liangcao.flow import Gate, Priority, rules_from_json
from liangcao.flow.asgi import FlowMiddleware, flow_router
from liangcao.flow.cluster import ClusterClient


def classify(scope: MutableMapping[str, Any]) -> tuple[str, Priority, str | None] | None:
    path: str = scope["path"]
    if path.startswith("/v1/flow"):
        return None
    headers = dict(scope["headers"])
    priority = Priority[headers.get(b"x-priority", b"PAY").decode()]
    merchant = headers.get(b"x-merchant")
    return path.strip("/").split("/")[0] or "root", priority, merchant.decode() if merchant else None


def build(gate: Gate) -> FastAPI:
    app = FastAPI()
    app.include_router(flow_router(gate))

    @app.get("/work")
    async def work(ms: int = 0) -> JSONResponse:
        if ms:
            await asyncio.sleep(ms / 1000)
        return JSONResponse({"ok": True})

    @app.get("/fail")
    async def fail() -> JSONResponse:
        return JSONResponse({"ok": False}, status_code=500)

    app.add_middleware(FlowMiddleware, gate=gate, classify=classify)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rules", type=Path, required=True)
    parser.add_argument("--cluster-port", type=int, default=0)
    parser.add_argument("--fallback-share", type=float, default=1.0)
    args = parser.parse_args()
    rules = rules_from_json(args.rules.read_bytes())
    client = None
    if args.cluster_port:
        client = ClusterClient("127.0.0.1", args.cluster_port, fallback_share=args.fallback_share).start()
    try:
        uvicorn.run(build(Gate(rules, cluster=client)), host="127.0.0.1", port=args.port, log_level="warning")
    finally:
        if client is not None:
            client.close()


if __name__ == "__main__":
    main()
