"""A single node: mempool -> solo ordering -> parallel signature checks -> execute -> commit -> attest -> events.

Theory of operation
-------------------
API threads call :meth:`Node.submit`, which parses the transaction, refuses what can never commit
(wrong chain, expired, already committed) with a stable code, and puts the rest in the bounded mempool.
One commit thread owns the writable store. It takes a cut from the mempool (``block_txs_max`` or
``block_wait_ms``, see :mod:`liangcao.ordering.solo`), has the signatures of the *next* cut verified in the
process pool while it executes and commits the current one (a two-stage pipeline), seals the block as the
orderer, commits it durably, signs an attestation as the peer, and only then tells listeners (waiting
clients, the event stream, metrics). So nothing is reported committed before it is on disk.

Shutdown (``stop``) drains the mempool into blocks before closing: a transaction accepted before SIGTERM
is committed, not dropped. A store fault in the commit thread stops the node (``failed`` says why) rather
than risk a half-applied block.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from liangcao import encoding, limits
from liangcao.apps.bundle import default_registry
from liangcao.clock import Clock
from liangcao.codes import Code
from liangcao.contracts.runtime import ContractRuntime
from liangcao.crypto import identity, keys
from liangcao.errors import LiangcaoError, TxRejected
from liangcao.ledger import block as blk
from liangcao.ledger import tx as txm
from liangcao.ledger.chain import Ledger
from liangcao.ledger.executor import Execution
from liangcao.ledger.store import Store
from liangcao.ledger.tx import Signer, Tx
from liangcao.node.mempool import Mempool
from liangcao.node.verify import SigVerifier
from liangcao.ordering.jetstream import BlockDeriver, CutMarker, CutPolicy, DerivedBlock

if TYPE_CHECKING:  # the link pulls in nats-py, which a solo node never imports
    from liangcao.node.link import JetStreamLink

log = logging.getLogger("liangcao.node")

recent_txs_max = limits.recent_txs_max


@dataclass(frozen=True)
class NodeSettings:
    block_txs_max: int = 1000
    block_wait_ms: int = 20
    mempool_txs_max: int = limits.mempool_txs_max
    verify_workers: int | None = None  # None: one per core

    def __post_init__(self) -> None:
        if not 1 <= self.block_txs_max <= limits.block_txs_max:
            raise ValueError(f"block_txs_max must be 1..{limits.block_txs_max}")
        if not 0 <= self.block_wait_ms <= 60_000:
            raise ValueError("block_wait_ms must be 0..60000")
        if not self.block_txs_max <= self.mempool_txs_max <= limits.mempool_txs_max:
            raise ValueError(f"mempool_txs_max must be block_txs_max..{limits.mempool_txs_max}")


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
        link: JetStreamLink | None = None,
    ) -> None:
        """``link``: order through the consortium's JetStream cluster instead of the embedded solo orderer."""
        self.settings = settings or NodeSettings()
        self.link = link
        self.fork_alarms: list[dict[str, Any]] = []
        self._derived: queue.Queue[DerivedBlock] = queue.Queue()
        self._att_inbox: queue.Queue[bytes] = queue.Queue()
        self._early_atts: dict[int, list[bytes]] = {}
        self.store_path = Path(store_path)
        self.runtime = ContractRuntime(default_registry())
        self.ledger = Ledger.open(self.store_path, self.runtime)
        if self.ledger.head is None:
            self.ledger.apply(genesis)
        stored = self.ledger.store.header(0)
        if stored is None or stored.hash != genesis.hash:
            self.ledger.close()
            raise LiangcaoError(Code.BAD_BLOCK, f"the store at {self.store_path} belongs to another chain")
        self.genesis = genesis
        self.chain_id = genesis.header.chain_id
        self.orderer = orderer
        self.peer = peer
        self.clock = Clock(self.ledger.head.time_ms if self.ledger.head is not None else 0)
        self.mempool = Mempool(self.settings.mempool_txs_max)
        self.verifier = SigVerifier(self.settings.verify_workers, self.runtime.certs)
        self.listeners: list[Listener] = []
        self.failed: BaseException | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._local = threading.local()
        self._readers: list[Store] = []
        self._recent: OrderedDict[str, tuple[int, int, int]] = OrderedDict()
        self._admitted: dict[str, int] = {}
        self._head_lock = threading.Lock()
        self._attest_head()

    # ---- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> None:
        if self.link is not None:
            self._follow()
            target = self._run_consortium
        else:
            target = self._run
        self._thread = threading.Thread(target=target, name="liangcao-commit", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 60.0) -> None:
        """Commit everything admitted, then close. Idempotent."""
        self._stopping = True
        self.mempool.wake()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        if self.link is not None:
            self.link.close()
            self.link = None
        self.verifier.close()
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
    def check(self, raw: bytes) -> Tx:
        """Parse and pre-check a transaction without admitting it. Raises TxRejected."""
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
        return tx

    def submit(self, raw: bytes) -> tuple[Tx, str]:
        """Admit one transaction. Returns (tx, status) with status ``pending`` or ``committed``."""
        if self.failed is not None or self._stopping:
            raise TxRejected(Code.NOT_READY, "the node is shutting down or has stopped")
        tx = self.check(raw)
        if tx.tx_id in self._recent or self.reader().tx_seen(tx.tx_id):
            return tx, "committed"
        admitted = self.clock.now_ms()
        if self.link is not None:
            try:
                self.link.publish_tx(tx.raw, tx.tx_id)
            except Exception as exc:  # no quorum of ordering servers reachable: the client may retry
                raise TxRejected(Code.NOT_READY, f"the ordering service did not take the transaction: {exc}") from exc
            self._admitted.setdefault(tx.tx_id, admitted)
            return tx, "pending"
        if self.mempool.add(tx):  # raises MEMPOOL_FULL before anything is remembered
            self._admitted.setdefault(tx.tx_id, admitted)
        return tx, "pending"

    def submit_many(self, raws: list[bytes]) -> list[tuple[Tx, str] | LiangcaoError]:
        """Admit many transactions; for each, (tx, status) or the error that refused it.

        Through JetStream the publishes go out together and their acknowledgements are awaited together, so
        a batch costs about one round trip to the ordering service rather than one per transaction."""
        out: list[tuple[Tx, str] | LiangcaoError | None] = [None] * len(raws)
        if self.link is None:
            for i, raw in enumerate(raws):
                try:
                    out[i] = self.submit(raw)
                except LiangcaoError as exc:
                    out[i] = exc
            return [o for o in out if o is not None]
        if self.failed is not None or self._stopping:
            return [TxRejected(Code.NOT_READY, "the node is shutting down or has stopped") for _ in raws]
        fresh: list[tuple[int, Tx]] = []
        for i, raw in enumerate(raws):
            try:
                tx = self.check(raw)
            except LiangcaoError as exc:
                out[i] = exc
                continue
            if tx.tx_id in self._recent or self.reader().tx_seen(tx.tx_id):
                out[i] = (tx, "committed")
            else:
                fresh.append((i, tx))
        admitted = self.clock.now_ms()
        errors = self.link.publish_many([(t.raw, t.tx_id) for _, t in fresh]) if fresh else []
        for (i, tx), error in zip(fresh, errors, strict=True):
            if error is None:
                self._admitted.setdefault(tx.tx_id, admitted)
                out[i] = (tx, "pending")
            else:
                out[i] = TxRejected(Code.NOT_READY, f"the ordering service did not take the transaction: {error}")
        return [o for o in out if o is not None]

    def position(self, tx_id: str) -> tuple[int, int, int] | None:
        """(height, index, code) of a recently committed transaction, if the node remembers it."""
        return self._recent.get(tx_id)

    # ---- the commit thread ------------------------------------------------------------------------------
    def _take(self, timeout_s: float) -> list[Tx]:
        return self.mempool.take(
            block_txs_max=self.settings.block_txs_max,
            block_wait_ms=self.settings.block_wait_ms,
            timeout_s=timeout_s,
            stopping=lambda: self._stopping,
        )

    def _run(self) -> None:
        current: tuple[list[Tx], list[Future[list[tuple[str, bool]]]]] | None = None
        try:
            while True:
                if current is None:
                    batch = self._take(0.2)
                    if not batch:
                        if self._stopping and len(self.mempool) == 0:
                            return
                        continue
                    current = (batch, self.verifier.submit(batch))
                # Cut the next block now, so its signatures are checked while this one executes.
                nxt_batch = self._take(0.0) if len(self.mempool) else []
                nxt = (nxt_batch, self.verifier.submit(nxt_batch)) if nxt_batch else None
                batch, futures = current
                self._commit(batch, SigVerifier.gather(futures))
                current = nxt
        except BaseException as exc:  # an infrastructure fault: stop rather than risk a half-applied block
            self.failed = exc
            log.exception("commit thread stopped: %s", exc)

    # ---- consortium mode: blocks derived from the JetStream log --------------------------------------------
    RESUME_META = "jetstream_resume"

    def _genesis_orderer_cas(self) -> list[identity.CertInfo]:
        # Cuts are judged by the genesis organisations' CAs only, the same on every peer whenever it starts;
        # an organisation admitted later orders once the others' configuration says so (not yet: its cuts
        # are ignored by all, deterministically, and the others' orderers keep cutting).
        genesis_tx: Any = encoding.decode(self.genesis.txs[0])
        orgs = genesis_tx["body"]["args"]["orgs"]
        return [identity.parse_certificate(keys.unb64(o["ca_cert"])) for o in orgs]

    def _verify_cut(self, marker: CutMarker) -> bool:
        info = marker.signature_ok()
        if info is None or info.role != "orderer":
            return False
        return any(ca.org == info.org and identity.issued_by(info, ca) for ca in self._cut_cas)

    def _follow(self) -> None:
        assert self.link is not None
        self._cut_cas = self._genesis_orderer_cas()
        saved = self.ledger.store.meta(self.RESUME_META)
        r = json.loads(saved) if saved else {"height": 0, "resume_seq": 1, "cut_seq": 0, "time_ms": 0}
        deriver = BlockDeriver(
            self.chain_id,
            r["height"] + 1,
            last_time_ms=r["time_ms"],
            block_txs_max=limits.block_txs_max,
            verify_cut=self._verify_cut,
            after_cut_seq=r["cut_seq"],
        )
        self.link.follow_blocks(deriver, r["resume_seq"], self._derived.put)
        self.link.follow_attestations(self._att_inbox.put)
        self.link.run_orderer(
            self.orderer,
            next_height=r["height"] + 1,
            start_seq=r["resume_seq"],
            after_cut_seq=r["cut_seq"],
            policy=CutPolicy(self.settings.block_txs_max, self.settings.block_wait_ms),
            verify_cut=self._verify_cut,
        )
        # Re-announce our attestation of the head (it may have been lost with a crash before publishing).
        for raw in self.ledger.store.attestations(self.head.height):
            mine: Any = encoding.decode(raw)
            if blk.check_attestation(mine) == self.peer.member_id:
                self.link.publish_attestation(raw)

    def _run_consortium(self) -> None:
        try:
            while not (self._stopping and self._derived.empty()):
                self._take_attestations()
                try:
                    derived = self._derived.get(timeout=0.05)
                except queue.Empty:
                    continue
                if derived.height <= self.head.height:
                    continue  # committed before a restart; the deriver only replays it to find its place
                if derived.height != self.head.height + 1:
                    raise LiangcaoError(Code.BAD_BLOCK, f"derived block {derived.height} after head {self.head.height}")
                parsed: list[Tx] = []
                for raw in derived.txs:
                    with contextlib.suppress(LiangcaoError):  # the executor records a malformed one's code
                        parsed.append(txm.parse(raw))
                sig_ok = SigVerifier.gather(self.verifier.submit(parsed)) if parsed else {}
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
                    meta={self.RESUME_META: json.dumps(resume)},
                )
                att = self._attest(block.header)
                assert self.link is not None
                self.link.publish_attestation(encoding.canonical(att))
                for raw in self._early_atts.pop(derived.height, []):
                    self._attestation(raw)
                self._publish(block, ex, att)
        except BaseException as exc:
            self.failed = exc
            log.exception("commit thread stopped: %s", exc)

    def _take_attestations(self) -> None:
        while True:
            try:
                raw = self._att_inbox.get_nowait()
            except queue.Empty:
                return
            self._attestation(raw)

    def _attestation(self, raw: bytes) -> None:
        """Keep another peer's attestation if it matches our block; a different state is a fork alarm."""
        try:
            att: Any = encoding.decode(raw)
            member = blk.check_attestation(att)
        except LiangcaoError:
            return
        if att.get("chain_id") != self.chain_id or member == self.peer.member_id:
            return
        height = int(att["height"])
        if height > self.head.height:
            self._early_atts.setdefault(height, []).append(raw)
            return
        ours = self.ledger.store.header(height)
        if ours is None:
            return
        if att["block_hash"] == ours.hash and att["state_hash"] == ours.state_hash:
            self.ledger.store.add_attestation(height, member, raw)
            return
        alarm = {
            "height": height,
            "member": member,
            "their_block_hash": att["block_hash"],
            "their_state_hash": att["state_hash"],
            "our_block_hash": ours.hash,
            "our_state_hash": ours.state_hash,
        }
        if alarm not in self.fork_alarms:
            self.fork_alarms.append(alarm)
            log.error("FORK ALARM at height %s: %s attests a different block or state", height, member)

    def _commit(self, batch: list[Tx], sig_ok: dict[str, bool]) -> None:
        raws = [t.raw for t in batch]
        block, ex = self.ledger.produce(raws, self.clock.now_ms(), self.orderer, sig_ok, batch)
        att = self._attest(block.header)
        self._publish(block, ex, att)

    def _attest(self, header: blk.Header) -> dict[str, Any]:
        att = blk.make_attestation(
            self.peer.key, self.peer.cert, header.chain_id, header.height, header.hash, header.state_hash
        )
        self.ledger.store.add_attestation(header.height, self.peer.member_id, encoding.canonical(att))
        return att

    def _attest_head(self) -> None:
        head = self.head
        if not self.ledger.store.attestations(head.height):
            self._attest(head)

    def _publish(self, block: blk.Block, ex: Execution, att: dict[str, Any]) -> None:
        h = block.header.height
        admitted: dict[str, int] = {}
        for i, tx_id in enumerate(ex.tx_ids):
            self._recent[tx_id] = (h, i, ex.codes[i])
            t = self._admitted.pop(tx_id, None)
            if t is not None:
                admitted[tx_id] = t
        while len(self._recent) > recent_txs_max:
            self._recent.popitem(last=False)
        info = Committed(block.header, ex.tx_ids, ex.codes, ex.receipts, ex.events, att, admitted)
        for listener in list(self.listeners):
            try:
                listener(info)
            except Exception:  # a listener's bug must not stop the chain
                log.exception("block listener failed")
