"""``pdc``: private records between organisations (the general private data collection).

Any member of an organisation records a private value shared with the organisations it names (its own among
them): the ledger keeps the commitment (``pdc/~pvt/<collection>/<key>``, :mod:`liangcao.contracts.private`),
member peers keep the value. Collections:

============  =====================================================  ================
``bilateral`` members named per record (the signer's organisation     kept
              and its counterparties)
``ephemeral`` the same, value and salt purged after 3 blocks          3 blocks
============  =====================================================  ================

A key is written once (``ALREADY_EXISTS``): a private record is a fact, and its commitment is what a
disclosure proves.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import msgspec

from liangcao.codes import Code
from liangcao.contracts.base import Args, Context, Contract, query, transaction
from liangcao.contracts.private import Collection, PrivacyCode, PrivateRef, collection_members_max, put_private
from liangcao.domain import OrgId

COLLECTIONS = {
    "bilateral": Collection("bilateral"),
    "ephemeral": Collection("ephemeral", retain_blocks=3),
}


class PutArgs(Args):
    private: PrivateRef
    members: Annotated[list[OrgId], msgspec.Meta(min_length=1, max_length=collection_members_max)]


class GetArgs(Args):
    collection: Annotated[str, msgspec.Meta(max_length=64)]
    key: Annotated[str, msgspec.Meta(max_length=128)]


class PrivateRecords(Contract):
    name = "pdc"
    collections: ClassVar[dict[str, Collection]] = COLLECTIONS

    @transaction
    def put(self, ctx: Context, args: PutArgs) -> dict[str, Any]:
        """Commit a private value (its hash) shared with ``members``; the signer's organisation is one."""
        signer = ctx.require_party()
        collection = COLLECTIONS.get(args.private.collection)
        if collection is None:
            ctx.fail(PrivacyCode.UNKNOWN_COLLECTION, f"pdc has no collection {args.private.collection!r}")
        if signer.org not in args.members:
            ctx.fail(PrivacyCode.NOT_MEMBER, f"the signer's organisation {signer.org} must be a member")
        if len(set(args.members)) != len(args.members):
            ctx.fail(PrivacyCode.BAD_MEMBERS, "members are named once each")
        if ctx.exists(f"~pvt/{collection.name}/{args.private.key}"):
            ctx.fail(Code.ALREADY_EXISTS, f"private record {collection.name}/{args.private.key} exists")
        return put_private(ctx, collection, args.private, args.members)

    @query
    def commitment(self, ctx: Context, args: GetArgs) -> Any:
        """The commitment at a key (hash, members, height, tx), or NOT_FOUND: never the value."""
        return ctx.must_get(f"~pvt/{args.collection}/{args.key}", f"no private record {args.collection}/{args.key}")
