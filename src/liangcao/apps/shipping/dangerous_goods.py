"""``dg``: dangerous-goods declarations between a shipper, its carrier and the terminals (shipping consortium).

A declaration's content is sealed by the shipper (``liangcao.shipping.declaration``): AES-256-GCM under a
data key wrapped for each organisation allowed to read it. This contract never sees the content; it keeps
the envelope and enforces who may do what, and that every wrap is made for the reader's registered key:

====================================  ==========================================================
``dg/k/<org>``                        an organisation's X25519 key ``{org, key, fp, height}``
``dg/d/<id>/<version 6 digits>``      one version: shipper, carrier, terminals, status, envelope
                                      ``{ct, nonce, keys: {org: wrap}}``, prev, who and when
``dg/h/<id>``                         the head: ``{version, status}``
====================================  ==========================================================

A declaration's id is ``<shipper org>/<name>`` (``org1/DG-2026-0001``): ``submit`` accepts only ids under
the signing shipper's own organisation (``FORBIDDEN`` otherwise), so no one can register another shipper's
name before it does.

Lifecycle: ``submit`` (version 1, ``submitted``, readable by shipper and carrier) -> the carrier
``approve``s (adding wraps for every terminal named: from then on they can read it) or ``reject``s with a
reason, sealed like the content for the shipper and the carrier (``{ct, nonce}`` under a key derived from
the version's data key: the ledger stores and shows only that the version was rejected, by whom and when).
The shipper ``amend``s at any time with a new sealed version linked to the previous one (``prev``); the
previous version becomes ``superseded`` (a rejected one stays ``rejected``) and the new one needs the
carrier's decision again. Terminals keep the versions they were shown, never an unapproved one.
"""

from __future__ import annotations

import base64
import hashlib
from enum import IntEnum
from typing import Annotated, Any, Literal

import msgspec

from liangcao import codes, limits
from liangcao.codes import Code
from liangcao.contracts.base import Args, Context, Contract, Record, Signer, query, transaction
from liangcao.domain import ORG_ID_CHARS
from liangcao.errors import InvariantViolation

SHIPPER_TYPES = ("shipper", "brand", "core_enterprise", "supplier", "platform")
CARRIER_TYPES = ("carrier", "logistics")
TERMINAL_TYPES = ("terminal",)
OPEN = ("submitted",)

#: ``<shipper org>/<name>``; ``\Z``, not ``$``, so that no trailing newline slips through.
DeclId = Annotated[str, msgspec.Meta(pattern=rf"^{ORG_ID_CHARS}/[A-Za-z0-9][A-Za-z0-9._-]{{0,63}}\Z")]
#: An organisation named in an argument and looked up in the configuration (an unknown one is NOT_FOUND or
#: KEY_MISMATCH). Released with this looser rule than ``liangcao.domain.OrgId``; kept, because a refused
#: argument's receipt quotes the rule, and tightening it would change what old transactions record.
OrgName = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
B64 = Annotated[str, msgspec.Meta(max_length=64)]
Status = Literal["submitted", "approved", "rejected", "superseded"]


class DgCode(IntEnum):
    KEY_MISMATCH = 2200  # a wrap is missing, extra, or not made for the reader's registered key
    NOT_HEAD = 2201  # the version acted on is not the declaration's latest


codes.register(DgCode, "dg")


class Wrap(msgspec.Struct, forbid_unknown_fields=True):
    epk: B64
    nonce: B64
    wrapped: B64
    fp: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{32}$")]


Wraps = Annotated[dict[OrgName, Wrap], msgspec.Meta(max_length=limits.dg_readers_max)]


class KeyArgs(Args):
    key: B64


class SubmitArgs(Args):
    id: DeclId
    carrier: OrgName
    terminals: Annotated[list[OrgName], msgspec.Meta(max_length=limits.dg_terminals_max)]
    ct: Annotated[str, msgspec.Meta(min_length=1, max_length=limits.dg_ciphertext_b64_max)]
    nonce: B64
    keys: Wraps


class AmendArgs(Args):
    id: DeclId
    prev: Annotated[int, msgspec.Meta(ge=1)]
    ct: Annotated[str, msgspec.Meta(min_length=1, max_length=limits.dg_ciphertext_b64_max)]
    nonce: B64
    keys: Wraps
    terminals: Annotated[list[OrgName], msgspec.Meta(max_length=limits.dg_terminals_max)] | None = None


