"""A node's link to the consortium's JetStream cluster: the asyncio side, run on a thread of its own.

The node is threaded (API threads, one commit thread); nats-py is asyncio. ``JetStreamLink`` owns an event
loop on a background thread and offers blocking calls to the node: publish a transaction (returns when a
majority of the stream's replicas hold it), follow the chain's blocks from a resume point, publish and
follow attestations, and run this organisation's orderer.

Attestations go to a second stream (``LIANGCAO_ATT_<chain>``, same replicas), so a peer that was down or
starts empty still learns who attested what.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from liangcao.ordering.jetstream import (
    CutPolicy,
    Orderer,
    StreamMessage,
    ensure_stream,
    publish_tx,
    replicas_for,
    subject,
    subscribe_from,
    token,
)

log = logging.getLogger("liangcao.link")


def att_stream(chain_id: str) -> str:
    return "LIANGCAO_ATT_" + token(chain_id)


def att_subject(chain_id: str) -> str:
    return subject(chain_id, "att")


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
        self.nc: Any = None
        self.js: Any = None
        self._call(self._connect(connect_timeout_s), connect_timeout_s + 5)

    def _call(self, coro: Any, timeout_s: float = 30) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout_s)

    async def _connect(self, timeout_s: float) -> None:
        import nats
        from nats.js.api import StorageType, StreamConfig
        from nats.js.errors import NotFoundError

        self.nc = await nats.connect(
            servers=self.urls, max_reconnect_attempts=-1, reconnect_time_wait=0.2, connect_timeout=2
        )
        self.js = self.nc.jetstream()
        deadline = time.monotonic() + timeout_s
        while True:  # a new cluster elects its JetStream leader first
            try:
                await ensure_stream(self.js, self.chain_id, self.replicas)
                try:
                    await self.js.stream_info(att_stream(self.chain_id))
                except NotFoundError:
                    cfg = StreamConfig(
                        name=att_stream(self.chain_id),
                        subjects=[att_subject(self.chain_id)],
                        storage=StorageType.FILE,
                        num_replicas=self.replicas,
                    )
                    await self.js.add_stream(cfg)
                return
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"JetStream at {self.urls} not ready: {exc}") from exc
                await asyncio.sleep(0.2)

    # ---- transactions -----------------------------------------------------------------------------------
    def publish_tx(self, raw: bytes, envelope_id: str, timeout_s: float = 5.0) -> int:
        return int(self._call(publish_tx(self.js, self.chain_id, raw, envelope_id, timeout_s), timeout_s + 1))

    def publish_many(self, items: list[tuple[bytes, str]], timeout_s: float = 10.0) -> list[BaseException | None]:
        """Publish many transactions at once (their acks awaited together); an error or None for each."""

        async def many() -> list[Any]:
            return await asyncio.gather(
                *(publish_tx(self.js, self.chain_id, raw, tx_id, timeout_s) for raw, tx_id in items),
                return_exceptions=True,
            )

        results = self._call(many(), timeout_s + 5)
        return [r if isinstance(r, BaseException) else None for r in results]

    # ---- blocks -----------------------------------------------------------------------------------------
    def follow_stream(self, start_seq: int, on_message: Callable[[StreamMessage], None]) -> None:
        """Hand every message of the chain's stream from ``start_seq`` on to ``on_message``, in order.

        The peer derives blocks on its commit thread, not here: a cut is judged by the configuration after
        the block before it, which only the commit thread knows."""
        self._subs.append(self._call(subscribe_from(self.js, self.chain_id, start_seq, on_message)))

    # ---- attestations -----------------------------------------------------------------------------------
    def publish_attestation(self, att: bytes) -> None:
        async def pub() -> None:
            await self.js.publish(att_subject(self.chain_id), att, timeout=5)

        asyncio.run_coroutine_threadsafe(pub(), self.loop)  # fire and forget: a lost one is re-sent later

    def follow_attestations(self, on_att: Callable[[bytes], None]) -> None:
        from nats.js.api import ConsumerConfig, DeliverPolicy

        async def handler(msg: Any) -> None:
            on_att(msg.data)

        async def sub() -> Any:
            return await self.js.subscribe(
                att_subject(self.chain_id),
                stream=att_stream(self.chain_id),
                cb=handler,
                ordered_consumer=True,
                config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
            )

        self._subs.append(self._call(sub()))

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
    def close(self) -> None:
        async def shut() -> None:
            self._stop.set()
            for t in self._tasks:
                try:
                    await asyncio.wait_for(t, 5)
                except Exception:  # an orderer stuck on a dead server: it is being torn down anyway
                    t.cancel()
            for s in self._subs:
                with contextlib.suppress(Exception):  # the connection may already be gone
                    await s.unsubscribe()
            await self.nc.close()

        try:
            self._call(shut(), 15)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
            self.loop.close()
