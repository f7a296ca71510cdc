"""The worked example (``examples/abs_deal.py``, ``docs/abs.md``) on a real node with its API: one revolving
purchase, two payment dates and a trigger; the investor view through ``/v1/abs`` and its page in Chromium."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from playwright.sync_api import Browser
from rich.console import Console

_path = Path(__file__).resolve().parents[1] / "examples" / "abs_deal.py"
_spec = importlib.util.spec_from_file_location("liangcao_example_abs_deal", _path)
assert _spec is not None and _spec.loader is not None
example = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = example
_spec.loader.exec_module(example)


def cli(*args: str) -> Any:
    r = subprocess.run(
        [sys.executable, "-m", "liangcao.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def test_the_worked_example(tmp_path: Path, browser: Browser) -> None:
    seen: dict[str, Any] = {}

    def inspect(url: str, token: str, summary: dict[str, Any]) -> None:
        deal = summary["deal"]
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, timeout=30) as http:
            seen["view"] = http.get(f"/v1/abs/deals/{deal}", headers=auth).json()
            seen["list"] = http.get("/v1/abs/deals", headers=auth).json()
            seen["bad"] = http.get("/v1/abs/deals/D123", headers=auth)
            seen["anonymous"] = http.get(f"/v1/abs/deals/{deal}")
            orgs = [f"org{i}" for i in range(1, len(example.ORG_TYPES) + 1)]
            q = {"bank": example.BANK}
            seen["balances"] = [
                http.post("/v1/query/scf.tokens/balance", json={**q, "org": o}, headers=auth).json()["result"][
                    "balance"
                ]
                for o in orgs
            ]
            seen["supply"] = http.post("/v1/query/scf.tokens/supply", json=q, headers=auth).json()["result"]
        # the generated CLI, a query and a transaction (signed with the investor's key from the network folder)
        base = ["--home", str(tmp_path / "net"), "--url", url, "--deal", deal, "--as", f"{example.INV1}/admin"]
        seen["cli_report"] = cli("abs", "deal", "investor-report", *base)
        seen["cli_evaluate"] = cli("abs", "deal", "evaluate", *base)
        page = browser.new_context().new_page()
        page.goto(f"{url}/explorer/abs?token={quote(token)}#/{deal}")
        page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        seen["page"] = page.inner_text("main")
        page.goto(f"{url}/explorer/abs#/")
        page.wait_for_selector("body[data-ready='1'] table.deals", timeout=30_000)
        seen["page_list"] = page.inner_text("main")

    console = Console(file=io.StringIO(), width=160)
    summary = example.run(tmp_path / "net", console, inspect)
    Y = example.Y

    # payment date 1, revolving: fees, interest, then the purchases step keeps cash; every fen accounted for
    first = summary["first"]
    assert first["status"] == "revolving"
    steps = {s["step"]: s for s in first["steps"]}
    assert [s["step"] for s in first["steps"]] == [
        "fee:custody",
        "fee:tax",
        "senior_interest",
        "mezzanine_interest",
        "purchases",
        "subordinated",
    ]
    assert steps["senior_interest"]["paid"] == 700_000 * Y * 400 * 90 // (10_000 * 365)
    assert steps["mezzanine_interest"]["paid"] == 200_000 * Y * 700 * 90 // (10_000 * 360)
    assert first["available"] == 300_000 * Y == sum(s["paid"] for s in first["steps"])
    assert first["retained"] == steps["purchases"]["paid"] > 0
    # the revolving purchase is paid from what the waterfall kept
    assert 0 < summary["revolving"]["price"] <= first["retained"] + summary["revolving"]["purchase_cash"] + 1
    # the trigger: the retailer's default takes the cumulative default rate over 10 %: early amortisation
    names = [(e["name"], e["data"].get("kind")) for e in summary["events"]]
    assert ("defaulted", None) in names and ("trigger", "default_rate") in names
    trigger = next(e["data"] for e in summary["events"] if e["name"] == "trigger")
    assert trigger["effect"] == "early_amortisation" and trigger["status"] == "amortising"
    # payment date 2, amortising: senior principal before any mezzanine principal or residual
    second = summary["second"]
    assert second["status"] == "amortising"
    by = {s["step"]: s for s in second["steps"]}
    assert by["senior_principal"]["short"] > 0
    assert by["mezzanine_principal"]["paid"] == by["subordinated"]["paid"] == 0
    assert second["available"] == second["paid_out"] == sum(s["paid"] for s in second["steps"])
    # cash: every balance of the custodian's token adds up to what it issued
    assert sum(seen["balances"]) == seen["supply"]["outstanding"]
    # the API and the page
    view = seen["view"]
    assert view["deal"]["status"] == "amortising" and view["report"]["tranches"][0]["ratings"][0]["rating"] == "AAA"
    assert {a["state"] for a in view["pool"]} >= {"defaulted", "performing"}
    assert seen["list"]["deals"][0]["deal"] == summary["deal"]
    assert seen["bad"].status_code == 400 and "code" in seen["bad"].json()
    assert seen["anonymous"].status_code == 401
    for text in ("amortising", "default_rate", "AAA", "senior_principal", "defaulted"):
        assert text in seen["page"], text
    assert summary["deal"][:13] in seen["page_list"]
    assert seen["cli_report"]["tranches"] == view["report"]["tranches"]
    assert seen["cli_evaluate"]["receipt"]["result"]["status"] == "amortising"
