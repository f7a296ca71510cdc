"""Everything the gateway sends to the payments core: account ids, transfer ids, the chains, the batcher.

Ids are derived, never drawn: an account id from its kind and name, a transfer id from the order id, the
step and its attempt number. So a request retried after a crash (ours or the client's) sends the same
transfer ids, and the payments core answers ``exists`` instead of moving the money twice.

Accounts (ledger 156, CNY): buyers' wallets and merchants' accounts may not go below zero
(``debits_must_not_exceed_credits``), nor may escrow; the fee account only receives; the funding account
stands for the outside world (bank top-ups) and has no bound.

The :class:`Batcher` gathers the chains of concurrent requests into one payments-core batch, as
TigerBeetle's clients do: while one batch is applied, the next fills up, so the engine's batch throughput
reaches the HTTP edge. A chain is never split across batches; its last event carries no ``linked`` flag, so
chains placed one after another in a batch stay independent.
"""

from __future__ import annotations

import hashlib
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from enum import IntEnum
from typing import Any, Protocol

from liangcao.checkout import limits
from liangcao.payments.types import (
    Account,
    AccountFlags,
    CreateTransferResult,
    Transfer,
    TransferFlags,
)

LEDGER_CNY = 156
CURRENCIES = {"CNY": LEDGER_CNY}
_R = CreateTransferResult


class Kind(IntEnum):
    """Account kinds: the payments core's ``code`` and the top byte of the account id."""

    BUYER = 1
    MERCHANT = 2
    ESCROW = 3
    FEES = 4
    FUNDING = 5


class Step(IntEnum):
    """Transfer codes in the payments core: what each movement is for."""

    TOPUP = 1
    HOLD = 10
    POST_HOLD = 11
    PAYOUT = 12
    FEE = 13
    VOID = 20
    PARTIAL_POST = 21
    REFUND_ESCROW = 22
    REFUND_REVERSE = 23


_GUARDED = {Kind.BUYER, Kind.MERCHANT, Kind.ESCROW}


def account_id(kind: Kind, name: str) -> int:
    """The payments-core id of ``name``'s account of ``kind``: the kind in the top byte, a hash below."""
    h = hashlib.blake2b(f"{int(kind)}:{name}".encode(), digest_size=15, person=b"lc-checkout-acct").digest()
    return (int(kind) << 120) | int.from_bytes(h, "big") | 1


def account(kind: Kind, name: str) -> Account:
    flags = AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS if kind in _GUARDED else AccountFlags.NONE
    return Account(account_id(kind, name), ledger=LEDGER_CNY, code=int(kind), flags=int(flags))


ESCROW = account_id(Kind.ESCROW, "escrow")
FEES = account_id(Kind.FEES, "platform")
FUNDING = account_id(Kind.FUNDING, "bank")
PLATFORM_ACCOUNTS = [account(Kind.ESCROW, "escrow"), account(Kind.FEES, "platform"), account(Kind.FUNDING, "bank")]


def transfer_id(scope: str, step: str, n: int) -> int:
    """A transfer id from what it is for: the same order, step and attempt always give the same id."""
    h = hashlib.blake2b(f"{scope}/{step}/{n}".encode(), digest_size=16, person=b"lc-checkout-xfer").digest()
    # Top bit clear (never u128 max), low bit set (never zero).
    return (int.from_bytes(h, "big") >> 1) | 1


def order_tag(order_id: str) -> int:
    """``user_data_128`` of every transfer of an order: find them all with ``query_transfers``."""
    h = hashlib.blake2b(order_id.encode(), digest_size=16, person=b"lc-checkout-ordr").digest()
    return int.from_bytes(h, "big") >> 1 | 1


def fee_of(amount: int, fee_bps: int) -> int:
    """The platform's fee on ``amount`` fen (rounded down: the merchant never pays a fraction of a fen)."""
    return amount * fee_bps // 10_000


# ------------------------------------------------------------------------------------------- chains


