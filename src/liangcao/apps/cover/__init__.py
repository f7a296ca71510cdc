"""Consumer cover insurance on the ledger: products, policies, signed facts, claims (``docs/cover.md``)."""
