"""Session tokens a service checks without a database lookup: the core the checkout gateway and the credit
service share (each maps the refusals here to its own stable codes).

A session is ``lc1.<claims>.<mac>``: ``claims`` is base64url (no padding) of a msgpack array ``[role,
subject, expires_ms, kid, issued_ms]`` (:class:`Claims`, read strictly: no extra or missing field, no float
where an integer belongs), ``mac`` is base64url of HMAC-SHA256 over the ASCII text ``lc1.<claims>`` under
the service's session key (``HOME/session.key``, 32 random bytes, made on first start with mode 0600).
The MAC is checked in constant time (:func:`hmac.compare_digest`) before anything is decoded, then the key
id and the expiry against the service's own wall clock. Every process of one deployment shares the folder,
hence the key, so a token issued by one is good at all of them.

The key id is bound to a *realm* (``checkout``, ``credit``): a token issued by one service is refused by
another even when both were (wrongly) given one folder, because its key id names the other realm and the
key id is inside the MAC.

Why HMAC and not a signature: the only verifiers are the service's own processes, which share the folder;
a MAC costs about a microsecond, an Ed25519 verification tens. The version prefix (``lc1.``) leaves room
for a signed scheme (``lc2.``) without confusing the two: there is no ``alg`` field for a caller to choose.

Roles: ``shopper``, ``merchant``, ``operator`` (a service may name its own: the payments core issues
``service`` and ``read-only`` sessions). A service's operator token (``HOME/operator.token``) is
accepted as the operator too; a service lets only it issue sessions, so a stolen session cannot mint others.

Refusals are plain exceptions: :class:`SessionRefused` (the caller is not authenticated: 401 at the
service) and :class:`SessionArgument` (issue() was given a bad role, subject or life: 400).
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

#: The session key's file in a service's folder (32 random bytes, base64url, mode 0600).
SESSION_KEY_FILE = "session.key"
#: The operator token's file in a service's folder (made on first start, mode 0600).
OPERATOR_TOKEN_FILE = "operator.token"
#: The version prefix of a token: it names the scheme (HMAC-SHA256 over msgpack claims).
PREFIX = "lc1."
ROLES = ("shopper", "merchant", "operator")

#: A session's life at most: 30 days.
session_ttl_s_max = 30 * 24 * 3600
#: One session token (about 190 characters for the longest subject).
session_token_chars_max = 512
#: The whole ``Authorization`` header read (``Bearer `` and a token).
authorization_chars_max = 600
#: A subject (who the session names): printable ASCII without spaces; services narrow it further.
subject_chars_max = 64
#: Headers an :class:`Identity` remembers as verified (see :meth:`Identity.caller`).
verified_entries_max = 4096
_FOREVER = 2**63  # the operator token does not expire
#: The shortest secret a session key accepts, and the shortest operator token read from its file.
secret_bytes_min = 32


class SessionRefused(Exception):
    """The caller is not authenticated (no token, or one malformed, forged, expired or of another key):
    the message says which, in one line, and never echoes the token."""


class SessionArgument(ValueError):
    """``issue`` was asked for a session it does not make (a role, subject or life out of range)."""


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
        """A prefix for this caller's idempotency keys: another caller's same key is another request."""
        return f"{self.role[0]}:{self.subject}:"


#: The caller a request presenting the service's operator token is.
OPERATOR = Caller("operator", "operator")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


_B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _unb64(text: str) -> bytes:
    # strict: only the url-safe alphabet, no padding (a second spelling of one token is refused)
    if not text or len(text) % 4 == 1 or text.strip(_B64_ALPHABET):
        raise ValueError("not base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:  # the spare bits of the last character set: another spelling of the same bytes
        raise ValueError("not canonical base64url")
    return data


def wall_ms() -> int:
    """Milliseconds since the epoch, the clock sessions expire by."""
    return time.time_ns() // 1_000_000


def check_subject(subject: object) -> str:
    """A subject any service accepts: 1..``subject_chars_max`` printable ASCII characters, no space."""
    if (
        not isinstance(subject, str)
        or not 0 < len(subject) <= subject_chars_max
        or not subject.isascii()
        or not subject.isprintable()
        or " " in subject
    ):
        raise SessionArgument(f"subject must be 1..{subject_chars_max} printable ASCII characters without spaces")
    return subject


class SessionKey:
    """Issues and checks session tokens under one secret, for one realm (the service's name)."""

    def __init__(
        self,
        secret: bytes,
        *,
        realm: str,
        now_ms: Callable[[], int] = wall_ms,
        token_chars_max: int = session_token_chars_max,
        roles: tuple[str, ...] = ROLES,
    ) -> None:
        if len(secret) < secret_bytes_min:
            raise ValueError(f"a session key of at least {secret_bytes_min} bytes")
        self._secret = secret
        self.realm = realm
        self.now_ms = now_ms
        self.token_chars_max = token_chars_max
        self.roles = roles  # the roles this service issues and accepts
        # the key id names the key without revealing it (a token of a replaced key is told apart from a
        # forgery), and the realm (a token of another service is refused even under the same secret)
        label = f"liangcao {realm} session key id\x00".encode()
        self.kid = _b64(hashlib.sha256(label + secret).digest()[:6])

    def _mac(self, signed: bytes) -> bytes:
        return hmac.new(self._secret, signed, hashlib.sha256).digest()

    def issue(self, role: str, subject: str, ttl_s: int, *, ttl_s_max: int = session_ttl_s_max) -> tuple[str, int]:
        """(token, expires_ms) for ``subject`` in ``role``, good for ``ttl_s`` seconds (``SessionArgument``
        for a role, subject or life out of range)."""
        if role not in self.roles:
            raise SessionArgument(f"role must be one of {', '.join(self.roles)}")
        check_subject(subject)
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or not 1 <= ttl_s <= ttl_s_max:
            raise SessionArgument(f"ttl_s must be an integer 1..{ttl_s_max} (session_ttl_s_max)")
        now = self.now_ms()
        expires = now + ttl_s * 1000
        body = PREFIX + _b64(msgspec.msgpack.encode(Claims(role, subject, expires, self.kid, now)))
        return body + "." + _b64(self._mac(body.encode())), expires

    def verify(self, token: str) -> Caller:
        """The caller ``token`` names; ``SessionRefused`` unless it is well formed, ours, untouched and live."""
        return self.verify_until(token)[0]

    def verify_until(self, token: str) -> tuple[Caller, int]:
        """(the caller ``token`` names, when its session expires in ms): :meth:`verify` with the expiry."""
        if len(token) > self.token_chars_max:
            raise SessionRefused(f"session token over session_token_chars_max={self.token_chars_max}")
        if not token.startswith(PREFIX):
            raise SessionRefused(f"not a session token of this {self.realm} service (lc1.<claims>.<mac>)")
        body, dot, mac_text = token.rpartition(".")
        if not dot or body.count(".") != 1:
            raise SessionRefused("malformed session token (lc1.<claims>.<mac>)")
        try:
            mac = _unb64(mac_text)
        except ValueError:
            raise SessionRefused("malformed session token: the MAC is not base64url") from None
        # the MAC first, in constant time: nothing an outsider wrote is decoded before it is proven ours
        if not hmac.compare_digest(mac, self._mac(body.encode())):
            raise SessionRefused("session token refused: its MAC does not match (forged, altered or another key)")
        try:
            claims = msgspec.msgpack.decode(_unb64(body[len(PREFIX) :]), type=Claims, strict=True)
        except (ValueError, msgspec.DecodeError):
            raise SessionRefused("malformed session token: unreadable claims") from None
        if claims.kid != self.kid:
            raise SessionRefused("session token of another session key (issued before a key change): sign in again")
        if claims.role not in self.roles:
            raise SessionRefused("session token with an unknown role")
        if self.now_ms() >= claims.expires_ms:
            raise SessionRefused("session token expired: sign in again")
        return Caller(claims.role, claims.subject), claims.expires_ms


def _make_once(path: Path, content: str) -> None:
    """Write ``content`` to ``path`` (mode 0600) unless it exists. Processes of one deployment starting
    together: each writes a file of its own and links it into place, which either succeeds whole or finds
    another's file, so nobody ever reads half a file and all agree on one."""
    if path.exists():
        return
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(content + "\n")
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):  # another process of the deployment made it first
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def key_secret(home: Path, name: str = SESSION_KEY_FILE) -> bytes:
    """The session key's secret in ``home`` (made on first start, 0600); ``ValueError`` for a file that is
    not one."""
    path = home / name
    home.mkdir(parents=True, exist_ok=True)
    _make_once(path, _b64(secrets.token_bytes(32)))
    try:
        secret = _unb64(path.read_text().strip())
    except ValueError:
        raise ValueError(f"{path}: not a session key (32 bytes, base64url)") from None
    if len(secret) < secret_bytes_min:
        raise ValueError(f"{path}: a session key of at least {secret_bytes_min} bytes")
    return secret


