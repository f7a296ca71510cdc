"""The payments state machine: TigerBeetle's rules, applied to batches in order, by one writer.

``Machine`` holds accounts, transfers and what idempotency and queries need in plain dicts and lists and
applies a batch given the batch's engine timestamp; it never reads a clock or touches a file, so the same
log gives the same state on every replay. Both backends run this one implementation: the embedded engine
keeps the whole state here, the PostgreSQL backend loads just what a batch touches and writes back the
changes the machine lists (``Changes``). There are no locks inside: a batch runs alone, so a hot merchant
account costs what any account costs.

Theory of operation
-------------------
A batch is a list of events; event ``i`` gets engine timestamp ``timestamp + i`` (an imported event keeps
the past timestamp it carries). Each event's checks run in TigerBeetle's precedence
(``types.TRANSFER_CHECK_ORDER``): the first failed rule is its result. Then:

==========================  ==================================================================================
event                       effect
==========================  ==================================================================================
plain transfer              ``amount`` (clamped by ``balancing_*`` flags, possibly to 0) into the posted balances
pending transfer            into the pending balances; ``closing_*`` flags close the account(s); expires after
                            ``timeout`` seconds of engine time (0: never)
post of a pending transfer  moves ``amount`` (0 moves 0; ``AMOUNT_MAX`` the whole pending amount) from pending
                            to posted and releases the rest; refused in a closed account
void of a pending transfer  releases the pending amount and reopens what the pending transfer closed; the one
                            movement allowed in a closed account
expiry                      as a void, by engine time, at the start of a batch or on a pulse
an id seen before           ``exists`` if the request matches what was stored (optional fields of a post or
                            void and a balancing amount at or above the amount moved count as matching), else
                            ``exists_with_different_<first differing field>``; nothing applied
a transient failure         (``types.TRANSIENT_TRANSFER_FAILURES``) spends the id: ``id_already_failed`` ever
                            after. Any other failure is forgotten: the corrected request is evaluated afresh
linked chain                events with ``linked`` and the event after them apply together or not at all; any
                            result other than ``ok`` (``exists`` included) fails the whole chain
==========================  ==================================================================================

Events are validated for field widths before they get here (``types.check_transfers``); the machine still
answers ``field_out_of_range`` for a direct caller that skipped that.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from liangcao.payments.types import (
    ACCOUNT_FLAGS_ALL,
    AMOUNT_MAX,
    NS_PER_S,
    TIMESTAMP_MAX,
    TRANSFER_FLAGS_ALL,
    TRANSIENT_TRANSFER_FAILURES,
    U16_MAX,
    U32_MAX,
    U128_MAX,
    Account,
    AccountBalance,
    AccountFilter,
    AccountFlags,
    CreateAccountResult,
    CreateTransferResult,
    QueryFilter,
    Transfer,
    TransferFlags,
    TransferStatus,
)

A = CreateAccountResult
R = CreateTransferResult
_LINKED = int(TransferFlags.LINKED)
_PENDING = int(TransferFlags.PENDING)
_POST = int(TransferFlags.POST_PENDING_TRANSFER)
_VOID = int(TransferFlags.VOID_PENDING_TRANSFER)
_BAL_DR = int(TransferFlags.BALANCING_DEBIT)
_BAL_CR = int(TransferFlags.BALANCING_CREDIT)
_CLOSE_DR = int(TransferFlags.CLOSING_DEBIT)
_CLOSE_CR = int(TransferFlags.CLOSING_CREDIT)
_T_IMPORTED = int(TransferFlags.IMPORTED)
_NOT_WITH_POST_OR_VOID = _PENDING | _BAL_DR | _BAL_CR | _CLOSE_DR | _CLOSE_CR
_DMNEC = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
_CMNED = int(AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS)
_HISTORY = int(AccountFlags.HISTORY)
_A_IMPORTED = int(AccountFlags.IMPORTED)
_CLOSED = int(AccountFlags.CLOSED)
_ST_PENDING = int(TransferStatus.PENDING)
_ST_POSTED = int(TransferStatus.POSTED)
_ST_VOIDED = int(TransferStatus.VOIDED)
_ST_EXPIRED = int(TransferStatus.EXPIRED)
_TRANSIENT = TRANSIENT_TRANSFER_FAILURES


class Changes:
    """What one batch changed, for a backend that keeps state elsewhere (rolled back with linked chains)."""

    __slots__ = ("accounts", "expired", "failed_transfers", "history", "status", "transfers")

    def __init__(self) -> None:
        self.accounts: list[Account] = []
        self.transfers: list[Transfer] = []
        self.status: dict[int, int] = {}
        self.expired: list[int] = []
        self.failed_transfers: list[int] = []
        self.history: list[tuple[int, AccountBalance]] = []


class Machine:
    """All payments state and the rules over it. Not thread-safe by design: one writer at a time."""

    def __init__(self, *, index: bool = True, owns_events: bool = False) -> None:
        # owns_events: the events passed in are the machine's to keep and stamp (the backends decode a fresh
        # copy of every batch); otherwise the machine copies what it stores.
        self.owns_events = owns_events
        self.accounts: dict[int, Account] = {}
        self.transfers: dict[int, Transfer] = {}
        self.status: dict[int, int] = {}  # pending transfer id -> TransferStatus
        self.expiries: list[tuple[int, int, int]] = []  # heap of (expires_at, timestamp, pending id)
        self.failed: set[int] = set()  # ids spent by a transient failure
        # Ids in timestamp order, and per-account transfer ids in timestamp order; None where a backend
        # answers queries itself (PostgreSQL).
        self.account_order: list[int] | None = [] if index else None
        self.transfer_order: list[int] | None = [] if index else None
        self.account_transfers: dict[int, list[int]] | None = {} if index else None
        # Balances after each transfer of a HISTORY account: entry k belongs to account_transfers[a][k].
        self.history: dict[int, list[AccountBalance]] = {}
        self.last_timestamp = 0
        self.last_account_timestamp = 0  # the newest account's timestamp (imported ones must come after)
        self.last_transfer_timestamp = 0
        # Where the machine holds only part of the state (PostgreSQL), the backend fills in which of the
        # batch's imported timestamps some stored account or transfer already has.
        self.taken_timestamps: set[int] | None = None
        self.changes: Changes | None = None
        self._journal: list[tuple[Any, ...]] | None = None
        self._batch_imported = False
        self._batch_last = 0

    # ------------------------------------------------------------------ batches

    def create_accounts(self, events: Sequence[Account], timestamp: int) -> list[int]:
        """Apply a batch of account creations; event ``i`` gets timestamp ``timestamp + i``."""
        return self._batch(events, timestamp, self._account, int(AccountFlags.LINKED), _A_IMPORTED, None)

    def create_transfers(self, events: Sequence[Transfer], timestamp: int) -> list[int]:
        """Expire what is due at ``timestamp``, then apply a batch of transfers in order."""
        self.expire(timestamp)
        if events and events[0].flags & _T_IMPORTED:
            return self._batch(events, timestamp, self._transfer, _LINKED, _T_IMPORTED, self._remember)
        return self._transfers(events, timestamp)

    def _batch(
        self,
        events: Sequence[Any],
        timestamp: int,
        apply: Callable[[Any, int], int],
        linked: int,
        imported_flag: int,
        remember: Callable[[int, int], None] | None,
    ) -> list[int]:
        n = len(events)
        results = self._open_batch(events, timestamp, imported_flag)
        i = 0
        while i < n:
            i = self._unit(events, i, timestamp, results, apply, linked, remember)
        self._close_batch(timestamp, n)
        return results

    def _open_batch(self, events: Sequence[Any], timestamp: int, imported_flag: int) -> list[int]:
        if timestamp <= self.last_timestamp:
            raise ValueError(f"batch timestamp {timestamp} is not after the last one, {self.last_timestamp}")
        n = len(events)
        # The first event decides whether the batch imports past events (TigerBeetle's rule).
        self._batch_imported = bool(n) and bool(events[0].flags & imported_flag)
        self._batch_last = timestamp + n - 1
        return [0] * n

    def _close_batch(self, timestamp: int, n: int) -> None:
        self.last_timestamp = self._batch_last if n else timestamp
        self._batch_imported = False

    def _unit(
        self,
        events: Sequence[Any],
        i: int,
        timestamp: int,
        results: list[int],
        apply: Callable[[Any, int], int],
        linked: int,
        remember: Callable[[int, int], None] | None,
    ) -> int:
        """Apply the event at ``i``, or the linked chain that starts there, all or nothing; the next index."""
        n = len(events)
        e = events[i]
        if not e.flags & linked:
            code = apply(e, timestamp + i)
            if code:
                results[i] = code
                if remember is not None:
                    remember(e.id, code)
            return i + 1
        start = i
        self._journal = []
        self._mark()
        while True:
            e = events[i]
            # 2 is LINKED_EVENT_CHAIN_OPEN (for accounts and transfers): the batch ended inside the chain.
            code = 2 if i == n - 1 and e.flags & linked else apply(e, timestamp + i)
            if code:
                break
            if not e.flags & linked:
                self._journal = None  # the chain closed with every event applied
                return i + 1
            i += 1
        self._rollback()
        for j in range(start, i):
            results[j] = 1  # LINKED_EVENT_FAILED
        results[i] = code
        if remember is not None:
            remember(e.id, code)
        # The rest of the chain fails with it, up to the event that closes the chain.
        while i < n - 1 and events[i].flags & linked:
            i += 1
            results[i] = 2 if (i == n - 1 and events[i].flags & linked) else 1
        return i + 1

    def _transfers(self, events: Sequence[Transfer], timestamp: int) -> list[int]:
        """A batch of live transfers. The checkout's common case, a plain posted transfer, is checked as one
        conjunction of every rule and applied right here; any other event (a flag, a pending id, a chain,
        or a plain transfer some rule refuses) goes through ``_unit``, whose checks run in their fixed
        order to name the first failed rule. Same outcome, a fraction of the bytecode on the hot path."""
        n = len(events)
        results = self._open_batch(events, timestamp, _T_IMPORTED)
        accounts = self.accounts
        transfers = self.transfers
        failed = self.failed
        index = self.account_transfers
        order_append = self.transfer_order.append if self.transfer_order is not None else None
        changes_append = self.changes.transfers.append if self.changes is not None else None
        owns = self.owns_events
        u128 = U128_MAX
        closed_or_history = _CLOSED | _HISTORY
        last = self.last_transfer_timestamp
        resume = 0  # the first index that _unit has not already handled (it takes whole chains)
        for i, t in enumerate(events):
            if i < resume:
                continue
            if not (t.flags or t.timestamp or t.timeout or t.pending_id):
                tid = t.id
                dr_id = t.debit_account_id
                cr_id = t.credit_account_id
                amount = t.amount
                ledger = t.ledger
                if (
                    0 <= (tid | dr_id | cr_id | amount | t.user_data_128) <= u128
                    and 0 < tid < u128
                    and 0 < dr_id < u128
                    and 0 < cr_id < u128
                    and dr_id != cr_id
                    and 0 < ledger <= U32_MAX
                    and 0 < t.code <= U16_MAX
                    and t.user_data_64 >> 64 == 0
                    and 0 <= t.user_data_32 <= U32_MAX
                    and tid not in transfers
                    and tid not in failed
                ):
                    dr = accounts.get(dr_id)
                    cr = accounts.get(cr_id)
                    if (
                        dr is not None
                        and cr is not None
                        and dr.ledger == ledger
                        and cr.ledger == ledger
                        and not (dr.flags | cr.flags) & closed_or_history
                        and dr.debits_pending + dr.debits_posted + amount <= u128
                        and cr.credits_pending + cr.credits_posted + amount <= u128
                        and (
                            not dr.flags & _DMNEC or dr.debits_pending + dr.debits_posted + amount <= dr.credits_posted
                        )
                        and (
                            not cr.flags & _CMNED or cr.credits_pending + cr.credits_posted + amount <= cr.debits_posted
                        )
                    ):
                        dr.debits_posted += amount
                        cr.credits_posted += amount
                        last = timestamp + i
                        if owns:
                            t.timestamp = last  # the caller handed over this object (decoded for us), so no copy
                        else:
                            t = msgspec.structs.replace(t, timestamp=last)
                        transfers[tid] = t
                        if order_append is not None and index is not None:
                            order_append(tid)
                            index[dr_id].append(tid)
                            index[cr_id].append(tid)
                        if changes_append is not None:
                            changes_append(t)
                        continue
            self.last_transfer_timestamp = last
            resume = self._unit(events, i, timestamp, results, self._transfer, _LINKED, self._remember)
            last = self.last_transfer_timestamp
        self.last_transfer_timestamp = last
        self._close_batch(timestamp, n)
        return results

    def _remember(self, transfer_id: int, code: int) -> None:
        # After any rollback: a transient failure spends the id even inside a failed chain (TigerBeetle).
        if code in _TRANSIENT:
            self.failed.add(transfer_id)
            if self.changes is not None:
                self.changes.failed_transfers.append(transfer_id)

    # ------------------------------------------------------------------ linked chains

    def _mark(self) -> None:
        c = self.changes
        assert self._journal is not None
        if c is not None:
            self._journal.append(("changes", len(c.accounts), len(c.transfers), dict(c.status), len(c.history)))

    def _save(self, account: Account) -> None:
        # Called before an account's balances or flags change, only inside a linked chain.
        assert self._journal is not None
        a = account
        self._journal.append(
            ("balance", a, a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted, a.flags)
        )

    def _rollback(self) -> None:
        journal = self._journal or []
        for entry in reversed(journal):
            kind = entry[0]
            if kind == "balance":
                _, a, a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted, a.flags = entry
            elif kind == "account":
                _, account_id, self.last_account_timestamp = entry
                del self.accounts[account_id]
                if self.account_order is not None:
                    self.account_order.pop()
                if self.account_transfers is not None:
                    del self.account_transfers[account_id]
                self.history.pop(account_id, None)
            elif kind == "transfer":
                t: Transfer = entry[1]
                self.last_transfer_timestamp = entry[2]
                del self.transfers[t.id]
                if self.transfer_order is not None:
                    self.transfer_order.pop()
                if self.account_transfers is not None:
                    self.account_transfers[t.debit_account_id].pop()
                    self.account_transfers[t.credit_account_id].pop()
            elif kind == "history":
                self.history[entry[1]].pop()
            elif kind == "status":
                if entry[2] is None:
                    del self.status[entry[1]]
                else:
                    self.status[entry[1]] = entry[2]
            elif kind == "changes":
                c = self.changes
                assert c is not None
                del c.accounts[entry[1] :]
                del c.transfers[entry[2] :]
                c.status = entry[3]
                del c.history[entry[4] :]
        self._journal = None

    # ------------------------------------------------------------------ imported events

    def _import_prelude(self, e: Account | Transfer, imported: int, codes: tuple[int, int, int, int, int]) -> int:
        """The checks before all others: a batch imports or not as its first event does; an imported
        event's timestamp lies in the past, a live one's is zero."""
        expected, not_expected, out_of_range, must_not_advance, must_be_zero = codes
        if self._batch_imported != bool(imported):
            return not_expected if imported else expected
        if imported:
            if not 0 < e.timestamp <= TIMESTAMP_MAX:
                return out_of_range
            if e.timestamp >= self._batch_last:
                return must_not_advance
        elif e.timestamp:
            return must_be_zero
        return 0

    def _timestamp_taken(self, ts: int) -> bool:
        """Whether some stored account or transfer already has engine timestamp ``ts``."""
        if self.taken_timestamps is not None:
            return ts in self.taken_timestamps
        for order, table in ((self.account_order, self.accounts), (self.transfer_order, self.transfers)):
            assert order is not None
            objects: Any = table
            k = bisect.bisect_left(order, ts, key=lambda i: objects[i].timestamp)
            if k < len(order) and objects[order[k]].timestamp == ts:
                return True
        return False

    # ------------------------------------------------------------------ accounts

    _ACCOUNT_PRELUDE = (
        int(A.IMPORTED_EVENT_EXPECTED),
        int(A.IMPORTED_EVENT_NOT_EXPECTED),
        int(A.IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE),
        int(A.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE),
        int(A.TIMESTAMP_MUST_BE_ZERO),
    )

    def _account(self, a: Account, ts: int) -> int:
        if _account_out_of_range(a):
            return A.FIELD_OUT_OF_RANGE
        flags = a.flags
        imported = flags & _A_IMPORTED
        code = self._import_prelude(a, imported, self._ACCOUNT_PRELUDE)
        if code:
            return code
        if flags & ~ACCOUNT_FLAGS_ALL:
            return A.RESERVED_FLAG
        if a.id == 0:
            return A.ID_MUST_NOT_BE_ZERO
        if a.id == U128_MAX:
            return A.ID_MUST_NOT_BE_INT_MAX
        existing = self.accounts.get(a.id)
        if existing is not None:
            return _account_exists(a, existing)
        if flags & _DMNEC and flags & _CMNED:
            return A.FLAGS_ARE_MUTUALLY_EXCLUSIVE
        if a.debits_pending:
            return A.DEBITS_PENDING_MUST_BE_ZERO
        if a.debits_posted:
            return A.DEBITS_POSTED_MUST_BE_ZERO
        if a.credits_pending:
            return A.CREDITS_PENDING_MUST_BE_ZERO
        if a.credits_posted:
            return A.CREDITS_POSTED_MUST_BE_ZERO
        if a.ledger == 0:
            return A.LEDGER_MUST_NOT_BE_ZERO
        if a.code == 0:
            return A.CODE_MUST_NOT_BE_ZERO
        if imported:
            # After the idempotency checks, so that an importer still sees `exists` for what it sent before.
            if a.timestamp <= self.last_account_timestamp or self._timestamp_taken(a.timestamp):
                return A.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS
            ts = a.timestamp
        stored = msgspec.structs.replace(a, timestamp=ts)
        if self._journal is not None:
            self._journal.append(("account", a.id, self.last_account_timestamp))
        self.accounts[a.id] = stored
        self.last_account_timestamp = ts
        if self.account_order is not None:
            self.account_order.append(a.id)
        if self.account_transfers is not None:
            self.account_transfers[a.id] = []
        if flags & _HISTORY:
            self.history[a.id] = []
        if self.changes is not None:
            self.changes.accounts.append(stored)
        return A.OK

    # ------------------------------------------------------------------ transfers

    _TRANSFER_PRELUDE = (
        int(R.IMPORTED_EVENT_EXPECTED),
        int(R.IMPORTED_EVENT_NOT_EXPECTED),
        int(R.IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE),
        int(R.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE),
        int(R.TIMESTAMP_MUST_BE_ZERO),
    )

    def _transfer(self, t: Transfer, ts: int) -> int:
        if _transfer_out_of_range(t):
            return R.FIELD_OUT_OF_RANGE
        flags = t.flags
        imported = flags & _T_IMPORTED
        code = self._import_prelude(t, imported, self._TRANSFER_PRELUDE)
        if code:
            return code
        if flags & ~TRANSFER_FLAGS_ALL:
            return R.RESERVED_FLAG
        tid = t.id
        if tid == 0:
            return R.ID_MUST_NOT_BE_ZERO
        if tid == U128_MAX:
            return R.ID_MUST_NOT_BE_INT_MAX
        existing = self.transfers.get(tid)
        if existing is not None:
            return self._transfer_exists(t, existing)
        if tid in self.failed:
            return R.ID_ALREADY_FAILED
        if flags & (_POST | _VOID):
            return self._post_or_void(t, ts, flags, imported)
        dr_id = t.debit_account_id
        cr_id = t.credit_account_id
        if dr_id == 0:
            return R.DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO
        if dr_id == U128_MAX:
            return R.DEBIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX
        if cr_id == 0:
            return R.CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO
        if cr_id == U128_MAX:
            return R.CREDIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX
        if dr_id == cr_id:
            return R.ACCOUNTS_MUST_BE_DIFFERENT
        if t.pending_id:
            return R.PENDING_ID_MUST_BE_ZERO
        pending = flags & _PENDING
        if not pending:
            if t.timeout:
                return R.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER
            if flags & (_CLOSE_DR | _CLOSE_CR):
                return R.CLOSING_TRANSFER_MUST_BE_PENDING
        if t.ledger == 0:
            return R.LEDGER_MUST_NOT_BE_ZERO
        if t.code == 0:
            return R.CODE_MUST_NOT_BE_ZERO
        accounts = self.accounts
        dr = accounts.get(dr_id)
        if dr is None:
            return R.DEBIT_ACCOUNT_NOT_FOUND
        cr = accounts.get(cr_id)
        if cr is None:
            return R.CREDIT_ACCOUNT_NOT_FOUND
        if dr.ledger != cr.ledger:
            return R.ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER
        if t.ledger != dr.ledger:
            return R.TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS
        if imported:
            code = self._imported_transfer_timestamp(t)
            if code:
                return code
            if t.timestamp <= dr.timestamp:
                return R.IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_DEBIT_ACCOUNT
            if t.timestamp <= cr.timestamp:
                return R.IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_CREDIT_ACCOUNT
            if t.timeout:
                return R.IMPORTED_EVENT_TIMEOUT_MUST_BE_ZERO
            ts = t.timestamp
        if dr.flags & _CLOSED:
            return R.DEBIT_ACCOUNT_ALREADY_CLOSED
        if cr.flags & _CLOSED:
            return R.CREDIT_ACCOUNT_ALREADY_CLOSED
        amount = t.amount
        if flags & _BAL_DR:
            # Saturating: what the debit account can still give, possibly nothing (then 0 moves).
            amount = min(amount, max(dr.credits_posted - dr.debits_posted - dr.debits_pending, 0))
        if flags & _BAL_CR:
            amount = min(amount, max(cr.debits_posted - cr.credits_posted - cr.credits_pending, 0))
        if pending:
            if dr.debits_pending + amount > U128_MAX:
                return R.OVERFLOWS_DEBITS_PENDING
            if cr.credits_pending + amount > U128_MAX:
                return R.OVERFLOWS_CREDITS_PENDING
        if dr.debits_posted + amount > U128_MAX:
            return R.OVERFLOWS_DEBITS_POSTED
        if cr.credits_posted + amount > U128_MAX:
            return R.OVERFLOWS_CREDITS_POSTED
        if dr.debits_pending + dr.debits_posted + amount > U128_MAX:
            return R.OVERFLOWS_DEBITS
        if cr.credits_pending + cr.credits_posted + amount > U128_MAX:
            return R.OVERFLOWS_CREDITS
        if ts + t.timeout * NS_PER_S > TIMESTAMP_MAX:
            return R.OVERFLOWS_TIMEOUT
        if dr.flags & _DMNEC and dr.debits_pending + dr.debits_posted + amount > dr.credits_posted:
            return R.EXCEEDS_CREDITS
        if cr.flags & _CMNED and cr.credits_pending + cr.credits_posted + amount > cr.debits_posted:
            return R.EXCEEDS_DEBITS

        if self._journal is not None:
            self._save(dr)
            self._save(cr)
        if pending:
            dr.debits_pending += amount
            cr.credits_pending += amount
        else:
            dr.debits_posted += amount
            cr.credits_posted += amount
        if flags & _CLOSE_DR:
            dr.flags |= _CLOSED
        if flags & _CLOSE_CR:
            cr.flags |= _CLOSED
        if amount == t.amount and ts == t.timestamp and self.owns_events:
            stored = t
        else:
            stored = msgspec.structs.replace(t, amount=amount, timestamp=ts)
        self._store(stored, dr, cr, ts)
        if pending:
            self._set_status(tid, _ST_PENDING)
            if t.timeout:
                heapq.heappush(self.expiries, (ts + t.timeout * NS_PER_S, ts, tid))
        return 0

    def _imported_transfer_timestamp(self, t: Transfer) -> int:
        if t.timestamp <= self.last_transfer_timestamp or self._timestamp_taken(t.timestamp):
            return R.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS
        return 0

    def _post_or_void(self, t: Transfer, ts: int, flags: int, imported: int) -> int:
        void = flags & _VOID
        if flags & _POST and void:
            return R.FLAGS_ARE_MUTUALLY_EXCLUSIVE
        if flags & _NOT_WITH_POST_OR_VOID:
            return R.FLAGS_ARE_MUTUALLY_EXCLUSIVE
        pid = t.pending_id
        if pid == 0:
            return R.PENDING_ID_MUST_NOT_BE_ZERO
        if pid == U128_MAX:
            return R.PENDING_ID_MUST_NOT_BE_INT_MAX
        if pid == t.id:
            return R.PENDING_ID_MUST_BE_DIFFERENT
        if t.timeout:
            return R.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER
        p = self.transfers.get(pid)
        if p is None:
            return R.PENDING_TRANSFER_NOT_FOUND
        if not p.flags & _PENDING:
            return R.PENDING_TRANSFER_NOT_PENDING
        if t.debit_account_id and t.debit_account_id != p.debit_account_id:
            return R.PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID
        if t.credit_account_id and t.credit_account_id != p.credit_account_id:
            return R.PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID
        if t.ledger and t.ledger != p.ledger:
            return R.PENDING_TRANSFER_HAS_DIFFERENT_LEDGER
        if t.code and t.code != p.code:
            return R.PENDING_TRANSFER_HAS_DIFFERENT_CODE
        # A void's 0 and a post's AMOUNT_MAX mean "the whole pending amount"; a post of 0 posts 0.
        whole = t.amount == 0 if void else t.amount == AMOUNT_MAX
        amount = p.amount if whole else t.amount
        if amount > p.amount:
            return R.EXCEEDS_PENDING_TRANSFER_AMOUNT
        if void and amount < p.amount:
            return R.PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT
        state = self.status.get(pid)
        if state == _ST_POSTED:
            return R.PENDING_TRANSFER_ALREADY_POSTED
        if state == _ST_VOIDED:
            return R.PENDING_TRANSFER_ALREADY_VOIDED
        if state == _ST_EXPIRED:
            return R.PENDING_TRANSFER_EXPIRED
        if p.timeout and p.timestamp + p.timeout * NS_PER_S <= ts:
            return R.PENDING_TRANSFER_EXPIRED  # due, though not yet expired by a batch start or a pulse
        if imported:
            code = self._imported_transfer_timestamp(t)
            if code:
                return code
            ts = t.timestamp
        dr = self.accounts[p.debit_account_id]
        cr = self.accounts[p.credit_account_id]
        # The only movement allowed in a closed account is voiding a pending transfer.
        if dr.flags & _CLOSED and not void:
            return R.DEBIT_ACCOUNT_ALREADY_CLOSED
        if cr.flags & _CLOSED and not void:
            return R.CREDIT_ACCOUNT_ALREADY_CLOSED
        if self._journal is not None:
            self._save(dr)
            self._save(cr)
        dr.debits_pending -= p.amount
        cr.credits_pending -= p.amount
        if void:
            if p.flags & _CLOSE_DR:
                dr.flags &= ~_CLOSED
            if p.flags & _CLOSE_CR:
                cr.flags &= ~_CLOSED
        else:
            dr.debits_posted += amount
            cr.credits_posted += amount
        stored = msgspec.structs.replace(
            t,
            debit_account_id=p.debit_account_id,
            credit_account_id=p.credit_account_id,
            ledger=p.ledger,
            code=p.code,
            amount=amount,
            user_data_128=t.user_data_128 or p.user_data_128,
            user_data_64=t.user_data_64 or p.user_data_64,
            user_data_32=t.user_data_32 or p.user_data_32,
            timestamp=ts,
        )
        self._store(stored, dr, cr, ts)
        self._set_status(pid, _ST_VOIDED if void else _ST_POSTED)
        return 0

    def _transfer_exists(self, t: Transfer, e: Transfer) -> int:
        """Compare a repeated transfer with the stored one: ``exists``, or the first differing field."""
        if t.flags != e.flags:
            return R.EXISTS_WITH_DIFFERENT_FLAGS
        if t.pending_id != e.pending_id:
            return R.EXISTS_WITH_DIFFERENT_PENDING_ID
        if t.timeout != e.timeout:
            return R.EXISTS_WITH_DIFFERENT_TIMEOUT
        if not t.flags & (_POST | _VOID):
            if t.debit_account_id != e.debit_account_id:
                return R.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID
            if t.credit_account_id != e.credit_account_id:
                return R.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID
            # A balancing amount is an upper limit: any limit at or above what was moved is the same request.
            if t.amount < e.amount if t.flags & (_BAL_DR | _BAL_CR) else t.amount != e.amount:
                return R.EXISTS_WITH_DIFFERENT_AMOUNT
            if t.user_data_128 != e.user_data_128:
                return R.EXISTS_WITH_DIFFERENT_USER_DATA_128
            if t.user_data_64 != e.user_data_64:
                return R.EXISTS_WITH_DIFFERENT_USER_DATA_64
            if t.user_data_32 != e.user_data_32:
                return R.EXISTS_WITH_DIFFERENT_USER_DATA_32
            if t.ledger != e.ledger:
                return R.EXISTS_WITH_DIFFERENT_LEDGER
            if t.code != e.code:
                return R.EXISTS_WITH_DIFFERENT_CODE
            return R.EXISTS
        # A post or void: fields left zero meant "as the pending transfer" and still do.
        p = self.transfers[t.pending_id]
        if t.debit_account_id and t.debit_account_id != e.debit_account_id:
            return R.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID
        if t.credit_account_id and t.credit_account_id != e.credit_account_id:
            return R.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID
        whole = (t.amount == 0) if t.flags & _VOID else (t.amount == AMOUNT_MAX)
        if (e.amount != p.amount) if whole else (t.amount != e.amount):
            return R.EXISTS_WITH_DIFFERENT_AMOUNT
        if t.user_data_128 != e.user_data_128 if t.user_data_128 else e.user_data_128 != p.user_data_128:
            return R.EXISTS_WITH_DIFFERENT_USER_DATA_128
        if t.user_data_64 != e.user_data_64 if t.user_data_64 else e.user_data_64 != p.user_data_64:
            return R.EXISTS_WITH_DIFFERENT_USER_DATA_64
        if t.user_data_32 != e.user_data_32 if t.user_data_32 else e.user_data_32 != p.user_data_32:
            return R.EXISTS_WITH_DIFFERENT_USER_DATA_32
        if t.ledger and t.ledger != e.ledger:
            return R.EXISTS_WITH_DIFFERENT_LEDGER
        if t.code and t.code != e.code:
            return R.EXISTS_WITH_DIFFERENT_CODE
        return R.EXISTS

    def _store(self, stored: Transfer, dr: Account, cr: Account, ts: int) -> None:
        tid = stored.id
        journal = self._journal
        if journal is not None:
            journal.append(("transfer", stored, self.last_transfer_timestamp))
        self.transfers[tid] = stored
        self.last_transfer_timestamp = ts
        if self.transfer_order is not None:
            self.transfer_order.append(tid)
        index = self.account_transfers
        if index is not None:
            index[dr.id].append(tid)
            index[cr.id].append(tid)
        changes = self.changes
        if changes is not None:
            changes.transfers.append(stored)
        if dr.flags & _HISTORY:
            self._history(dr, ts)
        if cr.flags & _HISTORY:
            self._history(cr, ts)

    def _history(self, a: Account, ts: int) -> None:
        entry = AccountBalance(ts, a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted)
        self.history[a.id].append(entry)
        if self._journal is not None:
            self._journal.append(("history", a.id))
        if self.changes is not None:
            self.changes.history.append((a.id, entry))

    def _set_status(self, pid: int, status: int) -> None:
        if self._journal is not None:
            self._journal.append(("status", pid, self.status.get(pid)))
        self.status[pid] = status
        if self.changes is not None:
            self.changes.status[pid] = status

    # ------------------------------------------------------------------ time

    def pulse(self, timestamp: int) -> list[int]:
        """Let engine time pass with no batch: expire what is due at ``timestamp``."""
        if timestamp <= self.last_timestamp:
            raise ValueError(f"pulse timestamp {timestamp} is not after the last one, {self.last_timestamp}")
        expired = self.expire(timestamp)
        self.last_timestamp = timestamp
        return expired

    def expire(self, timestamp: int) -> list[int]:
        """Void, as expired, every pending transfer whose timeout has passed at engine time ``timestamp``.

        A closing pending transfer that expires reopens what it closed; pending transfers expire in closed
        accounts too."""
        heap = self.expiries
        expired: list[int] = []
        while heap and heap[0][0] <= timestamp:
            _, ts, pid = heapq.heappop(heap)
            p = self.transfers.get(pid)
            if p is None or p.timestamp != ts or self.status.get(pid) != _ST_PENDING:
                continue  # posted or voided in time (or rolled back with its chain)
            dr = self.accounts[p.debit_account_id]
            cr = self.accounts[p.credit_account_id]
            dr.debits_pending -= p.amount
            cr.credits_pending -= p.amount
            if p.flags & _CLOSE_DR:
                dr.flags &= ~_CLOSED
            if p.flags & _CLOSE_CR:
                cr.flags &= ~_CLOSED
            self.status[pid] = _ST_EXPIRED
            expired.append(pid)
            if self.changes is not None:
                self.changes.status[pid] = _ST_EXPIRED
                self.changes.expired.append(pid)
        return expired

    # ------------------------------------------------------------------ queries

    def lookup_accounts(self, ids: Sequence[int]) -> list[Account]:
        out = []
        for i in ids:
            a = self.accounts.get(i)
            if a is not None:
                out.append(msgspec.structs.replace(a))
        return out

    def lookup_transfers(self, ids: Sequence[int]) -> list[Transfer]:
        return [self.transfers[i] for i in ids if i in self.transfers]

    def transfer_status(self, transfer_id: int) -> int | None:
        return self.status.get(transfer_id)

    def get_account_transfers(self, f: AccountFilter) -> list[Transfer]:
        """The account's transfers matching ``f`` (TigerBeetle's ``get_account_transfers``)."""
        lo, hi = self.account_window(f)
        return self.account_scan(f, _positions(lo, hi, f.reversed), f.limit, history=False)

    def get_account_balances(self, f: AccountFilter) -> list[AccountBalance]:
        """The balances after each of the account's transfers matching ``f`` (``HISTORY`` accounts only)."""
        lo, hi = self.account_window(f, history=True)
        return self.account_scan(f, _positions(lo, hi, f.reversed), f.limit, history=True)

    def account_window(self, f: AccountFilter, *, history: bool = False) -> tuple[int, int]:
        """Positions ``[lo, hi)`` in the account's transfer list within ``f``'s times (empty if ``f`` can
        match nothing, or, for balances, if the account keeps no history)."""
        if self.account_transfers is None:
            raise RuntimeError("this machine keeps no per-account index")
        if not account_filter_valid(f) or (history and f.account_id not in self.history):
            return 0, 0
        ids = self.account_transfers.get(f.account_id)
        if not ids:
            return 0, 0
        transfers = self.transfers
        return _window(ids, f.timestamp_min, f.timestamp_max, lambda i: transfers[i].timestamp)

    def account_scan(self, f: AccountFilter, positions: range, limit: int, *, history: bool) -> list[Any]:
        """Up to ``limit`` of the account's transfers (or balances after them) at ``positions`` matching ``f``."""
        assert self.account_transfers is not None
        ids = self.account_transfers.get(f.account_id, [])
        rows = self.history.get(f.account_id, []) if history else None
        transfers = self.transfers
        account_id = f.account_id
        out: list[Any] = []
        for k in positions:
            t = transfers[ids[k]]
            if not (
                (f.debits and t.debit_account_id == account_id) or (f.credits and t.credit_account_id == account_id)
            ):
                continue
            if (
                (f.user_data_128 and t.user_data_128 != f.user_data_128)
                or (f.user_data_64 and t.user_data_64 != f.user_data_64)
                or (f.user_data_32 and t.user_data_32 != f.user_data_32)
                or (f.code and t.code != f.code)
            ):
                continue
            out.append(rows[k] if rows is not None else t)
            if len(out) >= limit:
                break
        return out

    def query_window(self, kind: str, q: QueryFilter) -> tuple[int, int]:
        """Positions ``[lo, hi)`` in ``accounts`` or ``transfers`` timestamp order within ``q``'s times."""
        order, table = self._order(kind)
        if not query_filter_valid(q):
            return 0, 0
        return _window(order, q.timestamp_min, q.timestamp_max, lambda i: table[i].timestamp)

    def query_scan(self, kind: str, q: QueryFilter, positions: range, limit: int) -> list[Any]:
        """Up to ``limit`` objects at ``positions`` (of ``query_window``'s order) whose fields match ``q``."""
        order, table = self._order(kind)
        out: list[Any] = []
        for k in positions:
            o = table[order[k]]
            if (
                (q.user_data_128 and o.user_data_128 != q.user_data_128)
                or (q.user_data_64 and o.user_data_64 != q.user_data_64)
                or (q.user_data_32 and o.user_data_32 != q.user_data_32)
                or (q.ledger and o.ledger != q.ledger)
                or (q.code and o.code != q.code)
            ):
                continue
            out.append(msgspec.structs.replace(o) if kind == "accounts" else o)
            if len(out) >= limit:
                break
        return out

    def _order(self, kind: str) -> tuple[list[int], dict[int, Any]]:
        order = self.account_order if kind == "accounts" else self.transfer_order
        if order is None:
            raise RuntimeError("this machine keeps no timestamp index")
        return order, (self.accounts if kind == "accounts" else self.transfers)

    # ------------------------------------------------------------------ whole state

    def digest(self) -> str:
        """SHA-256 over the whole state in id order: equal on every replay of the same log."""
        h = hashlib.sha256()
        enc = msgspec.json.encode
        for k in sorted(self.accounts):
            h.update(enc(self.accounts[k]))
        for k in sorted(self.transfers):
            h.update(enc(self.transfers[k]))
            h.update(enc(self.status.get(k, 0)))
        h.update(enc(sorted(self.failed)))
        for k in sorted(self.history):
            h.update(enc((k, self.history[k])))
        h.update(enc(self.last_timestamp))
        return h.hexdigest()

    def to_snapshot(self) -> Snapshot:
        assert self.account_order is not None and self.transfer_order is not None
        accounts = self.accounts
        transfers = self.transfers
        return Snapshot(
            last_timestamp=self.last_timestamp,
            accounts=[accounts[i] for i in self.account_order],
            transfers=[transfers[i] for i in self.transfer_order],
            status=list(self.status.items()),
            expiries=list(self.expiries),
            failed=sorted(self.failed),
            history=list(self.history.items()),
        )

    @classmethod
    def from_snapshot(cls, s: Snapshot) -> Machine:
        m = cls()
        m.last_timestamp = s.last_timestamp
        assert m.account_order is not None and m.transfer_order is not None
        index: dict[int, list[int]] = {}
        for a in s.accounts:
            m.accounts[a.id] = a
            m.account_order.append(a.id)
            index[a.id] = []
        for t in s.transfers:
            m.transfers[t.id] = t
            m.transfer_order.append(t.id)
            index[t.debit_account_id].append(t.id)
            index[t.credit_account_id].append(t.id)
        m.account_transfers = index
        m.last_account_timestamp = s.accounts[-1].timestamp if s.accounts else 0
        m.last_transfer_timestamp = s.transfers[-1].timestamp if s.transfers else 0
        m.status = dict(s.status)
        m.expiries = list(s.expiries)
        heapq.heapify(m.expiries)
        m.failed = set(s.failed)
        m.history = dict(s.history)
        return m


