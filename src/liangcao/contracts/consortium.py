"""System contract ``consortium``: the configuration as state, changed only by a quorum of admins.

Every change (add or remove an organisation, rotate its CA, revoke a certificate, set a policy) needs
signatures from admins of *more than* ``governance`` (default 1/2) of the active organisations, counted
on the configuration before the change. ``genesis`` runs only in block 0 and writes the first configuration.
Its records (``OrgRecord``, ``ChainRecord``, ``Revocation``, ``Policy``) are laid out in
:mod:`liangcao.contracts.config`, which reads them for the runtime.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec

from liangcao import limits
from liangcao.codes import Code
from liangcao.contracts import config as cfgmod
from liangcao.contracts.base import Args, Context, Contract, NoArgs, Record, query, transaction
from liangcao.crypto import keys
from liangcao.crypto.identity import CertificateError, issued_by, parse_certificate
from liangcao.domain import ORG_ID_PATTERN, ORG_TYPES, OrgId
from liangcao.errors import InvariantViolation

ORG_ID = re.compile(ORG_ID_PATTERN)
FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")
KNOWN_POLICIES = ("governance", "finality")

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class OrgRecord(Record):
    """``consortium/org/<org_id>``: an organisation, its type and current CA (base64 DER)."""

    org_id: str
    name: str
    type: str
    ca_cert: str
    active: bool


class ChainRecord(Record):
    """``consortium/chain``."""

    chain_id: str
    name: str
    created_ms: int


class Revocation(Record):
    """``consortium/revoked/<fingerprint>``: a revoked certificate, why, and from which height."""

    fingerprint: str
    reason: str
    height: int


class Policy(Record):
    """``consortium/policy/<name>``: a threshold, "more than num/den of the active organisations"."""

    num: int
    den: int


class OrgArgs(Args):
    org_id: OrgId
    name: Name
    org_type: str
    ca_cert: str  # base64 DER


class Fraction(Args):
    num: Annotated[int, msgspec.Meta(ge=0)]
    den: Annotated[int, msgspec.Meta(ge=1)]


class GenesisArgs(Args):
    chain_id: Name
    name: Name
    created_ms: Annotated[int, msgspec.Meta(ge=0)]
    orgs: Annotated[list[OrgArgs], msgspec.Meta(min_length=1, max_length=limits.orgs_max)]
    policies: dict[str, Fraction] = msgspec.field(default_factory=dict)


class OrgIdArgs(Args):
    org_id: OrgId


class RotateArgs(Args):
    org_id: OrgId
    ca_cert: str


class RevokeArgs(Args):
    fingerprint: Annotated[str, msgspec.Meta(pattern=FINGERPRINT.pattern)]
    reason: Annotated[str, msgspec.Meta(max_length=256)] = ""


class PolicyArgs(Args):
    name: str
    num: Annotated[int, msgspec.Meta(ge=0)]
    den: Annotated[int, msgspec.Meta(ge=1)]


def _check_ca(ctx: Context, org_id: str, org_type: str, ca_b64: str) -> None:
    if org_type not in ORG_TYPES:
        ctx.fail(Code.INVALID_ARGUMENT, f"unknown organisation type {org_type!r}; known: {', '.join(ORG_TYPES)}")
    try:
        info = parse_certificate(keys.unb64(ca_b64))
    except (ValueError, CertificateError) as exc:
        ctx.fail(Code.INVALID_ARGUMENT, f"ca_cert of {org_id}: {exc}")
    if not info.is_ca or not issued_by(info, info):
        ctx.fail(Code.INVALID_ARGUMENT, f"ca_cert of {org_id} is not a self-signed CA certificate")
    if info.org != org_id or info.org_type != org_type:
        ctx.fail(Code.INVALID_ARGUMENT, f"ca_cert names organisation {info.org!r} of type {info.org_type!r}")


def _check_policy(ctx: Context, name: str, num: int, den: int) -> None:
    if name not in KNOWN_POLICIES:
        ctx.fail(Code.INVALID_ARGUMENT, f"unknown policy {name!r}; known: {', '.join(KNOWN_POLICIES)}")
    if not 0 <= num < den:
        ctx.fail(Code.INVALID_ARGUMENT, "a policy threshold num/den must satisfy 0 <= num < den")
    # Less than half would let two disjoint groups of organisations each govern, or each make a different
    # block final; num = 0 would let one organisation alone do either.
    if 2 * num < den:
        ctx.fail(
            Code.INVALID_ARGUMENT,
            f"policy {name!r} needs more than half of the organisations: num/den must be at least 1/2",
        )


def governance_quorum(ctx: Context) -> cfgmod.Config:
    """The configuration, if admins of enough organisations signed (the ``governance`` policy); else fail.

    Any contract whose rules the consortium changes by vote (trace permissions, for one) calls this.
    """
    config: cfgmod.Config = ctx.consortium()
    admins = {s.org for s in ctx.signers if s.role == "admin" and s.org in config.active_orgs}
    if not config.threshold_met("governance", len(admins)):
        ctx.fail(
            Code.QUORUM_NOT_MET,
            f"needs admins of at least {config.quorum_size('governance')} of {len(config.active_orgs)} "
            f"organisations; signed by admins of {len(admins)}",
        )
    return config


class Consortium(Contract):
    name = "consortium"

    # ---- helpers ----------------------------------------------------------------------------------------
    def _quorum(self, ctx: Context) -> cfgmod.Config:
        return governance_quorum(ctx)

    @staticmethod
    def _org(ctx: Context, org_id: str) -> OrgRecord:
        # an organisation the configuration lists has its record: a missing one is a broken invariant
        found = ctx.load(OrgRecord, f"org/{org_id}")
        if found is None:
            raise InvariantViolation(Code.INTERNAL, f"organisation {org_id} is configured but has no record")
        return found

    def _bump(self, ctx: Context) -> None:
        ctx.put("version", int(ctx.get("version") or 0) + 1)

    @staticmethod
    def _org_record(a: OrgArgs) -> OrgRecord:
        return OrgRecord(org_id=a.org_id, name=a.name, type=a.org_type, ca_cert=a.ca_cert, active=True)

    # ---- transactions -----------------------------------------------------------------------------------
    @transaction
    def genesis(self, ctx: Context, args: GenesisArgs) -> dict[str, Any]:
        ctx.require(ctx.height == 0, Code.FORBIDDEN, "genesis runs only in block 0")
        ctx.require(args.chain_id == ctx.chain_id, Code.WRONG_CHAIN, "genesis chain_id differs from the block's")
        ids = [o.org_id for o in args.orgs]
        ctx.require(len(set(ids)) == len(ids), Code.ALREADY_EXISTS, "organisation ids must be unique")
        for o in args.orgs:
            _check_ca(ctx, o.org_id, o.org_type, o.ca_cert)
            ctx.save(f"org/{o.org_id}", self._org_record(o))
        ctx.save("chain", ChainRecord(chain_id=args.chain_id, name=args.name, created_ms=args.created_ms))
        policies = {
            **cfgmod.DEFAULT_POLICIES,
            **{k: {"num": v.num, "den": v.den} for k, v in args.policies.items()},
        }
        for name, p in sorted(policies.items()):
            _check_policy(ctx, name, p["num"], p["den"])
            ctx.save(f"policy/{name}", Policy(num=p["num"], den=p["den"]))
        ctx.put("version", 1)
        ctx.emit("genesis", {"chain_id": args.chain_id, "orgs": sorted(ids)})
        return {"orgs": sorted(ids)}

    @transaction
    def add_org(self, ctx: Context, args: OrgArgs) -> None:
        config = self._quorum(ctx)
        ctx.require(args.org_id not in config.orgs, Code.ALREADY_EXISTS, f"organisation {args.org_id} exists")
        ctx.require(len(config.orgs) < limits.orgs_max, Code.LIMIT_EXCEEDED, f"orgs_max={limits.orgs_max} reached")
        _check_ca(ctx, args.org_id, args.org_type, args.ca_cert)
        ctx.save(f"org/{args.org_id}", self._org_record(args))
        self._bump(ctx)
        ctx.emit("org_added", {"org_id": args.org_id, "type": args.org_type})

    @transaction
    def remove_org(self, ctx: Context, args: OrgIdArgs) -> None:
        config = self._quorum(ctx)
        ctx.require(args.org_id in config.active_orgs, Code.NOT_FOUND, f"no active organisation {args.org_id}")
        ctx.require(len(config.active_orgs) > 1, Code.INVALID_STATE, "the last organisation cannot be removed")
        record = self._org(ctx, args.org_id)
        ctx.save(f"org/{args.org_id}", record.replace(active=False))
        self._bump(ctx)
        ctx.emit("org_removed", {"org_id": args.org_id})

    @transaction
    def rotate_ca(self, ctx: Context, args: RotateArgs) -> None:
        config = self._quorum(ctx)
        org = config.orgs.get(args.org_id)
        if org is None or not org.active:
            ctx.fail(Code.NOT_FOUND, f"no active organisation {args.org_id}")
        _check_ca(ctx, args.org_id, org.type, args.ca_cert)
        record = self._org(ctx, args.org_id)
        ctx.require(record.ca_cert != args.ca_cert, Code.INVALID_ARGUMENT, "the new CA is the current one")
        ctx.save(f"org/{args.org_id}", record.replace(ca_cert=args.ca_cert))
        self._bump(ctx)
        ctx.emit("ca_rotated", {"org_id": args.org_id})

    @transaction
    def revoke_cert(self, ctx: Context, args: RevokeArgs) -> None:
        self._quorum(ctx)
        ctx.require(not ctx.exists(f"revoked/{args.fingerprint}"), Code.ALREADY_EXISTS, "certificate already revoked")
        ctx.save(
            f"revoked/{args.fingerprint}",
            Revocation(fingerprint=args.fingerprint, reason=args.reason, height=ctx.height),
        )
        self._bump(ctx)
        ctx.emit("cert_revoked", {"fingerprint": args.fingerprint})

    @transaction
    def set_policy(self, ctx: Context, args: PolicyArgs) -> None:
        self._quorum(ctx)
        _check_policy(ctx, args.name, args.num, args.den)
        ctx.save(f"policy/{args.name}", Policy(num=args.num, den=args.den))
        self._bump(ctx)
        ctx.emit("policy_set", {"name": args.name, "num": args.num, "den": args.den})

    # ---- queries ----------------------------------------------------------------------------------------
    @query
    def config(self, ctx: Context, args: NoArgs) -> dict[str, Any]:
        return {
            "chain": ctx.get("chain"),
            "version": ctx.get("version"),
            "orgs": [v for _, v in ctx.range("org/")],
            "revoked": [v for _, v in ctx.range("revoked/")],
            "policies": {k.removeprefix("policy/"): v for k, v in ctx.range("policy/")},
        }

    @query
    def org(self, ctx: Context, args: OrgIdArgs) -> OrgRecord:
        return ctx.must_load(OrgRecord, f"org/{args.org_id}", f"no organisation {args.org_id}")
