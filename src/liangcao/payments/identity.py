"""Who is calling the payments service: its operator token, or a session the operator issued.

The service keeps, in its folder (``DATA`` of ``liangcao pay start``, also under ``--postgres``),
``operator.token`` and ``session.key`` (both 0600, made on first start; :mod:`liangcao.sessions`, the core
the checkout gateway and the credit service share). A session is ``lc1.<claims>.<mac>`` under the realm
``payments``: a gateway's or credit service's token is refused here even if they were given one folder.

Roles (:data:`ROLES`): ``service`` (a caller that moves money: the checkout gateway, the credit service,
the payout adapter; every route but ``PUT /v1/flow/rules``, the operator's) and ``read-only`` (dashboards, auditors: ``GET`` and the two lookup
``POST`` s, nothing that writes). The operator token is every route. Sessions are issued offline by
whoever can read the folder (``liangcao pay token``), so there is no route that mints them.

Only ``GET /v1/health`` is open. Refusals are answered before the body is read or anything is run:
``UNAUTHENTICATED`` (3500, 401, ``WWW-Authenticate: Bearer``), ``READ_ONLY`` (3501, 403) and
``OPERATOR_ONLY`` (3502, 403).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from liangcao import sessions
from liangcao.codes import Code
from liangcao.payments.errors import PayCode, PaymentsError
from liangcao.sessions import Caller

#: The realm in the payments key id.
REALM = "payments"
#: The roles the payments service issues and accepts (besides its operator token).
ROLES = ("service", "read-only")
#: The challenge a 401 names (``WWW-Authenticate``).
WWW_AUTHENTICATE = 'Bearer realm="liangcao-payments"'
#: The environment variable the CLI and the payout adapter read a token from.
TOKEN_ENV = "LIANGCAO_PAY_TOKEN"
#: Routes a read-only caller may POST to: lookups, which change nothing.
READ_POSTS = frozenset({"/v1/accounts/lookup", "/v1/transfers/lookup"})
#: Routes only the operator token may call: the admission rules (a service could otherwise shut others out).
OPERATOR_ONLY = frozenset({("PUT", "/v1/flow/rules")})
#: The one route open to anybody (liveness probes).
OPEN_PATHS = frozenset({"/v1/health"})


def refusal(caller: Caller, method: str, path: str) -> tuple[int, str] | None:
    """Why ``caller`` (already authenticated) may not ``method`` ``path``, as (code, message); None if it may.
    Read-only callers only read; only the operator token changes the admission rules."""
    who = f"{caller.role} {caller.subject!r}"
    if (method, path) in OPERATOR_ONLY and caller.role != "operator":
        return PayCode.OPERATOR_ONLY, f"{who} may not {method} {path}: only the operator token may"
    if caller.role == "read-only" and not (method in ("GET", "HEAD") or (method == "POST" and path in READ_POSTS)):
        return PayCode.READ_ONLY, f"{who} may not {method} {path}: it only reads"
    return None


class PayIdentity(sessions.Identity):
    """The payments service's check of the ``Authorization`` header: a session, or the operator token.

    A header that passed the full check is remembered (see :meth:`liangcao.sessions.Identity.caller`)."""

    def refused(self, message: str) -> Exception:
        return PaymentsError(PayCode.UNAUTHENTICATED, message)

    def issue(self, role: str, subject: str, ttl_s: int) -> tuple[str, int]:
        """(token, expires_ms): a session for the service or dashboard ``subject`` in ``role``
        (``INVALID_ARGUMENT`` for a role, name or life out of range)."""
        try:
            return self.key.issue(role, subject, ttl_s)
        except sessions.SessionArgument as exc:
            raise PaymentsError(Code.INVALID_ARGUMENT, str(exc)) from None


def identity_in(home: Path, *, now_ms: Callable[[], int] = sessions.wall_ms) -> PayIdentity:
    """The identity of the payments service whose folder is ``home``: its session key and operator token,
    made on first start (0600)."""
    key = sessions.SessionKey(sessions.key_secret(home), realm=REALM, now_ms=now_ms, roles=ROLES)
    return PayIdentity(key, sessions.operator_token(home))
