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

import queue
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from liangcao import encoding
from liangcao.ordering.jetstream import CUT, TX, CutMarker, CutPolicy, StreamMessage

Position = Callable[[], tuple[int, int, float | None]]
#: ``on_att(seq, attestation)``: one attestation as the log holds it, with its position in the attestation log
OnAttestation = Callable[[int, bytes], None]


class PublishRefused(Exception):
    """The ordering service answered that it did not take the message (nothing was stored): a refusal."""


class PublishUnknown(Exception):
    """No answer in time (a leader election, a lost connection): the message may or may not be in the log.

    Never a refusal: the transaction may still be ordered and committed. Resubmitting the same signed
    envelope is safe (it is deduplicated, and a transaction is committed at most once)."""


@dataclass(frozen=True)
class LinkStatus:
    """What a link knows of its ordering service, for health and metrics (wall-clock milliseconds)."""

    connected: bool
    #: the last successful exchange with the ordering service (an acknowledgement, a probe), or None
    last_ok_ms: int | None
    #: the log's last sequence as last seen (None: never seen)
    stream_last_seq: int | None
    #: attestations of this peer not yet acknowledged by the log, and since when the oldest waits
    att_unacked: int = 0
    att_unacked_since_ms: int | None = None
    #: attestations dropped from the outbox because it was full (the peer re-announces them while not final)
    att_dropped: int = 0
    error: str = ""


def att_height(att: bytes) -> int | None:
    """The height an attestation names, if its bytes say (no signature check: only to file it)."""
    try:
        v: Any = encoding.decode(att, 4096)
        h = v.get("height") if isinstance(v, dict) else None
    except Exception:  # junk is published as it is, under no height
        return None
    return h if type(h) is int and h >= 0 else None


class OrderingLink(Protocol):
    """What a consortium-mode node needs from its ordering service (one implementation per transport)."""

    def publish_tx(self, raw: bytes, envelope_id: str, timeout_s: float = 5.0) -> int:
        """Append a transaction; its sequence once the log durably holds it. Raises if it could not."""
        ...

    def publish_many(self, items: list[tuple[bytes, str]], timeout_s: float = 10.0) -> list[BaseException | None]:
        """Append many transactions; for each, None (the log holds it), :class:`PublishRefused` (it does not)
        or :class:`PublishUnknown` (no answer in time: it may)."""
        ...

    def follow_stream(self, start_seq: int, on_message: Callable[[StreamMessage], None]) -> None:
        """Deliver every message from ``start_seq`` on, in order, to ``on_message``."""
        ...

    def publish_attestation(self, att: bytes, height: int | None = None) -> None:
        """Queue an attestation; the link publishes it with an acknowledgement, retrying until the log holds
        it (``att_unacked`` in :meth:`status` counts those still waiting). ``height``: the height it attests
        (read from the bytes when not given), under which the log files it for :meth:`fetch_attestations`."""
        ...

    def follow_attestations(self, start_seq: int, on_att: OnAttestation) -> None:
        """Deliver every attestation of the chain from position ``start_seq`` (1: the first) on, in order,
        with its position. Called again, it replaces the previous subscription (a peer re-reads what it
        had to set aside)."""
        ...

    def stop_attestations(self) -> None:
        """Stop delivering attestations until :meth:`follow_attestations` is called again (a peer that reads
        far ahead of its head sets the rest aside and reads it again later)."""
        ...

    def fetch_attestations(self, heights: list[int]) -> None:
        """Deliver again (through ``on_att``, asynchronously) every attestation the log holds for these
        heights: a peer fetches what it is missing for blocks that are not final."""
        ...

    def status(self) -> LinkStatus:
        """Reachability of the ordering service, the log's last sequence, unacknowledged attestations."""
        ...

    def run_orderer(self, signer: Any, *, policy: CutPolicy, position: Position) -> None:
        """Cut blocks for this organisation where ``position`` says the chain is."""
        ...

    def close(self) -> None: ...


@dataclass
class MemoryLog:
    """One chain's ordering log and attestation log, in memory. ``now_ms`` stamps messages (the log's clock).

    ``attestations_down``: while set, the attestation log takes nothing (a stream electing its leader); each
    link keeps what it could not publish and retries (:meth:`MemoryLink.pump`)."""

    now_ms: Callable[[], int]
    messages: list[StreamMessage] = field(default_factory=list)
    attestations: list[bytes] = field(default_factory=list)
    attestations_down: bool = False
    _ids: set[str] = field(default_factory=set)
    _att_seen: set[bytes] = field(default_factory=set)

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

    def attest(self, att: bytes) -> bool:
        """Append an attestation (an identical one already held is dropped, as by its Nats-Msg-Id); whether
        the log took it (False while ``attestations_down``)."""
        if self.attestations_down:
            return False
        if att not in self._att_seen:
            self._att_seen.add(att)
            self.attestations.append(att)
        return True


class MemoryLink:
    """One node's view of a :class:`MemoryLog`. Nothing is delivered by itself: :meth:`deliver` hands the
    node the next ``n`` messages it has not seen, :meth:`deliver_attestation` one attestation; attestations
    the log did not take wait in :attr:`outbox` until :meth:`pump` (the driver's retry). Fetches
    (:meth:`fetch_attestations`) are answered at once from the log."""

    def __init__(self, log: MemoryLog) -> None:
        self.log = log
        self.cursor = 0  # index into log.messages of the next message to deliver
        self.att_cursor = 0
        self._on_message: Callable[[StreamMessage], None] | None = None
        self._on_att: OnAttestation | None = None
        self.published_attestations: list[bytes] = []
        self.outbox: list[bytes] = []
        self.fetches = 0

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

    def publish_attestation(self, att: bytes, height: int | None = None) -> None:
        self.published_attestations.append(att)
        self.outbox.append(att)
        self.pump()

    def pump(self) -> None:
        """Publish what the outbox holds, in order, while the log takes it (the link's retry)."""
        while self.outbox and self.log.attest(self.outbox[0]):
            self.outbox.pop(0)

    def follow_attestations(self, start_seq: int, on_att: OnAttestation) -> None:
        self.att_cursor = max(0, start_seq - 1)
        self._on_att = on_att

    def stop_attestations(self) -> None:
        pass  # nothing is delivered by itself here

    def fetch_attestations(self, heights: list[int]) -> None:
        wanted = set(heights)
        self.fetches += 1
        for i, att in enumerate(self.log.attestations):
            if self._on_att is not None and att_height(att) in wanted:
                self._on_att(i + 1, att)

    def status(self) -> LinkStatus:
        return LinkStatus(
            connected=True,
            last_ok_ms=self.log.now_ms(),
            stream_last_seq=len(self.log.messages),
            att_unacked=len(self.outbox),
        )

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
            try:
                self._on_message(self.log.messages[self.cursor])
            except queue.Full:  # the node's queue is full: the rest waits for a later delivery
                break
            self.cursor += 1
            done += 1
        return done

    def deliver_attestation(self, att: bytes) -> None:
        if self._on_att is not None:
            seq = self.log.attestations.index(att) + 1 if att in self.log._att_seen else 0
            self._on_att(seq, att)