def hold(order_id: str, buyer_account: int, amount: int, attempt: int) -> list[Transfer]:
    """Pay into escrow: a pending transfer buyer -> escrow (no timeout: the gateway's clock settles it)."""
    tid = transfer_id(order_id, "hold", attempt)
    return [
        Transfer(
            tid,
            buyer_account,
            ESCROW,
            amount,
            LEDGER_CNY,
            int(Step.HOLD),
            int(TransferFlags.PENDING),
            user_data_128=order_tag(order_id),
        )
    ]


def settle(
    order_id: str, hold_id: int, hold_pending: bool, held: int, merchant: int, fee: int, n: int
) -> list[Transfer]:
    """Confirmation: [post the hold,] escrow -> merchant (less the fee), escrow -> fees: one linked chain."""
    tag = order_tag(order_id)
    chain: list[Transfer] = []
    if hold_pending:
        flags = TransferFlags.POST_PENDING_TRANSFER
        chain.append(Transfer(transfer_id(order_id, "post", n), amount=held, pending_id=hold_id, flags=int(flags)))
    net = held - fee
    if net > 0:
        chain.append(Transfer(transfer_id(order_id, "payout", n), ESCROW, merchant, net, LEDGER_CNY, int(Step.PAYOUT)))
    if fee > 0:
        chain.append(Transfer(transfer_id(order_id, "fee", n), ESCROW, FEES, fee, LEDGER_CNY, int(Step.FEE)))
    for t in chain:
        t.user_data_128 = tag
    for t in chain[:-1]:
        t.flags |= int(TransferFlags.LINKED)
    return chain


def refund_before(
    order_id: str, hold_id: int, hold_pending: bool, held: int, source: int, amount: int, seq: int
) -> tuple[list[Transfer], int]:
    """A refund before settlement: void the hold (all), post the hold less the refund (part), or pay back
    out of escrow to the account the money came from (after an earlier partial post). Returns the chain and
    its :class:`RefundKind` number."""
    from liangcao.checkout.states import RefundKind

    tag = order_tag(order_id)
    tid = transfer_id(order_id, f"refund{seq}", 0)
    if hold_pending and amount == held:
        return [
            Transfer(tid, pending_id=hold_id, flags=int(TransferFlags.VOID_PENDING_TRANSFER), user_data_128=tag)
        ], int(RefundKind.VOID)
    if hold_pending:
        flags = int(TransferFlags.POST_PENDING_TRANSFER)
        return [Transfer(tid, amount=held - amount, pending_id=hold_id, flags=flags, user_data_128=tag)], int(
            RefundKind.PARTIAL_POST
        )
    t = Transfer(tid, ESCROW, source, amount, LEDGER_CNY, int(Step.REFUND_ESCROW), user_data_128=tag)
    return [t], int(RefundKind.FROM_ESCROW)


def refund_after(order_id: str, merchant: int, buyer: int, amount: int, seq: int) -> list[Transfer]:
    """A refund after settlement: a reverse transfer merchant -> buyer (the platform keeps its fee)."""
    tid = transfer_id(order_id, f"refund{seq}", 0)
    return [
        Transfer(tid, merchant, buyer, amount, LEDGER_CNY, int(Step.REFUND_REVERSE), user_data_128=order_tag(order_id))
    ]


def topup(key: str, buyer: int, amount: int) -> list[Transfer]:
    """Money into a wallet from outside (the funding account): the id comes from the idempotency key."""
    return [Transfer(transfer_id("topup", key, 0), FUNDING, buyer, amount, LEDGER_CNY, int(Step.TOPUP))]


def outcome(results: Sequence[int]) -> tuple[bool, int]:
    """Whether a chain is applied (now, or by an earlier send of the same ids) and, if not, why.

    A chain is atomic: if its first event ``exists``, the whole chain was applied before (the core then
    fails the rest of this resend as ``linked_event_failed``, which is harmless)."""
    if all(r == _R.OK for r in results):
        return True, int(_R.OK)
    if results and results[0] == _R.EXISTS:
        return True, int(_R.EXISTS)
    cause = next((r for r in results if r not in (_R.OK, _R.EXISTS, _R.LINKED_EVENT_FAILED)), results[0])
    return False, int(cause)


