"""``CreditService``: installment plans, consumer credit lines and merchant loans over the payments core.

Theory of operation
-------------------
**Money lives only in the payments core** (``Engine`` or ``PostgresBackend``, ledger 156, CNY fen). The
service keeps its records (plans, shoppers, offers, loans) in a SQLite file (WAL, synchronous FULL) beside
the core, and never a balance the core does not also hold.

Accounts (ids derived from names, ``account_id``; codes ``CoreAccount``):

==================  ========================================================================================
``lines``           the lender's credit-line control account: debited when a line is granted
``line/<shopper>``  the shopper's line, flag ``debits_must_not_exceed_credits``: credited with the line,
                    debited by purchases, credited by principal repaid. So available = credits − debits =
                    line − outstanding, and **the core itself refuses a purchase over the line**
``wallet/<s>``      the shopper's money (``debits_must_not_exceed_credits``): repayments come from it
``merchant/<m>``    the merchant's settlement account (or the one registered for it): paid at checkout,
                    pays the merchant's fee, refunds and loan repayments; sales history is read from it
``fee-income``      installment fees (shopper's or merchant's)      ``penalty-income``   penalty interest
``loan-capital``    the lender's merchant-loan capital              ``loan-interest``    loan interest
``bank``            money entering from outside (wallet deposits)   ``buyers``           sales clearing
==================  ========================================================================================

**Exactly once.** Every money operation is written first to the ``ops`` table as an intent (a sequence
number, its transfers, the records it will write), then sent to the core as one linked chain (all or
nothing) whose transfer ids are derived from the sequence number, then finished: the records written and
the intent marked done (or failed, records untouched). A crash in between is finished when the service
opens: the same transfers are sent again, the core answers ``exists`` for those it applied, nothing is
charged twice. Requests that carry an id (``request_id``, ``refund_id``, settlement and sale ids, the order
id of a checkout) answer their first result again when repeated, and are refused (``REQUEST_CONFLICT``) when
repeated with other parameters.

**Durability**: the intent is fsynced before the core sees the chain; the finish is not fsynced on its
own (a finish lost to a power cut leaves the intent pending, and it is finished again on open), so an
operation costs one SQLite fsync and the core's.

**One writer**: a lock serialises operations, as the core's own writer does; the SQLite file is held
exclusively, so a second service (another process) on the same records is refused at open.

**Time** is business days from an injectable clock (``clock() -> day``); ``run_day`` accrues penalty and
interest, marks overdue plans and loans, freezes lines and collects due installments from wallets.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from enum import IntEnum
from pathlib import Path
from typing import Any, Protocol, TypeVar

import msgspec

from liangcao.credit import loans as L
from liangcao.credit import plans as P
from liangcao.credit.errors import (
    CreditCode,
    CreditError,
    check_id,
    check_money,
    history_plan_fen_min,
    history_transfers_max,
    installment_amount_fen_max,
    line_fen_max,
    list_rows_max,
    loan_amount_fen_max,
    money_fen_max,
    rate_bp_max,
    ref_len_max,
    share_bp_max,
)
from liangcao.errors import InvariantViolation, StoreError
from liangcao.payments.types import (
    APPLIED_TRANSFER_RESULTS,
    Account,
    AccountFilter,
    AccountFlags,
    CreateAccountResult,
    CreateTransferResult,
    Transfer,
    TransferFlags,
)

LEDGER_CNY = 156
#: Transfers read per query of a merchant's sales flow.
_PAGE = 8_000
NS_PER_DAY = 86_400 * 1_000_000_000
_T = TypeVar("_T")


class Core(Protocol):
    """What the service needs of the payments core (``Engine`` and ``PostgresBackend`` both are one)."""

    def create_accounts(self, accounts: list[Account]) -> list[int]: ...
    def create_transfers(self, transfers: list[Transfer]) -> list[int]: ...
    def lookup_accounts(self, ids: list[int]) -> list[Account]: ...
    def lookup_transfers(self, ids: list[int]) -> list[Transfer]: ...
    def get_account_transfers(self, f: AccountFilter) -> list[Transfer]: ...


class CoreAccount(IntEnum):
    """Chart of accounts of the credit service (payments-core account codes)."""

    LINES = 3401
    LINE = 3402
    WALLET = 3403
    MERCHANT = 3404
    FEE_INCOME = 3405
    PENALTY_INCOME = 3406
    LOAN_CAPITAL = 3407
    LOAN_INTEREST = 3408
    BANK = 3409
    BUYERS = 3410


class CoreTransfer(IntEnum):
    """Why money moved (payments-core transfer codes). ``SALE``/``SALE_REFUND``/``CHARGEBACK`` are the
    convention by which a merchant account's sales flow is read for scoring."""

    LINE_GRANT = 3451
    LINE_CUT = 3452
    LINE_HOLD = 3465  # pending: holds a frozen line
    PURCHASE = 3453
    MERCHANT_FEE = 3454
    REPAY_PRINCIPAL = 3455
    REPAY_FEE = 3456
    REPAY_PENALTY = 3457
    REFUND_TO_LINE = 3458
    REFUND_TO_SHOPPER = 3459
    FEE_RETURN = 3460
    DEPOSIT = 3461
    DRAWDOWN = 3462
    LOAN_INTEREST = 3463
    LOAN_PRINCIPAL = 3464
    SALE = 3470
    SALE_REFUND = 3471
    CHARGEBACK = 3472


def account_id(kind: str, name: str = "") -> int:
    """The core account id of ``kind``/``name``: 128 bits of BLAKE2b, never 0 or 2^128-1."""
    digest = hashlib.blake2b(f"liangcao.credit/{kind}/{name}".encode(), digest_size=16).digest()
    value = int.from_bytes(digest, "big")
    return value if 0 < value < (1 << 128) - 1 else 1


def _transfer_id(*parts: object) -> int:
    # Joined by a space, which no id holds: ("sale", "a/b", "c") and ("sale", "a", "b/c") differ.
    digest = hashlib.blake2b(" ".join(map(str, parts)).encode(), digest_size=16, person=b"credit-xfer").digest()
    value = int.from_bytes(digest, "big")
    return value if 0 < value < (1 << 128) - 1 else 1


@contextlib.contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """No cyclic garbage collection for the length of a scoring scan. The scan makes a short-lived tuple
    per transfer (hundreds of thousands for a busy merchant's year), and each burst of them sets off
    collections that walk every object the process holds (the engine's whole history): measured, that
    doubles a decision's time. Nothing the scan makes is cyclic, and collection resumes right after."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _key(*parts: object) -> str:
    """A request's key: its parts joined by a space, which no id holds (so "p/x" + "y" is not "p" + "x/y")."""
    return " ".join(map(str, parts))


# ------------------------------------------------------------------------------------------------ clocks


def wall_days() -> int:
    """Today as days since 1970-01-01 (UTC)."""
    return time.time_ns() // NS_PER_DAY


class ManualDays:
    """An injectable clock of business days that moves only when told (tests, rehearsals, the demo)."""

    def __init__(self, day: int = 20_000) -> None:
        self.day = day
        self._lock = threading.Lock()

    def __call__(self) -> int:
        return self.day

    def advance(self, days: int = 1) -> int:
        if type(days) is not int or days < 0:
            raise CreditError(CreditCode.BAD_DAY, f"days must be a non-negative integer, got {days!r}")
        with self._lock:
            self.day += days
            return self.day


# ------------------------------------------------------------------------------------------ line policy


class ShopperHistory(msgspec.Struct, kw_only=True):
    """What the line rules see of a shopper (the risk engine's view joins here later)."""

    plans_on_time: int = 0
    plans_late: int = 0
    overdue_now: bool = False


class LinePolicy(Protocol):
    """Sets a shopper's line; the seam through which the risk engine will decide it."""

    name: str

    def line_fen(self, history: ShopperHistory) -> int: ...


class RuleLinePolicy:
    """The plain deterministic rule set used until the risk engine exists: 2,000.00 yuan to start, +500.00
    per plan paid off on time, -1,000.00 per plan that went overdue, at least 500.00, at most ``line_fen_max``."""

    name = "lines/1"

    def __init__(
        self,
        base_fen: int = 200_000,
        per_on_time_fen: int = 50_000,
        per_late_fen: int = 100_000,
        floor_fen: int = 50_000,
    ) -> None:
        self.base_fen, self.per_on_time_fen, self.per_late_fen, self.floor_fen = (
            base_fen,
            per_on_time_fen,
            per_late_fen,
            floor_fen,
        )

    def line_fen(self, history: ShopperHistory) -> int:
        line = self.base_fen + history.plans_on_time * self.per_on_time_fen - history.plans_late * self.per_late_fen
        return min(max(line, self.floor_fen), line_fen_max)


