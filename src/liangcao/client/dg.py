"""The SDK side of dangerous-goods declarations: seal, submit, amend, decide and read, for one member.

>>> desk = Declarations(client, shipper_alice, shipper_key)        # a member of org1
>>> desk.submit("DG-2026-0001", content, carrier="org2", terminals=["org3"])["id"]
'org1/DG-2026-0001'
>>> Declarations(client, carrier_bob, carrier_key).approve("org1/DG-2026-0001", 1)
>>> Declarations(client, terminal_carol, terminal_key).read("org1/DG-2026-0001").content.un_number
'UN1203'

Declaration ids are ``<shipper org>/<name>``; a bare name means one of the caller's own organisation (so a
shipper writes ``DG-2026-0001``, its carrier and terminals ``org1/DG-2026-0001``).

Content is checked (:func:`liangcao.shipping.declaration.check`) before it is sealed, and again by every
reader after it is opened; a carrier's ``approve`` opens the version first, so it never approves what it
could not read. A carrier's reason for rejecting is sealed for the shipper and the carrier; ``read`` opens
it (``Opened.reason``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from liangcao.client import Client, Refused
from liangcao.codes import Code
from liangcao.crypto.signer import Signer
from liangcao.shipping import declaration as dg


@dataclass(frozen=True)
class Opened:
    """One declaration version as its reader sees it: the ledger record and the decrypted content."""

    record: dict[str, Any]
    content: dg.Declaration
    reason: str | None = None  # the carrier's reason, opened, if it rejected this version


class Declarations:
    """Declarations as one member of one organisation handles them, with its organisation's X25519 key."""

    def __init__(self, client: Client, signer: Signer, key: X25519PrivateKey | None = None) -> None:
        self.client = client
        self.signer = signer
        self.key = key
        self.org = signer.member_id.partition("/")[0]

    def _call(self, method: str, args: dict[str, Any]) -> Any:
        receipt = self.client.call("dg", method, args, [self.signer])
        if receipt["code"] != Code.OK:
            raise Refused(receipt)
        return receipt.get("result")

    def _id(self, decl_id: str) -> str:
        return dg.qualify(decl_id, self.org)

    def _key(self) -> X25519PrivateKey:
        if self.key is None:
            raise dg.DeclarationError(f"{self.org}'s X25519 key is needed to read or approve declarations")
        return self.key

    def public_key(self, org: str) -> str:
        return str(self.client.query("dg", "key", {"org": org})["key"])

    def register_key(self) -> dict[str, Any]:
        """Register this organisation's X25519 public key (the signer must be an admin)."""
        return dict(self._call("register_key", {"key": dg.public_b64(self._key())}))

    def submit(self, decl_id: str, content: Any, *, carrier: str, terminals: list[str]) -> dict[str, Any]:
        """Seal ``content`` for this organisation and the carrier, and submit it as version 1."""
        checked = dg.check(content)
        decl_id = self._id(decl_id)
        header = dg.Header(self.client.chain_id, decl_id, 1, self.org, carrier)
        readers = {self.org: self.public_key(self.org), carrier: self.public_key(carrier)}
        envelope = dg.seal(checked, header, readers)
        return dict(self._call("submit", {"id": decl_id, "carrier": carrier, "terminals": terminals, **envelope}))

    def amend(self, decl_id: str, content: Any, *, terminals: list[str] | None = None) -> dict[str, Any]:
        """A new version of one of this organisation's declarations, linked to the latest one."""
        checked = dg.check(content)
        decl_id = self._id(decl_id)
        latest = self.client.query("dg", "declaration", {"id": decl_id})
        version = int(latest["version"]) + 1
        header = dg.Header(self.client.chain_id, decl_id, version, latest["shipper"], latest["carrier"])
        readers = {o: self.public_key(o) for o in (latest["shipper"], latest["carrier"])}
        args: dict[str, Any] = {"id": decl_id, "prev": latest["version"], **dg.seal(checked, header, readers)}
        if terminals is not None:
            args["terminals"] = terminals
        return dict(self._call("amend", args))

    def read(self, decl_id: str, version: int = 0) -> Opened:
        """A version this organisation is party to, fetched from ``/v1/dg`` and opened with its key."""
        record = dict(self.client.get(f"/v1/dg/{self._id(decl_id)}", version=version or None))
        chain, key = self.client.chain_id, self._key()
        return Opened(
            record, dg.open_record(record, chain, self.org, key), dg.open_reason(record, chain, self.org, key)
        )

    def approve(self, decl_id: str, version: int) -> dict[str, Any]:
        """As the carrier: open the version (its content must be valid), wrap its key for the terminals."""
        decl_id = self._id(decl_id)
        opened = self.read(decl_id, version)
        terminals = {t: self.public_key(t) for t in opened.record["terminals"]}
        keys = dg.rewrap(opened.record, self.client.chain_id, self.org, self._key(), terminals)
        return dict(self._call("approve", {"id": decl_id, "version": version, "keys": keys}))

    def reject(self, decl_id: str, version: int, reason: str) -> dict[str, Any]:
        """As the carrier: refuse the version, saying why; the reason is sealed for the shipper and carrier."""
        decl_id = self._id(decl_id)
        record = dict(self.client.get(f"/v1/dg/{decl_id}", version=version))
        header = dg.header_of(record, self.client.chain_id)
        sealed = dg.seal_reason(reason, dg.data_key_of(record, self.client.chain_id, self.org, self._key()), header)
        return dict(self._call("reject", {"id": decl_id, "version": version, "reason": sealed}))

    def versions(self, decl_id: str) -> list[dict[str, Any]]:
        return list(self.client.get(f"/v1/dg/{self._id(decl_id)}/versions"))
