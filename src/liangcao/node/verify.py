"""Ed25519 verification spread over the machine's cores.

Why processes: the ``cryptography`` package releases the GIL only partly during Ed25519 verification
(two threads gave 1.3x one thread on this 2-core machine), while a process per core gives close to the
number of cores. Work is shipped in chunks of (public key, message, signature) bytes, so the cost of
crossing the process boundary is small next to the verification itself. Where it does not pay (one core,
or a handful of transactions) verification runs inline.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from functools import lru_cache
from typing import Any, TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from liangcao.crypto import keys
from liangcao.crypto.identity import CertCache, CertificateError
from liangcao.ledger.tx import Tx
from liangcao.procs import name_this_thread

#: (envelope id, tx id, [(raw public key, signature)]). Verdicts are keyed by the envelope: two envelopes of
#: one tx id (a genuine one and a copy with a junk signature) must never share one.
Item = tuple[str, str, list[tuple[bytes, bytes]]]

T = TypeVar("T")

#: Below this many transactions a batch is verified inline: the pool's round trip would cost more.
INLINE_TXS_MAX = 32


@lru_cache(maxsize=4096)
def _public(raw: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(raw)


def verify_items(items: list[Item]) -> list[tuple[str, bool]]:
    out = []
    for envelope_id, tx_id, sigs in items:
        msg = keys.DOMAIN_TX + bytes.fromhex(tx_id)
        ok = True
        for pub, sig in sigs:
            try:
                _public(pub).verify(sig, msg)
            except (InvalidSignature, ValueError):
                ok = False
                break
        out.append((envelope_id, ok))
    return out


def _exit_with_parent(parent: int, name: str = "", every_s: float = 0.5) -> None:
    """In a worker: a daemon thread that ends the process as soon as ``parent`` is no longer its parent.

    The worker also ignores Ctrl-C: it is in its owner's process group, so a Ctrl-C at the terminal reached
    it too and it died with a traceback of its own while the owner was stopping it in order. ``name`` is what
    ``top`` and ``ps -o comm`` show for it (and what the trace bench accounts its CPU time under)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if name:
        name_this_thread(name)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        os._exit(0)

    threading.Thread(target=watch, name="liangcao-parent-watch", daemon=True).start()


class SigVerifier:
    def __init__(self, workers: int | None = None, certs: CertCache | None = None) -> None:
        self.workers = workers if workers is not None else (os.cpu_count() or 1)
        self.certs = certs or CertCache()
        self._pool: ProcessPoolExecutor | None = None
        if self.workers > 1:
            # spawn, not fork: the node has threads, and forking a threaded process is unsafe. Each worker
            # watches its parent and exits when the node is gone, even killed with SIGKILL (spawned workers
            # hold their own end of the task pipe, so they would otherwise wait on it for ever).
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_exit_with_parent,
                initargs=(os.getpid(), "lc-verify"),
            )

    def items(self, txs: list[Tx]) -> list[Item]:
        items: list[Item] = []
        for tx in txs:
            sigs = []
            try:
                for s in tx.signatures:
                    sigs.append((keys.public_raw(self.certs.parse(s.cert).public_key), s.sig))
            except CertificateError:
                continue  # the executor reports the certificate problem itself
            if sigs:
                items.append((tx.envelope_id, tx.tx_id, sigs))
        return items

    def submit(self, txs: list[Tx]) -> list[Future[list[tuple[str, bool]]]]:
        items = self.items(txs)
        if self._pool is None or len(items) < INLINE_TXS_MAX:
            f: Future[list[tuple[str, bool]]] = Future()
            f.set_result(verify_items(items))
            return [f]
        n = self.workers
        chunk = (len(items) + n - 1) // n
        return [self._pool.submit(verify_items, items[i : i + chunk]) for i in range(0, len(items), chunk)]

    @staticmethod
    def gather(futures: list[Future[list[tuple[str, bool]]]]) -> dict[str, bool]:
        out: dict[str, bool] = {}
        for f in futures:
            out.update(f.result())
        return out

    def verify(self, txs: list[Tx]) -> dict[str, bool]:
        return self.gather(self.submit(txs))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class Workers:
    """Worker processes for pure work taken off the node's interpreter (``Node._precompute``), apart from the
    signature verifiers so that admission never waits behind it, with at most ``in_flight_max`` jobs queued:
    past that (the workers fall behind), :meth:`offload` declines and the work stays where it was."""

    def __init__(self, workers: int, in_flight_max: int = 4096, name: str = "lc-worker") -> None:
        self.workers = workers
        self.in_flight_max = in_flight_max
        self._in_flight = 0
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        if workers > 0:  # spawn, each watching its parent: see SigVerifier
            self._pool = ProcessPoolExecutor(
                workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_exit_with_parent,
                initargs=(os.getpid(), name),
            )

    def offload(self, fn: Callable[..., T], *args: Any) -> Future[T] | None:
        """Run ``fn(*args)`` in a worker (``fn`` importable there); None without workers or when they are
        ``in_flight_max`` jobs behind: the caller then leaves the work where it was."""
        with self._lock:
            if self._pool is None or self._in_flight >= self.in_flight_max:
                return None
            try:
                future = self._pool.submit(fn, *args)
            except RuntimeError:  # a worker died (BrokenProcessPool) or the pool is shutting down: do without
                return None
            self._in_flight += 1
        future.add_done_callback(self._done)
        return future

    @property
    def in_flight(self) -> int:
        """Jobs submitted and not yet done."""
        return self._in_flight

    def _done(self, _: Future[Any]) -> None:
        with self._lock:
            self._in_flight -= 1

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
