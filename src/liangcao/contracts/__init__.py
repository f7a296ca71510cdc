"""The contract runtime: the programming model, the registry and the system contracts.

What a contract author imports: ``Contract``, ``@transaction``, ``@query``, ``@internal``, ``Context``,
``Args`` and ``NoArgs`` (arguments), ``Record`` (stored records), ``Index`` and ``Cursor`` (secondary indexes
and paged reads). The vocabulary (``OrgId``, ``MemberId``, ``Money``, ...) is in ``liangcao.domain``; the
test harness is ``liangcao.testing``.
"""

from liangcao.contracts.base import (
    Args,
    Context,
    Contract,
    NoArgs,
    Record,
    Registry,
    Signer,
    internal,
    query,
    transaction,
)
from liangcao.contracts.index import Cursor, Index, Page

__all__ = [
    "Args",
    "Context",
    "Contract",
    "Cursor",
    "Index",
    "NoArgs",
    "Page",
    "Record",
    "Registry",
    "Signer",
    "internal",
    "query",
    "transaction",
]
