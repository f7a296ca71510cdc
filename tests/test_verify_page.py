"""The consumer verify page in a real Chromium (Debian's, driven by Playwright): verified, tampered, attacked.

The page trusts only what its address carries (the QR code's ``anchors=`` and ``quorum=``), checks every
capture's signatures, derives who recorded each event from the signer's certificate, needs a quorum of
trusted organisations' attestations and refuses events that are not the item's. Honest histories here are
attested by a quorum because the other organisations' peers re-executed the node's blocks
(``liangcao.witness``); the attacks are ``verify_forge``'s, the same ones ``test_verify_attacks`` runs offline.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route
from typer.testing import CliRunner

from conftest import Live
from liangcao.api.verify import trust_params
from liangcao.cli import app
from liangcao.client import Client
from liangcao.crypto import keys
from liangcao.ledger.block import verify_proof_dict
from liangcao.trace.bundle_check import Trust, Why, check_bundle
from liangcao.trace.facts import index_form
from liangcao.witness import witness
from trace_ledger import BRAND_PREFIX, document, obj
from verify_forge import Forge, attacks

TYPES = ["brand", "logistics", "customs"]
TIN = "urn:epc:id:sgtin:0614141.107346.7"
OTHER = "urn:epc:id:sgtin:0614141.107346.8"
LATE = "urn:epc:id:sgtin:0614141.107346.9"
CASE = "urn:epc:id:sscc:0614141.1234567897"
#: attacks performed through the page (every one is compared with the offline checker in test_same_verdicts)
PAGE_ATTACKS = [
    "invented-block-one-attestation",
    "self-signed-attestations",
    "member-non-peer-attestation",
    "unsigned-capture",
    "recorded-by-lie",
    "unrelated-event",
]


class Net:
    def __init__(self, live: Live) -> None:
        self.live = live
        self.params: dict[str, str] = {}

    def witness(self) -> dict[str, int]:
        peers = [self.live.signer("org2/peer0"), self.live.signer("org3/peer0")]
        with Client(self.live.url, self.live.token) as c:
            return witness(c, self.live.home.genesis(), peers, self.live.home.root)

    def bundle(self, item: str) -> dict[str, Any]:
        return dict(httpx.get(f"{self.live.url}/v1/trace/verify", params={"id": item}).json())  # public: no token

    def page_url(self, item: str, **params: str) -> str:
        return f"{self.live.url}/verify?" + urlencode({"id": item, **params}, quote_via=quote)

    @property
    def trust(self) -> Trust:
        return Trust.from_anchors(self.params["anchors"].split(","), int(self.params["quorum"]))


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    live = Live(tmp_path_factory.mktemp("verify") / "net", TYPES)
    n = Net(live)
    admins = [live.signer(f"org{i}/admin") for i in (1, 2, 3)]
    with Client(live.url, live.token) as c:
        assert c.call("trace", "assign_prefix", {"prefix": BRAND_PREFIX, "org": "org1"}, admins)["code"] == 0
        brand = document(
            [
                obj([CASE], "staging_outbound", "2026-10-01T07:00:00+08:00"),
                obj([TIN], "commissioning", "2026-10-01T08:00:00+08:00", action="ADD"),
                {"type": "AggregationEvent", "eventTime": "2026-10-01T09:00:00+08:00", "eventTimeZoneOffset": "+08:00",
                 "parentID": CASE, "childEPCs": [TIN], "action": "ADD", "bizStep": "packing"},
                obj([OTHER], "commissioning", "2026-10-01T08:30:00+08:00", action="ADD"),
            ]
        )  # fmt: skip
        c.capture(brand, live.signer("org1/alice"))
        c.capture(document([obj([CASE], "shipping", "2026-10-02T08:00:00+08:00")]), live.signer("org2/alice"))
        inspect = obj([CASE], "inspecting", "2026-10-03T08:00:00+08:00", disposition="in_progress")
        c.capture(document([inspect]), live.signer("org3/alice"))
    n.witness()
    n.params = trust_params(live.node.reader())
    yield n
    live.stop()


def open_page(browser: Browser, url: str, tamper: Any = None, *, replace: Any = None) -> tuple[Page, list[str]]:
    """The page at ``url``; ``tamper`` edits the node's bundle in flight, ``replace`` serves another one."""
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    if tamper is not None or replace is not None:

        def handle(route: Route) -> None:
            response = route.fetch()
            body = replace if replace is not None else response.json()
            if tamper is not None:
                tamper(body)
            route.fulfill(response=response, body=json.dumps(body))

        page.route("**/v1/trace/verify*", handle)
    page.goto(url)
    page.wait_for_selector("body[data-done='1']", timeout=30_000)
    return page, errors


