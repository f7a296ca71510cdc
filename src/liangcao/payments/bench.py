"""``liangcao pay bench``: one transfer workload on the embedded engine and on PostgreSQL, against pgbench.

The workload is checkout-shaped: customers (accounts that may not overdraw) pay a few hot merchants half the
time and each other the rest, amounts 1..10,000 fen, in batches. Every batch is acknowledged only once
durable (the engine's fsync, PostgreSQL's COMMIT). Batches and their ids are made before the clock starts.
The baseline is pgbench's built-in TPC-B-like script on the same PostgreSQL server, run at two client
counts; the higher rate is the one compared against, so the ratio is the conservative one.

The embedded engine runs with the service's snapshot cadence (``engine.SNAPSHOT_LOG_BYTES`` of log between
snapshots, as ``liangcao pay start``), so its latencies include the batches applied while a snapshot is
being written; they are also reported on their own. Its time is broken down per transfer: encoding,
decoding and width checks, the state machine, the log's write and its fdatasync, and the rest (hand-offs
between the caller and the committer). A second run keeps several batches in flight, as concurrent
clients of the service do, so that the next batch is applied while the previous one is fsynced.
"""

from __future__ import annotations

import gc
import os
import random
import re
import resource
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from liangcao.payments.engine import SNAPSHOT_LOG_BYTES, Engine
from liangcao.payments.types import Account, AccountFlags, Transfer
from liangcao.procs import peak_rss_mb

LEDGER = 156  # CNY
HOT_MERCHANTS = 8
FUNDING = 1
MERCHANT_BASE = 10
CUSTOMER_BASE = 1_000


@dataclass
class BenchConfig:
    transfers: int = 2_000_000
    pg_transfers: int = 100_000
    accounts: int = 100_000
    batch: int = 2048
    pgbench_seconds: int = 15
    postgres: str | None = None
    seed: int = 11
    pipelined_transfers: int = 1_000_000
    in_flight: int = 4
    snapshot_log_bytes: int = SNAPSHOT_LOG_BYTES


def accounts_for(cfg: BenchConfig) -> list[Account]:
    out = [Account(FUNDING, ledger=LEDGER, code=1)]
    out += [Account(MERCHANT_BASE + m, ledger=LEDGER, code=2) for m in range(HOT_MERCHANTS)]
    limited = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
    out += [Account(CUSTOMER_BASE + c, ledger=LEDGER, code=3, flags=limited) for c in range(cfg.accounts)]
    return out


def funding_for(cfg: BenchConfig, id_base: int) -> list[Transfer]:
    return [
        Transfer(id_base + c, FUNDING, CUSTOMER_BASE + c, 10**10, ledger=LEDGER, code=1) for c in range(cfg.accounts)
    ]


def workload(cfg: BenchConfig, n: int, id_base: int) -> list[list[Transfer]]:
    rng = random.Random(cfg.seed)
    customers = cfg.accounts
    batches: list[list[Transfer]] = []
    batch: list[Transfer] = []
    for k in range(n):
        dr = CUSTOMER_BASE + rng.randrange(customers)
        if rng.random() < 0.5:
            cr = MERCHANT_BASE + rng.randrange(HOT_MERCHANTS)
        else:
            cr = CUSTOMER_BASE + rng.randrange(customers)
            if cr == dr:
                cr = MERCHANT_BASE
        t = Transfer(id_base + k, dr, cr, rng.randint(1, 10_000), ledger=LEDGER, code=2, user_data_64=k)
        batch.append(t)
        if len(batch) == cfg.batch:
            batches.append(batch)
            batch = []
    if batch:
        batches.append(batch)
    return batches


def _in_batches(items: list[Any], size: int) -> list[list[Any]]:
    return [items[k : k + size] for k in range(0, len(items), size)]


def _percentile(sorted_ms: list[float], p: float) -> float:
    if not sorted_ms:
        return 0.0
    return sorted_ms[min(len(sorted_ms) - 1, int(len(sorted_ms) * p))]


def _measure(create: Any, batches: list[list[Transfer]], engine: Engine | None = None) -> dict[str, Any]:
    latencies: list[float] = []
    during_snapshot: list[float] = []
    gc.collect()
    gc.freeze()  # millions of long-lived objects: keep the cyclic collector from rescanning them mid-run
    start = time.perf_counter()
    for b in batches:
        snapshotting = engine is not None and engine.snapshot_running
        t0 = time.perf_counter()
        results = create(b)
        ms = (time.perf_counter() - t0) * 1000
        latencies.append(ms)
        if snapshotting or (engine is not None and engine.snapshot_running):
            during_snapshot.append(ms)
        if any(results):
            raise RuntimeError(f"benchmark transfer refused: code {next(c for c in results if c)}")
    elapsed = time.perf_counter() - start
    gc.unfreeze()
    n = sum(len(b) for b in batches)
    latencies.sort()
    during_snapshot.sort()
    return {
        "transfers": n,
        "seconds": round(elapsed, 3),
        "tps": round(n / elapsed, 1),
        "p50_batch_ms": round(_percentile(latencies, 0.50), 2),
        "p99_batch_ms": round(_percentile(latencies, 0.99), 2),
        "max_batch_ms": round(latencies[-1], 2),
        "batches_during_snapshots": len(during_snapshot),
        "p99_batch_during_snapshots_ms": round(_percentile(during_snapshot, 0.99), 2),
    }


