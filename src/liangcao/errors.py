"""The one exception tree of liangcao.

::

    LiangcaoError                 (code, message, detail): outcomes and refusals, the same on every peer
    ├── EncodingError             bytes that are not canonical-model JSON
    ├── TxRejected                a transaction refused before ordering (admission)
    ├── ContractFailure           a business rule said no; recorded in the receipt, changes nothing
    └── BlockInvalid              a block that must not be committed (bad link, bad root, bad seal)

    Fault                         (code, message, detail): this machine failed; never a receipt
    ├── StoreError                the durable store failed or is inconsistent: stops the commit
    └── InvariantViolation        a programmer error: the process must stop

Two channels, as in Fabric's validator: a business outcome of a transaction is the same on every peer and
goes into the block as a receipt code; a fault (an I/O error, a full disk, memory, a broken invariant) is
this peer's alone, so it must never become a receipt (that would be a different state hash here than
everywhere else: a fork alarm instead of a stopped node). ``Fault`` is therefore *not* a ``LiangcaoError``:
``except LiangcaoError`` never catches it, contract code cannot turn it into an outcome, and the commit
stops; after a restart the block is executed again to the same hashes. The API layer translates both
trees once, at its boundary, into ``{code, message, detail}``.
"""

from __future__ import annotations

from typing import Any


class _Coded(Exception):
    """An exception with a stable code, a message and optional detail (both trees below)."""

    def __init__(self, code: int, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.code = int(code)
        self.message = message
        self.detail = detail

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "detail": self.detail}


class LiangcaoError(_Coded):
    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code}, message={self.message!r})"


class EncodingError(LiangcaoError):
    pass


class TxRejected(LiangcaoError):
    pass


class ContractFailure(LiangcaoError):
    pass


class BlockInvalid(LiangcaoError):
    pass


class Fault(_Coded):
    """This machine failed (see the module docstring): stops the commit, never recorded as an outcome."""


class StoreError(Fault):
    pass


class InvariantViolation(Fault):
    pass
