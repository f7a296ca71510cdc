"""liangcao.payments: the money-movement core (a batch double-entry engine) beside the ledger.

``Engine`` is the embedded backend (one process, a write-ahead log and snapshots on disk);
``PostgresBackend`` keeps the same state in PostgreSQL with the same rules. Both take batches of up to
``limits.pay_batch_events_max`` accounts or transfers and answer one result code per event, with
TigerBeetle's semantics (``docs/payments.md`` lists the few deliberate differences).
"""

from liangcao.payments.engine import Engine
from liangcao.payments.errors import FormatTooOld, PaymentsError, SnapshotCorrupt, StorageCorrupt, WalCorrupt
from liangcao.payments.types import (
    AMOUNT_MAX,
    Account,
    AccountBalance,
    AccountFilter,
    AccountFlags,
    CreateAccountResult,
    CreateTransferResult,
    QueryFilter,
    Transfer,
    TransferFlags,
    TransferStatus,
)

__all__ = [
    "AMOUNT_MAX",
    "Account",
    "AccountBalance",
    "AccountFilter",
    "AccountFlags",
    "CreateAccountResult",
    "CreateTransferResult",
    "Engine",
    "FormatTooOld",
    "PaymentsError",
    "QueryFilter",
    "SnapshotCorrupt",
    "StorageCorrupt",
    "Transfer",
    "TransferFlags",
    "TransferStatus",
    "WalCorrupt",
]
