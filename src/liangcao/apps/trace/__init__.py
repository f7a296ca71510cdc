"""Traceability contracts: EPCIS 2.0 events anchored on the ledger (``anchor``)."""
