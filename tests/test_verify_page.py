"""The consumer verify page in a real Chromium (Debian's, driven by Playwright): verified, and tampered."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route

from conftest import Live
from liangcao.client import Client
from liangcao.crypto import keys
from liangcao.ledger.block import verify_proof_dict
from liangcao.trace.bundle_check import check_bundle
from liangcao.trace.facts import index_form
from trace_ledger import BRAND_PREFIX, document, obj

TYPES = ["brand", "logistics", "customs"]
TIN = "urn:epc:id:sgtin:0614141.107346.7"
CASE = "urn:epc:id:sscc:0614141.1234567897"


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    live = Live(tmp_path_factory.mktemp("verify") / "net", TYPES)
    admins = [live.signer(f"org{i}/admin") for i in (1, 2, 3)]
    with Client(live.url, live.token) as c:
        assert c.call("trace", "assign_prefix", {"prefix": BRAND_PREFIX, "org": "org1"}, admins)["code"] == 0
        brand = document(
            [
                obj([TIN], "commissioning", "2026-10-01T08:00:00+08:00", action="ADD"),
                {"type": "AggregationEvent", "eventTime": "2026-10-01T09:00:00+08:00", "eventTimeZoneOffset": "+08:00",
                 "parentID": CASE, "childEPCs": [TIN], "action": "ADD", "bizStep": "packing"},
            ]
        )  # fmt: skip
        c.capture(brand, live.signer("org1/alice"))
        c.capture(document([obj([CASE], "shipping", "2026-10-02T08:00:00+08:00")]), live.signer("org2/alice"))
        inspect = obj([CASE], "inspecting", "2026-10-03T08:00:00+08:00", disposition="in_progress")
        c.capture(document([inspect]), live.signer("org3/alice"))
    yield live
    live.stop()


def open_page(browser: Browser, url: str, tamper: Any = None) -> tuple[Page, list[str]]:
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    if tamper is not None:

        def handle(route: Route) -> None:
            response = route.fetch()
            body = response.json()
            tamper(body)
            route.fulfill(response=response, body=json.dumps(body))

        page.route("**/v1/trace/verify*", handle)
    page.goto(url)
    page.wait_for_selector("body[data-done='1']", timeout=30_000)
    return page, errors


def test_the_bundle_checks_out_in_python_too(net: Live) -> None:
    bundle = httpx.get(f"{net.url}/v1/trace/verify", params={"id": TIN}).json()  # public: no token
    assert [e["org"] for e in bundle["events"]] == ["org1", "org1", "org2", "org3"]
    for e in bundle["events"]:
        assert verify_proof_dict(e["proof"]["tx"]) == (True, "ok")
        assert verify_proof_dict(e["proof"]["receipt"]) == (True, "ok")
        assert e["proof"]["attestations"][0]["block_hash"] == e["proof"]["tx"]["block_hash"]


def test_a_real_proof_is_verified(net: Live, browser: Browser) -> None:
    page, errors = open_page(browser, f"{net.url}/verify?id={quote(TIN)}")
    assert page.get_attribute("#result", "data-state") == "verified", page.inner_text("main")
    assert page.locator(".event").count() == 4 and page.locator(".event.bad").count() == 0
    assert "inspecting" in page.inner_text("#events") and "org3" in page.inner_text("#events")
    page.click("#lang")
    assert "已验证" in page.inner_text("#result")
    page.screenshot(path=str(net.home.root / "verify.png"), full_page=True)
    assert errors == []
    page.close()


def flip_path(bundle: dict[str, Any]) -> None:
    proof = bundle["events"][1]["proof"]["tx"]
    if proof["path"]:
        first = proof["path"][0]
        proof["path"][0] = ("0" if first[0] != "0" else "1") + first[1:]
    else:
        proof["index"] += 1


def edit_event(bundle: dict[str, Any]) -> None:
    proof = bundle["events"][3]["proof"]["tx"]
    proof["leaf"] = proof["leaf"].replace("inspecting", "receiving")


def forge_org(bundle: dict[str, Any]) -> None:
    """A node inventing an organisation: its own CA, its own attestations. The QR code's anchors catch it."""
    import time

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from liangcao.crypto.identity import issue, make_ca
    from liangcao.ledger.block import make_attestation

    now = int(time.time() * 1000)
    ca_key, key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    ca_cert = make_ca("org1", "brand", ca_key, now)
    cert = issue(ca_key, ca_cert, "peer0", "peer", key.public_key(), now)
    bundle["organisations"] = [{**o, "ca_cert": keys.b64(ca_cert)} for o in bundle["organisations"]][:1]

    for e in bundle["events"]:
        h = e["proof"]["tx"]["header"]
        e["proof"]["attestations"] = [
            make_attestation(key, cert, h["chain_id"], h["height"], e["proof"]["tx"]["block_hash"], h["state_hash"])
        ]


