"""The consortium's vocabulary, defined once: organisation and member ids, roles, organisation types, money.

Every contract argument, record and party check that names one of these uses the definitions here, so the
rule for what an organisation id looks like, which roles act for an organisation or what an amount of money
may be lives in one place (``liangcao.crypto.identity`` reads its roles and types from here too).

The annotated types are msgspec types: as a contract argument they are checked before the method runs, and
a refused argument's receipt quotes the rule (``Expected `str` matching regex '^[a-z0-9]...' - at
`$.to```). That text is part of the outcome every peer records, so a released pattern or bound never
changes: a new rule gets a new name.

=================  ==========================================================================
``OrgId``          an organisation: ``org1``, ``acme-bank`` (lower case, digits, ``_`` ``-``; 32)
``MemberId``       a member: ``<org>/<name>`` (``org1/alice``), as certificates name them
``Role``           ``admin``, ``member`` (people) or ``peer``, ``orderer`` (an organisation's nodes)
``PARTY_ROLES``    the roles that take business actions: ``admin`` and ``member``, never a node's key
``OrgType``        what an organisation is in the consortium (``bank``, ``supplier``, ...)
``Money``          a positive amount of integer fen, at most ``limits.money_fen_max``
=================  ==========================================================================
"""

from __future__ import annotations

import typing
from typing import Annotated, Literal

import msgspec

from liangcao import limits

#: An organisation id, unanchored: the piece every pattern that holds one (member ids, invoice keys,
#: declaration ids) is built from.
ORG_ID_CHARS = r"[a-z0-9][a-z0-9_-]{0,31}"
#: The organisation id rule; the consortium contract refuses any other id for a new organisation.
ORG_ID_PATTERN = rf"^{ORG_ID_CHARS}$"
OrgId = Annotated[str, msgspec.Meta(pattern=ORG_ID_PATTERN)]

#: ``<org>/<name>``: an organisation id, a slash, and a name without slashes or white space.
MEMBER_ID_PATTERN = rf"^{ORG_ID_CHARS}/[^/\s]{{1,64}}$"
MemberId = Annotated[str, msgspec.Meta(pattern=MEMBER_ID_PATTERN)]

Role = Literal["admin", "member", "peer", "orderer"]
ROLES: tuple[str, ...] = typing.get_args(Role)
#: Roles that take business actions. ``peer`` and ``orderer`` certificates belong to an organisation's nodes:
#: they attest and seal, and a stolen node key must not move money, freeze a voucher or vote.
PARTY_ROLES: frozenset[str] = frozenset({"admin", "member"})
#: The same roles in the order messages name them ("an admin or member").
PARTY_ROLE_ORDER: tuple[str, ...] = ("admin", "member")

OrgType = Literal[
    "core_enterprise",
    "supplier",
    "bank",
    "insurer",
    "warehouse",
    "logistics",
    "platform",
    "regulator",
    "customs",
    "brand",
    "shipper",
    "carrier",
    "terminal",
    "factor",  # a factoring company: the originator of a receivable ABS
    "spv",  # the special purpose vehicle (the ABS manager's plan) that holds a pool and issues notes
    "rating_agency",
    "investor",
]
#: Every organisation type, in the order certificates, the CLI and error messages list them.
ORG_TYPES: tuple[str, ...] = typing.get_args(OrgType)

#: A positive amount of money in integer fen (a yuan is 100 fen); floats never reach a contract.
Money = Annotated[int, msgspec.Meta(gt=0, le=limits.money_fen_max)]


def org_of(party: str) -> str:
    """The organisation of a member id (``org1/alice`` -> ``org1``), or an organisation id itself."""
    return party.partition("/")[0]


__all__ = [
    "MEMBER_ID_PATTERN",
    "ORG_ID_CHARS",
    "ORG_ID_PATTERN",
    "ORG_TYPES",
    "PARTY_ROLES",
    "PARTY_ROLE_ORDER",
    "ROLES",
    "MemberId",
    "Money",
    "OrgId",
    "OrgType",
    "Role",
    "org_of",
]
