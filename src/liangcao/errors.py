"""The one exception tree of liangcao.

::

    LiangcaoError                 (code, message, detail)
    ├── EncodingError             bytes that are not canonical-model JSON
    ├── TxRejected                a transaction refused before ordering (admission)
    ├── ContractFailure           a business rule said no; recorded in the receipt, changes nothing
    ├── BlockInvalid              a block that must not be committed (bad link, bad root, bad seal)
    ├── StoreError                the durable store failed or is inconsistent: stops the commit
    └── InvariantViolation        a programmer error: the process must stop

Business outcomes of transactions are not exceptions to callers: the executor turns ``ContractFailure``
and ``EncodingError`` into receipt codes. The API layer translates the tree once, at its boundary, into
``{code, message, detail}``.
"""

from __future__ import annotations

from typing import Any


class LiangcaoError(Exception):
    def __init__(self, code: int, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.code = int(code)
        self.message = message
        self.detail = detail

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "detail": self.detail}

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


class StoreError(LiangcaoError):
    pass


class InvariantViolation(LiangcaoError):
    pass
