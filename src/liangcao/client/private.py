"""The SDK side of private data collections (``docs/privacy.md``).

>>> pdata = PrivateData(client)                 # a client of a node of a member organisation, write token
>>> rec = pdata.put(alice, "bilateral", "price-2027", {"unit_fen": 1234}, members=["org1", "org2"])
>>> pdata.read("pdc", "bilateral", "price-2027")["value"]
{'unit_fen': 1234}

The salt is made here and the hash computed here; value and salt go to the member nodes' ``/v1/private``
(or ``/v1/private/endorse``), never into the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from liangcao.client import Client, Refused
from liangcao.codes import Code
from liangcao.contracts import private as pv
from liangcao.crypto.signer import Signer


class PrivateData:
    """Private records through one node's API (a write token hands values over; a read token reads)."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def hand(
        self, contract: str, collection: str, key: str, value: Any, salt: bytes, members: Sequence[str]
    ) -> dict[str, Any]:
        body = {"contract": contract, "collection": collection, "key": key, "value": value, "salt": salt.hex(),
                "members": list(members)}  # fmt: skip
        return dict(self.client._check(self.client.http.post("/v1/private", json=body)))

    def endorse(
        self, contract: str, method: str, args: dict[str, Any], value: Any, salt: bytes, members: Sequence[str]
    ) -> dict[str, str]:
        """This node's peer checks ``value`` against the collection's rule and endorses ``args``."""
        body = {"contract": contract, "method": method, "args": args, "value": value, "salt": salt.hex(),
                "members": list(members)}  # fmt: skip
        return dict(self.client._check(self.client.http.post("/v1/private/endorse", json=body)))

    def read(self, contract: str, collection: str, key: str) -> dict[str, Any]:
        """Value and salt for a member; the commitment (hash, members) for anyone else."""
        return dict(self.client.get("/v1/private", contract=contract, collection=collection, key=key))

    def disclosure(self, contract: str, collection: str, key: str) -> dict[str, Any]:
        """A member's proof of one value, for ``liangcao verify-proof`` (:func:`pv.check_disclosure`)."""
        return dict(self.client.get("/v1/private/disclosure", contract=contract, collection=collection, key=key))

    def put(self, signer: Signer, collection: str, key: str, value: Any, members: Sequence[str]) -> dict[str, Any]:
        """Record a ``pdc`` private value: hand it to this node, then commit its hash. The receipt's result."""
        salt = pv.new_salt()
        h = pv.commitment_hash(salt, value)
        self.hand("pdc", collection, key, value, salt, members)
        args = {"private": {"collection": collection, "key": key, "hash": h}, "members": list(members)}
        receipt = self.client.call("pdc", "put", args, [signer])
        if receipt["code"] != Code.OK:
            raise Refused(receipt)
        return {**receipt["result"], "salt": salt.hex()}


def finance_privately(
    holder_node: PrivateData,
    bank_node: PrivateData,
    holder: Signer,
    bank: Signer,
    voucher: str,
    face: int,
    rate_bps: int,
    days: int,
) -> dict[str, Any]:
    """SCF financing on private terms: both parties' nodes check and endorse the terms, then the holder and
    the bank sign ``scf.private.finance``. The terms (rate, days, discount, payout) stay off the ledger."""
    from liangcao.apps.scf.private import terms

    bank_org = bank.member_id.partition("/")[0]
    members = [holder.member_id.partition("/")[0], bank_org]
    value = terms(voucher, bank_org, face, rate_bps, days)
    salt = pv.new_salt()
    args: dict[str, Any] = {
        "voucher": voucher, "bank": bank_org, "face": face,
        "private": {"collection": "financing", "key": voucher, "hash": pv.commitment_hash(salt, value)},
        "endorsements": [],
    }  # fmt: skip
    args["endorsements"] = [
        node.endorse("scf.private", "finance", args, value, salt, members) for node in (holder_node, bank_node)
    ]
    receipt = holder_node.client.call("scf.private", "finance", args, [holder, bank])
    if receipt["code"] != Code.OK:
        raise Refused(receipt)
    return {**receipt["result"], "terms": value, "salt": salt.hex()}
