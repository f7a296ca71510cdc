"""A deliberately plain reference model of the payments rules, to check both backends against.

No fast paths, no journal: a linked chain runs on a deep copy of the state that replaces the state only if
the whole chain succeeds. Written from the rules in docs/payments.md, not from liangcao.payments.machine.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from liangcao.payments.types import (
    Account,
    AccountFlags,
    CreateAccountResult,
    CreateTransferResult,
    Transfer,
    TransferFlags,
)

MAX = (1 << 128) - 1
A = CreateAccountResult
R = CreateTransferResult
F = TransferFlags
AF = AccountFlags


@dataclass
class ModelState:
    accounts: dict[int, dict[str, Any]] = field(default_factory=dict)
    transfers: dict[int, dict[str, Any]] = field(default_factory=dict)
    requests: dict[int, tuple[Any, ...]] = field(default_factory=dict)
    status: dict[int, str] = field(default_factory=dict)
    failed_t: dict[int, tuple[int, tuple[Any, ...]]] = field(default_factory=dict)
    failed_a: dict[int, tuple[int, tuple[Any, ...]]] = field(default_factory=dict)


def _req(t: Transfer) -> tuple[Any, ...]:
    return (
        t.flags,
        t.pending_id,
        t.timeout,
        t.debit_account_id,
        t.credit_account_id,
        t.amount,
        t.user_data_128,
        t.user_data_64,
        t.user_data_32,
        t.ledger,
        t.code,
    )


_EXISTS = [
    R.EXISTS_WITH_DIFFERENT_FLAGS,
    R.EXISTS_WITH_DIFFERENT_PENDING_ID,
    R.EXISTS_WITH_DIFFERENT_TIMEOUT,
    R.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID,
    R.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID,
    R.EXISTS_WITH_DIFFERENT_AMOUNT,
    R.EXISTS_WITH_DIFFERENT_USER_DATA_128,
    R.EXISTS_WITH_DIFFERENT_USER_DATA_64,
    R.EXISTS_WITH_DIFFERENT_USER_DATA_32,
    R.EXISTS_WITH_DIFFERENT_LEDGER,
    R.EXISTS_WITH_DIFFERENT_CODE,
]


class Model:
    def __init__(self) -> None:
        self.s = ModelState()

    # ---------------------------------------------------------------- batches

    def run(self, events: list[Any], ts: int, kind: str) -> list[int]:
        if kind == "transfers":
            self.expire(ts)
        one = self._account if kind == "accounts" else self._transfer
        linked = 1
        results = [0] * len(events)
        i = 0
        n = len(events)
        while i < n:
            # gather the chain starting at i
            j = i
            while j < n - 1 and events[j].flags & linked:
                j += 1
            chain = list(range(i, j + 1))
            open_chain = events[j].flags & linked  # only possible when j == n - 1
            if len(chain) == 1 and not open_chain:
                code = one(self.s, events[i], ts + i)
                results[i] = code
                self._remember(events[i], code, kind)
                i += 1
                continue
            work = copy.deepcopy(self.s)
            failed_at = None
            code = 0
            for k in chain:
                if open_chain and k == j:
                    code, failed_at = R.LINKED_EVENT_CHAIN_OPEN, k
                    break
                code = one(work, events[k], ts + k)
                if code:
                    failed_at = k
                    break
            if failed_at is None:
                self.s = work
            else:
                for k in chain:
                    results[k] = R.LINKED_EVENT_FAILED
                results[failed_at] = code
                if open_chain:
                    results[j] = R.LINKED_EVENT_CHAIN_OPEN
                self._remember(events[failed_at], code, kind)
            i = j + 1
        return results

    def _remember(self, e: Any, code: int, kind: str) -> None:
        first = A.FLAGS_ARE_MUTUALLY_EXCLUSIVE if kind == "accounts" else R.FLAGS_ARE_MUTUALLY_EXCLUSIVE
        table = self.s.failed_a if kind == "accounts" else self.s.failed_t
        if code >= first and e.id not in table:
            table[e.id] = (code, _req(e) if kind == "transfers" else _areq(e))

    def expire(self, ts: int) -> None:
        due = sorted(
            (t["expires_at"], t["timestamp"], i)
            for i, t in self.s.transfers.items()
            if self.s.status.get(i) == "pending" and t["expires_at"] is not None and t["expires_at"] <= ts
        )
        for _, _, i in due:
            t = self.s.transfers[i]
            self.s.accounts[t["dr"]]["dp"] -= t["amount"]
            self.s.accounts[t["cr"]]["cp"] -= t["amount"]
            self._reopen(self.s, t)
            self.s.status[i] = "expired"

    @staticmethod
    def _reopen(s: ModelState, t: dict[str, Any]) -> None:
        if t["flags"] & F.CLOSING_DEBIT:
            s.accounts[t["dr"]]["closed"] = False
        if t["flags"] & F.CLOSING_CREDIT:
            s.accounts[t["cr"]]["closed"] = False

    # ---------------------------------------------------------------- accounts

    def _account(self, s: ModelState, a: Account, ts: int) -> int:
        if a.timestamp != 0:
            return A.TIMESTAMP_MUST_BE_ZERO
        u128 = (a.id, a.user_data_128, a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted)
        small = [(a.user_data_64, 64), (a.user_data_32, 32), (a.ledger, 32), (a.code, 16), (a.flags, 16)]
        if any(not 0 <= v <= MAX for v in u128) or any(not 0 <= v < 1 << bits for v, bits in small):
            return A.FIELD_OUT_OF_RANGE
        if a.flags & ~0b1111:
            return A.RESERVED_FLAG
        if a.id == 0:
            return A.ID_MUST_NOT_BE_ZERO
        if a.id == MAX:
            return A.ID_MUST_NOT_BE_INT_MAX
        if a.id in s.accounts:
            old = s.accounts[a.id]
            for code, mine, theirs in [
                (A.EXISTS_WITH_DIFFERENT_FLAGS, a.flags, old["flags"]),
                (A.EXISTS_WITH_DIFFERENT_USER_DATA_128, a.user_data_128, old["u128"]),
                (A.EXISTS_WITH_DIFFERENT_USER_DATA_64, a.user_data_64, old["u64"]),
                (A.EXISTS_WITH_DIFFERENT_USER_DATA_32, a.user_data_32, old["u32"]),
                (A.EXISTS_WITH_DIFFERENT_LEDGER, a.ledger, old["ledger"]),
                (A.EXISTS_WITH_DIFFERENT_CODE, a.code, old["code"]),
            ]:
                if mine != theirs:
                    return code
            return A.OK
        if a.id in s.failed_a:
            code, req = s.failed_a[a.id]
            return code if req == _areq(a) else A.ID_ALREADY_FAILED
        if a.flags & AF.DEBITS_MUST_NOT_EXCEED_CREDITS and a.flags & AF.CREDITS_MUST_NOT_EXCEED_DEBITS:
            return A.FLAGS_ARE_MUTUALLY_EXCLUSIVE
        for code, v in [
            (A.DEBITS_PENDING_MUST_BE_ZERO, a.debits_pending),
            (A.DEBITS_POSTED_MUST_BE_ZERO, a.debits_posted),
            (A.CREDITS_PENDING_MUST_BE_ZERO, a.credits_pending),
            (A.CREDITS_POSTED_MUST_BE_ZERO, a.credits_posted),
        ]:
            if v:
                return code
        if a.ledger == 0:
            return A.LEDGER_MUST_NOT_BE_ZERO
        if a.code == 0:
            return A.CODE_MUST_NOT_BE_ZERO
        s.accounts[a.id] = {
            "ledger": a.ledger,
            "code": a.code,
            "flags": a.flags,
            "u128": a.user_data_128,
            "u64": a.user_data_64,
            "u32": a.user_data_32,
            "dp": 0,
            "dpo": 0,
            "cp": 0,
            "cpo": 0,
            "closed": False,
        }
        return A.OK

    # ---------------------------------------------------------------- transfers

    def _transfer(self, s: ModelState, t: Transfer, ts: int) -> int:
        if t.timestamp != 0:
            return R.TIMESTAMP_MUST_BE_ZERO
        u128 = (t.id, t.debit_account_id, t.credit_account_id, t.amount, t.pending_id, t.user_data_128)
        small = [
            (t.user_data_64, 64),
            (t.user_data_32, 32),
            (t.timeout, 32),
            (t.ledger, 32),
            (t.code, 16),
            (t.flags, 16),
        ]
        if any(not 0 <= v <= MAX for v in u128) or any(not 0 <= v < 1 << bits for v, bits in small):
            return R.FIELD_OUT_OF_RANGE
        if t.flags & ~0xFF:
            return R.RESERVED_FLAG
        if t.id == 0:
            return R.ID_MUST_NOT_BE_ZERO
        if t.id == MAX:
            return R.ID_MUST_NOT_BE_INT_MAX
        if t.id in s.transfers:
            orig = s.requests[t.id]
            for code, mine, theirs in zip(_EXISTS, _req(t), orig, strict=True):
                if mine != theirs:
                    return code
            return R.OK
        if t.id in s.failed_t:
            code, req = s.failed_t[t.id]
            return code if req == _req(t) else R.ID_ALREADY_FAILED
        post, void = bool(t.flags & F.POST_PENDING_TRANSFER), bool(t.flags & F.VOID_PENDING_TRANSFER)
        if post or void:
            return self._post_void(s, t, ts, post)
        if t.debit_account_id == 0:
            return R.DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO
        if t.debit_account_id == MAX:
            return R.DEBIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX
        if t.credit_account_id == 0:
            return R.CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO
        if t.credit_account_id == MAX:
            return R.CREDIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX
        if t.debit_account_id == t.credit_account_id:
            return R.ACCOUNTS_MUST_BE_DIFFERENT
        if t.pending_id != 0:
            return R.PENDING_ID_MUST_BE_ZERO
        pending = bool(t.flags & F.PENDING)
        if t.timeout and not pending:
            return R.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER
        if t.flags & (F.CLOSING_DEBIT | F.CLOSING_CREDIT) and not pending:
            return R.CLOSING_TRANSFER_MUST_BE_PENDING
        if t.ledger == 0:
            return R.LEDGER_MUST_NOT_BE_ZERO
        if t.code == 0:
            return R.CODE_MUST_NOT_BE_ZERO
        dr = s.accounts.get(t.debit_account_id)
        if dr is None:
            return R.DEBIT_ACCOUNT_NOT_FOUND
        cr = s.accounts.get(t.credit_account_id)
        if cr is None:
            return R.CREDIT_ACCOUNT_NOT_FOUND
        if dr["ledger"] != cr["ledger"]:
            return R.ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER
        if t.ledger != dr["ledger"]:
            return R.TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS
        if dr["closed"]:
            return R.DEBIT_ACCOUNT_ALREADY_CLOSED
        if cr["closed"]:
            return R.CREDIT_ACCOUNT_ALREADY_CLOSED
        amount = t.amount
        if t.flags & F.BALANCING_DEBIT:
            amount = min(amount, max(0, dr["cpo"] - dr["dpo"] - dr["dp"]))
            if amount == 0 and t.amount > 0:
                return R.EXCEEDS_CREDITS
        if t.flags & F.BALANCING_CREDIT:
            amount = min(amount, max(0, cr["dpo"] - cr["cpo"] - cr["cp"]))
            if amount == 0 and t.amount > 0:
                return R.EXCEEDS_DEBITS
        if pending and dr["dp"] + amount > MAX:
            return R.OVERFLOWS_DEBITS_PENDING
        if pending and cr["cp"] + amount > MAX:
            return R.OVERFLOWS_CREDITS_PENDING
        if not pending and dr["dpo"] + amount > MAX:
            return R.OVERFLOWS_DEBITS_POSTED
        if not pending and cr["cpo"] + amount > MAX:
            return R.OVERFLOWS_CREDITS_POSTED
        if dr["dp"] + dr["dpo"] + amount > MAX:
            return R.OVERFLOWS_DEBITS
        if cr["cp"] + cr["cpo"] + amount > MAX:
            return R.OVERFLOWS_CREDITS
        if dr["flags"] & AF.DEBITS_MUST_NOT_EXCEED_CREDITS and dr["dp"] + dr["dpo"] + amount > dr["cpo"]:
            return R.EXCEEDS_CREDITS
        if cr["flags"] & AF.CREDITS_MUST_NOT_EXCEED_DEBITS and cr["cp"] + cr["cpo"] + amount > cr["dpo"]:
            return R.EXCEEDS_DEBITS
        if pending:
            dr["dp"] += amount
            cr["cp"] += amount
            if t.flags & F.CLOSING_DEBIT:
                dr["closed"] = True
            if t.flags & F.CLOSING_CREDIT:
                cr["closed"] = True
            s.status[t.id] = "pending"
        else:
            dr["dpo"] += amount
            cr["cpo"] += amount
        s.transfers[t.id] = {
            "dr": t.debit_account_id,
            "cr": t.credit_account_id,
            "amount": amount,
            "flags": t.flags,
            "ledger": t.ledger,
            "code": t.code,
            "timestamp": ts,
            "expires_at": ts + t.timeout * 10**9 if pending and t.timeout else None,
        }
        s.requests[t.id] = _req(t)
        return R.OK

    def _post_void(self, s: ModelState, t: Transfer, ts: int, post: bool) -> int:
        others = F.PENDING | F.BALANCING_DEBIT | F.BALANCING_CREDIT | F.CLOSING_DEBIT | F.CLOSING_CREDIT
        if t.flags & others or (t.flags & F.POST_PENDING_TRANSFER and t.flags & F.VOID_PENDING_TRANSFER):
            return R.FLAGS_ARE_MUTUALLY_EXCLUSIVE
        if t.debit_account_id == MAX:
            return R.DEBIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX
        if t.credit_account_id == MAX:
            return R.CREDIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX
        if t.debit_account_id and t.debit_account_id == t.credit_account_id:
            return R.ACCOUNTS_MUST_BE_DIFFERENT
        if t.pending_id == 0:
            return R.PENDING_ID_MUST_NOT_BE_ZERO
        if t.pending_id == MAX:
            return R.PENDING_ID_MUST_NOT_BE_INT_MAX
        if t.pending_id == t.id:
            return R.PENDING_ID_MUST_BE_DIFFERENT
        if t.timeout:
            return R.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER
        p = s.transfers.get(t.pending_id)
        if p is None:
            return R.PENDING_TRANSFER_NOT_FOUND
        if not p["flags"] & F.PENDING:
            return R.PENDING_TRANSFER_NOT_PENDING
        if t.debit_account_id not in (0, p["dr"]):
            return R.PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID
        if t.credit_account_id not in (0, p["cr"]):
            return R.PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID
        if t.ledger not in (0, p["ledger"]):
            return R.PENDING_TRANSFER_HAS_DIFFERENT_LEDGER
        if t.code not in (0, p["code"]):
            return R.PENDING_TRANSFER_HAS_DIFFERENT_CODE
        if post:
            amount = t.amount if t.amount else p["amount"]
            if amount > p["amount"]:
                return R.EXCEEDS_PENDING_TRANSFER_AMOUNT
        else:
            if t.amount not in (0, p["amount"]):
                return R.PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT
            amount = p["amount"]
        st = s.status[t.pending_id]
        if st == "posted":
            return R.PENDING_TRANSFER_ALREADY_POSTED
        if st == "voided":
            return R.PENDING_TRANSFER_ALREADY_VOIDED
        if st == "expired":
            return R.PENDING_TRANSFER_EXPIRED
        dr, cr = s.accounts[p["dr"]], s.accounts[p["cr"]]
        if post and dr["dpo"] + amount > MAX:
            return R.OVERFLOWS_DEBITS_POSTED
        if post and cr["cpo"] + amount > MAX:
            return R.OVERFLOWS_CREDITS_POSTED
        dr["dp"] -= p["amount"]
        cr["cp"] -= p["amount"]
        if post:
            dr["dpo"] += amount
            cr["cpo"] += amount
            s.status[t.pending_id] = "posted"
        else:
            self._reopen(s, p)
            s.status[t.pending_id] = "voided"
        s.transfers[t.id] = {
            "dr": p["dr"],
            "cr": p["cr"],
            "amount": amount,
            "flags": t.flags,
            "ledger": p["ledger"],
            "code": p["code"],
            "timestamp": ts,
            "expires_at": None,
        }
        s.requests[t.id] = _req(t)
        return R.OK

    # ---------------------------------------------------------------- views

    def balances(self) -> dict[int, tuple[int, int, int, int, bool]]:
        return {i: (a["dp"], a["dpo"], a["cp"], a["cpo"], a["closed"]) for i, a in self.s.accounts.items()}


def _areq(a: Account) -> tuple[Any, ...]:
    return (
        a.flags,
        a.user_data_128,
        a.user_data_64,
        a.user_data_32,
        a.ledger,
        a.code,
        a.debits_pending,
        a.debits_posted,
        a.credits_pending,
        a.credits_posted,
    )
