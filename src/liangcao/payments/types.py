"""The payments data model: accounts, transfers, flags, result codes and the checks on raw fields.

Learned from TigerBeetle's model: an account belongs to one ledger (one currency) and carries four
balances (debits/credits, pending/posted); a transfer moves an integer amount in minor units (fen) from a
debit account to a credit account of the same ledger. Every id is a client-chosen unsigned 128-bit
integer, so a retried request is recognised. Results are stable integer codes: a released number never
changes meaning, new outcomes get new numbers at the end. The codes are therefore *not* in the order the
rules are checked; that order (TigerBeetle's precedence) is ``TRANSFER_CHECK_ORDER`` and
``ACCOUNT_CHECK_ORDER``.

Flag bits are TigerBeetle's, bit for bit (``AccountFlags.CLOSED`` is bit 5, ``IMPORTED`` bit 4), so a
client that knows TigerBeetle's flags can send them unchanged.

Field widths are TigerBeetle's too (u128 ids, amounts and ``user_data_128``; u64 ``user_data_64`` and
``timestamp``; u32 ``ledger``, ``user_data_32``, ``timeout``; u16 ``code`` and ``flags``). A value outside
its width cannot be encoded on TigerBeetle's wire; here such a batch is refused whole
(``check_accounts`` / ``check_transfers``) before anything is applied or logged.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum, IntFlag

import msgspec

U128_MAX = (1 << 128) - 1
U64_MAX = (1 << 64) - 1
U63_MAX = (1 << 63) - 1
U32_MAX = (1 << 32) - 1
U16_MAX = (1 << 16) - 1
NS_PER_S = 1_000_000_000
#: The largest engine timestamp (TigerBeetle's ``TimestampRange.timestamp_max``: the top bit of a u64
#: timestamp is reserved). A pending transfer whose expiry would pass it fails with ``overflows_timeout``.
TIMESTAMP_MAX = U63_MAX


class AccountFlags(IntFlag):
    NONE = 0
    LINKED = 1 << 0
    DEBITS_MUST_NOT_EXCEED_CREDITS = 1 << 1
    CREDITS_MUST_NOT_EXCEED_DEBITS = 1 << 2
    HISTORY = 1 << 3
    IMPORTED = 1 << 4
    CLOSED = 1 << 5


ACCOUNT_FLAGS_ALL = (1 << 6) - 1


class TransferFlags(IntFlag):
    NONE = 0
    LINKED = 1 << 0
    PENDING = 1 << 1
    POST_PENDING_TRANSFER = 1 << 2
    VOID_PENDING_TRANSFER = 1 << 3
    BALANCING_DEBIT = 1 << 4
    BALANCING_CREDIT = 1 << 5
    CLOSING_DEBIT = 1 << 6
    CLOSING_CREDIT = 1 << 7
    IMPORTED = 1 << 8


TRANSFER_FLAGS_ALL = (1 << 9) - 1
#: A post or void whose ``amount`` is this value moves the whole pending amount (TigerBeetle's
#: ``AMOUNT_MAX``); any other amount, 0 included, is the amount meant.
AMOUNT_MAX = U128_MAX


class TransferStatus(IntEnum):
    """Where a pending transfer stands; posted and voided are each reached at most once."""

    PENDING = 1
    POSTED = 2
    VOIDED = 3
    EXPIRED = 4


class CreateAccountResult(IntEnum):
    OK = 0
    LINKED_EVENT_FAILED = 1
    LINKED_EVENT_CHAIN_OPEN = 2
    FIELD_OUT_OF_RANGE = 3  # retired: such a batch is now refused whole (check_accounts)
    TIMESTAMP_MUST_BE_ZERO = 4
    RESERVED_FLAG = 5
    ID_MUST_NOT_BE_ZERO = 6
    ID_MUST_NOT_BE_INT_MAX = 7
    EXISTS_WITH_DIFFERENT_FLAGS = 8
    EXISTS_WITH_DIFFERENT_USER_DATA_128 = 9
    EXISTS_WITH_DIFFERENT_USER_DATA_64 = 10
    EXISTS_WITH_DIFFERENT_USER_DATA_32 = 11
    EXISTS_WITH_DIFFERENT_LEDGER = 12
    EXISTS_WITH_DIFFERENT_CODE = 13
    ID_ALREADY_FAILED = 14  # retired: account failures are never remembered (TigerBeetle)
    FLAGS_ARE_MUTUALLY_EXCLUSIVE = 15
    DEBITS_PENDING_MUST_BE_ZERO = 16
    DEBITS_POSTED_MUST_BE_ZERO = 17
    CREDITS_PENDING_MUST_BE_ZERO = 18
    CREDITS_POSTED_MUST_BE_ZERO = 19
    LEDGER_MUST_NOT_BE_ZERO = 20
    CODE_MUST_NOT_BE_ZERO = 21
    EXISTS = 22
    IMPORTED_EVENT_EXPECTED = 23
    IMPORTED_EVENT_NOT_EXPECTED = 24
    IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE = 25
    IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE = 26
    IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS = 27


class CreateTransferResult(IntEnum):
    OK = 0
    LINKED_EVENT_FAILED = 1
    LINKED_EVENT_CHAIN_OPEN = 2
    FIELD_OUT_OF_RANGE = 3  # retired: such a batch is now refused whole (check_transfers)
    TIMESTAMP_MUST_BE_ZERO = 4
    RESERVED_FLAG = 5
    ID_MUST_NOT_BE_ZERO = 6
    ID_MUST_NOT_BE_INT_MAX = 7
    EXISTS_WITH_DIFFERENT_FLAGS = 8
    EXISTS_WITH_DIFFERENT_PENDING_ID = 9
    EXISTS_WITH_DIFFERENT_TIMEOUT = 10
    EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID = 11
    EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID = 12
    EXISTS_WITH_DIFFERENT_AMOUNT = 13
    EXISTS_WITH_DIFFERENT_USER_DATA_128 = 14
    EXISTS_WITH_DIFFERENT_USER_DATA_64 = 15
    EXISTS_WITH_DIFFERENT_USER_DATA_32 = 16
    EXISTS_WITH_DIFFERENT_LEDGER = 17
    EXISTS_WITH_DIFFERENT_CODE = 18
    ID_ALREADY_FAILED = 19
    FLAGS_ARE_MUTUALLY_EXCLUSIVE = 20
    DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO = 21
    DEBIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX = 22
    CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO = 23
    CREDIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX = 24
    ACCOUNTS_MUST_BE_DIFFERENT = 25
    PENDING_ID_MUST_BE_ZERO = 26
    PENDING_ID_MUST_NOT_BE_ZERO = 27
    PENDING_ID_MUST_NOT_BE_INT_MAX = 28
    PENDING_ID_MUST_BE_DIFFERENT = 29
    TIMEOUT_RESERVED_FOR_PENDING_TRANSFER = 30
    CLOSING_TRANSFER_MUST_BE_PENDING = 31
    LEDGER_MUST_NOT_BE_ZERO = 32
    CODE_MUST_NOT_BE_ZERO = 33
    DEBIT_ACCOUNT_NOT_FOUND = 34
    CREDIT_ACCOUNT_NOT_FOUND = 35
    ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER = 36
    TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS = 37
    PENDING_TRANSFER_NOT_FOUND = 38
    PENDING_TRANSFER_NOT_PENDING = 39
    PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID = 40
    PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID = 41
    PENDING_TRANSFER_HAS_DIFFERENT_LEDGER = 42
    PENDING_TRANSFER_HAS_DIFFERENT_CODE = 43
    EXCEEDS_PENDING_TRANSFER_AMOUNT = 44
    PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT = 45
    PENDING_TRANSFER_ALREADY_POSTED = 46
    PENDING_TRANSFER_ALREADY_VOIDED = 47
    PENDING_TRANSFER_EXPIRED = 48
    DEBIT_ACCOUNT_ALREADY_CLOSED = 49
    CREDIT_ACCOUNT_ALREADY_CLOSED = 50
    OVERFLOWS_DEBITS_PENDING = 51
    OVERFLOWS_CREDITS_PENDING = 52
    OVERFLOWS_DEBITS_POSTED = 53
    OVERFLOWS_CREDITS_POSTED = 54
    OVERFLOWS_DEBITS = 55
    OVERFLOWS_CREDITS = 56
    OVERFLOWS_TIMEOUT = 57
    EXCEEDS_CREDITS = 58
    EXCEEDS_DEBITS = 59
    EXISTS = 60
    IMPORTED_EVENT_EXPECTED = 61
    IMPORTED_EVENT_NOT_EXPECTED = 62
    IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE = 63
    IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE = 64
    IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS = 65
    IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_DEBIT_ACCOUNT = 66
    IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_CREDIT_ACCOUNT = 67
    IMPORTED_EVENT_TIMEOUT_MUST_BE_ZERO = 68


_A = CreateAccountResult
_R = CreateTransferResult

#: The order in which the account rules are checked: the first that fails is the result.
ACCOUNT_CHECK_ORDER: tuple[CreateAccountResult, ...] = (
    _A.LINKED_EVENT_FAILED,
    _A.LINKED_EVENT_CHAIN_OPEN,
    _A.IMPORTED_EVENT_EXPECTED,
    _A.IMPORTED_EVENT_NOT_EXPECTED,
    _A.TIMESTAMP_MUST_BE_ZERO,
    _A.IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE,
    _A.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE,
    _A.RESERVED_FLAG,
    _A.ID_MUST_NOT_BE_ZERO,
    _A.ID_MUST_NOT_BE_INT_MAX,
    _A.EXISTS_WITH_DIFFERENT_FLAGS,
    _A.EXISTS_WITH_DIFFERENT_USER_DATA_128,
    _A.EXISTS_WITH_DIFFERENT_USER_DATA_64,
    _A.EXISTS_WITH_DIFFERENT_USER_DATA_32,
    _A.EXISTS_WITH_DIFFERENT_LEDGER,
    _A.EXISTS_WITH_DIFFERENT_CODE,
    _A.EXISTS,
    _A.FLAGS_ARE_MUTUALLY_EXCLUSIVE,
    _A.DEBITS_PENDING_MUST_BE_ZERO,
    _A.DEBITS_POSTED_MUST_BE_ZERO,
    _A.CREDITS_PENDING_MUST_BE_ZERO,
    _A.CREDITS_POSTED_MUST_BE_ZERO,
    _A.LEDGER_MUST_NOT_BE_ZERO,
    _A.CODE_MUST_NOT_BE_ZERO,
    _A.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS,
)

#: The order in which the transfer rules are checked (TigerBeetle's precedence). Posts and voids branch
#: off after the id checks and run their own rules (flags, pending id, the pending transfer, closed
#: accounts); the rest run the list top to bottom.
TRANSFER_CHECK_ORDER: tuple[CreateTransferResult, ...] = (
    _R.LINKED_EVENT_FAILED,
    _R.LINKED_EVENT_CHAIN_OPEN,
    _R.IMPORTED_EVENT_EXPECTED,
    _R.IMPORTED_EVENT_NOT_EXPECTED,
    _R.TIMESTAMP_MUST_BE_ZERO,
    _R.IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE,
    _R.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE,
    _R.RESERVED_FLAG,
    _R.ID_MUST_NOT_BE_ZERO,
    _R.ID_MUST_NOT_BE_INT_MAX,
    _R.EXISTS_WITH_DIFFERENT_FLAGS,
    _R.EXISTS_WITH_DIFFERENT_PENDING_ID,
    _R.EXISTS_WITH_DIFFERENT_TIMEOUT,
    _R.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID,
    _R.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID,
    _R.EXISTS_WITH_DIFFERENT_AMOUNT,
    _R.EXISTS_WITH_DIFFERENT_USER_DATA_128,
    _R.EXISTS_WITH_DIFFERENT_USER_DATA_64,
    _R.EXISTS_WITH_DIFFERENT_USER_DATA_32,
    _R.EXISTS_WITH_DIFFERENT_LEDGER,
    _R.EXISTS_WITH_DIFFERENT_CODE,
    _R.EXISTS,
    _R.ID_ALREADY_FAILED,
    _R.FLAGS_ARE_MUTUALLY_EXCLUSIVE,
    _R.DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO,
    _R.DEBIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX,
    _R.CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO,
    _R.CREDIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX,
    _R.ACCOUNTS_MUST_BE_DIFFERENT,
    _R.PENDING_ID_MUST_BE_ZERO,
    _R.PENDING_ID_MUST_NOT_BE_ZERO,
    _R.PENDING_ID_MUST_NOT_BE_INT_MAX,
    _R.PENDING_ID_MUST_BE_DIFFERENT,
    _R.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER,
    _R.CLOSING_TRANSFER_MUST_BE_PENDING,
    _R.LEDGER_MUST_NOT_BE_ZERO,
    _R.CODE_MUST_NOT_BE_ZERO,
    _R.DEBIT_ACCOUNT_NOT_FOUND,
    _R.CREDIT_ACCOUNT_NOT_FOUND,
    _R.ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER,
    _R.TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS,
    _R.PENDING_TRANSFER_NOT_FOUND,
    _R.PENDING_TRANSFER_NOT_PENDING,
    _R.PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID,
    _R.PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID,
    _R.PENDING_TRANSFER_HAS_DIFFERENT_LEDGER,
    _R.PENDING_TRANSFER_HAS_DIFFERENT_CODE,
    _R.EXCEEDS_PENDING_TRANSFER_AMOUNT,
    _R.PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT,
    _R.PENDING_TRANSFER_ALREADY_POSTED,
    _R.PENDING_TRANSFER_ALREADY_VOIDED,
    _R.PENDING_TRANSFER_EXPIRED,
    _R.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS,
    _R.IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_DEBIT_ACCOUNT,
    _R.IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_CREDIT_ACCOUNT,
    _R.IMPORTED_EVENT_TIMEOUT_MUST_BE_ZERO,
    _R.DEBIT_ACCOUNT_ALREADY_CLOSED,
    _R.CREDIT_ACCOUNT_ALREADY_CLOSED,
    _R.OVERFLOWS_DEBITS_PENDING,
    _R.OVERFLOWS_CREDITS_PENDING,
    _R.OVERFLOWS_DEBITS_POSTED,
    _R.OVERFLOWS_CREDITS_POSTED,
    _R.OVERFLOWS_DEBITS,
    _R.OVERFLOWS_CREDITS,
    _R.OVERFLOWS_TIMEOUT,
    _R.EXCEEDS_CREDITS,
    _R.EXCEEDS_DEBITS,
)

#: Failures that depend on the state at the time (an account missing or closed, money short, the pending
#: transfer not there yet): retrying the same request later could succeed, so, as in TigerBeetle, the id
#: is spent: any later event with that id answers ``id_already_failed`` (retry with a new id). Every other
#: failure depends on the request alone and is not remembered: a corrected request with the same id is
#: evaluated afresh. Account failures are never remembered.
TRANSIENT_TRANSFER_FAILURES = frozenset(
    {
        int(_R.DEBIT_ACCOUNT_NOT_FOUND),
        int(_R.CREDIT_ACCOUNT_NOT_FOUND),
        int(_R.PENDING_TRANSFER_NOT_FOUND),
        int(_R.EXCEEDS_CREDITS),
        int(_R.EXCEEDS_DEBITS),
        int(_R.DEBIT_ACCOUNT_ALREADY_CLOSED),
        int(_R.CREDIT_ACCOUNT_ALREADY_CLOSED),
    }
)

#: Results that leave the event's state as the client asked for: created now, or created before.
APPLIED_ACCOUNT_RESULTS = frozenset({int(_A.OK), int(_A.EXISTS)})
APPLIED_TRANSFER_RESULTS = frozenset({int(_R.OK), int(_R.EXISTS)})


class Account(msgspec.Struct, array_like=True, gc=False):
    """An account; balances are maintained by the engine and must be zero when creating one.

    ``timestamp`` is assigned by the engine (unique, nanoseconds, monotonic); it must be zero on create,
    except with the ``IMPORTED`` flag, where it carries the account's original (past) timestamp.
    An account may be created already ``CLOSED``.
    """

    id: int
    ledger: int
    code: int
    flags: int = 0
    debits_pending: int = 0
    debits_posted: int = 0
    credits_pending: int = 0
    credits_posted: int = 0
    user_data_128: int = 0
    user_data_64: int = 0
    user_data_32: int = 0
    timestamp: int = 0


class Transfer(msgspec.Struct, array_like=True, gc=False):
    """A transfer of ``amount`` minor units from ``debit_account_id`` to ``credit_account_id``.

    ``timeout`` (seconds) applies to pending transfers only; a post or void names the pending transfer in
    ``pending_id`` and may leave the accounts, ledger, code and user data zero to mean "as the pending
    transfer". A post moves ``amount`` (0 included); ``AMOUNT_MAX`` means the whole pending amount. A void
    with ``amount`` 0 voids the whole pending amount (any other amount must equal it).
    """

    id: int
    debit_account_id: int = 0
    credit_account_id: int = 0
    amount: int = 0
    ledger: int = 0
    code: int = 0
    flags: int = 0
    pending_id: int = 0
    timeout: int = 0
    user_data_128: int = 0
    user_data_64: int = 0
    user_data_32: int = 0
    timestamp: int = 0


class AccountBalance(msgspec.Struct, array_like=True, gc=False):
    """An account's balances right after one of its transfers (accounts with the ``HISTORY`` flag)."""

    timestamp: int
    debits_pending: int
    debits_posted: int
    credits_pending: int
    credits_posted: int


