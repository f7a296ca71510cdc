"""The payment confirmation page in Debian's Chromium (Playwright) with the browser's virtual authenticator.

The server is the production one (``liangcao.authn.http.create_app`` under uvicorn on 127.0.0.1; the page is
opened as http://localhost:PORT, a secure context for WebAuthn). Each device is a DevTools virtual
authenticator (``WebAuthn.addVirtualAuthenticator``, internal transport, with user verification) in its own
browser context, so the browser's own WebAuthn client makes every credential and every signature.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from playwright.sync_api import Browser, Page, Route

from liangcao.authn import AuthnCode, RelyingParty
from liangcao.authn.http import create_app
from liangcao.procs import free_port


class Served:
    def __init__(self, home: Path) -> None:
        port = free_port()
        self.origin = f"http://localhost:{port}"
        self.rp = RelyingParty("localhost", self.origin, home)
        self.server = uvicorn.Server(
            uvicorn.Config(create_app(self.rp), host="127.0.0.1", port=port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the authn server did not start")
            time.sleep(0.01)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
        self.rp.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    s = Served(tmp_path_factory.mktemp("authn-page") / "home")
    try:
        yield s
    finally:
        s.close()


class Device:
    """A browser context with one virtual platform authenticator (a phone with a fingerprint reader)."""

    def __init__(self, browser: Browser, served: Served, shopper: str) -> None:
        self.context = browser.new_context()
        self.page: Page = self.context.new_page()
        self.cdp = self.context.new_cdp_session(self.page)
        self.cdp.send("WebAuthn.enable", {"enableUI": False})
        options = {
            "protocol": "ctap2",
            "transport": "internal",
            "hasResidentKey": True,
            "hasUserVerification": True,
            "isUserVerified": True,
            "automaticPresenceSimulation": True,
        }
        self.id = self.cdp.send("WebAuthn.addVirtualAuthenticator", {"options": options})["authenticatorId"]
        self.page.goto(f"{served.origin}/authn/?shopper={shopper}")

    def user_verified(self, yes: bool) -> None:
        self.cdp.send("WebAuthn.setUserVerified", {"authenticatorId": self.id, "isUserVerified": yes})

    def credentials(self) -> list[dict[str, Any]]:
        return list(self.cdp.send("WebAuthn.getCredentials", {"authenticatorId": self.id})["credentials"])

    def click(self, button: str) -> dict[str, Any]:
        self.page.click(button)
        self.page.wait_for_function("document.getElementById('result').dataset.state !== 'busy'", timeout=20_000)
        return {
            "state": self.page.get_attribute("#result", "data-state"),
            **json.loads(self.page.text_content("#result") or "{}"),
        }

    def register(self, name: str) -> dict[str, Any]:
        self.page.fill("#device", name)
        return self.click("#register")

    def pay(self, order: str, amount_fen: int, payee: str = "merchant-1") -> dict[str, Any]:
        self.page.fill("#order", order)
        self.page.fill("#amount", str(amount_fen))
        self.page.fill("#payee", payee)
        return self.click("#pay")

    def close(self) -> None:
        self.context.close()


def devices_table(page: Page, expect: str = "") -> list[list[str]]:
    """The device table once it shows ``expect`` (a text its rows must contain)."""
    page.wait_for_function(
        "(t) => document.querySelectorAll('#devices tbody tr').length > 0"
        " && document.querySelector('#devices tbody').textContent.includes(t)",
        arg=expect,
    )
    rows = page.locator("#devices tbody tr")
    return [[c.strip() for c in rows.nth(i).locator("td").all_text_contents()[:4]] for i in range(rows.count())]


def test_register_a_device_and_pay_with_it(browser: Browser, served: Served) -> None:
    phone = Device(browser, served, "alice")
    try:
        done = phone.register("phone")
        assert done["state"] == "ok" and done["registered"] == "phone" and done["alg"] == "ES256"
        assert len(phone.credentials()) == 1  # the key lives in the authenticator, not on the server
        paid = phone.pay("order-1", 1999)
        assert paid["state"] == "ok", paid
        assert (paid["confirmed"], paid["amount_fen"], paid["device"]) == ("order-1", 1999, "phone")
        assert phone.page.text_content("#terms") == "Pay 19.99 CNY to merchant-1 for order-1"
        (cred,) = served.rp.credentials("alice")
        assert cred.sign_count == phone.credentials()[0]["signCount"]  # the browser's counter, as stored
        again = phone.pay("order-2", 5)
        assert again["state"] == "ok" and again["sign_count"] > paid["sign_count"]
    finally:
        phone.close()


def test_second_device_then_revoked_device_is_refused(browser: Browser, served: Served) -> None:
    phone, tablet = Device(browser, served, "bob"), Device(browser, served, "bob")
    try:
        assert phone.register("phone")["state"] == "ok"
        assert tablet.register("tablet")["state"] == "ok"
        assert [r[0] for r in devices_table(tablet.page, "tablet")] == ["phone", "tablet"]
        assert tablet.pay("order-7", 12_000)["device"] == "tablet"
        assert phone.pay("order-8", 300)["device"] == "phone"
        # the phone opens a payment; meanwhile the shopper revokes it from the tablet's page
        challenge = phone.page.evaluate(
            "async () => (window.pending = await call('/v1/payment/challenge', "
            "{shopper: 'bob', order_id: 'order-9', payee: 'merchant-1', amount_fen: 700, currency: 'CNY'}))"
        )
        assert len(challenge["publicKey"]["allowCredentials"]) == 2
        tablet.page.reload()
        devices_table(tablet.page)
        tablet.page.locator("#devices tbody tr", has_text="phone").locator("button.revoke").click()
        assert [r[3] for r in devices_table(tablet.page, "revoked")] == ["revoked", "active"]
        # the phone still signs (its key is intact), the server refuses the revoked device
        refusal = phone.page.evaluate(
            """async () => {
                 const cred = await navigator.credentials.get({publicKey: requestOptions(window.pending.publicKey)});
                 try { await call('/v1/payment/verify', {shopper: 'bob', challenge_id: window.pending.challenge_id,
                         credential: credentialJSON(cred), order_id: 'order-9', payee: 'merchant-1', amount_fen: 700,
                         currency: 'CNY'}); return null; }
                 catch (e) { return e.data; }
               }"""
        )
        assert refusal["code"] == AuthnCode.REVOKED_CREDENTIAL and refusal["name"] == "REVOKED_CREDENTIAL"
        # new payments no longer offer the phone: its authenticator has nothing to sign with
        later = phone.pay("order-10", 700)
        assert later["state"] == "refused" and "NotAllowedError" in later["error"]
        assert tablet.pay("order-10", 700)["device"] == "tablet"
    finally:
        phone.close()
        tablet.close()


def test_user_verification_off_is_refused(browser: Browser, served: Served) -> None:
    phone = Device(browser, served, "carol")
    try:
        assert phone.register("phone")["state"] == "ok"
        phone.user_verified(False)
        # the browser itself will not sign without UV when the relying party requires it
        blocked = phone.pay("order-1", 100)
        assert blocked["state"] == "refused" and "NotAllowedError" in blocked["error"]

        # a client that ignores the requirement (the options rewritten on the way) gets a signature without UV:
        # the server refuses it
        def discouraged(route: Route) -> None:
            response = route.fetch()
            body = response.json()
            body["publicKey"]["userVerification"] = "discouraged"
            route.fulfill(response=response, json=body)

        phone.page.route("**/authn/v1/payment/challenge", discouraged)
        refused = phone.pay("order-2", 100)
        assert refused["state"] == "refused" and refused["code"] == AuthnCode.UV_MISSING, refused
        phone.page.unroute("**/authn/v1/payment/challenge")
        phone.user_verified(True)
        assert phone.pay("order-3", 100)["state"] == "ok"
    finally:
        phone.close()


def test_the_page_and_endpoints_refuse_bad_input_with_codes(served: Served) -> None:
    with httpx.Client(base_url=served.origin.replace("localhost", "127.0.0.1"), timeout=10) as http:
        page = http.get("/authn/")
        assert page.status_code == 200 and "navigator.credentials.create" in page.text
        bad = http.post("/authn/v1/payment/challenge", content=b'{"shopper":"alice","order_id":"o","payee":"p",'
                        b'"amount_fen":19.99,"currency":"CNY"}')  # fmt: skip
        assert bad.status_code == 400 and bad.json()["code"] == AuthnCode.BAD_REQUEST
        assert "int" in bad.json()["message"]
        unknown = http.post("/authn/v1/payment/challenge", json={"shopper": "nobody", "order_id": "o", "payee": "p",
                                                                 "amount_fen": 1, "currency": "CNY"})  # fmt: skip
        assert unknown.status_code == 404 and unknown.json()["name"] == "UNKNOWN_SHOPPER"
        extra = http.post("/authn/v1/registration/options", json={"shopper": "a", "device_name": "d", "x": 1})
        assert extra.status_code == 400 and extra.json()["code"] == AuthnCode.BAD_REQUEST
        junk = http.post("/authn/v1/registration", content=b"\xff" * 10)
        assert junk.status_code == 400 and junk.json()["code"] == AuthnCode.BAD_REQUEST
        big = http.post("/authn/v1/payment/verify", content=b"{" + b" " * 70_000)
        assert big.status_code == 400 and "body over" in big.json()["message"]
        noshopper = http.get("/authn/v1/credentials")
        assert noshopper.status_code == 400 and noshopper.json()["code"] == AuthnCode.BAD_REQUEST
        missing = http.post("/authn/v1/payment/verify", json={"shopper": "alice", "challenge_id": "nope",
                            "credential": {"id": "a", "rawId": "a", "type": "public-key", "response": {
                                "clientDataJSON": "", "authenticatorData": "", "signature": ""}},
                            "order_id": "o", "payee": "p", "amount_fen": 1, "currency": "CNY"})  # fmt: skip
        assert missing.status_code == 404 and missing.json()["code"] == AuthnCode.UNKNOWN_CHALLENGE
