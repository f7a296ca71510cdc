"""``/v1/private``: private data collections (``liangcao.node.private``, ``docs/privacy.md``).

* ``POST /v1/private`` (write token): hand a private value and its salt to this node beside the transaction
  that commits its hash; refused (403 ``NOT_MEMBER``) by a node whose organisation is not a member.
* ``POST /v1/private/endorse`` (write token): this node's peer checks the private value with the collection's
  rule and signs the transaction's public arguments (an endorsement); it holds the value for the commit.
* ``GET /v1/private?contract=&collection=&key=`` (read token): a member organisation's reader gets value,
  salt and hash; anyone else the commitment (hash, members, height, tx) and that a value exists, never the value.
* ``GET /v1/private/disclosure?...`` (read token, members): value, salt and inclusion proofs that
  ``liangcao verify-proof`` checks offline.
* ``GET /v1/private/status`` (read token): rows, values held, transient, missing, alarms.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Query, Request

from liangcao import encoding
from liangcao.api.deps import Reader, Services, Writer, read_body
from liangcao.api.errors import ERRORS
from liangcao.codes import Code
from liangcao.contracts import private as pv
from liangcao.errors import EncodingError, LiangcaoError
from liangcao.node.private import PrivateData, private_of

router = APIRouter(tags=["private"])

#: a hand-over or endorsement request at most (the value is bounded by private_value_bytes_max)
private_request_bytes_max = 64 * 1024

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
SaltHex = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}\Z")]
Members = Annotated[list[Name], msgspec.Meta(max_length=pv.collection_members_max)]


class HandBody(msgspec.Struct, forbid_unknown_fields=True):
    contract: Name
    collection: Name
    key: Annotated[str, msgspec.Meta(min_length=1, max_length=pv.private_key_chars_max)]
    value: Any
    salt: SaltHex
    members: Members = msgspec.field(default_factory=list)


class EndorseBody(msgspec.Struct, forbid_unknown_fields=True):
    contract: Name
    method: Name
    args: dict[str, Any]
    value: Any
    salt: SaltHex
    members: Members = msgspec.field(default_factory=list)


async def _body(request: Request, type_: type[Any]) -> Any:
    raw = await read_body(request, private_request_bytes_max)
    try:
        return msgspec.convert(encoding.decode(raw, private_request_bytes_max), type_, strict=True)
    except EncodingError as exc:
        raise LiangcaoError(exc.code, exc.message) from exc
    except msgspec.ValidationError as exc:
        raise LiangcaoError(Code.INVALID_ARGUMENT, f"request body: {exc}") from exc


def _private(services: Any) -> PrivateData:
    return private_of(services.node)


@router.post("/v1/private", responses=ERRORS, summary="Hand a private value to this node (members only)")
async def hand(request: Request, services: Services, member: Writer) -> Any:
    b: HandBody = await _body(request, HandBody)
    pd = _private(services)
    return await asyncio.to_thread(pd.hand, b.contract, b.collection, b.key, b.value, bytes.fromhex(b.salt), b.members)


@router.post("/v1/private/endorse", responses=ERRORS, summary="Check a private value and endorse the transaction")
async def endorse(request: Request, services: Services, member: Writer) -> Any:
    b: EndorseBody = await _body(request, EndorseBody)
    pd = _private(services)
    salt = bytes.fromhex(b.salt)
    return await asyncio.to_thread(pd.endorse, b.contract, b.method, b.args, b.value, salt, b.members)


@router.get("/v1/private/status", responses=ERRORS, summary="This node's private store")
async def status(services: Services, member: Reader) -> Any:
    return await asyncio.to_thread(_private(services).status)


@router.get("/v1/private/disclosure", responses=ERRORS, summary="A member's proof of one private value")
async def disclosure(
    services: Services,
    member: Reader,
    contract: str = Query(min_length=1, max_length=64),
    collection: str = Query(min_length=1, max_length=64),
    key: str = Query(min_length=1, max_length=pv.private_key_chars_max),
) -> Any:
    return await asyncio.to_thread(_private(services).disclosure, member, contract, collection, key)


@router.get("/v1/private", responses=ERRORS, summary="A private record as the caller may see it")
async def read(
    services: Services,
    member: Reader,
    contract: str = Query(min_length=1, max_length=64),
    collection: str = Query(min_length=1, max_length=64),
    key: str = Query(min_length=1, max_length=pv.private_key_chars_max),
) -> Any:
    return await asyncio.to_thread(_private(services).read, member, contract, collection, key)
