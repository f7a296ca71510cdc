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
from typing import Annotated, Any

import msgspec

from liangcao import limits
from liangcao.codes import Code
from liangcao.contracts.base import Args, Context, Contract, Signer, query, transaction

SHIPPER_TYPES = ("shipper", "brand", "core_enterprise", "supplier", "platform")
CARRIER_TYPES = ("carrier", "logistics")
TERMINAL_TYPES = ("terminal",)
ACTING_ROLES = ("admin", "member")
OPEN = ("submitted",)

#: ``<shipper org>/<name>``; ``\Z``, not ``$``, so that no trailing newline slips through.
DeclId = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}/[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")]
OrgId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
B64 = Annotated[str, msgspec.Meta(max_length=64)]


class DgCode(IntEnum):
    KEY_MISMATCH = 2200  # a wrap is missing, extra, or not made for the reader's registered key
    NOT_HEAD = 2201  # the version acted on is not the declaration's latest


class Wrap(msgspec.Struct, forbid_unknown_fields=True):
    epk: B64
    nonce: B64
    wrapped: B64
    fp: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{32}$")]


Wraps = Annotated[dict[OrgId, Wrap], msgspec.Meta(max_length=limits.dg_readers_max)]


class KeyArgs(Args):
    key: B64


class SubmitArgs(Args):
    id: DeclId
    carrier: OrgId
    terminals: Annotated[list[OrgId], msgspec.Meta(max_length=limits.dg_terminals_max)]
    ct: Annotated[str, msgspec.Meta(min_length=1, max_length=limits.dg_ciphertext_b64_max)]
    nonce: B64
    keys: Wraps


class AmendArgs(Args):
    id: DeclId
    prev: Annotated[int, msgspec.Meta(ge=1)]
    ct: Annotated[str, msgspec.Meta(min_length=1, max_length=limits.dg_ciphertext_b64_max)]
    nonce: B64
    keys: Wraps
    terminals: Annotated[list[OrgId], msgspec.Meta(max_length=limits.dg_terminals_max)] | None = None


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
    org: OrgId


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
    def register_key(self, ctx: Context, a: KeyArgs) -> dict[str, Any]:
        """An organisation's X25519 public key for sealed declarations (signed by one of its admins).

        A new key replaces the old one for new wraps; versions wrapped for the old key stay readable with it.
        """
        admin = ctx.require_role("admin")
        raw = _bytes(ctx, a.key, 32, "key")
        fp = hashlib.sha256(raw).hexdigest()[:32]
        entry = {"org": admin.org, "key": a.key, "fp": fp, "height": ctx.height}
        ctx.put(f"k/{admin.org}", entry)
        ctx.emit("key", {"org": admin.org, "fp": fp})
        return entry

    def _check_wraps(self, ctx: Context, keys: dict[str, Wrap], readers: set[str]) -> None:
        if set(keys) != readers:
            missing, extra = sorted(readers - set(keys)), sorted(set(keys) - readers)
            ctx.fail(
                DgCode.KEY_MISMATCH, f"wraps must be exactly for {sorted(readers)}: missing {missing}, extra {extra}"
            )
        for org, w in keys.items():
            registered = ctx.get(f"k/{org}")
            if registered is None:
                ctx.fail(DgCode.KEY_MISMATCH, f"{org} has registered no key for sealed declarations")
            if w.fp != registered["fp"]:
                ctx.fail(
                    DgCode.KEY_MISMATCH, f"the wrap for {org} is for key {w.fp}, not its registered {registered['fp']}"
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

    def _store(self, ctx: Context, signer: Signer, record: dict[str, Any], a: SubmitArgs | AmendArgs) -> dict[str, Any]:
        _bytes(ctx, a.nonce, 12, "nonce")
        _bytes(ctx, a.ct, None, "ct")
        self._check_wraps(ctx, a.keys, {record["shipper"], record["carrier"]})
        record.update(
            {
                "status": "submitted",
                "ct": a.ct,
                "nonce": a.nonce,
                "keys": {o: msgspec.to_builtins(w) for o, w in sorted(a.keys.items())},
                "by": signer.member_id,
                "tx": ctx.tx_id,
                "height": ctx.height,
                "time_ms": ctx.time_ms,
                "decision": None,
            }
        )
        ctx.put(_vkey(record["id"], record["version"]), record)
        ctx.put(f"h/{record['id']}", {"version": record["version"], "status": "submitted"})
        ctx.emit(
            "declared",
            {
                "id": record["id"],
                "version": record["version"],
                "shipper": record["shipper"],
                "carrier": record["carrier"],
            },
        )
        return self._summary(record)

    @staticmethod
    def _summary(record: dict[str, Any]) -> dict[str, Any]:
        return {k: record[k] for k in ("id", "version", "prev", "status", "shipper", "carrier", "terminals")}

    # ---- lifecycle --------------------------------------------------------------------------------------
    @transaction
    def submit(self, ctx: Context, a: SubmitArgs) -> dict[str, Any]:
        """A shipper's new declaration (version 1), sealed for itself and the carrier."""
        signer = ctx.require_org_type(*SHIPPER_TYPES)
        ctx.require(signer.role in ACTING_ROLES, Code.WRONG_ROLE, "a declaration is signed by an admin or member")
        owner = a.id.partition("/")[0]
        ctx.require(
            owner == signer.org,
            Code.FORBIDDEN,
            f"{signer.org} names its declarations {signer.org}/<name>: {a.id} is in {owner}'s names",
        )
        ctx.require(ctx.get(f"h/{a.id}") is None, Code.ALREADY_EXISTS, f"declaration {a.id} exists: amend it")
        self._org_of_type(ctx, a.carrier, CARRIER_TYPES, "carrier")
        record = {
            "id": a.id, "version": 1, "prev": 0, "shipper": signer.org, "carrier": a.carrier,
            "terminals": self._terminals(ctx, a.terminals),
        }  # fmt: skip
        return self._store(ctx, signer, record, a)

    @transaction
    def amend(self, ctx: Context, a: AmendArgs) -> dict[str, Any]:
        """A new version of the shipper's declaration, linked to the latest one, which it supersedes."""
        head = ctx.must_get(f"h/{a.id}", f"no declaration {a.id}")
        last = ctx.get(_vkey(a.id, head["version"]))
        signer = ctx.signer_of_org(last["shipper"], *ACTING_ROLES)
        if signer is None:
            ctx.fail(Code.FORBIDDEN, f"only the shipper {last['shipper']} amends {a.id}")
        if a.prev != head["version"]:
            ctx.fail(DgCode.NOT_HEAD, f"{a.id} is at version {head['version']}: amend that one, not {a.prev}")
        terminals = self._terminals(ctx, a.terminals) if a.terminals is not None else last["terminals"]
        if last["status"] != "rejected":  # a rejection stays on record as what the carrier decided
            ctx.put(_vkey(a.id, last["version"]), {**last, "status": "superseded"})
        record = {
            "id": a.id, "version": last["version"] + 1, "prev": last["version"], "shipper": last["shipper"],
            "carrier": last["carrier"], "terminals": terminals,
        }  # fmt: skip
        return self._store(ctx, signer, record, a)

    def _decide(self, ctx: Context, decl_id: str, version: int) -> tuple[dict[str, Any], Signer]:
        head = ctx.must_get(f"h/{decl_id}", f"no declaration {decl_id}")
        if version != head["version"]:
            ctx.fail(DgCode.NOT_HEAD, f"{decl_id} is at version {head['version']}: decide on that one, not {version}")
        record: dict[str, Any] = ctx.get(_vkey(decl_id, version))
        signer = ctx.signer_of_org(record["carrier"], *ACTING_ROLES)
        if signer is None:
            ctx.fail(Code.FORBIDDEN, f"only the carrier {record['carrier']} decides on {decl_id}")
        if record["status"] not in OPEN:
            ctx.fail(Code.INVALID_STATE, f"version {version} of {decl_id} is {record['status']}, not submitted")
        return record, signer

    @transaction
    def approve(self, ctx: Context, a: ApproveArgs) -> dict[str, Any]:
        """The carrier accepts the declaration and wraps its data key for every terminal named in it."""
        record, signer = self._decide(ctx, a.id, a.version)
        self._check_wraps(ctx, a.keys, set(record["terminals"]))
        keys = dict(record["keys"])
        keys.update({o: msgspec.to_builtins(w) for o, w in a.keys.items()})
        record = {**record, "status": "approved", "keys": dict(sorted(keys.items()))}
        record["decision"] = {"by": signer.member_id, "tx": ctx.tx_id, "height": ctx.height, "time_ms": ctx.time_ms}
        ctx.put(_vkey(a.id, a.version), record)
        ctx.put(f"h/{a.id}", {"version": a.version, "status": "approved"})
        ctx.emit("approved", {"id": a.id, "version": a.version, "terminals": record["terminals"]})
        return self._summary(record)

    @transaction
    def reject(self, ctx: Context, a: RejectArgs) -> dict[str, Any]:
        """The carrier refuses the declaration, saying why (sealed for shipper and carrier); the shipper may amend."""
        record, signer = self._decide(ctx, a.id, a.version)
        _bytes(ctx, a.reason.nonce, 12, "reason.nonce")
        if len(_bytes(ctx, a.reason.ct, None, "reason.ct")) <= 16:  # a GCM tag and at least one byte
            ctx.fail(Code.INVALID_ARGUMENT, "reason.ct is too short to hold a sealed reason")
        record = {**record, "status": "rejected"}
        reason = {"ct": a.reason.ct, "nonce": a.reason.nonce}
        record["decision"] = {
            "by": signer.member_id, "tx": ctx.tx_id, "height": ctx.height, "time_ms": ctx.time_ms, "reason": reason,
        }  # fmt: skip
        ctx.put(_vkey(a.id, a.version), record)
        ctx.put(f"h/{a.id}", {"version": a.version, "status": "rejected"})
        ctx.emit("rejected", {"id": a.id, "version": a.version})
        return self._summary(record)

    # ---- reads (envelopes only: the content is sealed) ----------------------------------------------------
    @query
    def key(self, ctx: Context, a: OrgArgs) -> Any:
        return ctx.must_get(f"k/{a.org}", f"{a.org} has registered no key")

    @query
    def declaration(self, ctx: Context, a: DeclArgs) -> Any:
        """One version's envelope (the latest if ``version`` is 0)."""
        head = ctx.must_get(f"h/{a.id}", f"no declaration {a.id}")
        version = a.version or head["version"]
        return ctx.must_get(_vkey(a.id, version), f"{a.id} has no version {version}")

    @query
    def versions(self, ctx: Context, a: DeclArgs) -> list[dict[str, Any]]:
        """Every version's summary, oldest first."""
        return [self._summary(v) for _, v in ctx.range(f"d/{a.id}/")]
