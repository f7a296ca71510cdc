"""``liangcao trace bench``: bulk EPCIS capture into committed blocks, and history lookups by EPC.

A real node runs in its own process (``liangcao node start``) on a fresh consortium of a brand, a logistics
company and a warehouse. This process builds the workload the way a capture client does: EPCIS 2.0
documents, validated against GS1's schema, every event's hash id computed, packed and signed as
``trace.capture`` transactions (all before timing starts, so the client's signing is not measured; one
preparing process per core, each writing its transactions to spool files on disk that the submitter then reads
in order, so the client holds transaction ids, not transactions: ten million events fit), in the compact layout (``--full``: the layout that copies each event into state; ``liangcao.apps.trace.anchor``). Per
case of four tins of milk powder: four commissioning events and the packing of the case (brand), its
shipping (logistics) and its receiving (warehouse): seven events. The transactions go over HTTP
(``/v1/batch/txs``); the commit time of each is read from the new blocks' headers; events per second is
events / (last commit - first submission); ``events_per_s_queryable`` counts until the first lookup answered,
which waits for the node's trace index to hold every block (its follower process indexes the blocks as they
commit: a lookup before the capture starts it). The store size counts every SQLite file of the
node (ledger, write-ahead logs, trace index) while it runs, and again at rest, after the node stopped and each
write-ahead log is checkpointed into its database. Then it looks up random tins' histories over HTTP: the full
provenance (``/v1/trace/provenance``: the tin's own events and its case's) and the EPCIS query
``MATCH_anyEPC``, one request at a time, and reports p50 and p99 of each.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import multiprocessing
import os
import random
import resource
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import httpx
from rich.console import Console
from rich.progress import Progress

from liangcao.bench import start_node, submit_all, wait_ready
from liangcao.client import Client
from liangcao.codes import Code
from liangcao.crypto.signer import load_signer
from liangcao.node.home import NodeHome, init_network, member_dir
from liangcao.procs import cpu_by_name, free_port, peak_rss_mb, stop_process
from liangcao.trace import capture

CONTEXT = ["https://ref.gs1.org/standards/epcis/epcis-context.jsonld"]
CASES_PER_DOCUMENT = 400


def tin(n: int) -> str:
    return f"urn:epc:id:sgtin:0614141.107346.{n}"


def case(n: int) -> str:
    return f"urn:epc:id:sscc:0614141.{n:010d}"


def _when(n: int, minutes: int) -> str:
    base = 1_790_000_000 + n * 60 + minutes * 60
    return time.strftime("%Y-%m-%dT%H:%M:%S.000+08:00", time.gmtime(base + 8 * 3600))


def _doc(events: list[dict[str, Any]]) -> bytes:
    body = {"@context": CONTEXT, "type": "EPCISDocument", "schemaVersion": "2.0",
            "creationDate": "2026-11-01T00:00:00Z", "epcisBody": {"eventList": events}}  # fmt: skip
    return json.dumps(body).encode()


def documents(first_case: int, cases: int) -> dict[str, bytes]:
    """The brand's, the carrier's and the warehouse's documents for ``cases`` cases."""
    brand: list[dict[str, Any]] = []
    ship: list[dict[str, Any]] = []
    receive: list[dict[str, Any]] = []
    base = {"eventTimeZoneOffset": "+08:00"}
    for c in range(first_case, first_case + cases):
        tins = [tin(c * 4 + k) for k in range(4)]
        for k, t in enumerate(tins):
            brand.append({"type": "ObjectEvent", "eventTime": _when(c, k), **base, "epcList": [t], "action": "ADD",
                          "bizStep": "commissioning", "disposition": "active",
                          "readPoint": {"id": "urn:epc:id:sgln:0614141.00001.0"}})  # fmt: skip
        brand.append({"type": "AggregationEvent", "eventTime": _when(c, 5), **base, "parentID": case(c),
                      "childEPCs": tins, "action": "ADD", "bizStep": "packing"})  # fmt: skip
        ship.append({"type": "ObjectEvent", "eventTime": _when(c, 60), **base, "epcList": [case(c)],
                     "action": "OBSERVE", "bizStep": "shipping", "disposition": "in_transit"})  # fmt: skip
        receive.append({"type": "ObjectEvent", "eventTime": _when(c, 600), **base, "epcList": [case(c)],
                        "action": "OBSERVE", "bizStep": "receiving", "disposition": "in_progress",
                        "bizLocation": {"id": "urn:epc:id:sgln:0614141.00009.0"}})  # fmt: skip
    return {"org1": _doc(brand), "org2": _doc(ship), "org3": _doc(receive)}


