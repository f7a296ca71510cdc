"""The example contract of ``docs/contracts.md`` (``examples/loyalty.py``), tested with ``liangcao.testing``
exactly as a contract author outside this repository would test theirs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from liangcao.codes import Code
from liangcao.testing import Chain

# An outside author imports their own package; this repository keeps the example beside its other examples.
_path = Path(__file__).resolve().parents[1] / "examples" / "loyalty.py"
_spec = importlib.util.spec_from_file_location("liangcao_example_loyalty", _path)
assert _spec is not None and _spec.loader is not None
loyalty = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = loyalty
_spec.loader.exec_module(loyalty)

PLATFORM, SHOP, MAKER, BANK = "org1", "org2", "org3", "org4"


@pytest.fixture
def chain() -> Chain:
    chain = Chain(["platform", "supplier", "core_enterprise", "bank"], contracts=[loyalty.Loyalty()])
    chain.ok("example.loyalty", "open", {"name": "Double 11 stars", "points_per_yuan": 2, "expiry_days": 30}, PLATFORM)
    return chain


def test_points_are_awarded_for_sales_and_redeemed(chain: Chain) -> None:
    assert chain.ok("example.loyalty", "award", {"merchant": SHOP, "sold": 12_345}, PLATFORM) == {"points": 246}
    r = chain.run("example.loyalty", "award", {"merchant": SHOP, "sold": 100}, f"{PLATFORM}/alice")
    assert r.ok and r.result == {"points": 248}
    assert r.event("awarded") == {"platform": PLATFORM, "merchant": SHOP, "points": 2}
    assert chain.ok("example.loyalty", "redeem", {"platform": PLATFORM, "points": 48}, f"{SHOP}/bob") == {"points": 200}
    account = chain.query("example.loyalty", "account", {"platform": PLATFORM, "merchant": SHOP})
    assert account == {"platform": PLATFORM, "merchant": SHOP, "points": 200, "last_earned_day": chain.today,
                       "usable": 200}  # fmt: skip
    programme = chain.get(f"example.loyalty/p/{PLATFORM}")
    assert (programme["issued"], programme["redeemed"]) == (248, 48)


def test_who_may_do_what(chain: Chain) -> None:
    # only a platform opens a programme or awards points; a node's key never acts for anyone
    chain.fails(Code.WRONG_ORG_TYPE, "example.loyalty", "award", {"merchant": SHOP, "sold": 100}, SHOP)
    chain.fails(Code.WRONG_ORG_TYPE, "example.loyalty", "award", {"merchant": SHOP, "sold": 100}, f"{PLATFORM}/peer0")
    chain.fails(Code.ALREADY_EXISTS, "example.loyalty", "open", {"name": "x", "points_per_yuan": 1, "expiry_days": 1},
                PLATFORM)  # fmt: skip
    chain.fails(Code.NOT_FOUND, "example.loyalty", "award", {"merchant": PLATFORM, "sold": 100}, PLATFORM)
    chain.fails(Code.NOT_FOUND, "example.loyalty", "award", {"merchant": "org9", "sold": 100}, PLATFORM)
    chain.ok("example.loyalty", "award", {"merchant": SHOP, "sold": 10_000}, PLATFORM)
    # the merchant redeems its own points: signing for another organisation redeems that one's (it has none)
    chain.fails(Code.NOT_FOUND, "example.loyalty", "redeem", {"platform": PLATFORM, "points": 1}, MAKER)
    chain.fails(Code.NOT_SIGNED, "example.loyalty", "redeem", {"platform": PLATFORM, "points": 1}, f"{SHOP}/peer0")
    # with two signers the acting party decides whose points move
    r = chain.run("example.loyalty", "redeem", {"platform": PLATFORM, "points": 5}, MAKER, SHOP, actor=f"{SHOP}/admin")
    assert r.ok and r.event("redeemed")["merchant"] == SHOP


def test_arguments_are_checked_before_the_contract_runs(chain: Chain) -> None:
    for bad in ({"merchant": SHOP, "sold": 0}, {"merchant": "Shop 2", "sold": 1}, {"merchant": SHOP, "sold": "1"}):
        chain.fails(Code.INVALID_ARGUMENT, "example.loyalty", "award", bad, PLATFORM)
    r = chain.fails(loyalty.LoyaltyCode.NOTHING_TO_AWARD, "example.loyalty", "award", {"merchant": SHOP, "sold": 49},
                    PLATFORM)  # fmt: skip
    assert r.message == "a sale of 49 fen earns no point"


def test_points_lapse_after_a_quiet_spell(chain: Chain) -> None:
    chain.ok("example.loyalty", "award", {"merchant": SHOP, "sold": 5_000}, PLATFORM)  # 100 points
    chain.advance(days=29)
    assert chain.query("example.loyalty", "account", {"platform": PLATFORM, "merchant": SHOP})["usable"] == 100
    chain.advance(days=1)  # thirty days without a sale
    assert chain.query("example.loyalty", "account", {"platform": PLATFORM, "merchant": SHOP})["usable"] == 0
    r = chain.fails(loyalty.LoyaltyCode.NOT_ENOUGH_POINTS, "example.loyalty", "redeem",
                    {"platform": PLATFORM, "points": 1}, SHOP)  # fmt: skip
    assert r.message == f"{SHOP} holds 0 points, redeems 1"
    r = chain.run("example.loyalty", "award", {"merchant": SHOP, "sold": 50}, PLATFORM)
    assert r.result == {"points": 1} and r.event("lapsed")["points"] == 100


def test_the_platform_pages_through_its_merchants(chain: Chain) -> None:
    for merchant in (MAKER, BANK, SHOP):
        chain.ok("example.loyalty", "award", {"merchant": merchant, "sold": 100}, PLATFORM)
    first = chain.query("example.loyalty", "merchants", {"platform": PLATFORM, "limit": 2})
    assert first == {"merchants": [{"merchant": SHOP, "points": 2}, {"merchant": MAKER, "points": 2}], "next": MAKER}
    rest = chain.query("example.loyalty", "merchants", {"platform": PLATFORM, "after": first["next"]})
    assert rest == {"merchants": [{"merchant": BANK, "points": 2}], "next": None}
    chain.ok("example.loyalty", "redeem", {"platform": PLATFORM, "points": 2}, MAKER)  # empty: off the list
    page = chain.query("example.loyalty", "merchants", {"platform": PLATFORM})
    assert [m["merchant"] for m in page["merchants"]] == [SHOP, BANK]


def test_the_same_transactions_give_the_same_state_hash() -> None:
    hashes = []
    for _ in range(2):
        chain = Chain(["platform", "supplier"], contracts=[loyalty.Loyalty()])
        chain.ok("example.loyalty", "open", {"name": "p", "points_per_yuan": 1, "expiry_days": 9}, PLATFORM)
        chain.ok("example.loyalty", "award", {"merchant": SHOP, "sold": 1_000}, PLATFORM)
        hashes.append(chain.state_hash)
    assert hashes[0] == hashes[1]