def test_the_bundle_checks_out_in_python_too(net: Net) -> None:
    bundle = net.bundle(TIN)
    assert [e["org"] for e in bundle["events"]] == ["org1", "org1", "org2", "org3"]
    for e in bundle["events"]:
        assert verify_proof_dict(e["proof"]["tx"]) == (True, "ok")
        assert verify_proof_dict(e["proof"]["receipt"]) == (True, "ok")
        assert {a["block_hash"] for a in e["proof"]["attestations"]} == {e["proof"]["tx"]["block_hash"]}
        assert len(e["proof"]["attestations"]) == 3  # org1's peer and the two witnesses
    assert bundle["finality_quorum"] == 2
    assert check_bundle(bundle, net.trust, TIN).verified


def test_a_real_proof_is_verified(net: Net, browser: Browser) -> None:
    page, errors = open_page(browser, net.page_url(TIN, **net.params))
    assert page.get_attribute("#result", "data-state") == "verified", page.inner_text("main")
    assert page.locator(".event").count() == 4 and page.locator(".event.bad").count() == 0
    assert "inspecting" in page.inner_text("#events")
    # who recorded each event, read from the signers' certificates
    recorded = [page.locator(".event .meta").nth(i).get_attribute("data-recorded-by") for i in range(4)]
    assert recorded == ["org1", "org1", "org2", "org3"]
    assert "org3 (org3/alice)" in page.inner_text("#events")
    assert "final when attested by 2" in page.inner_text("#finality")
    page.click("#lang")
    assert "已验证" in page.inner_text("#result")
    page.screenshot(path=str(net.live.home.root / "verify.png"), full_page=True)
    assert errors == []
    page.close()


def test_without_trust_anchors_nothing_is_verified(net: Net, browser: Browser) -> None:
    """The bundle's list of organisations is never trusted: a bare /verify?id=… verifies nothing."""
    page, _ = open_page(browser, net.page_url(TIN))
    assert page.get_attribute("#result", "data-state") == "not-verified"
    assert Why.NO_ANCHORS in page.inner_text("#reasons")
    page.close()
    short = ",".join(a[:16] for a in net.params["anchors"].split(","))  # 64 bits: too few to trust
    page, _ = open_page(browser, net.page_url(TIN, anchors=short))
    assert page.get_attribute("#result", "data-state") == "not-verified"
    assert "the trust anchors in the address are malformed" in page.inner_text("#reasons")
    page.close()


def test_the_explorer_link_carries_the_nodes_anchors(net: Net, browser: Browser) -> None:
    r = httpx.get(f"{net.live.url}/verify/link", params={"id": TIN}, follow_redirects=False)
    assert r.status_code == 307 and "anchors=" in r.headers["location"] and "quorum=2" in r.headers["location"]
    page, errors = open_page(browser, f"{net.live.url}/verify/link?id={quote(TIN)}")
    assert page.get_attribute("#result", "data-state") == "verified" and errors == []
    page.close()


def test_one_node_alone_is_not_enough_until_a_quorum_attested(net: Net, browser: Browser) -> None:
    """An event in a block only the node's own peer attested is not final, so the page does not verify it."""
    with Client(net.live.url, net.live.token) as c:
        c.capture(document([obj([LATE], "commissioning", "2026-10-04T08:00:00+08:00", action="ADD")]), net.live.signer("org1/alice"))  # fmt: skip
    page, _ = open_page(browser, net.page_url(LATE, **net.params))
    assert page.get_attribute("#result", "data-state") == "not-verified"
    assert f"{Why.QUORUM} (1 of 2 needed)" in page.inner_text("#events")
    page.close()
    net.witness()
    page, errors = open_page(browser, net.page_url(LATE, **net.params))
    assert page.get_attribute("#result", "data-state") == "verified" and errors == []
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


@pytest.mark.parametrize("tamper", [flip_path, edit_event], ids=["merkle-path", "event-text"])
def test_a_tampered_proof_is_not_verified(net: Net, browser: Browser, tamper: Any) -> None:
    page, _ = open_page(browser, net.page_url(TIN, **net.params), tamper)
    assert page.get_attribute("#result", "data-state") == "not-verified"
    assert page.locator(".event.bad").count() >= 1
    page.close()


