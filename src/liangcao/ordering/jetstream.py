"""Ordering on a NATS JetStream cluster: one replicated stream per chain, blocks delimited by cut markers.

Every organisation runs a ``nats-server`` in one JetStream cluster. Transactions are published to
``lc.<chain>.tx`` (deduplicated by the server on their tx id, ``Nats-Msg-Id``); orderer processes publish
signed cut markers to ``lc.<chain>.cut``, in the same stream, so transactions and cuts share one total order
(the stream sequence), replicated with RAFT on ``min(3, organisations)`` servers.

Every peer derives the same blocks from that log with :class:`BlockDeriver`, a pure function of the
messages in stream order:

=====================================================  ==============================================
message                                                effect
=====================================================  ==============================================
transaction                                            appended to the pending list
cut for the next height, signed by a known orderer,    block = the first ``block_txs_max`` pending
with pending transactions                              transactions; the rest stay pending
cut for a height already cut (a duplicate: several     ignored
orderers race; one per organisation)
cut with nothing pending (an empty cut)                ignored: the height is not consumed
cut for any other height, or with a bad signature      ignored
cut whose time differs from the stream's timestamp     ignored: an orderer cannot move chain time
of the cut message by more than cut_clock_skew_ms_max
=====================================================  ==============================================

A block never holds two envelopes with one tx id, and never more than ``block_txs_max`` transactions or
``block_bytes_max`` bytes (see ``_take_distinct``: a forged copy of a transaction is dropped by its
signatures, whichever came first; two genuine spellings of one transaction go into consecutive blocks).

A block's time is its cut's time, never behind the previous block's. Each derived block carries
``resume_seq``: the stream sequence from which a peer must read again to derive every later block (the
first transaction left pending, else the message after the cut), and ``cut_seq``; a peer stores both with
the block and after a restart reads from ``resume_seq`` ignoring cuts up to ``cut_seq`` (they were judged
already: a cut once ignored as early must not be taken on the second reading).
"""

from __future__ import annotations

import asyncio
import queue
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from liangcao import encoding, limits
from liangcao.crypto import keys
from liangcao.crypto.identity import CertCache, CertInfo, parse_certificate
from liangcao.errors import LiangcaoError
from liangcao.ledger.tx import Tx, parse

TX = "tx"
CUT = "cut"


def token(chain_id: str) -> str:
    """The chain id as one NATS subject token / stream name part (no dots, spaces or wildcards)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", chain_id)


def stream_name(chain_id: str) -> str:
    return "LIANGCAO_" + token(chain_id)


def subject(chain_id: str, kind: str) -> str:
    return f"lc.{token(chain_id)}.{kind}"


def replicas_for(organisations: int) -> int:
    """Stream replicas: every organisation's server up to three (RAFT tolerates one lost of three)."""
    return max(1, min(3, organisations))


