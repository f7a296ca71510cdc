"""Bearer tokens for reads, issued by a node's admin to a member.

A token is ``lc1.<base64url payload>.<base64url HMAC-SHA256>`` with payload ``{"member", "iat", "exp"}``
(ms since the epoch), keyed by the node's secret (``token.secret`` in the node's home, mode 0600).
Why not JWT: the token is minted and checked by the same node, so a 20-line HMAC with the standard library
has no algorithm negotiation to get wrong and no dependency to keep.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from pathlib import Path

from liangcao.codes import Code
from liangcao.errors import LiangcaoError
from liangcao.limits import token_ttl_days_max

PREFIX = "lc1"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_secret(path: Path) -> bytes:
    secret = os.urandom(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret.hex())
    return secret


def load_secret(path: Path) -> bytes:
    return bytes.fromhex(path.read_text().strip())


class TokenAuth:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("token secret must be at least 16 bytes")
        self._secret = secret

    def create(self, member: str, days: int = 30, now_ms: int | None = None) -> str:
        if not 1 <= days <= token_ttl_days_max:
            raise ValueError(f"a token lives 1 to {token_ttl_days_max} days")
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        payload = json.dumps({"member": member, "iat": now, "exp": now + days * 86_400_000}, sort_keys=True).encode()
        mac = hmac.new(self._secret, payload, hashlib.sha256).digest()
        return f"{PREFIX}.{_b64(payload)}.{_b64(mac)}"

    def verify(self, token: str) -> str:
        """The member a valid token names. Raises UNAUTHORIZED otherwise."""
        try:
            prefix, p64, m64 = token.split(".")
            payload, mac = _unb64(p64), _unb64(m64)
        except ValueError as exc:
            raise LiangcaoError(Code.UNAUTHORIZED, "malformed bearer token") from exc
        if prefix != PREFIX or not hmac.compare_digest(mac, hmac.new(self._secret, payload, hashlib.sha256).digest()):
            raise LiangcaoError(Code.UNAUTHORIZED, "bearer token was not issued by this node")
        claims = json.loads(payload)
        if claims["exp"] < time.time() * 1000:
            raise LiangcaoError(Code.UNAUTHORIZED, "bearer token has expired")
        return str(claims["member"])
