"""The ordering link protocol, and an in-memory log that implements it (for the simulator and tests).

A node in consortium mode talks to its ordering service through :class:`OrderingLink`: publish
transactions (acknowledged once the log holds them), follow the log from a sequence, publish and follow
attestations, run its organisation's orderer. :class:`~liangcao.node.link.JetStreamLink` implements it on a
NATS JetStream cluster; :class:`MemoryLog` / :class:`MemoryLink` implement it in one process, with no
threads: whoever drives the simulation decides when each peer sees which message (a lagging peer, a lost,
duplicated or reordered attestation), so that one seed gives one schedule.

The log keeps what JetStream keeps for a peer to derive blocks from: each message's sequence, its kind,
its bytes and the log's own timestamp of it (``server_ms``), and deduplicates transactions by their
``Nats-Msg-Id`` equivalent, the envelope hash.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from liangcao.ordering.jetstream import CUT, TX, CutMarker, CutPolicy, StreamMessage

Position = Callable[[], tuple[int, int, float | None]]


class OrderingLink(Protocol):
    """What a consortium-mode node needs from its ordering service (one implementation per transport)."""

    def publish_tx(self, raw: bytes, envelope_id: str, timeout_s: float = 5.0) -> int:
        """Append a transaction; its sequence once the log durably holds it. Raises if it could not."""
        ...

    def publish_many(self, items: list[tuple[bytes, str]], timeout_s: float = 10.0) -> list[BaseException | None]:
        """Append many transactions; for each, None or the error that kept it out."""
        ...

    def follow_stream(self, start_seq: int, on_message: Callable[[StreamMessage], None]) -> None:
        """Deliver every message from ``start_seq`` on, in order, to ``on_message``."""
        ...

    def publish_attestation(self, att: bytes) -> None:
        """Publish this peer's attestation (best effort: a lost one is re-announced)."""
        ...

    def follow_attestations(self, on_att: Callable[[bytes], None]) -> None:
        """Deliver every attestation published on the chain, from the first."""
        ...

    def run_orderer(self, signer: Any, *, policy: CutPolicy, position: Position) -> None:
        """Cut blocks for this organisation where ``position`` says the chain is."""
        ...

    def close(self) -> None: ...


@dataclass
class MemoryLog:
    """One chain's ordering log and attestation log, in memory. ``now_ms`` stamps messages (the log's clock)."""

    now_ms: Callable[[], int]
    messages: list[StreamMessage] = field(default_factory=list)
    attestations: list[bytes] = field(default_factory=list)
    _ids: set[str] = field(default_factory=set)

    def append(self, kind: str, data: bytes, msg_id: str | None = None) -> int:
        if msg_id is not None:
            if msg_id in self._ids:  # deduplicated, as JetStream does by Nats-Msg-Id
                return next(m.seq for m in self.messages if m.kind == kind and m.data == data)
            self._ids.add(msg_id)
        seq = len(self.messages) + 1
        self.messages.append(StreamMessage(seq, kind, data, self.now_ms()))
        return seq

    def cut(self, marker: CutMarker) -> int:
        return self.append(CUT, marker.to_bytes())


class MemoryLink:
    """One node's view of a :class:`MemoryLog`. Nothing is delivered by itself: :meth:`deliver` hands the
    node the next ``n`` messages it has not seen, :meth:`deliver_attestation` one attestation."""

    def __init__(self, log: MemoryLog) -> None:
        self.log = log
        self.cursor = 0  # index into log.messages of the next message to deliver
        self.att_cursor = 0
        self._on_message: Callable[[StreamMessage], None] | None = None
        self._on_att: Callable[[bytes], None] | None = None
        self.published_attestations: list[bytes] = []

    # ---- OrderingLink -----------------------------------------------------------------------------------
    def publish_tx(self, raw: bytes, envelope_id: str, timeout_s: float = 5.0) -> int:
        return self.log.append(TX, raw, envelope_id)

    def publish_many(self, items: list[tuple[bytes, str]], timeout_s: float = 10.0) -> list[BaseException | None]:
        for raw, envelope_id in items:
            self.log.append(TX, raw, envelope_id)
        return [None] * len(items)

    def follow_stream(self, start_seq: int, on_message: Callable[[StreamMessage], None]) -> None:
        self.cursor = max(0, start_seq - 1)
        self._on_message = on_message

    def publish_attestation(self, att: bytes) -> None:
        self.published_attestations.append(att)
        self.log.attestations.append(att)

    def follow_attestations(self, on_att: Callable[[bytes], None]) -> None:
        self.att_cursor = 0
        self._on_att = on_att

    def run_orderer(self, signer: Any, *, policy: CutPolicy, position: Position) -> None:
        pass  # in a simulation the driver cuts (honestly or not); see liangcao.sim

    def close(self) -> None:
        self._on_message = None
        self._on_att = None

    # ---- the driver's side ------------------------------------------------------------------------------
    def pending(self) -> int:
        return len(self.log.messages) - self.cursor

    def deliver(self, n: int = 1) -> int:
        """Hand the node up to ``n`` further messages of the log; how many were handed."""
        done = 0
        while done < n and self.cursor < len(self.log.messages) and self._on_message is not None:
            self._on_message(self.log.messages[self.cursor])
            self.cursor += 1
            done += 1
        return done

    def deliver_attestation(self, att: bytes) -> None:
        if self._on_att is not None:
            self._on_att(att)