def test_the_qr_code_carries_the_anchors(net: Net, browser: Browser) -> None:
    qr = httpx.get(f"{net.live.url}/verify/qr.svg", params={"id": TIN})
    assert qr.status_code == 200 and qr.text.lstrip().startswith("<svg")
    link = qr.headers["X-Digital-Link"]
    assert f"/{index_form(TIN)}?anchors=" in link and "quorum=2" in link
    fingerprints = link.split("anchors=")[1].split("&")[0].split("%2C")
    assert all(len(f) == 32 for f in fingerprints) and len(fingerprints) == 3
    # the QR code's address resolves to the page (a GS1 Digital Link on this node), anchors and all
    r = httpx.get(link, follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"].startswith("/verify?id=")
    assert "anchors=" in r.headers["location"] and "quorum=2" in r.headers["location"]
    page, errors = open_page(browser, link)
    assert page.get_attribute("#result", "data-state") == "verified" and errors == []
    page.close()


@pytest.fixture(scope="module")
def forged(net: Net) -> dict[str, Any]:
    honest = net.bundle(TIN)
    early = next(e for e in net.bundle(CASE)["events"] if e["event"]["bizStep"] == "staging_outbound")
    return attacks(honest, net.bundle(OTHER)["events"][0], early, Forge(net.live.home.root, net.live.node.chain_id))


@pytest.mark.parametrize("name", PAGE_ATTACKS)
def test_an_attack_is_refused_by_the_page(net: Net, browser: Browser, forged: dict[str, Any], name: str) -> None:
    """A dishonest node serves a forged bundle (the page's fetch answered with it): not verified, and why."""
    attack = forged[name]
    page, _ = open_page(browser, net.page_url(TIN, **net.params), replace=attack.bundle)
    assert page.get_attribute("#result", "data-state") == "not-verified"
    bad = page.locator(".event.bad")
    assert bad.count() == 1 and attack.why in bad.inner_text()
    assert attack.why in page.inner_text("#reasons")
    if name == "recorded-by-lie":  # the page shows the certificate's recorder, never the server's claim
        box = page.locator(".event").nth(attack.index)
        assert box.locator(".meta").get_attribute("data-recorded-by") == "org2"
        assert "org2 (org2/alice)" in box.inner_text()
    page.close()


def test_same_verdicts_in_the_browser_and_offline(net: Net, browser: Browser, forged: dict[str, Any]) -> None:
    """Every attack, the honest bundle and a trust that names one organisation only: the page's checker and
    ``bundle_check`` find the same problems with the same messages (the CBV hash, recomputed offline only,
    aside)."""
    page = browser.new_page()
    page.add_init_script("window.LIANGCAO_VERIFY_NO_MAIN = true")
    page.goto(net.page_url(TIN))
    cases = {"honest": (net.bundle(TIN), net.trust), "one-org": (net.bundle(TIN), Trust.from_anchors(net.params["anchors"].split(",")[:1]))}  # fmt: skip
    cases.update({name: (a.bundle, net.trust) for name, a in forged.items()})
    for name, (bundle, trust) in cases.items():
        offline = check_bundle(bundle, trust, TIN)
        online = page.evaluate(
            """async ([bundle, trust, item]) => {
                const r = await checkBundle(bundle, trust, item);
                return {problems: r.problems, events: r.events.map((e) => [e.problems, e.orgs, e.org, e.recordedBy])};
            }""",
            [bundle, {"anchors": list(trust.anchors), "quorum": trust.quorum}, TIN],
        )
        want = [[[p for p in e.problems if p != Why.HASH], e.orgs, e.org, e.recorded_by] for e in offline.events]
        assert online["events"] == want, name
        assert online["problems"] == offline.problems, name
    page.close()


def test_the_cli_checks_the_same_bundle_offline(net: Net, tmp_path: Path) -> None:
    """``liangcao verify-proof`` on the page's bundle: verified; tampered in any part, not verified."""
    bundle = net.bundle(TIN)
    anchors = ["--anchors", net.params["anchors"]]

    def cli(data: dict[str, Any], *extra: str) -> tuple[int, str]:
        path = tmp_path / "bundle.json"
        path.write_text(json.dumps(data))
        r = CliRunner().invoke(app, ["verify-proof", str(path), *extra], env={"COLUMNS": "200"})
        return r.exit_code, r.output

    code, out = cli(bundle, *anchors)
    assert code == 0 and "verified: 4 events" in out, out
    fp = hashlib.sha256(keys.unb64(bundle["organisations"][0]["ca_cert"])).hexdigest()
    # org1's CA alone: a quorum of the one organisation the caller trusts would be 1, but the consortium's
    # finality quorum (2) is the floor, and one organisation is never enough for it
    code, out = cli(bundle, "--anchors", fp[:32])
    assert code == 1 and "(1 of 2 needed)" in out, out

    def tampered(change: Any) -> dict[str, Any]:
        copy: dict[str, Any] = json.loads(json.dumps(bundle))
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
        code, out = cli(tampered(change), *anchors)
        assert code == 1 and "NOT verified" in out, name
    code, out = cli(bundle, "--anchors", "0" * 32)
    assert code == 1 and "nobody trusted" in out
