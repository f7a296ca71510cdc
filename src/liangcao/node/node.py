"""A node: admission -> ordering link -> derive -> verify -> execute -> commit -> attest -> events.

Theory of operation
-------------------
API threads call :meth:`Node.submit`, which parses the transaction, refuses what can never commit
(wrong chain, expired, already committed, a signature that does not verify: checked in the process pool)
with a stable code, and publishes the rest through the node's **ordering link**
(:class:`~liangcao.ordering.memory.OrderingLink`): a consortium's JetStream cluster, the simulator's
in-memory log, or, by default, :class:`~liangcao.ordering.solo.SoloLink`, the embedded orderer, whose log
lives in this process and is bounded by ``mempool_txs_max``.

There is one commit loop, whatever the link (:meth:`Node.step`): one commit thread owns the writable store,
takes the link's messages in order, derives blocks from them with the pure
:class:`~liangcao.ordering.jetstream.BlockDeriver` (cuts signed by an orderer: ``block_txs_max`` or
``block_wait_ms``), verifies what admission did not, executes, commits durably, signs an attestation as the
peer, and only then tells listeners (waiting clients, the event stream, metrics). So nothing is reported
committed before it is on disk. The link's orderer (this organisation's) cuts where the commit thread's own
deriver says the chain is.

Shutdown (``stop``): a solo node drains its log into blocks before closing, for at most
``stop_drain_ms_max``; what is still pending then is dropped (logged with its count). Admission only ever
answered ``pending`` for those, never ``committed``: nothing reported committed is lost, and a client that
finds its transaction unknown after the restart sends it again (the same envelope commits at most once).
A consortium peer has published what it admitted and finishes the message at hand. A store fault in the commit thread stops the node (``failed`` says why) rather than risk a
half-applied block.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import queue
import sqlite3
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from liangcao import encoding, limits
from liangcao.apps.bundle import default_registry
from liangcao.apps.trace.anchor import PRECOMPUTED, precompute_many
from liangcao.clock import Clock
from liangcao.clock import now_ms as wall_ms
from liangcao.codes import Code
from liangcao.contracts import config as cfgmod
from liangcao.contracts.runtime import ContractRuntime, check_signers
from liangcao.crypto import identity
from liangcao.crypto.signer import Signer
from liangcao.errors import Fault, LiangcaoError, TxRejected
from liangcao.ledger import block as blk
from liangcao.ledger import tx as txm
from liangcao.ledger.chain import Ledger
from liangcao.ledger.executor import Execution
from liangcao.ledger.store import Store
from liangcao.ledger.tx import Tx
from liangcao.node.finality import Finality
from liangcao.node.storecheck import MODES as STORE_CHECKS
from liangcao.node.storecheck import check_store
from liangcao.node.verify import SigVerifier, Workers
from liangcao.ordering.jetstream import TX, BlockDeriver, CutMarker, CutPolicy, DerivedBlock, StreamMessage
from liangcao.ordering.memory import PublishUnknown, att_height
from liangcao.ordering.solo import LogFull, SoloLink
from liangcao.procs import name_this_thread

if TYPE_CHECKING:  # a link may pull in nats-py, which a solo node never imports
    from liangcao.ordering.memory import OrderingLink

log = logging.getLogger("liangcao.node")

recent_txs_max = limits.recent_txs_max


#: Attestations are fetched again (and our own re-announced) for a block not final this long after its commit;
#: each height is retried after twice as long as the time before, up to ATT_REPAIR_EVERY_MAX_MS.
ATT_REPAIR_AFTER_MS = 2_000
ATT_REPAIR_EVERY_MAX_MS = 60_000
MAINTAIN_EVERY_MS = 500
#: Attestations queued for the commit thread at most (about 1 KB each); reading pauses beyond
ATT_INBOX_MAX = 20_000
#: Stream messages queued for the commit thread at most (ten full blocks); the link holds back beyond
STREAM_INBOX_MAX = 20_000
#: Stream messages the commit thread takes in one turn between looks at attestations and upkeep (a turn
#: also ends at each block): transactions are cheap to take, the looks are not free
STEP_MESSAGES_MAX = 512
#: EPCIS captures whose per-event work is done or under way ahead of their execution (``Node._feed_ahead``), in
#: blocks: the next block must be ready while this one executes, and one after it under way
AHEAD_BLOCKS = 3
#: A stopping solo node commits its backlog for at most this long (a full byte-bounded mempool of EPCIS captures
#: is about 12 s of work), then drops the rest: an operator's stop must be prompt, and nothing dropped was ever
#: reported committed.
STOP_DRAIN_MS_MAX = 5_000
AHEAD_JOB_TXS = 8  # captures per job: a round trip to the worker costs the node's interpreter per job


@dataclass(frozen=True)
class NodeSettings:
    block_txs_max: int = 1000
    block_wait_ms: int = 20
    mempool_txs_max: int = limits.mempool_txs_max
    #: the mempool's transactions by encoded size (a solo node's log: its queue and its deriver's pending list)
    mempool_bytes_max: int = limits.mempool_bytes_max
    #: how long ``stop`` keeps committing a solo node's backlog before dropping what is still pending
    stop_drain_ms_max: int = STOP_DRAIN_MS_MAX
    verify_workers: int | None = None  # None: one per core
    #: processes doing the per-event work of EPCIS captures at admission (``Node._precompute``); None: one if
    #: the machine has more than one core, else none (the commit thread does it, as it always can)
    precompute_workers: int | None = None
    # Health thresholds (consortium mode): beyond any of them ``/v1/health`` says "degraded" and names why.
    lag_blocks_max: int = 100  # blocks behind the highest height another organisation's peer attested
    lag_messages_max: int = 20_000  # stream messages not yet taken by this peer's commit thread
    nonfinal_age_ms_max: int = 30_000  # the oldest block not final is older than this
    ordering_silence_ms_max: int = 5_000  # no answer from the ordering service for this long
    #: how much of the store is checked against its chain before the node serves it (liangcao.node.storecheck)
    store_check: str = "state"

    def __post_init__(self) -> None:
        if not 1 <= self.block_txs_max <= limits.block_txs_max:
            raise ValueError(f"block_txs_max must be 1..{limits.block_txs_max}")
        if not 0 <= self.block_wait_ms <= 60_000:
            raise ValueError("block_wait_ms must be 0..60000")
        if not self.block_txs_max <= self.mempool_txs_max <= limits.mempool_txs_max:
            raise ValueError(f"mempool_txs_max must be block_txs_max..{limits.mempool_txs_max}")
        if not limits.tx_bytes_max <= self.mempool_bytes_max <= limits.mempool_bytes_max:
            raise ValueError(f"mempool_bytes_max must be {limits.tx_bytes_max}..{limits.mempool_bytes_max}")
        if not 0 <= self.stop_drain_ms_max <= 600_000:
            raise ValueError("stop_drain_ms_max must be 0..600000")
        if self.store_check not in STORE_CHECKS:
            raise ValueError(f"store_check must be one of {', '.join(STORE_CHECKS)}")


@dataclass(frozen=True)
class Committed:
    """What listeners hear after a block is durably committed."""

    header: blk.Header
    tx_ids: list[str]
    codes: list[int]
    receipts: list[bytes]
    events: list[list[dict[str, Any]]]
    attestation: dict[str, Any]
    admitted_ms: dict[str, int] = field(default_factory=dict)
    #: per transaction: whether it consumed its tx id, and its envelope id (the hash of its bytes)
    consumed: list[bool] = field(default_factory=list)
    envelope_ids: list[str] = field(default_factory=list)


Listener = Callable[[Committed], None]


class Node:
    def __init__(
        self,
        store_path: str | Path,
        genesis: blk.Block,
        *,
        orderer: Signer,
        peer: Signer,
        settings: NodeSettings | None = None,
        link: OrderingLink | None = None,
    ) -> None:
        """``link``: order through the consortium's ordering service (JetStream, or an in-memory log in the
        simulator); without one, through the embedded solo orderer (:class:`SoloLink`)."""
        self.settings = settings or NodeSettings()
        #: ordered by the embedded orderer alone: no other peer, finality from witnesses, drained on stop
        self.solo = link is None
        #: attestations that disagree with this peer, one per (height, member), at most fork_alarms_max kept
        #: (one is enough to stop reporting finality; the rest are evidence for the operator). Cleared by the
        #: operator once resolved (:meth:`clear_fork_alarms`); the cleared ones are remembered beside the store
        #: so that reading the attestation stream again does not raise them again.
        self.fork_alarms: list[dict[str, Any]] = []
        self.fork_alarms_seen = 0  # every alarm raised since start, kept or not
        self._alarm_keys: set[tuple[int, str]] = set()
        self._alarm_lock = threading.Lock()
        self._resolved_path = Path(str(store_path) + ".forks-resolved")
        self._resolved: set[str] = _load_resolved(self._resolved_path)
        self.finality = Finality()
        #: the highest height any other organisation's counted peer attested (how far the network is)
        self.network_height = 0
        self._att_pause: tuple[int, int] | None = None  # (seq, height) of the first attestation set aside
        self._att_flow_seq: int | None = None  # the last attestation queued before the queue was full
        self._repair: dict[int, tuple[int, int]] = {}  # height -> (last repair, wait before the next), ms
        self._next_maintain_ms = 0
        self.attestations_fetched = 0  # heights whose attestations were fetched again
        #: stream messages that could not be used (malformed, forged): counted and logged, never fatal
        self.poison_messages = 0
        #: set while a derived block's time is ahead of this peer's own clock (see ``_wait_for_clock``)
        self.clock_alarm: str = ""
        # A solo node's queue is bounded by its log (mempool_txs_max, counted with the deriver's pending list),
        # so that a cut always finds room behind the transactions it closes.
        self._stream_inbox: queue.Queue[StreamMessage] = queue.Queue(0 if link is None else STREAM_INBOX_MAX)
        # The pending transactions' bytes (``pending_bytes``): counted in on delivery (under the link's lock, one
        # writer at a time), out by the commit thread when they leave the deriver's pending list.
        self._in_bytes = 0
        self._out_bytes = 0
        self._deriver_bytes = 0  # of those, in the deriver's pending list
        self.dropped_at_stop = 0  # pending transactions a stop did not have time to commit
        self._deriver: BlockDeriver | None = None
        self._cut_cfg = cfgmod.Config()
        self._pending_since_ms: float | None = None
        self._att_inbox: queue.Queue[tuple[int, bytes]] = queue.Queue()
        self._early_atts: dict[int, dict[str, bytes]] = {}
        self.store_path = Path(store_path)
        self.runtime = ContractRuntime(default_registry())
        self.ledger = Ledger.open(self.store_path, self.runtime, checkpointer=True)
        if self.ledger.head is None:
            self.ledger.apply(genesis)
        stored = self.ledger.store.header(0)
        if stored is None or stored.hash != genesis.hash:
            self.ledger.close()
            raise LiangcaoError(Code.BAD_BLOCK, f"the store at {self.store_path} belongs to another chain")
        # A store altered while the node was stopped is never served as truth (docs/operations.md).
        findings = check_store(self.store_path, self.settings.store_check)
        if findings:
            self.ledger.close()
            raise LiangcaoError(
                Code.BAD_BLOCK,
                f"the store at {self.store_path} disagrees with its chain: {'; '.join(findings[:5])}. Run "
                "'liangcao audit' to see everything; state and indexes are rebuilt from the blocks by 'liangcao "
                "node rebuild', a store with altered blocks is replaced (a backup, or an empty store that "
                "catches up from the stream)",
                {"findings": findings},
            )
        self.genesis = genesis
        self.chain_id = genesis.header.chain_id
        self.orderer = orderer
        self.peer = peer
        self.clock = Clock(self.ledger.head.time_ms if self.ledger.head is not None else 0)
        if link is None:
            solo = SoloLink(
                self.chain_id, self.clock.now_ms, self.settings.mempool_txs_max, self.settings.mempool_bytes_max
            )
            solo.hold(self.pending_count, self.pending_bytes)
            link = solo
        self.link: OrderingLink | None = link
        # Admission has its own certificate cache and configuration: API threads must not share the commit
        # thread's runtime caches.
        self._admission_certs = identity.CertCache()
        self._admission_lock = threading.Lock()
        self._admission_config = cfgmod.Config()
        self.verifier = SigVerifier(self.settings.verify_workers, self._admission_certs)
        ahead = self.settings.precompute_workers
        self.ahead = Workers(ahead if ahead is not None else int((os.cpu_count() or 1) > 1), name="lc-precompute")
        self._ahead_queue: deque[Tx] = deque()  # admitted captures not yet handed to the workers
        self._ahead_lock = threading.RLock()  # a job already done runs its callback (which feeds) at once
        self._ahead_txs = 0  # captures handed to the workers and not yet back
        self.listeners: list[Listener] = []
        self.failed: BaseException | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._local = threading.local()
        self._readers: list[Store] = []
        self._recent: OrderedDict[str, tuple[int, int, int]] = OrderedDict()
        self._admitted: dict[str, int] = {}
        # envelopes whose signatures admission verified: a consortium peer does not verify them twice
        self._verified: OrderedDict[str, None] = OrderedDict()
        self._head_lock = threading.Lock()
        self._attest_head()
        if not self.solo:
            self.finality.load(self.ledger.store, self.head.height, self._cut_config().quorum_size("finality"))

    # ---- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> None:
        self._follow()
        self._thread = threading.Thread(target=self._run, name="liangcao-commit", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 60.0) -> None:
        """Commit everything admitted (solo: the whole log; a consortium peer has published what it admitted to
        the stream, and finishes the message at hand), then close. Idempotent."""
        self._stopping = True
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        if self.link is not None:
            self.link.close()
            self.link = None
        self.verifier.close()
        self.ahead.close()
        for reader in self._readers:  # the last connection to close checkpoints the WAL into the database
            reader.close()
        self._readers.clear()
        self.ledger.close()

    @property
    def head(self) -> blk.Header:
        head = self.ledger.head
        if head is None:  # cannot happen after __init__; a programmer error if it does
            raise LiangcaoError(Code.NOT_READY, "no head")
        return head

    def reader(self) -> Store:
        """A read-only store connection for the calling thread (API threads never share the writer's)."""
        store: Store | None = getattr(self._local, "store", None)
        if store is None:
            store = Store(self.store_path, readonly=True)
            self._local.store = store
            self._readers.append(store)
        return store

    # ---- admission --------------------------------------------------------------------------------------
    def check(self, raw: bytes, *, verify: bool = True, config: cfgmod.Config | None = None) -> Tx:
        """Parse and pre-check a transaction without admitting it. Raises TxRejected.

        Everything that can never commit is refused here, before it reaches ordering and every peer's blocks:
        a certificate that is not a current member's of an active organisation (a self-signed one naming any
        organisation), a revoked or expired one, and (``verify``) a signature that does not verify. The
        executor checks all of it again at block time; this only keeps what cannot authenticate out."""
        tx = txm.parse(raw)
        if tx.chain_id != self.chain_id:
            raise TxRejected(
                Code.WRONG_CHAIN, f"transaction is for chain {tx.chain_id!r}, this node runs {self.chain_id!r}"
            )
        now = self.clock.now_ms()
        if tx.not_after < now:
            raise TxRejected(Code.EXPIRED, f"transaction expired at {tx.not_after}; it is now {now}")
        if tx.not_after - now > limits.tx_ttl_ms_max:
            raise TxRejected(Code.TTL_TOO_LONG, f"not_after is more than tx_ttl_ms_max={limits.tx_ttl_ms_max} ms ahead")
        if not tx.signatures:
            raise TxRejected(Code.MISSING_SIGNATURE, "transaction has no signatures")
        self._authenticate(tx, now, None if verify else True, config)
        return tx

    def _head_config(self) -> cfgmod.Config:
        """The configuration at the committed head, reloaded when its version changes (API threads)."""
        reader = self.reader()
        with self._admission_lock:
            if cfgmod.version_of(reader) != self._admission_config.version:
                self._admission_config = cfgmod.load(reader, self._admission_certs)
            return self._admission_config

    def _authenticate(self, tx: Tx, now: int, sig_ok: bool | None, config: cfgmod.Config | None = None) -> None:
        try:
            check_signers(config or self._head_config(), self._admission_certs, tx, now, sig_ok)
        except LiangcaoError as exc:
            raise TxRejected(exc.code, exc.message) from exc

    def submit(self, raw: bytes) -> tuple[Tx, str]:
        """Admit one transaction. Returns (tx, status) with status ``pending``, ``committed`` or ``unknown``
        (the ordering service did not confirm in time: it may be ordered; never a refusal)."""
        result = self.submit_many([raw])[0]
        if isinstance(result, LiangcaoError):
            raise result
        return result

    def _committed(self, tx_id: str) -> bool:
        """Whether a transaction with this id consumed it (a forged copy that failed never counts)."""
        return tx_id in self._recent or self.reader().tx_seen(tx_id)

    def _check_many(self, raws: list[bytes], out: list[Any]) -> list[tuple[int, Tx]]:
        """Pre-check ``raws``; errors and already-committed ones go into ``out``; returns the fresh ones.

        Certificates are checked one by one; the Ed25519 signatures of the whole batch are verified
        together, in the process pool when the batch is large enough to pay for it."""
        fresh: list[tuple[int, Tx]] = []
        config = self._head_config()  # one read of the configuration's version for the whole batch
        for i, raw in enumerate(raws):
            try:
                tx = self.check(raw, verify=False, config=config)
            except LiangcaoError as exc:
                out[i] = exc
                continue
            if self._committed(tx.tx_id):
                out[i] = (tx, "committed")
            else:
                fresh.append((i, tx))
        if not fresh:
            return fresh
        verdicts = self.verifier.verify([t for _, t in fresh])
        good: list[tuple[int, Tx]] = []
        for i, tx in fresh:
            if verdicts.get(tx.envelope_id):
                good.append((i, tx))
                self._verified[tx.envelope_id] = None
            else:
                out[i] = TxRejected(
                    Code.BAD_SIGNATURE, "a signature does not match the transaction id and its certificate"
                )
        return good

    def _room(self, raws: list[bytes], link: SoloLink, out: list[Any]) -> list[int]:
        """The indexes of ``raws`` a full solo mempool may still take; the others are refused in ``out`` at once,
        before they are parsed and verified: a submitter that meets a full mempool sends its batch again, and
        doing the whole admission of a batch only to refuse it would take the node's CPU from the commits.
        An envelope the log holds already is let through (it is answered ``pending`` as before). The log's own
        check at publication stays the rule; this one only saves work."""
        count, size = self.pending_count(), self.pending_bytes()
        keep: list[int] = []
        for i, raw in enumerate(raws):
            fits = count < link.pending_max and (size == 0 or size + len(raw) <= link.bytes_max)
            if fits:
                count += 1
                size += len(raw)
                keep.append(i)
            elif link.holds(encoding.sha256_hex(raw)):
                keep.append(i)
            else:
                out[i] = TxRejected(
                    Code.MEMPOOL_FULL,
                    f"the mempool holds {self.pending_count()} transactions, {self.pending_bytes()} bytes "
                    f"(mempool_txs_max={link.pending_max}, mempool_bytes_max={link.bytes_max}); retry later",
                )
        return keep

    def _precompute(self, txs: list[Tx]) -> None:
        """Queue the per-event work of admitted EPCIS captures (decoding, facts, the CBV hash id: pure functions
        of the transaction) for the worker process, so that the commit thread finds it done (``trace.anchor.
        PRECOMPUTED``; the contract takes an entry only for the very arguments it was computed from, and does
        the work itself when there is none). Not awaited: admission answers as before, and a capture executed
        before its entry arrives is only slower."""
        if not self.ahead.workers:
            return
        with self._ahead_lock:
            for tx in txs:
                if tx.contract != "trace" or tx.method != "capture":
                    continue
                a = tx.args
                if not (isinstance(a.get("events"), list) and isinstance(a.get("context", ""), str)
                        and isinstance(a.get("ignore", []), list)):  # fmt: skip
                    continue  # the contract refuses it; nothing to save
                self._ahead_queue.append(tx)
        self._feed_ahead()

    def _feed_ahead(self) -> None:
        """Hand the workers the next queued captures, in admission order (the order they are executed in), while
        fewer than ``AHEAD_BLOCKS`` blocks of them are computed or under way and not yet executed: admission may
        run far ahead of the commits (a whole mempool), and outcomes computed that far ahead would only wait in
        memory. Called at admission, when a job is done and after each commit."""
        with self._ahead_lock:
            window = min(PRECOMPUTED.txs_max, AHEAD_BLOCKS * self.settings.block_txs_max)
            while self._ahead_queue and PRECOMPUTED.size() + self._ahead_txs < window:
                group: list[Tx] = []
                while self._ahead_queue and len(group) < AHEAD_JOB_TXS:
                    tx = self._ahead_queue.popleft()
                    if tx.tx_id not in self._recent:  # not executed already (the commit thread got there first)
                        group.append(tx)
                if not group:
                    continue
                jobs = [(t.args.get("context", ""), t.args.get("ignore", []), t.args["events"]) for t in group]
                future = self.ahead.offload(precompute_many, jobs)
                if future is None:  # the workers are gone (stopping): the commit thread does it all
                    self._ahead_queue.clear()
                    return
                self._ahead_txs += len(group)

                def done(
                    f: Future[list[bytes]],
                    ids: list[str] = [t.tx_id for t in group],  # noqa: B006 (bound now, read once)
                    jobs: list[tuple[Any, Any, Any]] = jobs,
                ) -> None:
                    with self._ahead_lock:
                        self._ahead_txs -= len(ids)
                    if not f.cancelled() and f.exception() is None:
                        for tx_id, (context, ignore, events), packed in zip(ids, jobs, f.result(), strict=True):
                            PRECOMPUTED.put(tx_id, context, ignore, events, packed)
                    self._feed_ahead()

                future.add_done_callback(done)

    def submit_many(self, raws: list[bytes]) -> list[tuple[Tx, str] | LiangcaoError]:
        """Admit many transactions; for each, (tx, status) or the error that refused it.

        Through JetStream the publishes go out together and their acknowledgements are awaited together, so
        a batch costs about one round trip to the ordering service rather than one per transaction. A
        transaction whose publication got no answer in time is ``unknown``, never refused: it may be in
        the stream and be committed (resubmitting the same envelope is safe; ``GET /v1/txs/{id}`` tells)."""
        if self.failed is not None or self._stopping:
            return [TxRejected(Code.NOT_READY, "the node is shutting down or has stopped") for _ in raws]
        out: list[tuple[Tx, str] | LiangcaoError | None] = [None] * len(raws)
        link = self.link
        if link is None:
            return [TxRejected(Code.NOT_READY, "the node has stopped") for _ in raws]
        if isinstance(link, SoloLink):
            keep = self._room(raws, link, out)
            sub: list[Any] = [None] * len(keep)
            fresh = [(keep[j], t) for j, t in self._check_many([raws[i] for i in keep], sub)]
            for j, i in enumerate(keep):
                if sub[j] is not None:
                    out[i] = sub[j]
        else:
            fresh = self._check_many(raws, out)
        admitted = self.clock.now_ms()
        items = [(t.raw, t.envelope_id) for _, t in fresh]
        if not items:
            errors: list[BaseException | None] = []
        elif isinstance(link, SoloLink):  # in this process: hand over the parse, the deriver does not redo it
            errors = link.publish_many(items, parsed=[t for _, t in fresh])
        else:
            errors = link.publish_many(items)
        published: list[Tx] = []
        for (i, tx), error in zip(fresh, errors, strict=True):
            if error is None:
                self._admitted.setdefault(tx.tx_id, admitted)
                out[i] = (tx, "pending")
                published.append(tx)
            elif isinstance(error, PublishUnknown):
                out[i] = (tx, "unknown")
                published.append(tx)
            elif isinstance(error, LogFull):
                out[i] = TxRejected(Code.MEMPOOL_FULL, str(error))
            else:
                out[i] = TxRejected(Code.NOT_READY, f"the ordering service did not take the transaction: {error}")
        self._precompute(published)  # only what the log took: a refused capture is sent again, and computed then
        return [o for o in out if o is not None]

    def position(self, tx_id: str) -> tuple[int, int, int] | None:
        """(height, index, code) of a recently committed transaction, if the node remembers it."""
        return self._recent.get(tx_id)

    def pending_count(self) -> int:
        """Transactions this node holds that are not yet in a block: its queue and its deriver's pending list
        (a solo node's mempool; any thread, approximate while the commit thread moves them)."""
        d = self._deriver
        return self._stream_inbox.qsize() + (len(d.pending) if d is not None else 0)

    def mempool_full(self) -> str:
        """Why a solo node's mempool takes nothing now ("" if it has room): checked before a batch is even
        decoded, so that a submitter resending into a full mempool costs the node little."""
        link = self.link
        if not isinstance(link, SoloLink):
            return ""
        count, size = self.pending_count(), self.pending_bytes()
        if count >= link.pending_max or size >= link.bytes_max:
            return (
                f"the mempool holds {count} transactions, {size} bytes (mempool_txs_max={link.pending_max}, "
                f"mempool_bytes_max={link.bytes_max}); retry later"
            )
        return ""

    def pending_bytes(self) -> int:
        """The encoded size of the transactions counted by :meth:`pending_count` (any thread, approximate)."""
        return self._in_bytes - self._out_bytes

    def _deliver(self, msg: StreamMessage) -> None:
        """The link's delivery into the commit thread's queue (queue.Full propagates: the link waits)."""
        size = len(msg.data) if msg.kind == TX else 0
        self._in_bytes += size  # before the commit thread can take it and count it out
        try:
            self._stream_inbox.put_nowait(msg)
        except queue.Full:
            self._in_bytes -= size
            raise

    def is_pending(self, tx_id: str) -> bool:
        """Whether this node admitted ``tx_id`` and has not yet committed it."""
        return tx_id in self._admitted

    # ---- the commit thread: blocks derived from the ordering link's log ----------------------------------
    RESUME_META = "jetstream_resume"

    def _verify_cut(self, marker: CutMarker) -> bool:
        """Whether ``marker`` is signed by a current orderer of an active organisation, valid at its time.

        Judged by the configuration at this peer's head, which is the configuration after the block
        before the cut's height: the commit thread derives a block only after committing the one before it,
        so every peer judges every cut on the same configuration (a removed organisation's orderer, a
        revoked certificate: ignored by all from the block that removed or revoked it)."""
        info = marker.signature_ok()
        if info is None:
            return False
        config = self._cut_config()
        if config.member_org(info, self.runtime.certs, role="orderer") is None:
            return False
        return info.not_before_ms <= marker.time_ms <= info.not_after_ms

    def _cut_config(self) -> cfgmod.Config:
        store = self.ledger.store
        if cfgmod.version_of(store) != self._cut_cfg.version:
            self._cut_cfg = cfgmod.load(store, self.runtime.certs)
        return self._cut_cfg

    def _follow(self) -> None:
        assert self.link is not None
        if self.solo:  # the log starts afresh in each process, after the head
            r = {"height": self.head.height, "resume_seq": 1, "cut_seq": 0, "time_ms": self.head.time_ms}
        else:
            saved = self.ledger.store.meta(self.RESUME_META)
            r = json.loads(saved) if saved else {"height": 0, "resume_seq": 1, "cut_seq": 0, "time_ms": 0}
        self._deriver = BlockDeriver(
            self.chain_id,
            r["height"] + 1,
            last_time_ms=r["time_ms"],
            # a consortium's peers derive with the one bound they share; a solo node with its own setting
            block_txs_max=self.settings.block_txs_max if self.solo else limits.block_txs_max,
            verify_cut=self._verify_cut,
            after_cut_seq=r["cut_seq"],
        )
        self.link.follow_stream(r["resume_seq"], self._deliver)  # queue.Full: the link waits
        self.link.follow_attestations(1, self._on_attestation)
        self.link.run_orderer(
            self.orderer,
            policy=CutPolicy(self.settings.block_txs_max, self.settings.block_wait_ms),
            position=self._order_position,
        )
        if self.solo:
            return
        # Re-announce our attestations of the last blocks: a crash (or an outbox that could not reach the
        # stream) may have lost some. The stream drops a copy it holds already (same Nats-Msg-Id).
        head = self.head.height
        lo = max(1, head - limits.attestation_reannounce_heights_max + 1)
        for h, raw in self.ledger.store.attestations_of(self.peer.member_id, list(range(lo, head + 1))):
            self.link.publish_attestation(raw, h)

    def _on_attestation(self, seq: int, raw: bytes) -> None:  # the link's thread
        """Queue an attestation for the commit thread. The queue is bounded: when it is full (a peer reading
        a long attestation stream from its start), reading stops and resumes later from the first
        attestation not queued (``_maintain``); those that still arrive meanwhile are read again then."""
        flow = self._att_flow_seq
        if flow is not None and seq > flow:
            return
        self._att_inbox.put((seq, raw))
        if flow is None and seq > 0 and self._att_inbox.qsize() >= ATT_INBOX_MAX and self.link is not None:
            self._att_flow_seq = seq
            self.link.stop_attestations()

    def _order_position(self) -> tuple[int, int, float | None]:
        """What this organisation's orderer cuts for: (next height, pending transactions, since when).

        The orderer reads the commit thread's own deriver instead of deriving a second time: it then cuts
        for exactly the height the peers are at, judged by exactly the same rules."""
        d = self._deriver
        if d is None:
            return 0, 0, None
        return d.next_height, len(d.pending), self._pending_since_ms

    def _run(self) -> None:
        name_this_thread("liangcao-commit")  # for top -H, and the trace bench's CPU accounting
        # A consortium peer does not wait for the stream to run dry when stopping (other organisations keep it
        # flowing): whatever it admitted is in the stream already, and a restart resumes after the last
        # committed block. A solo node's log dies with it: it cuts and commits all of it first.
        try:
            while not self._stopping:
                self.step(timeout_s=0.05, messages_max=STEP_MESSAGES_MAX)
            link = self.link
            if isinstance(link, SoloLink) and link.drain():
                deadline = wall_ms() + self.settings.stop_drain_ms_max
                while self.pending_count() and wall_ms() < deadline:
                    self.step(timeout_s=0.05, messages_max=STEP_MESSAGES_MAX)
                self.dropped_at_stop = self.pending_count()
                if self.dropped_at_stop:
                    log.warning(
                        "stopping: %d pending transactions (%d bytes) not committed within stop_drain_ms_max=%d "
                        "are dropped (admission answered 'pending', never 'committed': their clients send them "
                        "again)",
                        self.dropped_at_stop,
                        self.pending_bytes(),
                        self.settings.stop_drain_ms_max,
                    )
        except BaseException as exc:  # an infrastructure fault: stop rather than risk a half-applied block
            self.failed = exc
            log.exception("commit thread stopped: %s", exc)

    def follow(self) -> None:
        """Connect to the ordering link without starting the commit thread (the simulator steps the node)."""
        self._follow()

    def step(self, timeout_s: float = 0.0, messages_max: int = 1) -> bool:
        """One turn of the commit loop: take the attestations that arrived, chase missing ones, then up to
        ``messages_max`` messages of the stream (waiting up to ``timeout_s`` for the first), committing the
        block the last one completes (a turn ends with a block). Whether a message was taken. The commit
        thread runs this in a loop; the simulator calls it directly, one message at a time."""
        self._take_attestations()
        self._maintain()
        try:
            msg = self._stream_inbox.get(timeout=timeout_s) if timeout_s > 0 else self._stream_inbox.get_nowait()
        except queue.Empty:
            return False
        for taken in range(1, messages_max + 1):
            derived = self._derive(msg)
            if derived is not None:
                self._commit_derived(derived)
                break
            if taken == messages_max:
                break
            try:
                msg = self._stream_inbox.get_nowait()
            except queue.Empty:
                break
        return True

    def _derive(self, msg: StreamMessage) -> DerivedBlock | None:
        """Feed one stream message to the deriver. Whatever the message holds, it never stops the peer:
        the deriver judges it (a transaction is kept for the executor to record, a bad cut is ignored) and
        anything that still fails is counted and skipped."""
        assert self._deriver is not None
        had = len(self._deriver.pending)
        try:
            derived = self._deriver.feed(msg.seq, msg.kind, msg.data, server_ms=msg.server_ms, parsed=msg.parsed)
        except (Fault, sqlite3.Error, MemoryError):
            raise  # this peer failed (its store, while judging a cut): stop, never skip what others took
        except Exception as exc:  # a bug in judging a message must not halt the chain on every peer
            self.poison_messages += 1
            log.error("stream message %s skipped: %s", msg.seq, exc)
            self._count_out(msg, had, None)
            return None
        self._count_out(msg, had, derived)
        if self._deriver.pending and (derived is not None or had == 0):
            self._pending_since_ms = wall_ms()
        elif not self._deriver.pending:
            self._pending_since_ms = None
        if isinstance(self.link, SoloLink) and (derived is not None or (had == 0 and self._deriver.pending)):
            # After a block the next cut may be due already: it goes into the queue while this block executes.
            # The first transaction after an idle spell starts the block's wait: the orderer, asleep for up to
            # half a second with nothing pending, would otherwise hold a lone transaction that long (measured:
            # submit-and-wait 315 ms -> 26 ms).
            self.link.poke()
        return derived

    def _count_out(self, msg: StreamMessage, had: int, derived: DerivedBlock | None) -> None:
        """Release the bytes of what left the pending list with this message (the commit thread only): a
        transaction not kept (redelivered, or skipped), or a block's transactions and any forged copies the
        cut dropped."""
        assert self._deriver is not None
        pending = self._deriver.pending
        if msg.kind == TX:
            if len(pending) > had:
                self._deriver_bytes += len(msg.data)
            else:
                self._out_bytes += len(msg.data)
        if derived is None:
            return
        taken = sum(len(raw) for raw in derived.txs)
        if had - len(pending) == len(derived.txs):
            left = self._deriver_bytes - taken
        else:  # the cut dropped forged copies as well (rare): count what stays
            left = sum(len(raw) for _, raw, _ in pending)
        self._out_bytes += self._deriver_bytes - left
        self._deriver_bytes = left

    def _wait_for_clock(self, derived: DerivedBlock) -> bool:
        """A peer never commits a block stamped later than its own clock allows (cut_clock_skew_ms_max).

        Cut times are bounded by the stream's own timestamps when derived; this is the peer's own check on
        top, against a stream whose clock is wrong: it waits (and says so in health) rather than let chain
        time run ahead, which would expire every later transaction."""
        while derived.time_ms > self.clock.now_ms() + limits.cut_clock_skew_ms_max:
            if self._stopping:  # not committed: derived again from the stream after a restart
                return False
            if not self.clock_alarm:
                self.clock_alarm = f"block {derived.height} is stamped {derived.time_ms}, ahead of this peer's clock"
                log.error("CLOCK ALARM: %s", self.clock_alarm)
            threading.Event().wait(0.2)
        self.clock_alarm = ""
        return True

    def _commit_derived(self, derived: DerivedBlock) -> None:
        if derived.height <= self.head.height:
            return  # committed before a restart; the deriver only replays it to find its place
        if derived.height != self.head.height + 1:
            raise LiangcaoError(Code.BAD_BLOCK, f"derived block {derived.height} after head {self.head.height}")
        if not self._wait_for_clock(derived):
            return
        # The deriver parsed each transaction; one that does not parse is left to the executor to record.
        # Signatures this node verified at admission are not verified again.
        parsed = list(derived.parsed)
        sig_ok = {t.envelope_id: True for t in parsed if t is not None and t.envelope_id in self._verified}
        rest = [t for t in parsed if t is not None and t.envelope_id not in sig_ok]
        if rest:
            sig_ok.update(self.verifier.verify(rest))
        for envelope in sig_ok:
            self._verified.pop(envelope, None)
        while len(self._verified) > limits.recent_txs_max:
            self._verified.popitem(last=False)
        # The stream position is written with the block, in one transaction: a restart resumes
        # exactly after the last committed block.
        resume = {
            "height": derived.height,
            "resume_seq": derived.resume_seq,
            "cut_seq": derived.cut_seq,
            "time_ms": derived.time_ms,
        }
        block, ex = self.ledger.produce(
            list(derived.txs),
            derived.time_ms,
            self.orderer,
            sig_ok,
            parsed if len(parsed) == len(derived.txs) else None,
            meta=None if self.solo else {self.RESUME_META: json.dumps(resume)},
        )
        self._feed_ahead()  # the block took its captures' outcomes: room for the next ones
        att = self._attest(block.header)
        assert self.link is not None
        self.link.publish_attestation(encoding.canonical(att), derived.height)
        early = self._early_atts.pop(derived.height, {})
        # kept early only after the same checks: a fault while storing them is a fault
        self._store_attestations([r for r in (self._attestation(raw) for raw in early.values()) if r is not None])
        self._publish(block, ex, att)

    def _take_attestations(self, batch_max: int = 2048) -> None:
        """Judge up to ``batch_max`` attestations that arrived (the rest wait for the next turn: a stream read
        again from its start must not keep the commit thread from the blocks)."""
        rows: list[tuple[int, str, bytes, str]] = []
        window = limits.early_attestation_heights_max
        for _ in range(batch_max):
            try:
                seq, raw = self._att_inbox.get_nowait()
            except queue.Empty:
                break
            height = att_height(raw)
            if height is not None and height > self.head.height + window:
                self._too_early(seq, height, raw)
                continue
            try:
                row = self._attestation(raw)
            except (Fault, sqlite3.Error, MemoryError):
                raise  # the store failed: a fault, not a bad message
            except Exception as exc:  # a malformed attestation is skipped, never fatal
                self.poison_messages += 1
                log.error("attestation skipped: %s", exc)
                continue
            if row is not None:
                rows.append(row)
        self._store_attestations(rows)

    def _store_attestations(self, rows: list[tuple[int, str, bytes, str]]) -> None:
        """Store counted attestations (one transaction for all), then count them towards finality."""
        if not rows:
            return
        self.ledger.store.add_attestations([(h, m, a) for h, m, a, _ in rows])
        for h in sorted({r[0] for r in rows}):
            self.finality.attested(h, len(self.ledger.store.attestation_orgs(h)))

    def _too_early(self, seq: int, height: int, raw: bytes) -> None:
        """An attestation for a height further ahead than this peer keeps: set aside, read again later.

        The first one pauses the attestation subscription; it is resumed from that position once the head
        is close enough (``_maintain``), so a peer catching up reads each attestation about once instead of
        dropping those of every height it has not reached yet."""
        if height > self._plausible_height():
            return  # no chain that long is in the stream: junk, or a member's peer signing the impossible
        if height > self.network_height:  # how far the network is, from counted attestations only
            with contextlib.suppress(Exception):
                att: Any = encoding.decode(raw, limits.attestation_bytes_max)
                if att.get("chain_id") == self.chain_id and self._cut_config().attesting_org(att, self.runtime.certs):
                    self.network_height = height
        if self._att_pause is None and seq > 0 and self.link is not None:
            self._att_pause = (seq, height)
            self.link.stop_attestations()

    def _attestation(self, raw: bytes) -> tuple[int, str, bytes, str] | None:
        """Judge another peer's attestation: the row to store if it counts and matches our block; a different
        state is a fork alarm.

        Only attestations that count (:meth:`Config.attesting_org`: a current, unrevoked peer certificate of
        an active organisation) are kept or raise alarms: anyone else's say nothing, either way."""
        try:
            att: Any = encoding.decode(raw, limits.attestation_bytes_max)
            height = att.get("height") if isinstance(att, dict) else None
            if (
                type(height) is int
                and 0 <= height <= self.head.height
                and raw in self.ledger.store.attestations(height)
            ):
                return None  # the very bytes we stored already (a stream read again, a re-announcement)
            member = blk.check_attestation(att)
        except LiangcaoError:
            self.poison_messages += 1
            return None
        if att["chain_id"] != self.chain_id or member == self.peer.member_id:
            return None
        height = att["height"]
        ours = self.ledger.store.header(height) if height <= self.head.height else None
        time_ms = ours.time_ms if ours is not None else None
        org = self._cut_config().attesting_org(att, self.runtime.certs, time_ms)
        if org is None:
            return None
        if height <= self._plausible_height():
            self.network_height = max(self.network_height, height)
        if height > self.head.height:
            # one per (height, member): a peer repeating itself cannot crowd out the others
            if height - self.head.height <= limits.early_attestation_heights_max:
                self._early_atts.setdefault(height, {})[member] = raw
            return None
        if ours is None:
            return None
        if att["block_hash"] == ours.hash and att["state_hash"] == ours.state_hash:
            # stored in canonical form: the message may have come in any JSON spelling
            return height, member, encoding.canonical(att, checked=True), org
        self.note_fork(height, member, att, ours)
        return None

    def _plausible_height(self) -> int:
        """The highest height the stream can hold: every block needs a transaction and a cut, so no more
        than half its messages (with slack for a length read a moment ago; unbounded until the ordering
        service told its length)."""
        last = self.link.status().stream_last_seq if self.link is not None else None
        if last is None:
            return 1 << 62
        return max(self.head.height, last // 2) + limits.early_attestation_heights_max

    # ---- finality upkeep: chase what is missing ---------------------------------------------------------
    def _maintain(self) -> None:
        """Every MAINTAIN_EVERY_MS: resume a paused attestation subscription once the head is close enough,
        and for blocks not final ATT_REPAIR_AFTER_MS after their commit fetch every attestation the stream
        holds for them and re-announce our own (backing off per height)."""
        link = self.link
        if link is None or self.solo:
            return
        now = self.clock.now_ms()
        if now < self._next_maintain_ms:
            return
        self._next_maintain_ms = now + MAINTAIN_EVERY_MS
        head = self.head.height
        if self._att_pause is not None and self._att_pause[1] - head <= limits.early_attestation_heights_max // 2:
            seq, _ = self._att_pause
            self._att_pause = None
            self._att_flow_seq = None  # everything from seq on is read again
            link.follow_attestations(seq, self._on_attestation)
        elif (
            self._att_pause is None and self._att_flow_seq is not None and self._att_inbox.qsize() <= ATT_INBOX_MAX // 4
        ):
            seq = self._att_flow_seq
            self._att_flow_seq = None
            link.follow_attestations(seq + 1, self._on_attestation)
        self.finality.quorum = self._cut_config().quorum_size("finality")
        for h in [h for h in self._repair if self.finality.is_final(h)]:
            del self._repair[h]
        if len(self._repair) > 20 * limits.attestation_repair_heights_max:
            self._repair.clear()
        due: list[int] = []
        for h in self.finality.nonfinal(4 * limits.attestation_repair_heights_max):
            since = self.finality.since_ms(h, self._block_time)
            if since is None or now - since < ATT_REPAIR_AFTER_MS:
                break
            last, wait = self._repair.get(h, (0, ATT_REPAIR_AFTER_MS))
            if now - last < wait:
                continue
            self._repair[h] = (now, min(2 * wait, ATT_REPAIR_EVERY_MAX_MS))
            due.append(h)
            if len(due) >= limits.attestation_repair_heights_max:
                break
        if due:
            self.attestations_fetched += len(due)
            link.fetch_attestations(due)
            for h, raw in self.ledger.store.attestations_of(self.peer.member_id, due):
                link.publish_attestation(raw, h)

    def _block_time(self, height: int) -> int | None:
        header = self.ledger.store.header(height)
        return None if header is None else header.time_ms

    # ---- health -----------------------------------------------------------------------------------------
    def condition(self) -> dict[str, Any]:
        """What health reports beyond the head (any thread): ``status`` (``failed``, ``fork``, ``degraded`` or
        ``ok``), the ``problems`` behind it, and for a consortium peer the ordering service's reachability,
        this peer's lag and its oldest non-final block. See docs/operator.md, "Health and alerts"."""
        s = self.settings
        problems: list[str] = []
        out: dict[str, Any] = {}
        link = self.link
        now = wall_ms()
        if link is not None and not self.solo:
            st = link.status()
            silent_ms = None if st.last_ok_ms is None else max(0, now - st.last_ok_ms)
            reachable = st.connected and silent_ms is not None and silent_ms <= s.ordering_silence_ms_max
            out["ordering_status"] = {
                "reachable": reachable,
                "connected": st.connected,
                "silent_ms": silent_ms,
                "error": st.error,
            }
            if not reachable:
                why = "not connected" if not st.connected else f"no answer for {silent_ms} ms"
                problems.append(f"ordering service unreachable ({why})")
            deriver = self._deriver
            taken = deriver.last_seq if deriver is not None else 0
            lag_messages = max(0, st.stream_last_seq - taken) if st.stream_last_seq is not None else None
            head = self.head
            lag_blocks = max(0, self.network_height - head.height)
            out["lag"] = {"messages": lag_messages, "blocks": lag_blocks, "network_height": self.network_height}
            if lag_messages is not None and lag_messages > s.lag_messages_max:
                problems.append(f"{lag_messages} stream messages behind (more than {s.lag_messages_max})")
            if lag_blocks > s.lag_blocks_max:
                problems.append(f"{lag_blocks} blocks behind the network (more than {s.lag_blocks_max})")
            view = self.finality.view(self._reader_block_time)
            since = view.oldest_nonfinal_since_ms  # on the node's clock (chain time), like block times
            age = None if since is None else max(0, self.clock.now_ms() - since)
            unacked_ms = None if st.att_unacked_since_ms is None else max(0, now - st.att_unacked_since_ms)
            out["finality_status"] = {
                "final_upto": view.final_upto,
                "nonfinal_blocks": view.nonfinal,
                "oldest_nonfinal_height": view.oldest_nonfinal,
                "oldest_nonfinal_age_ms": age,
                "quorum": view.quorum,
                "attestations_unacked": st.att_unacked,
                "attestations_unacked_age_ms": unacked_ms,
                "attestations_dropped": st.att_dropped,
                "attestations_fetched": self.attestations_fetched,
            }
            if age is not None and age > s.nonfinal_age_ms_max:
                problems.append(
                    f"block {view.oldest_nonfinal} not final after {age} ms (more than {s.nonfinal_age_ms_max})"
                )
            if unacked_ms is not None and unacked_ms > s.nonfinal_age_ms_max:
                problems.append(f"{st.att_unacked} attestations not acknowledged by the stream for {unacked_ms} ms")
        if self.clock_alarm:
            problems.append(f"clock alarm: {self.clock_alarm}")
        if self.failed is not None:
            status = "failed"
            problems.insert(0, f"the commit thread stopped: {self.failed!r}")
        elif self.fork_alarms:
            status = "fork"
            problems.insert(0, f"{len(self.fork_alarms)} fork alarms")
        else:
            status = "degraded" if problems else "ok"
        return {"status": status, "problems": problems, **out}

    def _reader_block_time(self, height: int) -> int | None:
        header = self.reader().header(height)
        return None if header is None else header.time_ms

    # ---- fork alarms ------------------------------------------------------------------------------------
    def note_fork(self, height: int, member: str, att: Any, ours: blk.Header) -> bool:
        """Record that ``member`` (a peer whose attestations count) attests another block or state than ours
        at ``height`` (from the stream or posted to the API); whether the alarm is new.

        One alarm per (height, member), at most ``fork_alarms_max`` kept as evidence; an alarm the operator
        cleared before (the same attestation, read again from the stream) is not raised again."""
        alarm = {
            "height": height,
            "member": member,
            "their_block_hash": att["block_hash"],
            "their_state_hash": att["state_hash"],
            "our_block_hash": ours.hash,
            "our_state_hash": ours.state_hash,
        }
        key = (height, member)
        with self._alarm_lock:
            if key in self._alarm_keys or _fingerprint(alarm) in self._resolved:
                return False
            self.fork_alarms_seen += 1
            if len(self.fork_alarms) >= limits.fork_alarms_max:
                return False
            self._alarm_keys.add(key)
            self.fork_alarms.append(alarm)
        log.error("FORK ALARM at height %s: %s attests a different block or state", height, member)
        return True

    def fork_alarm_summary(self, sample: int = 5) -> dict[str, Any]:
        """A bounded summary: how many, by whom, which heights, and the first few alarms."""
        with self._alarm_lock:
            alarms = list(self.fork_alarms)
        heights = [a["height"] for a in alarms]
        return {
            "count": len(alarms),
            "members": sorted({a["member"] for a in alarms}),
            "first_height": min(heights, default=None),
            "last_height": max(heights, default=None),
            "sample": alarms[:sample],
            "truncated": len(alarms) >= limits.fork_alarms_max,
        }

    def clear_fork_alarms(self) -> int:
        """Forget the current fork alarms (the operator resolved them: docs/operations.md, "Resolving a fork
        alarm"), remembering them beside the store so that they are not raised again. How many."""
        with self._alarm_lock:
            alarms, self.fork_alarms = self.fork_alarms, []
            self._alarm_keys = set()
            self._resolved.update(_fingerprint(a) for a in alarms)
            _save_resolved(self._resolved_path, self._resolved)
        if alarms:
            log.warning("%s fork alarms cleared by the operator", len(alarms))
        return len(alarms)

    def _attest(self, header: blk.Header) -> dict[str, Any]:
        att = blk.make_attestation(
            self.peer.key, self.peer.cert, header.chain_id, header.height, header.hash, header.state_hash
        )
        self.ledger.store.add_attestation(header.height, self.peer.member_id, encoding.canonical(att))
        if not self.solo:  # a consortium peer tracks finality (a solo node's comes from witnesses)
            self.finality.committed(header.height, self.clock.now_ms())
            self.finality.attested(header.height, len(self.ledger.store.attestation_orgs(header.height)))
        return att

    def _attest_head(self) -> None:
        head = self.head
        if not self.ledger.store.attestations(head.height):
            self._attest(head)

    def _publish(self, block: blk.Block, ex: Execution, att: dict[str, Any]) -> None:
        h = block.header.height
        admitted: dict[str, int] = {}
        for i, tx_id in enumerate(ex.tx_ids):
            if ex.consumed[i]:  # a copy that failed without consuming its id says nothing about the id
                self._recent[tx_id] = (h, i, ex.codes[i])
            t = self._admitted.pop(tx_id, None)
            if t is not None:
                admitted[tx_id] = t
        while len(self._recent) > recent_txs_max:
            self._recent.popitem(last=False)
        envelopes = [encoding.sha256_hex(raw) for raw in block.txs]
        info = Committed(
            block.header, ex.tx_ids, ex.codes, ex.receipts, ex.events, att, admitted, ex.consumed, envelopes
        )
        for listener in list(self.listeners):
            try:
                listener(info)
            except Exception:  # a listener's bug must not stop the chain
                log.exception("block listener failed")


def _fingerprint(alarm: dict[str, Any]) -> str:
    """One disagreeing attestation: who, which height, which hashes (what a cleared alarm is remembered by)."""
    fields = (alarm["height"], alarm["member"], alarm["their_block_hash"], alarm["their_state_hash"])
    return hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:32]


#: cleared fork alarms remembered beside the store (the oldest are forgotten beyond this)
RESOLVED_MAX = 100_000


def _load_resolved(path: Path) -> set[str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return set()
    return {str(x) for x in data} if isinstance(data, list) else set()


def _save_resolved(path: Path, resolved: set[str]) -> None:
    items = sorted(resolved)[-RESOLVED_MAX:]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(items))
    os.replace(tmp, path)
