"""Replay TigerBeetle's state-machine test tables (``tigerbeetle_tables.py``) against the embedded engine.

Each table runs on a fresh ``Engine`` through its public API (so every batch goes through the decoder,
the width checks and the log), with a clock that moves as TigerBeetle's test context moves its prepare
timestamp: one nanosecond per operation, one more per event of a create batch, and ``tick`` rows on top
(a negative tick lands that far below the largest timestamp). ``setup`` rows set an account's balances in
the engine's memory directly, as TigerBeetle's test does in its groove.

A row agrees when:

- ``account`` / ``transfer``: the engine's result is the row's status (``created`` is ``ok``);
- ``lookup_*``, ``*_result``: the object at that place in the engine's answer equals the row's (every
  field; timestamps where the table pins them: imported events and ``lookup_transfer ... timestamp``,
  else a result's timestamp is the engine's timestamp of the transfer the row names);
  a ``lookup_*`` row without data agrees when the id is absent;
- ``commit``: the engine answered as many objects as the table expects (no more, no fewer);
- ``setup`` / ``tick``: the engine could do it (the account exists).

Run ``python tests/tigerbeetle_parity.py`` for the report with every row that disagrees.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liangcao import limits
from liangcao.payments import (
    Account,
    AccountFilter,
    CreateAccountResult,
    CreateTransferResult,
    Engine,
    PaymentsError,
    QueryFilter,
    Transfer,
)
from liangcao.payments.types import AccountBalance

NS_PER_S = 1_000_000_000
TIMESTAMP_MAX = (1 << 63) - 1
PULSE_TIMESTAMPS = 8189  # TigerBeetle's pulse reserves timestamps for a full batch of expiries
ACCOUNT_FLAG_BITS = {"LNK": 1, "D<C": 2, "C<D": 4, "HIST": 8, "IMP": 16, "CLSD": 32}
TRANSFER_FLAG_BITS = {"LNK": 1, "PEN": 2, "POS": 4, "VOI": 8, "BDR": 16, "BCR": 32, "CDR": 64, "CCR": 128, "IMP": 256}
TRANSFER_FIELDS = (
    "id",
    "debit_account_id",
    "credit_account_id",
    "amount",
    "pending_id",
    "user_data_128",
    "user_data_64",
    "user_data_32",
    "timeout",
    "ledger",
    "code",
    "flags",
)
_DEFAULTED = (
    "debit_account_id",
    "credit_account_id",
    "ledger",
    "code",
    "user_data_128",
    "user_data_64",
    "user_data_32",
)
ACCOUNT_FIELDS = (
    "id",
    "debits_pending",
    "debits_posted",
    "credits_pending",
    "credits_posted",
    "user_data_128",
    "user_data_64",
    "user_data_32",
    "ledger",
    "code",
    "flags",
)


#: Rows where this engine differs from TigerBeetle's state machine on purpose (docs/payments.md, "Where it
#: differs from TigerBeetle"), by kind.
DELIBERATE = {
    "limit": "a query limit above pay_query_limit_max is refused, as TigerBeetle's clients refuse it "
    "(too_much_data); TigerBeetle's state machine, which the tables drive directly, caps it",
    "change_events": "get_change_events (change data capture) is not offered",
    "reserved_field": "Account has no `reserved` field (TigerBeetle's must be zero), so reserved_field cannot occur",
}


@dataclass
class Outcome:
    table: str
    line: int
    action: str
    agrees: bool
    detail: str = ""
    deliberate: str = ""  # a key of DELIBERATE when the row differs on purpose


@dataclass
class _Expect:
    row: dict[str, Any]
    item: Any  # what TigerBeetle answers for this row (None: the row expects nothing in the reply)
    absent_id: int | None = None


@dataclass
class TableRun:
    """One table on one fresh engine."""

    name: str
    root: Path
    now: int = 0  # TigerBeetle's prepare timestamp
    accounts: dict[int, dict[str, Any]] = field(default_factory=dict)
    transfers: dict[int, dict[str, Any]] = field(default_factory=dict)
    pending: list[_Expect] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)
    query: Any = None
    query_row: dict[str, Any] | None = None
    outcomes: list[Outcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.clock_value = 0
        self.engine = Engine(self.root, clock=lambda: self.clock_value, fsync=False, snapshot_log_bytes=0)

    def close(self) -> None:
        self.engine.close()

    def out(self, row: dict[str, Any], agrees: bool, detail: str = "", deliberate: str = "") -> None:
        if agrees:
            deliberate = ""
        elif not deliberate and row["action"] == "account" and row.get("reserved"):
            deliberate = "reserved_field"
        self.outcomes.append(Outcome(self.name, row["line"], row["action"], agrees, detail, deliberate))

    # ---------------------------------------------------------------- rows

    def row(self, row: dict[str, Any]) -> None:
        getattr(self, "do_" + row["action"])(row)

    def do_setup(self, row: dict[str, Any]) -> None:
        a = self.engine.machine.accounts.get(row.get("account", 0))
        if a is None:
            self.out(row, False, "no such account")
            return
        a.debits_pending = row.get("debits_pending", 0)
        a.debits_posted = row.get("debits_posted", 0)
        a.credits_pending = row.get("credits_pending", 0)
        a.credits_posted = row.get("credits_posted", 0)
        self.out(row, True)

    def do_tick(self, row: dict[str, Any]) -> None:
        interval = abs(row["value"]) * (NS_PER_S if row["unit"] == "seconds" else 1)
        self.now += interval if row["value"] > 0 else TIMESTAMP_MAX - interval
        self._pulse()
        self.out(row, True)

    def _pulse(self) -> None:
        heap = self.engine.machine.expiries
        if heap and heap[0][0] <= self.now:
            self.now += 1 + PULSE_TIMESTAMPS
            self.clock_value = self.now
            self.engine.pulse()

    def do_account(self, row: dict[str, Any]) -> None:
        flags = sum(ACCOUNT_FLAG_BITS[f] for f in row.get("flags", [])) | row.get("flags_padding", 0) << 6
        a = Account(
            row.get("id", 0),
            ledger=row.get("ledger", 0),
            code=row.get("code", 0),
            flags=flags,
            debits_pending=row.get("debits_pending", 0),
            debits_posted=row.get("debits_posted", 0),
            credits_pending=row.get("credits_pending", 0),
            credits_posted=row.get("credits_posted", 0),
            user_data_128=row.get("user_data_128", 0),
            user_data_64=row.get("user_data_64", 0),
            user_data_32=row.get("user_data_32", 0),
            timestamp=row.get("timestamp", 0),
        )
        self.events.append(a)
        self.pending.append(_Expect(row, row["status"]))
        if row["status"] == "created":
            expected = {k: getattr(a, k) for k in ACCOUNT_FIELDS}
            expected["timestamp"] = a.timestamp or None
            self.accounts[a.id] = expected

    def do_transfer(self, row: dict[str, Any]) -> None:
        flags = sum(TRANSFER_FLAG_BITS[f] for f in row.get("flags", [])) | row.get("flags_padding", 0) << 9
        t = Transfer(
            row.get("id", 0),
            debit_account_id=row.get("debit_account_id", 0),
            credit_account_id=row.get("credit_account_id", 0),
            amount=row.get("amount", 0),
            ledger=row.get("ledger", 0),
            code=row.get("code", 0),
            flags=flags,
            pending_id=row.get("pending_id", 0),
            timeout=row.get("timeout", 0),
            user_data_128=row.get("user_data_128", 0),
            user_data_64=row.get("user_data_64", 0),
            user_data_32=row.get("user_data_32", 0),
            timestamp=row.get("timestamp", 0),
        )
        self.events.append(t)
        self.pending.append(_Expect(row, row["status"]))
        if row["status"] == "created":
            expected = {k: getattr(t, k) for k in TRANSFER_FIELDS}
            expected["timestamp"] = t.timestamp or None
            if t.pending_id:
                # As TigerBeetle's test: a post or void's zero fields are the pending transfer's.
                p = self.transfers[t.pending_id]
                for k in _DEFAULTED:
                    if expected[k] == 0:
                        expected[k] = p[k]
                if flags & TRANSFER_FLAG_BITS["VOI"] and expected["amount"] == 0:
                    expected["amount"] = p["amount"]
            self.transfers[t.id] = expected

    def do_lookup_account(self, row: dict[str, Any]) -> None:
        self.events.append(row.get("id", 0))
        data = row.get("data")
        if data is None:
            self.pending.append(_Expect(row, None, absent_id=row.get("id", 0)))
        else:
            self.pending.append(_Expect(row, self._account_with(row.get("id", 0), data)))

    def _account_with(self, account_id: int, data: dict[str, Any] | None) -> dict[str, Any]:
        expected = dict(self.accounts.get(account_id) or {"id": account_id})
        if data is not None:
            for k in ("debits_pending", "debits_posted", "credits_pending", "credits_posted"):
                expected[k] = data.get(k, 0)
            closed = ACCOUNT_FLAG_BITS["CLSD"]
            flags = expected.get("flags", 0) & ~closed
            expected["flags"] = flags | (closed if data.get("flag_closed") else 0)
        return expected

    def do_lookup_transfer(self, row: dict[str, Any]) -> None:
        self.events.append(row.get("id", 0))
        ((variant, value),) = row["data"].items()
        if variant == "exists" and not value:
            self.pending.append(_Expect(row, None, absent_id=row.get("id", 0)))
            return
        expected = dict(self.transfers.get(row.get("id", 0)) or {"id": row.get("id", 0)})
        if variant == "amount":
            expected["amount"] = value
        elif variant == "timestamp":
            expected["timestamp"] = value
        self.pending.append(_Expect(row, expected))

    def _filter_timestamp(self, kind: str, object_id: int | None) -> int:
        if object_id is None:
            return 0
        found = (self.engine.lookup_accounts if kind == "accounts" else self.engine.lookup_transfers)([object_id])
        return found[0].timestamp if found else 0

    def do_get_account_transfers(self, row: dict[str, Any]) -> None:
        self.query = self._account_filter(row)
        self.query_row = row

    def do_get_account_balances(self, row: dict[str, Any]) -> None:
        self.query = self._account_filter(row)
        self.query_row = row

    def _account_filter(self, row: dict[str, Any]) -> AccountFilter:
        flags = row.get("flags", [])
        return AccountFilter(
            account_id=row.get("account_id", 0),
            user_data_128=row.get("user_data_128") or 0,
            user_data_64=row.get("user_data_64") or 0,
            user_data_32=row.get("user_data_32") or 0,
            code=row.get("code") or 0,
            timestamp_min=self._filter_timestamp("transfers", row.get("timestamp_min_transfer_id")),
            timestamp_max=self._filter_timestamp("transfers", row.get("timestamp_max_transfer_id")),
            limit=row.get("limit", 0),
            debits="DR" in flags,
            credits="CR" in flags,
            reversed="REV" in flags,
        )

    def _query_filter(self, row: dict[str, Any], kind: str) -> QueryFilter:
        return QueryFilter(
            user_data_128=row.get("user_data_128", 0),
            user_data_64=row.get("user_data_64", 0),
            user_data_32=row.get("user_data_32", 0),
            ledger=row.get("ledger", 0),
            code=row.get("code", 0),
            timestamp_min=self._filter_timestamp(kind, row.get("timestamp_min_transfer_id")),
            timestamp_max=self._filter_timestamp(kind, row.get("timestamp_max_transfer_id")),
            limit=row.get("limit", 0),
            reversed="REV" in row.get("flags", []),
        )

    def do_query_accounts(self, row: dict[str, Any]) -> None:
        self.query = self._query_filter(row, "accounts")
        self.query_row = row

    def do_query_transfers(self, row: dict[str, Any]) -> None:
        self.query = self._query_filter(row, "transfers")
        self.query_row = row

    def do_get_account_transfers_result(self, row: dict[str, Any]) -> None:
        self.pending.append(_Expect(row, dict(self.transfers.get(row["value"]) or {"id": row["value"]})))

    def do_query_transfers_result(self, row: dict[str, Any]) -> None:
        self.do_get_account_transfers_result(row)

    def do_query_accounts_result(self, row: dict[str, Any]) -> None:
        data = row.get("data")
        expected = (
            self._account_with(row.get("id", 0), data)
            if data is not None
            else dict(self.accounts.get(row.get("id", 0), {}))
        )
        self.pending.append(_Expect(row, expected))

    def do_get_account_balances_result(self, row: dict[str, Any]) -> None:
        expected = {k: row.get(k, 0) for k in ("debits_pending", "debits_posted", "credits_pending", "credits_posted")}
        expected["timestamp"] = self._filter_timestamp("transfers", row.get("transfer_id", 0)) or None
        self.pending.append(_Expect(row, expected))

    def do_get_change_events(self, row: dict[str, Any]) -> None:
        self.query = "get_change_events"
        self.query_row = row

    def do_get_change_events_result(self, row: dict[str, Any]) -> None:
        self.pending.append(_Expect(row, "change event"))

    # ---------------------------------------------------------------- commits

    def do_commit(self, row: dict[str, Any]) -> None:
        op = row["value"]
        getattr(self, "commit_" + op)(row)
        self.pending = []
        self.events = []
        self.query = None
        self.query_row = None

    def _create(self, row: dict[str, Any], kind: str) -> None:
        n = len(self.events)
        self.now += 1 + n
        self.clock_value = self.now - n + 1
        names = CreateAccountResult if kind == "accounts" else CreateTransferResult
        try:
            call = self.engine.create_accounts if kind == "accounts" else self.engine.create_transfers
            results: list[int] | None = call(self.events)
        except PaymentsError as exc:
            results = None
            refusal = exc.message
        for k, e in enumerate(self.pending):
            want = e.item
            if results is None:
                self.out(e.row, False, f"batch refused: {refusal}")
                continue
            got = "created" if results[k] == 0 else names(results[k]).name.lower()
            self.out(e.row, got == want, "" if got == want else f"got {got}")
        self.out(row, results is not None and len(results) == n)
        self._pulse()

    def commit_create_accounts(self, row: dict[str, Any]) -> None:
        self._create(row, "accounts")

    def commit_create_transfers(self, row: dict[str, Any]) -> None:
        self._create(row, "transfers")

    def _answer(self, row: dict[str, Any], call: Any) -> None:
        self.now += 1
        self.clock_value = self.now
        on_purpose = "limit" if getattr(self.query, "limit", 0) > limits.pay_query_limit_max else ""
        try:
            got: list[Any] | None = call()
        except PaymentsError as exc:
            got = None
            refusal = exc.message
        if self.query_row is not None:  # the filter row: the engine took the filter
            self.out(self.query_row, got is not None, "" if got is not None else f"refused: {refusal}", on_purpose)
        k = 0
        found_ids = {getattr(o, "id", None) for o in got or []}
        for e in self.pending:
            if got is None:
                self.out(e.row, False, f"refused: {refusal}", on_purpose)
            elif e.item is None:
                ok = e.absent_id not in found_ids
                self.out(e.row, ok, "" if ok else "present, expected absent")
            else:
                actual = got[k] if k < len(got) else None
                k += 1
                why = _differs(e.item, actual)
                self.out(e.row, why == "", why)
        expected = sum(1 for e in self.pending if e.item is not None)
        ok = got is not None and len(got) == expected
        why = "" if ok else f"answered {None if got is None else len(got)}, expected {expected}"
        self.out(row, ok, why, on_purpose if got is None else "")
        self._pulse()

    def commit_lookup_accounts(self, row: dict[str, Any]) -> None:
        self._answer(row, lambda: self.engine.lookup_accounts(self.events))

    def commit_lookup_transfers(self, row: dict[str, Any]) -> None:
        self._answer(row, lambda: self.engine.lookup_transfers(self.events))

    def commit_get_account_transfers(self, row: dict[str, Any]) -> None:
        self._answer(row, lambda: self.engine.get_account_transfers(self.query))

    def commit_get_account_balances(self, row: dict[str, Any]) -> None:
        self._answer(row, lambda: self.engine.get_account_balances(self.query))

    def commit_query_accounts(self, row: dict[str, Any]) -> None:
        self._answer(row, lambda: self.engine.query_accounts(self.query))

    def commit_query_transfers(self, row: dict[str, Any]) -> None:
        self._answer(row, lambda: self.engine.query_transfers(self.query))

    def commit_get_change_events(self, row: dict[str, Any]) -> None:
        assert self.query_row is not None
        for r in (self.query_row, *(e.row for e in self.pending), row):
            self.out(r, False, "get_change_events is not offered", "change_events")


def _differs(expected: Any, actual: Any) -> str:
    if actual is None:
        return "missing from the answer"
    if isinstance(actual, AccountBalance):
        fields: tuple[str, ...] = ("debits_pending", "debits_posted", "credits_pending", "credits_posted")
    elif isinstance(actual, Account):
        fields = ACCOUNT_FIELDS
    else:
        fields = TRANSFER_FIELDS
    diffs = [
        f"{k} {getattr(actual, k)} != {expected.get(k, 0)}" for k in fields if getattr(actual, k) != expected.get(k, 0)
    ]
    if expected.get("timestamp") is not None and actual.timestamp != expected["timestamp"]:
        diffs.append(f"timestamp {actual.timestamp} != {expected['timestamp']}")
    return "; ".join(diffs)


def run_tables(tables: list[dict[str, Any]], root: Path) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for k, table in enumerate(tables):
        run = TableRun(f"{table['test']} #{k}", root / f"table-{k}")
        try:
            for row in table["rows"]:
                run.row(row)
        finally:
            run.close()
        outcomes += run.outcomes
    return outcomes


def main() -> None:
    from tigerbeetle_tables import SOURCE_COMMIT, TABLES

    root = Path(tempfile.mkdtemp(prefix="liangcao-tb-parity-"))
    try:
        outcomes = run_tables(TABLES, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for o in outcomes:
        if not o.agrees:
            print(f"line {o.line:5d} {o.action:28s} {o.deliberate or 'UNEXPLAINED':14s} {o.detail}  [{o.table}]")
    print(summary(outcomes, SOURCE_COMMIT))


def summary(outcomes: list[Outcome], commit: str) -> str:
    agree = sum(o.agrees for o in outcomes)
    kinds = {k: sum(o.deliberate == k for o in outcomes) for k in DELIBERATE}
    unexplained = sum(not o.agrees and not o.deliberate for o in outcomes)
    tables = {o.table for o in outcomes}
    whole = len(tables - {o.table for o in outcomes if not o.agrees})
    differ = ", ".join(f"{n} {k}" for k, n in kinds.items())
    return (
        f"TigerBeetle {commit[:12]} state-machine tables: {agree} / {len(outcomes)} rows agree "
        f"({whole} / {len(tables)} tables entirely); deliberate differences: {differ}; unexplained: {unexplained}"
    )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
