"""The surge with confirmation on every payment (``liangcao checkout surge --confirm-every-payment``): a real
gateway process stepping up every pay, shoppers' passkeys registered through the relying party's ceremony
before it starts, load generators answering each challenge with an ES256 signature and paying again."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from liangcao.checkout import surge
from liangcao.checkout.codes import CheckoutCode


def test_the_gateway_steps_up_every_payment_and_a_registered_passkey_confirms_it(tmp_path: Path) -> None:
    buyer_of: dict[str, str] = {}
    to_pay, _ = surge.prepare(tmp_path, 3, 0, seed=7, buyer_of=buyer_of)
    devices = surge.register_devices(tmp_path, sorted(set(buyer_of.values())))
    auth = surge.sessions(tmp_path, buyer_of)  # each order's buyer's session, signed with the gateway's key

    def h(order: str, key: str) -> dict[str, str]:
        return {"idempotency-key": key, "authorization": f"Bearer {auth[order]}"}

    gw = surge.Gateway(tmp_path, flow=True, confirm=True)
    try:
        gw.wait_ready()
        base = f"http://127.0.0.1:{gw.port}/v1/orders"
        small = to_pay[0]
        r = httpx.post(f"{base}/{small}/pay", headers=h(small, "k1"), timeout=10)
        assert r.status_code == 401 and r.json()["code"] == CheckoutCode.STEP_UP_REQUIRED
        challenge = r.json()["detail"]["challenge"]
        # Another order's challenge cannot confirm this one.
        other = httpx.post(f"{base}/{to_pay[1]}/pay", headers=h(to_pay[1], "k2"), timeout=10)
        wrong = devices[buyer_of[to_pay[1]]].get(other.json()["detail"]["challenge"]["publicKey"], surge.CONFIRM_ORIGIN)
        step_up = {"challenge_id": challenge["challenge_id"], "credential": wrong}
        r = httpx.post(f"{base}/{small}/pay", headers=h(small, "k1"), json={"step_up": step_up}, timeout=10)
        assert r.status_code != 200 and r.json()["code"] == CheckoutCode.STEP_UP_FAILED
        assert httpx.get(f"{base}/{small}", headers=h(small, "-"), timeout=10).json()["state"] == "created"
        # A fresh challenge signed by the buyer's own passkey pays (same idempotency key).
        r = httpx.post(f"{base}/{small}/pay", headers=h(small, "k1"), timeout=10)
        challenge = r.json()["detail"]["challenge"]
        credential = devices[buyer_of[small]].get(challenge["publicKey"], surge.CONFIRM_ORIGIN)
        step_up = {"challenge_id": challenge["challenge_id"], "credential": credential}
        r = httpx.post(f"{base}/{small}/pay", headers=h(small, "k1"), json={"step_up": step_up}, timeout=10)
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "paid" and r.json()["decisions"]["step_up"]["verified"]
    finally:
        gw.stop()


def test_under_load_every_payment_is_confirmed_and_paid(tmp_path: Path) -> None:
    """A short open-loop run: each paid order took a challenge and a signature (both round trips counted)."""
    res = surge.run_load(
        flow=True,
        phases=[surge.Phase("calm", 3.0, 40.0, 40.0)],
        base_per_s=1.0,
        workers=2,
        timeout_s=5.0,
        seed=11,
        root=tmp_path,
        confirm=True,
    )
    secs = range(0, 4)
    sent, paid = res.count("pay", 0, secs), res.count("pay", 1, secs)
    errors, timeouts = res.count("pay", 3, secs), res.count("pay", 4, secs)
    assert sent >= 10 and paid == sent and errors == timeouts == 0
    assert res.step_ups == paid
    assert res.p99_ms(["calm:pay:ok"]) > 0


def test_a_synced_passkey_keeps_its_counter_at_zero_and_may_be_verified_in_any_order(tmp_path: Path) -> None:
    """``SoftAuthenticator(counting=False)``: two assertions signed in one order and verified in the other
    are both accepted (counter 0: no clone check), where a counting device would raise the clone alarm."""
    from liangcao.authn import AuthnCode, AuthnError, RelyingParty, SoftAuthenticator

    origin = surge.CONFIRM_ORIGIN
    with RelyingParty(surge.CONFIRM_RP_ID, origin, tmp_path / "authn") as rp:
        for counting, ok in ((False, True), (True, False)):
            shopper = f"s-{counting}"
            dev = SoftAuthenticator(counting=counting)
            opts = rp.registration_options(shopper, "phone")
            rp.register(shopper, opts["ceremony_id"], dev.create(opts["publicKey"], origin))
            terms = [(f"o{i}-{counting}", "shop", 100 + i, "CNY") for i in range(2)]
            chs = [rp.payment_challenge(shopper, *t) for t in terms]
            sigs = [dev.get(c["publicKey"], origin) for c in chs]
            assert rp.verify_payment(shopper, chs[1]["challenge_id"], sigs[1], *terms[1]).order_id == terms[1][0]
            if ok:
                assert rp.verify_payment(shopper, chs[0]["challenge_id"], sigs[0], *terms[0]).sign_count == 0
            else:
                with pytest.raises(AuthnError) as info:
                    rp.verify_payment(shopper, chs[0]["challenge_id"], sigs[0], *terms[0])
                assert info.value.code == AuthnCode.COUNTER_REGRESSED
