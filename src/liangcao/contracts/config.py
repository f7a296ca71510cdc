"""The consortium configuration, read from state.

It lives under the ``consortium/`` key space, written only by the system contract
(:mod:`liangcao.contracts.consortium`):

=================================  ==========================================================
``consortium/chain``               ``{chain_id, name, created_ms}``
``consortium/version``             an integer, incremented by every configuration change
``consortium/org/<org_id>``        ``{org_id, name, type, ca_cert (base64 DER), active}``
``consortium/revoked/<sha256>``    ``{fingerprint, reason, height}``
``consortium/policy/<name>``       ``{num, den}``: a threshold "more than num/den of the organisations"
=================================  ==========================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from liangcao.crypto import keys
from liangcao.crypto.identity import CertCache, CertificateError, CertInfo
from liangcao.errors import LiangcaoError
from liangcao.ledger import block as blk
from liangcao.ledger.state import StateView

PREFIX = "consortium/"
KEY_CHAIN = "consortium/chain"
KEY_VERSION = "consortium/version"
ORG_PREFIX = "consortium/org/"
REVOKED_PREFIX = "consortium/revoked/"
POLICY_PREFIX = "consortium/policy/"

#: Policies a consortium starts with: governance by a strict majority of organisations' admins, finality
#: when a strict majority of organisations attested a block.
DEFAULT_POLICIES: dict[str, dict[str, int]] = {
    "governance": {"num": 1, "den": 2},
    "finality": {"num": 1, "den": 2},
}


@dataclass(frozen=True, slots=True)
class Org:
    org_id: str
    name: str
    type: str
    ca_cert: bytes
    ca: CertInfo
    active: bool


@dataclass(slots=True)
class Config:
    version: int = -1
    chain_id: str = ""
    orgs: dict[str, Org] = field(default_factory=dict)
    revoked: frozenset[str] = frozenset()
    policies: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def active_orgs(self) -> list[str]:
        return sorted(o for o, e in self.orgs.items() if e.active)

    def threshold_met(self, policy: str, count: int) -> bool:
        """Whether ``count`` organisations are *more than* the policy's fraction of the active ones."""
        p = self.policies.get(policy, DEFAULT_POLICIES.get(policy, {"num": 1, "den": 2}))
        return count * p["den"] > len(self.active_orgs) * p["num"]

    def quorum_size(self, policy: str) -> int:
        n = len(self.active_orgs)
        return next((k for k in range(n + 1) if self.threshold_met(policy, k)), n + 1)

    def member_org(
        self, info: CertInfo, certs: CertCache, role: str | None = None, time_ms: int | None = None
    ) -> str | None:
        """The organisation ``info`` speaks for under this configuration, or None if it speaks for none.

        A certificate counts only if its organisation is active, its type is the organisation's, it was
        issued by the organisation's *current* CA, it is not revoked and (if ``role`` is given) it has that
        role. A self-signed certificate that merely names an organisation never counts.
        """
        org = self.orgs.get(info.org)
        if org is None or not org.active or info.is_ca or info.org_type != org.type:
            return None
        if role is not None and info.role != role:
            return None
        if time_ms is not None and not info.not_before_ms <= time_ms <= info.not_after_ms:
            return None
        if info.fingerprint in self.revoked or not certs.issued_by(info, org.ca):
            return None
        return info.org

    def attesting_org(self, att: Mapping[str, Any], certs: CertCache, time_ms: int | None = None) -> str | None:
        """The organisation whose peer signed attestation ``att``, if the signature verifies and the peer
        is a current, unrevoked peer of an active organisation; None for anything else (never raises).

        Finality, fork alarms, the explorer, audit and the verify bundle all count attestations through
        this one rule: an attestation by anyone else says nothing. ``time_ms``: the attested block's time,
        at which the peer's certificate must be valid (checked when the caller knows it).
        """
        try:
            blk.check_attestation(att)
            info = certs.parse(keys.unb64(att["cert"]))
        except (LiangcaoError, CertificateError, KeyError, TypeError, ValueError):
            return None
        return self.member_org(info, certs, role="peer", time_ms=time_ms)


def version_of(view: StateView) -> int:
    raw = view.get(KEY_VERSION)
    return -1 if raw is None else int(msgspec.json.decode(raw))


def load(view: StateView, certs: CertCache) -> Config:
    """Read the whole configuration from ``view``."""
    cfg = Config(version=version_of(view))
    raw = view.get(KEY_CHAIN)
    if raw is not None:
        cfg.chain_id = str(msgspec.json.decode(raw)["chain_id"])
    for _, value in view.range(ORG_PREFIX):
        entry = msgspec.json.decode(value)
        der = keys.unb64(entry["ca_cert"])
        cfg.orgs[entry["org_id"]] = Org(
            org_id=entry["org_id"],
            name=entry["name"],
            type=entry["type"],
            ca_cert=der,
            ca=certs.parse(der),
            active=bool(entry["active"]),
        )
    cfg.revoked = frozenset(msgspec.json.decode(v)["fingerprint"] for _, v in view.range(REVOKED_PREFIX))
    for key, value in view.range(POLICY_PREFIX):
        cfg.policies[key[len(POLICY_PREFIX) :]] = msgspec.json.decode(value)
    return cfg
