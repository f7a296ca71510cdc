"""Cluster mode: one token server grants the global rate of ``cluster`` resources to many gateway processes.

Theory of operation (Sentinel's cluster flow control, with leases). The server holds one
:class:`~liangcao.flow.bucket.TokenBucket` per cluster resource at the *global* rate. A gateway does not ask
per call (a round trip per payment would cost more than the payment): its :class:`ClusterClient` keeps a
small pool of leased tokens per resource and a background thread tops it up in batches sized to the recent
demand (about ``refill_s x 2`` of it, at most ``batch_max``). A call takes a token from the pool or is
refused at once; leased tokens expire after ``lease_ttl_s`` so a gateway cannot hoard the global rate.
The server never grants more than its buckets hold, so the sum over gateways stays within the global limit
whatever their number.

When the server cannot be reached (connection refused, no answer in ``timeout_s``), the client reports
itself down and the gate falls back to a *local* bucket at ``fallback_share`` of the global rate (Sentinel's
fallback to local flow control); it reconnects in the background and uses the server again once it answers.

Wire: newline-delimited JSON over TCP on 127.0.0.1.
``{"leases": [[resource, n], ...]}`` -> ``{"grants": [[resource, granted, wait_ms], ...]}``;
``{"status": true}`` -> the server's counters.

Run a server: ``python -m liangcao.flow.cluster --port 7700 --rules rules.json`` (SIGHUP: read the rules again).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from liangcao.flow.bucket import TokenBucket
from liangcao.flow.errors import FlowCode, FlowError
from liangcao.flow.rules import ResourceRule, Rules, rules_from_json

batch_max = 1000  # tokens in one lease
leases_per_request_max = 64  # resources in one request
line_bytes_max = 64 * 1024
clients_max = 256  # connections the server holds at once
#: A new connection over ``clients_max`` closes the longest-idle one if it has said nothing for this long (a
#: live gateway asks at least every lease_ttl_s): sockets opened and left silent, or clients that stopped
#: reading their answers, cannot lock the gateways out of the server.
idle_evict_s = 2.0


class TokenServerCore:
    """The server's state, pure: global buckets and counters (the asyncio shell below does the I/O)."""

    def __init__(self, rules: Rules, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.buckets: dict[str, TokenBucket] = {}
        self.granted: dict[str, int] = {}
        self.asked: dict[str, int] = {}
        self.requests = 0
        self.load(rules)

    def load(self, rules: Rules) -> None:
        now = self.clock()
        buckets: dict[str, TokenBucket] = {}
        for r in rules.resources:
            if r.cluster:
                b = TokenBucket(r.rate_per_s, r.burst, r.warmup_s, r.cold_factor, now=now)
                old = self.buckets.get(r.name)
                if old is not None:
                    b.carry_from(old, now)
                buckets[r.name] = b
        self.buckets = buckets

    def lease(self, resource: str, n: int) -> tuple[int, int]:
        """Grant up to ``n`` tokens of ``resource``: (granted, ms until the next one if none left)."""
        now = self.clock()
        b = self.buckets.get(resource)
        if b is None:
            return 0, 1000
        n = max(0, min(int(n), batch_max))
        got = b.take_upto(now, n)
        self.granted[resource] = self.granted.get(resource, 0) + got
        self.asked[resource] = self.asked.get(resource, 0) + n
        wait = b.wait(now)
        return got, max(1, math.ceil(wait * 1000 - 1e-6)) if wait > 0 else 0

    def handle(self, request: Any) -> dict[str, Any]:
        self.requests += 1
        if not isinstance(request, dict):
            return {"error": "a request is a JSON object"}
        if request.get("status"):
            return {
                "resources": {k: {"rate_per_s": b.rate, "burst": b.burst} for k, b in self.buckets.items()},
                "granted": dict(self.granted),
                "asked": dict(self.asked),
                "requests": self.requests,
            }
        leases = request.get("leases")
        if not isinstance(leases, list) or len(leases) > leases_per_request_max:
            return {"error": f"leases: a list of at most {leases_per_request_max} [resource, n]"}
        grants = []
        for item in leases:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) and type(item[1]) is int):
                return {"error": "each lease is [resource, n]"}
            got, wait_ms = self.lease(item[0], item[1])
            grants.append([item[0], got, wait_ms])
        return {"grants": grants}


