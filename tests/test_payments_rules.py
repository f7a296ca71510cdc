"""The payments rules, one by one, on the embedded engine (the property tests compare it with PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from liangcao import limits
from liangcao.payments import (
    Account,
    AccountFilter,
    AccountFlags,
    Engine,
    PaymentsError,
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


def test_checks_run_in_the_enum_order(eng: Engine) -> None:
    # Many rules broken at once: the first in the fixed order is the answer.
    t = Transfer(0, debit_account_id=0, credit_account_id=0, amount=1, flags=1 << 12)
    assert eng.create_transfers([t]) == [R.RESERVED_FLAG]
    assert eng.create_transfers([Transfer(0, 0, 0, 1)]) == [R.ID_MUST_NOT_BE_ZERO]
    assert eng.create_transfers([Transfer(U128_MAX, 0, 0, 1)]) == [R.ID_MUST_NOT_BE_INT_MAX]
    assert eng.create_transfers([Transfer(20, 0, 0, 1)]) == [R.DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO]
    assert eng.create_transfers([Transfer(21, 1, 2, 1, timeout=5)]) == [R.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER]
    assert eng.create_transfers([Transfer(22, 1, 2, 1, ledger=156)]) == [R.CODE_MUST_NOT_BE_ZERO]
    assert eng.create_transfers([Transfer(23, 1, 2, 1 << 128, ledger=156, code=1)]) == [R.FIELD_OUT_OF_RANGE]
    assert eng.create_transfers([Transfer(24, 1, 2, 1, ledger=156, code=1, timestamp=5)]) == [R.TIMESTAMP_MUST_BE_ZERO]
    two_kinds = F.POST_PENDING_TRANSFER | F.VOID_PENDING_TRANSFER
    assert eng.create_transfers([Transfer(25, pending_id=9, flags=two_kinds)]) == [R.FLAGS_ARE_MUTUALLY_EXCLUSIVE]


def test_idempotency_same_fields_original_result_different_fields_named(eng: Engine) -> None:
    assert eng.create_transfers([T(30, 1, 3, 500)]) == [0]
    assert eng.create_transfers([T(30, 1, 3, 500)]) == [0]  # a retry: same answer, applied once
    assert bal(eng, 3)[3] == 500
    assert eng.create_transfers([T(30, 1, 3, 501)]) == [R.EXISTS_WITH_DIFFERENT_AMOUNT]
    assert eng.create_transfers([T(30, 1, 2, 500)]) == [R.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID]
    assert eng.create_transfers([T(30, 1, 3, 500, user_data_64=7)]) == [R.EXISTS_WITH_DIFFERENT_USER_DATA_64]
    # An id that failed stays failed, even once the rule it broke would pass.
    assert eng.create_transfers([T(31, 2, 3, 100)]) == [R.EXCEEDS_CREDITS]
    assert eng.create_transfers([T(32, 1, 2, 1000)]) == [0]
    assert eng.create_transfers([T(31, 2, 3, 100)]) == [R.EXCEEDS_CREDITS]
    assert eng.create_transfers([T(31, 2, 3, 50)]) == [R.ID_ALREADY_FAILED]
    assert eng.lookup_transfers([31]) == []
    # Accounts too.
    assert eng.create_accounts([Account(1, ledger=156, code=1)]) == [A.OK]
    assert eng.create_accounts([Account(1, ledger=156, code=9)]) == [A.EXISTS_WITH_DIFFERENT_CODE]
    assert eng.create_accounts([Account(9, ledger=0, code=1)]) == [A.LEDGER_MUST_NOT_BE_ZERO]
    assert eng.create_accounts([Account(9, ledger=156, code=1)]) == [A.ID_ALREADY_FAILED]


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


def test_balancing_clamps_to_what_is_available(eng: Engine) -> None:
    assert eng.create_transfers([T(80, 1, 2, 250)]) == [0]
    assert eng.create_transfers([T(81, 2, 3, 1000, flags=F.BALANCING_DEBIT)]) == [0]
    (t,) = eng.lookup_transfers([81])
    assert t.amount == 250
    assert bal(eng, 2) == (0, 250, 0, 250)
    assert eng.create_transfers([T(81, 2, 3, 1000, flags=F.BALANCING_DEBIT)]) == [0]  # idempotent on the request
    assert eng.create_transfers([T(82, 2, 3, 1000, flags=F.BALANCING_DEBIT)]) == [R.EXCEEDS_CREDITS]


def test_closing_an_account_and_reopening_by_void(eng: Engine) -> None:
    assert eng.create_transfers([T(90, 3, 1, 0, flags=F.PENDING | F.CLOSING_DEBIT)]) == [0]
    assert eng.create_transfers([T(91, 3, 1, 1)]) == [R.DEBIT_ACCOUNT_ALREADY_CLOSED]
    assert eng.create_transfers([T(92, 1, 3, 1)]) == [R.CREDIT_ACCOUNT_ALREADY_CLOSED]
    assert eng.create_transfers([T(93, 1, 3, 1, flags=F.CLOSING_CREDIT)]) == [R.CLOSING_TRANSFER_MUST_BE_PENDING]
    assert eng.create_transfers([Transfer(94, pending_id=90, flags=F.VOID_PENDING_TRANSFER)]) == [0]
    assert eng.create_transfers([T(95, 1, 3, 1)]) == [0]


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
