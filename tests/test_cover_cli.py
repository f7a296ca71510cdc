"""``liangcao cover ...`` against a live node, and the SDK desk: the whole story from the command line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conftest import Live
from cover_ledger import ADDRESS, SKU, iso
from liangcao.apps.cover.rules import CoverCode
from liangcao.cli import app
from liangcao.client import Client, Refused
from liangcao.client.cover import CoverDesk, return_event

ENV = {"COLUMNS": "200"}


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    node = Live(tmp_path_factory.mktemp("cover-cli") / "net", ["insurer", "platform", "logistics", "warehouse"])
    yield node
    node.stop()


def cover(net: Live, *args: str, code: int = 0) -> Any:
    r = CliRunner().invoke(app, ["cover", *args, "--home", str(net.home.root)], env=ENV)
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output
    try:
        return json.loads(r.output)
    except ValueError:
        return r.output


def test_the_story_from_the_command_line_and_the_sdk(net: Live, tmp_path: Path, browser: Any) -> None:
    cover(net, "capital", "pledge", "--amount", "1000000", "--as", "org1/admin")
    cover(net, "products", "publish", "--id", "rs", "--kind", "return_shipping", "--indemnity-fen", "1200",
          "--window-days", "7", "--base-fen", "80", "--as", "org1/admin")  # fmt: skip
    cover(net, "products", "publish", "--id", "pp", "--kind", "price_protection", "--indemnity-fen", "20000",
          "--window-days", "15", "--base-fen", "100", "--rate-bps", "50", "--as", "org1/admin")  # fmt: skip
    assert [p["id"] for p in cover(net, "products", "list")["products"]] == ["pp", "rs"]
    # a refusal: exit 2, the code in the receipt; a malformed amount: exit 1, nothing signed
    refused = cover(net, "capital", "release", "--amount", "2000000", "--as", "org1/admin", code=2)
    assert refused["receipt"]["code"] == CoverCode.CAPITAL_IN_USE
    assert "invalid arguments" in cover(net, "capital", "pledge", "--amount", "1.5", "--as", "org1/admin", code=1)
    bought = cover(net, "policies", "buy", "--products", "rs,pp", "--order", "o-1", "--shopper", "s-1", "--sku", SKU,
                   "--price-paid", "39900", "--address", ADDRESS, "--device", "d-1", "--as", "org2/admin")  # fmt: skip
    rs, pp = bought["receipt"]["result"]
    cover(net, "prices", "post", "--sku", SKU, "--price", "35900", "--as", "org2/admin")
    assert (
        cover(net, "claims", "file", "--policy", pp["id"], "--as", "org2/admin")["receipt"]["result"]["amount"] == 4_000
    )
    # the courier's pickup, through the SDK desk; the claim from the command line
    with Client(net.url, net.token) as c:
        courier = CoverDesk(c, net.signer("org3/admin"))
        when = iso(c.node_time_ms())  # by the node's clock: the pickup follows the purchase
        eid = courier.capture_return(return_event("o-1", "https://shop.example/rma/1", when, ADDRESS))
        with pytest.raises(Refused) as refused_claim:
            CoverDesk(c, net.signer("org2/admin")).claim(rs["id"])  # no fact named
        assert refused_claim.value.code == CoverCode.NO_FACT
    filed = cover(net, "claims", "file", "--policy", rs["id"], "--event", eid, "--as", "org2/admin")
    assert filed["receipt"]["result"]["status"] == "approved"
    due = cover(net, "payouts", "due", "--insurer", "org1")
    assert {d["policy"] for d in due["payouts"]} == {rs["id"], pp["id"]}
    out = cover(net, "payout-adapter", "--as", "org1/admin", "--engine", str(tmp_path / "adapter"), "--once")
    assert cover(net, "payouts", "due", "--insurer", "org1") == {"payouts": [], "premiums": []}, out
    shown = cover(net, "policies", "show", "--policy", rs["id"])
    assert shown["claim"]["status"] == "paid" and shown["payout"]["paid"]
    assert cover(net, "capital", "show", "--insurer", "org1")["paid"] == 5_200
    # the policy's page in a real browser: terms, the pickup fact, the payout
    page = browser.new_context().new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{net.url}/explorer/cover?token={net.token}#/{rs['id']}")
    page.wait_for_selector("#facts li.fact", timeout=15_000)
    text = page.inner_text("#view")
    assert "shipping event" in text and "org3/admin" in text and "12.00" in text and "yes (tx" in text
    assert "token" not in page.url and errors == []
    page.context.close()
    assert "not ORG/MEMBER" in cover(net, "payout-adapter", "--as", "../x", "--engine", str(tmp_path), code=1)