async def serve(core: TokenServerCore, host: str, port: int, ready: Callable[[int], None] | None = None) -> None:
    """Serve ``core`` until cancelled."""
    seen: dict[asyncio.StreamWriter, float] = {}  # connection -> when it last sent a request

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        now = time.monotonic()
        if len(seen) >= clients_max:
            idlest = min(seen, key=seen.__getitem__)
            if now - seen[idlest] < idle_evict_s:
                writer.close()
                return
            del seen[idlest]
            idlest.close()  # its reader sees the end of the stream, its drain the lost connection
        seen[writer] = now
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                if writer in seen:
                    seen[writer] = time.monotonic()
                try:
                    answer = core.handle(json.loads(line))
                except (ValueError, RecursionError):  # not JSON, or nested too deep to parse
                    answer = {"error": "not JSON"}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError, RecursionError):
            return
        finally:
            seen.pop(writer, None)
            writer.close()

    server = await asyncio.start_server(one, host, port, limit=line_bytes_max)
    bound = server.sockets[0].getsockname()[1]
    if ready is not None:
        ready(int(bound))
    async with server:
        await server.serve_forever()


class _Pool:
    """Leased tokens of one resource: (expiry, count) batches, oldest first."""

    __slots__ = ("batches", "demand", "target", "tokens", "wait_ms")

    def __init__(self) -> None:
        self.batches: deque[list[float]] = deque()
        self.tokens = 0
        self.demand = 0  # calls that asked since the last refill
        self.target = 1  # tokens to hold after a refill
        self.wait_ms = 0  # the server's hint when it had none

    def expire(self, now: float) -> None:
        while self.batches and self.batches[0][0] <= now:
            self.tokens -= int(self.batches.popleft()[1])