# ---------------------------------------------------------------------------------------------- records


class Shopper(msgspec.Struct, kw_only=True):
    shopper: str
    line_fen: int
    plans_on_time: int = 0
    plans_late: int = 0
    policy: str = ""
    hold_id: int = 0  # the pending transfer that holds the line while it is frozen (0: not frozen)
    freezes: int = 0


class LineView(msgspec.Struct, kw_only=True):
    """A shopper's line as the core holds it: available = line − outstanding."""

    shopper: str
    line_fen: int
    available_fen: int  # what a purchase may use now: line − outstanding − held
    outstanding_fen: int
    held_fen: int  # held by the core while the line is frozen
    frozen: bool
    wallet_fen: int
    plans_on_time: int
    plans_late: int
    policy: str


class StatementRow(msgspec.Struct, kw_only=True):
    plan_id: str
    merchant: str
    state: str
    due_now_fen: int  # owed on periods due today or earlier, penalty included
    next_due_day: int  # 0 when nothing more falls due
    next_due_fen: int
    owed_fen: int  # everything still owed on the plan (early repayment pays this)
    periods: list[P.Period]


class Statement(msgspec.Struct, kw_only=True):
    shopper: str
    day: int
    line: LineView
    due_now_fen: int
    owed_fen: int
    plans: list[StatementRow]


class Offer(msgspec.Struct, kw_only=True):
    offer_id: str
    merchant: str
    day: int
    valid_until: int
    approved: bool
    score: int
    limit_fen: int
    daily_rate_bp: int
    share_bp: int
    reasons: list[str]
    rules: str
    features: L.Features
    decided_us: int  # how long the decision took, microseconds
    drawn: bool = False


class Deduction(msgspec.Struct, kw_only=True):
    """What a settlement paid towards the merchant's loan (0 when no loan runs)."""

    settlement_id: str
    merchant: str
    loan_id: str
    settlement_fen: int
    deducted_fen: int
    interest_fen: int
    principal_fen: int


class LoanBook(msgspec.Struct, kw_only=True):
    """The platform's view of the merchant-loan book (figures in fen)."""

    day: int
    loans: int
    active: int
    overdue: int
    repaid: int
    drawn_fen: int
    outstanding_fen: int
    interest_accrued_fen: int
    overdue_fen: int
    principal_repaid_fen: int
    interest_paid_fen: int


class DayReport(msgspec.Struct, kw_only=True):
    day: int
    plans_overdue: int
    lines_frozen: int
    collected_fen: int
    loans_overdue: int


_SHORT_TEXT = {
    CreditCode.LINE_EXCEEDED: "the purchase is over the shopper's available credit line",
    CreditCode.FUNDS_SHORT: "the shopper's wallet holds less than the repayment",
    CreditCode.MERCHANT_FUNDS_SHORT: "the merchant's account holds less than it must pay",
}
_FEE_PAYERS = {"shopper": P.FeePayer.SHOPPER, "merchant": P.FeePayer.MERCHANT}
_OPEN_PLAN = (int(P.PlanState.ACTIVE), int(P.PlanState.OVERDUE))
_OPEN_LOAN = (int(L.LoanState.ACTIVE), int(L.LoanState.OVERDUE))
_PENDING, _DONE, _FAILED = 0, 1, 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS records(kind TEXT NOT NULL, key TEXT NOT NULL, owner TEXT NOT NULL,
    state INTEGER NOT NULL, body BLOB NOT NULL, PRIMARY KEY(kind, key));
