"""A deliberately plain reference model of the payments rules, to check both backends against.

No fast paths, no journal: a linked chain runs on a deep copy of the state that replaces the state only if
the whole chain succeeds. Written from the rules in docs/payments.md (TigerBeetle's semantics), not from
liangcao.payments.machine.
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
TS_MAX = (1 << 63) - 1
A = CreateAccountResult
R = CreateTransferResult
F = TransferFlags
AF = AccountFlags
TRANSIENT = {
    R.DEBIT_ACCOUNT_NOT_FOUND,
    R.CREDIT_ACCOUNT_NOT_FOUND,
    R.PENDING_TRANSFER_NOT_FOUND,
    R.EXCEEDS_CREDITS,
    R.EXCEEDS_DEBITS,
    R.DEBIT_ACCOUNT_ALREADY_CLOSED,
    R.CREDIT_ACCOUNT_ALREADY_CLOSED,
}
_WIDTHS_T = {
    "id": 128,
    "debit_account_id": 128,
    "credit_account_id": 128,
    "amount": 128,
    "pending_id": 128,
    "user_data_128": 128,
    "user_data_64": 64,
    "user_data_32": 32,
    "timeout": 32,
    "ledger": 32,
    "code": 16,
    "flags": 16,
    "timestamp": 64,
}
_WIDTHS_A = {
    "id": 128,
    "debits_pending": 128,
    "debits_posted": 128,
    "credits_pending": 128,
    "credits_posted": 128,
    "user_data_128": 128,
    "user_data_64": 64,
    "user_data_32": 32,
    "ledger": 32,
    "code": 16,
    "flags": 16,
    "timestamp": 64,
}


def fits(events: list[Any], kind: str) -> bool:
    """Whether every field of every event fits its width (else the whole batch is refused)."""
    widths = _WIDTHS_A if kind == "accounts" else _WIDTHS_T
    return all(0 <= getattr(e, k) < 1 << bits for e in events for k, bits in widths.items())


@dataclass
class ModelState:
    accounts: dict[int, dict[str, Any]] = field(default_factory=dict)
    transfers: dict[int, dict[str, Any]] = field(default_factory=dict)
    status: dict[int, str] = field(default_factory=dict)
    spent: set[int] = field(default_factory=set)  # ids of transfers that failed transiently


class Model:
    def __init__(self) -> None:
        self.s = ModelState()

    def max_timestamp(self) -> int:
        stamps = [a["timestamp"] for a in self.s.accounts.values()] + [
            t["timestamp"] for t in self.s.transfers.values()
        ]
        return max(stamps, default=0)

    # ---------------------------------------------------------------- batches

    def run(self, events: list[Any], ts: int, kind: str) -> list[int] | None:
        """The results, or None when the batch is refused whole (a value that does not fit its field)."""
        if not fits(events, kind):
            return None
        if kind == "transfers":
            self.expire(ts)
        imported_flag = AF.IMPORTED if kind == "accounts" else F.IMPORTED
        batch_imported = bool(events) and bool(events[0].flags & imported_flag)
        last = ts + len(events) - 1

        def one(s: ModelState, e: Any, event_ts: int) -> int:
            imported = bool(e.flags & imported_flag)
            if imported != batch_imported:
                return (A if kind == "accounts" else R)[
                    "IMPORTED_EVENT_NOT_EXPECTED" if imported else "IMPORTED_EVENT_EXPECTED"
                ]
            names = A if kind == "accounts" else R
            if imported:
                if not 0 < e.timestamp <= TS_MAX:
                    return names.IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE
                if e.timestamp >= last:
                    return names.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE
            elif e.timestamp:
                return names.TIMESTAMP_MUST_BE_ZERO
            if kind == "accounts":
                return self._account(s, e, e.timestamp if imported else event_ts, imported)
            return self._transfer(s, e, event_ts, imported)

        results = [0] * len(events)
        i = 0
        n = len(events)
        while i < n:
            j = i
            while j < n - 1 and events[j].flags & 1:
                j += 1
            chain = list(range(i, j + 1))
            open_chain = bool(events[j].flags & 1)  # only possible when j == n - 1
            if len(chain) == 1 and not open_chain:
                code = one(self.s, events[i], ts + i)
                results[i] = code
                self._remember(self.s, events[i], code, kind)
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
                self._remember(self.s, events[failed_at], code, kind)
            i = j + 1
        return results

    @staticmethod
    def _remember(s: ModelState, e: Any, code: int, kind: str) -> None:
        if kind == "transfers" and code in TRANSIENT:
            s.spent.add(e.id)

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

    @staticmethod
    def _taken(s: ModelState, ts: int) -> bool:
        return any(a["timestamp"] == ts for a in s.accounts.values()) or any(
            t["timestamp"] == ts for t in s.transfers.values()
        )

    # ---------------------------------------------------------------- accounts

    def _account(self, s: ModelState, a: Account, ts: int, imported: bool) -> int:
        if a.flags >> 6:
            return A.RESERVED_FLAG
        if a.id == 0:
            return A.ID_MUST_NOT_BE_ZERO
        if a.id == MAX:
            return A.ID_MUST_NOT_BE_INT_MAX
        if a.id in s.accounts:
            old = s.accounts[a.id]
            stored_flags = (old["flags"] & ~AF.CLOSED) | (AF.CLOSED if old["closed"] else 0)
            for code, mine, theirs in [
                (A.EXISTS_WITH_DIFFERENT_FLAGS, a.flags, stored_flags),
                (A.EXISTS_WITH_DIFFERENT_USER_DATA_128, a.user_data_128, old["u128"]),
                (A.EXISTS_WITH_DIFFERENT_USER_DATA_64, a.user_data_64, old["u64"]),
                (A.EXISTS_WITH_DIFFERENT_USER_DATA_32, a.user_data_32, old["u32"]),
                (A.EXISTS_WITH_DIFFERENT_LEDGER, a.ledger, old["ledger"]),
                (A.EXISTS_WITH_DIFFERENT_CODE, a.code, old["code"]),
            ]:
                if mine != theirs:
                    return code
            return A.EXISTS
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
        if imported:
            newest = max((x["timestamp"] for x in s.accounts.values()), default=0)
            if ts <= newest or self._taken(s, ts):
                return A.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS
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
            "closed": bool(a.flags & AF.CLOSED),
            "timestamp": ts,
        }
        return A.OK

    # ---------------------------------------------------------------- transfers

    def _transfer(self, s: ModelState, t: Transfer, event_ts: int, imported: bool) -> int:
        if t.flags >> 9:
            return R.RESERVED_FLAG
        if t.id == 0:
            return R.ID_MUST_NOT_BE_ZERO
        if t.id == MAX:
            return R.ID_MUST_NOT_BE_INT_MAX
        if t.id in s.transfers:
            return self._exists(s, t, s.transfers[t.id])
        if t.id in s.spent:
            return R.ID_ALREADY_FAILED
        post, void = bool(t.flags & F.POST_PENDING_TRANSFER), bool(t.flags & F.VOID_PENDING_TRANSFER)
        if post or void:
            return self._post_void(s, t, event_ts, imported, void)
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
        ts = event_ts
        if imported:
            code = self._import_order(s, t)
            if code:
                return code
            if t.timestamp <= dr["timestamp"]:
                return R.IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_DEBIT_ACCOUNT
            if t.timestamp <= cr["timestamp"]:
                return R.IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_CREDIT_ACCOUNT
            if t.timeout:
                return R.IMPORTED_EVENT_TIMEOUT_MUST_BE_ZERO
            ts = t.timestamp
        if dr["closed"]:
            return R.DEBIT_ACCOUNT_ALREADY_CLOSED
        if cr["closed"]:
            return R.CREDIT_ACCOUNT_ALREADY_CLOSED
        amount = t.amount
        if t.flags & F.BALANCING_DEBIT:
            amount = min(amount, max(0, dr["cpo"] - (dr["dpo"] + dr["dp"])))
        if t.flags & F.BALANCING_CREDIT:
            amount = min(amount, max(0, cr["dpo"] - (cr["cpo"] + cr["cp"])))
        if pending and dr["dp"] + amount > MAX:
            return R.OVERFLOWS_DEBITS_PENDING
        if pending and cr["cp"] + amount > MAX:
            return R.OVERFLOWS_CREDITS_PENDING
        if dr["dpo"] + amount > MAX:
            return R.OVERFLOWS_DEBITS_POSTED
        if cr["cpo"] + amount > MAX:
            return R.OVERFLOWS_CREDITS_POSTED
        if dr["dp"] + dr["dpo"] + amount > MAX:
            return R.OVERFLOWS_DEBITS
        if cr["cp"] + cr["cpo"] + amount > MAX:
            return R.OVERFLOWS_CREDITS
        if ts + t.timeout * 10**9 > TS_MAX:
            return R.OVERFLOWS_TIMEOUT
        if dr["flags"] & AF.DEBITS_MUST_NOT_EXCEED_CREDITS and dr["dp"] + dr["dpo"] + amount > dr["cpo"]:
            return R.EXCEEDS_CREDITS
        if cr["flags"] & AF.CREDITS_MUST_NOT_EXCEED_DEBITS and cr["cp"] + cr["cpo"] + amount > cr["dpo"]:
            return R.EXCEEDS_DEBITS
        if pending:
            dr["dp"] += amount
            cr["cp"] += amount
            s.status[t.id] = "pending"
        else:
            dr["dpo"] += amount
            cr["cpo"] += amount
        if t.flags & F.CLOSING_DEBIT:
            dr["closed"] = True
        if t.flags & F.CLOSING_CREDIT:
            cr["closed"] = True
        s.transfers[t.id] = self._record(t, t.debit_account_id, t.credit_account_id, amount, t.ledger, t.code, ts)
        s.transfers[t.id]["expires_at"] = ts + t.timeout * 10**9 if pending and t.timeout else None
        return R.OK

    def _import_order(self, s: ModelState, t: Transfer) -> int:
        newest = max((x["timestamp"] for x in s.transfers.values()), default=0)
        if t.timestamp <= newest or self._taken(s, t.timestamp):
            return R.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS
        return 0

    @staticmethod
    def _record(t: Transfer, dr: int, cr: int, amount: int, ledger: int, code: int, ts: int) -> dict[str, Any]:
        return {
            "dr": dr,
            "cr": cr,
            "amount": amount,
            "flags": t.flags,
            "pending_id": t.pending_id,
            "timeout": t.timeout,
            "u128": t.user_data_128,
            "u64": t.user_data_64,
            "u32": t.user_data_32,
            "ledger": ledger,
            "code": code,
            "timestamp": ts,
            "expires_at": None,
        }

    def _exists(self, s: ModelState, t: Transfer, e: dict[str, Any]) -> int:
        if t.flags != e["flags"]:
            return R.EXISTS_WITH_DIFFERENT_FLAGS
        if t.pending_id != e["pending_id"]:
            return R.EXISTS_WITH_DIFFERENT_PENDING_ID
        if t.timeout != e["timeout"]:
            return R.EXISTS_WITH_DIFFERENT_TIMEOUT
        if t.flags & (F.POST_PENDING_TRANSFER | F.VOID_PENDING_TRANSFER):
            # Zero fields of a post or void mean "as the pending transfer", then and now.
            p = s.transfers[t.pending_id]
            if t.debit_account_id not in (0, e["dr"]):
                return R.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID
            if t.credit_account_id not in (0, e["cr"]):
                return R.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID
            whole = t.amount == 0 if t.flags & F.VOID_PENDING_TRANSFER else t.amount == MAX
            if (p["amount"] if whole else t.amount) != e["amount"]:
                return R.EXISTS_WITH_DIFFERENT_AMOUNT
            for code, mine, key in [
                (R.EXISTS_WITH_DIFFERENT_USER_DATA_128, t.user_data_128, "u128"),
                (R.EXISTS_WITH_DIFFERENT_USER_DATA_64, t.user_data_64, "u64"),
                (R.EXISTS_WITH_DIFFERENT_USER_DATA_32, t.user_data_32, "u32"),
            ]:
                if (mine or p[key]) != e[key]:
                    return code
            if t.ledger not in (0, e["ledger"]):
                return R.EXISTS_WITH_DIFFERENT_LEDGER
            if t.code not in (0, e["code"]):
                return R.EXISTS_WITH_DIFFERENT_CODE
            return R.EXISTS
        if t.debit_account_id != e["dr"]:
            return R.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID
        if t.credit_account_id != e["cr"]:
            return R.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID
        balancing = t.flags & (F.BALANCING_DEBIT | F.BALANCING_CREDIT)
        if (t.amount < e["amount"]) if balancing else (t.amount != e["amount"]):
            return R.EXISTS_WITH_DIFFERENT_AMOUNT
        for code, mine, key in [
            (R.EXISTS_WITH_DIFFERENT_USER_DATA_128, t.user_data_128, "u128"),
            (R.EXISTS_WITH_DIFFERENT_USER_DATA_64, t.user_data_64, "u64"),
            (R.EXISTS_WITH_DIFFERENT_USER_DATA_32, t.user_data_32, "u32"),
            (R.EXISTS_WITH_DIFFERENT_LEDGER, t.ledger, "ledger"),
            (R.EXISTS_WITH_DIFFERENT_CODE, t.code, "code"),
        ]:
            if mine != e[key]:
                return code
        return R.EXISTS

    def _post_void(self, s: ModelState, t: Transfer, event_ts: int, imported: bool, void: bool) -> int:
        others = F.PENDING | F.BALANCING_DEBIT | F.BALANCING_CREDIT | F.CLOSING_DEBIT | F.CLOSING_CREDIT
        if t.flags & F.POST_PENDING_TRANSFER and void:
            return R.FLAGS_ARE_MUTUALLY_EXCLUSIVE
        if t.flags & others:
            return R.FLAGS_ARE_MUTUALLY_EXCLUSIVE
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
        whole = t.amount == 0 if void else t.amount == MAX  # a void's 0, a post's MAX: all of it
        amount = p["amount"] if whole else t.amount
        if amount > p["amount"]:
            return R.EXCEEDS_PENDING_TRANSFER_AMOUNT
        if void and amount < p["amount"]:
            return R.PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT
        st = s.status[t.pending_id]
        if st == "posted":
            return R.PENDING_TRANSFER_ALREADY_POSTED
        if st == "voided":
            return R.PENDING_TRANSFER_ALREADY_VOIDED
        if st == "expired":
            return R.PENDING_TRANSFER_EXPIRED
        if p["expires_at"] is not None and p["expires_at"] <= event_ts:
            return R.PENDING_TRANSFER_EXPIRED
        ts = event_ts
        if imported:
            code = self._import_order(s, t)
            if code:
                return code
            ts = t.timestamp
        dr, cr = s.accounts[p["dr"]], s.accounts[p["cr"]]
        if dr["closed"] and not void:
            return R.DEBIT_ACCOUNT_ALREADY_CLOSED
        if cr["closed"] and not void:
            return R.CREDIT_ACCOUNT_ALREADY_CLOSED
        dr["dp"] -= p["amount"]
        cr["cp"] -= p["amount"]
        if void:
            self._reopen(s, p)
            s.status[t.pending_id] = "voided"
        else:
            dr["dpo"] += amount
            cr["cpo"] += amount
            s.status[t.pending_id] = "posted"
        record = self._record(t, p["dr"], p["cr"], amount, p["ledger"], p["code"], ts)
        for key in ("u128", "u64", "u32"):
            record[key] = record[key] or p[key]
        s.transfers[t.id] = record
        return R.OK

    # ---------------------------------------------------------------- views

    def balances(self) -> dict[int, tuple[int, int, int, int, bool]]:
        return {i: (a["dp"], a["dpo"], a["cp"], a["cpo"], a["closed"]) for i, a in self.s.accounts.items()}
