"""Session headers for the checkout tests, issued from the gateway's own folder (``liangcao.checkout.identity``).

The gateway has no open mode: a test calls it as someone. ``operator(home)`` is the gateway's operator token
(who may do anything: the tests of money and state machines); ``shopper``/``merchant`` are sessions signed
with ``HOME/session.key`` exactly as ``POST /v1/sessions`` or ``liangcao checkout token`` issue them.
"""

from __future__ import annotations

from pathlib import Path

from liangcao.checkout.http import operator_token
from liangcao.checkout.identity import session_key


def bearer(home: Path, role: str, subject: str, ttl_s: int = 3600) -> dict[str, str]:
    """``Authorization`` for a session of ``subject`` in ``role`` at the gateway in ``home``."""
    token, _ = session_key(home).issue(role, subject, ttl_s)
    return {"Authorization": f"Bearer {token}"}


def shopper(home: Path, name: str, ttl_s: int = 3600) -> dict[str, str]:
    return bearer(home, "shopper", name, ttl_s)


def merchant(home: Path, name: str, ttl_s: int = 3600) -> dict[str, str]:
    return bearer(home, "merchant", name, ttl_s)


def operator(home: Path) -> dict[str, str]:
    """The gateway's operator token (``HOME/operator.token``), made if the gateway has not started yet."""
    return {"Authorization": f"Bearer {operator_token(home)}"}
