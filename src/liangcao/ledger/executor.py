"""The pure executor: ``(state view, block) -> (writes, receipts, state hash)``.

Theory of operation
-------------------
The executor never touches a socket, a database handle or the clock; block time comes from the block.
It runs each transaction in block order against a per-transaction overlay of a per-block overlay of the
view. A transaction that fails gets a receipt with its stable code and message and its overlay is thrown
away: all or nothing per transaction. Exceptions other than business outcomes are infrastructure faults and
propagate: the block is not committed. A read of the view that failed is such a fault even when contract
code caught the exception: the view remembers it (``fault``) and the executor checks after each
transaction (``errors.py``: two channels).

Checks run in a fixed order, so that the same bad transaction always gets the same code::

    1. parse            BAD_ENCODING, TOO_LARGE, VALUE_TOO_DEEP, FLOAT_NOT_ALLOWED, MALFORMED_TX, ...
    2. chain            WRONG_CHAIN
    3. time             EXPIRED (not_after < block time), TTL_TOO_LONG (not_after too far ahead)
    4. replay           DUPLICATE_TX (already consumed, or earlier in this block)
    5. authenticate     MISSING_SIGNATURE, BAD_CERTIFICATE, UNKNOWN_ORGANIZATION, UNKNOWN_CERTIFICATE,
                        CERTIFICATE_REVOKED, CERTIFICATE_EXPIRED, DUPLICATE_SIGNER, BAD_SIGNATURE
    6. dispatch + run   UNKNOWN_CONTRACT, UNKNOWN_METHOD, INVALID_ARGUMENT, then the contract's own codes

A transaction *consumes* its id (later copies are DUPLICATE_TX) once it passed steps 1 to 5, whatever the
contract then says; a copy that fails before that consumes nothing, so a forged copy of someone's
transaction cannot block the genuine one.

What a contract is, and how signers are authenticated, is the runtime's business (``liangcao.contracts``),
reached through the :class:`Runtime` protocol, so this layer depends on nothing above it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from liangcao import encoding, limits
from liangcao.codes import NON_CONSUMING, Code
from liangcao.errors import LiangcaoError, StoreError
from liangcao.ledger import block as blk
from liangcao.ledger import tx as txmod
from liangcao.ledger.state import Overlay, StateView


@dataclass(slots=True)
class TxOutcome:
    code: int
    message: str
    result: Any = None
    events: list[dict[str, Any]] = field(default_factory=list)


class Runtime(Protocol):
    """The contract runtime as the executor sees it."""

    def begin_block(self, view: StateView, chain_id: str, height: int, time_ms: int) -> None:
        """Called once before the first transaction of a block."""
        ...

    def authenticate(self, view: StateView, tx: txmod.Tx, sig_ok: bool | None) -> Any:
        """Check the signatures; return the signers. Raise ``LiangcaoError`` with a 2xx code to refuse.

        ``sig_ok`` is a verdict on the Ed25519 signatures computed earlier (in parallel, by the node) or
        None to verify here. Certificates are always checked here: they depend on the configuration.
        """
        ...

    def run(self, view: Overlay, tx: txmod.Tx, signers: Any) -> TxOutcome:
        """Dispatch the transaction into its contract, writing into ``view``."""
        ...

    def check_sealer(self, view: StateView, cert: bytes, time_ms: int) -> str:
        """Raise ``LiangcaoError`` unless ``cert`` may seal blocks under ``view``'s configuration.

        Returns the sealer's member id. The seal's signature itself is checked by the ledger.
        """
        ...


@dataclass(slots=True)
class Execution:
    tx_ids: list[str]
    receipts: list[bytes]
    codes: list[int]
    consumed: list[bool]
    tx_writes: list[dict[str, bytes | None]]
    writes: dict[str, bytes | None]
    write_set_hash: str
    state_hash: str
    tx_root: str
    receipt_root: str
    events: list[list[dict[str, Any]]]

    def header(self, chain_id: str, height: int, prev_hash: str, time_ms: int) -> blk.Header:
        return blk.Header(
            chain_id=chain_id,
            height=height,
            prev_hash=prev_hash,
            time_ms=time_ms,
            tx_count=len(self.tx_ids),
            tx_root=self.tx_root,
            receipt_root=self.receipt_root,
            state_hash=self.state_hash,
        )


def _failed(tx_id: str, code: int, message: str) -> tuple[bytes, dict[str, Any]]:
    r = blk.receipt(tx_id, code, message[: limits.message_chars_max])
    return encoding.canonical(r, checked=True), r


def execute(
    view: StateView,
    runtime: Runtime,
    *,
    chain_id: str,
    height: int,
    time_ms: int,
    prev_state_hash: str,
    txs: Sequence[bytes],
    sig_ok: Mapping[str, bool] | None = None,
    parsed: Sequence[txmod.Tx | None] | None = None,
) -> Execution:
    """Execute ``txs`` as block ``height`` on top of ``view``. Pure: same inputs, same bytes out.

    ``sig_ok`` maps an envelope id (:attr:`Tx.envelope_id`, the hash of the exact signed bytes) to a verdict
    on its Ed25519 signatures; a verdict is never shared by two envelopes of one tx id.

    ``parsed`` may hold the transactions already parsed (by the node's admission): parsing is a pure
    function of the bytes, so a parse whose ``raw`` equals the block's bytes is reused, not repeated.
    """
    block_view = Overlay(view)
    runtime.begin_block(block_view, chain_id, height, time_ms)
    out = Execution([], [], [], [], [], {}, "", "", "", "", [])
    for n, raw in enumerate(txs):
        tx_id = ""
        writes: dict[str, bytes | None] = {}
        events: list[dict[str, Any]] = []
        consumed = False
        try:
            known = parsed[n] if parsed is not None and n < len(parsed) else None
            tx = known if known is not None and known.raw == raw else txmod.parse(raw)
            tx_id = tx.tx_id
            if tx.raw != raw:
                raise LiangcaoError(Code.BAD_ENCODING, "transaction bytes in a block must be canonical")
            if tx.chain_id != chain_id:
                raise LiangcaoError(Code.WRONG_CHAIN, f"transaction is for chain {tx.chain_id!r}, not {chain_id!r}")
            if tx.not_after < time_ms:
                raise LiangcaoError(Code.EXPIRED, f"transaction expired at {tx.not_after}, block time is {time_ms}")
            if tx.not_after - time_ms > limits.tx_ttl_ms_max:
                raise LiangcaoError(
                    Code.TTL_TOO_LONG, f"not_after is more than tx_ttl_ms_max={limits.tx_ttl_ms_max} ms ahead"
                )
            if block_view.tx_seen(tx.tx_id):
                raise LiangcaoError(Code.DUPLICATE_TX, f"transaction {tx.tx_id} was already committed")
            signers = runtime.authenticate(block_view, tx, None if sig_ok is None else sig_ok.get(tx.envelope_id))
            consumed = True
            tx_view = Overlay(block_view)
            outcome = runtime.run(tx_view, tx, signers)
            if outcome.code == Code.OK:
                writes = tx_view.writes
                events = outcome.events
                r = blk.receipt(tx_id, Code.OK, "", outcome.result, events, blk.write_set_hash(writes))
                rb = encoding.canonical(r, checked=True)  # result and events were checked when made
                block_view.merge(tx_view)
            else:
                rb, r = _failed(tx_id, outcome.code, outcome.message)
        except LiangcaoError as exc:
            if exc.code in NON_CONSUMING:
                consumed = False
            rb, r = _failed(tx_id or encoding.sha256_hex(raw), exc.code, exc.message)
        fault = getattr(view, "fault", None)
        if fault is not None:  # a read failed under this transaction, even if contract code swallowed it
            raise StoreError(Code.INTERNAL, f"the state view failed during transaction {n}: {fault}") from fault
        if consumed:
            block_view.consumed.add(tx_id)
        out.tx_ids.append(tx_id)
        out.receipts.append(rb)
        out.codes.append(r["code"])
        out.consumed.append(consumed)
        out.tx_writes.append(writes)
        out.events.append(events)
    out.writes = block_view.writes
    out.write_set_hash = blk.write_set_hash(out.writes)
    out.state_hash = blk.chain_state_hash(prev_state_hash, out.write_set_hash)
    out.tx_root = blk.tx_root(txs)
    out.receipt_root = blk.tx_root(out.receipts)
    return out
