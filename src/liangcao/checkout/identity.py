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
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from liangcao.checkout import limits
from liangcao.checkout.codes import CheckoutCode, CheckoutError
from liangcao.checkout.service import check_party

#: The session key's file in the gateway's folder (32 random bytes, base64url, mode 0600).
SESSION_KEY_FILE = "session.key"
#: The version prefix of a token: it names the scheme (HMAC-SHA256 over msgpack claims).
PREFIX = "lc1."
ROLES = ("shopper", "merchant", "operator")


class Claims(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    """What a session says: who (role, subject), until when (ms since the epoch), under which key."""

    role: str
    subject: str
    expires_ms: int
    kid: str
    issued_ms: int


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated caller of one request."""

    role: str
    subject: str

    @property
    def scope(self) -> str:
        """The prefix of this caller's idempotency keys: another caller's same key is another request."""
        return f"{self.role[0]}:{self.subject}:"


#: The caller a request presenting the gateway's operator token is.
OPERATOR = Caller("operator", "operator")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    # strict: only the url-safe alphabet, no padding (a second spelling of one token is refused)
    if not text or len(text) % 4 == 1 or text.strip("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"):
        raise ValueError("not base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:  # the spare bits of the last character set: another spelling of the same bytes
        raise ValueError("not canonical base64url")
    return data


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def unauthenticated(message: str) -> CheckoutError:
    """401 ``UNAUTHENTICATED``: no token, or one that is malformed, forged, expired or of another key."""
    return CheckoutError(CheckoutCode.UNAUTHENTICATED, message)


def forbidden(message: str) -> CheckoutError:
    """403 ``FORBIDDEN``: a good token whose subject may not act on this order, wallet or merchant."""
    return CheckoutError(CheckoutCode.FORBIDDEN, message)


class SessionKey:
    """Issues and checks session tokens under one secret."""

    def __init__(self, secret: bytes, *, now_ms: Callable[[], int] = _wall_ms) -> None:
        if len(secret) < 32:
            raise ValueError("a session key of at least 32 bytes")
        self._secret = secret
        self.now_ms = now_ms
        # the key id names the key without revealing it (a token of a replaced key is told apart from a forgery)
        self.kid = _b64(hashlib.sha256(b"liangcao checkout session key id\x00" + secret).digest()[:6])

    def _mac(self, signed: bytes) -> bytes:
        return hmac.new(self._secret, signed, hashlib.sha256).digest()

    def issue(self, role: str, subject: str, ttl_s: int) -> tuple[str, int]:
        """(token, expires_ms) for ``subject`` in ``role``, good for ``ttl_s`` seconds."""
        if role not in ROLES:
            raise CheckoutError(CheckoutCode.BAD_REQUEST, f"role must be one of {', '.join(ROLES)}")
        check_party(subject, role)
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or not 1 <= ttl_s <= limits.session_ttl_s_max:
            raise CheckoutError(
                CheckoutCode.BAD_REQUEST, f"ttl_s must be an integer 1..{limits.session_ttl_s_max} (session_ttl_s_max)"
            )
        now = self.now_ms()
        expires = now + ttl_s * 1000
        body = PREFIX + _b64(msgspec.msgpack.encode(Claims(role, subject, expires, self.kid, now)))
        return body + "." + _b64(self._mac(body.encode())), expires

    def verify(self, token: str) -> Caller:
        """The caller ``token`` names; ``UNAUTHENTICATED`` unless it is well formed, ours, untouched and live."""
        if len(token) > limits.session_token_chars_max:
            raise unauthenticated(f"session token over session_token_chars_max={limits.session_token_chars_max}")
        if not token.startswith(PREFIX):
            raise unauthenticated("not a session token of this gateway (lc1.<claims>.<mac>)")
        body, dot, mac_text = token.rpartition(".")
        if not dot or body.count(".") != 1:
            raise unauthenticated("malformed session token (lc1.<claims>.<mac>)")
        try:
            mac = _unb64(mac_text)
        except ValueError:
            raise unauthenticated("malformed session token: the MAC is not base64url") from None
        # the MAC first, in constant time: nothing an outsider wrote is decoded before it is proven ours
        if not hmac.compare_digest(mac, self._mac(body.encode())):
            raise unauthenticated("session token refused: its MAC does not match (forged, altered or another key)")
        try:
            claims = msgspec.msgpack.decode(_unb64(body[len(PREFIX) :]), type=Claims, strict=True)
        except (ValueError, msgspec.DecodeError):
            raise unauthenticated("malformed session token: unreadable claims") from None
        if claims.kid != self.kid:
            raise unauthenticated("session token of another session key (issued before a key change): sign in again")
        if claims.role not in ROLES:
            raise unauthenticated("session token with an unknown role")
        if self.now_ms() >= claims.expires_ms:
            raise unauthenticated("session token expired: sign in again")
        return Caller(claims.role, claims.subject)


def session_key(home: Path, *, now_ms: Callable[[], int] = _wall_ms) -> SessionKey:
    """The session key of the gateway in ``home``: made on first start (0600), else read.

    Several processes of one deployment may start together: the key is written to a file of its own and
    linked into place, which either succeeds whole or finds another's key, never half a file."""
    path = home / SESSION_KEY_FILE
    home.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        tmp = home / f".{SESSION_KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(_b64(secrets.token_bytes(32)) + "\n")
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):  # another process of the deployment made it first
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    try:
        secret = _unb64(path.read_text().strip())
    except ValueError:
        raise ValueError(f"{path}: not a session key (32 bytes, base64url)") from None
    if len(secret) < 32:
        raise ValueError(f"{path}: a session key of at least 32 bytes")
    return SessionKey(secret, now_ms=now_ms)


class Identity:
    """The gateway's check of the ``Authorization`` header: a session token, or the operator token."""

    def __init__(self, key: SessionKey, operator_token: str | None) -> None:
        self.key = key
        self._operator = ("Bearer " + operator_token).encode() if operator_token else None

    def caller(self, authorization: str | None) -> Caller:
        """The caller of a request with this ``Authorization`` header (``UNAUTHENTICATED`` otherwise).
        Only the header counts: a token in the query string or a cookie is not looked at."""
        if not authorization:
            raise unauthenticated("sign in: Authorization: Bearer <session token> is missing")
        if len(authorization) > limits.authorization_chars_max:
            raise unauthenticated(f"Authorization header over authorization_chars_max={limits.authorization_chars_max}")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token or " " in token:
            raise unauthenticated("Authorization must be 'Bearer <session token>'")
        if self._operator is not None and not token.startswith(PREFIX):
            raw = authorization.encode("utf-8", "surrogateescape")
            if hmac.compare_digest(raw, self._operator):
                return OPERATOR
        return self.key.verify(token)

    def is_operator_token(self, authorization: str | None) -> bool:
        """Whether the header carries the gateway's operator token itself (not an operator session)."""
        if self._operator is None or not authorization or len(authorization) > limits.authorization_chars_max:
            return False
        return hmac.compare_digest(authorization.encode("utf-8", "surrogateescape"), self._operator)
