"""``liangcao bench``: committed transactions per second and commit latency of a real node, over HTTP.

The node runs as its own process (``liangcao node start``), exactly as an operator runs it; this process
pre-signs transfer transactions (so signing is not measured), submits them over HTTP in batches, and
learns when each is committed from the node's server-sent block events. In the same run it measures this
machine's Ed25519 verification rate on one core, the ceiling a node with full verification works against.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from liangcao.client import Client
from liangcao.codes import Code
from liangcao.crypto import keys
from liangcao.crypto.signer import Signer, load_signer
from liangcao.ledger.tx import Tx
from liangcao.node.home import NodeHome, init_network, member_dir
from liangcao.procs import die_with_parent, free_port, peak_rss_mb

SENDERS = [f"org{o}/{m}" for o in (1, 2, 3) for m in ("alice", "bob")]


def _exit_on_signal(sig: int, _frame: Any) -> None:
    raise SystemExit(128 + sig)


def sig_verify_rate(seconds: float = 1.0) -> float:
    key = keys.generate()
    pub = key.public_key()
    msg = b"x" * 32
    sig = key.sign(msg)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(200):
            pub.verify(sig, msg)
        n += 200
    return n / (time.perf_counter() - start)


def start_node(home: Path) -> subprocess.Popen[bytes]:
    """``liangcao node start`` on ``home`` in its own process, as an operator runs it; it gets SIGTERM if
    this process dies (and its verifier workers follow it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "liangcao.cli", "node", "start", "--home", str(home)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=die_with_parent(),
    )


