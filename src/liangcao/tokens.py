"""Bearer tokens, issued by a node's admin to a member, with a scope: ``read`` or ``write``.

A token is ``lc1.<base64url payload>.<base64url HMAC-SHA256>`` with payload ``{"member", "iat", "exp",
"scope"}`` (times in ms since the epoch), keyed by the node's secret (``token.secret`` in the node's home,
mode 0600). Why not JWT: the token is minted and checked by the same node, so a 20-line HMAC with the
standard library has no algorithm negotiation to get wrong and no dependency to keep.

Scopes: ``read`` lets the bearer read as the member; ``write`` also lets the node *sign as the member* with
a key it holds in custody (``POST /epcis/v2/capture``; only on a node started with custody). A token
without a scope (issued before scopes existed) is a read token. Submitting a transaction needs no token at
all: it carries its own signatures.

Revocation: ``liangcao token revoke --member M`` records in ``token.revoked`` (JSON ``{member: ms}``, next
to the secret) that every token of M issued up to that moment is void; the node re-reads that file when it
changes, and open event streams end (:meth:`TokenAuth.still_valid`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from liangcao.codes import Code
from liangcao.errors import LiangcaoError
from liangcao.limits import token_ttl_days_max

PREFIX = "lc1"
READ = "read"
WRITE = "write"
SCOPES: dict[str, frozenset[str]] = {READ: frozenset({READ}), WRITE: frozenset({READ, WRITE})}
REVOKED_FILE = "token.revoked"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _now_ms() -> int:
    return int(time.time() * 1000)


def new_secret(path: Path) -> bytes:
    secret = os.urandom(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret.hex())
    return secret


def load_secret(path: Path) -> bytes:
    return bytes.fromhex(path.read_text().strip())


@dataclass(frozen=True)
class Grant:
    """What a valid token lets its bearer do, and until when."""

    member: str
    scopes: frozenset[str]
    iat: int
    exp: int

    def allows(self, scope: str) -> bool:
        return scope in self.scopes


class Revocations:
    """``token.revoked``: per member, the time up to which its tokens are void; re-read when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None
        self._before: dict[str, int] = {}
        self._lock = threading.Lock()

    def revoked_before(self, member: str) -> int | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._lock:
            if stamp != self._seen:
                doc = json.loads(self.path.read_text() or "{}")
                if not isinstance(doc, dict):
                    raise ValueError(f"{self.path} must hold a JSON object")
                self._before = {str(k): int(v) for k, v in doc.items()}
                self._seen = stamp
            return self._before.get(member)

    def revoke(self, member: str, now_ms: int | None = None) -> int:
        """Void every token of ``member`` issued up to now (or ``now_ms``); returns that time."""
        at = now_ms if now_ms is not None else _now_ms()
        with self._lock:
            doc: dict[str, int] = json.loads(self.path.read_text() or "{}") if self.path.exists() else {}
            doc[member] = max(at, int(doc.get(member, 0)))
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
            os.replace(tmp, self.path)
            return doc[member]


class TokenAuth:
    def __init__(self, secret: bytes, revoked: Path | None = None) -> None:
        if len(secret) < 16:
            raise ValueError("token secret must be at least 16 bytes")
        self._secret = secret
        self.revocations = Revocations(revoked) if revoked is not None else None

    def create(self, member: str, days: int = 30, now_ms: int | None = None, scope: str = READ) -> str:
        """A token for ``member`` living ``days`` from ``now_ms`` (default: now; tests pass a past time to
        mint a token that expires soon). ``scope``: ``read`` (default) or ``write``."""
        if not 1 <= days <= token_ttl_days_max:
            raise ValueError(f"a token lives 1 to {token_ttl_days_max} days")
        if scope not in SCOPES:
            raise ValueError(f"a token's scope is one of {', '.join(SCOPES)}")
        now = now_ms if now_ms is not None else _now_ms()
        claims = {"member": member, "iat": now, "exp": now + days * 86_400_000, "scope": scope}
        payload = json.dumps(claims, sort_keys=True).encode()
        mac = hmac.new(self._secret, payload, hashlib.sha256).digest()
        return f"{PREFIX}.{_b64(payload)}.{_b64(mac)}"

    def check(self, token: str) -> Grant:
        """The grant a valid token carries. Raises UNAUTHORIZED for a malformed, forged, expired or revoked one."""
        try:
            prefix, p64, m64 = token.split(".")
            payload, mac = _unb64(p64), _unb64(m64)
        except ValueError as exc:
            raise LiangcaoError(Code.UNAUTHORIZED, "malformed bearer token") from exc
        if prefix != PREFIX or not hmac.compare_digest(mac, hmac.new(self._secret, payload, hashlib.sha256).digest()):
            raise LiangcaoError(Code.UNAUTHORIZED, "bearer token was not issued by this node")
        claims = json.loads(payload)
        scope = str(claims.get("scope", READ))
        grant = Grant(str(claims["member"]), SCOPES.get(scope, frozenset()), int(claims["iat"]), int(claims["exp"]))
        why = self.still_valid(grant)
        if why is not None:
            raise LiangcaoError(Code.UNAUTHORIZED, why)
        return grant

    def verify(self, token: str) -> str:
        """The member a valid token names. Raises UNAUTHORIZED otherwise."""
        return self.check(token).member

    def still_valid(self, grant: Grant, now_ms: int | None = None) -> str | None:
        """None while ``grant`` holds; otherwise why not (expired, revoked). Open streams ask this as they go."""
        now = now_ms if now_ms is not None else _now_ms()
        if grant.exp <= now:
            return "bearer token has expired"
        if self.revocations is not None:
            before = self.revocations.revoked_before(grant.member)
            if before is not None and grant.iat <= before:
                return f"bearer token was revoked (tokens of {grant.member} issued up to {before})"
        return None

    def revoke(self, member: str, now_ms: int | None = None) -> int:
        if self.revocations is None:
            raise ValueError("this node keeps no revocation list")
        return self.revocations.revoke(member, now_ms)