class AccountFilter(msgspec.Struct, kw_only=True):
    """Which transfers (or balances) of one account a query returns, in timestamp order.

    Zero in ``user_data_*``, ``code`` and the timestamps means "no filter". As in TigerBeetle, a filter
    that can match nothing (``limit`` 0, neither ``debits`` nor ``credits``, ``timestamp_min`` after
    ``timestamp_max``, an unknown account) returns nothing; a ``limit`` above ``pay_query_limit_max`` is
    refused (TigerBeetle's clients refuse it too, ``too_much_data``).
    """

    account_id: int
    user_data_128: int = 0
    user_data_64: int = 0
    user_data_32: int = 0
    code: int = 0
    timestamp_min: int = 0
    timestamp_max: int = 0
    limit: int = 100
    debits: bool = True
    credits: bool = True
    reversed: bool = False


class QueryFilter(msgspec.Struct, kw_only=True):
    """Accounts or transfers whose fields equal every nonzero field here, in timestamp order."""

    user_data_128: int = 0
    user_data_64: int = 0
    user_data_32: int = 0
    ledger: int = 0
    code: int = 0
    timestamp_min: int = 0
    timestamp_max: int = 0
    limit: int = 100
    reversed: bool = False


# ---------------------------------------------------------------------------------------- field widths


