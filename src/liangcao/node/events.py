"""Committed blocks, delivered to asyncio: clients waiting for their transaction, and event streams.

Theory of operation
-------------------
The commit thread calls :meth:`Hub.on_block` after a block is durable (a node listener). The hub hands the
block to the event loop (``call_soon_threadsafe``), where it resolves the futures of clients waiting for a
transaction and feeds every subscribed stream's bounded queue. A stream that falls ``sse_queue_max`` blocks
behind is cut off (its queue gets an end marker) rather than let one slow reader hold memory without bound;
it resumes from the store with the id of the last event it saw.

:func:`follow` is one stream: a replay from the store in windows of heights up to the head as it was when
the replay started, then live blocks from the hub, skipping what the replay already sent. It yields
``(kind, id, data)`` items; the interface formats them (``liangcao.api.events``: server-sent events). The
credential that opened a stream is re-checked as it goes (``token_void``), so a stream ends with its token,
and every stream ends at once when the node shuts down (:meth:`Hub.close`), so that SIGTERM is never held
up by an open explorer tab.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

from liangcao import limits
from liangcao.node.node import Committed, Node

replay_window_blocks = limits.replay_window_blocks
sse_queue_max = limits.sse_queue_max
token_check_s = 1.0  # an idle stream re-checks its credential (expiry, revocation) this often

#: One item of a stream: ``("contract", "H-I-S", event)``, ``("block", "H", block)`` or ``("end", "", why)``.
StreamItem = tuple[str, str, Any]


class Hub:
    """Bridges the commit thread to asyncio: waiting submitters and event-stream subscribers."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        # tx id -> (future, the envelope the waiter submitted): see _deliver
        self.waiters: dict[str, list[tuple[asyncio.Future[tuple[int, int, int]], str | None]]] = {}
        self.subscribers: set[asyncio.Queue[Committed | None]] = set()
        #: set when the node is shutting down: every stream ends (with an ``end`` item) and no new one follows
        self.closing = False

    def close(self) -> None:  # event loop
        """End every stream now (the server is stopping): each gets its end marker at once, streams still
        replaying stop at their next window, and any opened later ends at once. Idempotent."""
        self.closing = True
        for q in list(self.subscribers):
            self.subscribers.discard(q)
            with contextlib.suppress(asyncio.QueueEmpty):
                q.get_nowait()  # make room for the end-of-stream marker
            q.put_nowait(None)

    def close_threadsafe(self) -> None:
        """:meth:`close` from any thread (or a signal handler): scheduled on the hub's loop."""
        self.closing = True
        loop = self.loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop is already gone
                loop.call_soon_threadsafe(self.close)

    def on_block(self, info: Committed) -> None:  # commit thread
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._deliver, info)

    def _deliver(self, info: Committed) -> None:  # event loop
        # A waiter hears the occurrence that consumed its tx id, or the failure of its own envelope; never the
        # failure of another envelope with the same id (a forged copy must not answer for the genuine one).
        for i, tx_id in enumerate(info.tx_ids):
            waiting = self.waiters.get(tx_id)
            if not waiting:
                continue
            consumed = info.consumed[i] if i < len(info.consumed) else True
            envelope = info.envelope_ids[i] if i < len(info.envelope_ids) else None
            keep: list[tuple[asyncio.Future[tuple[int, int, int]], str | None]] = []
            for fut, mine in waiting:
                if consumed or mine is None or mine == envelope:
                    if not fut.done():
                        fut.set_result((info.header.height, i, info.codes[i]))
                else:
                    keep.append((fut, mine))
            if keep:
                self.waiters[tx_id] = keep
            else:
                del self.waiters[tx_id]
        for q in list(self.subscribers):
            try:
                q.put_nowait(info)
            except asyncio.QueueFull:  # a slow reader is cut off; it resumes with Last-Event-ID
                self.subscribers.discard(q)
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()  # make room for the end-of-stream marker
                q.put_nowait(None)

    def wait_for(self, tx_id: str, envelope_id: str | None = None) -> asyncio.Future[tuple[int, int, int]]:
        """A future resolved with ``(height, index, code)`` when ``tx_id`` is consumed, or when the envelope
        ``envelope_id`` (the one the waiter submitted) is recorded as failed (event loop only)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[int, int, int]] = loop.create_future()
        self.waiters.setdefault(tx_id, []).append((fut, envelope_id))
        return fut

    def subscribe(self) -> asyncio.Queue[Committed | None]:
        """A queue that receives every committed block from now on (``None``: cut off, too slow)."""
        queue: asyncio.Queue[Committed | None] = asyncio.Queue(sse_queue_max)
        self.subscribers.add(queue)
        return queue


#: why a stream ended because its node is shutting down (the client resumes elsewhere or later)
SHUTTING_DOWN = "the node is shutting down; resume with Last-Event-ID"


def open_stream(
    node: Node,
    hub: Hub,
    *,
    start: int,
    skip_upto: tuple[int, int, int] | None,
    contract: str | None,
    name: str | None,
    blocks: bool,
    follow: bool,
    token_void: Callable[[], str | None],
    token_exp_ms: int,
) -> AsyncGenerator[StreamItem, None]:
    """A stream of committed events from height ``start``, subscribed to live blocks *now* (when ``follow``),
    so that nothing committed between this call and the first read of the stream is missed.

    ``skip_upto``: ``(height, index, seq)`` of the last event the reader saw (a resume); ``token_void()``:
    None while the credential that opened the stream holds, otherwise why not."""
    queue: asyncio.Queue[Committed | None] = (
        hub.subscribe() if follow and not hub.closing else asyncio.Queue(sse_queue_max)
    )
    return _stream(node, queue, hub, start, skip_upto, contract, name, blocks, follow, token_void, token_exp_ms)


async def _stream(
    node: Node,
    queue: asyncio.Queue[Committed | None],
    hub: Hub,
    start: int,
    skip_upto: tuple[int, int, int] | None,
    contract: str | None,
    name: str | None,
    blocks: bool,
    follow: bool,
    token_void: Callable[[], str | None],
    token_exp_ms: int,
) -> AsyncGenerator[StreamItem, None]:
    """Replay, then live blocks. Ends (with an ``end`` item) as soon as ``token_void()`` says why the token
    that opened the stream no longer holds: checked between replay windows, before every live block and at
    least every ``token_check_s`` while idle."""

    def wanted(ev: dict[str, Any]) -> bool:
        return (contract is None or ev["contract"] == contract) and (name is None or ev["name"] == name)

    def after_resume(h: int, i: int, s: int) -> bool:
        return skip_upto is None or (h, i, s) > skip_upto

    getter: asyncio.Task[Committed | None] | None = None
    try:
        # 1. Replay from the store, in windows of heights, up to the head as it is now.
        store = node.reader()
        sent_height = start - 1
        top = store.height()
        for lo in range(start, top + 1, replay_window_blocks):
            if (why := token_void() or (SHUTTING_DOWN if hub.closing else None)) is not None:
                yield "end", "", why
                return
            hi = min(top, lo + replay_window_blocks - 1)
            rows = await asyncio.to_thread(store.events, contract, name, lo, 1 << 30, hi)
            by_height: dict[int, list[dict[str, Any]]] = {}
            for r in rows:
                by_height.setdefault(r["height"], []).append(r)
            for hh in range(lo, hi + 1):
                evs = by_height.get(hh, [])
                ids = await asyncio.to_thread(store.block_tx_ids, hh) if evs else []
                for r in evs:
                    if after_resume(hh, r["idx"], r["seq"]):
                        yield "contract", f"{hh}-{r['idx']}-{r['seq']}", {**r, "tx_id": ids[r["idx"]]}
                if blocks and after_resume(hh, 1 << 62, 1 << 62) and (header := store.header(hh)) is not None:
                    ids = ids or await asyncio.to_thread(store.block_tx_ids, hh)
                    yield "block", str(hh), {"header": header.to_dict(), "block_hash": header.hash, "tx_ids": ids}
                sent_height = hh
        if not follow:
            return
        # 2. Live blocks, skipping what the replay already sent; the token is re-checked while waiting.
        while True:
            if (why := token_void() or (SHUTTING_DOWN if hub.closing else None)) is not None:
                yield "end", "", why
                return
            if getter is None:
                getter = asyncio.ensure_future(queue.get())
            left_s = max(0.0, token_exp_ms / 1000 - time.time())
            done, _ = await asyncio.wait({getter}, timeout=min(token_check_s, left_s + 0.001))
            if not done:
                continue
            info, getter = getter.result(), None
            if (why := token_void()) is not None:
                yield "end", "", why
                return
            if info is None:  # cut off: too slow, or the node is shutting down
                if hub.closing:
                    yield "end", "", SHUTTING_DOWN
                return
            hh = info.header.height
            if hh <= sent_height:
                continue
            for i, evs in enumerate(info.events):
                for s, ev in enumerate(evs):
                    if wanted(ev):
                        data = {"height": hh, "idx": i, "seq": s, **ev, "tx_id": info.tx_ids[i]}
                        yield "contract", f"{hh}-{i}-{s}", data
            if blocks:
                block_msg = {"header": info.header.to_dict(), "block_hash": info.header.hash, "tx_ids": info.tx_ids}
                yield "block", str(hh), block_msg
            sent_height = hh
    finally:
        if getter is not None:
            getter.cancel()
        hub.subscribers.discard(queue)