class ClusterClient:
    """A gate's token source for ``cluster`` resources (see the module doc); ``start()`` it, ``close()`` it."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        fallback_share: float,
        clock: Callable[[], float] = time.monotonic,
        refill_s: float = 0.02,
        lease_ttl_s: float = 0.5,
        timeout_s: float = 0.2,
    ) -> None:
        if not 0 < fallback_share <= 1:
            raise FlowError(FlowCode.BAD_RULES, f"fallback_share={fallback_share} is outside (0, 1]")
        self.host, self.port = host, port
        self.fallback_share = fallback_share
        self.clock = clock
        self.refill_s = refill_s
        self.lease_ttl_s = lease_ttl_s
        self.timeout_s = timeout_s
        self.live = False
        self._lock = threading.Lock()
        self._pools: dict[str, _Pool] = {}
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._last_wants = clock()
        self.round_trips = 0
        self.failures = 0
        self.leased = 0

    # -- TokenSource ---------------------------------------------------------------------------------------

    def configure(self, rules: list[ResourceRule]) -> None:
        with self._lock:
            names = {r.name for r in rules}
            self._pools = {name: self._pools.get(name) or _Pool() for name in names}

    def wait(self, resource: str, now: float, share: float) -> float | None:
        if not self.live:
            return None
        with self._lock:
            pool = self._pools.get(resource)
            if pool is None:
                return None
            pool.expire(now)
            pool.demand += 1
            # Less important work leaves a part of the pool to the rest (the pool stands in for the bucket).
            if pool.tokens >= 1 + (1.0 - share) * pool.target:
                return 0.0
        self._kick.set()
        return max(self.refill_s, pool.wait_ms / 1000.0)

    def take(self, resource: str, now: float) -> None:
        with self._lock:
            pool = self._pools[resource]
            pool.tokens -= 1
            if pool.batches:  # the oldest lease first: it expires first
                batch = pool.batches[0]
                batch[1] -= 1
                if batch[1] <= 0:
                    pool.batches.popleft()

    # -- the refiller ----------------------------------------------------------------------------------------

    def start(self) -> ClusterClient:
        self._thread = threading.Thread(target=self._run, name="flow-cluster", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._kick.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._disconnect()

    def __enter__(self) -> ClusterClient:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _disconnect(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def _connect(self) -> socket.socket:
        if self._sock is None:
            self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._buffer = b""
        return self._sock

    def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        reused = self._sock is not None
        try:
            return self._call_once(request)
        except OSError:
            if not reused:
                raise
        # The connection was closed while idle (the server restarted or closed it as idle): one new try
        # before the gate falls back (the server never grants more than its buckets hold, so a request
        # it did answer on the old connection costs no more than a lease it expires).
        self._disconnect()
        return self._call_once(request)

    def _call_once(self, request: dict[str, Any]) -> dict[str, Any]:
        sock = self._connect()
        sock.sendall(json.dumps(request).encode() + b"\n")
        while b"\n" not in self._buffer:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("token server closed the connection")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        answer: dict[str, Any] = json.loads(line)
        return answer

    def _wants(self, now: float) -> list[list[Any]]:
        wants = []
        elapsed = max(1e-3, now - self._last_wants)
        self._last_wants = now
        with self._lock:
            for name, pool in self._pools.items():
                pool.expire(now)
                # Hold about two refill periods of the demand seen since the last look.
                seen = pool.demand / elapsed
                pool.demand = 0
                pool.target = max(1, min(batch_max, math.ceil(seen * self.refill_s * 2)))
                if pool.tokens < pool.target:
                    wants.append([name, pool.target - pool.tokens])
        return wants

    def _run(self) -> None:
        last = 0.0
        while not self._stop.is_set():
            self._kick.wait(self.refill_s)
            # Refusals kick the refiller early, but never into a busy loop of round trips.
            gap = self.refill_s / 4 - (time.monotonic() - last)
            if gap > 0:
                self._stop.wait(gap)
            self._kick.clear()
            if self._stop.is_set():
                break
            last = time.monotonic()
            now = self.clock()
            try:
                wants = self._wants(now) if self.live else [[name, 1] for name in list(self._pools)]
                if not wants:
                    continue
                answer = self._call({"leases": wants})
                grants = answer.get("grants")
                if not isinstance(grants, list):
                    raise ConnectionError(f"token server: {answer.get('error', 'no grants')}")
            except (OSError, ValueError):
                self.failures += 1
                self.live = False
                self._disconnect()
                self._stop.wait(min(0.5, self.timeout_s))
                continue
            self.round_trips += 1
            expiry = self.clock() + self.lease_ttl_s
            with self._lock:
                for name, got, wait_ms in grants:
                    pool = self._pools.get(name)
                    if pool is None:
                        continue
                    pool.wait_ms = int(wait_ms)
                    if got > 0:
                        pool.batches.append([expiry, float(got)])
                        pool.tokens += int(got)
                        self.leased += int(got)
            self.live = True

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "server": f"{self.host}:{self.port}",
                "live": self.live,
                "fallback_share": self.fallback_share,
                "round_trips": self.round_trips,
                "failures": self.failures,
                "leased": self.leased,
                "pools": {k: {"tokens": p.tokens, "target": p.target} for k, p in self._pools.items()},
            }


def main(argv: list[str] | None = None) -> int:
    """``python -m liangcao.flow.cluster --port P --rules F``: serve until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m liangcao.flow.cluster", description="flow-control token server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--rules", type=Path, required=True, help="rules JSON; resources with cluster=true")
    args = parser.parse_args(argv)
    try:
        rules = rules_from_json(args.rules.read_bytes())
    except (OSError, FlowError) as exc:
        print(f"token server: {exc}", file=sys.stderr)
        return 2
    core = TokenServerCore(rules)

    def reload() -> None:
        # SIGHUP: read the rules file again; a bad one is reported and the rules in force are kept.
        try:
            core.load(rules_from_json(args.rules.read_bytes()))
            print(f"rules reloaded from {args.rules}", flush=True)
        except (OSError, FlowError) as exc:
            print(f"token server: {exc}", file=sys.stderr, flush=True)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        for sig in (signal.SIGTERM, signal.SIGINT):
            if task is not None:
                loop.add_signal_handler(sig, task.cancel)
        loop.add_signal_handler(signal.SIGHUP, reload)
        with contextlib.suppress(asyncio.CancelledError):
            await serve(core, args.host, args.port, lambda p: print(f"listening {args.host}:{p}", flush=True))

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
