"""The payments state machine: the rules, applied to batches in order, by one writer.

``Machine`` holds accounts, transfers and what idempotency and queries need in plain dicts and applies a
batch given the batch's engine timestamp; it never reads a clock or touches a file, so the same log gives
the same state on every replay. Both backends run this one implementation: the embedded engine keeps the
whole state here, the PostgreSQL backend loads just what a batch touches and writes back the changes the
machine lists (``Changes``). There are no locks inside: a batch runs alone, so a hot merchant account costs
what any account costs.

Checks run in the order of the result enums (``types.CreateTransferResult``): the first failed rule is the
result. Checks before the id lookup (timestamp, field range, reserved flags, id) neither consult nor
record the id; any failure after it is remembered, so an id that failed stays failed.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
from collections.abc import Sequence
from typing import Any

import msgspec

from liangcao.payments.types import (
    ACCOUNT_FLAGS_ALL,
    NS_PER_S,
    TRANSFER_FLAGS_ALL,
    U16_MAX,
    U32_MAX,
    U64_MAX,
    U128_MAX,
    Account,
    AccountBalance,
    AccountFilter,
    AccountFlags,
    CreateAccountResult,
    CreateTransferResult,
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
_DMNEC = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
_CMNED = int(AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS)
_HISTORY = int(AccountFlags.HISTORY)
_CLOSED = int(AccountFlags.CLOSED)
_ST_PENDING = int(TransferStatus.PENDING)
_ST_POSTED = int(TransferStatus.POSTED)
_ST_VOIDED = int(TransferStatus.VOIDED)
_ST_EXPIRED = int(TransferStatus.EXPIRED)
_FIRST_RECORDED_T = int(R.FLAGS_ARE_MUTUALLY_EXCLUSIVE)
_FIRST_RECORDED_A = int(A.FLAGS_ARE_MUTUALLY_EXCLUSIVE)
_ALREADY_CLOSED = (int(R.DEBIT_ACCOUNT_ALREADY_CLOSED), int(R.CREDIT_ACCOUNT_ALREADY_CLOSED))


class Changes:
    """What one batch changed, for a backend that keeps state elsewhere (rolled back with linked chains)."""

    __slots__ = ("accounts", "expired", "failed_accounts", "failed_transfers", "history", "status", "transfers")

    def __init__(self) -> None:
        self.accounts: list[Account] = []
        self.transfers: list[tuple[Transfer, Transfer | None]] = []  # stored transfer, original request
        self.status: dict[int, int] = {}
        self.expired: list[int] = []
        self.failed_transfers: list[tuple[int, int, Transfer]] = []
        self.failed_accounts: list[tuple[int, int, Account]] = []
        self.history: list[tuple[int, AccountBalance]] = []


class Machine:
    """All payments state and the rules over it. Not thread-safe by design: one writer at a time."""

    def __init__(self, *, index: bool = True, owns_events: bool = False) -> None:
        # owns_events: the events passed in are the machine's to keep and stamp (the backends decode a fresh
        # copy of every batch); otherwise the machine copies what it stores.
        self.owns_events = owns_events
        self.accounts: dict[int, Account] = {}
        self.transfers: dict[int, Transfer] = {}
        # The request as sent, where the stored transfer differs from it (post/void fields taken from the
        # pending transfer, a balanced or whole-post amount): idempotency compares against the request.
        self.requests: dict[int, Transfer] = {}
        self.status: dict[int, int] = {}
        self.expiries: list[tuple[int, int, int]] = []  # heap of (expires_at, timestamp, pending id)
        self.failed_transfers: dict[int, tuple[int, Transfer]] = {}
        self.failed_accounts: dict[int, tuple[int, Account]] = {}
        # Per-account transfer ids in timestamp order; None where a backend answers queries itself.
        self.account_transfers: dict[int, list[int]] | None = {} if index else None
        self.history: dict[int, list[AccountBalance]] = {}
        self.last_timestamp = 0
        self.changes: Changes | None = None
        self._journal: list[tuple[Any, ...]] | None = None

    # ------------------------------------------------------------------ batches

    def create_accounts(self, events: Sequence[Account], timestamp: int) -> list[int]:
        """Apply a batch of account creations; event ``i`` gets timestamp ``timestamp + i``."""
        return self._batch(events, timestamp, self._account, int(AccountFlags.LINKED), _FIRST_RECORDED_A, True)

    def create_transfers(self, events: Sequence[Transfer], timestamp: int) -> list[int]:
        """Expire what is due at ``timestamp``, then apply a batch of transfers in order."""
        self.expire(timestamp)
        return self._batch(events, timestamp, self._transfer_fast, _LINKED, _FIRST_RECORDED_T, False)

    def _batch(
        self, events: Sequence[Any], timestamp: int, apply: Any, linked: int, first_recorded: int, accounts: bool
    ) -> list[int]:
        if timestamp <= self.last_timestamp:
            raise ValueError(f"batch timestamp {timestamp} is not after the last one, {self.last_timestamp}")
        n = len(events)
        results = [0] * n
        chain_start = -1
        i = 0
        while i < n:
            e = events[i]
            in_chain = chain_start >= 0
            if e.flags & linked and not in_chain:
                chain_start = i
                in_chain = True
                self._journal = []
                self._mark()
            # 2 is LINKED_EVENT_CHAIN_OPEN: the batch ended inside the chain.
            code = 2 if in_chain and i == n - 1 and e.flags & linked else apply(e, timestamp + i)
            if code == 0:
                if in_chain and not e.flags & linked:
                    chain_start = -1  # the chain closed with every event applied
                    self._journal = None
                i += 1
                continue
            if in_chain:
                self._rollback()
                for j in range(chain_start, i):
                    results[j] = 1  # LINKED_EVENT_FAILED
            results[i] = code
            if code >= first_recorded and e.id not in (self.failed_accounts if accounts else self.failed_transfers):
                self._record_failure(e, code, accounts)
            if in_chain:
                # The rest of the chain fails with it, up to the event that closes the chain.
                end = i
                while end < n - 1 and events[end].flags & linked:
                    end += 1
                    results[end] = 2 if (end == n - 1 and events[end].flags & linked) else 1
                chain_start = -1
                i = end
            i += 1
        self.last_timestamp = timestamp + n - 1 if n else timestamp
        return results

    def _record_failure(self, e: Any, code: int, accounts: bool) -> None:
        request = msgspec.structs.replace(e)
        if accounts:
            self.failed_accounts[e.id] = (code, request)
            if self.changes is not None:
                self.changes.failed_accounts.append((e.id, code, request))
        else:
            self.failed_transfers[e.id] = (code, request)
            if self.changes is not None:
                self.changes.failed_transfers.append((e.id, code, request))

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
                account_id = entry[1]
                del self.accounts[account_id]
                if self.account_transfers is not None:
                    del self.account_transfers[account_id]
                self.history.pop(account_id, None)
            elif kind == "transfer":
                t: Transfer = entry[1]
                del self.transfers[t.id]
                self.requests.pop(t.id, None)
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

    # ------------------------------------------------------------------ accounts

    def _account(self, a: Account, ts: int) -> int:
        if a.timestamp:
            return A.TIMESTAMP_MUST_BE_ZERO
        u128 = (
            a.id
            | a.user_data_128
            | a.debits_pending
            | a.debits_posted
            | a.credits_pending
            | a.credits_posted
            | a.user_data_64
            | a.user_data_32
            | a.ledger
            | a.code
            | a.flags
        )
        if u128 < 0 or u128 > U128_MAX or a.user_data_64 > U64_MAX or (a.user_data_32 | a.ledger) > U32_MAX:
            return A.FIELD_OUT_OF_RANGE
        if a.code > U16_MAX or a.flags > U16_MAX:
            return A.FIELD_OUT_OF_RANGE
        if a.flags & ~ACCOUNT_FLAGS_ALL:
            return A.RESERVED_FLAG
        if a.id == 0:
            return A.ID_MUST_NOT_BE_ZERO
        if a.id == U128_MAX:
            return A.ID_MUST_NOT_BE_INT_MAX
        existing = self.accounts.get(a.id)
        if existing is not None:
            if a.flags != existing.flags & ~_CLOSED:
                return A.EXISTS_WITH_DIFFERENT_FLAGS
            if a.user_data_128 != existing.user_data_128:
                return A.EXISTS_WITH_DIFFERENT_USER_DATA_128
            if a.user_data_64 != existing.user_data_64:
                return A.EXISTS_WITH_DIFFERENT_USER_DATA_64
            if a.user_data_32 != existing.user_data_32:
                return A.EXISTS_WITH_DIFFERENT_USER_DATA_32
            if a.ledger != existing.ledger:
                return A.EXISTS_WITH_DIFFERENT_LEDGER
            if a.code != existing.code:
                return A.EXISTS_WITH_DIFFERENT_CODE
            return A.OK
        failed = self.failed_accounts.get(a.id)
        if failed is not None:
            return failed[0] if a == failed[1] else A.ID_ALREADY_FAILED
        if a.flags & _DMNEC and a.flags & _CMNED:
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
        stored = msgspec.structs.replace(a, timestamp=ts)
        self.accounts[a.id] = stored
        if self.account_transfers is not None:
            self.account_transfers[a.id] = []
        if a.flags & _HISTORY:
            self.history[a.id] = []
        if self._journal is not None:
            self._journal.append(("account", a.id))
        if self.changes is not None:
            self.changes.accounts.append(stored)
        return A.OK

    # ------------------------------------------------------------------ transfers

    def _transfer_fast(self, t: Transfer, ts: int) -> int:
        # The checkout's common case, a plain posted transfer outside a chain, as one conjunction of every
        # rule: when all hold it is applied here; when any fails, _transfer runs the checks in their fixed
        # order to name the first failed rule. Same outcome, a third of the bytecode on the hot path.
        if t.flags or t.timestamp or t.timeout or t.pending_id or self._journal is not None:
            return self._transfer(t, ts)
        tid = t.id
        dr_id = t.debit_account_id
        cr_id = t.credit_account_id
        amount = t.amount
        ledger = t.ledger
        transfers = self.transfers
        if (
            0 <= (tid | dr_id | cr_id | amount | t.user_data_128) <= U128_MAX
            and tid
            and dr_id
            and cr_id
            and dr_id != cr_id
            and tid != U128_MAX
            and dr_id != U128_MAX
            and cr_id != U128_MAX
            and 0 < ledger <= U32_MAX
            and 0 < t.code <= U16_MAX
            and 0 <= t.user_data_64 <= U64_MAX
            and 0 <= t.user_data_32 <= U32_MAX
            and tid not in transfers
            and tid not in self.failed_transfers
        ):
            accounts = self.accounts
            dr = accounts.get(dr_id)
            cr = accounts.get(cr_id)
            if (
                dr is not None
                and cr is not None
                and dr.ledger == ledger
                and cr.ledger == ledger
                and not (dr.flags | cr.flags) & (_CLOSED | _HISTORY)
                and dr.debits_pending + dr.debits_posted + amount <= U128_MAX
                and cr.credits_pending + cr.credits_posted + amount <= U128_MAX
                and (not dr.flags & _DMNEC or dr.debits_pending + dr.debits_posted + amount <= dr.credits_posted)
                and (not cr.flags & _CMNED or cr.credits_pending + cr.credits_posted + amount <= cr.debits_posted)
            ):
                dr.debits_posted += amount
                cr.credits_posted += amount
                if self.owns_events:
                    t.timestamp = ts  # the caller handed over this object (decoded for us), so no copy
                    stored = t
                else:
                    stored = msgspec.structs.replace(t, timestamp=ts)
                transfers[tid] = stored
                index = self.account_transfers
                if index is not None:
                    index[dr_id].append(tid)
                    index[cr_id].append(tid)
                if self.changes is not None:
                    self.changes.transfers.append((stored, None))
                return 0
        return self._transfer(t, ts)

    def _transfer(self, t: Transfer, ts: int) -> int:
        if t.timestamp:
            return R.TIMESTAMP_MUST_BE_ZERO
        flags = t.flags
        u128 = t.id | t.debit_account_id | t.credit_account_id | t.amount | t.pending_id | t.user_data_128
        small = t.user_data_64 | t.user_data_32 | t.timeout | t.ledger | t.code | flags
        if u128 < 0 or u128 > U128_MAX or small < 0 or t.user_data_64 > U64_MAX:
            return R.FIELD_OUT_OF_RANGE
        if (t.user_data_32 | t.timeout | t.ledger) > U32_MAX or (t.code | flags) > U16_MAX:
            return R.FIELD_OUT_OF_RANGE
        if flags & ~TRANSFER_FLAGS_ALL:
            return R.RESERVED_FLAG
        tid = t.id
        if tid == 0:
            return R.ID_MUST_NOT_BE_ZERO
        if tid == U128_MAX:
            return R.ID_MUST_NOT_BE_INT_MAX
        existing = self.transfers.get(tid)
        if existing is not None:
            return _exists(t, self.requests.get(tid, existing))
        if self.failed_transfers:
            failed = self.failed_transfers.get(tid)
            if failed is not None:
                return failed[0] if _same_request(t, failed[1]) else R.ID_ALREADY_FAILED
        if flags & (_POST | _VOID):
            return self._post_or_void(t, ts, flags)
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
        if t.timeout and not pending:
            return R.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER
        if flags & (_CLOSE_DR | _CLOSE_CR) and not pending:
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
        if dr.flags & _CLOSED:
            return R.DEBIT_ACCOUNT_ALREADY_CLOSED
        if cr.flags & _CLOSED:
            return R.CREDIT_ACCOUNT_ALREADY_CLOSED
        amount = t.amount
        if flags & (_BAL_DR | _BAL_CR):
            if flags & _BAL_DR:
                available = dr.credits_posted - dr.debits_posted - dr.debits_pending
                amount = min(amount, max(available, 0))
                if amount == 0 and t.amount:
                    return R.EXCEEDS_CREDITS
            if flags & _BAL_CR:
                available = cr.debits_posted - cr.credits_posted - cr.credits_pending
                amount = min(amount, max(available, 0))
                if amount == 0 and t.amount:
                    return R.EXCEEDS_DEBITS
        if pending:
            if dr.debits_pending + amount > U128_MAX:
                return R.OVERFLOWS_DEBITS_PENDING
            if cr.credits_pending + amount > U128_MAX:
                return R.OVERFLOWS_CREDITS_PENDING
        else:
            if dr.debits_posted + amount > U128_MAX:
                return R.OVERFLOWS_DEBITS_POSTED
            if cr.credits_posted + amount > U128_MAX:
                return R.OVERFLOWS_CREDITS_POSTED
        if dr.debits_pending + dr.debits_posted + amount > U128_MAX:
            return R.OVERFLOWS_DEBITS
        if cr.credits_pending + cr.credits_posted + amount > U128_MAX:
            return R.OVERFLOWS_CREDITS
        if t.timeout and ts + t.timeout * NS_PER_S > U64_MAX:
            return R.OVERFLOWS_TIMEOUT
        if dr.flags & _DMNEC and dr.debits_pending + dr.debits_posted + amount > dr.credits_posted:
            return R.EXCEEDS_CREDITS
        if cr.flags & _CMNED and cr.credits_pending + cr.credits_posted + amount > cr.debits_posted:
            return R.EXCEEDS_DEBITS

        journal = self._journal
        if journal is not None:
            self._save(dr)
            self._save(cr)
        if pending:
            dr.debits_pending += amount
            cr.credits_pending += amount
            if flags & _CLOSE_DR:
                dr.flags |= _CLOSED
            if flags & _CLOSE_CR:
                cr.flags |= _CLOSED
        else:
            dr.debits_posted += amount
            cr.credits_posted += amount
        stored = msgspec.structs.replace(t, amount=amount, timestamp=ts)
        request = t if amount != t.amount else None
        self._store(stored, request, dr, cr, ts)
        if pending:
            self._set_status(tid, _ST_PENDING)
            if t.timeout:
                heapq.heappush(self.expiries, (ts + t.timeout * NS_PER_S, ts, tid))
        return 0

    def _post_or_void(self, t: Transfer, ts: int, flags: int) -> int:
        post = flags & _POST
        if flags & (_PENDING | _BAL_DR | _BAL_CR | _CLOSE_DR | _CLOSE_CR) or (post and flags & _VOID):
            return R.FLAGS_ARE_MUTUALLY_EXCLUSIVE
        if t.debit_account_id == U128_MAX:
            return R.DEBIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX
        if t.credit_account_id == U128_MAX:
            return R.CREDIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX
        if t.debit_account_id and t.debit_account_id == t.credit_account_id:
            return R.ACCOUNTS_MUST_BE_DIFFERENT
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
        if post:
            amount = t.amount or p.amount
            if amount > p.amount:
                return R.EXCEEDS_PENDING_TRANSFER_AMOUNT
        else:
            if t.amount and t.amount != p.amount:
                return R.PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT
            amount = p.amount
        state = self.status.get(pid)
        if state == _ST_POSTED:
            return R.PENDING_TRANSFER_ALREADY_POSTED
        if state == _ST_VOIDED:
            return R.PENDING_TRANSFER_ALREADY_VOIDED
        if state == _ST_EXPIRED:
            return R.PENDING_TRANSFER_EXPIRED
        dr = self.accounts[p.debit_account_id]
        cr = self.accounts[p.credit_account_id]
        if post:
            if dr.debits_posted + amount > U128_MAX:
                return R.OVERFLOWS_DEBITS_POSTED
            if cr.credits_posted + amount > U128_MAX:
                return R.OVERFLOWS_CREDITS_POSTED
        if self._journal is not None:
            self._save(dr)
            self._save(cr)
        dr.debits_pending -= p.amount
        cr.credits_pending -= p.amount
        if post:
            dr.debits_posted += amount
            cr.credits_posted += amount
        else:
            if p.flags & _CLOSE_DR:
                dr.flags &= ~_CLOSED
            if p.flags & _CLOSE_CR:
                cr.flags &= ~_CLOSED
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
        self._store(stored, t, dr, cr, ts)
        self._set_status(pid, _ST_POSTED if post else _ST_VOIDED)
        return 0

    def _store(self, stored: Transfer, request: Transfer | None, dr: Account, cr: Account, ts: int) -> None:
        tid = stored.id
        self.transfers[tid] = stored
        if request is not None:
            request = msgspec.structs.replace(request)
            self.requests[tid] = request
        index = self.account_transfers
        if index is not None:
            index[dr.id].append(tid)
            index[cr.id].append(tid)
        journal = self._journal
        if journal is not None:
            journal.append(("transfer", stored))
        changes = self.changes
        if changes is not None:
            changes.transfers.append((stored, request))
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
        """Void, as expired, every pending transfer whose timeout has passed at engine time ``timestamp``."""
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
        if self.account_transfers is None:
            raise RuntimeError("this machine keeps no per-account index")
        ids = self.account_transfers.get(f.account_id, [])
        transfers = self.transfers
        rows = _window(ids, f, lambda i: transfers[i].timestamp)
        out: list[Transfer] = []
        for tid in rows:
            t = transfers[tid]
            if (f.debits and t.debit_account_id == f.account_id) or (f.credits and t.credit_account_id == f.account_id):
                out.append(t)
                if len(out) >= f.limit:
                    break
        return out

    def get_account_balances(self, f: AccountFilter) -> list[AccountBalance]:
        rows = _window(self.history.get(f.account_id, []), f, lambda b: b.timestamp)
        return list(rows[: f.limit])

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
        for k in sorted(self.failed_transfers):
            h.update(enc(self.failed_transfers[k]))
        for k in sorted(self.failed_accounts):
            h.update(enc(self.failed_accounts[k]))
        h.update(enc(self.last_timestamp))
        return h.hexdigest()

    def to_snapshot(self) -> Snapshot:
        return Snapshot(
            last_timestamp=self.last_timestamp,
            accounts=list(self.accounts.values()),
            transfers=sorted(self.transfers.values(), key=lambda t: t.timestamp),
            requests=list(self.requests.values()),
            status=[(k, v) for k, v in self.status.items()],
            expiries=list(self.expiries),
            failed_transfers=[(c, e) for c, e in self.failed_transfers.values()],
            failed_accounts=[(c, e) for c, e in self.failed_accounts.values()],
            history=[(k, v) for k, v in self.history.items()],
        )

    @classmethod
    def from_snapshot(cls, s: Snapshot) -> Machine:
        m = cls()
        m.last_timestamp = s.last_timestamp
        m.accounts = {a.id: a for a in sorted(s.accounts, key=lambda a: a.timestamp)}
        index: dict[int, list[int]] = {a: [] for a in m.accounts}
        for t in s.transfers:
            m.transfers[t.id] = t
            index[t.debit_account_id].append(t.id)
            index[t.credit_account_id].append(t.id)
        m.account_transfers = index
        m.requests = {r.id: r for r in s.requests}
        m.status = dict(s.status)
        m.expiries = list(s.expiries)
        heapq.heapify(m.expiries)
        m.failed_transfers = {e.id: (c, e) for c, e in s.failed_transfers}
        m.failed_accounts = {e.id: (c, e) for c, e in s.failed_accounts}
        m.history = dict(s.history)
        return m


class Snapshot(msgspec.Struct, array_like=True, gc=False):
    """The whole state of a ``Machine`` at a batch boundary, as written to a snapshot file."""

    last_timestamp: int
    accounts: list[Account]
    transfers: list[Transfer]
    requests: list[Transfer]
    status: list[tuple[int, int]]
    expiries: list[tuple[int, int, int]]
    failed_transfers: list[tuple[int, Transfer]]
    failed_accounts: list[tuple[int, Account]]
    history: list[tuple[int, list[AccountBalance]]]


def _window(rows: list[Any], f: AccountFilter, key: Any) -> list[Any]:
    lo = bisect.bisect_left(rows, f.timestamp_min, key=key) if f.timestamp_min else 0
    hi = bisect.bisect_right(rows, f.timestamp_max, key=key) if f.timestamp_max else len(rows)
    part = rows[lo:hi]
    if f.reversed:
        part.reverse()
    return part


def _same_request(t: Transfer, r: Transfer) -> bool:
    return _exists(t, r) == 0


def _exists(t: Transfer, r: Transfer) -> int:
    """Compare a repeated transfer with the original request: the first differing field names the result."""
    if t.flags != r.flags:
        return R.EXISTS_WITH_DIFFERENT_FLAGS
    if t.pending_id != r.pending_id:
        return R.EXISTS_WITH_DIFFERENT_PENDING_ID
    if t.timeout != r.timeout:
        return R.EXISTS_WITH_DIFFERENT_TIMEOUT
    if t.debit_account_id != r.debit_account_id:
        return R.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID
    if t.credit_account_id != r.credit_account_id:
        return R.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID
    if t.amount != r.amount:
        return R.EXISTS_WITH_DIFFERENT_AMOUNT
    if t.user_data_128 != r.user_data_128:
        return R.EXISTS_WITH_DIFFERENT_USER_DATA_128
    if t.user_data_64 != r.user_data_64:
        return R.EXISTS_WITH_DIFFERENT_USER_DATA_64
    if t.user_data_32 != r.user_data_32:
        return R.EXISTS_WITH_DIFFERENT_USER_DATA_32
    if t.ledger != r.ledger:
        return R.EXISTS_WITH_DIFFERENT_LEDGER
    if t.code != r.code:
        return R.EXISTS_WITH_DIFFERENT_CODE
    return R.OK
