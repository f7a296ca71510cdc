"""liangcao.payments: the money-movement core (a batch double-entry engine) beside the ledger.

``Engine`` is the embedded backend (one process, a write-ahead log and snapshots on disk);
``PostgresBackend`` keeps the same state in PostgreSQL with the same rules. Both take batches of up to
``limits.pay_batch_events_max`` accounts or transfers and answer one result code per event.
"""

from liangcao.payments.engine import Engine, PaymentsError
from liangcao.payments.types import (
    Account,
    AccountBalance,
    AccountFilter,
    AccountFlags,
    CreateAccountResult,
    CreateTransferResult,
    Transfer,
    TransferFlags,
    TransferStatus,
)

__all__ = [
    "Account",
    "AccountBalance",
    "AccountFilter",
    "AccountFlags",
    "CreateAccountResult",
    "CreateTransferResult",
    "Engine",
    "PaymentsError",
    "Transfer",
    "TransferFlags",
    "TransferStatus",
]
