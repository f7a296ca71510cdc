"""Supply-chain finance: settlement tokens, invoices, receivable vouchers (e信 / 云信 style), warehouse
receipts, commercial bills and factoring pools.

Parties are organisations (``org1``); a party acts through a signature of one of its members with role
``admin`` or ``member``. Dates are ISO ``YYYY-MM-DD`` in arguments and day numbers (days since
1970-01-01, UTC) in state; "today" is the block time's day. Money is integer fen.
"""
