"""The solo block cutter: a pure decision, given what is pending and the time.

============================================  =========================================
situation                                     decision
============================================  =========================================
nothing pending                               wait (no empty blocks)
pending >= ``block_txs_max``                  cut ``block_txs_max`` now
pending > 0, ``block_wait_ms`` elapsed since  cut everything pending now
the oldest pending transaction arrived
pending > 0, stopping (graceful shutdown)     cut everything pending now
otherwise                                     wait until the oldest is ``block_wait_ms`` old
============================================  =========================================

Unlike Fabric's block cutter this never reads the clock itself: the caller passes ``now_ms``.
"""

from __future__ import annotations

import queue
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from liangcao import limits
from liangcao.clock import now_ms
from liangcao.ledger.tx import Tx
from liangcao.ordering.jetstream import CUT, TX, CutMarker, CutPolicy, StreamMessage
from liangcao.ordering.memory import LinkStatus, OnAttestation, Position, PublishRefused


@dataclass(frozen=True, slots=True)
class Cut:
    count: int  # how many to take now (0: none)
    wait_ms: int  # if count == 0 and pending, how long until a cut is due; -1: until something arrives


def decide(
    pending: int, oldest_ms: int | None, now_ms: int, *, block_txs_max: int, block_wait_ms: int, stopping: bool = False
) -> Cut:
    if pending <= 0 or oldest_ms is None:
        return Cut(0, -1)
    if pending >= block_txs_max:
        return Cut(block_txs_max, 0)
    due = oldest_ms + block_wait_ms
    if stopping or now_ms >= due:
        return Cut(pending, 0)
    return Cut(0, due - now_ms)


class LogFull(PublishRefused):
    """The solo log holds ``pending_max`` transactions not yet in a block: the submitter retries later."""