#: Transactions per HTTP batch, and cases a preparing process signs into one spool file.
SUBMIT_BATCH = 100
SUBMITTERS = 3  # batches in flight
CASES_PER_SPOOL = 25 * CASES_PER_DOCUMENT


@dataclass
class Spool:
    """Signed transactions of a range of cases, on disk (4-byte big-endian length, then the envelope): the
    client holds ids, not transactions, so ten million events fit in memory."""

    path: Path
    events: int
    tx_ids: list[str]

    def batches(self, size: int) -> Iterator[list[bytes]]:
        batch: list[bytes] = []
        with self.path.open("rb") as f:
            while head := f.read(4):
                batch.append(f.read(int.from_bytes(head, "big")))
                if len(batch) == size:
                    yield batch
                    batch = []
        if batch:
            yield batch


def _prepare_spool(
    root: str, first: int, cases: int, chain_id: str, not_after: int, compact: bool, path: str
) -> tuple[int, list[str]]:
    """In a preparing process: build, validate, hash and sign the documents of ``cases`` cases from ``first``
    (a document of ``CASES_PER_DOCUMENT`` cases per organisation at a time, as before) into ``path``."""
    signers = {o: load_signer(member_dir(Path(root), f"{o}/alice")) for o in ("org1", "org2", "org3")}
    n_events, tx_ids = 0, []
    with open(path, "wb") as out:
        for at in range(first, first + cases, CASES_PER_DOCUMENT):
            for org, data in documents(at, min(CASES_PER_DOCUMENT, first + cases - at)).items():
                prepared = capture.prepare(data)
                n_events += len(prepared)
                for tx in capture.sign(prepared, capture.pack(prepared), signers[org], chain_id, not_after,
                                       compact=compact):  # fmt: skip
                    out.write(len(tx.raw).to_bytes(4, "big") + tx.raw)
                    tx_ids.append(tx.tx_id)
    return n_events, tx_ids


def _prepare(
    root: Path, cases: int, chain_id: str, not_after: int, compact: bool, cores: int, console: Console
) -> list[Spool]:
    """Every transaction of the run, prepared before timing starts by one process per core, each into its own
    spool files (in the order they are submitted)."""
    parts = [(first, min(CASES_PER_SPOOL, cases - first)) for first in range(0, cases, CASES_PER_SPOOL)]
    spools: list[Spool] = []
    ctx = multiprocessing.get_context("spawn")  # the bench has threads (the progress bar): never fork
    with (
        ProcessPoolExecutor(max(1, min(cores, len(parts))), mp_context=ctx) as pool,
        Progress(console=console, transient=True) as progress,
    ):
        task = progress.add_task("building, validating, hashing and signing EPCIS documents", total=cases)
        futures = [
            pool.submit(_prepare_spool, str(root), first, n, chain_id, not_after, compact, str(root / f"spool-{k}.bin"))
            for k, (first, n) in enumerate(parts)
        ]
        for k, ((_, n), future) in enumerate(zip(parts, futures, strict=True)):
            n_events, tx_ids = future.result()
            spools.append(Spool(root / f"spool-{k}.bin", n_events, tx_ids))
            progress.advance(task, n)
    return spools


#: Windows of the run the timeline reports (each about a tenth of the transactions).
TIMELINE_STEPS = 10


class _Mark(NamedTuple):
    txs: int  # committed so far
    t: float  # perf_counter
    node_cpu: dict[str, float]  # procs.cpu_by_name of the node
    client_cpu: float  # this process's CPU seconds (the submitters and the progress loop)


def _timeline(marks: list[_Mark], events_per_tx: float) -> list[dict[str, Any]]:
    """Per window between marks: events committed by its end, the window's rate, and microseconds of CPU per
    event of each of the node's parts and of the client."""
    out: list[dict[str, Any]] = []
    for a, b in itertools.pairwise(marks):
        events = (b.txs - a.txs) * events_per_tx
        if events <= 0:
            continue
        cpu = {k: round((v - a.node_cpu.get(k, 0.0)) / events * 1e6, 1) for k, v in sorted(b.node_cpu.items())}
        cpu["client"] = round((b.client_cpu - a.client_cpu) / events * 1e6, 1)
        out.append({"events": round(b.txs * events_per_tx), "events_per_s": round(events / (b.t - a.t), 1),
                    "cpu_us_per_event": cpu})  # fmt: skip
    return out


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * q))] if s else float("nan")