CREATE INDEX IF NOT EXISTS records_owner ON records(kind, owner, state);
CREATE INDEX IF NOT EXISTS records_state ON records(kind, state);
CREATE TABLE IF NOT EXISTS ops(seq INTEGER PRIMARY KEY AUTOINCREMENT, request TEXT UNIQUE, state INTEGER NOT NULL,
    transfers BLOB NOT NULL, records BLOB NOT NULL, result BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class _Rec(msgspec.Struct, array_like=True):
    kind: str
    key: str
    owner: str
    state: int
    body: bytes


class _Leg(msgspec.Struct, array_like=True):
    debit: int
    credit: int
    amount: int
    code: int
    flags: int = 0
    pending_id: int = 0
    id: int = 0  # 0: derived from the operation's sequence number


def _counts_on_time(plan: P.Plan, day: int) -> bool:
    """Whether a plan paid off without going overdue is repayment history that grows the line: one of at
    least ``history_plan_fen_min``, repaid up to a due day (not bought and repaid at once), and not closed
    by a refund. Otherwise buying 1 fen on installments and repaying it at once, again and again, would
    raise a line to its maximum in minutes."""
    return (
        plan.principal >= history_plan_fen_min
        and plan.refunded == 0
        and bool(plan.schedule)
        and day >= plan.schedule[0].due_day
    )


def fee_payer_of(value: object) -> P.FeePayer:
    if isinstance(value, P.FeePayer):
        return value
    if isinstance(value, str) and value in _FEE_PAYERS:
        return _FEE_PAYERS[value]
    raise CreditError(CreditCode.BAD_FEE_PAYER, f"fee_payer must be 'shopper' or 'merchant', got {value!r}")


class CreditService:
    """Installments, credit lines and merchant loans; thread-safe (one operation at a time).

    Every public method either completes (money moved in the core, records stored) or raises
    ``CreditError`` having changed nothing. ``Fault``s (the core or the disk failing) propagate.
    """

    def __init__(
        self,
        core: Core,
        path: Path | str,
        *,
        clock: Callable[[], int] = wall_days,
        fee_table: dict[int, int] | None = None,
        penalty_bp_per_day: int = P.DEFAULT_PENALTY_BP_PER_DAY,
        line_policy: LinePolicy | None = None,
        ledger: int = LEDGER_CNY,
        fsync: bool = True,
    ) -> None:
        """``fsync=False`` skips SQLite's fsyncs (tests only, like the engine's own option): records then
        survive a process crash but not a power cut."""
        self.core = core
        self.clock = clock
        self.fee_table = P.check_fee_table(fee_table if fee_table is not None else P.DEFAULT_FEE_TABLE)
        if type(penalty_bp_per_day) is not int or not 0 <= penalty_bp_per_day <= rate_bp_max:
            # Penalty interest is money: an integer rate, never negative (a negative one would pay the late).
            raise CreditError(
                CreditCode.BAD_RATE_TABLE,
                f"penalty_bp_per_day must be an integer 0..{rate_bp_max}, got {penalty_bp_per_day!r}",
            )
        self.penalty_bp_per_day = penalty_bp_per_day
        self.line_policy: LinePolicy = line_policy or RuleLinePolicy()
        self.ledger = ledger
        self._lock = threading.RLock()
        self._dirty = False  # the core failed during an operation: finish its intent before the next one
        self._known: set[int] = set()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=1.0)
        # One service per database: two (two gateway processes on one file) would each read a plan, apply a
        # repayment and write it back, the core charging twice and the records counting once. The
        # connection holds the database exclusively until it closes (the OS drops it if the process dies).
        self._db.execute("PRAGMA locking_mode=EXCLUSIVE")
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._fsync = fsync
            self._db.execute("PRAGMA synchronous=FULL" if fsync else "PRAGMA synchronous=OFF")
            self._db.executescript(_SCHEMA)
        except sqlite3.OperationalError as exc:
            self._db.close()
            raise StoreError(
                CreditCode.CORE_REFUSED, f"credit records {self.path} are in use by another service: {exc}"
            ) from None
        if "params" not in {row[1] for row in self._db.execute("PRAGMA table_info(ops)")}:
            # What a request asked for, so the same request id with other parameters is refused (a
            # database from before the column answers its old requests as before).
            self._db.execute("ALTER TABLE ops ADD COLUMN params TEXT NOT NULL DEFAULT ''")
        self._last_day = self._meta("day")
        # Transfer ids are derived from this folder's own random number and the operation's sequence
        # number: two credit databases over one payments core never derive the same id.
        if not self._meta("instance"):
            self._db.execute("INSERT INTO meta VALUES ('instance', ?)", (secrets.randbits(62) + 1,))
        self._instance = self._meta("instance")
        self._ensure(
            [
                ("lines", "", CoreAccount.LINES, 0),
                ("fee-income", "", CoreAccount.FEE_INCOME, 0),
                ("penalty-income", "", CoreAccount.PENALTY_INCOME, 0),
                ("loan-capital", "", CoreAccount.LOAN_CAPITAL, 0),
                ("loan-interest", "", CoreAccount.LOAN_INTEREST, 0),
                ("bank", "", CoreAccount.BANK, 0),
                ("buyers", "", CoreAccount.BUYERS, 0),
            ]
        )
        self.recovered = self._recover()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> CreditService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------- plumbing

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """The service's lock; first, an operation the core failed in the middle of (a ``Fault``: the
        engine stopped, PostgreSQL went away) is finished, so nothing is computed from records behind
        the core."""
        with self._lock:
            if self._dirty:
                self._recover()
                self._dirty = False
            yield

    def today(self) -> int:
        """The business day: the clock's, never behind the last day the service acted on."""
        day = self.clock()
        if type(day) is not int:
            raise CreditError(CreditCode.BAD_DAY, f"the clock answered {day!r}, not an integer day")
        with self._lock:
            if day > self._last_day:
                self._last_day = day
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('day', ?)", (day,))
            return self._last_day

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def _ensure(self, wanted: Sequence[tuple[str, str, int, int]]) -> None:
        """Create the accounts not yet known (idempotent in the core: ``exists`` is fine)."""
        new = [
            Account(account_id(kind, name), ledger=self.ledger, code=int(code), flags=int(flags))
            for kind, name, code, flags in wanted
            if account_id(kind, name) not in self._known
        ]
        if not new:
            return
        results = self.core.create_accounts(new)
        for account, result in zip(new, results, strict=True):
            if result not in (CreateAccountResult.OK, CreateAccountResult.EXISTS):
                raise StoreError(
                    CreditCode.CORE_REFUSED,
                    f"the payments core refused account {account.id}: {CreateAccountResult(result).name.lower()}",
                )
            self._known.add(account.id)

    def _get(self, kind: str, key: str, typ: type[_T]) -> _T | None:
        row = self._db.execute("SELECT body FROM records WHERE kind = ? AND key = ?", (kind, key)).fetchone()
        return None if row is None else msgspec.json.decode(row[0], type=typ)

    def _select(self, typ: type[_T], sql: str, params: Sequence[Any]) -> list[_T]:
        return [msgspec.json.decode(r[0], type=typ) for r in self._db.execute(sql, params)]

    def _put(self, recs: Sequence[_Rec]) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO records(kind, key, owner, state, body) VALUES (?, ?, ?, ?, ?)",
            [(r.kind, r.key, r.owner, r.state, r.body) for r in recs],
        )

    def _write(self, recs: Sequence[_Rec]) -> None:
        """Records changed without money (accrual, offers): one transaction."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._put(recs)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _replayed(self, request: str | None, typ: type[_T], params: str = "") -> _T | None:
        """The first result of ``request`` if it was done; ``REQUEST_CONFLICT`` if it asked for other
        ``params`` then (a retry must repeat its request, not reuse its id for another)."""
        if request is None:
            return None
        row = self._db.execute(
            "SELECT result, params FROM ops WHERE request = ? AND state = ?", (request, _DONE)
        ).fetchone()
        if row is None:
            return None
        if params and row[1] and row[1] != params:
            raise CreditError(
                CreditCode.REQUEST_CONFLICT,
                f"request {request.split(' ', 1)[-1]!r} was made with other parameters ({row[1]}, now {params})",
            )
        return msgspec.json.decode(row[0], type=typ)

    def _execute(
        self,
        legs: Sequence[_Leg],
        recs: Sequence[_Rec],
        result: Any,
        *,
        request: str | None = None,
        short: dict[int, CreditCode] | None = None,
        params: str = "",
    ) -> None:
        """Move ``legs`` as one linked chain and write ``recs``, exactly once (module docstring)."""
        legs = [leg for leg in legs if leg.amount > 0 or leg.flags]
        self._db.execute("BEGIN IMMEDIATE")
        try:
            cur = self._db.execute(
                "INSERT INTO ops(request, state, transfers, records, result, params) VALUES (?, ?, x'', ?, ?, ?)",
                (request, _PENDING, msgspec.json.encode(list(recs)), msgspec.json.encode(result), params),
            )
            seq = int(cur.lastrowid or 0)
            transfers = self._transfers(seq, legs)
            self._db.execute("UPDATE ops SET transfers = ? WHERE seq = ?", (msgspec.json.encode(transfers), seq))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        try:
            results = self.core.create_transfers(transfers) if transfers else []
        except BaseException:
            self._dirty = True
            raise
        self._finish(seq, transfers, results, recs, short or {})

    def _remember(self, request: str, result: Any, params: str) -> None:
        """A request done without money (nothing to move): its answer, for a retry."""
        if self._fsync:
            self._db.execute("PRAGMA synchronous=NORMAL")
        try:
            self._db.execute(
                "INSERT INTO ops(request, state, transfers, records, result, params) VALUES (?, ?, x'', ?, ?, ?)",
                (request, _DONE, b"[]", msgspec.json.encode(result), params),
            )
        finally:
            if self._fsync:
                self._db.execute("PRAGMA synchronous=FULL")

    def _transfers(self, seq: int, legs: Sequence[_Leg]) -> list[Transfer]:
        last = len(legs) - 1
        return [
            Transfer(
                leg.id or _transfer_id("op", self._instance, seq, i),
                debit_account_id=leg.debit,
                credit_account_id=leg.credit,
                amount=leg.amount,
                ledger=self.ledger,
                code=leg.code,
                flags=leg.flags | (int(TransferFlags.LINKED) if i < last else 0),
                pending_id=leg.pending_id,
                user_data_64=seq,
                user_data_32=self._last_day,
            )
            for i, leg in enumerate(legs)
        ]

    def _finish(
        self,
        seq: int,
        transfers: list[Transfer],
        results: list[int],
        recs: Sequence[_Rec],
        short: dict[int, CreditCode],
    ) -> None:
        applied = all(r in APPLIED_TRANSFER_RESULTS for r in results)
        if not applied and transfers:
            # A chain sent again after a crash: its first event answers ``exists`` and, as in TigerBeetle,
            # that fails the rest of the chain (``linked_event_failed``). It was applied if every transfer
            # of it is in the core.
            applied = len(self.core.lookup_transfers([t.id for t in transfers])) == len(transfers)
        # The finish needs no fsync of its own: if a power cut loses it, the intent (fsynced before the
        # core saw the chain) is still pending and is finished again on open; the next fsynced commit
        # makes it durable anyway (the WAL is written in order). One fsync per operation saved.
        if self._fsync:
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if applied:
                self._put(recs)
                self._db.execute("UPDATE ops SET state = ? WHERE seq = ?", (_DONE, seq))
            else:
                self._db.execute("UPDATE ops SET state = ?, request = NULL WHERE seq = ?", (_FAILED, seq))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        finally:
            if self._fsync:
                self._db.execute("PRAGMA synchronous=FULL")
        if applied:
            return
        i, why = next(
            (
                (i, r)
                for i, r in enumerate(results)
                if r not in APPLIED_TRANSFER_RESULTS and r != CreateTransferResult.LINKED_EVENT_FAILED
            ),
            (0, results[0] if results else int(CreateTransferResult.LINKED_EVENT_FAILED)),
        )
        name = CreateTransferResult(why).name.lower()
        t = transfers[i]
        if why in (CreateTransferResult.EXCEEDS_CREDITS, CreateTransferResult.ID_ALREADY_FAILED):
            code = short.get(t.debit_account_id, CreditCode.CORE_REFUSED)
            raise CreditError(code, f"{_SHORT_TEXT.get(code, 'refused')}: the payments core answered {name}")
        raise CreditError(CreditCode.CORE_REFUSED, f"the payments core refused transfer {i}: {name}")

    def _recover(self) -> int:
        """Finish the operations a crash interrupted: resend their transfers (``exists`` if applied)."""
        rows = self._db.execute("SELECT seq, transfers, records FROM ops WHERE state = ?", (_PENDING,)).fetchall()
        for seq, tbytes, rbytes in rows:
            transfers = msgspec.json.decode(tbytes, type=list[Transfer]) if tbytes else []
            recs = msgspec.json.decode(rbytes, type=list[_Rec])
            results = self.core.create_transfers(transfers) if transfers else []
            try:
                self._finish(int(seq), transfers, results, recs, {})
            except CreditError:
                continue
        return len(rows)

    @staticmethod
    def _rec(kind: str, key: str, owner: str, state: int, obj: Any) -> _Rec:
        return _Rec(kind, key, owner, state, msgspec.json.encode(obj))

    def _balance(self, acct: int) -> int:
        """credits − debits (posted and pending debits) of a core account; 0 if it does not exist."""
        found = self.core.lookup_accounts([acct])
        if not found:
            return 0
        a = found[0]
        return a.credits_posted - a.debits_posted - a.debits_pending

    # ------------------------------------------------------------------------------------ consumer side

    def quote(self, amount_fen: int, periods: int, fee_payer: str | P.FeePayer = "shopper") -> P.Plan:
        """The plan a checkout would make (nothing stored): its schedule, for the checkout page."""
        amount = check_money(amount_fen, "amount_fen", installment_amount_fen_max)
        payer = fee_payer_of(fee_payer)
        return P.make_plan("quote", "-", "-", amount, periods, payer, self.fee_table, self.today())

    def _shopper(self, shopper: str) -> Shopper:
        """The shopper's record, opening the line on first sight (grant from the lender's control account)."""
        found = self._get("shopper", shopper, Shopper)
        if found is not None:
            return found
        self._ensure(
            [
                ("line", shopper, CoreAccount.LINE, AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS),
                ("wallet", shopper, CoreAccount.WALLET, AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS),
            ]
        )
        rec = Shopper(shopper=shopper, line_fen=0, policy=self.line_policy.name)
        line = self.line_policy.line_fen(ShopperHistory())
        rec.line_fen = line
        grant = _Leg(account_id("lines"), account_id("line", shopper), line, CoreTransfer.LINE_GRANT)
        self._execute([grant], [self._rec("shopper", shopper, shopper, 0, rec)], rec, request=_key("open", shopper))
        return rec

    def merchant_account(self, merchant: str) -> int:
        """The core account a merchant is paid into (registered, or derived and created on first use)."""
        check_id(merchant, "merchant")
        with self._guard():
            found = self._get("merchant", merchant, int)
            if found is not None:
                return found
            self._ensure([("merchant", merchant, CoreAccount.MERCHANT, AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)])
            acct = account_id("merchant", merchant)
            self._write([self._rec("merchant", merchant, merchant, 0, acct)])
            return acct

    def register_merchant(self, merchant: str, account: int) -> None:
        """Pay ``merchant`` into an existing core account (the checkout gateway's), and read its sales there."""
        check_id(merchant, "merchant")
        if type(account) is not int or not self.core.lookup_accounts([account]):
            raise CreditError(CreditCode.UNKNOWN_MERCHANT, f"no payments-core account {account!r}")
        with self._guard():
            found = self._get("merchant", merchant, int)
            if found == account:
                return
            if found is not None:
                # Plans and loans already pay this merchant through its account: moving it would split
                # the merchant's money (and its refunds) between two accounts.
                raise CreditError(
                    CreditCode.MERCHANT_REGISTERED, f"merchant {merchant} is already paid into account {found}"
                )
            self._known.add(account)
            self._write([self._rec("merchant", merchant, merchant, 0, account)])

    def checkout_installments(
        self,
        order_id: str,
        shopper: str,
        merchant: str,
        amount_fen: int,
        periods: int,
        fee_payer: str | P.FeePayer = "shopper",
    ) -> P.Plan:
        """Buy on installments: the merchant is paid ``amount_fen`` from the shopper's line now (minus the
        whole fee if ``fee_payer`` is ``"merchant"``), the shopper repays per the plan's schedule.

        Idempotent by ``order_id``: the same order with the same terms answers the same plan. Refusals:
        ``BAD_ID``, ``BAD_AMOUNT`` (floats included), ``BAD_PERIODS``, ``BAD_FEE_PAYER``, ``ORDER_EXISTS``,
        ``LINE_FROZEN`` (an overdue installment), ``LINE_EXCEEDED`` (the core refused the overdraw)."""
        return self._open_plan(order_id, shopper, merchant, amount_fen, periods, fee_payer, funded=False)

    def line_account(self, shopper: str) -> int:
        """The payments-core account of the shopper's line (opened on first use): the source a checkout
        gateway debits with its own hold into escrow. The core refuses such a hold over the available line,
        and any hold while the line is frozen (the freeze holds it all); settle it to the merchant, then
        call ``open_plan``."""
        check_id(shopper, "shopper")
        with self._guard():
            self._tick_shopper(shopper, self.today())
            self._shopper(shopper)
            return account_id("line", shopper)

    def open_plan(
        self,
        order_id: str,
        shopper: str,
        merchant: str,
        amount_fen: int,
        periods: int,
        fee_payer: str | P.FeePayer = "shopper",
        *,
        funding_transfer_id: int,
    ) -> P.Plan:
        """Record the plan of an order whose ``amount_fen`` the checkout gateway already moved from the
        shopper's line (``line_account``) to the merchant: no purchase transfer here, only the merchant's
        fee when it pays it. ``funding_transfer_id`` is the gateway's posted transfer out of the line (a
        plain transfer, or the post of its pending hold): it must debit this shopper's line with exactly
        ``amount_fen`` and fund no other plan (``FUNDING_MISMATCH``). Otherwise as
        ``checkout_installments`` (idempotent by ``order_id``)."""
        return self._open_plan(
            order_id, shopper, merchant, amount_fen, periods, fee_payer, funded=True, funding=funding_transfer_id
        )

    def _open_plan(
        self,
        order_id: str,
        shopper: str,
        merchant: str,
        amount_fen: int,
        periods: int,
        fee_payer: str | P.FeePayer,
        *,
        funded: bool,
        funding: int = 0,
    ) -> P.Plan:
        check_id(order_id, "order_id")
        check_id(shopper, "shopper")
        check_id(merchant, "merchant")
        amount = check_money(amount_fen, "amount_fen", installment_amount_fen_max)
        payer = fee_payer_of(fee_payer)
        with self._guard():
            day = self.today()
            plan = P.make_plan(order_id, shopper, merchant, amount, periods, payer, self.fee_table, day)
            old = self._get("plan", order_id, P.Plan)
            if old is not None:
                same = (old.shopper, old.merchant, old.principal, old.periods, old.fee_payer) == (
                    shopper,
                    merchant,
                    amount,
                    periods,
                    payer,
                )
                if same and funded and self._get("funding", str(funding), str) != order_id:
                    # The order's plan was funded by another transfer: this one would vanish into it.
                    raise CreditError(
                        CreditCode.FUNDING_MISMATCH, f"order {order_id} is funded by another transfer than {funding!r}"
                    )
                if same:
                    return old
                raise CreditError(CreditCode.ORDER_EXISTS, f"order {order_id} already has a plan with other terms")
            self._tick_shopper(shopper, day)
            if self._overdue_plans(shopper) and not funded:
                raise CreditError(CreditCode.LINE_FROZEN, f"shopper {shopper} has an overdue installment")
            self._shopper(shopper)
            macct = self.merchant_account(merchant)
            line = account_id("line", shopper)
            legs = [] if funded else [_Leg(line, macct, amount, CoreTransfer.PURCHASE)]
            if payer is P.FeePayer.MERCHANT:
                legs.append(_Leg(macct, account_id("fee-income"), plan.fee, CoreTransfer.MERCHANT_FEE))
            recs = [self._rec("plan", order_id, shopper, int(plan.state), plan)]
            if funded:
                self._check_funding(funding, line, amount, order_id)
                recs.append(self._rec("funding", str(funding), shopper, 0, order_id))
            self._execute(
                legs,
                recs,
                plan,
                request=_key("checkout", order_id),
                short={line: CreditCode.LINE_EXCEEDED, macct: CreditCode.MERCHANT_FUNDS_SHORT},
            )
            return plan

    def _check_funding(self, funding: object, line: int, amount: int, order_id: str) -> None:
        if type(funding) is not int or funding <= 0:
            raise CreditError(
                CreditCode.FUNDING_MISMATCH, f"funding_transfer_id must be a transfer id, got {funding!r}"
            )
        found = self.core.lookup_transfers([funding])
        pending = int(TransferFlags.PENDING)
        if not found or found[0].debit_account_id != line or found[0].amount != amount or found[0].flags & pending:
            raise CreditError(
                CreditCode.FUNDING_MISMATCH,
                f"transfer {funding} is not a posted transfer of {amount} fen out of this shopper's line",
            )
        taken = self._get("funding", str(funding), str)
        if taken is not None and taken != order_id:
            raise CreditError(CreditCode.FUNDING_MISMATCH, f"transfer {funding} already funds order {taken}")

    def plan(self, plan_id: str) -> P.Plan:
        """The plan as of today (penalty accrued, state moved), without storing anything."""
        check_id(plan_id, "plan_id")
        with self._guard():
            plan = self._plan(plan_id)
            self._tick(plan, self.today())
            return plan

    def _plan(self, plan_id: str) -> P.Plan:
        plan = self._get("plan", plan_id, P.Plan)
        if plan is None:
            raise CreditError(CreditCode.UNKNOWN_PLAN, f"no installment plan {plan_id!r}")
        return plan

    def _tick(self, plan: P.Plan, day: int) -> None:
        if plan.state in (P.PlanState.ACTIVE, P.PlanState.OVERDUE):
            P.accrue(plan, day, self.penalty_bp_per_day)
            P.move(plan, "tick", day)

    def _tick_shopper(self, shopper: str, day: int) -> None:
        plans = self._select(
            P.Plan,
            "SELECT body FROM records WHERE kind = 'plan' AND owner = ? AND state IN (?, ?)",
            (shopper, *_OPEN_PLAN),
        )
        changed = []
        for plan in plans:
            before = msgspec.json.encode(plan)
            self._tick(plan, day)
            if msgspec.json.encode(plan) != before:
                changed.append(self._rec("plan", plan.plan_id, shopper, int(plan.state), plan))
        if changed:
            self._write(changed)
        self._sync_hold(shopper)

    def _sync_hold(self, shopper: str) -> None:
        """Freeze or unfreeze the line in the core: while the shopper has an overdue plan, a pending
        balancing transfer from the line back to ``lines`` holds everything that was available (the core
        then refuses any purchase from the line, whoever sends it); it is voided once nothing is overdue.
        Repayments still credit the line while it is held."""
        rec = self._get("shopper", shopper, Shopper)
        if rec is None:
            return
        overdue = self._overdue_plans(shopper) > 0
        line, lines = account_id("line", shopper), account_id("lines")
        # A line already held can have become spendable again: a repayment of another plan, a refund or
        # a grant credits it while the hold stays as it was. Then the hold is voided and taken again in one
        # chain, so the new hold balances everything available (a frozen line holds it all).
        stale = overdue and rec.hold_id != 0 and self._balance(line) > 0
        if overdue == (rec.hold_id != 0) and not stale:
            return
        legs: list[_Leg] = []
        if rec.hold_id:
            unhold = _transfer_id("unhold", self._instance, shopper, rec.freezes)
            void = int(TransferFlags.VOID_PENDING_TRANSFER)
            legs.append(_Leg(0, 0, 0, 0, flags=void, pending_id=rec.hold_id, id=unhold))
            rec.hold_id = 0
        if overdue:
            rec.freezes += 1
            rec.hold_id = _transfer_id("hold", self._instance, shopper, rec.freezes)
            flags = int(TransferFlags.PENDING | TransferFlags.BALANCING_DEBIT)
            legs.append(_Leg(line, lines, max(rec.line_fen, 1), CoreTransfer.LINE_HOLD, flags=flags, id=rec.hold_id))
        self._execute(legs, [self._rec("shopper", shopper, shopper, 0, rec)], rec)

    def _overdue_plans(self, shopper: str) -> int:
        row = self._db.execute(
            "SELECT count(*) FROM records WHERE kind = 'plan' AND owner = ? AND state = ?",
            (shopper, int(P.PlanState.OVERDUE)),
        ).fetchone()
        return int(row[0])

    def repay(self, plan_id: str, amount_fen: int, request_id: str | None = None) -> P.Plan:
        """Repay ``amount_fen`` from the shopper's wallet: penalty, fee, principal, earliest period first
        (on time, early or partial). ``request_id`` makes a retry answer the first result.
        Refusals: ``UNKNOWN_PLAN``, ``PLAN_CLOSED``, ``BAD_AMOUNT``, ``OVERPAY``, ``FUNDS_SHORT``."""
        check_id(plan_id, "plan_id")
        amount = check_money(amount_fen, "amount_fen", money_fen_max)
        request = None if request_id is None else _key("repay", plan_id, check_id(request_id, "request_id"))
        with self._guard():
            replay = self._replayed(request, P.Plan, str(amount))
            if replay is not None:
                return replay
            return self._repay(self._plan(plan_id), amount, request, str(amount))

    def prepay(self, plan_id: str, request_id: str | None = None) -> P.Plan:
        """Early repayment of everything the plan owes today (fees of later periods included)."""
        check_id(plan_id, "plan_id")
        request = None if request_id is None else _key("repay", plan_id, check_id(request_id, "request_id"))
        with self._guard():
            replay = self._replayed(request, P.Plan, "all")
            if replay is not None:
                return replay
            plan = self._plan(plan_id)
            P.require(plan, "repay")
            self._tick(plan, self.today())
            return self._repay(plan, plan.owed(), request, "all")

    def _repay(self, plan: P.Plan, amount: int, request: str | None, params: str = "") -> P.Plan:
        day = self.today()
        P.require(plan, "repay")
        self._tick(plan, day)
        P.require(plan, "repay")
        alloc = P.allocate_repayment(plan, amount)
        P.move(plan, "repay", day)
        shopper = plan.shopper
        wallet, line = account_id("wallet", shopper), account_id("line", shopper)
        legs = [
            _Leg(wallet, account_id("penalty-income"), alloc.penalty, CoreTransfer.REPAY_PENALTY),
            _Leg(wallet, account_id("fee-income"), alloc.fee, CoreTransfer.REPAY_FEE),
            _Leg(wallet, line, alloc.principal, CoreTransfer.REPAY_PRINCIPAL),
        ]
        recs = [self._rec("plan", plan.plan_id, shopper, int(plan.state), plan)]
        if plan.state is P.PlanState.PAID_OFF:
            legs += self._line_review(plan, alloc.principal, recs)
        plan.ops += 1
        recs[0] = self._rec("plan", plan.plan_id, shopper, int(plan.state), plan)
        self._execute(legs, recs, plan, request=request, short={wallet: CreditCode.FUNDS_SHORT}, params=params)
        self._sync_hold(shopper)
        return plan

    def _line_review(self, closed: P.Plan, freed_fen: int, recs: list[_Rec]) -> list[_Leg]:
        """A plan closed: count it in the shopper's history and set the line by the policy (a cut takes
        at most what is available after this operation)."""
        rec = self._shopper(closed.shopper)
        if closed.state is P.PlanState.PAID_OFF:
            if closed.was_overdue:
                rec.plans_late += 1
            elif _counts_on_time(closed, self.today()):
                rec.plans_on_time += 1
        history = ShopperHistory(plans_on_time=rec.plans_on_time, plans_late=rec.plans_late)
        target = self.line_policy.line_fen(history)
        line = account_id("line", closed.shopper)
        legs = []
        if target > rec.line_fen:
            legs.append(_Leg(account_id("lines"), line, target - rec.line_fen, CoreTransfer.LINE_GRANT))
            rec.line_fen = target
        elif target < rec.line_fen:
            cut = min(rec.line_fen - target, self._balance(line) + freed_fen)
            legs.append(_Leg(line, account_id("lines"), cut, CoreTransfer.LINE_CUT))
            rec.line_fen -= cut
        rec.policy = self.line_policy.name
        recs.append(self._rec("shopper", rec.shopper, rec.shopper, 0, rec))
        return legs

    def refund(self, order_id: str, amount_fen: int, refund_id: str | None = None) -> P.Plan:
        """The merchant refunds ``amount_fen`` of an installment order: the plan gets shorter (or is
        cancelled by a full refund), the line is restored, principal already repaid goes back to the
        shopper's wallet, a merchant-paid fee is returned pro rata. ``refund_id`` makes a retry safe.
        Refusals: ``UNKNOWN_PLAN``, ``PLAN_CLOSED`` (already refunded), ``REFUND_EXCEEDS``,
        ``MERCHANT_FUNDS_SHORT``."""
        check_id(order_id, "order_id")
        amount = check_money(amount_fen, "amount_fen", installment_amount_fen_max)
        request = None if refund_id is None else _key("refund", order_id, check_id(refund_id, "refund_id"))
        with self._guard():
            replay = self._replayed(request, P.Plan, str(amount))
            if replay is not None:
                return replay
            day = self.today()
            plan = self._plan(order_id)
            P.require(plan, "refund")
            self._tick(plan, day)
            was = plan.state
            split = P.allocate_refund(plan, amount)
            P.move(plan, "refund", day)
            macct = self.merchant_account(plan.merchant)
            shopper = plan.shopper
            legs = [
                _Leg(account_id("fee-income"), macct, split.fee_to_merchant, CoreTransfer.FEE_RETURN),
                _Leg(macct, account_id("line", shopper), split.to_line, CoreTransfer.REFUND_TO_LINE),
                _Leg(macct, account_id("wallet", shopper), split.to_shopper, CoreTransfer.REFUND_TO_SHOPPER),
            ]
            recs = [self._rec("plan", plan.plan_id, shopper, int(plan.state), plan)]
            if was is not P.PlanState.PAID_OFF and plan.state in (P.PlanState.PAID_OFF, P.PlanState.REFUNDED):
                legs += self._line_review(plan, split.to_line, recs)
            plan.ops += 1
            recs[0] = self._rec("plan", plan.plan_id, shopper, int(plan.state), plan)
            self._execute(
                legs, recs, plan, request=request, short={macct: CreditCode.MERCHANT_FUNDS_SHORT}, params=str(amount)
            )
            self._sync_hold(shopper)
            return plan

    def deposit(self, shopper: str, amount_fen: int, deposit_id: str) -> int:
        """Money into the shopper's wallet from outside (a bank transfer); answers the wallet's balance.
        Idempotent by ``deposit_id``."""
        check_id(shopper, "shopper")
        amount = check_money(amount_fen, "amount_fen", money_fen_max)
        request = _key("deposit", shopper, check_id(deposit_id, "deposit_id"))
        with self._guard():
            self._shopper(shopper)
            if self._replayed(request, int, str(amount)) is None:
                wallet = account_id("wallet", shopper)
                leg = _Leg(account_id("bank"), wallet, amount, CoreTransfer.DEPOSIT)
                self._execute([leg], [], 0, request=request, params=str(amount))
            return self._balance(account_id("wallet", shopper))

    def line(self, shopper: str) -> LineView:
        """The shopper's line, available amount and state, from the core's balances."""
        check_id(shopper, "shopper")
        with self._guard():
            rec = self._get("shopper", shopper, Shopper)
            if rec is None:
                raise CreditError(CreditCode.UNKNOWN_SHOPPER, f"no credit line for shopper {shopper!r}")
            self._tick_shopper(shopper, self.today())
            rec = self._get("shopper", shopper, Shopper) or rec
            (acct,) = self.core.lookup_accounts([account_id("line", shopper)])
            posted = acct.credits_posted - acct.debits_posted
            return LineView(
                shopper=shopper,
                line_fen=rec.line_fen,
                available_fen=posted - acct.debits_pending,
                outstanding_fen=rec.line_fen - posted,
                held_fen=acct.debits_pending,
                frozen=rec.hold_id != 0,
                wallet_fen=self._balance(account_id("wallet", shopper)),
                plans_on_time=rec.plans_on_time,
                plans_late=rec.plans_late,
                policy=rec.policy,
            )

    def plans_of(self, shopper: str) -> list[P.Plan]:
        """The shopper's plans (all states), oldest first, at most ``list_rows_max``."""
        check_id(shopper, "shopper")
        with self._guard():
            return self._select(
                P.Plan,
                "SELECT body FROM records WHERE kind = 'plan' AND owner = ? ORDER BY rowid LIMIT ?",
                (shopper, list_rows_max),
            )

    def statement(self, shopper: str) -> Statement:
        """What the shopper owes today, plan by plan: due now, next due, everything owed."""
        view = self.line(shopper)
        with self._guard():
            day = self.today()
            rows = []
            for plan in self.plans_of(shopper):
                self._tick(plan, day)
                upcoming = [p for p in plan.schedule if p.due_day >= day and p.owed > 0]
                nxt = min(upcoming, key=lambda p: p.due_day) if upcoming else None
                rows.append(
                    StatementRow(
                        plan_id=plan.plan_id,
                        merchant=plan.merchant,
                        state=plan.state.name.lower(),
                        due_now_fen=sum(p.owed for p in plan.schedule if p.due_day <= day),
                        next_due_day=nxt.due_day if nxt else 0,
                        next_due_fen=nxt.owed if nxt else 0,
                        owed_fen=plan.owed(),
                        periods=plan.schedule,
                    )
                )
            return Statement(
                shopper=shopper,
                day=day,
                line=view,
                due_now_fen=sum(r.due_now_fen for r in rows),
                owed_fen=sum(r.owed_fen for r in rows),
                plans=rows,
            )

    # ------------------------------------------------------------------------------------- time passing

    def run_day(self) -> DayReport:
        """The day's batch: penalty and interest accrued, overdue plans and loans marked (their lines
        frozen), and installments due collected from wallets (at most what each owes and each wallet
        holds; collecting twice on one day charges once)."""
        with self._guard():
            day = self.today()
            collected = 0
            plans = self._select(P.Plan, "SELECT body FROM records WHERE kind = 'plan' AND state IN (?, ?)", _OPEN_PLAN)
            for plan in plans:
                self._tick(plan, day)
                due = sum(p.owed for p in plan.schedule if p.due_day <= day)
                take = min(due, max(0, self._balance(account_id("wallet", plan.shopper))))
                request = _key("collect", plan.plan_id, day)
                if take > 0 and self._replayed(request, P.Plan) is None:
                    try:
                        self._repay(plan, take, request)
                        collected += take
                    except CreditError:
                        # A wallet that changed meanwhile: tomorrow's run tries again. The plan still moves
                        # with time (it may now be overdue), from its stored state.
                        plan = self._plan(plan.plan_id)
                        self._tick(plan, day)
                        self._write([self._rec("plan", plan.plan_id, plan.shopper, int(plan.state), plan)])
                else:
                    self._write([self._rec("plan", plan.plan_id, plan.shopper, int(plan.state), plan)])
            for shopper in sorted({plan.shopper for plan in plans}):
                self._sync_hold(shopper)
            loans = self._select(L.Loan, "SELECT body FROM records WHERE kind = 'loan' AND state IN (?, ?)", _OPEN_LOAN)
            for loan in loans:
                self._tick_loan(loan, day)
                self._write([self._rec("loan", loan.loan_id, loan.merchant, int(loan.state), loan)])
            overdue = self._db.execute(
                "SELECT count(*), count(DISTINCT owner) FROM records WHERE kind = 'plan' AND state = ?",
                (int(P.PlanState.OVERDUE),),
            ).fetchone()
            loans_overdue = self._db.execute(
                "SELECT count(*) FROM records WHERE kind = 'loan' AND state = ?", (int(L.LoanState.OVERDUE),)
            ).fetchone()
            return DayReport(
                day=day,
                plans_overdue=int(overdue[0]),
                lines_frozen=int(overdue[1]),
                collected_fen=collected,
                loans_overdue=int(loans_overdue[0]),
            )

    # ------------------------------------------------------------------------------------ merchant loans

    def record_sale(
        self, merchant: str, sale_id: str, amount_fen: int, kind: L.SaleKind = L.SaleKind.SALE, day: int | None = None
    ) -> Deduction | None:
        """A sale settled to the merchant (or a refund or chargeback taken from it) in the core, stamped
        with its business day; a sale's settlement then repays the merchant's loan by its share
        (随借随还). Idempotent by ``sale_id``."""
        check_id(sale_id, "sale_id")
        amount = check_money(amount_fen, "amount_fen", money_fen_max)
        try:
            kind = L.SaleKind(kind)
        except ValueError:
            raise CreditError(CreditCode.BAD_AMOUNT, "kind must be 1 (sale), 2 (refund) or 3 (chargeback)") from None
        if day is not None and (type(day) is not int or not 0 < day < 1 << 32):
            raise CreditError(CreditCode.BAD_DAY, f"day must be an integer business day 1..2^32-1, got {day!r}")
        with self._guard():
            macct = self.merchant_account(merchant)
            when = self.today() if day is None else day
            buyers = account_id("buyers")
            code = {
                L.SaleKind.SALE: CoreTransfer.SALE,
                L.SaleKind.REFUND: CoreTransfer.SALE_REFUND,
                L.SaleKind.CHARGEBACK: CoreTransfer.CHARGEBACK,
            }[L.SaleKind(kind)]
            debit, credit = (buyers, macct) if kind is L.SaleKind.SALE else (macct, buyers)
            t = Transfer(
                _transfer_id("sale", merchant, sale_id),
                debit_account_id=debit,
                credit_account_id=credit,
                amount=amount,
                ledger=self.ledger,
                code=int(code),
                user_data_32=when,
            )
            (result,) = self.core.create_transfers([t])
            if result not in APPLIED_TRANSFER_RESULTS:
                name = CreateTransferResult(result).name.lower()
                codes = (
                    CreditCode.MERCHANT_FUNDS_SHORT
                    if result == CreateTransferResult.EXCEEDS_CREDITS
                    else (CreditCode.CORE_REFUSED)
                )
                raise CreditError(codes, f"sale {sale_id}: the payments core refused: {name}")
            if kind is not L.SaleKind.SALE:
                return None
            return self.on_settlement(merchant, sale_id, amount)

    def import_sales(self, merchant: str, rows: Sequence[tuple[str, int, L.SaleKind, int]]) -> int:
        """Load a sales history ``(sale_id, day, kind, amount_fen)`` into the core in big batches (no loan
        deductions: history from before the service). Answers how many transfers were applied."""
        with self._guard():
            return self._import_sales(merchant, rows)

    def _import_sales(self, merchant: str, rows: Sequence[tuple[str, int, L.SaleKind, int]]) -> int:
        macct = self.merchant_account(merchant)
        buyers = account_id("buyers")
        code = {
            L.SaleKind.SALE: CoreTransfer.SALE,
            L.SaleKind.REFUND: CoreTransfer.SALE_REFUND,
            L.SaleKind.CHARGEBACK: CoreTransfer.CHARGEBACK,
        }
        done = 0
        batch: list[Transfer] = []

        def flush() -> int:
            results = self.core.create_transfers(batch) if batch else []
            batch.clear()
            return sum(1 for r in results if r in APPLIED_TRANSFER_RESULTS)

        # Every row is checked before the first batch goes to the core: a bad row late in a big import
        # must not leave the batches before it applied.
        for sale_id, day, kind, amount in rows:
            check_id(sale_id, "sale_id")
            check_money(amount, "amount_fen", money_fen_max)
            if type(day) is not int or not 0 < day < 1 << 32:
                raise CreditError(CreditCode.BAD_DAY, f"sale {sale_id}: day must be 1..2^32-1, got {day!r}")
            if type(kind) not in (int, L.SaleKind) or kind not in code:
                raise CreditError(CreditCode.BAD_AMOUNT, f"sale {sale_id}: kind must be 1, 2 or 3, got {kind!r}")
        for sale_id, day, raw_kind, amount in rows:
            kind = L.SaleKind(raw_kind)
            debit, credit = (buyers, macct) if kind is L.SaleKind.SALE else (macct, buyers)
            batch.append(
                Transfer(
                    _transfer_id("sale", merchant, sale_id),
                    debit_account_id=debit,
                    credit_account_id=credit,
                    amount=amount,
                    ledger=self.ledger,
                    code=int(code[kind]),
                    user_data_32=day,
                )
            )
            if len(batch) == _PAGE:
                done += flush()
        return done + flush()

    def _sales_flow(self, acct: int) -> Iterator[tuple[int, L.SaleKind, int]]:
        """The merchant account's sales, refunds and chargebacks from the core: (day, kind, amount)."""
        kinds = {
            int(CoreTransfer.SALE): L.SaleKind.SALE,
            int(CoreTransfer.SALE_REFUND): L.SaleKind.REFUND,
            int(CoreTransfer.CHARGEBACK): L.SaleKind.CHARGEBACK,
        }
        # Newest first: a merchant with more than ``history_transfers_max`` transfers is scored on its
        # latest trading (what the decision is about), never on its oldest.
        before = 0
        read = 0
        while read < history_transfers_max:
            limit = min(_PAGE, history_transfers_max - read)
            page = self.core.get_account_transfers(
                AccountFilter(account_id=acct, timestamp_max=before, limit=limit, reversed=True)
            )
            yield from [
                ((t.user_data_32 or t.timestamp // NS_PER_DAY), kinds[t.code], t.amount)
                for t in page
                if t.code in kinds
            ]
            read += len(page)
            if len(page) < limit:
                return
            before = page[-1].timestamp - 1

    def apply_loan(self, merchant: str, receivables_fen: int = 0) -> Offer:
        """A merchant applies: scored from its sales flow in the core (and the receivables it holds, an
        input figure), answered at once with an offer (limit, daily rate, repayment share) or a decline.
        No human step; the offer and the features that made it are stored."""
        check_id(merchant, "merchant")
        if type(receivables_fen) is not int or not 0 <= receivables_fen <= loan_amount_fen_max:
            raise CreditError(CreditCode.BAD_AMOUNT, f"receivables_fen must be 0..{loan_amount_fen_max} fen")
        with self._guard():
            t0 = time.perf_counter_ns()
            day = self.today()
            acct = self.merchant_account(merchant)
            with _no_cycle_collection():
                f = L.features(self._sales_flow(acct), day, receivables_fen)
            d = L.decide(f)
            n = self._db.execute(
                "SELECT count(*) FROM records WHERE kind = 'offer' AND owner = ?", (merchant,)
            ).fetchone()[0]
            offer = Offer(
                offer_id=f"{merchant}.{day}.{int(n) + 1}",
                merchant=merchant,
                day=day,
                valid_until=day + L.OFFER_VALID_DAYS,
                approved=d.approved,
                score=d.score,
                limit_fen=d.limit_fen,
                daily_rate_bp=d.daily_rate_bp,
                share_bp=d.share_bp,
                reasons=d.reasons,
                rules=d.rules,
                features=f,
                decided_us=(time.perf_counter_ns() - t0) // 1_000,
            )
            self._write([self._rec("offer", offer.offer_id, merchant, int(d.approved), offer)])
            return offer

    def offer(self, offer_id: str) -> Offer:
        check_id(offer_id, "offer_id", ref_len_max)
        with self._guard():
            found = self._get("offer", offer_id, Offer)
            if found is None:
                raise CreditError(CreditCode.UNKNOWN_OFFER, f"no offer {offer_id!r}")
            return found

    def draw_loan(self, offer_id: str, amount_fen: int, share_bp: int | None = None) -> L.Loan:
        """Draw ``amount_fen`` of an approved offer into the merchant's account. ``share_bp`` (default the
        offer's, 10 %) is the part of each settlement that repays the loan."""
        amount = check_money(amount_fen, "amount_fen", loan_amount_fen_max)
        with self._guard():
            offer = self.offer(offer_id)
            day = self.today()
            if not offer.approved:
                raise CreditError(
                    CreditCode.LOAN_DECLINED, f"offer {offer_id} was a decline: {'; '.join(offer.reasons)}"
                )
            share = offer.share_bp if share_bp is None else share_bp
            if type(share) is not int or not offer.share_bp <= share <= share_bp_max:
                # The offer's share is the lender's term: a merchant may repay faster, never slower.
                raise CreditError(
                    CreditCode.BAD_SHARE, f"share_bp must be {offer.share_bp}..{share_bp_max}, got {share!r}"
                )
            if offer.drawn:
                # A retried draw (the answer was lost) answers the loan it made; another amount is refused.
                first = self._replayed(_key("draw", offer_id), L.Loan)
                if first is not None and (first.principal, first.share_bp) == (amount, share):
                    return first
            if offer.drawn or day > offer.valid_until:
                raise CreditError(CreditCode.OFFER_EXPIRED, f"offer {offer_id} is drawn or expired")
            if amount > offer.limit_fen:
                raise CreditError(CreditCode.DRAW_EXCEEDS_OFFER, f"{amount} fen is over the offer's {offer.limit_fen}")
            if self._open_loan(offer.merchant) is not None:
                raise CreditError(CreditCode.LOAN_OUTSTANDING, f"merchant {offer.merchant} has a loan running")
            loan = L.Loan(
                loan_id=f"L-{offer_id}",
                merchant=offer.merchant,
                offer_id=offer_id,
                principal=amount,
                daily_rate_bp=offer.daily_rate_bp,
                overdue_rate_bp=offer.daily_rate_bp * 3 // 2 or 1,
                share_bp=share,
                start_day=day,
                due_day=day + L.DEFAULT_TERM_DAYS,
                outstanding=amount,
                interest_day=day,
            )
            offer.drawn = True
            macct = self.merchant_account(offer.merchant)
            self._execute(
                [_Leg(account_id("loan-capital"), macct, amount, CoreTransfer.DRAWDOWN)],
                [
                    self._rec("loan", loan.loan_id, loan.merchant, int(loan.state), loan),
                    self._rec("offer", offer_id, offer.merchant, 1, offer),
                ],
                loan,
                request=_key("draw", offer_id),
            )
            return loan

    def _open_loan(self, merchant: str) -> L.Loan | None:
        found = self._select(
            L.Loan,
            "SELECT body FROM records WHERE kind = 'loan' AND owner = ? AND state IN (?, ?)",
            (merchant, *_OPEN_LOAN),
        )
        return found[0] if found else None

    def _tick_loan(self, loan: L.Loan, day: int) -> None:
        if loan.state is not L.LoanState.REPAID:
            L.accrue_loan(loan, day)
            loan.state = L.loan_state(loan, day)

    def on_settlement(self, merchant: str, settlement_id: str, amount_fen: int) -> Deduction:
        """A settlement of ``amount_fen`` reached the merchant's account: its share (the loan's
        ``share_bp``, at most what the loan owes) repays interest, then principal. Idempotent by
        ``settlement_id``; with no loan running nothing is taken."""
        check_id(merchant, "merchant")
        check_id(settlement_id, "settlement_id")
        amount = check_money(amount_fen, "amount_fen", money_fen_max)
        request = _key("settle", merchant, settlement_id)
        with self._guard():
            replay = self._replayed(request, Deduction, str(amount))
            if replay is not None:
                return replay
            loan = self._open_loan(merchant)
            if loan is None:
                nothing = Deduction(
                    settlement_id=settlement_id,
                    merchant=merchant,
                    loan_id="",
                    settlement_fen=amount,
                    deducted_fen=0,
                    interest_fen=0,
                    principal_fen=0,
                )
                # Remembered, so a retry after a loan is drawn answers this instead of repaying the new
                # loan from takings that came before it. No money moved: no fsync of its own.
                self._remember(request, nothing, str(amount))
                return nothing
            self._tick_loan(loan, self.today())
            take = min(amount * loan.share_bp // 10_000, loan.owed)
            return self._loan_payment(loan, take, request, settlement_id, amount, str(amount))

    def _loan_payment(
        self, loan: L.Loan, take: int, request: str | None, sid: str, settled: int, params: str = ""
    ) -> Deduction:
        interest, principal = L.allocate_loan(loan, take) if take else (0, 0)
        loan.state = L.loan_state(loan, self.today())
        loan.ops += 1
        macct = self.merchant_account(loan.merchant)
        out = Deduction(
            settlement_id=sid,
            merchant=loan.merchant,
            loan_id=loan.loan_id,
            settlement_fen=settled,
            deducted_fen=take,
            interest_fen=interest,
            principal_fen=principal,
        )
        self._execute(
            [
                _Leg(macct, account_id("loan-interest"), interest, CoreTransfer.LOAN_INTEREST),
                _Leg(macct, account_id("loan-capital"), principal, CoreTransfer.LOAN_PRINCIPAL),
            ],
            [self._rec("loan", loan.loan_id, loan.merchant, int(loan.state), loan)],
            out,
            request=request,
            short={macct: CreditCode.MERCHANT_FUNDS_SHORT},
            params=params,
        )
        return out

    def repay_loan(self, loan_id: str, amount_fen: int, request_id: str | None = None) -> L.Loan:
        """Early (or any) repayment of ``amount_fen`` from the merchant's account: interest, then principal."""
        check_id(loan_id, "loan_id", ref_len_max)
        amount = check_money(amount_fen, "amount_fen", money_fen_max)
        request = None if request_id is None else _key("loanpay", loan_id, check_id(request_id, "request_id"))
        with self._guard():
            if self._replayed(request, Deduction, str(amount)) is not None:
                return self.loan(loan_id)
            loan = self._loan(loan_id)
            self._tick_loan(loan, self.today())
            self._loan_payment(loan, amount, request, request_id or "", 0, str(amount))
            return loan

    def _loan(self, loan_id: str) -> L.Loan:
        found = self._get("loan", loan_id, L.Loan)
        if found is None:
            raise CreditError(CreditCode.UNKNOWN_LOAN, f"no loan {loan_id!r}")
        return found

    def loan(self, loan_id: str) -> L.Loan:
        """The loan as of today (interest accrued), without storing anything."""
        check_id(loan_id, "loan_id", ref_len_max)
        with self._guard():
            loan = self._loan(loan_id)
            self._tick_loan(loan, self.today())
            return loan

    def merchant_loans(self, merchant: str) -> list[L.Loan]:
        """The merchant's view: its loans, newest first, interest accrued to today."""
        check_id(merchant, "merchant")
        with self._guard():
            day = self.today()
            out = self._select(
                L.Loan,
                "SELECT body FROM records WHERE kind = 'loan' AND owner = ? ORDER BY rowid DESC LIMIT ?",
                (merchant, list_rows_max),
            )
            for loan in out:
                self._tick_loan(loan, day)
            return out

    def loan_book(self) -> LoanBook:
        """The platform's view of the whole merchant-loan book, interest accrued to today."""
        with self._guard():
            day = self.today()
            book = LoanBook(
                day=day,
                loans=0,
                active=0,
                overdue=0,
                repaid=0,
                drawn_fen=0,
                outstanding_fen=0,
                interest_accrued_fen=0,
                overdue_fen=0,
                principal_repaid_fen=0,
                interest_paid_fen=0,
            )
            for (body,) in self._db.execute("SELECT body FROM records WHERE kind = 'loan'"):
                loan = msgspec.json.decode(body, type=L.Loan)
                self._tick_loan(loan, day)
                book.loans += 1
                book.active += loan.state is L.LoanState.ACTIVE
                book.overdue += loan.state is L.LoanState.OVERDUE
                book.repaid += loan.state is L.LoanState.REPAID
                book.drawn_fen += loan.principal
                book.outstanding_fen += loan.outstanding
                book.interest_accrued_fen += loan.interest
                book.overdue_fen += loan.owed if loan.state is L.LoanState.OVERDUE else 0
                book.principal_repaid_fen += loan.paid_principal
                book.interest_paid_fen += loan.paid_interest
            return book

    def check(self) -> None:
        """Cross-check records against the core (tests, operators): every line's available amount in the
        core equals line − outstanding principal of the shopper's plans. ``InvariantViolation`` if not."""
        with self._guard():
            for (body,) in self._db.execute("SELECT body FROM records WHERE kind = 'shopper'").fetchall():
                rec = msgspec.json.decode(body, type=Shopper)
                outstanding = sum(p.unpaid_principal() for p in self.plans_of(rec.shopper))
                (acct,) = self.core.lookup_accounts([account_id("line", rec.shopper)])
                available = acct.credits_posted - acct.debits_posted
                if (acct.debits_pending > 0) and not rec.hold_id:
                    raise InvariantViolation(0, f"shopper {rec.shopper}: a hold in the core but the line is not frozen")
                if available != rec.line_fen - outstanding:
                    raise InvariantViolation(
                        0,
                        f"shopper {rec.shopper}: core says {available} available, records {rec.line_fen - outstanding}",
                    )
