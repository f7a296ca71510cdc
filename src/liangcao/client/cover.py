"""The SDK side of consumer cover: one member's desk for the ``cover`` contract (``docs/cover.md``).

>>> insurer = CoverDesk(client, insurer_alice)
>>> insurer.pledge(10_000_000)
>>> insurer.publish("rs-7d", "return_shipping", indemnity_fen=1_200, window_days=7, base_fen=80)
>>> platform = CoverDesk(client, platform_bob)
>>> rs, pp = platform.buy(["rs-7d", "pp-15d"], order="o-1", shopper="s-1", sku="rice-cooker", price_paid=39_900,
...                       address="urn:epc:id:sgln:0614141.00001.0", device="dev-1")
>>> platform.post_price("rice-cooker", 34_900)
>>> platform.claim(pp["id"])["amount"]
5000
>>> platform.claim(rs["id"], event=pickup_id)["status"]        # the courier's anchored pickup
'approved'

Every action raises :class:`liangcao.client.Refused` with the contract's code when it is refused.
``capture_return`` anchors the courier's pickup (or a warehouse's drop-off) through the ``trace`` contract.
"""

from __future__ import annotations

import json
from typing import Any

from liangcao.client import Client, Refused
from liangcao.codes import Code
from liangcao.crypto.signer import Signer


class CoverDesk:
    """The ``cover`` contract's actions and reads, signed by one member."""

    def __init__(self, client: Client, signer: Signer) -> None:
        self.client = client
        self.signer = signer
        self.org = signer.member_id.partition("/")[0]

    def _call(self, method: str, args: dict[str, Any], contract: str = "cover") -> Any:
        receipt = self.client.call(contract, method, args, [self.signer])
        if receipt["code"] != Code.OK:
            raise Refused(receipt)
        return receipt.get("result")

    # ---- the insurer ------------------------------------------------------------------------------------
    def pledge(self, amount: int) -> dict[str, Any]:
        return dict(self._call("pledge_capital", {"amount": amount}))

    def release(self, amount: int) -> dict[str, Any]:
        return dict(self._call("release_capital", {"amount": amount}))

    def publish(self, product: str, kind: str, **rules: Any) -> dict[str, Any]:
        """Publish a product: ``indemnity_fen``, ``window_days`` and the premium rule (``base_fen``,
        ``rate_bps``, ``loading_bps``, ``refuse_ratio_bps``), ``exclusions``, ``shopper_returns_max``."""
        return dict(self._call("publish", {"id": product, "kind": kind, **rules}))

    def review(self, policy: str, approve: bool) -> dict[str, Any]:
        return dict(self._call("review", {"policy": policy, "approve": approve}))

    # ---- the platform -----------------------------------------------------------------------------------
    def buy(
        self, products: list[str], *, order: str, shopper: str, sku: str, price_paid: int, address: str, device: str
    ) -> list[dict[str, Any]]:
        """Policies bought at checkout, one per product, bound to the order, SKU and price paid."""
        args = {"products": products, "order": order, "shopper": shopper, "sku": sku, "price_paid": price_paid,
                "address": address, "device": device}  # fmt: skip
        return list(self._call("buy", args))

    def post_price(self, sku: str, price: int, mark: str = "regular") -> dict[str, Any]:
        return dict(self._call("post_price", {"sku": sku, "price": price, "mark": mark}))

    def claim(self, policy: str, event: str | None = None, event_text: str = "") -> dict[str, Any]:
        """File a claim; the contract decides it from the ledger's facts (``event``: the anchored pickup or
        drop-off; ``event_text`` for an event anchored compactly)."""
        args: dict[str, Any] = {"policy": policy}
        if event:
            args["event"] = event
        if event_text:
            args["event_text"] = event_text
        return dict(self._call("claim", args))

    # ---- couriers and warehouses ------------------------------------------------------------------------
    def capture_return(self, event: dict[str, Any]) -> str:
        """Anchor one EPCIS event (a return's pickup or drop-off) with the ``trace`` contract; its hash id."""
        (anchored,) = self._call("capture", {"events": [json.dumps(event)]}, contract="trace")
        return str(anchored["id"])

    # ---- reads ------------------------------------------------------------------------------------------
    def policy(self, policy: str) -> dict[str, Any]:
        """A policy with its product, its claim (rule and facts) and its payout."""
        return dict(self.client.query("cover", "policy", {"policy": policy}))

    def capital(self, insurer: str | None = None) -> dict[str, Any]:
        return dict(self.client.query("cover", "capital", {"insurer": insurer or self.org}))

    def due(self, insurer: str | None = None) -> dict[str, Any]:
        return dict(self.client.query("cover", "due", {"insurer": insurer or self.org}))


def return_event(
    order: str, rma: str, when_iso: str, address: str, *, step: str = "shipping", epc: str = ""
) -> dict[str, Any]:
    """An EPCIS 2.0 ObjectEvent for a return: the courier's pickup (``shipping`` at the order's ``address``) or
    a warehouse's drop-off (``receiving``), naming the order (``po``) and the return (``rma``)."""
    event: dict[str, Any] = {
        "type": "ObjectEvent",
        "eventTime": when_iso,
        "eventTimeZoneOffset": "+08:00",
        "action": "OBSERVE",
        "bizStep": step,
        "readPoint": {"id": address},
        "bizTransactionList": [{"type": "po", "bizTransaction": order}, {"type": "rma", "bizTransaction": rma}],
    }
    if epc:
        event["epcList"] = [epc]
    return event


__all__ = ["CoverDesk", "Refused", "return_event"]
