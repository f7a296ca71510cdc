"""The explorer in Debian's Chromium (Playwright), on a node holding the demo's data: every page loads without
console errors, shows the API's numbers, follows new blocks live, works on a phone, switches to Chinese.

Screenshots go to ``artifacts/screenshots/`` (CI keeps them); the README shows some of them.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from playwright.sync_api import Browser, Page
from rich.console import Console

from conftest import Live
from liangcao.client import Client
from liangcao.demo import DEMO_ORG_TYPES, scenario

SHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
TIN = "urn:epc:id:sgtin:0614141.107346.1"


class Demo:
    def __init__(self, live: Live, summary: dict[str, Any]) -> None:
        self.live, self.summary = live, summary
        self.token = live.home.auth().create("org1/alice", 1)
        self.client = Client(live.url, self.token)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    live = Live(tmp_path_factory.mktemp("explorer") / "net", list(DEMO_ORG_TYPES))
    with Client(live.url, live.home.auth().create("org1/alice", 1)) as c:
        summary = scenario(live.home, c, Console(file=io.StringIO(), width=120), None)
    d = Demo(live, summary)
    yield d
    d.client.close()
    live.stop()


def open_page(browser: Browser, demo: Demo, fragment: str, **context: Any) -> tuple[Page, list[str]]:
    page = browser.new_context(**context).new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{demo.live.url}/explorer?token={quote(demo.token)}#{fragment}")
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    return page, errors


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_chain_view_shows_the_head_and_follows_new_blocks(browser: Browser, demo: Demo) -> None:
    page, errors = open_page(browser, demo, "/")
    head = demo.client.head()["header"]
    assert page.inner_text("#stat-height") == str(head["height"])
    orgs = demo.client.query("consortium", "config", {})["orgs"]
    assert page.inner_text("#stat-orgs") == str(len(orgs))
    assert page.locator("#blocks tr").first.get_attribute("data-height") == str(head["height"])
    assert page.locator("#chart rect").count() == min(40, head["height"] + 1)
    assert "token" not in page.url  # the token left the address bar
    shot(page, "explorer-chain")
    # A transaction is committed: the page shows its block without a reload.
    admin = demo.live.signer("org1/admin")
    receipt = demo.client.call("demo.wallet", "mint", {"to": "org1/bob", "amount": 7}, [admin])
    assert receipt["code"] == 0
    new_height = demo.client.head()["header"]["height"]
    page.wait_for_selector(f"#blocks tr[data-height='{new_height}']", timeout=10_000)
    assert page.inner_text("#stat-height") == str(new_height)
    assert page.locator("#txs tr").first.inner_text().split()[1] == "demo.wallet.mint"
    assert errors == []


def test_block_and_transaction_pages_match_the_api(browser: Browser, demo: Demo) -> None:
    tx_id = demo.summary["payment_tx"]
    info = demo.client.tx(tx_id)
    block = demo.client.block(info["height"])
    page, errors = open_page(browser, demo, f"/block/{info['height']}")
    assert page.locator("tr.tx").count() == len(block["txs"])
    assert page.locator("tr.attestation").count() == len(block["attestations"]) >= 1
    assert "org1/peer0" in page.inner_text("main")
    page.click(f"a[href='#/tx/{tx_id}']")
    page.wait_for_selector("#finality")
    assert page.locator("tr.signer").count() == len(info["signers"])
    assert info["signers"][0]["member"] in page.inner_text("main")
    finality = info["finality"]
    assert f"({len(finality['attested_by'])}/{finality['quorum']})" in page.inner_text("#finality")
    assert page.inner_text("#code").startswith("Code 0")
    shot(page, "explorer-tx")
    assert errors == []


def test_voucher_tree_portfolio_and_financed_book(browser: Browser, demo: Demo) -> None:
    root = demo.summary["scf"]["root"]
    tree = demo.client.query("scf.vouchers", "tree", {"voucher": root})

    def nodes(n: dict[str, Any]) -> list[dict[str, Any]]:
        return [n, *(m for c in n["children"] for m in nodes(c))]

    every = nodes(tree)
    page, errors = open_page(browser, demo, f"/voucher/{root}")
    assert page.locator("#tree g.node").count() == len(every)
    faces = sorted(int(page.locator("#tree g.node").nth(i).get_attribute("data-face") or 0) for i in range(len(every)))
    assert faces == sorted(n["face"] for n in every)
    financed = [n for n in every if n["financed_by"]]
    assert financed, "the demo finances part of the tree"
    shot(page, "explorer-voucher-tree")
    bank = financed[0]["financed_by"]
    page.goto(f"{demo.live.url}/explorer#/book/{bank}")
    page.wait_for_selector("body[data-ready='1'] #total")
    book = demo.client.query("scf.vouchers", "financed_book", {"org": bank})
    assert f"{book['total'] / 100:,.2f}" in page.inner_text("#total")
    holder = every[-1]["holder"]
    page.goto(f"{demo.live.url}/explorer#/portfolio/{holder}")
    page.wait_for_selector("body[data-ready='1'] #total")
    portfolio = demo.client.query("scf.vouchers", "portfolio", {"org": holder})
    assert f"{portfolio['total'] / 100:,.2f}" in page.inner_text("#total")
    assert errors == []


def test_item_history_places_and_graph(browser: Browser, demo: Demo) -> None:
    history = demo.client.provenance(TIN)
    page, errors = open_page(browser, demo, f"/item/{quote(TIN, safe='')}")
    assert page.locator("#timeline li.event").count() == len(history["events"]) >= 5
    assert page.locator("#map circle").count() >= 2
    assert page.locator("#graph path").count() == len(history["edges"]) >= 1
    shot(page, "explorer-item")
    page.click("a[href^='/verify']")
    page.wait_for_selector("body[data-done='1']", timeout=30_000)
    assert page.get_attribute("#result", "data-state") == "verified"
    assert errors == []


def test_consortium_search_phone_and_chinese(browser: Browser, demo: Demo) -> None:
    orgs = demo.client.query("consortium", "config", {})["orgs"]
    page, errors = open_page(browser, demo, "/consortium")
    assert page.locator("tr.org").count() == len(orgs)
    assert "✓" in page.inner_text("main") and page.inner_text("#forks") == "none"
    page.fill("#q", TIN)
    page.press("#q", "Enter")
    page.wait_for_selector("#timeline")
    page.fill("#q", "3")
    page.press("#q", "Enter")
    page.wait_for_selector("h1:has-text('Block 3')")
    page.click("#lang")
    page.wait_for_selector("h1:has-text('区块 3')")
    assert "交易" in page.inner_text("main")
    phone, phone_errors = open_page(browser, demo, "/", viewport={"width": 390, "height": 844}, is_mobile=True)
    assert phone.evaluate("document.documentElement.scrollWidth") <= 392
    shot(phone, "explorer-phone")
    assert errors == [] and phone_errors == []