@pytest.mark.parametrize("tamper", [flip_path, edit_event], ids=["merkle-path", "event-text"])
def test_a_tampered_proof_is_not_verified(net: Live, browser: Browser, tamper: Any) -> None:
    page, _ = open_page(browser, f"{net.url}/verify?id={quote(TIN)}", tamper)
    assert page.get_attribute("#result", "data-state") == "not-verified"
    assert page.locator(".event.bad").count() >= 1
    page.close()


def test_an_invented_organisation_is_caught_by_the_qr_anchors(net: Live, browser: Browser) -> None:
    qr = httpx.get(f"{net.url}/verify/qr.svg", params={"id": TIN})
    assert qr.status_code == 200 and qr.text.lstrip().startswith("<svg")
    link = qr.headers["X-Digital-Link"]
    assert f"/{index_form(TIN)}?anchors=" in link
    # the QR code's address resolves to the page (a GS1 Digital Link on this node)
    r = httpx.get(link, follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"].startswith("/verify?id=")
    page, errors = open_page(browser, link)
    assert page.get_attribute("#result", "data-state") == "verified" and errors == []
    page.close()
    page, _ = open_page(browser, link, forge_org)
    assert page.get_attribute("#result", "data-state") == "not-verified"
    page.close()


def test_the_cli_checks_the_same_bundle_offline(net: Live, tmp_path: Path) -> None:
    """``liangcao verify-proof`` on the page's bundle: verified; tampered in any part, not verified."""
    bundle = httpx.get(f"{net.url}/v1/trace/verify", params={"id": TIN}).json()
    assert check_bundle(bundle).verified

    def cli(data: dict[str, Any], *extra: str) -> subprocess.CompletedProcess[str]:
        path = tmp_path / "bundle.json"
        path.write_text(json.dumps(data))
        cmd = [sys.executable, "-m", "liangcao.cli", "verify-proof", str(path), *extra]
        return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})

    r = cli(bundle)
    assert r.returncode == 0 and "verified: 4 events" in r.stdout, r.stdout + r.stderr
    fp = hashlib.sha256(keys.unb64(bundle["organisations"][0]["ca_cert"])).hexdigest()
    assert cli(bundle, "--anchors", fp[:16]).returncode == 0  # org1's CA alone attested every block here

    def tampered(change: Any) -> dict[str, Any]:
        copy = json.loads(json.dumps(bundle))
        change(copy)
        return copy

    def edit_event(b: dict[str, Any]) -> None:
        tx = json.loads(b["events"][0]["proof"]["tx"]["leaf"])
        tx["body"]["args"]["events"][0] = tx["body"]["args"]["events"][0].replace("commissioning", "inspecting")
        b["events"][0]["proof"]["tx"]["leaf"] = json.dumps(tx)

    cases = {
        "path": lambda b: (
            b["events"][1]["proof"]["tx"]["path"].__setitem__(0, "00" * 32)
            if b["events"][1]["proof"]["tx"]["path"]
            else b["events"][1]["proof"]["tx"].__setitem__("index", 5)
        ),
        "event": edit_event,
        "header": lambda b: b["events"][2]["proof"]["tx"]["header"].__setitem__("time_ms", 1),
        "nobody": lambda b: b["events"][3]["proof"].__setitem__("attestations", []),
    }
    for name, change in cases.items():
        r = cli(tampered(change))
        assert r.returncode == 1 and "NOT verified" in r.stdout + r.stderr, name
    r = cli(bundle, "--anchors", "0000")
    assert r.returncode == 1 and "nobody trusted" in r.stdout