# ------------------------------------------------------------------------------------------ batcher


class TransferBackend(Protocol):
    def create_transfers(self, transfers: list[Transfer]) -> list[int]: ...


class Batcher:
    """Gathers single requests' chains into payments-core batches (one writer thread).

    ``submit`` returns a future of the chain's result codes. The thread takes every chain queued (up to
    ``limits.batch_events_max`` events) and sends them as one batch; with the embedded engine
    (``submit_transfers``) it keeps up to ``limits.batches_in_flight_max`` batches in flight, so the next
    batch is applied while the previous one is being made durable."""

    def __init__(self, backend: Any, *, events_max: int = limits.batch_events_max) -> None:
        self.backend = backend
        self.events_max = events_max
        self._queue: deque[tuple[list[Transfer], Future[list[int]]]] = deque()
        self._cv = threading.Condition()
        self._closed = False
        self._slots = threading.BoundedSemaphore(limits.batches_in_flight_max)
        self._pipelined = hasattr(backend, "submit_transfers")
        self.batches = 0
        self.events = 0
        self.largest = 0
        self._thread = threading.Thread(target=self._run, name="checkout-batcher", daemon=True)
        self._thread.start()

    def submit(self, chain: list[Transfer]) -> Future[list[int]]:
        fut: Future[list[int]] = Future()
        if not chain:
            fut.set_result([])
            return fut
        with self._cv:
            if self._closed:
                raise RuntimeError("batcher closed")
            self._queue.append((chain, fut))
            self._cv.notify()
        return fut

    def send(self, chain: list[Transfer]) -> list[int]:
        """Submit and wait: the chain's result codes."""
        return self.submit(chain).result()

    def _take(self) -> list[tuple[list[Transfer], Future[list[int]]]] | None:
        with self._cv:
            while not self._queue and not self._closed:
                self._cv.wait()
            if not self._queue:
                return None
            taken = []
            n = 0
            while self._queue and n + len(self._queue[0][0]) <= self.events_max:
                item = self._queue.popleft()
                n += len(item[0])
                taken.append(item)
            return taken

    def _run(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            flat = [t for chain, _ in taken for t in chain]
            self.batches += 1
            self.events += len(flat)
            self.largest = max(self.largest, len(flat))
            try:
                if self._pipelined:
                    self._slots.acquire()
                    fut = self.backend.submit_transfers(flat)
                    fut.add_done_callback(lambda f, taken=taken: self._done(taken, f))
                else:
                    self._dispatch(taken, self.backend.create_transfers(flat))
            except BaseException as exc:  # the backend failed: every waiting request learns it
                if self._pipelined:
                    self._slots.release()
                for _, f in taken:
                    f.set_exception(exc)

    def _done(self, taken: list[tuple[list[Transfer], Future[list[int]]]], fut: Future[list[int]]) -> None:
        self._slots.release()
        exc = fut.exception()
        if exc is not None:
            for _, f in taken:
                f.set_exception(exc)
            return
        self._dispatch(taken, fut.result())

    @staticmethod
    def _dispatch(taken: list[tuple[list[Transfer], Future[list[int]]]], results: list[int]) -> None:
        i = 0
        for chain, f in taken:
            f.set_result(results[i : i + len(chain)])
            i += len(chain)

    def close(self) -> None:
        """Stop taking chains, wait for those queued and in flight; a second call returns at once."""
        with self._cv:
            if self._closed:
                return
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout=10)
        for _ in range(limits.batches_in_flight_max):  # wait for batches still in flight
            self._slots.acquire()


class Serialized:
    """One lock around a backend that is not thread-safe (``PostgresBackend``: one connection)."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self._backend, name)
        if not callable(fn):
            return fn

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return fn(*args, **kwargs)

        return call