class Snapshot(msgspec.Struct, array_like=True, gc=False):
    """The whole state of a ``Machine`` at a batch boundary, accounts and transfers in timestamp order."""

    last_timestamp: int
    accounts: list[Account]
    transfers: list[Transfer]
    status: list[tuple[int, int]]
    expiries: list[tuple[int, int, int]]
    failed: list[int]
    history: list[tuple[int, list[AccountBalance]]]


def account_filter_valid(f: AccountFilter) -> bool:
    """TigerBeetle's rule: a filter that can match nothing is not an error, it returns nothing."""
    return (
        0 < f.account_id < U128_MAX
        and f.limit > 0
        and (f.debits or f.credits)
        and _times_valid(f.timestamp_min, f.timestamp_max)
    )


def query_filter_valid(q: QueryFilter) -> bool:
    return q.limit > 0 and _times_valid(q.timestamp_min, q.timestamp_max)


def _times_valid(ts_min: int, ts_max: int) -> bool:
    # Zero means "no bound"; any other bound is an engine timestamp (at most 2^63 - 1), min before max.
    return ts_min <= TIMESTAMP_MAX and ts_max <= TIMESTAMP_MAX and (ts_max == 0 or ts_min <= ts_max)


def _positions(lo: int, hi: int, reverse: bool) -> range:
    return range(hi - 1, lo - 1, -1) if reverse else range(lo, hi)


