"""Adapters: processes that follow the ledger's event stream and settle its obligations in money through the
payments core, exactly once across crashes, then record the payment back on the ledger (house plan §11).

``liangcao.adapters.payout``: the insurer's payout adapter for the ``cover`` contract (``docs/cover.md``).
"""
