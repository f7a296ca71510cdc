"""A node's link to the consortium's JetStream cluster: the asyncio side, run on a thread of its own.

The node is threaded (API threads, one commit thread); nats-py is asyncio. ``JetStreamLink`` owns an event
loop on a background thread and offers blocking calls to the node: publish transactions (each returns when
a majority of the stream's replicas hold it, or says why not, or that the outcome is unknown), follow the
chain's blocks from a resume point, publish, follow and fetch attestations, probe the ordering service for
health, and run this organisation's orderer.

Attestations go to a second stream (``LIANGCAO_ATT_<chain>``, same replicas), each under the subject of the
height it attests (``lc.<chain>.att.<height>``), so a peer that was down, starts empty or missed one can
fetch every attestation of one height again (:meth:`JetStreamLink.fetch_attestations`).

Publishing attestations is *acknowledged and retried*: ``publish_attestation`` puts the attestation in an
outbox, and a task publishes what the outbox holds and keeps each one until the stream acknowledged it (a
leader election, a server restart or a lost connection only delays it). Each is published with its hash as
``Nats-Msg-Id``, so a retry of one that was stored after all is dropped by the server.

Publishing transactions tells a refusal from an unknown outcome. An answer from the server that it did not
store the message (no stream responded, an API error) is a refusal (:class:`PublishRefused`); no answer in
time (a timeout while the stream elects a leader, a connection lost after the request went out) is
:class:`PublishUnknown`: the transaction may be in the stream and be committed. Both are retried with the
same ``Nats-Msg-Id`` (the envelope hash, deduplicated by the server for two minutes) until the deadline, so
most ambiguous outcomes become acknowledgements.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from liangcao.ordering.jetstream import (
    HEARTBEAT_S,
    CutPolicy,
    Orderer,
    StreamMessage,
    ensure_stream,
    replicas_for,
    stream_name,
    subject,
    subscribe_from,
    token,
)
from liangcao.ordering.memory import LinkStatus, OnAttestation, PublishRefused, PublishUnknown, att_height

log = logging.getLogger("liangcao.link")

#: Attestations waiting for an acknowledgement; beyond this the oldest are dropped (and counted): the peer
#: re-announces its attestations of blocks that are not final (``Node``), so none is lost for good.
ATT_OUTBOX_MAX = 100_000
ATT_BATCH = 256  # attestations published at once (their acknowledgements awaited together)
PUBLISH_TRY_S = 2.5  # one publishing attempt waits this long for the acknowledgement
PROBE_EVERY_S = 1.0  # the ordering service is probed this often (stream info: reachable, last sequence)
FETCH_CONCURRENCY = 16  # heights fetched at once by fetch_attestations


def att_stream(chain_id: str) -> str:
    return "LIANGCAO_ATT_" + token(chain_id)


def att_subject(chain_id: str, height: int | None = None) -> str:
    """``lc.<chain>.att.<height>`` for an attestation of ``height``; ``lc.<chain>.att`` for bytes that name
    no height (junk, kept in the stream as it was published)."""
    base = subject(chain_id, "att")
    return base if height is None else f"{base}.{height}"


def att_filter(chain_id: str) -> str:
    """Every subject of the attestation stream (both forms above)."""
    return f"lc.{token(chain_id)}.>"


def _ms() -> int:
    return time.time_ns() // 1_000_000


class _Pending:
    __slots__ = ("height", "msg_id", "raw", "since_ms")

    def __init__(self, raw: bytes, height: int | None, since_ms: int) -> None:
        self.raw = raw
        self.height = height
        self.msg_id = hashlib.sha256(raw).hexdigest()
        self.since_ms = since_ms


def _definitive(exc: BaseException) -> bool:
    """Whether a failed publish is an answer that the message was not stored (else the outcome is unknown)."""
    from nats.errors import NoRespondersError
    from nats.js.errors import APIError, NoStreamResponseError

    return isinstance(exc, NoStreamResponseError | NoRespondersError | APIError)


class JetStreamLink:
    def __init__(self, urls: list[str], chain_id: str, organisations: int, *, connect_timeout_s: float = 60) -> None:
        self.urls = urls
        self.chain_id = chain_id
        self.replicas = replicas_for(organisations)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="liangcao-jetstream", daemon=True)
        self._thread.start()
        self._stop = asyncio.Event()
        self._tasks: list[Any] = []
        self._subs: list[Any] = []
        self._att_sub: Any = None
        self._on_att: OnAttestation | None = None
        self._outbox: deque[_Pending] = deque()
        self._outbox_ready = asyncio.Event()
        self._fetching: set[int] = set()
        self._closing = False
        # what status() reports (written on the loop, read anywhere)
        self._last_ok_ms: int | None = None
        self._stream_last_seq: int | None = None
        self._error = ""
        self.att_dropped = 0
        self.att_published = 0
        self.nc: Any = None
        self.js: Any = None
        try:
            self._call(self._connect(connect_timeout_s), connect_timeout_s + 5)
        except BaseException:
            self._shutdown_loop()
            raise
        for coro in (self._publish_attestations(), self._probe()):
            self._call(self._spawn(coro))

    def _call(self, coro: Any, timeout_s: float = 30) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout_s)

    async def _spawn(self, coro: Any) -> None:
        self._tasks.append(asyncio.ensure_future(coro))

    async def _connect(self, timeout_s: float) -> None:
        import nats
        from nats.js.api import StorageType, StreamConfig
        from nats.js.errors import NotFoundError

        self.nc = await nats.connect(
            servers=self.urls, max_reconnect_attempts=-1, reconnect_time_wait=0.2, connect_timeout=2
        )
        self.js = self.nc.jetstream()
        subjects = [att_subject(self.chain_id), att_subject(self.chain_id) + ".*"]
        deadline = time.monotonic() + timeout_s
        while True:  # a new cluster elects its JetStream leader first
            try:
                await ensure_stream(self.js, self.chain_id, self.replicas)
                try:
                    info = await self.js.stream_info(att_stream(self.chain_id))
                    if set(info.config.subjects or []) != set(subjects):  # a stream made before per-height subjects
                        info.config.subjects = subjects
                        await self.js.update_stream(info.config)
                except NotFoundError:
                    cfg = StreamConfig(
                        name=att_stream(self.chain_id),
                        subjects=subjects,
                        storage=StorageType.FILE,
                        num_replicas=self.replicas,
                        duplicate_window=120.0,
                    )
                    await self.js.add_stream(cfg)
                self._last_ok_ms = _ms()
                return
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"JetStream at {self.urls} not ready: {exc}") from exc
                await asyncio.sleep(0.2)

    # ---- transactions -----------------------------------------------------------------------------------
    async def _publish_tx(self, raw: bytes, envelope_id: str, deadline: float) -> int:
        """Publish until acknowledged or ``deadline``; raises PublishRefused or PublishUnknown."""
        unknown = False
        last: BaseException | None = None
        pause = 0.05
        while True:
            left = deadline - time.monotonic()
            try:
                ack = await self.js.publish(
                    subject(self.chain_id, "tx"),
                    raw,
                    timeout=max(0.05, min(PUBLISH_TRY_S, left)),
                    headers={"Nats-Msg-Id": envelope_id},
                )
                self._last_ok_ms = _ms()
                return int(ack.seq)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                last = exc
                unknown = unknown or not _definitive(exc)
            if time.monotonic() + pause >= deadline:
                break
            await asyncio.sleep(pause)
            pause = min(0.5, pause * 2)
        why = f"{type(last).__name__}: {last}" if last is not None else "no answer"
        if unknown:
            raise PublishUnknown(f"the ordering service did not confirm in time ({why})")
        raise PublishRefused(why)

    def publish_tx(self, raw: bytes, envelope_id: str, timeout_s: float = 5.0) -> int:
        deadline = time.monotonic() + timeout_s
        return int(self._call(self._publish_tx(raw, envelope_id, deadline), timeout_s + 5))

    def publish_many(self, items: list[tuple[bytes, str]], timeout_s: float = 10.0) -> list[BaseException | None]:
        """Publish many transactions at once (their acks awaited together); for each None, PublishRefused
        or PublishUnknown (see the module docstring)."""
        deadline = time.monotonic() + timeout_s

        async def many() -> list[Any]:
            return await asyncio.gather(
                *(self._publish_tx(raw, env, deadline) for raw, env in items), return_exceptions=True
            )

        try:
            results = self._call(many(), timeout_s + 5)
        except Exception as exc:  # the loop did not answer at all: nothing is known of any of them
            return [PublishUnknown(f"the ordering link did not answer: {exc!r}") for _ in items]
        out: list[BaseException | None] = []
        for r in results:
            if not isinstance(r, BaseException):
                out.append(None)
            elif isinstance(r, PublishRefused | PublishUnknown):
                out.append(r)
            else:
                out.append(PublishUnknown(f"{type(r).__name__}: {r}"))
        return out

    # ---- blocks -----------------------------------------------------------------------------------------
    def follow_stream(self, start_seq: int, on_message: Callable[[StreamMessage], None]) -> None:
        """Hand every message of the chain's stream from ``start_seq`` on to ``on_message``, in order.

        The peer derives blocks on its commit thread, not here: a cut is judged by the configuration after
        the block before it, which only the commit thread knows."""
        self._subs.append(self._call(subscribe_from(self.js, self.chain_id, start_seq, on_message)))

    # ---- attestations -----------------------------------------------------------------------------------
    def publish_attestation(self, att: bytes, height: int | None = None) -> None:
        """Queue ``att``; it is published, and re-published until the stream acknowledges it."""
        h = height if height is not None else att_height(att)
        self.loop.call_soon_threadsafe(self._enqueue, _Pending(att, h, _ms()))

    def _enqueue(self, item: _Pending) -> None:  # loop
        if len(self._outbox) >= ATT_OUTBOX_MAX:
            self._outbox.popleft()
            self.att_dropped += 1
            if self.att_dropped in (1, 10, 100) or self.att_dropped % 1000 == 0:
                log.error("attestation outbox full: %s dropped so far (re-announced while not final)", self.att_dropped)
        self._outbox.append(item)
        self._outbox_ready.set()

    async def _publish_attestations(self) -> None:
        """Publish the outbox, keeping each attestation until the stream acknowledged it."""
        pause = 0.05
        while not self._stop.is_set():
            if not self._outbox:
                self._outbox_ready.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._outbox_ready.wait(), 1.0)
                continue
            batch = [self._outbox[i] for i in range(min(ATT_BATCH, len(self._outbox)))]
            results = await asyncio.gather(
                *(
                    self.js.publish(
                        att_subject(self.chain_id, p.height),
                        p.raw,
                        timeout=PUBLISH_TRY_S,
                        headers={"Nats-Msg-Id": p.msg_id},
                    )
                    for p in batch
                ),
                return_exceptions=True,
            )
            acked = {id(p) for p, r in zip(batch, results, strict=True) if not isinstance(r, BaseException)}
            if acked:
                self._outbox = deque(p for p in self._outbox if id(p) not in acked)
                self.att_published += len(acked)
                self._last_ok_ms = _ms()
            if len(acked) < len(batch):
                failed = next(r for r in results if isinstance(r, BaseException))
                self._error = f"attestations not acknowledged: {type(failed).__name__}: {failed}"
                await asyncio.sleep(pause)
                pause = min(2.0, pause * 2)
            else:
                pause = 0.05

    def follow_attestations(self, start_seq: int, on_att: OnAttestation) -> None:
        """Every attestation from stream position ``start_seq`` on, with its position; replaces the previous
        subscription."""
        from nats.js.api import ConsumerConfig, DeliverPolicy

        self._on_att = on_att

        async def handler(msg: Any) -> None:
            cb = self._on_att
            if cb is not None:
                cb(int(msg.metadata.sequence.stream), msg.data)

        async def sub() -> None:
            if self._att_sub is not None:
                old, self._att_sub = self._att_sub, None
                with contextlib.suppress(Exception):
                    await old.unsubscribe()
            config = (
                ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
                if start_seq <= 1
                else ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start_seq)
            )
            self._att_sub = await self.js.subscribe(
                att_filter(self.chain_id),
                stream=att_stream(self.chain_id),
                cb=handler,
                ordered_consumer=True,
                config=config,
                idle_heartbeat=HEARTBEAT_S,
            )

        self._call(sub())

    def stop_attestations(self) -> None:
        """Stop following the attestation stream (until :meth:`follow_attestations` is called again)."""

        async def unsub() -> None:
            if self._att_sub is not None:
                old, self._att_sub = self._att_sub, None
                with contextlib.suppress(Exception):
                    await old.unsubscribe()

        asyncio.run_coroutine_threadsafe(unsub(), self.loop)

    def fetch_attestations(self, heights: list[int]) -> None:
        """Deliver again every attestation the stream holds for ``heights`` (in the background)."""
        self.loop.call_soon_threadsafe(self._start_fetch, list(heights))

    def _start_fetch(self, heights: list[int]) -> None:  # loop
        todo = [h for h in heights if h not in self._fetching]
        if todo:
            self._fetching.update(todo)
            self._tasks.append(asyncio.ensure_future(self._fetch(todo)))
            self._tasks = [t for t in self._tasks if not t.done()]

    async def _fetch(self, heights: list[int]) -> None:
        from nats.js.errors import NotFoundError

        gate = asyncio.Semaphore(FETCH_CONCURRENCY)
        stream = att_stream(self.chain_id)

        async def one(h: int) -> None:
            async with gate:
                seq = 1
                try:
                    while not self._stop.is_set():
                        try:
                            msg = await self.js._jsm.get_msg(
                                stream, seq=seq, subject=att_subject(self.chain_id, h), next=True
                            )
                        except NotFoundError:
                            return
                        cb = self._on_att
                        if cb is not None and msg.data is not None:
                            cb(int(msg.seq), msg.data)
                        seq = int(msg.seq) + 1
                except Exception as exc:  # the service is away: the peer asks again later
                    log.warning("fetching attestations of height %s: %r", h, exc)
                finally:
                    self._fetching.discard(h)

        await asyncio.gather(*(one(h) for h in heights))

    # ---- health -----------------------------------------------------------------------------------------
    async def _probe(self) -> None:
        """Ask the stream for its state every second: whether ordering is reachable, and how far it is."""
        name = stream_name(self.chain_id)
        while not self._stop.is_set():
            try:
                info = await asyncio.wait_for(self.js.stream_info(name), 2.0)
                self._stream_last_seq = int(info.state.last_seq)
                self._last_ok_ms = _ms()
                if not self._outbox:
                    self._error = ""
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._error = f"ordering service: {type(exc).__name__}: {exc}"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), PROBE_EVERY_S)

    def status(self) -> LinkStatus:
        outbox = self._outbox
        oldest = outbox[0].since_ms if outbox else None
        return LinkStatus(
            connected=bool(self.nc is not None and self.nc.is_connected),
            last_ok_ms=self._last_ok_ms,
            stream_last_seq=self._stream_last_seq,
            att_unacked=len(outbox),
            att_unacked_since_ms=oldest,
            att_dropped=self.att_dropped,
            error=self._error,
        )

    # ---- ordering ---------------------------------------------------------------------------------------
    def run_orderer(
        self, signer: Any, *, policy: CutPolicy, position: Callable[[], tuple[int, int, float | None]]
    ) -> None:
        """Run this organisation's orderer, cutting where ``position`` (the peer's deriver) says the chain is."""
        orderer = Orderer(
            self.js,
            self.chain_id,
            signer,
            next_height=0,
            start_seq=0,
            policy=policy,
            now_ms=lambda: time.time() * 1000,
            position=position,
        )

        async def start() -> None:
            self._tasks.append(asyncio.ensure_future(orderer.run(self._stop)))

        self._call(start())

    # ---- lifetime ---------------------------------------------------------------------------------------
    def close(self, flush_s: float = 3.0) -> None:
        """Stop; attestations still in the outbox get up to ``flush_s`` to be acknowledged first (the node
        re-announces its recent ones when it starts again)."""
        if self._closing:
            return
        self._closing = True

        async def shut() -> None:
            deadline = time.monotonic() + flush_s
            while self._outbox and time.monotonic() < deadline and self.nc.is_connected:
                await asyncio.sleep(0.02)
            self._on_att = None
            self._stop.set()
            for t in self._tasks:
                try:
                    await asyncio.wait_for(t, 5)
                except BaseException:  # a task stuck on a dead server: it is being torn down anyway
                    t.cancel()
            for s in [*self._subs, self._att_sub]:
                if s is not None:
                    with contextlib.suppress(Exception):  # the connection may already be gone
                        await s.unsubscribe()
            with contextlib.suppress(Exception):
                await self.nc.close()

        try:
            self._call(shut(), flush_s + 20)
        finally:
            self._shutdown_loop()

    def _shutdown_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self.loop.close()
