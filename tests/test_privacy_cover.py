"""Cover premiums agreed privately (``cover.buy_private``): the premium in the platform's and the insurer's
collection ``premiums``, the exposure reserved publicly, so the capital bound is still checked by every peer."""

from __future__ import annotations

from typing import Any

from cover_ledger import ADDRESS, INSURER, INSURER2, PLATFORM, SKU, CoverChain
from liangcao import encoding
from liangcao.apps.cover.contract import check_premium
from liangcao.apps.cover.rules import CoverCode, transfer_id
from liangcao.codes import Code
from liangcao.contracts import private as pv
from scf_ledger import mentions

PREMIUM = 73_219  # a value that appears nowhere else in the run's state or receipts


def setup() -> CoverChain:
    c = CoverChain()
    c.ok("cover", "pledge_capital", {"amount": 30_000}, INSURER)
    c.product("pp", "price_protection")
    return c


def premium(order: str, amount: int = PREMIUM, product: str = "pp") -> dict[str, Any]:
    return {"platform": PLATFORM, "insurer": INSURER, "product": product, "order": order, "sku": SKU,
            "premium": amount}  # fmt: skip


def buy_args(
    c: CoverChain, order: str, value: dict[str, Any], salt: bytes, endorsers: tuple[str, ...] = (PLATFORM, INSURER)
) -> dict[str, Any]:
    args: dict[str, Any] = {
        "products": [value["product"]], "order": order, "shopper": "s1", "sku": SKU, "price_paid": 39_900,
        "address": ADDRESS, "device": "dev-s1", "platform": PLATFORM, "insurer": INSURER,
        "private": {"collection": "premiums", "key": order, "hash": pv.commitment_hash(salt, value)},
    }  # fmt: skip
    assert check_premium(value, args) == ""
    digest = pv.endorsement_digest(c.chain_id, "cover", "buy_private", {**args, "endorsements": []})
    peers = [c.consortium.org(o).signer("peer0") for o in endorsers]
    return {**args, "endorsements": [pv.endorse(p.key, p.cert, digest) for p in peers]}


def test_private_premium_only_a_commitment_exposure_still_reserved() -> None:
    c = setup()
    salt = pv.new_salt()
    value = premium("o-1")
    before = dict(c.state.data)
    r = c.run("cover", "buy_private", buy_args(c, "o-1", value, salt), PLATFORM)
    assert r.ok, r.message
    changed = {k: v for k, v in c.state.data.items() if before.get(k) != v}
    blob = b"".join(k.encode() + v for k, v in changed.items()) + encoding.canonical(dict(r))
    assert not mentions(blob, str(PREMIUM).encode()) and not mentions(blob, salt.hex().encode())
    (pol,) = r.result
    assert pol["premium"] == 0 and pol["premium_terms"] == "o-1" and pol["exposure"] == 20_000
    record = c.get(pv.state_key("cover", "premiums", "o-1"))
    assert record["members"] == sorted([PLATFORM, INSURER]) and record["hash"] == pv.commitment_hash(salt, value)
    assert r.event("policy_bought")["premium_terms"] == record["hash"]
    cap = c.capital()
    assert (cap["reserved"], cap["premiums_due"], cap["policies"]) == (20_000, 0, 1)  # the premium book: public only
    assert c.query("cover", "due", {"insurer": INSURER})["premiums"] == []
    q = c.query("cover", "policy", {"policy": pol["id"]})
    assert q["premium"]["amount"] is None and q["premium"]["private"] == "o-1"
    # the capital bound is still checked by every peer: a second 20,000 exposure does not fit 30,000
    r = c.run("cover", "buy_private", buy_args(c, "o-2", premium("o-2"), pv.new_salt()), PLATFORM)
    assert r.code == CoverCode.OVER_CAPITAL
    assert c.get(pv.state_key("cover", "premiums", "o-2")) is None  # nothing half-written
    # the premium is still collected once under its derived transfer id; the public book is unchanged
    c.ok("cover", "record_premium", {"policy": pol["id"], "transfer": transfer_id("premium", pol["id"])}, INSURER)
    assert (c.capital()["premiums_due"], c.capital()["premiums"]) == (0, 0)


def test_private_premium_needs_both_endorsements_and_its_own_sale() -> None:
    c = setup()
    salt = pv.new_salt()
    value = premium("o-3")
    for endorsers in ((PLATFORM,), (PLATFORM, INSURER2)):
        r = c.run("cover", "buy_private", buy_args(c, "o-3", value, salt, endorsers), PLATFORM)
        assert r.code == pv.PrivacyCode.ENDORSEMENT_MISSING
    args = buy_args(c, "o-3", value, salt)
    assert c.run("cover", "buy_private", {**args, "insurer": INSURER2}, PLATFORM).code == Code.INVALID_ARGUMENT
    assert c.run("cover", "buy_private", {**args, "products": ["pp", "pp"]}, PLATFORM).code == Code.INVALID_ARGUMENT
    assert c.run("cover", "buy_private", args, INSURER).code == CoverCode.NOT_PLATFORM
    assert c.capital()["reserved"] == 0
    public = {k: v for k, v in args.items() if k not in ("endorsements",)}
    assert check_premium({**value, "order": "o-4"}, public)  # another sale
    assert check_premium({**value, "premium": 0}, public)
    assert check_premium({**value, "premium": 1.5}, public)
    assert check_premium({**value, "extra": 1}, public)
    assert c.run("cover", "buy_private", args, PLATFORM).ok
    again = buy_args(c, "o-3", value, pv.new_salt())  # the same order and product: bound once
    assert c.run("cover", "buy_private", again, PLATFORM).code == Code.ALREADY_EXISTS
