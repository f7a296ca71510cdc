"""Stable result codes, and the one registry that names every code and gives its HTTP status.

A code's number never changes once released: receipts on every peer store it, and clients branch on it.
Ranges: 0 ok; 1xx encoding and transaction envelope; 2xx signatures and identities; 3xx contract dispatch
and runtime limits; 4xx business rules shared by all contracts; 5xx node and API admission; 1000 and up are
owned by application contracts (each app declares its own ``IntEnum`` in its range and registers it with
:func:`register`, which refuses a number another enum already owns). :func:`name_of` and
:func:`http_status` answer for any registered code; the API maps codes to HTTP statuses through
:func:`http_status` alone, and code never compares a result with a number literal (``Code.OK``, not 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Code(IntEnum):
    OK = 0

    # 1xx: the bytes and the envelope
    BAD_ENCODING = 100
    TOO_LARGE = 101
    VALUE_TOO_DEEP = 102
    FLOAT_NOT_ALLOWED = 103
    INT_OUT_OF_RANGE = 104
    MALFORMED_TX = 110
    WRONG_CHAIN = 111
    EXPIRED = 112
    TTL_TOO_LONG = 113
    DUPLICATE_TX = 114
    TOO_MANY_SIGNATURES = 115

    # 2xx: who signed
    MISSING_SIGNATURE = 200
    BAD_SIGNATURE = 201
    UNKNOWN_CERTIFICATE = 202
    UNKNOWN_ORGANIZATION = 203
    CERTIFICATE_REVOKED = 204
    CERTIFICATE_EXPIRED = 205
    DUPLICATE_SIGNER = 206
    BAD_CERTIFICATE = 207

    # 3xx: dispatch into a contract and the runtime's limits
    UNKNOWN_CONTRACT = 300
    UNKNOWN_METHOD = 301
    INVALID_ARGUMENT = 302
    CONTRACT_ERROR = 303
    LIMIT_EXCEEDED = 304
    BAD_KEY = 305

    # 4xx: business rules every contract shares
    FORBIDDEN = 400
    NOT_SIGNED = 401
    WRONG_ROLE = 402
    WRONG_ORG_TYPE = 403
    NOT_FOUND = 404
    ALREADY_EXISTS = 409
    INVALID_STATE = 410
    INSUFFICIENT_FUNDS = 411
    QUORUM_NOT_MET = 412

    # 5xx: node and API admission (never stored in receipts)
    MEMPOOL_FULL = 500
    UNAUTHORIZED = 501
    NOT_READY = 502
    BAD_BLOCK = 503
    INSUFFICIENT_SCOPE = 504  # a valid bearer token without the scope the endpoint needs (e.g. read, not write)
    OUTCOME_UNKNOWN = 505  # the ordering service did not confirm in time: the transaction may still commit
    INTERNAL = 599


#: Codes whose transactions never consume their tx id: a forged or unverifiable copy of someone's
#: transaction must not be able to "use up" the genuine one by reaching a block first.
NON_CONSUMING = frozenset(
    {
        Code.BAD_ENCODING,
        Code.TOO_LARGE,
        Code.VALUE_TOO_DEEP,
        Code.FLOAT_NOT_ALLOWED,
        Code.INT_OUT_OF_RANGE,
        Code.MALFORMED_TX,
        Code.WRONG_CHAIN,
        Code.EXPIRED,
        Code.TTL_TOO_LONG,
        Code.DUPLICATE_TX,
        Code.TOO_MANY_SIGNATURES,
        Code.MISSING_SIGNATURE,
        Code.BAD_SIGNATURE,
        Code.UNKNOWN_CERTIFICATE,
        Code.UNKNOWN_ORGANIZATION,
        Code.CERTIFICATE_REVOKED,
        Code.CERTIFICATE_EXPIRED,
        Code.DUPLICATE_SIGNER,
        Code.BAD_CERTIFICATE,
    }
)


@dataclass(frozen=True, slots=True)
class CodeInfo:
    number: int
    name: str
    owner: str  # "liangcao" for Code, else the registering application
    http_status: int


#: HTTP statuses of the codes that are not plain bad input (400).
_HTTP: dict[int, int] = {
    Code.OK: 200,
    Code.UNAUTHORIZED: 401,
    Code.FORBIDDEN: 403,
    Code.INSUFFICIENT_SCOPE: 403,
    Code.NOT_FOUND: 404,
    Code.TOO_LARGE: 413,
    Code.MEMPOOL_FULL: 503,
    Code.NOT_READY: 503,
    Code.OUTCOME_UNKNOWN: 202,  # a status, never a refusal: answered as accepted, with the tx id to look up
    Code.INTERNAL: 500,
}

_REGISTRY: dict[int, CodeInfo] = {}


def register(enum: type[IntEnum], owner: str, http: dict[int, int] | None = None) -> None:
    """Add an enum of codes to the registry. A number already owned by another enum is a programmer error
    (two apps would then disagree on what a receipt means): refused with ``ValueError`` at import."""
    for member in enum:
        known = _REGISTRY.get(int(member))
        if known is not None and (known.owner, known.name) != (owner, member.name):
            raise ValueError(f"code {int(member)} is {known.owner}.{known.name}; {owner}.{member.name} cannot take it")
        status = (http or {}).get(int(member), _HTTP.get(int(member), 400))
        _REGISTRY[int(member)] = CodeInfo(int(member), member.name, owner, status)


def info(code: int) -> CodeInfo | None:
    """What the registry knows of ``code`` (None for a number nobody registered)."""
    return _REGISTRY.get(int(code))


def name_of(code: int) -> str:
    """The code's name, e.g. ``BAD_SIGNATURE``, or ``CODE_<n>`` for an unregistered number."""
    known = _REGISTRY.get(int(code))
    return known.name if known is not None else f"CODE_{int(code)}"


def http_status(code: int) -> int:
    """The HTTP status an error with this code is answered with (400 for any business refusal)."""
    known = _REGISTRY.get(int(code))
    return known.http_status if known is not None else 400


def registered() -> list[CodeInfo]:
    return [_REGISTRY[n] for n in sorted(_REGISTRY)]


register(Code, "liangcao")
