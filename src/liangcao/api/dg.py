"""``/v1/dg``: a dangerous-goods declaration's envelope, served only to the organisations party to it.

The content is sealed (``liangcao.shipping.declaration``): even a member who reads the raw state sees only
ciphertext and the wraps of its data key. These routes add the rule a user expects from the API itself: the
shipper and the carrier see their declaration, a terminal sees a version once it holds a wrap for it (after
the carrier's approval), and everyone else gets 403.

A declaration's id is ``<shipper org>/<name>``, so its paths are ``/v1/dg/{shipper}/{name}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import Depends, FastAPI, Path, Query

from liangcao.codes import Code
from liangcao.errors import LiangcaoError
from liangcao.node.node import Node

_ORG = r"^[a-z0-9][a-z0-9_-]{0,31}$"
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


def readable_by(record: dict[str, Any], org: str) -> bool:
    """Whether ``org`` may see this version: a party holding a wrap of its data key."""
    return org in (record["shipper"], record["carrier"]) or org in (record.get("keys") or {})


def mount(
    app: FastAPI,
    node: Node,
    *,
    reader_member: Callable[..., str],
    runtime: Callable[[], Any],
    errors: dict[int | str, dict[str, Any]],
) -> None:
    def run(method: str, args: dict[str, Any]) -> Any:
        store = node.reader()
        head = store.head()
        if head is None:
            raise LiangcaoError(Code.NOT_READY, "no blocks yet")
        return runtime().query(store, "dg", method, args, height=head.height, time_ms=head.time_ms)

    @app.get(
        "/v1/dg/{shipper}/{name}", responses=errors, tags=["dg"], summary="A declaration version's sealed envelope"
    )
    async def get_declaration(
        shipper: str = Path(pattern=_ORG),
        name: str = Path(pattern=_NAME),
        version: int = Query(0, ge=0, le=999_999, description="0: the latest"),
        member: str = Depends(reader_member),
    ) -> Any:
        decl_id = f"{shipper}/{name}"
        record = await asyncio.to_thread(run, "declaration", {"id": decl_id, "version": version})
        org = member.partition("/")[0]
        if not readable_by(record, org):
            who = "terminals after the carrier approves" if org not in record["terminals"] else "you after approval"
            raise LiangcaoError(
                Code.FORBIDDEN, f"{org} is not party to version {record['version']} of {decl_id} (readable by {who})"
            )
        return record

    @app.get(
        "/v1/dg/{shipper}/{name}/versions", responses=errors, tags=["dg"], summary="A declaration's version history"
    )
    async def get_versions(
        shipper: str = Path(pattern=_ORG), name: str = Path(pattern=_NAME), member: str = Depends(reader_member)
    ) -> Any:
        decl_id = f"{shipper}/{name}"
        latest = await asyncio.to_thread(run, "declaration", {"id": decl_id})
        org = member.partition("/")[0]
        if org not in (latest["shipper"], latest["carrier"], *latest["terminals"]):
            raise LiangcaoError(Code.FORBIDDEN, f"{org} is not party to {decl_id}")
        return await asyncio.to_thread(run, "versions", {"id": decl_id})