def _out_of_range(kind: str, index: int, e: object, fields: tuple[tuple[str, int], ...]) -> str:
    for name, bits in fields:
        v = getattr(e, name)
        if not 0 <= v < 1 << bits:
            return f"{kind} {index}: {name} {v} does not fit in u{bits}"
    raise AssertionError("unreachable: a value was out of range")  # pragma: no cover


_ACCOUNT_WIDTHS = (
    ("id", 128),
    ("debits_pending", 128),
    ("debits_posted", 128),
    ("credits_pending", 128),
    ("credits_posted", 128),
    ("user_data_128", 128),
    ("user_data_64", 64),
    ("user_data_32", 32),
    ("ledger", 32),
    ("code", 16),
    ("flags", 16),
    ("timestamp", 64),
)
_TRANSFER_WIDTHS = (
    ("id", 128),
    ("debit_account_id", 128),
    ("credit_account_id", 128),
    ("amount", 128),
    ("pending_id", 128),
    ("user_data_128", 128),
    ("user_data_64", 64),
    ("user_data_32", 32),
    ("timeout", 32),
    ("ledger", 32),
    ("code", 16),
    ("flags", 16),
    ("timestamp", 64),
)


def check_accounts(events: Sequence[Account]) -> str | None:
    """None if every field of every account fits its width, else what does not (the first one)."""
    for i, a in enumerate(events):
        # A negative value makes the OR negative and its shift -1: one test covers both ends.
        if (
            (a.id | a.debits_pending | a.debits_posted | a.credits_pending | a.credits_posted | a.user_data_128) >> 128
            or (a.user_data_64 | a.timestamp) >> 64
            or (a.user_data_32 | a.ledger) >> 32
            or (a.code | a.flags) >> 16
        ):
            return _out_of_range("account", i, a, _ACCOUNT_WIDTHS)
    return None


def check_transfers(events: Sequence[Transfer]) -> str | None:
    """None if every field of every transfer fits its width, else what does not (the first one)."""
    for i, t in enumerate(events):
        if (
            (t.id | t.debit_account_id | t.credit_account_id | t.amount | t.pending_id | t.user_data_128) >> 128
            or (t.user_data_64 | t.timestamp) >> 64
            or (t.user_data_32 | t.timeout | t.ledger) >> 32
            or (t.code | t.flags) >> 16
        ):
            return _out_of_range("transfer", i, t, _TRANSFER_WIDTHS)
    return None
