"""What the relying party's tests share: the origin, a clock the test moves, registering a soft device, and a
refusal with its code."""

from __future__ import annotations

from typing import Any

import pytest

from liangcao import codes
from liangcao.authn import AuthnCode, AuthnError, RelyingParty, SoftAuthenticator

ORIGIN = "http://localhost:8765"
T0 = 1_800_000_000_000


class ManualClock:
    def __init__(self) -> None:
        self.t = T0

    def now_ms(self) -> int:
        return self.t


def register(rp: RelyingParty, dev: SoftAuthenticator, shopper: str = "alice", name: str = "phone") -> str:
    opts = rp.registration_options(shopper, name)
    return rp.register(shopper, opts["ceremony_id"], dev.create(opts["publicKey"], ORIGIN)).id


def refused(code: AuthnCode, fn: Any, *args: Any, **kw: Any) -> AuthnError:
    with pytest.raises(AuthnError) as info:
        fn(*args, **kw)
    assert info.value.code == code, f"{codes.name_of(info.value.code)}: {info.value.message}"
    return info.value
