"""The PostgreSQL backend: the same rules (the same ``Machine``), the state in PostgreSQL tables.

Each batch is one PostgreSQL transaction. It takes the row lock on ``pay_meta`` first, so batches are
applied one at a time (single writer, as in the embedded engine), loads exactly the rows the batch can
touch (its ids, the pending transfers it names, the accounts of both, and the pending transfers due to
expire), runs the shared state machine over them, and writes back what the machine lists as changed. The
results are returned after COMMIT, so with ``synchronous_commit`` on nothing is acknowledged before it is
durable. u128 values are ``numeric(39,0)``; timestamps are engine nanoseconds.

``pay_meta.format`` records the rules the data was written under. A database of format 1 (before
TigerBeetle parity) is converted in place when opened, in one transaction: the closed flag moves to
TigerBeetle's bit and the remembered failures that the current rules forget (every account failure, every
transfer failure that is not transient) are deleted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import psycopg
from psycopg.types.numeric import IntLoader

from liangcao.codes import Code
from liangcao.payments.engine import PaymentsError, check_batch, check_filter, check_ids, check_query
from liangcao.payments.machine import Changes, Machine, account_filter_valid, query_filter_valid
from liangcao.payments.types import (
    NS_PER_S,
    TRANSIENT_TRANSFER_FAILURES,
    Account,
    AccountBalance,
    AccountFilter,
    AccountFlags,
    QueryFilter,
    Transfer,
    TransferFlags,
    TransferStatus,
    check_accounts,
    check_transfers,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pay_meta (k text PRIMARY KEY, v numeric(39,0) NOT NULL);
INSERT INTO pay_meta VALUES ('last_timestamp', 0) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS pay_accounts (
    id numeric(39,0) PRIMARY KEY, ledger bigint NOT NULL, code integer NOT NULL, flags integer NOT NULL,
    debits_pending numeric(39,0) NOT NULL, debits_posted numeric(39,0) NOT NULL,
    credits_pending numeric(39,0) NOT NULL, credits_posted numeric(39,0) NOT NULL,
    user_data_128 numeric(39,0) NOT NULL, user_data_64 numeric(20,0) NOT NULL, user_data_32 bigint NOT NULL,
    timestamp numeric(20,0) NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS pay_transfers (
    id numeric(39,0) PRIMARY KEY, debit_account_id numeric(39,0) NOT NULL, credit_account_id numeric(39,0) NOT NULL,
    amount numeric(39,0) NOT NULL, ledger bigint NOT NULL, code integer NOT NULL, flags integer NOT NULL,
    pending_id numeric(39,0) NOT NULL, timeout bigint NOT NULL, user_data_128 numeric(39,0) NOT NULL,
    user_data_64 numeric(20,0) NOT NULL, user_data_32 bigint NOT NULL, timestamp numeric(20,0) NOT NULL UNIQUE,
    status smallint, expires_at numeric(21,0), request bytea);
CREATE INDEX IF NOT EXISTS pay_transfers_debit ON pay_transfers (debit_account_id, timestamp);
CREATE INDEX IF NOT EXISTS pay_transfers_credit ON pay_transfers (credit_account_id, timestamp);
CREATE INDEX IF NOT EXISTS pay_transfers_due ON pay_transfers (expires_at) WHERE status = 1;
CREATE TABLE IF NOT EXISTS pay_failed (
    kind smallint NOT NULL, id numeric(39,0) NOT NULL, code integer NOT NULL, request bytea NOT NULL,
    PRIMARY KEY (kind, id));
CREATE INDEX IF NOT EXISTS pay_accounts_timestamp ON pay_accounts (timestamp);
CREATE TABLE IF NOT EXISTS pay_history (
    account_id numeric(39,0) NOT NULL, timestamp numeric(20,0) NOT NULL,
    debits_pending numeric(39,0) NOT NULL, debits_posted numeric(39,0) NOT NULL,
    credits_pending numeric(39,0) NOT NULL, credits_posted numeric(39,0) NOT NULL,
    PRIMARY KEY (account_id, timestamp));
INSERT INTO pay_meta VALUES ('format', 1) ON CONFLICT DO NOTHING;
"""
FORMAT = 2
_MIGRATE_FROM_1 = f"""
UPDATE pay_accounts SET flags = (flags & ~16) | 32 WHERE flags & 16 <> 0;
DELETE FROM pay_failed WHERE kind = 1 OR code NOT IN ({", ".join(str(c) for c in sorted(TRANSIENT_TRANSFER_FAILURES))});
UPDATE pay_transfers SET request = NULL WHERE request IS NOT NULL;
UPDATE pay_meta SET v = {FORMAT} WHERE k = 'format';
"""

