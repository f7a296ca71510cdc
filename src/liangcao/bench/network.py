"""``liangcao bench --network DIR``: finalised throughput and time to finality of a running consortium.

Against a consortium started with ``liangcao network up``: pre-signs ``demo.wallet`` transfers, submits them
over HTTP to every organisation's node in turn (batch endpoint), follows org1's node's block events for
the height of each transaction, and polls its attestations: a block is *finalised by all* when every
organisation of the consortium has attested it there (an attestation reaches org1's node only after that
organisation's peer committed and executed the block itself). Throughput is transactions finalised per
second; then an open-loop phase at half that rate measures the time from submission to finality.

Where the time goes: over the throughput phase it reads the CPU time of every node and nats-server process
and its own (``/proc``), per transaction, and how busy the machine was; and this machine's Ed25519
verification rate on one core, since every peer checks every signature (``sig_verify_ms_per_tx_all_peers``).
"""

from __future__ import annotations

import json
import os
import resource
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from liangcao import network
from liangcao.bench import SENDERS, presign, sig_verify_rate, submit_all
from liangcao.client import Client
from liangcao.crypto.signer import load_signer
from liangcao.node.home import member_dir
from liangcao.procs import peak_rss_mb
from liangcao.tokens import TokenAuth, load_secret


class FinalityWatcher(threading.Thread):
    """Heights of transactions (from block events) and when each height got every organisation's attestation."""

    def __init__(self, url: str, token: str, from_height: int, orgs: int) -> None:
        super().__init__(daemon=True)
        self.url, self.token, self.orgs = url, token, orgs
        self.client = Client(url, token, timeout_s=120)
        self.from_height = from_height
        self.height_of: dict[str, int] = {}
        self.final_at: dict[int, float] = {}
        self.top = from_height - 1
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def run(self) -> None:
        threading.Thread(target=self._poll, daemon=True).start()
        try:
            for ev in self.client.events(self.from_height, blocks=True, contract="-none-"):
                if self.stop.is_set():
                    return
                if ev["type"] == "block":
                    h = int(ev["header"]["height"])
                    with self.lock:
                        for t in ev["tx_ids"]:
                            self.height_of[t] = h
                        self.top = max(self.top, h)
        except (httpx.HTTPError, OSError):
            return

    def _poll(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        next_h = self.from_height
        with httpx.Client(base_url=self.url, headers=headers, timeout=30) as http:
            while not self.stop.is_set():
                if next_h > self.top:
                    time.sleep(0.01)
                    continue
                atts = http.get(f"/v1/attestations/{next_h}").json()["attestations"]
                orgs = {a["cert"] for a in atts}
                if len(orgs) >= self.orgs:
                    with self.lock:
                        self.final_at[next_h] = time.perf_counter()
                    next_h += 1
                else:
                    time.sleep(0.01)

    def final_time(self, tx_id: str) -> float | None:
        with self.lock:
            h = self.height_of.get(tx_id)
            return None if h is None else self.final_at.get(h)

    def count_final(self, ids: list[str]) -> int:
        return sum(1 for t in ids if self.final_time(t) is not None)


def cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system, with waited-for children) a process has used so far; 0 if it is gone."""
    if not pid:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def machine_cpu_s() -> tuple[float, float]:
    """(all CPU seconds, idle CPU seconds) of the machine so far, summed over its cores."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    return sum(values) / tick, (values[3] + values[4]) / tick


