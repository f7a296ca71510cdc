"""The HTTP API (FastAPI): one router per noun over the node's services (``liangcao.node.services``).

``app`` assembles them (``create_app``); ``errors`` translates every error to ``{code, message, detail}``;
``deps`` holds what routers share (services, bearer tokens from ``auth``, bounded bodies). Routers: ``txs``,
``chain``, ``state``, ``queries``, ``attestations``, ``events`` (server-sent events), ``admin`` (health,
metrics), ``epcis`` (EPCIS 2.0 and provenance), ``dg``, ``explorer``, ``verify`` (the public check of an item).
"""
