"""The HTTP API (FastAPI): ``/v1`` endpoints, server-sent events, metrics."""