def _ready_engine(cfg: BenchConfig, path: Path) -> Engine:
    e = Engine(path, snapshot_log_bytes=cfg.snapshot_log_bytes)
    for chunk in _in_batches(accounts_for(cfg), 8190):
        e.create_accounts(chunk)
    for chunk in _in_batches(funding_for(cfg, 10**9), 8190):
        e.create_transfers(chunk)
    return e


def bench_embedded(cfg: BenchConfig, root: Path) -> dict[str, Any]:
    """One batch at a time, each waited for until durable: batch latency, and where the time goes."""
    batches = workload(cfg, cfg.transfers, 10**12)
    with _ready_engine(cfg, root / "engine") as e:
        before = e.stats()
        out = _measure(e.create_transfers, batches, e)
        e.flush()
        after = e.stats()
        out["wal_mib"] = round((after["log_bytes"] - before["log_bytes"]) / 2**20, 1)
        out["snapshots"] = int(after["snapshots"] - before["snapshots"])
        n = out["transfers"]
        us = {k: (after[f"{k}_s"] - before[f"{k}_s"]) / n * 1e6 for k in ("prepare", "apply", "write", "fsync")}
        us["other"] = out["seconds"] / n * 1e6 - sum(us.values())
        out["us_per_transfer"] = {k: round(v, 2) for k, v in us.items()}
        out["fsyncs"] = int(after["syncs"] - before["syncs"])
    out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    # The snapshot writer is a forked child: its pages are the parent's until either side writes them.
    out["snapshot_child_peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
    return out


def bench_embedded_pipelined(cfg: BenchConfig, root: Path) -> dict[str, Any]:
    """Several batches in flight (concurrent clients): the next batch is applied while one is fsynced."""
    batches = workload(cfg, cfg.pipelined_transfers, 10**13)
    with _ready_engine(cfg, root / "engine-pipelined") as e:
        gc.collect()
        gc.freeze()
        inflight: list[Any] = []
        start = time.perf_counter()
        for b in batches:
            inflight.append(e.submit_transfers(b))
            if len(inflight) >= cfg.in_flight and any(inflight.pop(0).result()):
                raise RuntimeError("benchmark transfer refused")
        for f in inflight:
            if any(f.result()):
                raise RuntimeError("benchmark transfer refused")
        elapsed = time.perf_counter() - start
        gc.unfreeze()
        snapshots = e.stats()["snapshots"]
    n = sum(len(b) for b in batches)
    return {"transfers": n, "tps": round(n / elapsed, 1), "in_flight": cfg.in_flight, "snapshots": snapshots}


def bench_postgres(cfg: BenchConfig, dsn: str, server_pid: int | None) -> dict[str, float]:
    from liangcao.payments.postgres import PostgresBackend

    batches = workload(cfg, cfg.pg_transfers, 10**12)
    with PostgresBackend(dsn) as pg:
        pg.reset()
        for chunk in _in_batches(accounts_for(cfg), 8190):
            pg.create_accounts(chunk)
        for chunk in _in_batches(funding_for(cfg, 10**9), 8190):
            pg.create_transfers(chunk)
        pg.conn.execute("ANALYZE")
        pg.conn.commit()
        out = _measure(pg.create_transfers, batches)
        # While the backend's connection process still lives: the server and its children, peak RSS.
        out["peak_rss_mib"] = round(peak_rss_mb(server_pid), 1) if server_pid else 0.0
        return out


def run_pgbench(dsn_parts: dict[str, str], clients: int, seconds: int) -> float:
    args = ["-h", dsn_parts["host"], "-p", dsn_parts["port"], "-U", dsn_parts["user"]]
    threads = min(clients, os.cpu_count() or 1)
    proc = subprocess.run(
        ["pgbench", *args, "-c", str(clients), "-j", str(threads), "-T", str(seconds), dsn_parts["dbname"]],
        capture_output=True,
        text=True,
        check=True,
    )
    m = re.search(r"tps = ([0-9.]+)", proc.stdout)
    if not m:
        raise RuntimeError(f"pgbench printed no tps: {proc.stdout[-500:]}")
    return float(m.group(1))


def run_bench(cfg: BenchConfig, console: Console) -> dict[str, Any]:
    from liangcao.payments.pgserver import PgServer

    cores = os.cpu_count() or 1
    root = Path(tempfile.mkdtemp(prefix="liangcao-paybench-", dir=os.environ.get("LIANGCAO_BENCH_DIR")))
    server = None
    try:
        if cfg.postgres:
            dsn = cfg.postgres
        else:
            server = PgServer().start()
            dsn = server.dsn
        parts = dict(kv.split("=", 1) for kv in dsn.split())
        console.print(f"[bold]embedded engine[/]: {cfg.transfers:,} transfers in batches of {cfg.batch} ...")
        embedded = bench_embedded(cfg, root)
        gc.collect()
        pipelined: dict[str, Any] = {"tps": 0.0, "in_flight": cfg.in_flight, "transfers": 0}
        if cfg.pipelined_transfers:
            console.print(
                f"[bold]embedded engine, {cfg.in_flight} batches in flight[/]: {cfg.pipelined_transfers:,} transfers ..."
            )
            pipelined = bench_embedded_pipelined(cfg, root)
            gc.collect()
        console.print(f"[bold]PostgreSQL backend[/]: {cfg.pg_transfers:,} transfers ...")
        postgres = bench_postgres(cfg, dsn, server.pid() if server is not None else None)
        console.print(
            f"[bold]pgbench[/] TPC-B-like, scale 10, {cfg.pgbench_seconds}s at {cores} and {4 * cores} clients ..."
        )
        base = ["-h", parts["host"], "-p", parts["port"], "-U", parts["user"]]
        subprocess.run(["pgbench", *base, "-i", "-q", "-s", "10", parts["dbname"]], capture_output=True, check=True)
        pgbench_runs = {c: run_pgbench(parts, c, cfg.pgbench_seconds) for c in (cores, 4 * cores)}
        pgbench_tps = max(pgbench_runs.values())
        pg_rss = postgres["peak_rss_mib"]
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)

    table = Table("backend", "transfers/s", "p50 batch ms", "p99 batch ms", "vs pgbench")
    table.add_row(
        "embedded engine",
        f"{embedded['tps']:,.0f}",
        f"{embedded['p50_batch_ms']}",
        f"{embedded['p99_batch_ms']}",
        f"{embedded['tps'] / pgbench_tps:.1f}x",
    )
    table.add_row(
        f"embedded, {cfg.in_flight} in flight",
        f"{pipelined['tps']:,.0f}",
        "",
        "",
        f"{pipelined['tps'] / pgbench_tps:.1f}x",
    )
    table.add_row(
        "PostgreSQL backend",
        f"{postgres['tps']:,.0f}",
        f"{postgres['p50_batch_ms']}",
        f"{postgres['p99_batch_ms']}",
        f"{postgres['tps'] / pgbench_tps:.2f}x",
    )
    runs = ", ".join(f"{c} clients {tps:,.0f}" for c, tps in pgbench_runs.items())
    table.add_row("pgbench TPC-B-like", f"{pgbench_tps:,.0f}", "", "", f"1x ({runs})")
    console.print(table)
    console.print(
        f"{cores} cores; peak RSS: bench process with the embedded engine {embedded['peak_rss_mib']} MiB "
        f"(its snapshot writer {embedded['snapshot_child_peak_rss_mib']} MiB), "
        f"PostgreSQL server {pg_rss:.0f} MiB; batch {cfg.batch}, {cfg.accounts:,} customers, {HOT_MERCHANTS} hot merchants"
    )
    spent = ", ".join(f"{k} {v} µs" for k, v in embedded["us_per_transfer"].items())
    console.print(
        f"embedded, per transfer: {spent}; {embedded['snapshots']} snapshot(s) during the run "
        f"(every {cfg.snapshot_log_bytes // 2**20} MiB of log), p99 of the {embedded['batches_during_snapshots']} "
        f"batches applied while one was written: {embedded['p99_batch_during_snapshots_ms']} ms"
    )
    return {
        "embedded_tps": embedded["tps"],
        "postgres_tps": postgres["tps"],
        "pgbench_tps": round(pgbench_tps, 1),
        "ratio_embedded_to_pgbench": round(embedded["tps"] / pgbench_tps, 2),
        "ratio_postgres_to_pgbench": round(postgres["tps"] / pgbench_tps, 3),
        "p99_batch_ms": embedded["p99_batch_ms"],
        "p50_batch_ms": embedded["p50_batch_ms"],
        "postgres_p99_batch_ms": postgres["p99_batch_ms"],
        "pgbench_runs": {str(c): round(t, 1) for c, t in pgbench_runs.items()},
        "batch": cfg.batch,
        "transfers": embedded["transfers"],
        "pg_transfers": postgres["transfers"],
        "cores": cores,
        "embedded_peak_rss_mib": embedded["peak_rss_mib"],
        "snapshot_child_peak_rss_mib": embedded["snapshot_child_peak_rss_mib"],
        "postgres_peak_rss_mib": round(pg_rss, 1),
        "wal_mib": embedded["wal_mib"],
        "max_batch_ms": embedded["max_batch_ms"],
        "snapshots": embedded["snapshots"],
        "snapshot_log_mib": cfg.snapshot_log_bytes // 2**20,
        "batches_during_snapshots": embedded["batches_during_snapshots"],
        "p99_batch_during_snapshots_ms": embedded["p99_batch_during_snapshots_ms"],
        "us_per_transfer": embedded["us_per_transfer"],
        "fsyncs": embedded["fsyncs"],
        "embedded_pipelined_tps": pipelined["tps"],
        "in_flight": pipelined["in_flight"],
        "pipelined_transfers": pipelined["transfers"],
    }
