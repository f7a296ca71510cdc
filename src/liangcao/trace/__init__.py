"""Traceability: GS1 EPCIS 2.0 events, their CBV 2.0 event hash ids, capture and provenance."""