def wait_ready(client: Client, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    """Until the node answers its health check; RuntimeError with its stderr if it dies or never does."""
    deadline = time.time() + timeout_s
    while True:
        try:
            if client.health()["status"] == "ok":
                return
        except httpx.HTTPError:
            pass
        if time.time() > deadline or proc.poll() is not None:
            raise RuntimeError("the node did not start: " + (proc.stderr.read().decode() if proc.stderr else ""))
        time.sleep(0.1)


def submit_all(client: Client, chunks: Sequence[Sequence[Tx | bytes]]) -> None:
    """Submit every chunk over the batch endpoint, resending what a busy node turned away."""
    busy = (int(Code.MEMPOOL_FULL), int(Code.NOT_READY), int(Code.OUTCOME_UNKNOWN))
    for chunk in chunks:
        pause = 0.05
        while True:
            results = client.submit_many(chunk)
            # A full mempool (MEMPOOL_FULL) or an ordering service slow to acknowledge (NOT_READY, or
            # OUTCOME_UNKNOWN: it may hold it) is backpressure: back off and resend those (JetStream drops a
            # resent one it already has; a transaction is committed at most once). Longer pauses while nothing
            # is taken: each resend costs the node a request, and a full mempool holds seconds of work.
            retry = [t for t, r in zip(chunk, results, strict=True) if r.get("code") in busy]
            if not retry:
                break
            pause = 0.05 if len(retry) < len(chunk) else min(2 * pause, 0.8)
            chunk = retry
            time.sleep(pause)


class BlockWatcher(threading.Thread):
    """Follows the node's block events and records when each transaction was reported committed."""

    def __init__(self, client: Client, from_height: int) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.from_height = from_height
        self.committed: dict[str, float] = {}
        self.lock = threading.Lock()
        self.ready = threading.Event()

    def run(self) -> None:
        try:
            self.ready.set()
            for ev in self.client.events(self.from_height, blocks=True, contract="-none-"):
                if ev["type"] == "block":
                    now = time.perf_counter()
                    with self.lock:
                        for t in ev["tx_ids"]:
                            self.committed.setdefault(t, now)
        except (httpx.HTTPError, OSError):
            return

    def count(self, ids: list[str]) -> int:
        with self.lock:
            return sum(1 for t in ids if t in self.committed)


def presign(client: Client, signers: dict[str, Signer], n: int, progress: Progress, label: str) -> list[Tx]:
    rng = random.Random(n)
    task = progress.add_task(label, total=n)
    out = []
    for i in range(n):
        sender = SENDERS[i % len(SENDERS)]
        to = rng.choice([s for s in SENDERS if s != sender])
        out.append(client.build("demo.wallet", "transfer", {"to": to, "amount": 1}, [signers[sender]], ttl_ms=600_000))
        if i % 500 == 0:
            progress.update(task, completed=i)
    progress.update(task, completed=n)
    return out


def run_bench(
    *, txs: int, clients: int, batch: int, latency_s: float, as_json: bool, console: Console
) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    console.print(f"Measuring Ed25519 verification on one core of this {cores}-core machine…")
    sig_rate = sig_verify_rate()
    tmp = Path(tempfile.mkdtemp(prefix="liangcao-bench-"))
    # SIGTERM (or SIGHUP) ends the bench like Ctrl-C: the node is stopped and the folder removed (below).
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _exit_on_signal)
    try:
        init_network(tmp, 3, port=free_port(7900), block_txs_max=2000, block_wait_ms=10)
        home = NodeHome.open(tmp)
        proc = start_node(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        token = home.auth().create("org1/admin", 1)
        client = Client(home.url, token, timeout_s=120)
        wait_ready(client, proc)
        signers = {m: load_signer(member_dir(tmp, m)) for m in SENDERS}
        for m in SENDERS:  # fund every sender
            org = m.split("/")[0]
            client.call(
                "demo.wallet", "mint", {"to": m, "amount": 10**12}, [load_signer(member_dir(tmp, f"{org}/admin"))]
            )
        rate_txs_max = txs
        with Progress(console=console, transient=True) as progress:
            load = presign(client, signers, txs, progress, "signing the throughput load")
            start_height = int(client.head()["header"]["height"]) + 1
            watcher = BlockWatcher(Client(home.url, token, timeout_s=120), start_height)
            watcher.start()
            watcher.ready.wait()
            time.sleep(0.3)
            ids = [t.tx_id for t in load]
            chunks = [load[i : i + batch] for i in range(0, len(load), batch)]
            task = progress.add_task(f"throughput: {txs} transfers over HTTP", total=txs)

            def submitter(k: int) -> None:
                with Client(home.url, token, chain_id=client.chain_id, timeout_s=120) as c:
                    submit_all(c, chunks[k::clients])

            t0 = time.perf_counter()
            threads = [threading.Thread(target=submitter, args=(k,)) for k in range(clients)]
            for th in threads:
                th.start()
            while (done := watcher.count(ids)) < txs:
                progress.update(task, completed=done)
                if proc.poll() is not None:
                    raise RuntimeError("the node died during the run")
                time.sleep(0.05)
            for th in threads:
                th.join()
            t_last = max(watcher.committed[t] for t in ids)
            tps = txs / (t_last - t0)
            # Latency at half that rate: small batches every 20 ms, open loop.
            rate = tps / 2
            n_lat = min(int(rate * latency_s), rate_txs_max)
            lat_load = presign(client, signers, n_lat, progress, "signing the latency load")
            task2 = progress.add_task(f"latency: {rate:.0f} tx/s for {latency_s:.0f} s", total=n_lat)
            sent: dict[str, float] = {}
            per_tick = max(1, round(rate * 0.02))
            with Client(home.url, token, chain_id=client.chain_id, timeout_s=120) as c:
                t1 = time.perf_counter()
                for i in range(0, n_lat, per_tick):
                    chunk = lat_load[i : i + per_tick]
                    target = t1 + (i / rate)
                    pause = target - time.perf_counter()
                    if pause > 0:
                        time.sleep(pause)
                    now = time.perf_counter()
                    for t in chunk:
                        sent[t.tx_id] = now
                    c.submit_many(chunk)
                    progress.update(task2, completed=i)
            lat_ids = list(sent)
            wait_until = time.perf_counter() + 30
            while watcher.count(lat_ids) < len(lat_ids) and time.perf_counter() < wait_until:
                time.sleep(0.05)
        lat = sorted((watcher.committed[t] - sent[t]) * 1000 for t in lat_ids if t in watcher.committed)
        lost = len(lat_ids) - len(lat)
        p50 = lat[len(lat) // 2] if lat else float("nan")
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
        node_rss = peak_rss_mb(proc.pid)
    finally:
        if threading.current_thread() is threading.main_thread():  # a second signal must not cut this short
            for sig in (signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)
        try:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()  # its verifier workers notice and exit (liangcao.node.verify)
                proc.wait(10)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    client_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "via": "HTTP (batch endpoint, node in its own process)",
        "cores": cores,
        "txs": txs,
        "tps": round(tps, 1),
        "latency_rate_tps": round(rate, 1),
        "p50_ms": round(p50, 1),
        "p99_ms": round(p99, 1),
        "not_committed": lost,
        "sig_verify_per_s": round(sig_rate, 1),
        "tps_to_sig_verify_ratio": round(tps / sig_rate, 3),
        "node_peak_rss_mb": round(node_rss, 1),
        "client_peak_rss_mb": round(client_rss, 1),
    }
    table = Table(title=f"liangcao bench: one node, {cores} cores, {result['via']}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for k, v in result.items():
        table.add_row(k, str(v))
    console.print(table)
    if as_json:
        print(json.dumps(result))
    return result
