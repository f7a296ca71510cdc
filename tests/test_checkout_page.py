"""The checkout page in Debian's Chromium (Playwright): the order, the methods offered with each installment
option's schedule and fee (``CreditService.quote``), paying in 6 installments from the credit line, and a
passkey step-up (DevTools virtual authenticator) when the risk engine asks for one.

The app is the gateway's own (``liangcao.checkout.http.create_app`` with the page's router and the relying
party's), over the real payments engine, the real credit service and the real risk engine, served on
127.0.0.1 and opened as http://localhost:PORT (a secure context for WebAuthn).
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
from playwright.sync_api import Browser, Page

from checkout_identity import bearer, shopper
from liangcao.authn import RelyingParty
from liangcao.authn.http import router as authn_router
from liangcao.checkout import page
from liangcao.checkout.guards import GuardChain
from liangcao.checkout.http import create_app, session_shopper
from liangcao.checkout.plugins import InstallmentsMethod, PasskeyStepUp, risk_guard
from liangcao.checkout.service import Checkout
from liangcao.credit import CreditService
from liangcao.payments import Engine
from liangcao.procs import free_port
from liangcao.risk.engine import RiskConfig, RiskEngine

RULES: dict[str, Any] = {
    "thresholds": {"step_up": 0.99, "block": 0.999},
    "rules": [{"id": "big", "reason": "LARGE_AMOUNT", "action": "step_up", "when": [["amount_fen", ">=", 100_000]]}],
}


class Gateway:
    def __init__(self, home: Path) -> None:
        port = free_port()
        self.origin = f"http://localhost:{port}"
        self.engine = Engine(home / "pay", fsync=False)
        self.credit = CreditService(self.engine, home / "credit.db", fsync=False)
        self.rp = RelyingParty("localhost", self.origin, home / "authn")
        risk = RiskEngine(None, rules=RULES, config=RiskConfig(learn_per_decide=0))
        methods = [InstallmentsMethod(self.credit, n) for n in (3, 6, 12)]
        guards = GuardChain([risk_guard(risk)], PasskeyStepUp(self.rp))
        self.co = Checkout(home / "co", self.engine, guards=guards, methods=methods)
        app = create_app(
            self.co, None, routers=[page.router(self.co), authn_router(self.rp, shopper_of=session_shopper)]
        )
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the gateway did not start")
            time.sleep(0.01)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
        self.co.close()
        self.credit.close()
        self.rp.close()
        self.engine.close()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = Gateway(tmp_path_factory.mktemp("checkout-page"))
    try:
        yield g
    finally:
        g.close()


def yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


def result(p: Page) -> dict[str, Any]:
    # a selector, not a predicate: the page's CSP (script-src 'self') forbids evaluating strings in it
    p.wait_for_selector("#result[data-state=ok], #result[data-state=refused]", state="attached", timeout=20_000)
    return {"state": p.get_attribute("#result", "data-state"), **json.loads(p.text_content("#result") or "{}")}


def signed_in(home: Path, buyer: str) -> str:
    """The fragment the platform's sign-in appends: the shopper's session (never sent to the server)."""
    return "#token=" + bearer(home, "shopper", buyer)["Authorization"].split(" ", 1)[1]


def open_checkout(p: Page, gw: Gateway, order_id: str, buyer: str) -> None:
    p.goto(f"{gw.origin}/checkout/{order_id}{signed_in(gw.co.home, buyer)}")
    p.wait_for_selector("#offer-installments-12")


def test_the_page_lists_the_schedules_and_pays_in_6_installments_from_the_line(browser: Browser, gw: Gateway) -> None:
    oid = str(gw.co.create_order("o1", "ann", "shop", 99_999, note="<b>gift</b>").body["id"])
    context = browser.new_context()
    try:
        p = context.new_page()
        open_checkout(p, gw, oid, "ann")
        assert p.text_content("#summary") == f"Order {oid} from shop: 999.99 CNY"
        assert p.locator("input[name=method]").evaluate_all("xs => xs.map(x => x.value)") == [
            "wallet", "installments-3", "installments-6", "installments-12",
        ]  # fmt: skip
        for n in (3, 6, 12):
            quote = gw.credit.quote(99_999, n, "shopper")
            rows = p.locator(f"#offer-installments-{n} tbody tr")
            assert rows.count() == n
            shown = [rows.nth(i).locator("td").all_text_contents() for i in range(n)]
            want = [
                [str(q.n), time.strftime("%Y-%m-%d", time.gmtime(q.due_day * 86400)), yuan(q.principal),
                 yuan(q.fee), yuan(q.principal + q.fee)]
                for q in quote.schedule
            ]  # fmt: skip
            assert shown == want
            fee = p.locator(f"#offer-installments-{n} .fee")
            assert fee.get_attribute("data-fee") == str(quote.fee) and quote.fee > 0
            total = 99_999 + quote.fee
            assert fee.text_content() == f"fee {yuan(quote.fee)} CNY (paid by you); you pay {yuan(total)} CNY in all"
        p.check("#pick-installments-6")
        p.click("#pay")
        done = result(p)
        assert done["state"] == "ok", done
        assert (done["order_state"], done["method"], done["held"]) == ("paid", "installments-6", 99_999)
        order = gw.co.get_order(oid)
        assert (order["state"], order["method"], order["held"]) == ("paid", "installments-6", 99_999)
        assert gw.credit.line("ann").held_fen == 99_999  # from the credit line, not the wallet
        assert gw.co.wallet("ann")["held"] == 0
        assert gw.co.confirm("c1", oid).body["state"] == "settled"
        plan = gw.credit.plan(oid)
        assert plan.periods == 6 and [q.principal for q in plan.schedule] == [
            q.principal for q in gw.credit.quote(99_999, 6).schedule
        ]
        p.reload()
        p.wait_for_selector("#offer-installments-12")
        assert p.get_attribute("#summary", "data-state") == "settled" and p.is_disabled("#pay")
    finally:
        context.close()


def test_a_stepped_up_payment_is_confirmed_with_the_passkey_on_the_page(browser: Browser, gw: Gateway) -> None:
    context = browser.new_context()
    try:
        p = context.new_page()
        cdp = context.new_cdp_session(p)
        cdp.send("WebAuthn.enable", {"enableUI": False})
        options = {"protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
                   "hasUserVerification": True, "isUserVerified": True, "automaticPresenceSimulation": True}  # fmt: skip
        auth = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": options})["authenticatorId"]
        p.goto(
            f"{gw.origin}/authn/?shopper=bea{signed_in(gw.co.home, 'bea')}"
        )  # the relying party's own page registers the device
        p.fill("#device", "phone")
        p.click("#register")
        p.wait_for_function("document.getElementById('result').dataset.state === 'ok'", timeout=20_000)
        oid = str(gw.co.create_order("o2", "bea", "shop", 150_000).body["id"])
        open_checkout(p, gw, oid, "bea")
        p.check("#pick-installments-3")
        p.click("#pay")
        done = result(p)
        assert done["state"] == "ok", done
        assert (done["order_state"], done["method"], done["held"]) == ("paid", "installments-3", 150_000)
        order = gw.co.get_order(oid)
        assert order["state"] == "paid" and order["decisions"]["step_up"]["verified"]
        assert gw.credit.line("bea").held_fen == 150_000
        (cred,) = cdp.send("WebAuthn.getCredentials", {"authenticatorId": auth})["credentials"]
        assert cred["signCount"] >= 1  # the browser's authenticator signed the payment
    finally:
        context.close()


def test_offers_show_the_merchant_paid_fee_and_refuse_unknown_orders(tmp_path: Path, gw: Gateway) -> None:
    with Engine(tmp_path / "pay", fsync=False) as e, CreditService(e, tmp_path / "credit.db", fsync=False) as credit:
        co = Checkout(tmp_path / "co", e, methods=[InstallmentsMethod(credit, 12, "merchant")])
        try:
            oid = str(co.create_order("o", "cy", "shop", 1_000).body["id"])
            (wallet, twelve) = page.offers(co, oid)["methods"]
            assert wallet == {"method": "wallet", "kind": "wallet"}
            quote = credit.quote(1_000, 12, "merchant")
            assert twelve["fee_payer"] == "merchant" and twelve["fee"] == quote.fee > 0
            assert [r["fee"] for r in twelve["schedule"]] == [0] * 12 and twelve["shopper_total"] == 1_000
            assert sum(r["principal"] for r in twelve["schedule"]) == 1_000
        finally:
            co.close()
    r = httpx.get(f"{gw.origin}/v1/orders/nope.1/offers")
    assert r.status_code == 401 and r.json()["name"] == "UNAUTHENTICATED"
    r = httpx.get(f"{gw.origin}/v1/orders/nope.1/offers", headers=shopper(gw.co.home, "cy"))
    assert r.status_code == 404 and r.json()["name"] == "ORDER_NOT_FOUND"
    r = httpx.get(f"{gw.origin}/checkout/nope.1")
    assert r.status_code == 200 and "script-src 'self'" in r.headers["content-security-policy"]
    assert "onclick" not in r.text and "<script src=" in r.text


def test_the_real_gateway_process_serves_the_page_with_the_merchant_paying_the_fee(
    browser: Browser, tmp_path: Path
) -> None:
    """``liangcao checkout start --credit-db ... --installment-fee-payer merchant``: the gateway's own HTTP/1.1
    server serves the page; the shopper pays 12 installments without a fee; the plan is recorded once settled."""
    import subprocess
    import sys

    from liangcao.procs import die_with_parent

    port = free_port()
    cmd = [sys.executable, "-m", "liangcao.cli", "checkout", "start", "--home", str(tmp_path / "gw"), "--port",
           str(port), "--credit-db", str(tmp_path / "credit.db"), "--installment-fee-payer", "merchant"]  # fmt: skip
    (tmp_path / "gw").mkdir()
    with open(tmp_path / "gw.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, preexec_fn=die_with_parent())
    base = f"http://127.0.0.1:{port}"
    context = browser.new_context()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "gw.log").read_text()
            time.sleep(0.05)
        dan = shopper(tmp_path / "gw", "dan")  # signed with the session key the gateway made in its folder
        r = httpx.post(f"{base}/v1/orders", json={"buyer": "dan", "merchant": "shop", "amount": 120_001},
                       headers={"idempotency-key": "o1"} | dan)  # fmt: skip
        assert r.status_code == 201, r.text
        oid = r.json()["id"]
        p = context.new_page()
        p.goto(f"{base}/checkout/{oid}{signed_in(tmp_path / 'gw', 'dan')}")
        p.wait_for_selector("#offer-installments-12")
        fee = p.locator("#offer-installments-12 .fee")
        assert fee.get_attribute("data-fee-payer") == "merchant" and int(fee.get_attribute("data-fee") or 0) > 0
        assert fee.text_content() == (
            f"fee {yuan(int(fee.get_attribute('data-fee') or 0))} CNY (paid by the merchant); you pay 1200.01 CNY in all"
        )
        assert (
            p.locator("#offer-installments-12 tbody tr").evaluate_all("rs => rs.map(r => +r.dataset.fee)") == [0] * 12
        )
        p.check("#pick-installments-12")
        p.click("#pay")
        done = result(p)
        assert done["state"] == "ok" and (done["order_state"], done["method"]) == ("paid", "installments-12"), done
        r = httpx.post(f"{base}/v1/orders/{oid}/confirm", headers={"idempotency-key": "c1"} | dan)
        assert r.status_code == 200 and r.json()["state"] == "settled"
        assert r.json()["method"] == "installments-12"
    finally:
        context.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    from liangcao.credit.plans import FeePayer

    with Engine(tmp_path / "gw" / "pay") as e, CreditService(e, tmp_path / "credit.db") as credit:
        plan = credit.plan(oid)  # recorded by the gateway at settlement, the merchant paying the fee
        assert (plan.periods, plan.principal, plan.fee_payer) == (12, 120_001, FeePayer.MERCHANT)