class ApproveArgs(Args):
    id: DeclId
    version: Annotated[int, msgspec.Meta(ge=1)]
    keys: Wraps


class SealedReason(msgspec.Struct, forbid_unknown_fields=True):
    """A rejection reason encrypted for the shipper and the carrier (``liangcao.shipping.declaration``)."""

    ct: Annotated[str, msgspec.Meta(min_length=1, max_length=limits.dg_reason_b64_max)]
    nonce: B64


class RejectArgs(Args):
    id: DeclId
    version: Annotated[int, msgspec.Meta(ge=1)]
    reason: SealedReason  # plaintext is refused: the shared ledger would show it to every organisation


class DeclArgs(Args):
    id: DeclId
    version: Annotated[int, msgspec.Meta(ge=0)] = 0  # 0: the latest


class OrgArgs(Args):
    org: OrgName


class KeyEntry(Record):
    """``dg/k/<org>``: an organisation's X25519 key for sealed declarations (``fp``: its fingerprint)."""

    org: str
    key: str
    fp: str
    height: int


class Decision(Record):
    """The carrier's decision on a version; a rejection carries its reason, sealed for shipper and carrier."""

    by: str
    tx: str
    height: int
    time_ms: int
    reason: SealedReason | msgspec.UnsetType = msgspec.UNSET  # only a rejection has one


class Version(Record):
    """``dg/d/<id>/<version, 6 digits>``: one version's envelope and who did what with it."""

    id: str
    version: int
    prev: int  # the version it amends (0 for the first)
    shipper: str
    carrier: str
    terminals: list[str]
    status: Status
    ct: str
    nonce: str
    keys: dict[str, Wrap]  # the data key wrapped for each organisation that may read it
    by: str
    tx: str
    height: int
    time_ms: int
    decision: Decision | None


class Head(Record):
    """``dg/h/<id>``: a declaration's latest version and its status."""

    version: int
    status: Status