def _window(rows: list[Any], ts_min: int, ts_max: int, key: Callable[[Any], int]) -> tuple[int, int]:
    lo = bisect.bisect_left(rows, ts_min, key=key) if ts_min else 0
    hi = bisect.bisect_right(rows, ts_max, key=key) if ts_max else len(rows)
    return lo, max(lo, hi)


def _account_out_of_range(a: Account) -> bool:
    return bool(
        (a.id | a.debits_pending | a.debits_posted | a.credits_pending | a.credits_posted | a.user_data_128) >> 128
        or (a.user_data_64 | a.timestamp) >> 64
        or (a.user_data_32 | a.ledger) >> 32
        or (a.code | a.flags) >> 16
    )


def _transfer_out_of_range(t: Transfer) -> bool:
    return bool(
        (t.id | t.debit_account_id | t.credit_account_id | t.amount | t.pending_id | t.user_data_128) >> 128
        or (t.user_data_64 | t.timestamp) >> 64
        or (t.user_data_32 | t.timeout | t.ledger) >> 32
        or (t.code | t.flags) >> 16
    )


def _account_exists(a: Account, e: Account) -> int:
    # Flags as stored now: an account closed since its creation answers exists_with_different_flags.
    if a.flags != e.flags:
        return A.EXISTS_WITH_DIFFERENT_FLAGS
    if a.user_data_128 != e.user_data_128:
        return A.EXISTS_WITH_DIFFERENT_USER_DATA_128
    if a.user_data_64 != e.user_data_64:
        return A.EXISTS_WITH_DIFFERENT_USER_DATA_64
    if a.user_data_32 != e.user_data_32:
        return A.EXISTS_WITH_DIFFERENT_USER_DATA_32
    if a.ledger != e.ledger:
        return A.EXISTS_WITH_DIFFERENT_LEDGER
    if a.code != e.code:
        return A.EXISTS_WITH_DIFFERENT_CODE
    return A.EXISTS
