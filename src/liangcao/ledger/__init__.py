"""The ledger: transactions, blocks, receipts, state, the pure executor, the store and audit."""
