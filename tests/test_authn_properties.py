"""Properties of payment confirmation: the challenge encoding is injective, and under any sequence of
honest payments, replays, edited terms, clones and revocations a challenge is accepted at most once, only
for the terms it was issued for, by an active device of its shopper, with a counter that only moves on."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from liangcao.authn import AuthnCode, AuthnError, RelyingParty, SoftAuthenticator
from liangcao.authn.binding import PaymentTerms, challenge_bytes

ORIGIN = "http://localhost:9999"
texts = st.text(min_size=1, max_size=12)


@st.composite
def _terms(draw: Any) -> PaymentTerms:
    return PaymentTerms(
        draw(st.sampled_from(["localhost", "shop.example"])),
        draw(texts),
        draw(texts),
        draw(st.integers(0, 2**63 - 1)),
        draw(st.sampled_from(["CNY", "USD"])),
        draw(st.sampled_from([bytes(32), b"\x01" * 32])),
        draw(st.integers(0, 2**63 - 1)),
    )


@settings(max_examples=80, deadline=None)
@given(_terms(), _terms())
def test_different_terms_give_different_challenges(a: PaymentTerms, b: PaymentTerms) -> None:
    assert (challenge_bytes(a) == challenge_bytes(b)) == (a == b)
    assert len(challenge_bytes(a)) == 32


def test_length_prefixes_keep_field_boundaries() -> None:
    nonce = bytes(32)
    a = PaymentTerms("localhost", "order-1", "2merchant", 5, "CNY", nonce, 1)
    b = PaymentTerms("localhost", "order-12", "merchant", 5, "CNY", nonce, 1)
    assert challenge_bytes(a) != challenge_bytes(b)


class Payments(RuleBasedStateMachine):
    """One relying party, two shoppers with devices; the model remembers what was issued and accepted."""

    @initialize()
    def start(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="authn-sm-"))
        self.rp = RelyingParty("localhost", ORIGIN, self.home / "rp")
        self.devices: dict[str, list[tuple[str, SoftAuthenticator]]] = {"ann": [], "ben": []}
        self.issued: dict[str, tuple[str, tuple[Any, ...], dict[str, Any]]] = {}
        self.answers: list[tuple[str, str, Any]] = []  # (challenge id, shopper, assertion) ever produced
        self.accepted: dict[str, Any] = {}
        self.counters: dict[str, int] = {}
        for shopper in self.devices:
            self._register(shopper, "ES256")

    def teardown(self) -> None:
        self.rp.close()
        shutil.rmtree(self.home, ignore_errors=True)

    def _register(self, shopper: str, alg: Any) -> None:
        dev = SoftAuthenticator(alg=alg)
        n = len(self.devices[shopper])
        opts = self.rp.registration_options(shopper, f"device-{n}")
        cred = self.rp.register(shopper, opts["ceremony_id"], dev.create(opts["publicKey"], ORIGIN))
        self.devices[shopper].append((cred.id, dev))

    @precondition(lambda self: sum(len(v) for v in self.devices.values()) < 6)
    @rule(shopper=st.sampled_from(["ann", "ben"]), alg=st.sampled_from(["ES256", "Ed25519"]))
    def register(self, shopper: str, alg: str) -> None:
        self._register(shopper, alg)

    @rule(shopper=st.sampled_from(["ann", "ben"]), amount=st.integers(1, 10**6), payee=st.sampled_from(["m1", "m2"]))
    def issue(self, shopper: str, amount: int, payee: str) -> None:
        terms = (f"order-{len(self.issued)}", payee, amount, "CNY")
        try:
            ch = self.rp.payment_challenge(shopper, *terms)
        except AuthnError as exc:
            assert exc.code == AuthnCode.UNKNOWN_SHOPPER  # every device revoked
            return
        self.issued[ch["challenge_id"]] = (shopper, terms, ch)

    @rule(shopper=st.sampled_from(["ann", "ben"]), amount=st.integers(1, 10**6))
    def honest_pay(self, shopper: str, amount: int) -> None:
        before = len(self.issued)
        self.issue(shopper, amount, "m1")
        if len(self.issued) == before:
            return  # nothing was issued: every device revoked
        cid = list(self.issued)[-1]
        cred_id, dev = self.devices[shopper][-1]
        dev.uv = True
        answer = dev.get({**self.issued[cid][2]["publicKey"], "allowCredentials": [{"id": cred_id}]}, ORIGIN)
        self.answers.append((cid, shopper, answer))
        self._submit(cid, shopper, self.issued[cid][1], answer)

    @precondition(lambda self: bool(self.issued))
    @rule(data=st.data(), device=st.integers(0, 5), uv=st.sampled_from([True, True, True, False]))
    def answer(self, data: st.DataObject, device: int, uv: bool) -> None:
        # mostly the newest challenge, by its own shopper's device: honest payments happen, among the attacks
        newest = list(self.issued)[-1]
        cid = data.draw(st.sampled_from([newest, newest, *sorted(self.issued)]))
        shopper, terms, ch = self.issued[cid]
        other = "ben" if shopper == "ann" else "ann"
        owner = data.draw(st.sampled_from([shopper, shopper, shopper, other]))
        devs = self.devices[owner]
        cred_id, dev = devs[device % len(devs)]
        dev.uv = uv
        options = {**ch["publicKey"], "allowCredentials": [{"id": cred_id, "type": "public-key"}]}
        answer = dev.get(options, ORIGIN)
        self.answers.append((cid, shopper, answer))
        self._submit(cid, shopper, terms, answer)

    @precondition(lambda self: bool(self.answers))
    @rule(data=st.data(), edit=st.sampled_from(["none", "amount", "payee"]))
    def replay(self, data: st.DataObject, edit: str) -> None:
        cid, shopper, answer = data.draw(st.sampled_from(self.answers))
        order, payee, amount, currency = self.issued[cid][1]
        terms = (order, "attacker" if edit == "payee" else payee, amount + (edit == "amount"), currency)
        self._submit(cid, shopper, terms, answer)

    @rule(shopper=st.sampled_from(["ann", "ben"]), device=st.integers(0, 5))
    def revoke(self, shopper: str, device: int) -> None:
        devs = self.devices[shopper]
        self.rp.revoke(shopper, devs[device % len(devs)][0])

    @rule(shopper=st.sampled_from(["ann", "ben"]), device=st.integers(0, 5))
    def clone_device(self, shopper: str, device: int) -> None:
        devs = self.devices[shopper]
        cred_id, dev = devs[device % len(devs)]
        devs.append((cred_id, dev.clone()))  # a copy of the key at its current counter, used independently

    def _submit(self, cid: str, shopper: str, terms: tuple[Any, ...], answer: dict[str, Any]) -> None:
        cred = answer["id"]
        try:
            ok = self.rp.verify_payment(shopper, cid, answer, *terms)
        except AuthnError as exc:
            assert 3200 <= exc.code <= 3299
            return
        # accepted: exactly once, for the issued terms, by an active device of this shopper, counter moved on
        assert cid not in self.accepted, "a challenge was accepted twice"
        assert (ok.order_id, ok.payee, ok.amount_fen, ok.currency) == self.issued[cid][1] == terms
        assert ok.shopper == shopper == self.issued[cid][0]
        assert any(c.id == cred for c in self.rp.credentials(shopper))
        assert ok.user_verified
        assert ok.sign_count > self.counters.get(cred, 0)
        self.counters[cred] = ok.sign_count
        self.accepted[cid] = ok

    @invariant()
    def stored_counters_match(self) -> None:
        if not hasattr(self, "rp"):
            return
        for shopper in ("ann", "ben"):
            for c in self.rp.credentials(shopper):
                assert c.sign_count >= self.counters.get(c.id, 0)


Payments.TestCase.settings = settings(
    max_examples=20, stateful_step_count=30, deadline=None, suppress_health_check=list(HealthCheck)
)
test_payments_state_machine = Payments.TestCase