def operator_token(home: Path, name: str = OPERATOR_TOKEN_FILE) -> str:
    """The operator token of the service in ``home`` (made on first start, readable by its owner only)."""
    path = home / name
    home.mkdir(parents=True, exist_ok=True)
    _make_once(path, secrets.token_urlsafe(32))
    token = path.read_text().strip()
    if len(token) < secret_bytes_min:
        raise ValueError(f"{path}: an operator token of at least {secret_bytes_min} characters")
    return token


def _raw(text: str) -> bytes:
    # a header read as latin-1, or any str a caller passes (lone surrogates included): bytes, never an error
    return text.encode("utf-8", "surrogateescape")


class Identity:
    """A service's check of the ``Authorization`` header: a session token, or the operator token."""

    def __init__(
        self, key: SessionKey, operator_token: str | None, *, header_chars_max: int = authorization_chars_max
    ) -> None:
        self.key = key
        self.header_chars_max = header_chars_max
        self._operator = operator_token.encode() if operator_token else None
        #: headers that passed the full check, by their SHA-256: (caller, expiry ms)
        self._verified: dict[bytes, tuple[Caller, int]] = {}

    def _token(self, authorization: str | list[str] | None) -> str:
        """The token of the one ``Authorization`` header (``SessionRefused`` otherwise)."""
        if isinstance(authorization, list):
            # RFC 9110: one Authorization field. Two are refused, not read as the first: a proxy, a WAF or an
            # audit log in front that reads the last would see another caller than the service does.
            if len(authorization) > 1:
                raise SessionRefused("Authorization given more than once: send one")
            authorization = authorization[0] if authorization else None
        if not authorization:
            raise SessionRefused("sign in: Authorization: Bearer <session token> is missing")
        if len(authorization) > self.header_chars_max:
            raise SessionRefused(f"Authorization header over authorization_chars_max={self.header_chars_max}")
        scheme, _, token = authorization.partition(" ")
        # the scheme is case-insensitive (RFC 9110 11.1), for the operator token as for a session
        if scheme.lower() != "bearer" or not token or " " in token:
            raise SessionRefused("Authorization must be 'Bearer <session token>'")
        return token

    def refused(self, message: str) -> Exception:
        """What a refused header raises: a service returns its own ``UNAUTHENTICATED`` error here."""
        return SessionRefused(message)

    def caller(self, authorization: str | list[str] | None) -> Caller:
        """The caller of a request with this ``Authorization`` header (:meth:`refused` otherwise); a list is
        every ``Authorization`` header of the request (more than one is refused). Only the header counts: a
        token in the query string or a cookie is not looked at."""
        try:
            return self._caller(authorization)
        except SessionRefused as exc:
            raise self.refused(str(exc)) from None

    def _caller(self, authorization: str | list[str] | None) -> Caller:
        token = self._token(authorization)
        # A caller presents one token for many requests (a shopper's page, a service, the surge's shoppers): a
        # header that passed the full check is remembered by its SHA-256 with its session's expiry, so the next
        # one costs a hash and a dict lookup (about 1 us) instead of the MAC and the claims (about 9 us, paid
        # again by the edge and by the application on every request). Only the digest is kept (the lookup
        # tells an outsider nothing about a token they do not hold); the expiry is checked every time; at
        # verified_entries_max the memory is emptied, so a flood of distinct good tokens costs the full
        # check, never memory.
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        known = self._verified.get(digest)
        if known is not None and self.key.now_ms() < known[1]:
            return known[0]
        operator = self._operator
        if operator is not None and not token.startswith(PREFIX) and hmac.compare_digest(_raw(token), operator):
            caller, until = OPERATOR, _FOREVER
        else:
            caller, until = self.key.verify_until(token)
        if len(self._verified) >= verified_entries_max:
            self._verified.clear()
        self._verified[digest] = (caller, until)
        return caller

    def is_operator_token(self, authorization: str | list[str] | None) -> bool:
        """Whether the request's one ``Authorization`` header carries the service's operator token itself
        (not an operator session)."""
        if self._operator is None:
            return False
        try:
            token = self._token(authorization)
        except SessionRefused:
            return False
        return hmac.compare_digest(_raw(token), self._operator)