def _bytes(ctx: Context, text: str, size: int | None, what: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        ctx.fail(Code.INVALID_ARGUMENT, f"{what} is not base64")
    if size is not None and len(raw) != size:
        ctx.fail(Code.INVALID_ARGUMENT, f"{what} must be {size} bytes, not {len(raw)}")
    return raw


def _vkey(decl_id: str, version: int) -> str:
    return f"d/{decl_id}/{version:06d}"


class DangerousGoods(Contract):
    name = "dg"

    # ---- keys -------------------------------------------------------------------------------------------
    @transaction
    def register_key(self, ctx: Context, a: KeyArgs) -> KeyEntry:
        """An organisation's X25519 public key for sealed declarations (signed by one of its admins).

        A new key replaces the old one for new wraps; versions wrapped for the old key stay readable with it.
        """
        admin = ctx.require_party(role="admin")
        raw = _bytes(ctx, a.key, 32, "key")
        fp = hashlib.sha256(raw).hexdigest()[:32]
        entry = KeyEntry(org=admin.org, key=a.key, fp=fp, height=ctx.height)
        ctx.save(f"k/{admin.org}", entry)
        ctx.emit("key", {"org": admin.org, "fp": fp})
        return entry

    def _check_wraps(self, ctx: Context, keys: dict[str, Wrap], readers: set[str]) -> None:
        if set(keys) != readers:
            missing, extra = sorted(readers - set(keys)), sorted(set(keys) - readers)
            ctx.fail(
                DgCode.KEY_MISMATCH, f"wraps must be exactly for {sorted(readers)}: missing {missing}, extra {extra}"
            )
        for org, w in keys.items():
            registered = ctx.load(KeyEntry, f"k/{org}")
            if registered is None:
                ctx.fail(DgCode.KEY_MISMATCH, f"{org} has registered no key for sealed declarations")
            if w.fp != registered.fp:
                ctx.fail(
                    DgCode.KEY_MISMATCH, f"the wrap for {org} is for key {w.fp}, not its registered {registered.fp}"
                )
            _bytes(ctx, w.epk, 32, f"keys.{org}.epk")
            _bytes(ctx, w.nonce, 12, f"keys.{org}.nonce")
            _bytes(ctx, w.wrapped, 48, f"keys.{org}.wrapped")

    def _org_of_type(self, ctx: Context, org: str, types: tuple[str, ...], what: str) -> None:
        entry = ctx.consortium().orgs.get(org)
        if entry is None or not entry.active:
            ctx.fail(Code.NOT_FOUND, f"{what} {org} is not an active organisation")
        if entry.type not in types:
            ctx.fail(Code.WRONG_ORG_TYPE, f"{what} {org} is a {entry.type}, not a {' or '.join(types)}")

    def _terminals(self, ctx: Context, terminals: list[str]) -> list[str]:
        if len(set(terminals)) != len(terminals):
            ctx.fail(Code.INVALID_ARGUMENT, "a terminal is named twice")
        for t in terminals:
            self._org_of_type(ctx, t, TERMINAL_TYPES, "terminal")
        return sorted(terminals)

    def _store(
        self,
        ctx: Context,
        signer: Signer,
        a: SubmitArgs | AmendArgs,
        *,
        version: int,
        prev: int,
        shipper: str,
        carrier: str,
        terminals: list[str],
    ) -> dict[str, Any]:
        _bytes(ctx, a.nonce, 12, "nonce")
        _bytes(ctx, a.ct, None, "ct")
        self._check_wraps(ctx, a.keys, {shipper, carrier})
        record = Version(
            id=a.id,
            version=version,
            prev=prev,
            shipper=shipper,
            carrier=carrier,
            terminals=terminals,
            status="submitted",
            ct=a.ct,
            nonce=a.nonce,
            keys=dict(sorted(a.keys.items())),
            by=signer.member_id,
            tx=ctx.tx_id,
            height=ctx.height,
            time_ms=ctx.time_ms,
            decision=None,
        )
        ctx.save(_vkey(record.id, record.version), record)
        ctx.save(f"h/{record.id}", Head(version=record.version, status="submitted"))
        ctx.emit(
            "declared",
            {"id": record.id, "version": record.version, "shipper": record.shipper, "carrier": record.carrier},
        )
        return self._summary(record)

    @staticmethod
    def _summary(record: Version) -> dict[str, Any]:
        return {
            "id": record.id,
            "version": record.version,
            "prev": record.prev,
            "status": record.status,
            "shipper": record.shipper,
            "carrier": record.carrier,
            "terminals": record.terminals,
        }

    # ---- lifecycle --------------------------------------------------------------------------------------
    @transaction
    def submit(self, ctx: Context, a: SubmitArgs) -> dict[str, Any]:
        """A shipper's new declaration (version 1), sealed for itself and the carrier."""
        signer = ctx.require_party(org_type=SHIPPER_TYPES)  # a person (admin or member), never a node's key
        owner = a.id.partition("/")[0]
        ctx.require(
            owner == signer.org,
            Code.FORBIDDEN,
            f"{signer.org} names its declarations {signer.org}/<name>: {a.id} is in {owner}'s names",
        )
        ctx.require(not ctx.exists(f"h/{a.id}"), Code.ALREADY_EXISTS, f"declaration {a.id} exists: amend it")
        self._org_of_type(ctx, a.carrier, CARRIER_TYPES, "carrier")
        terminals = self._terminals(ctx, a.terminals)
        return self._store(
            ctx, signer, a, version=1, prev=0, shipper=signer.org, carrier=a.carrier, terminals=terminals
        )

    @transaction
    def amend(self, ctx: Context, a: AmendArgs) -> dict[str, Any]:
        """A new version of the shipper's declaration, linked to the latest one, which it supersedes."""
        head = ctx.must_load(Head, f"h/{a.id}", f"no declaration {a.id}")
        last = self._version(ctx, a.id, head.version)
        signer = ctx.require_party(
            last.shipper, code=Code.FORBIDDEN, message=f"only the shipper {last.shipper} amends {a.id}"
        )
        if a.prev != head.version:
            ctx.fail(DgCode.NOT_HEAD, f"{a.id} is at version {head.version}: amend that one, not {a.prev}")
        terminals = self._terminals(ctx, a.terminals) if a.terminals is not None else last.terminals
        if last.status != "rejected":  # a rejection stays on record as what the carrier decided
            ctx.save(_vkey(a.id, last.version), last.replace(status="superseded"))
        return self._store(
            ctx,
            signer,
            a,
            version=last.version + 1,
            prev=last.version,
            shipper=last.shipper,
            carrier=last.carrier,
            terminals=terminals,
        )

    @staticmethod
    def _version(ctx: Context, decl_id: str, version: int) -> Version:
        # the head names a version that exists: a missing one is a broken invariant, not an outcome
        found = ctx.load(Version, _vkey(decl_id, version))
        if found is None:
            raise InvariantViolation(Code.INTERNAL, f"{decl_id}: the head names version {version}, which is missing")
        return found

    def _decide(self, ctx: Context, decl_id: str, version: int) -> tuple[Version, Signer]:
        head = ctx.must_load(Head, f"h/{decl_id}", f"no declaration {decl_id}")
        if version != head.version:
            ctx.fail(DgCode.NOT_HEAD, f"{decl_id} is at version {head.version}: decide on that one, not {version}")
        record = self._version(ctx, decl_id, version)
        signer = ctx.require_party(
            record.carrier, code=Code.FORBIDDEN, message=f"only the carrier {record.carrier} decides on {decl_id}"
        )
        if record.status not in OPEN:
            ctx.fail(Code.INVALID_STATE, f"version {version} of {decl_id} is {record.status}, not submitted")
        return record, signer

    def _decision(self, ctx: Context, signer: Signer, reason: SealedReason | msgspec.UnsetType) -> Decision:
        return Decision(by=signer.member_id, tx=ctx.tx_id, height=ctx.height, time_ms=ctx.time_ms, reason=reason)

    @transaction
    def approve(self, ctx: Context, a: ApproveArgs) -> dict[str, Any]:
        """The carrier accepts the declaration and wraps its data key for every terminal named in it."""
        record, signer = self._decide(ctx, a.id, a.version)
        self._check_wraps(ctx, a.keys, set(record.terminals))
        keys = dict(sorted({**record.keys, **a.keys}.items()))
        record = record.replace(status="approved", keys=keys, decision=self._decision(ctx, signer, msgspec.UNSET))
        ctx.save(_vkey(a.id, a.version), record)
        ctx.save(f"h/{a.id}", Head(version=a.version, status="approved"))
        ctx.emit("approved", {"id": a.id, "version": a.version, "terminals": record.terminals})
        return self._summary(record)

    @transaction
    def reject(self, ctx: Context, a: RejectArgs) -> dict[str, Any]:
        """The carrier refuses the declaration, saying why (sealed for shipper and carrier); the shipper may amend."""
        record, signer = self._decide(ctx, a.id, a.version)
        _bytes(ctx, a.reason.nonce, 12, "reason.nonce")
        if len(_bytes(ctx, a.reason.ct, None, "reason.ct")) <= 16:  # a GCM tag and at least one byte
            ctx.fail(Code.INVALID_ARGUMENT, "reason.ct is too short to hold a sealed reason")
        record = record.replace(status="rejected", decision=self._decision(ctx, signer, a.reason))
        ctx.save(_vkey(a.id, a.version), record)
        ctx.save(f"h/{a.id}", Head(version=a.version, status="rejected"))
        ctx.emit("rejected", {"id": a.id, "version": a.version})
        return self._summary(record)

    # ---- reads (envelopes only: the content is sealed) ----------------------------------------------------
    @query
    def key(self, ctx: Context, a: OrgArgs) -> KeyEntry:
        return ctx.must_load(KeyEntry, f"k/{a.org}", f"{a.org} has registered no key")

    @query
    def declaration(self, ctx: Context, a: DeclArgs) -> Version:
        """One version's envelope (the latest if ``version`` is 0)."""
        head = ctx.must_load(Head, f"h/{a.id}", f"no declaration {a.id}")
        version = a.version or head.version
        return ctx.must_load(Version, _vkey(a.id, version), f"{a.id} has no version {version}")

    @query
    def versions(self, ctx: Context, a: DeclArgs) -> list[dict[str, Any]]:
        """Every version's summary, oldest first."""
        return [self._summary(v) for _, v in ctx.range(f"d/{a.id}/", Version)]
