"""The payments rules, one by one, on both backends (TigerBeetle's semantics; tigerbeetle_parity.py replays
TigerBeetle's own tables, the property tests compare the backends with a reference model)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from liangcao import limits
from liangcao.payments import (
    AMOUNT_MAX,
    Account,
    AccountFilter,
    AccountFlags,
    Engine,
    PaymentsError,
    QueryFilter,
    Transfer,
    TransferFlags,
    TransferStatus,
)
from liangcao.payments.types import U128_MAX
from liangcao.payments.types import CreateAccountResult as A
from liangcao.payments.types import CreateTransferResult as R

F = TransferFlags
S = 1_000_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000 * S

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["embedded", "postgres"])
def eng(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock) -> Iterator[Any]:
    """Each rule test runs on both backends: the embedded engine and PostgreSQL."""
    e: Any
    if request.param == "embedded":
        e = Engine(tmp_path / "pay", clock=clock)
    else:
        from liangcao.payments.postgres import PostgresBackend

        e = PostgresBackend(request.getfixturevalue("pg_dsn"), clock=clock)
        e.reset()
    assert e.create_accounts(
        [
            Account(1, ledger=156, code=1),  # the platform's settlement account (may go negative)
            Account(2, ledger=156, code=2, flags=AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS),  # a buyer
            Account(3, ledger=156, code=3, flags=AccountFlags.HISTORY),  # a merchant
            Account(4, ledger=840, code=1),  # another currency
            Account(5, ledger=156, code=4, flags=AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS),  # a credit line
        ]
    ) == [0, 0, 0, 0, 0]
    yield e
    e.close()


def bal(e: Engine, i: int) -> tuple[int, int, int, int]:
    (a,) = e.lookup_accounts([i])
    return (a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted)


def T(i: int, dr: int, cr: int, amount: int, **kw: int) -> Transfer:
    return Transfer(
        i, debit_account_id=dr, credit_account_id=cr, amount=amount, ledger=kw.pop("ledger", 156), code=1, **kw
    )


def test_posted_transfer_moves_money_and_limits_hold(eng: Engine) -> None:
    assert eng.create_transfers([T(10, 1, 2, 10_000)]) == [0]  # top up the buyer: 100.00 yuan in fen
    assert eng.create_transfers([T(11, 2, 3, 12_000)]) == [R.EXCEEDS_CREDITS]
    assert eng.create_transfers([T(12, 2, 3, 9_999)]) == [0]
    assert bal(eng, 2) == (0, 9_999, 0, 10_000)
    assert bal(eng, 3) == (0, 0, 0, 9_999)
    assert eng.create_transfers([T(13, 5, 3, 1)]) == [0]  # debit side of the credit line is free
    assert eng.create_transfers([T(14, 3, 5, 2)]) == [R.EXCEEDS_DEBITS]
    assert eng.create_transfers([T(15, 1, 4, 1, ledger=156)]) == [R.ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER]
    assert eng.create_transfers([T(16, 1, 3, 1, ledger=840)]) == [R.TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS]
    assert eng.create_transfers([T(17, 1, 99, 1)]) == [R.CREDIT_ACCOUNT_NOT_FOUND]
    assert eng.create_transfers([T(18, 1, 1, 1)]) == [R.ACCOUNTS_MUST_BE_DIFFERENT]


def test_checks_run_in_tigerbeetles_precedence(eng: Engine) -> None:
    # Many rules broken at once: the first in the fixed order is the answer.
    t = Transfer(0, debit_account_id=0, credit_account_id=0, amount=1, flags=1 << 12)
    assert eng.create_transfers([t]) == [R.RESERVED_FLAG]
    assert eng.create_transfers([Transfer(0, 0, 0, 1)]) == [R.ID_MUST_NOT_BE_ZERO]
    assert eng.create_transfers([Transfer(U128_MAX, 0, 0, 1)]) == [R.ID_MUST_NOT_BE_INT_MAX]
    assert eng.create_transfers([Transfer(20, 0, 0, 1)]) == [R.DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO]
    assert eng.create_transfers([Transfer(21, 1, 2, 1, timeout=5)]) == [R.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER]
    assert eng.create_transfers([Transfer(22, 1, 2, 1, ledger=156)]) == [R.CODE_MUST_NOT_BE_ZERO]
    assert eng.create_transfers([Transfer(24, 1, 2, 1, ledger=156, code=1, timestamp=5)]) == [R.TIMESTAMP_MUST_BE_ZERO]
    two_kinds = F.POST_PENDING_TRANSFER | F.VOID_PENDING_TRANSFER
    assert eng.create_transfers([Transfer(25, pending_id=9, flags=two_kinds)]) == [R.FLAGS_ARE_MUTUALLY_EXCLUSIVE]
    # Pending flags with balancing are no contradiction (TigerBeetle): the transfer is applied.
    assert eng.create_transfers([T(26, 1, 3, 0, flags=F.PENDING | F.BALANCING_CREDIT)]) == [0]


@pytest.mark.parametrize(
    ("field", "value"),
    [("amount", 1 << 128), ("id", -1), ("ledger", 1 << 32), ("code", 1 << 16), ("user_data_64", 1 << 64)],
)
def test_a_value_wider_than_its_field_refuses_the_whole_batch_and_logs_nothing(
    eng: Engine, field: str, value: int
) -> None:
    before = eng.lookup_accounts([1, 3])
    wal = sum(p.stat().st_size for p in Path(eng.path).glob("wal-*.log")) if isinstance(eng, Engine) else 0
    bad = msgspec.structs.replace(T(23, 1, 3, 1), **{field: value})
    with pytest.raises(PaymentsError) as exc:
        eng.create_transfers([T(22, 1, 3, 5), bad])
    assert f"transfer 1: {field} {value} does not fit" in exc.value.message
    assert eng.lookup_accounts([1, 3]) == before
    assert eng.lookup_transfers([22, 23]) == []
    if isinstance(eng, Engine):
        assert sum(p.stat().st_size for p in Path(eng.path).glob("wal-*.log")) == wal  # nothing reached the log
    with pytest.raises(PaymentsError):
        eng.create_accounts([Account(30, ledger=1 << 32, code=1)])
    assert eng.create_transfers([T(22, 1, 3, 5)]) == [0]  # the id was not spent


def test_idempotency_exists_and_which_failures_are_remembered(eng: Engine) -> None:
    assert eng.create_transfers([T(30, 1, 3, 500)]) == [0]
    assert eng.create_transfers([T(30, 1, 3, 500)]) == [R.EXISTS]  # a retry: applied once, said so
    assert bal(eng, 3)[3] == 500
    assert eng.create_transfers([T(30, 1, 3, 501)]) == [R.EXISTS_WITH_DIFFERENT_AMOUNT]
    assert eng.create_transfers([T(30, 1, 2, 500)]) == [R.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID]
    assert eng.create_transfers([T(30, 1, 3, 500, user_data_64=7)]) == [R.EXISTS_WITH_DIFFERENT_USER_DATA_64]
    # A transient failure (money short) spends the id: retry with a new one.
    assert eng.create_transfers([T(31, 2, 3, 100)]) == [R.EXCEEDS_CREDITS]
    assert eng.create_transfers([T(32, 1, 2, 1000)]) == [0]
    assert eng.create_transfers([T(31, 2, 3, 100)]) == [R.ID_ALREADY_FAILED]
    assert eng.create_transfers([T(31, 2, 3, 50)]) == [R.ID_ALREADY_FAILED]
    assert eng.lookup_transfers([31]) == []
    # A malformed request is not remembered: corrected, the same id is evaluated afresh.
    assert eng.create_transfers([T(33, 1, 3, 5, ledger=840)]) == [R.TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS]
    assert eng.create_transfers([T(33, 1, 3, 5)]) == [0]
    # Accounts: never remembered.
    assert eng.create_accounts([Account(1, ledger=156, code=1)]) == [A.EXISTS]
    assert eng.create_accounts([Account(1, ledger=156, code=9)]) == [A.EXISTS_WITH_DIFFERENT_CODE]
    assert eng.create_accounts([Account(9, ledger=0, code=1)]) == [A.LEDGER_MUST_NOT_BE_ZERO]
    assert eng.create_accounts([Account(9, ledger=156, code=1)]) == [A.OK]


def test_retries_of_posts_voids_and_balancing_transfers_are_exists(eng: Engine) -> None:
    assert eng.create_transfers([T(35, 1, 2, 1000), T(36, 2, 3, 400, flags=F.PENDING, user_data_64=8)]) == [0, 0]
    post = Transfer(37, pending_id=36, amount=AMOUNT_MAX, flags=F.POST_PENDING_TRANSFER)
    assert eng.create_transfers([post]) == [0]
    # The same post, optional fields omitted or spelled out as stored: exists.
    assert eng.create_transfers([post]) == [R.EXISTS]
    spelled = Transfer(37, 2, 3, 400, ledger=156, code=1, pending_id=36, flags=F.POST_PENDING_TRANSFER, user_data_64=8)
    assert eng.create_transfers([spelled]) == [R.EXISTS]
    assert eng.create_transfers([msgspec.structs.replace(post, amount=399)]) == [R.EXISTS_WITH_DIFFERENT_AMOUNT]
    assert eng.create_transfers([msgspec.structs.replace(post, user_data_64=9)]) == [
        R.EXISTS_WITH_DIFFERENT_USER_DATA_64
    ]
    # A balancing transfer's amount is a limit: any limit at or above what moved is the same request.
    assert eng.create_transfers([T(38, 2, 3, 10_000, flags=F.BALANCING_DEBIT)]) == [0]
    (t,) = eng.lookup_transfers([38])
    assert t.amount == 600
    assert eng.create_transfers([T(38, 2, 3, 600, flags=F.BALANCING_DEBIT)]) == [R.EXISTS]
    assert eng.create_transfers([T(38, 2, 3, 10**9, flags=F.BALANCING_DEBIT)]) == [R.EXISTS]
    assert eng.create_transfers([T(38, 2, 3, 599, flags=F.BALANCING_DEBIT)]) == [R.EXISTS_WITH_DIFFERENT_AMOUNT]


def test_linked_chain_all_or_nothing(eng: Engine) -> None:
    L = F.LINKED
    r = eng.create_transfers([T(40, 1, 3, 100, flags=L), T(41, 1, 2, 100, flags=L), T(42, 2, 3, 500), T(43, 1, 3, 7)])
    assert r == [R.LINKED_EVENT_FAILED, R.LINKED_EVENT_FAILED, R.EXCEEDS_CREDITS, 0]
    assert bal(eng, 3) == (0, 0, 0, 7)
    assert bal(eng, 2) == (0, 0, 0, 0)
    assert eng.lookup_transfers([40, 41, 42]) == []
    assert eng.create_transfers([T(40, 1, 2, 600, flags=L), T(41, 2, 3, 500)]) == [0, 0]
    assert bal(eng, 2) == (0, 500, 0, 600)
    # A chain still open when the batch ends fails as a whole.
    assert eng.create_transfers([T(44, 1, 3, 1), T(45, 1, 3, 1, flags=L), T(46, 1, 3, 1, flags=L)]) == [
        0,
        R.LINKED_EVENT_FAILED,
        R.LINKED_EVENT_CHAIN_OPEN,
    ]
    # Accounts can be linked as well.
    ra = eng.create_accounts(
        [Account(20, ledger=156, code=1, flags=AccountFlags.LINKED), Account(21, ledger=0, code=1)]
    )
    assert ra == [A.LINKED_EVENT_FAILED, A.LEDGER_MUST_NOT_BE_ZERO]
    assert eng.lookup_accounts([20]) == []
    # An event that already exists fails its chain (it is not `ok`), and the chain is undone.
    assert eng.create_transfers([T(47, 1, 3, 9, flags=L), T(41, 2, 3, 500)]) == [R.LINKED_EVENT_FAILED, R.EXISTS]
    assert eng.lookup_transfers([47]) == []
    ra = eng.create_accounts(
        [Account(22, ledger=156, code=1, flags=AccountFlags.LINKED), Account(1, ledger=156, code=1)]
    )
    assert ra == [A.LINKED_EVENT_FAILED, A.EXISTS]
    assert eng.lookup_accounts([22]) == []


def test_two_phase_post_partial_void_and_at_most_once(eng: Engine) -> None:
    assert eng.create_transfers([T(50, 1, 2, 1000)]) == [0]
    assert eng.create_transfers([T(51, 2, 3, 800, flags=F.PENDING)]) == [0]
    assert bal(eng, 2) == (800, 0, 0, 1000)
    assert eng.create_transfers([T(52, 2, 3, 300)]) == [R.EXCEEDS_CREDITS]  # pending reserves the money
    assert eng.create_transfers([Transfer(53, pending_id=51, amount=900, flags=F.POST_PENDING_TRANSFER)]) == [
        R.EXCEEDS_PENDING_TRANSFER_AMOUNT
    ]
    assert eng.create_transfers([Transfer(54, pending_id=51, amount=600, flags=F.POST_PENDING_TRANSFER)]) == [0]
    assert bal(eng, 2) == (0, 600, 0, 1000)  # the rest of the reservation is released
    assert bal(eng, 3) == (0, 0, 0, 600)
    assert eng.transfer_status(51) == TransferStatus.POSTED
    assert eng.create_transfers([Transfer(55, pending_id=51, flags=F.VOID_PENDING_TRANSFER)]) == [
        R.PENDING_TRANSFER_ALREADY_POSTED
    ]
    (post,) = eng.lookup_transfers([54])
    assert (post.debit_account_id, post.credit_account_id, post.ledger, post.amount) == (2, 3, 156, 600)
    assert eng.create_transfers(
        [T(56, 2, 3, 100, flags=F.PENDING), Transfer(57, pending_id=56, flags=F.VOID_PENDING_TRANSFER)]
    ) == [0, 0]
    assert eng.create_transfers([Transfer(58, pending_id=56, flags=F.POST_PENDING_TRANSFER)]) == [
        R.PENDING_TRANSFER_ALREADY_VOIDED
    ]
    assert eng.create_transfers([Transfer(59, pending_id=50, flags=F.VOID_PENDING_TRANSFER)]) == [
        R.PENDING_TRANSFER_NOT_PENDING
    ]
    assert eng.create_transfers([Transfer(60, pending_id=56, debit_account_id=1, flags=F.VOID_PENDING_TRANSFER)]) == [
        R.PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID
    ]


def test_post_amounts_zero_posts_zero_max_posts_all_and_void_amounts(eng: Engine) -> None:
    assert eng.create_transfers([T(61, 1, 3, 100, flags=F.PENDING), T(62, 1, 3, 50, flags=F.PENDING)]) == [0, 0]
    assert eng.create_transfers([Transfer(63, pending_id=61, flags=F.POST_PENDING_TRANSFER)]) == [0]
    assert eng.lookup_transfers([63])[0].amount == 0  # 0 posts 0 and releases the rest
    assert bal(eng, 1) == (50, 0, 0, 0)
    assert eng.create_transfers([Transfer(64, pending_id=62, amount=AMOUNT_MAX, flags=F.POST_PENDING_TRANSFER)]) == [0]
    assert eng.lookup_transfers([64])[0].amount == 50  # AMOUNT_MAX: the whole pending amount
    assert bal(eng, 1) == (0, 50, 0, 0)
    assert eng.create_transfers([T(65, 1, 3, 70, flags=F.PENDING)]) == [0]
    void = Transfer(66, pending_id=65, flags=F.VOID_PENDING_TRANSFER)
    # Above the pending amount is checked before "different amount", as in TigerBeetle.
    assert eng.create_transfers([msgspec.structs.replace(void, amount=71)]) == [R.EXCEEDS_PENDING_TRANSFER_AMOUNT]
    assert eng.create_transfers([msgspec.structs.replace(void, amount=69)]) == [R.PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT]
    assert eng.create_transfers([msgspec.structs.replace(void, amount=70)]) == [0]


def test_pending_timeout_expires_by_engine_time(eng: Engine, clock: Clock) -> None:
    assert eng.create_transfers([T(70, 1, 3, 400, flags=F.PENDING, timeout=30)]) == [0]
    clock.now += 29 * S
    eng.pulse()
    assert eng.transfer_status(70) == TransferStatus.PENDING
    clock.now += 2 * S
    eng.pulse()
    assert eng.transfer_status(70) == TransferStatus.EXPIRED
    assert bal(eng, 1) == (0, 0, 0, 0)
    assert eng.create_transfers([Transfer(71, pending_id=70, flags=F.POST_PENDING_TRANSFER)]) == [
        R.PENDING_TRANSFER_EXPIRED
    ]
    # Expiry also happens at the start of the next batch, without a pulse.
    assert eng.create_transfers([T(72, 1, 3, 5, flags=F.PENDING, timeout=1)]) == [0]
    clock.now += 2 * S
    assert eng.create_transfers([Transfer(73, pending_id=72, flags=F.VOID_PENDING_TRANSFER)]) == [
        R.PENDING_TRANSFER_EXPIRED
    ]


def test_balancing_clamps_to_what_is_available_possibly_zero(eng: Engine) -> None:
    assert eng.create_transfers([T(80, 1, 2, 250)]) == [0]
    assert eng.create_transfers([T(81, 2, 3, 1000, flags=F.BALANCING_DEBIT)]) == [0]
    (t,) = eng.lookup_transfers([81])
    assert t.amount == 250
    assert bal(eng, 2) == (0, 250, 0, 250)
    assert eng.create_transfers([T(81, 2, 3, 1000, flags=F.BALANCING_DEBIT)]) == [R.EXISTS]
    assert eng.create_transfers([T(82, 2, 3, 1000, flags=F.BALANCING_DEBIT)]) == [0]  # nothing left: moves 0
    assert eng.lookup_transfers([82])[0].amount == 0
    assert bal(eng, 2) == (0, 250, 0, 250)


def test_closing_an_account_and_reopening_by_void(eng: Engine) -> None:
    assert eng.create_transfers([T(90, 3, 1, 0, flags=F.PENDING | F.CLOSING_DEBIT)]) == [0]
    assert eng.create_transfers([T(91, 3, 1, 1)]) == [R.DEBIT_ACCOUNT_ALREADY_CLOSED]
    assert eng.create_transfers([T(92, 1, 3, 1)]) == [R.CREDIT_ACCOUNT_ALREADY_CLOSED]
    assert eng.create_transfers([T(93, 1, 3, 1, flags=F.CLOSING_CREDIT)]) == [R.CLOSING_TRANSFER_MUST_BE_PENDING]
    assert eng.create_transfers([T(96, 3, 1, 0, flags=F.PENDING | F.CLOSING_DEBIT)]) == [R.DEBIT_ACCOUNT_ALREADY_CLOSED]
    assert eng.create_transfers([Transfer(94, pending_id=90, flags=F.VOID_PENDING_TRANSFER)]) == [0]
    assert eng.create_transfers([T(95, 1, 3, 1)]) == [0]


def test_no_money_leaves_a_closed_account_and_closing_stays_reversible(eng: Engine) -> None:
    assert eng.create_transfers([T(100, 1, 3, 500), T(101, 3, 1, 200, flags=F.PENDING)]) == [0, 0]
    assert eng.create_transfers([T(102, 3, 1, 0, flags=F.PENDING | F.CLOSING_DEBIT)]) == [0]
    before = bal(eng, 3)
    # Posting a pending transfer out of (or into) a closed account is refused: money would move.
    post = Transfer(103, pending_id=101, amount=AMOUNT_MAX, flags=F.POST_PENDING_TRANSFER)
    assert eng.create_transfers([post]) == [R.DEBIT_ACCOUNT_ALREADY_CLOSED]
    # Posting the closing transfer itself is refused too: the account must stay reopenable.
    assert eng.create_transfers([Transfer(104, pending_id=102, flags=F.POST_PENDING_TRANSFER)]) == [
        R.DEBIT_ACCOUNT_ALREADY_CLOSED
    ]
    assert bal(eng, 3) == before
    # Voiding a pending transfer is the one movement a closed account allows.
    assert eng.create_transfers([Transfer(105, pending_id=101, flags=F.VOID_PENDING_TRANSFER)]) == [0]
    assert eng.create_transfers([Transfer(106, pending_id=102, flags=F.VOID_PENDING_TRANSFER)]) == [0]
    (a,) = eng.lookup_accounts([3])
    assert not a.flags & AccountFlags.CLOSED
    assert eng.create_transfers([T(107, 3, 1, 1)]) == [0]
    # The credit side: a pending transfer into an account closed later cannot be posted either.
    assert eng.create_transfers(
        [T(108, 1, 3, 7, flags=F.PENDING), T(109, 1, 3, 0, flags=F.PENDING | F.CLOSING_CREDIT)]
    ) == [0, 0]
    assert eng.create_transfers([Transfer(110, pending_id=108, flags=F.POST_PENDING_TRANSFER, amount=7)]) == [
        R.CREDIT_ACCOUNT_ALREADY_CLOSED
    ]


def test_accounts_created_closed_and_closing_undone_by_expiry(eng: Engine, clock: Clock) -> None:
    closed = AccountFlags.CLOSED
    assert eng.create_accounts([Account(40, ledger=156, code=1, flags=closed)]) == [0]
    (a,) = eng.lookup_accounts([40])
    assert a.flags == closed
    assert eng.create_transfers([T(111, 1, 40, 1)]) == [R.CREDIT_ACCOUNT_ALREADY_CLOSED]
    assert eng.create_accounts([Account(40, ledger=156, code=1, flags=closed)]) == [A.EXISTS]
    assert eng.create_transfers([T(112, 3, 1, 0, flags=F.PENDING | F.CLOSING_DEBIT, timeout=2)]) == [0]
    assert eng.create_accounts([Account(3, ledger=156, code=3, flags=AccountFlags.HISTORY)]) == [
        A.EXISTS_WITH_DIFFERENT_FLAGS  # flags as they stand now: closed
    ]
    clock.now += 3 * S
    eng.pulse()
    (a,) = eng.lookup_accounts([3])
    assert not a.flags & closed
    assert eng.transfer_status(112) == TransferStatus.EXPIRED


def test_overflow_order_and_timeout_overflow_at_2_63(eng: Engine, clock: Clock) -> None:
    half = 1 << 127
    assert eng.create_transfers([T(120, 1, 3, half)]) == [0]
    # A pending transfer that fits in the pending balance but not beside the posted one.
    assert eng.create_transfers([T(121, 1, 3, half, flags=F.PENDING)]) == [R.OVERFLOWS_DEBITS_POSTED]
    assert eng.create_transfers([T(122, 1, 3, half - 1, flags=F.PENDING)]) == [0]
    assert eng.create_transfers([T(123, 1, 3, 1, flags=F.PENDING)]) == [R.OVERFLOWS_DEBITS]
    clock.now = (1 << 63) - 5 * S
    assert eng.create_accounts([Account(41, ledger=156, code=1), Account(42, ledger=156, code=1)]) == [0, 0]
    assert eng.create_transfers([T(125, 41, 42, 1, flags=F.PENDING, timeout=6)]) == [R.OVERFLOWS_TIMEOUT]
    assert eng.create_transfers([T(126, 41, 42, 1, flags=F.PENDING, timeout=4)]) == [0]


def test_imported_events_keep_their_past_timestamps(eng: Engine, clock: Clock) -> None:
    imp = AccountFlags.IMPORTED
    (last,) = eng.lookup_accounts([5])
    t0 = last.timestamp + 1000
    clock.now += S  # the engine's time is well after the history being imported
    assert eng.create_accounts(
        [
            Account(50, ledger=1, code=1, flags=imp, timestamp=t0),
            Account(51, ledger=1, code=1, flags=imp, timestamp=t0 + 1),
        ]
    ) == [0, 0]
    assert [a.timestamp for a in eng.lookup_accounts([50, 51])] == [t0, t0 + 1]
    # A batch imports or not as its first event does; timestamps must not go back or reach the batch's time.
    assert eng.create_accounts(
        [Account(52, ledger=1, code=1, flags=imp, timestamp=t0 + 2), Account(53, ledger=1, code=1)]
    ) == [0, A.IMPORTED_EVENT_EXPECTED]
    assert eng.create_accounts([Account(54, ledger=1, code=1, flags=imp, timestamp=t0)]) == [
        A.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS
    ]
    assert eng.create_accounts([Account(54, ledger=1, code=1, flags=imp, timestamp=1 << 63)]) == [
        A.IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE
    ]
    ti = IF = TransferFlags.IMPORTED
    assert eng.create_transfers(
        [
            Transfer(130, 50, 51, 5, ledger=1, code=1, flags=IF, timestamp=t0 + 3),
            Transfer(131, 50, 51, 5, ledger=1, code=1, flags=IF | F.PENDING, timestamp=t0 + 4, timeout=1),
            Transfer(132, 50, 52, 5, ledger=1, code=1, flags=IF, timestamp=t0 + 2),
        ]
    ) == [0, R.IMPORTED_EVENT_TIMEOUT_MUST_BE_ZERO, R.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS]
    assert eng.lookup_transfers([130])[0].timestamp == t0 + 3
    assert eng.create_transfers([Transfer(133, 50, 51, 5, ledger=1, code=1, flags=ti)]) == [
        R.IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE
    ]


def test_queries_account_transfers_and_balance_history(eng: Engine) -> None:
    for k in range(5):
        assert eng.create_transfers([T(100 + k, 1, 3, 10 * (k + 1))]) == [0]
    rows = eng.get_account_transfers(AccountFilter(account_id=3, limit=3))
    assert [t.id for t in rows] == [100, 101, 102]
    rows = eng.get_account_transfers(AccountFilter(account_id=3, limit=2, reversed=True))
    assert [t.id for t in rows] == [104, 103]
    assert eng.get_account_transfers(AccountFilter(account_id=3, credits=False)) == []
    mid = eng.lookup_transfers([102])[0].timestamp
    rows = eng.get_account_transfers(AccountFilter(account_id=1, timestamp_min=mid))
    assert [t.id for t in rows] == [102, 103, 104]
    hist = eng.get_account_balances(AccountFilter(account_id=3))
    assert [h.credits_posted for h in hist] == [10, 30, 60, 100, 150]
    with pytest.raises(PaymentsError) as exc:
        eng.get_account_transfers(AccountFilter(account_id=3, limit=limits.pay_query_limit_max + 1))
    assert "pay_query_limit_max" in exc.value.message


def test_queries_follow_tigerbeetles_filters(eng: Engine) -> None:
    assert eng.create_transfers(
        [T(140, 1, 3, 10, user_data_32=7), T(141, 3, 1, 4), T(142, 1, 3, 1, user_data_32=7), T(143, 5, 3, 2)]
    ) == [0, 0, 0, 0]
    # Balances honour the debits/credits filter and the field filters.
    credits = eng.get_account_balances(AccountFilter(account_id=3, debits=False))
    assert [(b.debits_posted, b.credits_posted) for b in credits] == [(0, 10), (4, 11), (4, 13)]
    debits = eng.get_account_balances(AccountFilter(account_id=3, credits=False))
    assert [(b.debits_posted, b.credits_posted) for b in debits] == [(4, 10)]
    tagged = eng.get_account_balances(AccountFilter(account_id=3, user_data_32=7, reversed=True))
    assert [b.credits_posted for b in tagged] == [11, 10]
    assert [t.id for t in eng.get_account_transfers(AccountFilter(account_id=1, user_data_32=7))] == [140, 142]
    # Filters that can match nothing answer nothing.
    for f in (
        AccountFilter(account_id=3, limit=0),
        AccountFilter(account_id=3, debits=False, credits=False),
        AccountFilter(account_id=3, timestamp_min=5, timestamp_max=4),
        AccountFilter(account_id=3, timestamp_max=1 << 63),  # past the largest engine timestamp
        AccountFilter(account_id=99),
    ):
        assert eng.get_account_transfers(f) == []
        assert eng.get_account_balances(f) == []
    assert eng.get_account_balances(AccountFilter(account_id=1)) == []  # no HISTORY flag
    # Queries over every account or transfer.
    assert [t.id for t in eng.query_transfers(QueryFilter(user_data_32=7))] == [140, 142]
    assert [t.id for t in eng.query_transfers(QueryFilter(limit=2, reversed=True))] == [143, 142]
    assert [a.id for a in eng.query_accounts(QueryFilter(ledger=156, code=1))] == [1]
    assert [a.id for a in eng.query_accounts(QueryFilter(ledger=156, reversed=True, limit=2))] == [5, 3]
    assert eng.query_accounts(QueryFilter(limit=0)) == []
    with pytest.raises(PaymentsError):
        eng.query_transfers(QueryFilter(limit=limits.pay_query_limit_max + 1))


def test_bad_batches_are_refused_whole(eng: Engine) -> None:
    before = eng.lookup_accounts([1, 2, 3, 4, 5])
    with pytest.raises(PaymentsError) as exc:
        eng.create_transfers([T(1000 + k, 1, 3, 1) for k in range(limits.pay_batch_events_max + 1)])
    assert "pay_batch_events_max" in exc.value.message
    with pytest.raises(PaymentsError) as exc:
        eng.create_transfers([T(110, 1, 3, 1), Transfer(111, 1, 3, 1.5, ledger=156, code=1)])  # type: ignore[arg-type]
    assert exc.value.message.startswith("bad batch")
    with pytest.raises(PaymentsError):
        eng.create_transfers([T(112, 1, 3, 1), {"id": 5}])  # type: ignore[list-item]
    assert eng.lookup_accounts([1, 2, 3, 4, 5]) == before
    assert eng.lookup_transfers([110, 112]) == []


def test_big_ids_and_amounts_are_exact(eng: Engine) -> None:
    big = (1 << 127) + 12345
    assert eng.create_accounts([Account(big, ledger=156, code=1), Account(big + 1, ledger=156, code=1)]) == [0, 0]
    amount = (1 << 100) + 1
    assert eng.create_transfers([T(big, big, big + 1, amount)]) == [0]
    assert bal(eng, big + 1) == (0, 0, 0, amount)
    assert eng.create_transfers([T(big + 5, big, big + 1, U128_MAX)]) == [R.OVERFLOWS_DEBITS_POSTED]


def test_a_second_engine_on_the_same_folder_is_refused(tmp_path: Path) -> None:
    with Engine(tmp_path / "pay"):
        with pytest.raises(PaymentsError) as exc:
            Engine(tmp_path / "pay")
        assert "in use" in exc.value.message