@dataclass(frozen=True)
class CutMarker:
    chain_id: str
    height: int
    time_ms: int
    orderer: str  # the orderer's member id (org/member)
    cert: str  # its certificate (DER, base64url); the peer checks it belongs to the consortium
    sig: str  # Ed25519 over DOMAIN_CUT + the canonical body, base64url

    def body(self) -> bytes:
        return encoding.canonical(
            {"chain_id": self.chain_id, "height": self.height, "time_ms": self.time_ms, "orderer": self.orderer}
        )

    def to_bytes(self) -> bytes:
        return encoding.canonical(
            {
                "chain_id": self.chain_id,
                "height": self.height,
                "time_ms": self.time_ms,
                "orderer": self.orderer,
                "cert": self.cert,
                "sig": self.sig,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> CutMarker | None:
        try:
            v: Any = encoding.decode(data, 16 * 1024)
            return cls(
                str(v["chain_id"]),
                int(v["height"]),
                int(v["time_ms"]),
                str(v["orderer"]),
                str(v["cert"]),
                str(v["sig"]),
            )
        except Exception:  # a malformed marker is ignored like any other invalid cut
            return None

    @classmethod
    def make(cls, chain_id: str, height: int, time_ms: int, orderer: str, key: Any, cert_der: bytes) -> CutMarker:
        cert = keys.b64(cert_der)
        unsigned = cls(chain_id, height, time_ms, orderer, cert, "")
        return cls(chain_id, height, time_ms, orderer, cert, keys.b64(keys.sign(key, keys.DOMAIN_CUT, unsigned.body())))

    def signature_ok(self) -> CertInfo | None:
        """The signer's certificate if the signature verifies under it (membership is the caller's check)."""
        try:
            info = parse_certificate(keys.unb64(self.cert))
            ok = keys.verify(info.public_key, keys.DOMAIN_CUT, self.body(), keys.unb64(self.sig))
        except Exception:  # a malformed certificate or signature is simply not a valid cut
            return None
        return info if ok else None


@dataclass(frozen=True, slots=True)
class StreamMessage:
    """One message of the chain's stream as a peer reads it: its sequence, kind, bytes, and the stream's own
    timestamp of it (ms; set by the stream's leader when it stored the message, the same on every replica)."""

    seq: int
    kind: str
    data: bytes
    server_ms: int | None = None
    #: the transaction already parsed, when the log runs in the peer's own process (the solo orderer): the
    #: deriver then does not parse it again. It must be ``parse(data)``; a transport never sets it.
    parsed: Tx | None = None


@dataclass(frozen=True)
class DerivedBlock:
    height: int
    time_ms: int
    txs: tuple[bytes, ...]
    cut_seq: int
    resume_seq: int
    orderer: str
    #: each transaction parsed (None where it does not parse), so the peer does not parse it again
    parsed: tuple[Tx | None, ...] = ()


@dataclass
class BlockDeriver:
    """Turns the stream, message by message in sequence order, into blocks. Pure and deterministic.

    ``verify_cut(marker) -> bool`` decides whether a cut is signed by a known orderer of the chain.
    """

    chain_id: str
    next_height: int
    last_time_ms: int = 0
    block_txs_max: int = limits.block_txs_max
    verify_cut: Callable[[CutMarker], bool] = lambda _m: True
    # Cuts at or before this sequence were already judged before a restart (the last block's cut_seq):
    # resuming at resume_seq re-reads them, and one ignored then must not be taken now.
    after_cut_seq: int = 0
    pending: list[tuple[int, bytes, Tx | None]] = field(default_factory=list)
    last_seq: int = 0
    ignored_cuts: int = 0
    _certs: CertCache = field(default_factory=CertCache, repr=False)

    def feed(
        self, seq: int, kind: str, data: bytes, *, server_ms: int | None = None, parsed: Tx | None = None
    ) -> DerivedBlock | None:
        """Take the next message of the stream. ``server_ms`` is the stream's timestamp of the message: when
        given (a peer always gives it), a cut whose time is further than ``cut_clock_skew_ms_max`` from it is
        ignored, so no orderer can stamp a block days ahead. ``parsed``: the transaction's parse, if the caller
        holds it already (see :attr:`StreamMessage.parsed`)."""
        if seq <= self.last_seq:
            return None  # redelivered
        self.last_seq = seq
        if kind == TX:
            self.pending.append((seq, data, parsed))
            return None
        if kind != CUT:
            return None
        marker = CutMarker.from_bytes(data)
        if (
            seq <= self.after_cut_seq
            or marker is None
            or marker.chain_id != self.chain_id
            or marker.height != self.next_height
            or not self.pending
            or (server_ms is not None and abs(marker.time_ms - server_ms) > limits.cut_clock_skew_ms_max)
            or not self.verify_cut(marker)
        ):
            self.ignored_cuts += 1
            return None
        take, parses, rest = _take_distinct(self.pending, self.block_txs_max, self._certs)
        self.pending = rest
        time_ms = max(marker.time_ms, self.last_time_ms)
        resume = self.pending[0][0] if self.pending else seq + 1
        block = DerivedBlock(
            self.next_height, time_ms, tuple(d for _, d, _ in take), seq, resume, marker.orderer, tuple(parses)
        )
        self.next_height += 1
        self.last_time_ms = time_ms
        return block


def _signatures_verify(tx: Tx, certs: CertCache) -> bool:
    """Whether every Ed25519 signature of ``tx`` verifies under its own certificate's key (nothing else).

    A pure function of the bytes: whether the certificate belongs to a member is the executor's question."""
    try:
        return all(
            keys.verify(certs.parse(s.cert).public_key, keys.DOMAIN_TX, tx.id_bytes, s.sig) for s in tx.signatures
        )
    except Exception:  # a certificate that does not parse: not a valid signature
        return False


Pending = list[tuple[int, bytes, Tx | None]]


def _take_distinct(
    pending: Pending, count_max: int, certs: CertCache, bytes_max: int = limits.block_bytes_max
) -> tuple[Pending, list[Tx | None], Pending]:
    """The block's messages, their parses, and what stays pending.

    Pending messages are taken in order, at most ``count_max`` and ``bytes_max`` bytes (always at least one),
    so a derived block always fits the bounds every peer enforces. A block never holds two envelopes of one
    tx id. When a second envelope of an id in the block arrives, signatures decide, as a pure function of the
    bytes: an envelope whose signatures do not verify is dropped from the log (a forged copy costs nothing
    and never crowds out the genuine one, however many are published, whichever comes first); if both verify
    (two genuine spellings of one transaction), the block ends before the second, which stays pending.
    Ending there keeps "everything from ``resume_seq`` on is pending" true, so a peer that restarts derives
    the same blocks as one that did not. A message that does not parse has no tx id; it is taken as it comes
    (the executor records why it fails)."""
    take: Pending = []
    parsed: list[Tx | None] = []
    where: dict[str, int] = {}  # tx id -> index in take
    valid: dict[int, bool] = {}  # index in take -> signatures verify (computed only for contested ids)
    size = 0
    n = 0
    for seq, data, known in pending:
        if len(take) >= count_max or (take and size + len(data) > bytes_max):
            break
        tx: Tx | None = known
        if tx is None:
            try:
                tx = parse(data)
            except LiangcaoError:
                tx = None
        if tx is not None and tx.tx_id in where:
            k = where[tx.tx_id]
            if not _signatures_verify(tx, certs):
                n += 1  # a forged copy: dropped
                continue
            if k not in valid:
                kept = parsed[k]
                valid[k] = kept is not None and _signatures_verify(kept, certs)
            if valid[k]:
                break  # two genuine envelopes: the second waits for the next block
            size -= len(take[k][1])
            take[k] = (seq, data, tx)  # the earlier one was forged: the genuine one takes its place
            parsed[k] = tx
            valid[k] = True
            size += len(data)
            n += 1
            continue
        if tx is not None:
            where[tx.tx_id] = len(take)
        take.append((seq, data, tx))
        parsed.append(tx)
        size += len(data)
        n += 1
    return take, parsed, pending[n:]


# ---- the JetStream side ------------------------------------------------------------------------------------


async def ensure_stream(js: Any, chain_id: str, replicas: int) -> None:
    """Create the chain's stream if missing: file storage, ``replicas`` copies, a 2-minute dedup window."""
    from nats.js.api import StorageType, StreamConfig
    from nats.js.errors import NotFoundError

    name = stream_name(chain_id)
    try:
        await js.stream_info(name)
        return
    except NotFoundError:
        pass
    cfg = StreamConfig(
        name=name,
        subjects=[subject(chain_id, TX), subject(chain_id, CUT)],
        storage=StorageType.FILE,
        num_replicas=replicas,
        duplicate_window=120.0,
    )
    await js.add_stream(cfg)


async def publish_tx(js: Any, chain_id: str, raw: bytes, envelope_id: str, timeout_s: float = 5.0) -> int:
    """Publish a transaction; returns its stream sequence once a majority of replicas hold it.

    The server deduplicates by the envelope's hash, not the tx id: a forged copy of someone's transaction
    (same id, junk signature) published first must not make the server drop the genuine one."""
    ack = await js.publish(subject(chain_id, TX), raw, timeout=timeout_s, headers={"Nats-Msg-Id": envelope_id})
    return int(ack.seq)


async def publish_cut(js: Any, marker: CutMarker, timeout_s: float = 5.0) -> int:
    ack = await js.publish(subject(marker.chain_id, CUT), marker.to_bytes(), timeout=timeout_s)
    return int(ack.seq)


#: An ordered consumer is re-created from where it was after two missed heartbeats (its server died, or the
#: stream's leader moved): every HEARTBEAT_S the server says it is alive.
HEARTBEAT_S = 1.0


async def subscribe_from(js: Any, chain_id: str, start_seq: int, cb: Callable[[StreamMessage], Any]) -> Any:
    """An ordered consumer from ``start_seq``: ``cb(message)`` for each message, in stream order, with the
    stream's timestamp of it. ``cb`` may raise ``queue.Full``: the message is offered again a moment later,
    and meanwhile the server sends no more than its flow-control window (a peer catching up from an empty
    store holds a bounded part of the stream in memory, not all of it)."""
    from nats.js.api import ConsumerConfig, DeliverPolicy

    tx_subject = subject(chain_id, TX)

    async def handler(msg: Any) -> None:
        kind = TX if msg.subject == tx_subject else CUT
        md = msg.metadata
        item = StreamMessage(int(md.sequence.stream), kind, msg.data, int(md.timestamp.timestamp() * 1000))
        while True:  # a full queue (the peer is behind): wait, and the server holds back (flow control)
            try:
                cb(item)
                return
            except queue.Full:
                await asyncio.sleep(0.005)

    config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(1, start_seq))
    return await js.subscribe(
        subject(chain_id, "*"),
        stream=stream_name(chain_id),
        cb=handler,
        ordered_consumer=True,
        config=config,
        idle_heartbeat=HEARTBEAT_S,
    )


@dataclass
class CutPolicy:
    """When an orderer cuts: ``block_txs_max`` pending, or the oldest pending is ``block_wait_ms`` old."""

    block_txs_max: int = 1000
    block_wait_ms: int = 20

    def due(self, pending: int, oldest_seen_ms: float | None, now_ms: float) -> bool:
        if pending <= 0 or oldest_seen_ms is None:
            return False
        return pending >= self.block_txs_max or now_ms - oldest_seen_ms >= self.block_wait_ms


class Orderer:
    """One organisation's orderer: follows the stream and publishes a signed cut when the policy says so.

    Several run at once (one per organisation); the cuts they race to publish for the same height are
    duplicates every peer ignores, so any one of them keeps the chain moving. ``now_ms`` is the orderer's
    clock; it only sets block times, which peers never let run backwards.
    """

    def __init__(
        self,
        js: Any,
        chain_id: str,
        signer: Any,
        *,
        next_height: int,
        start_seq: int,
        policy: CutPolicy,
        now_ms: Callable[[], float],
        verify_cut: Callable[[CutMarker], bool] = lambda _m: True,
        derive_txs_max: int = limits.block_txs_max,
        position: Callable[[], tuple[int, int, float | None]] | None = None,
    ) -> None:
        """``position``: where the chain is, as ``(next height, pending transactions, pending since ms)``, read
        from a peer that derives blocks in the same process; without it the orderer follows the stream and
        derives for itself."""
        self.js = js
        self.position = position
        self.chain_id = chain_id
        self.signer = signer
        self.policy = policy
        self.now_ms = now_ms
        # The orderer derives exactly as the peers do (the consortium-wide block_txs_max, not the policy's cut
        # size): if it counted blocks differently it would cut for heights the peers are not at, and stall.
        self.deriver = BlockDeriver(chain_id, next_height, block_txs_max=derive_txs_max, verify_cut=verify_cut)
        self.start_seq = start_seq
        self._oldest_seen: float | None = None
        self._cut_sent: tuple[int, float] | None = None  # (height, when) of our last cut not yet seen back
        self.cuts_published = 0
        self._sub: Any = None

    def _on_message(self, msg: StreamMessage) -> None:
        had = len(self.deriver.pending)
        block = self.deriver.feed(msg.seq, msg.kind, msg.data, server_ms=msg.server_ms)
        if block is not None:
            self._oldest_seen = self.now_ms() if self.deriver.pending else None
        elif msg.kind == TX and had == 0 and self.deriver.pending:
            self._oldest_seen = self.now_ms()

    async def start(self) -> None:
        if self.position is None:
            self._sub = await subscribe_from(self.js, self.chain_id, self.start_seq, self._on_message)

    def _where(self) -> tuple[int, int, float | None]:
        if self.position is not None:
            return self.position()
        return self.deriver.next_height, len(self.deriver.pending), self._oldest_seen

    async def tick(self) -> bool:
        """Publish a cut if one is due; returns whether it did."""
        now = self.now_ms()
        height, pending, oldest_seen = self._where()
        if height <= 0:
            return False
        if self._cut_sent is not None and self._cut_sent[0] == height and now - self._cut_sent[1] < 500:
            return False  # ours is on its way; do not flood the stream with duplicates
        if not self.policy.due(pending, oldest_seen, now):
            return False
        marker = CutMarker.make(
            self.chain_id, height, int(now), self.signer.member_id, self.signer.key, self.signer.cert
        )
        await publish_cut(self.js, marker)
        self._cut_sent = (height, now)
        self.cuts_published += 1
        return True

    async def run(self, stop: Any, interval_s: float = 0.005) -> None:
        import asyncio

        await self.start()
        try:
            while not stop.is_set():
                try:
                    await self.tick()
                except Exception:  # a server lost mid-publish: the next tick tries again (another may cut)
                    await asyncio.sleep(0.1)
                await asyncio.sleep(interval_s)
        finally:
            if self._sub is not None:
                await self._sub.unsubscribe()
