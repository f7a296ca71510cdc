"""The bounded mempool: admission checks, dedupe by tx id, FIFO order, and the solo cut."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from liangcao import limits
from liangcao.clock import now_ms
from liangcao.codes import Code
from liangcao.errors import TxRejected
from liangcao.ledger.tx import Tx
from liangcao.ordering import solo


class Mempool:
    """Transactions admitted but not yet in a block. Thread-safe."""

    def __init__(self, size_max: int = limits.mempool_txs_max, clock: Callable[[], int] = now_ms) -> None:
        self.size_max = size_max
        self._clock = clock
        self._items: OrderedDict[str, tuple[Tx, int]] = OrderedDict()
        self._cond = threading.Condition()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, tx: Tx) -> bool:
        """Admit ``tx``; False if the same tx id is already pending. Raises MEMPOOL_FULL when full."""
        with self._cond:
            if tx.tx_id in self._items:
                return False
            if len(self._items) >= self.size_max:
                raise TxRejected(
                    Code.MEMPOOL_FULL, f"the mempool holds mempool_txs_max={self.size_max} transactions; retry later"
                )
            self._items[tx.tx_id] = (tx, self._clock())
            self._cond.notify_all()
            return True

    def add_many(self, txs: list[Tx]) -> list[TxRejected | bool]:
        return [self._try(t) for t in txs]

    def _try(self, tx: Tx) -> TxRejected | bool:
        try:
            return self.add(tx)
        except TxRejected as exc:
            return exc

    def contains(self, tx_id: str) -> bool:
        return tx_id in self._items

    def take(
        self, *, block_txs_max: int, block_wait_ms: int, timeout_s: float, stopping: Callable[[], bool]
    ) -> list[Tx]:
        """Block until the cutter says cut (or ``timeout_s`` passes); remove and return the cut."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                oldest = next(iter(self._items.values()))[1] if self._items else None
                cut = solo.decide(
                    len(self._items),
                    oldest,
                    self._clock(),
                    block_txs_max=block_txs_max,
                    block_wait_ms=block_wait_ms,
                    stopping=stopping(),
                )
                if cut.count:
                    return self._pop(cut.count)
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._cond.wait(left if cut.wait_ms < 0 else min(left, cut.wait_ms / 1000))

    def _pop(self, count: int) -> list[Tx]:
        """Up to ``count`` oldest transactions whose bytes fit in ``block_bytes_max`` (at least one)."""
        out: list[Tx] = []
        size = 0
        while self._items and len(out) < count:
            tx = next(iter(self._items.values()))[0]
            if out and size + len(tx.raw) > limits.block_bytes_max:
                break  # the rest waits for the next block: a block never outgrows what peers accept
            self._items.popitem(last=False)
            out.append(tx)
            size += len(tx.raw)
        return out

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()