def run_network_bench(home: Path, *, txs: int, batch: int, latency_s: float, console: Console) -> dict[str, Any]:
    state = network.load_state(home)
    orgs = state["orgs"]
    urls = [f"http://127.0.0.1:{o['port']}" for o in orgs]
    token = TokenAuth(load_secret(home / orgs[0]["node_dir"] / "token.secret")).create("org1/admin", 1)
    cores = os.cpu_count() or 1
    client = Client(urls[0], token, timeout_s=120)
    signers = {m: load_signer(member_dir(home, m)) for m in SENDERS}
    for m in SENDERS:
        admin = load_signer(member_dir(home, f"{m.split('/')[0]}/admin"))
        client.call("demo.wallet", "mint", {"to": m, "amount": 10**12}, [admin])
    with Progress(console=console, transient=True) as progress:
        load = presign(client, signers, txs, progress, "signing the throughput load")
        start = int(client.head()["header"]["height"]) + 1
        watcher = FinalityWatcher(urls[0], token, start, len(orgs))
        watcher.start()
        time.sleep(0.5)
        ids = [t.tx_id for t in load]
        chunks = [load[i : i + batch] for i in range(0, len(load), batch)]
        task = progress.add_task(f"throughput: {txs} transfers to {len(urls)} nodes", total=txs)

        def submitter(k: int) -> None:
            with Client(urls[k], token, chain_id=client.chain_id, timeout_s=120) as c:
                submit_all(c, chunks[k :: len(urls)])

        node_pids = [o.get("node_pid") for o in orgs]
        nats_pids = [o.get("nats_pid") for o in orgs]
        cpu0 = (sum(map(cpu_s, node_pids)), sum(map(cpu_s, nats_pids)), cpu_s(os.getpid()), machine_cpu_s())
        t0 = time.perf_counter()
        threads = [threading.Thread(target=submitter, args=(k,)) for k in range(len(urls))]
        for th in threads:
            th.start()
        deadline = time.perf_counter() + 600
        while (done := watcher.count_final(ids)) < txs:
            progress.update(task, completed=done)
            if time.perf_counter() > deadline:
                raise RuntimeError(f"only {done} of {txs} finalised in 10 minutes")
            time.sleep(0.05)
        for th in threads:
            th.join()
        cpu1 = (sum(map(cpu_s, node_pids)), sum(map(cpu_s, nats_pids)), cpu_s(os.getpid()), machine_cpu_s())
        t_last = max(watcher.final_time(t) or 0.0 for t in ids)
        tps = txs / (t_last - t0)
        with watcher.lock:
            blocks = len({watcher.height_of[t] for t in ids if t in watcher.height_of})
        all_s, idle_s = cpu1[3][0] - cpu0[3][0], cpu1[3][1] - cpu0[3][1]
        where = {
            "node_cpu_ms_per_tx": round((cpu1[0] - cpu0[0]) * 1000 / txs, 3),
            "nats_cpu_ms_per_tx": round((cpu1[1] - cpu0[1]) * 1000 / txs, 3),
            "client_cpu_ms_per_tx": round((cpu1[2] - cpu0[2]) * 1000 / txs, 3),
            "machine_busy": round(1 - idle_s / all_s, 3) if all_s > 0 else None,
            "blocks": blocks,
            "txs_per_block": round(txs / blocks, 1) if blocks else None,
            "attestations_per_block": len(orgs),
        }
        rate = tps / 2
        n_lat = int(rate * latency_s)
        lat_load = presign(client, signers, n_lat, progress, "signing the latency load")
        task2 = progress.add_task(f"latency: {rate:.0f} tx/s for {latency_s:.0f} s", total=n_lat)
        sent: dict[str, float] = {}
        per_tick = max(1, round(rate * 0.02))
        cs = [Client(u, token, chain_id=client.chain_id, timeout_s=120) for u in urls]
        t1 = time.perf_counter()
        for k, i in enumerate(range(0, n_lat, per_tick)):
            chunk = lat_load[i : i + per_tick]
            pause = t1 + i / rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            now = time.perf_counter()
            for t in chunk:
                sent[t.tx_id] = now
            cs[k % len(cs)].submit_many(chunk)
            progress.update(task2, completed=i)
        for c in cs:
            c.close()
        lat_ids = list(sent)
        until = time.perf_counter() + 60
        while watcher.count_final(lat_ids) < len(lat_ids) and time.perf_counter() < until:
            time.sleep(0.05)
    watcher.stop.set()
    lat = sorted(((watcher.final_time(t) or 0) - sent[t]) * 1000 for t in lat_ids if watcher.final_time(t) is not None)
    p50 = lat[len(lat) // 2] if lat else float("nan")
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
    sig_rate = sig_verify_rate()
    node_rss = sum(peak_rss_mb(o["node_pid"]) for o in orgs if o.get("node_pid"))
    nats_rss = sum(peak_rss_mb(o["nats_pid"]) for o in orgs if o.get("nats_pid"))
    result: dict[str, Any] = {
        "via": f"HTTP to {len(urls)} nodes, JetStream ordering, finality = attested by all {len(orgs)} organisations",
        "cores": cores,
        "orgs": len(orgs),
        "txs": txs,
        "tps": round(tps, 1),
        "latency_rate_tps": round(rate, 1),
        "p50_ms": round(p50, 1),
        "p99_ms": round(p99, 1),
        "not_final": len(lat_ids) - len(lat),
        # where the time goes, over the throughput phase (CPU of every process on the machine's cores)
        **where,
        "sig_verify_per_s": round(sig_rate, 1),
        "sig_verify_ms_per_tx_all_peers": round(len(orgs) * 1000 / sig_rate, 3),
        "nodes_peak_rss_mb": round(node_rss, 1),
        "nats_peak_rss_mb": round(nats_rss, 1),
        "client_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    table = Table(title=f"liangcao bench --network: {len(orgs)} organisations on {cores} cores")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for name, value in result.items():
        table.add_row(name, str(value))
    console.print(table)
    return result


def to_json(result: dict[str, Any]) -> str:
    return json.dumps(result)
