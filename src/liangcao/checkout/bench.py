"""Installment checkouts next to plain checkouts through a real gateway process (``liangcao checkout bench``).

One ``liangcao checkout start --credit-db ...`` process (the gateway's own HTTP/1.1 server, flow control on,
installments in 3/6/12 periods from the real credit service over the same payments engine). Wallets are
topped up over HTTP first (untimed). Then ``n`` plain checkouts (paid from the wallet) and ``n`` installment
checkouts are interleaved in one shuffled list and driven by ``clients`` concurrent clients, each with its
own keep-alive HTTP/1.1 connection; a checkout is the three requests a shop makes: create the order, pay it
(``wallet`` or ``installments-<3|6|12>``), confirm receipt (which settles it and, for installments, records
the plan). Its latency runs from the first request's send to the last answer. Both kinds share the same
run, so each kind's rate is its completed checkouts over the run's wall time (the sum is the gateway's
checkout throughput with that mix; with ``n`` of each the two rates are equal by construction, and what
differs is each kind's latency: ``*_alone_est_per_s`` is Little's law, ``clients`` over the kind's mean
checkout latency in the mix, an estimate of the kind's rate were every client doing it). A request shed by flow control (429/503 with ``x-retry-after-ms``) is
sent again after the hinted wait (counted in ``shed_retries``); any other failure counts in ``failed``.

After the run the gateway stops and the credit service's records are read: every installment order must
have its plan (``plans_recorded``). The gateway is stopped in ``finally`` (and dies with this process).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from liangcao.checkout.surge import Gateway

#: Checkouts of each kind in one run.
checkouts_max = 100_000
#: Concurrent clients.
clients_max = 256
PERIODS = (3, 6, 12)
MERCHANTS = [f"shop{i}" for i in range(16)]


class _Conn:
    """One keep-alive HTTP/1.1 connection (just enough HTTP for the gateway's answers)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def call(
        self, method: str, path: str, body: dict[str, Any] | None, key: str | None, auth: str
    ) -> tuple[int, Any]:
        """One exchange as the caller whose bearer token is ``auth`` (a session, or the operator token)."""
        data = json.dumps(body).encode() if body is not None else b""
        head = (
            f"{method} {path} HTTP/1.1\r\nhost: gw\r\ncontent-length: {len(data)}\r\nauthorization: Bearer {auth}\r\n"
        )
        if key:
            head += f"idempotency-key: {key}\r\n"
        if data:
            head += "content-type: application/json\r\n"
        while True:
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            assert self.reader is not None
            self.writer.write(head.encode() + b"\r\n" + data)
            line = await self.reader.readline()
            if not line:  # the gateway closed an idle kept-alive connection before reading: send again
                self.close()
                continue
            status = int(line.split()[1])
            length, retry_ms, close = 0, -1, False
            while True:
                h = await self.reader.readline()
                if h in (b"\r\n", b"\n", b""):
                    break
                name, _, value = h.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"x-retry-after-ms":
                    retry_ms = int(value)
                elif name == b"connection" and b"close" in value.lower():
                    close = True
            answer = await self.reader.readexactly(length) if length else b""
            if close:
                self.close()
            if retry_ms >= 0 and status in (429, 503):
                raise _Shed(retry_ms)
            return status, json.loads(answer) if answer else None

    def close(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()
        self.reader = self.writer = None


class _Shed(Exception):
    def __init__(self, retry_ms: int) -> None:
        self.retry_ms = retry_ms


def _hist() -> HdrHistogram:
    return HdrHistogram(1, 60_000_000, 3)  # microseconds


async def _drive(
    port: int, jobs: list[tuple[str, str, int, str]], clients: int, tokens: dict[str, str]
) -> dict[str, Any]:
    """Run ``jobs`` (kind, buyer, amount, method) with ``clients`` connections, each step as the job's buyer
    (``tokens``: buyer -> session token); the per-kind figures."""
    hist = {"plain": _hist(), "installments": _hist()}
    done = {"plain": 0, "installments": 0}
    failed: list[str] = []
    orders: dict[str, list[str]] = {"plain": [], "installments": []}
    shed = 0
    queue = list(reversed(jobs))

    async def step(
        c: _Conn, method: str, path: str, body: dict[str, Any] | None, key: str, auth: str
    ) -> tuple[int, Any]:
        nonlocal shed
        while True:
            try:
                return await c.call(method, path, body, key, auth)
            except _Shed as s:
                shed += 1
                await asyncio.sleep(max(s.retry_ms, 1) / 1000)

    async def client(i: int) -> None:
        c = _Conn(port)
        try:
            while queue:
                kind, buyer, amount, how = queue.pop()
                merchant = MERCHANTS[amount % len(MERCHANTS)]
                t0 = time.perf_counter()
                key = f"b{i}-{len(queue)}"
                st, o = await step(c, "POST", "/v1/orders", {"buyer": buyer, "merchant": merchant, "amount": amount},
                                   f"{key}-o", tokens[buyer])  # fmt: skip
                if st != 201:
                    failed.append(f"create {st}: {o}")
                    continue
                oid = o["id"]
                st, o = await step(c, "POST", f"/v1/orders/{oid}/pay", {"method": how}, f"{key}-p", tokens[buyer])
                if st != 200:
                    failed.append(f"pay {how} {st}: {o}")
                    continue
                st, o = await step(c, "POST", f"/v1/orders/{oid}/confirm", None, f"{key}-c", tokens[buyer])
                if st != 200 or o["state"] != "settled":
                    failed.append(f"confirm {st}: {o}")
                    continue
                hist[kind].record_value(max(1, int((time.perf_counter() - t0) * 1e6)))
                done[kind] += 1
                orders[kind].append(oid)
        finally:
            c.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "hist": hist, "done": done, "failed": failed, "orders": orders, "shed": shed}


