"""What every router shares: the node's services, the caller's credentials, and bounded request bodies.

Credentials (``liangcao.tokens``): reads need a bearer token (:func:`reader_member`); a browser's
``EventSource`` cannot set headers, so a GET may carry it as ``?access_token=`` (RFC 6750 section 2.3).
Only a ``write`` token in the ``Authorization`` header may make the node sign (:func:`writer_member`);
a read token is refused with 403 ``INSUFFICIENT_SCOPE``, never upgraded.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from liangcao.api.errors import ApiError
from liangcao.codes import Code
from liangcao.node.services import NodeServices
from liangcao.tokens import WRITE, Grant, TokenAuth

bearer = HTTPBearer(auto_error=False)


def get_services(request: Request) -> NodeServices:
    """The services of the node this app serves (``create_app`` puts them in ``app.state``)."""
    services: NodeServices = request.app.state.services
    return services


def get_auth(request: Request) -> TokenAuth:
    auth: TokenAuth = request.app.state.auth
    return auth


Services = Annotated[NodeServices, Depends(get_services)]


def reader_grant(
    request: Request,
    creds: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
) -> Grant:
    """The grant of the caller's token, for a read."""
    auth = get_auth(request)
    if creds is not None:
        return auth.check(creds.credentials)
    # RFC 6750 section 2.3: a browser's EventSource cannot set headers, so reads may carry the token
    # in the query (the explorer's live view); only for GET, never for writes.
    token = request.query_params.get("access_token") if request.method == "GET" else None
    if token:
        return auth.check(token)
    raise ApiError(401, Code.UNAUTHORIZED, "reads need a bearer token: ask the node's admin (liangcao token create)")


def reader_member(grant: Grant = Depends(reader_grant)) -> str:  # noqa: B008
    """The member a read token names."""
    return grant.member


def writer_member(
    request: Request,
    creds: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
) -> str:
    """The member a ``write`` token names: only such a token may make the node sign (never from the query)."""
    if creds is None:
        raise ApiError(
            401, Code.UNAUTHORIZED, "this request needs a bearer token with the write scope (Authorization header)"
        )
    grant = get_auth(request).check(creds.credentials)
    if not grant.allows(WRITE):
        raise ApiError(
            403,
            Code.INSUFFICIENT_SCOPE,
            f"this token only reads; making the node sign as {grant.member} needs a write token "
            "(liangcao token create --scope write), or sign on your side with the SDK",
            {"scope_needed": WRITE, "scopes": sorted(grant.scopes)},
        )
    return grant.member


Reader = Annotated[str, Depends(reader_member)]
Writer = Annotated[str, Depends(writer_member)]


async def read_body(request: Request, size_max: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``size_max`` bytes (declared or
    streamed): a client cannot make the node buffer more than that."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > size_max:
        raise ApiError(413, Code.TOO_LARGE, f"request body is larger than {size_max} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > size_max:
            raise ApiError(413, Code.TOO_LARGE, f"request body is larger than {size_max} bytes")
    return bytes(body)