def _time_restart(tmp: Path, home: NodeHome, token: str) -> float:
    """Seconds from ``liangcao node start`` on the stopped node's store to its first healthy answer."""
    t = time.perf_counter()
    proc = start_node(tmp)
    try:
        with Client(home.url, token, timeout_s=60) as c:
            wait_ready(c, proc, timeout_s=3600)  # the start-up check reads the whole store: minutes at 10 M
        return time.perf_counter() - t
    finally:
        stop_process(proc, grace_s=120)


def run_trace_bench(
    *, events: int, lookups: int, as_json: bool, console: Console, compact: bool = True, restart: bool = False
) -> dict[str, Any]:
    """Run the capture and lookup benchmark (``docs/benchmarks.md``); with ``restart``, then time the node's
    start on the store it left (``restart_s``: opening it, the default start-up store check, serving)."""
    cores = os.cpu_count() or 1
    tmp = Path(tempfile.mkdtemp(prefix="liangcao-trace-bench-"))
    init_network(tmp, 3, port=free_port(7950), block_txs_max=200, block_wait_ms=20,
                 org_types=["brand", "logistics", "warehouse"])  # fmt: skip
    home = NodeHome.open(tmp)
    proc = start_node(tmp)
    try:
        token = home.auth().create("org1/admin", 1)
        client = Client(home.url, token, timeout_s=300)
        wait_ready(client, proc)
        admins = [load_signer(member_dir(tmp, f"org{i}/admin")) for i in (1, 2, 3)]
        r = client.call("trace", "assign_prefix", {"prefix": "0614141", "org": "org1"}, admins)
        if r["code"] != Code.OK:
            raise RuntimeError(f"assigning the brand's prefix failed: {r['message']}")
        # A node serving EPCIS queries has readers from the start: the first starts its index's follower
        # process, which then indexes each block as it commits (what "queryable" measures), not after the run.
        httpx.get(f"{home.url}/v1/trace/provenance", params={"id": tin(0)},
                  headers={"Authorization": f"Bearer {token}"}, timeout=60)  # fmt: skip
        cases = max(1, events // 7)
        t_prep = time.perf_counter()
        spools = _prepare(tmp, cases, client.chain_id, client.node_time_ms() + 6 * 3_600_000, compact,
                          cores, console)  # fmt: skip
        prep_s = time.perf_counter() - t_prep
        n_events = sum(s.events for s in spools)
        ids = [t for s in spools for t in s.tx_ids]
        console.print(f"{n_events:,} events in {len(ids):,} transactions prepared in {prep_s:.0f} s; capturing…")
        start_height = int(client.head()["header"]["height"]) + 1

        # A few batches in flight, as concurrent capture clients would send them: one at a time, the run
        # measures the client's round trips (each batch waits for its signatures to be verified) rather than
        # the node. Batches are taken in order from one reader; commits are counted however they interleave.
        in_order = (batch for spool in spools for batch in spool.batches(SUBMIT_BATCH))
        lock = threading.Lock()

        def submitter() -> None:
            with Client(home.url, token, chain_id=client.chain_id, timeout_s=300) as c:
                while True:
                    with lock:
                        batch = next(in_order, None)
                    if batch is None:
                        return
                    submit_all(c, [batch])

        # Commits are counted from block headers (cheap, and nothing to fall behind on, unlike an event
        # stream a slow reader can be cut off from): done when the new blocks hold every transaction.
        t0 = time.perf_counter()
        senders = [threading.Thread(target=submitter) for _ in range(SUBMITTERS)]
        for th in senders:
            th.start()
        committed, seen_height = 0, start_height - 1
        # Where the time goes as the store grows: the rate and each process's CPU per event in every tenth
        # of the run (the node's commit thread, its precompute worker, signature verifiers, index follower).
        marks = [_Mark(0, t0, cpu_by_name(proc.pid), time.process_time())]
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"capture: {n_events:,} events", total=len(ids))
            while committed < len(ids):
                head = int(client.head()["header"]["height"])
                for height in range(seen_height + 1, head + 1):
                    committed += int(client.get(f"/v1/blocks/{height}/header")["header"]["tx_count"])
                seen_height = head
                progress.update(task, completed=committed)
                if committed * TIMELINE_STEPS >= len(ids) * len(marks) or committed >= len(ids):
                    now = time.perf_counter()
                    marks.append(_Mark(committed, now, cpu_by_name(proc.pid), time.process_time()))
                if proc.poll() is not None:
                    raise RuntimeError("the node died during the run")
                if committed < len(ids):
                    time.sleep(0.1)
        t_last = time.perf_counter()
        for th in senders:
            th.join()
        for spool in spools:  # sent: their 3 GB at 10 M events would take page cache from the lookups
            spool.path.unlink(missing_ok=True)
        eps = n_events / (t_last - t0)
        timeline = _timeline(marks, n_events / max(1, len(ids)))
        # Queryable, not only committed: the first lookup waits until the node's trace index holds every block.
        t = time.perf_counter()
        # (the index is built from the blocks at several thousand events a second: 10 M take a while)
        h0 = httpx.get(f"{home.url}/v1/trace/provenance", params={"id": tin(0)},
                       headers={"Authorization": f"Bearer {token}"}, timeout=max(600.0, n_events / 2_000))  # fmt: skip
        t_indexed = time.perf_counter()
        if h0.status_code != 200 or not h0.json()["events"]:
            raise RuntimeError(f"the first lookup failed: {h0.status_code}")
        index_wait_s = t_indexed - t
        eps_indexed = n_events / (t_indexed - t0)
        failed = sum(1 for info in (client.tx(t) for t in random.Random(1).sample(ids, min(50, len(ids))))
                     if info["receipt"]["code"] != Code.OK)  # fmt: skip
        rng = random.Random(7)
        hist: list[float] = []
        match: list[float] = []
        sizes: list[int] = []
        with httpx.Client(base_url=home.url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as h:
            for _ in range(lookups):
                epc = tin(rng.randrange(cases * 4))
                t = time.perf_counter()
                p = h.get("/v1/trace/provenance", params={"id": epc})
                hist.append((time.perf_counter() - t) * 1000)
                sizes.append(len(p.json()["events"]))
                t = time.perf_counter()
                q = h.get("/epcis/v2/events", params={"MATCH_anyEPC": epc})
                match.append((time.perf_counter() - t) * 1000)
                if p.status_code != 200 or q.status_code != 200:
                    raise RuntimeError(f"lookup failed: {p.status_code} {q.status_code}")
        node_rss = peak_rss_mb(proc.pid)
        # every file of the store: the ledger, its write-ahead log and the node's trace index
        db_mb = sum(f.stat().st_size for f in (tmp / "node").glob("*.sqlite*")) / 2**20
    finally:
        stop_process(proc, grace_s=120)  # the node checkpoints its files on the way out
    # At rest: each file's write-ahead log checkpointed into it (as SQLite does when a store is next opened).
    for path in (tmp / "node").glob("*.sqlite"):
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    rest_mb = sum(f.stat().st_size for f in (tmp / "node").glob("*.sqlite*")) / 2**20
    restart_s = _time_restart(tmp, home, token) if restart else None
    shutil.rmtree(tmp, ignore_errors=True)  # the store and the spool files: about 2 KB an event
    result = {
        "via": "HTTP (batch endpoint, node in its own process)",
        "cores": cores,
        "events": n_events,
        "txs": len(ids),
        "layout": "compact" if compact else "full",
        "events_per_s": round(eps, 1),
        "events_per_s_queryable": round(eps_indexed, 1),
        "index_wait_s": round(index_wait_s, 2),
        "failed_in_sample": failed,
        "lookup_p50_ms": round(_pct(hist, 0.5), 2),
        "lookup_p99_ms": round(_pct(hist, 0.99), 2),
        "lookup_events_mean": round(sum(sizes) / max(1, len(sizes)), 2),
        "query_p50_ms": round(_pct(match, 0.5), 2),
        "query_p99_ms": round(_pct(match, 0.99), 2),
        "lookups": lookups,
        "client_prepare_s": round(prep_s, 1),
        "db_mb": round(db_mb, 1),
        "store_bytes_per_event": round(db_mb * 2**20 / max(1, n_events)),
        "db_mb_at_rest": round(rest_mb, 1),
        "store_bytes_per_event_at_rest": round(rest_mb * 2**20 / max(1, n_events)),
        "node_peak_rss_mb": round(node_rss, 1),
        "restart_s": None if restart_s is None else round(restart_s, 1),
        "client_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "timeline": timeline,
    }
    console.print(result)
    if as_json:
        print(json.dumps(result))
    return result
