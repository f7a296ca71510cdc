"""Every bound of the checkout gateway, named ``*_max`` (units last) and checked where input arrives.

Relations between them are asserted once, at import: a broken relation is a programmer error.
"""

from __future__ import annotations

from liangcao.errors import InvariantViolation

#: One HTTP body (orders, pays, refunds are small JSON objects): anything longer is refused with 413.
body_bytes_max = 16 * 1024
#: One order's amount in fen: a hundred million yuan. Refunds and top-ups are bounded by it too.
amount_fen_max = 10**10
#: Buyer and merchant ids: ``[a-z0-9_-]``, this long at most (they name payments-core accounts).
party_id_chars_max = 32
#: The ``Idempotency-Key`` header: printable ASCII, this long at most.
idempotency_key_chars_max = 128
#: Free text on an order or a refund.
note_chars_max = 256
#: Refunds of one order (each is a record and, after settlement, a reverse transfer).
refunds_per_order_max = 64
#: Orders a settlement report or a listing returns at most.
report_orders_max = 1000
#: Orders one auto-confirm sweep settles at most (the rest wait for the next sweep).
auto_confirm_sweep_max = 2000
#: Events in one payments-core batch gathered from single requests (the core's own limit).
batch_events_max = 8190
#: Chains a single request may send (a settlement is three transfers; nothing sends more).
chain_events_max = 4
#: Batches the batcher keeps in flight at the embedded engine (it pipelines behind the fsync).
batches_in_flight_max = 4
#: Auto-confirm window: at most a year, at least a second.
auto_confirm_s_max = 366 * 24 * 3600
#: A time in a query (milliseconds since the epoch): SQLite's integers hold it.
time_ms_max = 1 << 62
#: A session's life (``POST /v1/sessions``, ``liangcao checkout token --ttl-s``): at most 30 days.
session_ttl_s_max = 30 * 24 * 3600
#: One session token (``lc1.<claims>.<mac>``: about 150 characters for the longest subject).
session_token_chars_max = 512
#: The ``Authorization`` header: longer is refused (401) before anything is decoded.
authorization_chars_max = 600
#: Platform fee in basis points of the order amount (10,000 = all of it): at most 30 %.
fee_bps_max = 3000

if session_token_chars_max + len("Bearer ") > authorization_chars_max:
    raise InvariantViolation(1, "a session token must fit in authorization_chars_max")
if chain_events_max > batch_events_max:
    raise InvariantViolation(1, "chain_events_max must fit in one payments-core batch")
if amount_fen_max >= 1 << 63:
    raise InvariantViolation(1, "amount_fen_max must fit SQLite's 64-bit integers")
