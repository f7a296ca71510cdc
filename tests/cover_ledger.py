"""A cover consortium in memory (``liangcao.testing.Chain``) and the EPCIS facts its claims need."""

from __future__ import annotations

import json
from typing import Any

from liangcao.testing import DAY_MS, Chain

TYPES = ["insurer", "platform", "logistics", "warehouse", "insurer"]
INSURER, PLATFORM, COURIER, WAREHOUSE, INSURER2 = (f"org{i}" for i in range(1, 6))
ADDRESS = "urn:epc:id:sgln:0614141.00001.home"
OTHER_ADDRESS = "urn:epc:id:sgln:0614141.00002.elsewhere"
SKU = "rice-cooker-mi-3l"


def iso(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def return_event(
    order: str, when_ms: int, *, step: str = "shipping", address: str = ADDRESS, rma: str = "rma-1", item: int = 1
) -> str:
    """A courier's pickup (``shipping``) or a warehouse's drop-off (``receiving``) of a return, as JSON text."""
    event: dict[str, Any] = {
        "type": "ObjectEvent",
        "eventTime": iso(when_ms),
        "eventTimeZoneOffset": "+08:00",
        "epcList": [f"urn:epc:id:sgtin:0614141.107346.{item}"],
        "action": "OBSERVE",
        "bizStep": step,
        "readPoint": {"id": address},
        "bizTransactionList": [
            {"type": "po", "bizTransaction": order},
            {"type": "rma", "bizTransaction": f"https://shop.example/rma/{rma}"},
        ],
    }
    return json.dumps(event)


class CoverChain(Chain):
    def __init__(self) -> None:
        super().__init__(TYPES)

    def anchor(self, text: str, who: str = COURIER) -> str:
        """Capture one event with the trace contract; its hash id."""
        return str(self.ok("trace", "capture", {"events": [text]}, who)[0]["id"])

    def product(self, pid: str, kind: str, insurer: str = INSURER, **rules: Any) -> dict[str, Any]:
        defaults: dict[str, Any] = {
            "return_shipping": {"indemnity_fen": 1_200, "window_days": 7, "base_fen": 80, "loading_bps": 20_000},
            "price_protection": {"indemnity_fen": 20_000, "window_days": 15, "base_fen": 100, "rate_bps": 50},
            "local_return": {"indemnity_fen": 800, "window_days": 7, "base_fen": 60},
        }[kind]
        return dict(self.ok("cover", "publish", {"id": pid, "kind": kind, **defaults, **rules}, insurer))

    def buy(self, products: list[str], order: str, *, shopper: str = "s1", price: int = 39_900, **kw: Any) -> list[Any]:
        args = {"products": products, "order": order, "shopper": shopper, "sku": SKU, "price_paid": price,
                "address": ADDRESS, "device": f"dev-{shopper}", **kw}  # fmt: skip
        return list(self.ok("cover", "buy", args, PLATFORM))

    def capital(self, insurer: str = INSURER) -> dict[str, Any]:
        return dict(self.query("cover", "capital", {"insurer": insurer}))


__all__ = ["DAY_MS", "CoverChain"]
