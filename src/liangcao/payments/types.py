"""The payments data model: accounts, transfers, flags and result codes.

Learned from TigerBeetle's model: an account belongs to one ledger (one currency) and carries four
balances (debits/credits, pending/posted); a transfer moves an integer amount in minor units (fen) from a
debit account to a credit account of the same ledger. Every id is a client-chosen unsigned 128-bit
integer, so a retried request is recognised. Results are stable integer codes, one per rule, checked in
the fixed order of the enums below (lower value first, except ``ok``).
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

import msgspec

U128_MAX = (1 << 128) - 1
U64_MAX = (1 << 64) - 1
U32_MAX = (1 << 32) - 1
U16_MAX = (1 << 16) - 1
NS_PER_S = 1_000_000_000


class AccountFlags(IntFlag):
    NONE = 0
    LINKED = 1 << 0
    DEBITS_MUST_NOT_EXCEED_CREDITS = 1 << 1
    CREDITS_MUST_NOT_EXCEED_DEBITS = 1 << 2
    HISTORY = 1 << 3
    CLOSED = 1 << 4


ACCOUNT_FLAGS_ALL = int(
    AccountFlags.LINKED
    | AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS
    | AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS
    | AccountFlags.HISTORY
)


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


TRANSFER_FLAGS_ALL = (1 << 8) - 1


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
    FIELD_OUT_OF_RANGE = 3
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
    ID_ALREADY_FAILED = 14
    FLAGS_ARE_MUTUALLY_EXCLUSIVE = 15
    DEBITS_PENDING_MUST_BE_ZERO = 16
    DEBITS_POSTED_MUST_BE_ZERO = 17
    CREDITS_PENDING_MUST_BE_ZERO = 18
    CREDITS_POSTED_MUST_BE_ZERO = 19
    LEDGER_MUST_NOT_BE_ZERO = 20
    CODE_MUST_NOT_BE_ZERO = 21


class CreateTransferResult(IntEnum):
    OK = 0
    LINKED_EVENT_FAILED = 1
    LINKED_EVENT_CHAIN_OPEN = 2
    FIELD_OUT_OF_RANGE = 3
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


class Account(msgspec.Struct, array_like=True, gc=False):
    """An account; balances are maintained by the engine and must be zero when creating one.

    ``timestamp`` is assigned by the engine (unique, nanoseconds, monotonic); it must be zero on create.
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
    ``pending_id`` and may leave the accounts, ledger and code zero to mean "as the pending transfer".
    A post with ``amount`` zero posts the whole pending amount.
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
    """Which transfers (or balances) of one account a query returns, in timestamp order."""

    account_id: int
    timestamp_min: int = 0
    timestamp_max: int = 0
    limit: int = 100
    debits: bool = True
    credits: bool = True
    reversed: bool = False
