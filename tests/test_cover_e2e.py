"""End to end through HTTP: a node serving its API, cover bought and claimed through the SDK, and the payout
adapter as a real process (``python -m liangcao.adapters.payout``) killed with SIGKILL while it pays.

Every claim is paid exactly once in the payments core and recorded once on the ledger, whatever moment the
kills hit; premiums and payouts agree between the two.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Live
from cover_ledger import ADDRESS, SKU, return_event
from liangcao.adapters.payout import (
    PAYOUT_CODE,
    PREMIUM_CODE,
    clearing_account,
    insurer_account,
    shopper_account,
    wait_paid,
)
from liangcao.apps.cover.rules import transfer_id
from liangcao.client import Client
from liangcao.codes import Code
from liangcao.payments import Engine

TYPES = ["insurer", "platform", "logistics", "warehouse"]
ORDERS = 6


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    node = Live(tmp_path_factory.mktemp("cover") / "net", TYPES)
    yield node
    node.stop()


def adapter(net: Live, folder: Path, *extra: str) -> subprocess.Popen[bytes]:
    with (folder / "adapter.log").open("ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "liangcao.adapters.payout", "--home", str(net.home.root), "--as", "org1/alice",
             "--engine", str(folder), *extra],
            stdout=log,
            stderr=log,
        )  # fmt: skip


def test_claims_pay_exactly_once_through_http_with_the_adapter_killed(net: Live, tmp_path: Path) -> None:
    with Client(net.url, net.token) as c:
        run_story(net, c, tmp_path)


def run_story(net: Live, c: Client, tmp_path: Path) -> None:
    insurer, platform, courier = net.signer("org1/admin"), net.signer("org2/admin"), net.signer("org3/admin")

    def ok(method: str, args: dict[str, Any], signer: Any, contract: str = "cover") -> Any:
        receipt = c.call(contract, method, args, [signer])
        assert receipt["code"] == Code.OK, receipt
        return receipt["result"]

    ok("pledge_capital", {"amount": 10_000_000}, insurer)
    ok(
        "publish",
        {"id": "rs", "kind": "return_shipping", "indemnity_fen": 1_200, "window_days": 7, "base_fen": 80},
        insurer,
    )
    ok("publish", {"id": "pp", "kind": "price_protection", "indemnity_fen": 50_000, "window_days": 15, "base_fen": 100,
                   "rate_bps": 50}, insurer)  # fmt: skip

    def order(n: int) -> list[dict[str, Any]]:
        args = {"products": ["rs", "pp"], "order": f"order-{n}", "shopper": f"shopper-{n % 3}", "sku": SKU,
                "price_paid": 39_900, "address": ADDRESS, "device": f"phone-{n}"}  # fmt: skip
        return list(ok("buy", args, platform))

    def claim(pols: list[dict[str, Any]], n: int) -> None:
        rs, pp = pols
        text = return_event(f"order-{n}", c.node_time_ms(), rma=f"r{n}", item=n)
        (anchored,) = ok("capture", {"events": [text]}, courier, contract="trace")
        assert ok("claim", {"policy": rs["id"], "event": anchored["id"]}, platform)["status"] == "approved"
        assert ok("claim", {"policy": pp["id"]}, platform)["amount"] == 39_900 - 34_900

    policies = [order(n) for n in range(ORDERS)]
    ok("post_price", {"sku": SKU, "price": 34_900}, platform)
    for n, pols in enumerate(policies):
        claim(pols, n)
    folder = tmp_path / "adapter"
    folder.mkdir()

    # SIGKILL the adapter in the middle of its work: as soon as it has settled something more (a jitter after
    # a payment is recorded), so the kills land between its steps whatever the machine's load
    def progress() -> tuple[int, int]:
        cap = c.query("cover", "capital", {"insurer": "org1"})
        return cap["premiums"], cap["paid"]

    total = (sum(p["premium"] for pols in policies for p in pols), ORDERS * (1_200 + 5_000))
    kills: list[tuple[int, int]] = []
    rng = random.Random(7)
    while len(kills) < 6 and progress() != total:
        before = progress()
        proc = adapter(net, folder)
        try:
            deadline = time.monotonic() + 30
            while progress() == before and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(rng.uniform(0, 0.15))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        kills.append(progress())
    assert len([k for k in kills if k != total]) >= 3, kills  # at least three kills left work half done
    proc = adapter(net, folder)
    try:
        ids = [p["id"] for pols in policies for p in pols]
        assert wait_paid(c, ids, 60), (folder / "adapter.log").read_text()[-3000:]
        # while it follows the stream, a new order is bought and claimed: paid without a restart
        later = order(ORDERS)
        ok("post_price", {"sku": SKU, "price": 34_900}, platform)
        claim(later, ORDERS)
        ids += [p["id"] for p in later]
        policies.append(later)
        assert wait_paid(c, ids, 30)
        deadline = time.monotonic() + 30  # its premiums too
        while c.query("cover", "due", {"insurer": "org1"})["premiums"] and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert adapter(net, folder, "--once").wait(60) == 0  # nothing left: a run that replays everything pays nothing

    cap = c.query("cover", "capital", {"insurer": "org1"})
    assert cap["owed"] == 0 and cap["premiums_due"] == 0 and cap["reserved"] == 0
    engine = Engine(folder / "payments")
    try:
        total_paid = total_premiums = 0
        for pols in policies:
            for p in pols:
                view = c.query("cover", "policy", {"policy": p["id"]})
                (payout,) = engine.lookup_transfers([int(transfer_id("payout", p["id"]), 16)])
                assert payout.code == PAYOUT_CODE and payout.amount == view["claim"]["amount"]
                assert payout.credit_account_id == shopper_account("org2", p["shopper"])
                assert view["claim"]["transfer"] == transfer_id("payout", p["id"])
                (premium,) = engine.lookup_transfers([int(transfer_id("premium", p["id"]), 16)])
                assert premium.code == PREMIUM_CODE and premium.amount == p["premium"]
                total_paid += payout.amount
                total_premiums += premium.amount
        (ins,) = engine.lookup_accounts([insurer_account("org1")])
        (clearing,) = engine.lookup_accounts([clearing_account("org2")])
        assert (ins.debits_posted, ins.credits_posted) == (total_paid, total_premiums) == (cap["paid"], cap["premiums"])
        assert clearing.debits_posted == total_premiums
        shoppers = engine.lookup_accounts([shopper_account("org2", f"shopper-{k}") for k in range(3)])
        assert sum(a.credits_posted for a in shoppers) == total_paid
    finally:
        engine.close()

    # the explorer's view of a policy: terms, the claim's facts, the payout
    rs_id = policies[0][0]["id"]
    r = httpx.get(f"{net.url}/v1/cover/policies/{rs_id}", headers={"Authorization": f"Bearer {net.token}"})
    view = r.json()
    assert r.status_code == 200 and view["payout"]["paid"] and view["facts"][0]["bizStep"] == "shipping"
    assert view["facts"][0]["anchor"]["key"].startswith("trace/e/")
    bad = httpx.get(f"{net.url}/v1/cover/policies/P{'0' * 64}.1", headers={"Authorization": f"Bearer {net.token}"})
    assert bad.status_code == 404 and bad.json()["code"] == Code.NOT_FOUND
    page = httpx.get(f"{net.url}/explorer/cover")
    assert page.status_code == 200 and "cover.js" in page.text
    assert httpx.get(f"{net.url}/explorer/cover/cover.js").status_code == 200
    assert json.loads((folder / "cursor.json").read_text())["last_event_id"]
    assert not os.path.exists(folder / "cursor.tmp")


def test_a_refused_payout_stops_the_adapter_process_with_one_line_not_a_traceback(net: Live, tmp_path: Path) -> None:
    """A transfer id already taken in the adapter's payments core: the process settles the rest, then exits
    non-zero saying which obligation was refused, in one line (no traceback); the payout stays due."""
    from liangcao.payments import Account, Transfer

    with Client(net.url, net.token) as c:
        platform, courier = net.signer("org2/admin"), net.signer("org3/admin")
        args = {"products": ["rs"], "order": "poison-1", "shopper": "shopper-p", "sku": SKU, "price_paid": 39_900,
                "address": ADDRESS, "device": "phone-p"}  # fmt: skip
        (rs,) = c.call("cover", "buy", args, [platform])["result"]
        text = return_event("poison-1", c.node_time_ms(), rma="poison")
        (anchored,) = c.call("trace", "capture", {"events": [text]}, [courier])["result"]
        assert c.call("cover", "claim", {"policy": rs["id"], "event": anchored["id"]}, [platform])["code"] == Code.OK
    folder = tmp_path / "adapter"
    folder.mkdir()
    engine = Engine(folder / "payments")
    try:
        engine.create_accounts([Account(id=n, ledger=156, code=1) for n in (5, 6)])
        engine.create_transfers([Transfer(id=int(transfer_id("payout", rs["id"]), 16), debit_account_id=5,
                                          credit_account_id=6, amount=1, ledger=156, code=1)])  # fmt: skip
    finally:
        engine.close()
    assert adapter(net, folder, "--once").wait(60) != 0
    log = (folder / "adapter.log").read_text()
    assert "Traceback" not in log and rs["id"] in log and "exists_with_different" in log, log[-2000:]
    with Client(net.url, net.token) as c:
        view = c.query("cover", "policy", {"policy": rs["id"]})
        assert view["premium"]["collected"] and view["claim"]["status"] == "approved"