def _topup(port: int, buyers: list[str], amount: int, clients: int, operator: str) -> None:
    """Money into every wallet, as the operator (``operator``: the gateway's operator token)."""

    async def go(part: list[str]) -> None:
        c = _Conn(port)
        try:
            for b in part:
                while True:  # shed by flow control (concurrent top-ups): wait as hinted, send again
                    try:
                        st, body = await c.call(
                            "POST", f"/v1/wallets/{b}/topup", {"amount": amount}, f"setup-topup-{b}", operator
                        )
                        break
                    except _Shed as shed:
                        await asyncio.sleep(max(shed.retry_ms, 1) / 1000)
                if st != 200:
                    raise RuntimeError(f"topup {b}: {st} {body}")
        finally:
            c.close()

    async def all_of() -> None:
        await asyncio.gather(*(go(buyers[i::clients]) for i in range(clients)))

    asyncio.run(all_of())


def _plans_recorded(home: Path, order_ids: list[str]) -> int:
    """Installment orders with a plan in the credit service's records (read after the gateway stopped)."""
    from liangcao.credit import CreditService
    from liangcao.errors import LiangcaoError
    from liangcao.payments import Engine

    with Engine(home / "pay", fsync=False) as e, CreditService(e, home / "credit.db", fsync=False) as credit:
        n = 0
        for oid in order_ids:
            with contextlib.suppress(LiangcaoError):
                credit.plan(oid)
                n += 1
        return n


def run_bench(
    n: int = 500, clients: int = 16, seed: int = 1, home: Path | None = None, say: Callable[[str], None] = print
) -> dict[str, Any]:
    """``n`` plain and ``n`` installment checkouts, interleaved, through one gateway process; the figures."""
    if not 1 <= n <= checkouts_max or not 1 <= clients <= clients_max:
        raise ValueError(f"n 1..{checkouts_max} (checkouts_max), clients 1..{clients_max} (clients_max)")
    rng = random.Random(seed)
    # A shopper's line is 2,000.00 yuan: enough shoppers that none runs out (at most 50.00 yuan an order).
    shoppers = [f"buyer{i}" for i in range(max(16, n // 30 + 1))]
    jobs: list[tuple[str, str, int, str]] = []
    for i in range(n):
        jobs.append(("plain", rng.choice(shoppers), rng.randint(100, 5_000), "wallet"))
        jobs.append(("installments", rng.choice(shoppers), rng.randint(100, 5_000), f"installments-{PERIODS[i % 3]}"))
    rng.shuffle(jobs)
    own = home is None
    where = Path(tempfile.mkdtemp(prefix="liangcao-checkout-bench-")) if home is None else home
    gw: Gateway | None = None
    try:
        gw = Gateway(where, flow=True, extra=("--credit-db", str(where / "credit.db")))
        gw.wait_ready()
        say(f"gateway pid {gw.proc.pid} on 127.0.0.1:{gw.port}; topping up {len(shoppers)} wallets")
        from liangcao.checkout.http import operator_token
        from liangcao.checkout.identity import session_key

        _topup(gw.port, shoppers, 10**9, clients, operator_token(where))
        key = session_key(where)  # the gateway's own: each shopper signed in, as POST /v1/sessions would
        tokens = {b: key.issue("shopper", b, 24 * 3600)[0] for b in shoppers}
        say(f"driving {n} plain + {n} installment checkouts, {clients} clients")
        out = asyncio.run(_drive(gw.port, jobs, clients, tokens))
        gw.stop()
        plans = _plans_recorded(where, out["orders"]["installments"])
    finally:
        if gw is not None:
            gw.stop()
        if own:
            shutil.rmtree(where, ignore_errors=True)
    wall = out["wall_s"]
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result: dict[str, Any] = {
        "n_each": n,
        "clients": clients,
        "wall_s": round(wall, 3),
        "plain_checkouts_per_s": round(out["done"]["plain"] / wall, 1),
        "installment_checkouts_per_s": round(out["done"]["installments"] / wall, 1),
        "checkouts_per_s": round((out["done"]["plain"] + out["done"]["installments"]) / wall, 1),
        "plain_done": out["done"]["plain"],
        "installment_done": out["done"]["installments"],
        "failed": len(out["failed"]),
        "failures": out["failed"][:5],
        "shed_retries": out["shed"],
        "plans_recorded": plans,
        "cores": os.cpu_count(),
        "gateway_peak_rss_mb": round(gw.rss_mb, 1) if gw is not None else 0.0,
        "driver_peak_rss_mb": round(me, 1),
    }
    for kind, h in out["hist"].items():
        prefix = "plain" if kind == "plain" else "installment"
        result[f"{prefix}_p50_ms"] = round(h.get_value_at_percentile(50) / 1000, 2) if h.get_total_count() else None
        result[f"{prefix}_p99_ms"] = round(h.get_value_at_percentile(99) / 1000, 2) if h.get_total_count() else None
        # Little's law: all clients doing this kind at the latency it had in the mix (an estimate, not a run)
        mean_s = h.get_mean_value() / 1e6 if h.get_total_count() else 0.0
        result[f"{prefix}_alone_est_per_s"] = round(clients / mean_s, 1) if mean_s > 0 else None
    result["peak_rss_mb"] = round(result["gateway_peak_rss_mb"] + me, 1)
    return result
