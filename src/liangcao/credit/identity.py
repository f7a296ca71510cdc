"""Who is calling the credit service: session tokens (:mod:`liangcao.sessions`) under the service's own key.

The credit service keeps, in its folder (the folder of its records, ``DATA`` of ``liangcao credit start``),
``session.key`` (32 random bytes, 0600) and ``operator.token`` (0600), both made on first start. A session
is ``lc1.<claims>.<mac>`` exactly as at the checkout gateway, but under the realm ``credit``: a gateway's
token is not the credit service's, even if both were given one folder. Only the operator token issues
sessions (``POST /v1/credit/sessions`` or ``liangcao credit token``), so a stolen session cannot mint others.

Refusals are the service's own codes: ``UNAUTHENTICATED`` (3429, 401) for a missing, malformed, forged,
expired or foreign token; ``FORBIDDEN`` (3430, 403) for a good token whose subject may not act on the
shopper, plan, offer or loan named (the rules are in :mod:`liangcao.credit.http`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from liangcao import sessions
from liangcao.codes import Code
from liangcao.credit.errors import CreditCode, CreditError, check_id
from liangcao.sessions import Caller

#: The realm in the credit service's key id.
REALM = "credit"
#: The challenge a 401 names (``WWW-Authenticate``).
WWW_AUTHENTICATE = 'Bearer realm="liangcao-credit"'


def unauthenticated(message: str) -> CreditError:
    """401 ``UNAUTHENTICATED``: no token, or one that is malformed, forged, expired or of another key."""
    return CreditError(CreditCode.UNAUTHENTICATED, message)


def forbidden(c: Caller, what: str) -> CreditError:
    """403 ``FORBIDDEN``: ``c`` is who it says, but may not do ``what``."""
    return CreditError(CreditCode.FORBIDDEN, f"{c.role} {c.subject!r} may not {what}")


def session_key(home: Path, *, now_ms: Callable[[], int] = sessions.wall_ms) -> sessions.SessionKey:
    """The session key of the credit service in ``home`` (made on first start, 0600)."""
    return sessions.SessionKey(sessions.key_secret(home), realm=REALM, now_ms=now_ms)


def operator_token(home: Path) -> str:
    """The operator token of the credit service in ``home`` (made on first start, 0600)."""
    return sessions.operator_token(home)


def issue(key: sessions.SessionKey, role: str, subject: str, ttl_s: int) -> tuple[str, int]:
    """(token, expires_ms): a session of ``subject`` (a credit id: shopper or merchant) in ``role``.
    Refusals: ``INVALID_ARGUMENT`` (role, life), ``BAD_ID`` (subject)."""
    if role not in sessions.ROLES:
        raise CreditError(Code.INVALID_ARGUMENT, f"role must be one of {', '.join(sessions.ROLES)}")
    check_id(subject, role)
    try:
        return key.issue(role, subject, ttl_s)
    except sessions.SessionArgument as exc:
        raise CreditError(Code.INVALID_ARGUMENT, str(exc)) from None


class CreditIdentity(sessions.Identity):
    """The credit service's check of the ``Authorization`` header: a session, or the operator token."""

    def refused(self, message: str) -> Exception:
        return unauthenticated(message)

    def issue(self, role: str, subject: str, ttl_s: int) -> tuple[str, int]:
        """A session under this service's key (see :func:`issue`)."""
        return issue(self.key, role, subject, ttl_s)


def identity_in(home: Path, *, now_ms: Callable[[], int] = sessions.wall_ms) -> CreditIdentity:
    """The identity of the credit service whose folder is ``home``: its session key and operator token,
    made on first start."""
    return CreditIdentity(session_key(home, now_ms=now_ms), operator_token(home))
