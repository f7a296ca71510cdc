"""Who is calling the checkout gateway: session tokens the gateway checks without a database lookup.

A session is ``lc1.<claims>.<mac>``: ``claims`` is base64url (no padding) of a msgpack array ``[role,
subject, expires_ms, kid, issued_ms]`` (:class:`Claims`, read strictly: no extra or missing field, no float
where an integer belongs), ``mac`` is base64url of HMAC-SHA256 over the ASCII text ``lc1.<claims>`` under
the gateway's session key (``HOME/session.key``, 32 random bytes, made on first start with mode 0600).
The gateway checks the MAC in constant time (:func:`hmac.compare_digest`) before it decodes anything,
then the key id and the expiry against its own wall clock. Every gateway process of one deployment shares
the folder, hence the key, so a token issued by one is good at all of them.

Why HMAC and not a signature (Ed25519 by the platform's login service): the only verifiers are the
gateway's own processes, which share the folder; a MAC costs about a microsecond, the verification of an
Ed25519 signature tens, on a path that runs once per request at ten times capacity. A signature pays off
when parties who must not be able to issue tokens have to verify them (other services, other
organisations); the format's version prefix (``lc1.``) leaves room for that (``lc2.``, Ed25519) without
confusing the two: a token is checked only by the scheme its prefix names, and there is no ``alg`` field
for a caller to choose.

Roles: ``shopper`` (a buyer: their wallet and orders), ``merchant`` (its orders, refunds, settlement) and
``operator`` (the platform: top-ups, auto-confirm, flow rules, anything). The gateway's operator token
(``HOME/operator.token``) is accepted as the operator too; only it may issue sessions
(``POST /v1/sessions``), so a stolen session cannot mint others.

The token core (format, MAC, key and operator-token files) is :mod:`liangcao.sessions`, shared with the
credit service; this module maps its refusals to the gateway's codes (``UNAUTHENTICATED``, ``BAD_REQUEST``,
``BAD_PARTY_ID``) and narrows subjects to the gateway's party ids. The realm ``checkout`` is in the key id.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from liangcao import sessions
from liangcao.checkout import limits
from liangcao.checkout.codes import CheckoutCode, CheckoutError
from liangcao.checkout.service import check_party
from liangcao.sessions import OPERATOR, PREFIX, ROLES, SESSION_KEY_FILE, Caller, Claims, _b64, _unb64

__all__ = [
    "OPERATOR",
    "PREFIX",
    "ROLES",
    "SESSION_KEY_FILE",
    "Caller",
    "Claims",
    "Identity",
    "SessionKey",
    "_b64",
    "_unb64",
    "forbidden",
    "session_key",
    "unauthenticated",
]

#: The realm in the gateway's key id: a credit service's token is not the gateway's, even under one secret.
REALM = "checkout"
_wall_ms = sessions.wall_ms


def unauthenticated(message: str) -> CheckoutError:
    """401 ``UNAUTHENTICATED``: no token, or one that is malformed, forged, expired or of another key."""
    return CheckoutError(CheckoutCode.UNAUTHENTICATED, message)


def forbidden(message: str) -> CheckoutError:
    """403 ``FORBIDDEN``: a good token whose subject may not act on this order, wallet or merchant."""
    return CheckoutError(CheckoutCode.FORBIDDEN, message)


class SessionKey(sessions.SessionKey):
    """Issues and checks the gateway's session tokens under one secret (:class:`liangcao.sessions.SessionKey`
    with the gateway's limits and codes)."""

    def __init__(self, secret: bytes, *, now_ms: Callable[[], int] = _wall_ms) -> None:
        super().__init__(secret, realm=REALM, now_ms=now_ms, token_chars_max=limits.session_token_chars_max)

    def issue(
        self, role: str, subject: str, ttl_s: int, *, ttl_s_max: int = limits.session_ttl_s_max
    ) -> tuple[str, int]:
        """(token, expires_ms) for ``subject`` in ``role``, good for ``ttl_s`` seconds."""
        if role not in ROLES:
            raise CheckoutError(CheckoutCode.BAD_REQUEST, f"role must be one of {', '.join(ROLES)}")
        check_party(subject, role)
        try:
            return super().issue(role, subject, ttl_s, ttl_s_max=min(ttl_s_max, limits.session_ttl_s_max))
        except sessions.SessionArgument as exc:
            raise CheckoutError(CheckoutCode.BAD_REQUEST, str(exc)) from None

    def verify(self, token: str) -> Caller:
        """The caller ``token`` names; ``UNAUTHENTICATED`` unless it is well formed, ours, untouched and live."""
        try:
            return super().verify(token)
        except sessions.SessionRefused as exc:
            raise unauthenticated(str(exc)) from None


def session_key(home: Path, *, now_ms: Callable[[], int] = _wall_ms) -> SessionKey:
    """The session key of the gateway in ``home``: made on first start (0600), else read
    (:func:`liangcao.sessions.key_secret`: processes starting together agree on one key)."""
    return SessionKey(sessions.key_secret(home), now_ms=now_ms)


class Identity(sessions.Identity):
    """The gateway's check of the ``Authorization`` header: a session token, or the operator token."""

    def __init__(self, key: SessionKey, operator_token: str | None) -> None:
        super().__init__(key, operator_token, header_chars_max=limits.authorization_chars_max)
        self.key: SessionKey = key

    def refused(self, message: str) -> Exception:
        return unauthenticated(message)