class SoloLink:
    """The embedded orderer behind the ordering protocol (:class:`~liangcao.ordering.memory.OrderingLink`).

    A solo node runs exactly the consortium peer's loop (derive, verify, execute, commit, attest); only its
    log differs: it lives in the node's process and nowhere else. Publishing hands each transaction, already
    parsed, straight to the peer's queue under one lock, so transactions and cuts share one order; the
    orderer thread signs a cut for the peer's next height when :func:`decide` says so. Nothing of the log is
    kept: what was admitted and not yet committed when the process dies was never acknowledged as committed,
    and a restart numbers the log afresh from the head (``follow_stream``).

    ``clock`` is the node's (chain) clock: it stamps messages and cuts alike, so the cut-time check against
    the log's own timestamp holds even when an operator moves the node's clock forward (the demo does).
    """

    local = True

    def __init__(
        self, chain_id: str, clock: Callable[[], int], pending_max: int, bytes_max: int = limits.mempool_bytes_max
    ) -> None:
        self.chain_id = chain_id
        self.clock = clock
        self.pending_max = pending_max
        self.bytes_max = bytes_max
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._seq = 0
        self._on_message: Callable[[StreamMessage], None] | None = None
        self._position: Callable[[], tuple[int, int, float | None]] | None = None
        self._held: Callable[[], int] = lambda: 0
        self._held_bytes: Callable[[], int] = lambda: 0
        #: envelopes published and (probably) not yet committed, as JetStream's duplicate window keeps them
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._draining = False
        self._closed = False
        self._orderer: threading.Thread | None = None
        self.cuts_published = 0

    # ---- OrderingLink -----------------------------------------------------------------------------------
    def publish_tx(self, raw: bytes, envelope_id: str, timeout_s: float = 5.0) -> int:
        error = self.publish_many([(raw, envelope_id)], timeout_s)[0]
        if error is not None:
            raise error
        return self._seq

    def publish_many(
        self, items: list[tuple[bytes, str]], timeout_s: float = 10.0, parsed: Sequence[Tx] | None = None
    ) -> list[BaseException | None]:
        out: list[BaseException | None] = []
        with self._lock:
            deliver = self._on_message
            for i, (raw, envelope_id) in enumerate(items):
                if deliver is None or self._closed:
                    out.append(PublishRefused("the node is not running"))
                    continue
                if envelope_id in self._recent:  # the same envelope again: held once, as JetStream does
                    out.append(None)
                    continue
                if self._held() >= self.pending_max:
                    out.append(
                        LogFull(f"the mempool holds mempool_txs_max={self.pending_max} transactions; retry later")
                    )
                    continue
                held_bytes = self._held_bytes()
                if held_bytes and held_bytes + len(raw) > self.bytes_max:  # an empty mempool takes any one
                    out.append(
                        LogFull(
                            f"the mempool holds {held_bytes} bytes of transactions and this one is {len(raw)} "
                            f"(mempool_bytes_max={self.bytes_max}); retry later"
                        )
                    )
                    continue
                try:
                    deliver(StreamMessage(self._seq + 1, TX, raw, self.clock(), parsed[i] if parsed else None))
                except queue.Full:
                    out.append(LogFull(f"the mempool holds mempool_txs_max={self.pending_max} transactions"))
                    continue
                self._seq += 1
                self._recent[envelope_id] = None
                if len(self._recent) > 2 * self.pending_max:
                    self._recent.popitem(last=False)
                out.append(None)
            self._wake.notify_all()
        return out

    def holds(self, envelope_id: str) -> bool:
        """Whether this envelope was published recently (and is probably pending): published again, it is
        taken as the same entry."""
        return envelope_id in self._recent

    def follow_stream(self, start_seq: int, on_message: Callable[[StreamMessage], None]) -> None:
        with self._lock:
            self._seq = start_seq - 1
            self._on_message = on_message

    def hold(self, held: Callable[[], int], held_bytes: Callable[[], int] | None = None) -> None:
        """How many transactions the peer holds, admitted and not yet cut (its queue and its deriver's
        pending list), and their encoded size in bytes: the log refuses beyond ``pending_max`` transactions or
        ``bytes_max`` bytes, as a full mempool does. The peer counts a transaction's bytes when it is delivered
        (under this log's lock) and releases them when it leaves the pending list (cut into a block, or dropped)."""
        self._held = held
        if held_bytes is not None:
            self._held_bytes = held_bytes

    def publish_attestation(self, att: bytes, height: int | None = None) -> None:
        pass  # no other peer reads it: the node keeps its attestation in its store; witnesses collect it

    def follow_attestations(self, start_seq: int, on_att: OnAttestation) -> None:
        pass

    def stop_attestations(self) -> None:
        pass

    def fetch_attestations(self, heights: list[int]) -> None:
        pass

    def status(self) -> LinkStatus:
        return LinkStatus(connected=not self._closed, last_ok_ms=now_ms(), stream_last_seq=self._seq)

    def run_orderer(self, signer: Any, *, policy: CutPolicy, position: Position) -> None:
        self._position = position
        self._orderer = threading.Thread(
            target=self._order, args=(signer, policy), name="liangcao-orderer", daemon=True
        )
        self._orderer.start()

    def drain(self) -> bool:
        """Cut everything pending now, whatever the policy says (a graceful stop). Whether this link holds
        pending transactions of its own to drain (a consortium's stream keeps flowing without this peer)."""
        with self._lock:
            self._draining = True
            self._wake.notify_all()
        return True

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._on_message = None
            self._wake.notify_all()
        if self._orderer is not None and self._orderer is not threading.current_thread():
            self._orderer.join(5)
        self._orderer = None

    # ---- the orderer ------------------------------------------------------------------------------------
    def _order(self, signer: Any, policy: CutPolicy) -> None:
        """Cut for the peer's next height when due. A cut not yet taken by the peer is not repeated for
        RECUT_MS: the peer takes messages in order, and its queue may hold thousands before the cut."""
        sent: tuple[int, float] | None = None
        while True:
            with self._lock:
                if self._closed:
                    return
                assert self._position is not None
                height, pending, since = self._position()
                now = now_ms()
                wait_s = 0.5
                if height > 0 and pending > 0 and since is not None:
                    due = pending >= policy.block_txs_max or now - since >= policy.block_wait_ms or self._draining
                    fresh = sent is None or sent[0] != height or now - sent[1] >= RECUT_MS
                    if due and fresh:
                        if self._cut(signer, height):
                            sent = (height, now)
                        wait_s = 0.001
                    elif not due:
                        wait_s = max(0.001, (since + policy.block_wait_ms - now) / 1000)
                    else:  # sent and not yet taken: the peer pokes when it takes a cut (``poke``)
                        wait_s = min(0.05, max(0.001, (sent[1] + RECUT_MS - now) / 1000)) if sent else 0.002
                self._wake.wait(wait_s)

    def poke(self) -> None:
        """The peer took a cut (its next height moved): look again now. Without it the orderer would poll its
        peer's position every few milliseconds while a block executes, and take the peer's interpreter with it."""
        with self._lock:
            self._wake.notify_all()

    def _cut(self, signer: Any, height: int) -> bool:
        """Append a signed cut for ``height`` after everything published so far (the caller holds the lock)."""
        deliver = self._on_message
        if deliver is None:
            return False
        time_ms = self.clock()
        marker = CutMarker.make(self.chain_id, height, time_ms, signer.member_id, signer.key, signer.cert)
        try:
            deliver(StreamMessage(self._seq + 1, CUT, marker.to_bytes(), time_ms))
        except queue.Full:  # the peer's queue is full of transactions: cut once it has room
            return False
        self._seq += 1
        self.cuts_published += 1
        return True


#: A solo cut the peer has not taken this long after it was sent is sent again (the peer judged it early).
RECUT_MS = 1_000
