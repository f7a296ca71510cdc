"""liangcao (粮草): a consortium ledger for e-commerce fintech.

Layers, each depending only on those below (see ARCHITECTURE.md)::

    apps/        application contracts (demo.wallet; supply-chain finance and traceability to come)
    contracts/   the runtime: Contract, @transaction, @query, Context, the consortium system contract
    ledger/      transactions, blocks, receipts, state, the pure executor, the SQLite store, audit
    crypto/      Ed25519, X.509 identities, RFC 6962 Merkle trees
    encoding, codes, errors, limits
"""

__version__ = "0.1.0"
