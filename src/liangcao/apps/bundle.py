"""The contract bundle a node runs by default.

Apps sit above the runtime, so the bundle is assembled here rather than in ``liangcao.contracts``.
"""

from __future__ import annotations

from liangcao.contracts.base import Registry


def default_registry() -> Registry:
    """Every built-in contract: the system contract and the shipped applications."""
    from liangcao.apps.abs.deal import AbsDeal
    from liangcao.apps.cover.contract import Cover
    from liangcao.apps.pdc import PrivateRecords
    from liangcao.apps.scf.bills import Bills
    from liangcao.apps.scf.factoring import Factoring
    from liangcao.apps.scf.invoices import Invoices
    from liangcao.apps.scf.private import PrivateFinancing
    from liangcao.apps.scf.receipts import Receipts
    from liangcao.apps.scf.tokens import Tokens
    from liangcao.apps.scf.vouchers import Vouchers
    from liangcao.apps.shipping.dangerous_goods import DangerousGoods
    from liangcao.apps.trace.anchor import Trace
    from liangcao.apps.wallet import Wallet
    from liangcao.contracts.consortium import Consortium

    return Registry(
        [
            Consortium(),
            Wallet(),
            Tokens(),
            Invoices(),
            Vouchers(),
            Receipts(),
            Bills(),
            Factoring(),
            Trace(),
            DangerousGoods(),
            AbsDeal(),
            Cover(),
            PrivateRecords(),
            PrivateFinancing(),
        ]
    )