_ACCOUNT_COLS = (
    "id, ledger, code, flags, debits_pending, debits_posted, credits_pending, credits_posted, "
    "user_data_128, user_data_64, user_data_32, timestamp"
)
_TRANSFER_COLS = (
    "id, debit_account_id, credit_account_id, amount, ledger, code, flags, pending_id, timeout, "
    "user_data_128, user_data_64, user_data_32, timestamp"
)
_KIND_TRANSFER = 2  # pay_failed.kind 1 (accounts) is no longer written
_HISTORY = int(AccountFlags.HISTORY)
_PENDING = int(TransferFlags.PENDING)
_ST_PENDING = int(TransferStatus.PENDING)
_enc = msgspec.json.encode
_dec_transfers = msgspec.json.Decoder(list[Transfer])
_dec_accounts = msgspec.json.Decoder(list[Account])


def _account(row: Sequence[Any]) -> Account:
    i, ledger, code, flags, dp, dpo, cp, cpo, u128, u64, u32, ts = row
    return Account(i, ledger, code, flags, dp, dpo, cp, cpo, u128, u64, u32, ts)


def _transfer(row: Sequence[Any]) -> Transfer:
    return Transfer(*row[:13])


class PostgresBackend:
    """Payments on PostgreSQL with the embedded engine's semantics; one connection, one batch at a time."""

    def __init__(self, dsn: str, *, clock: Callable[[], int] = time.time_ns) -> None:
        self.clock = clock
        try:
            self.conn = psycopg.connect(dsn)
        except psycopg.OperationalError as exc:
            raise PaymentsError(Code.NOT_READY, f"cannot reach PostgreSQL: {exc}") from None
        self.conn.adapters.register_loader("numeric", IntLoader)
        with self.conn.transaction():
            self.conn.execute(_SCHEMA)
            row = self.conn.execute("SELECT v FROM pay_meta WHERE k = 'format' FOR UPDATE").fetchone()
            assert row is not None
            if int(row[0]) == 1:
                self.conn.execute(_MIGRATE_FROM_1)
            elif int(row[0]) != FORMAT:
                raise PaymentsError(Code.NOT_READY, f"the payments tables are of format {row[0]}, newer than {FORMAT}")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> PostgresBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reset(self) -> None:
        """Delete every account and transfer (tests and benchmarks only)."""
        with self.conn.transaction():
            self.conn.execute(
                "TRUNCATE pay_accounts, pay_transfers, pay_failed, pay_history; "
                "UPDATE pay_meta SET v = 0 WHERE k = 'last_timestamp'"
            )

    # ------------------------------------------------------------------ batches

    def create_accounts(self, accounts: Sequence[Account]) -> list[int]:
        check_batch(accounts, "accounts")
        return self._batch(list(accounts), accounts=True)

    def create_transfers(self, transfers: Sequence[Transfer]) -> list[int]:
        check_batch(transfers, "transfers")
        return self._batch(list(transfers), accounts=False)

    def pulse(self) -> None:
        self._batch([], accounts=False, pulse=True)

    def pulse_if_due(self) -> bool:
        """Pulse only if some pending transfer's timeout has passed by the clock (the service calls this)."""
        q = "SELECT 1 FROM pay_transfers WHERE status = 1 AND expires_at <= %s LIMIT 1"
        due = bool(self._read(q, [self.clock()]))
        if due:
            self.pulse()
        return due

    def _batch(self, events: Any, *, accounts: bool, pulse: bool = False) -> list[int]:
        try:
            # The same copy-through-JSON as the embedded engine, so both refuse the same bad values.
            events = (_dec_accounts if accounts else _dec_transfers).decode(_enc(events))
        except (msgspec.ValidationError, TypeError) as exc:
            raise PaymentsError(Code.INVALID_ARGUMENT, f"bad batch: {exc}") from None
        wrong = check_accounts(events) if accounts else check_transfers(events)
        if wrong is not None:
            raise PaymentsError(Code.INVALID_ARGUMENT, f"bad batch, nothing applied: {wrong}")
        try:
            with self.conn.transaction():
                cur = self.conn.cursor()
                row = cur.execute("SELECT v FROM pay_meta WHERE k = 'last_timestamp' FOR UPDATE").fetchone()
                assert row is not None
                last = int(row[0])
                ts = max(self.clock(), last + 1)
                m = Machine(index=False, owns_events=True)
                m.last_timestamp = last
                m.changes = Changes()
                if accounts:
                    self._load_accounts_batch(cur, m, events)
                    results = m.create_accounts(events, ts)
                else:
                    self._load_transfers_batch(cur, m, events, ts)
                    if pulse:
                        m.pulse(ts)
                        results = []
                    else:
                        results = m.create_transfers(events, ts)
                self._write(cur, m)
                cur.execute("UPDATE pay_meta SET v = %s WHERE k = 'last_timestamp'", [m.last_timestamp])
        except psycopg.Error as exc:
            raise PaymentsError(Code.NOT_READY, f"PostgreSQL refused the batch: {exc}") from None
        return results

    def _load_accounts_batch(self, cur: psycopg.Cursor[Any], m: Machine, events: list[Account]) -> None:
        ids = [e.id for e in events]
        for r in cur.execute(f"SELECT {_ACCOUNT_COLS} FROM pay_accounts WHERE id = ANY(%s)", [ids]):
            m.accounts[r[0]] = _account(r)
        self._load_timestamps(cur, m, events)
        self._loaded = {a.id: _balances(a) for a in m.accounts.values()}

    def _load_timestamps(self, cur: psycopg.Cursor[Any], m: Machine, events: list[Any]) -> None:
        """What the imported-event checks read: the newest timestamps, and which of the batch's are taken."""
        m.taken_timestamps = set()
        stamps = [e.timestamp for e in events if e.timestamp]
        if not stamps:
            return
        row = cur.execute(
            "SELECT (SELECT coalesce(max(timestamp), 0) FROM pay_accounts), "
            "(SELECT coalesce(max(timestamp), 0) FROM pay_transfers)"
        ).fetchone()
        assert row is not None
        m.last_account_timestamp, m.last_transfer_timestamp = int(row[0]), int(row[1])
        q = (
            "SELECT timestamp FROM pay_accounts WHERE timestamp = ANY(%(t)s) "
            "UNION SELECT timestamp FROM pay_transfers WHERE timestamp = ANY(%(t)s)"
        )
        m.taken_timestamps = {int(r[0]) for r in cur.execute(q, {"t": stamps})}

    def _load_transfers_batch(self, cur: psycopg.Cursor[Any], m: Machine, events: list[Transfer], ts: int) -> None:
        ids = [e.id for e in events]
        pending_ids = [e.pending_id for e in events if e.pending_id]
        cols = f"{_TRANSFER_COLS}, status, expires_at"
        rows = cur.execute(f"SELECT {cols} FROM pay_transfers WHERE id = ANY(%s)", [ids + pending_ids]).fetchall()
        rows += cur.execute(
            f"SELECT {cols} FROM pay_transfers WHERE status = 1 AND expires_at <= %s ORDER BY expires_at, timestamp",
            [ts],
        ).fetchall()
        account_ids = {e.debit_account_id for e in events}
        account_ids |= {e.credit_account_id for e in events}
        for r in rows:
            t = _transfer(r)
            m.transfers[t.id] = t
            status, expires_at = r[13], r[14]
            if status is not None:
                m.status[t.id] = status
            if status == _ST_PENDING and expires_at is not None:
                m.expiries.append((expires_at, t.timestamp, t.id))
            account_ids.add(t.debit_account_id)
            account_ids.add(t.credit_account_id)
        m.expiries = sorted(set(m.expiries))
        q = f"SELECT {_ACCOUNT_COLS} FROM pay_accounts WHERE id = ANY(%s)"
        for r in cur.execute(q, [list(account_ids)]):
            a = _account(r)
            m.accounts[a.id] = a
            if a.flags & _HISTORY:
                m.history[a.id] = []
        q = "SELECT id FROM pay_failed WHERE kind = %s AND id = ANY(%s)"
        m.failed = {r[0] for r in cur.execute(q, [_KIND_TRANSFER, ids])}
        self._load_timestamps(cur, m, events)
        self._loaded = {a.id: _balances(a) for a in m.accounts.values()}

    def _write(self, cur: psycopg.Cursor[Any], m: Machine) -> None:
        c = m.changes
        assert c is not None
        new_accounts = {a.id for a in c.accounts}
        if c.accounts:
            with cur.copy(f"COPY pay_accounts ({_ACCOUNT_COLS}) FROM STDIN") as cp:
                for a in c.accounts:
                    cp.write_row(msgspec.structs.astuple(m.accounts[a.id]))
        changed = [
            (a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted, a.flags, a.id)
            for a in m.accounts.values()
            if a.id not in new_accounts and _balances(a) != self._loaded.get(a.id)
        ]
        if changed:
            cur.executemany(
                "UPDATE pay_accounts SET debits_pending = %s, debits_posted = %s, credits_pending = %s, "
                "credits_posted = %s, flags = %s WHERE id = %s",
                changed,
            )
        new_ids = set()
        if c.transfers:
            with cur.copy(f"COPY pay_transfers ({_TRANSFER_COLS}, status, expires_at) FROM STDIN") as cp:
                for t in c.transfers:
                    new_ids.add(t.id)
                    pending = t.flags & _PENDING
                    expires = t.timestamp + t.timeout * NS_PER_S if pending and t.timeout else None
                    cp.write_row((*msgspec.structs.astuple(t), c.status.get(t.id) if pending else None, expires))
        updates = [(s, i) for i, s in c.status.items() if i not in new_ids]
        if updates:
            cur.executemany("UPDATE pay_transfers SET status = %s WHERE id = %s", updates)
        failed = [(_KIND_TRANSFER, i, 0, b"") for i in c.failed_transfers]
        if failed:
            cur.executemany("INSERT INTO pay_failed (kind, id, code, request) VALUES (%s, %s, %s, %s)", failed)
        if c.history:
            with cur.copy(
                "COPY pay_history (account_id, timestamp, debits_pending, debits_posted, credits_pending, "
                "credits_posted) FROM STDIN"
            ) as cp:
                for account_id, b in c.history:
                    cp.write_row((account_id, *msgspec.structs.astuple(b)))

    # ------------------------------------------------------------------ queries

    def lookup_accounts(self, ids: Sequence[int]) -> list[Account]:
        check_ids(ids)
        q = f"SELECT {_ACCOUNT_COLS} FROM pay_accounts WHERE id = ANY(%s)"
        found = {r[0]: _account(r) for r in self._read(q, [list(ids)])}
        return [found[i] for i in ids if i in found]

    def lookup_transfers(self, ids: Sequence[int]) -> list[Transfer]:
        check_ids(ids)
        q = f"SELECT {_TRANSFER_COLS} FROM pay_transfers WHERE id = ANY(%s)"
        found = {r[0]: _transfer(r) for r in self._read(q, [list(ids)])}
        return [found[i] for i in ids if i in found]

    def transfer_status(self, transfer_id: int) -> int | None:
        rows = self._read("SELECT status FROM pay_transfers WHERE id = %s", [transfer_id])
        return rows[0][0] if rows else None

    def get_account_transfers(self, f: AccountFilter) -> list[Transfer]:
        check_filter(f)
        if not account_filter_valid(f):
            return []
        where, params = _account_where(f, "")
        q = (
            f"SELECT {_TRANSFER_COLS} FROM pay_transfers WHERE {where} "
            f"ORDER BY timestamp {'DESC' if f.reversed else 'ASC'} LIMIT %(n)s"
        )
        return [_transfer(r) for r in self._read(q, params)]

    def get_account_balances(self, f: AccountFilter) -> list[AccountBalance]:
        check_filter(f)
        if not account_filter_valid(f):
            return []
        where, params = _account_where(f, "t.")
        q = (
            "SELECT h.timestamp, h.debits_pending, h.debits_posted, h.credits_pending, h.credits_posted "
            "FROM pay_history h JOIN pay_transfers t ON t.timestamp = h.timestamp "
            f"WHERE h.account_id = %(a)s AND {where} "
            f"ORDER BY h.timestamp {'DESC' if f.reversed else 'ASC'} LIMIT %(n)s"
        )
        return [AccountBalance(*r) for r in self._read(q, params)]

    def query_accounts(self, q: QueryFilter) -> list[Account]:
        check_query(q)
        if not query_filter_valid(q):
            return []
        where, params = _query_where(q)
        sql = f"SELECT {_ACCOUNT_COLS} FROM pay_accounts WHERE {where} ORDER BY timestamp {_order(q)} LIMIT %(n)s"
        return [_account(r) for r in self._read(sql, params)]

    def query_transfers(self, q: QueryFilter) -> list[Transfer]:
        check_query(q)
        if not query_filter_valid(q):
            return []
        where, params = _query_where(q)
        sql = f"SELECT {_TRANSFER_COLS} FROM pay_transfers WHERE {where} ORDER BY timestamp {_order(q)} LIMIT %(n)s"
        return [_transfer(r) for r in self._read(sql, params)]

    def _read(self, q: str, params: Any) -> list[Any]:
        try:
            with self.conn.transaction():
                return self.conn.execute(q, params).fetchall()
        except psycopg.Error as exc:
            raise PaymentsError(Code.NOT_READY, f"PostgreSQL refused the query: {exc}") from None


