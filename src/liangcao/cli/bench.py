"""``liangcao bench``: committed transactions a second and commit latency of a real node (``liangcao.bench``),
or finality across a local consortium (``--network``, ``liangcao.bench.network``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from liangcao.cli.common import AsJson, console, fail


def bench_cmd(
    txs: Annotated[int, typer.Option(min=100, max=1_000_000, help="transactions in the throughput phase")] = 30_000,
    clients: Annotated[int, typer.Option(min=1, max=16, help="concurrent HTTP submitters")] = 2,
    batch: Annotated[int, typer.Option(min=1, max=2000, help="transactions per HTTP batch")] = 500,
    latency_s: Annotated[float, typer.Option(min=1, max=120, help="length of the latency phase")] = 8.0,
    as_json: AsJson = False,
    network_home: Annotated[
        Path | None,
        typer.Option("--network", help="a consortium started with 'network up': measure finality across its orgs"),
    ] = None,
) -> None:
    """Throughput and commit latency of a real node over HTTP, next to this machine's signature rate.

    With --network DIR: transactions finalised by every organisation per second, and time to finality."""
    if network_home is not None:
        from liangcao.bench.network import run_network_bench

        try:
            result = run_network_bench(network_home, txs=txs, batch=batch, latency_s=latency_s, console=console)
        except (FileNotFoundError, RuntimeError) as exc:
            fail(str(exc))
        if as_json:
            print(json.dumps(result))
        return
    from liangcao.bench import run_bench

    run_bench(txs=txs, clients=clients, batch=batch, latency_s=latency_s, as_json=as_json, console=console)
