"""The ledger: a store, a runtime and the rules that link blocks into a chain.

``Ledger`` is what a node (or a test) drives in-process:

* :meth:`Ledger.produce` executes transactions on top of the head, seals the block as the orderer and
  commits it (the solo path);
* :meth:`Ledger.apply` takes a sealed block made elsewhere (or the genesis block), checks its link, time
  and seal, re-executes it and commits it only if the roots and state hash agree;
* :meth:`Ledger.rebuild` re-derives state and indexes from the stored blocks alone.

Block-level problems (bad link, time going backwards, wrong roots, bad seal) raise :class:`BlockInvalid`
and commit nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from liangcao import encoding, limits
from liangcao.codes import Code
from liangcao.crypto.signer import Signer
from liangcao.errors import BlockInvalid, LiangcaoError, StoreError
from liangcao.ledger import block as blk
from liangcao.ledger import executor
from liangcao.ledger.executor import Execution, Runtime
from liangcao.ledger.state import Overlay, StateView
from liangcao.ledger.store import REBUILD_META, Store
from liangcao.ledger.tx import Tx


class _Before:
    """The store as it was before block ``height``: for replaying blocks that are already stored."""

    def __init__(self, store: Store, height: int) -> None:
        self._store = store
        self._height = height

    def get(self, key: str) -> bytes | None:
        return self._store.get(key)

    def range(self, prefix: str) -> Iterator[tuple[str, bytes]]:
        return self._store.range(prefix)

    def present(self, keys: list[str]) -> set[str]:
        return self._store.present(keys)

    @property
    def fault(self) -> BaseException | None:
        return self._store.fault

    def tx_seen(self, tx_id: str) -> bool:
        try:
            row = self._store.db.execute(
                "SELECT 1 FROM txs WHERE tx_id=? AND consumed=1 AND height<? LIMIT 1", (tx_id, self._height)
            ).fetchone()
        except sqlite3.Error as exc:
            self._store.fault = exc
            raise StoreError(Code.INTERNAL, f"store read failed: {exc}") from exc
        return row is not None


def check_block_size(txs: Sequence[bytes]) -> None:
    if len(txs) > limits.block_txs_max:
        raise BlockInvalid(Code.TOO_LARGE, f"{len(txs)} transactions, more than block_txs_max={limits.block_txs_max}")
    size = sum(len(t) for t in txs)
    if size > limits.block_bytes_max:
        raise BlockInvalid(
            Code.TOO_LARGE,
            f"{size} bytes of transactions, more than block_bytes_max={limits.block_bytes_max}",
        )


class Ledger:
    def __init__(self, store: Store, runtime: Runtime) -> None:
        self.store = store
        self.runtime = runtime
        self._head = store.head()
        if not store.readonly and store.rebuild_needed:  # a store of the first schema, upgraded on opening
            self.rebuild()

    @classmethod
    def open(cls, path: str | Path, runtime: Runtime, *, checkpointer: bool = False) -> Ledger:
        store = Store(path, checkpointer=checkpointer)
        try:
            return cls(store, runtime)
        except BaseException:
            # A replay on opening (a schema-1 store's) that fails must not leave the store, its checkpointer thread
            # and their connections open behind the error: the caller never got a ledger to close.
            store.close()
            raise

    def close(self) -> None:
        self.store.close()

    @property
    def head(self) -> blk.Header | None:
        return self._head

    @property
    def chain_id(self) -> str:
        if self._head is None:
            raise LiangcaoError(Code.NOT_READY, "the ledger has no genesis block yet")
        return self._head.chain_id

    # ---- making blocks ----------------------------------------------------------------------------------
    def execute_next(
        self,
        txs: Sequence[bytes],
        time_ms: int,
        sig_ok: Mapping[str, bool] | None = None,
        parsed: Sequence[Tx | None] | None = None,
    ) -> tuple[blk.Header, Execution]:
        """Execute ``txs`` as the next block on the head; nothing is written."""
        head = self._head
        if head is None:
            raise LiangcaoError(Code.NOT_READY, "the ledger has no genesis block yet")
        check_block_size(txs)
        time_ms = max(time_ms, head.time_ms)  # block time never goes backwards
        with self.store.lock:
            ex = executor.execute(
                self.store,
                self.runtime,
                chain_id=head.chain_id,
                height=head.height + 1,
                time_ms=time_ms,
                prev_state_hash=head.state_hash,
                txs=txs,
                sig_ok=sig_ok,
                parsed=parsed,
            )
        return ex.header(head.chain_id, head.height + 1, head.hash, time_ms), ex

    def produce(
        self,
        txs: Sequence[bytes],
        time_ms: int,
        sealer: Signer,
        sig_ok: Mapping[str, bool] | None = None,
        parsed: Sequence[Tx | None] | None = None,
        meta: dict[str, str] | None = None,
    ) -> tuple[blk.Block, Execution]:
        """Execute, seal and durably commit the next block (the solo orderer's path, and a consortium peer's
        for a block derived from the stream, with its stream position in ``meta``)."""
        header, ex = self.execute_next(txs, time_ms, sig_ok, parsed)
        block = blk.Block(header, blk.Seal.make(sealer.key, sealer.cert, header.hash), tuple(txs))
        self.store.commit_block(block, ex, meta=meta)
        self._head = header
        return block, ex

    # ---- taking blocks ----------------------------------------------------------------------------------
    def verify_block(self, block: blk.Block) -> Execution:
        """Check a block against the head and re-execute it. Raises :class:`BlockInvalid`; writes nothing."""
        header = block.header
        head = self._head
        check_block_size(block.txs)
        if head is None:
            if header.height != 0 or header.prev_hash != blk.ZERO_HASH:
                raise BlockInvalid(Code.BAD_BLOCK, "the first block must be a genesis block (height 0, zero prev_hash)")
            prev_state = blk.ZERO_HASH
        else:
            if header.chain_id != head.chain_id:
                raise BlockInvalid(Code.BAD_BLOCK, f"block is for chain {header.chain_id!r}")
            if header.height != head.height + 1:
                raise BlockInvalid(Code.BAD_BLOCK, f"block height {header.height} does not follow {head.height}")
            if header.prev_hash != head.hash:
                raise BlockInvalid(Code.BAD_BLOCK, f"block {header.height} does not link to the head's hash")
            if header.time_ms < head.time_ms:
                raise BlockInvalid(Code.BAD_BLOCK, f"block {header.height} time goes backwards")
            prev_state = head.state_hash
        with self.store.lock:
            view: StateView = self.store
            ex = executor.execute(
                view,
                self.runtime,
                chain_id=header.chain_id,
                height=header.height,
                time_ms=header.time_ms,
                prev_state_hash=prev_state,
                txs=block.txs,
            )
            expected = ex.header(header.chain_id, header.height, header.prev_hash, header.time_ms)
            if expected != header:
                diff = [f for f in blk.HEADER_FIELDS if getattr(expected, f) != getattr(header, f)]
                raise BlockInvalid(
                    Code.BAD_BLOCK, f"block {header.height}: re-execution disagrees on {', '.join(diff)}"
                )
            seal_view: StateView = view
            if head is None:  # the genesis block is sealed by an orderer of the configuration it creates
                overlay = Overlay(view)
                overlay.writes.update(ex.writes)
                seal_view = overlay
            try:
                self.runtime.check_sealer(seal_view, block.seal.cert, header.time_ms)
            except LiangcaoError as exc:
                raise BlockInvalid(Code.BAD_BLOCK, f"block {header.height}: {exc.message}") from exc
            block.seal.check(header.hash)
        return ex

    def apply(self, block: blk.Block) -> Execution:
        """Verify and durably commit a block made elsewhere (also the genesis block)."""
        ex = self.verify_block(block)
        self.store.commit_block(block, ex)
        self._head = block.header
        return ex

    def rebuild(self) -> int:
        """Re-derive state and indexes from the stored blocks alone. Returns the number of blocks replayed."""
        self.store.reset_derived()
        prev_state = blk.ZERO_HASH
        n = 0
        for height in range(self.store.height() + 1):
            block = self.store.block(height)
            if block is None:
                raise BlockInvalid(Code.BAD_BLOCK, f"block {height} is missing")
            ex = executor.execute(
                _Before(self.store, height),
                self.runtime,
                chain_id=block.header.chain_id,
                height=height,
                time_ms=block.header.time_ms,
                prev_state_hash=prev_state,
                txs=block.txs,
            )
            if ex.state_hash != block.header.state_hash:
                raise BlockInvalid(Code.BAD_BLOCK, f"block {height}: replayed state hash differs from the header")
            self.store.commit_block(block, ex, derived_only=True)
            prev_state = ex.state_hash
            n += 1
        self.store.set_meta(REBUILD_META, None)
        self._head = self.store.head()
        return n

    # ---- reading ----------------------------------------------------------------------------------------
    def query(self, contract: str, method: str, args: dict[str, Any]) -> Any:
        """Run a contract's ``@query`` on the committed state."""
        head = self._head
        run = getattr(self.runtime, "query", None)
        if run is None or head is None:
            raise LiangcaoError(Code.NOT_READY, "queries need a genesis block and a runtime with queries")
        with self.store.lock:
            return run(self.store, contract, method, args, height=head.height, time_ms=head.time_ms)

    def tx(self, tx_id: str) -> dict[str, Any] | None:
        """A transaction with its receipt, block header and Merkle inclusion proofs of both."""
        return tx_with_proofs(self.store, tx_id)


def tx_with_proofs(store: Store, tx_id: str) -> dict[str, Any] | None:
    """A transaction with its receipt, block header and Merkle inclusion proofs of both, from ``store``."""
    pos = store.tx_position(tx_id)
    if pos is None:
        return None
    height, idx = pos
    header = store.header(height)
    if header is None:
        return None
    txs = store.block_txs(height)
    receipts = store.receipts(height)
    return {
        "tx_id": tx_id,
        "height": height,
        "index": idx,
        "tx": encoding.decode(txs[idx]),
        "receipt": encoding.decode(receipts[idx]),
        "header": header.to_dict(),
        "block_hash": header.hash,
        "tx_proof": blk.proof_dict(txs, idx, header, "tx"),
        "receipt_proof": blk.proof_dict(receipts, idx, header, "receipt"),
    }