def _account_where(f: AccountFilter, prefix: str) -> tuple[str, dict[str, Any]]:
    sides = []
    if f.debits:
        sides.append(f"{prefix}debit_account_id = %(a)s")
    if f.credits:
        sides.append(f"{prefix}credit_account_id = %(a)s")
    where = [f"({' OR '.join(sides)})", f"{prefix}timestamp >= %(lo)s", f"(%(hi)s = 0 OR {prefix}timestamp <= %(hi)s)"]
    params: dict[str, Any] = {"a": f.account_id, "lo": f.timestamp_min, "hi": f.timestamp_max, "n": f.limit}
    for name in ("user_data_128", "user_data_64", "user_data_32", "code"):
        value = getattr(f, name)
        if value:
            where.append(f"{prefix}{name} = %({name})s")
            params[name] = value
    return " AND ".join(where), params


def _query_where(q: QueryFilter) -> tuple[str, dict[str, Any]]:
    where = ["timestamp >= %(lo)s", "(%(hi)s = 0 OR timestamp <= %(hi)s)"]
    params: dict[str, Any] = {"lo": q.timestamp_min, "hi": q.timestamp_max, "n": q.limit}
    for name in ("user_data_128", "user_data_64", "user_data_32", "ledger", "code"):
        value = getattr(q, name)
        if value:
            where.append(f"{name} = %({name})s")
            params[name] = value
    return " AND ".join(where), params


def _order(q: QueryFilter) -> str:
    return "DESC" if q.reversed else "ASC"


def _balances(a: Account) -> tuple[int, int, int, int, int]:
    return (a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted, a.flags)
