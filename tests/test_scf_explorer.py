"""The explorer's SCF lists come a page at a time: more roots than one maturities page, followed by "next"."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any
from urllib.parse import quote

from playwright.sync_api import Browser

from conftest import Live
from liangcao.apps.scf.vouchers import MATURITIES_PAGE
from liangcao.client import Client
from liangcao.demo import BANK, DEMO_ORG_TYPES, FACTORY, TIER1


def test_maturities_page_pages(browser: Browser, tmp_path: Path) -> None:
    live = Live(tmp_path / "net", list(DEMO_ORG_TYPES))
    token = live.home.auth().create("org1/alice", 1)
    roots = MATURITIES_PAGE + 3
    try:
        with Client(live.url, token) as c:
            today = dt.date.fromtimestamp(c.node_time_ms() // 1000)
            for i in range(roots):
                number = f"e{i}"
                inv = c.call(
                    "scf.invoices",
                    "register",
                    {
                        "code": "3100",
                        "number": number,
                        "seller": TIER1,
                        "buyer": FACTORY,
                        "amount": 1_000,
                        "date": today.isoformat(),
                        "doc_hash": hashlib.sha256(number.encode()).hexdigest(),
                    },
                    [live.signer(f"{TIER1}/alice")],
                )["result"]["key"]
                args = {"to": TIER1, "face": 1_000, "invoices": [inv], "settlement_bank": BANK}
                maturity = (today + dt.timedelta(days=30 + i)).isoformat()
                r = c.call("scf.vouchers", "issue", {**args, "maturity": maturity}, [live.signer(f"{FACTORY}/admin")])
                assert r["code"] == 0, r
        page = live_page(browser, live.url, token, "/maturities")
        assert page.locator("table td.mono").count() == MATURITIES_PAGE
        page.click("a[href^='#/maturities/']")
        page.wait_for_selector("body[data-ready='1']")
        page.wait_for_function(f"document.querySelectorAll('table td.mono').length === {roots - MATURITIES_PAGE}")
        assert page.locator("a[href^='#/maturities/']").count() == 0  # the last page has no "next"
    finally:
        live.stop()


def live_page(browser: Browser, url: str, token: str, fragment: str) -> Any:
    page = browser.new_context().new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{url}/explorer?token={quote(token)}#{fragment}")
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    assert errors == []
    return page
