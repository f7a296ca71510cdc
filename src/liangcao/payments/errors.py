"""The payments core's exceptions, in the project's two channels (``liangcao.errors``)::

    LiangcaoError
    └── PaymentsError           a request refused as a whole: malformed, over a limit, the engine closed
    Fault
    └── StoreError
        └── StorageCorrupt      the engine's files are damaged or unreadable: it refuses to open
            ├── WalCorrupt      a log record damaged anywhere but in the unacknowledged tail, or missing
            ├── SnapshotCorrupt a snapshot whose bytes, header or name do not agree
            └── FormatTooOld    files written under earlier rules that cannot be replayed under these

Every message is one line that names the file, the place and what to do; the CLI prints it as it is.

The service's own refusals are :class:`PayCode` (3500-3599, registered with :mod:`liangcao.codes`): who is
calling (``UNAUTHENTICATED`` 3500, 401; ``READ_ONLY`` 3501, 403; ``OPERATOR_ONLY`` 3502, 403). Malformed bodies and limits keep the
platform's shared codes (``INVALID_ARGUMENT``, ``TOO_LARGE``...), and per-event outcomes stay
``CreateAccountResult`` / ``CreateTransferResult`` (TigerBeetle's numbers, not codes of this registry).
"""

from __future__ import annotations

from enum import IntEnum

from liangcao import codes
from liangcao.codes import Code
from liangcao.errors import LiangcaoError, StoreError


class PayCode(IntEnum):
    """The payments service's own refusals (3500-3599)."""

    UNAUTHENTICATED = 3500  # no bearer token, or one malformed, forged, expired or of another key
    READ_ONLY = 3501  # a read-only session asked to write (create, post, void, pulse)
    OPERATOR_ONLY = 3502  # a session asked for what only the operator token does (the admission rules)


codes.register(
    PayCode, "payments", http={PayCode.UNAUTHENTICATED: 401, PayCode.READ_ONLY: 403, PayCode.OPERATOR_ONLY: 403}
)


class PaymentsError(LiangcaoError):
    """A request the payments service refuses as a whole (nothing applied)."""


class StorageCorrupt(StoreError):
    """The engine's folder cannot be trusted as it is; the engine refuses to open rather than guess."""

    def __init__(self, message: str) -> None:
        super().__init__(Code.NOT_READY, message)


class WalCorrupt(StorageCorrupt):
    """The log is damaged somewhere other than its unacknowledged tail, or a part of it is missing."""


class SnapshotCorrupt(StorageCorrupt):
    """A snapshot's checksum, header or file name disagree: it is not used, and the engine stops."""


class FormatTooOld(StorageCorrupt):
    """Log records written under the earlier rules: replaying them now could change acknowledged results."""
