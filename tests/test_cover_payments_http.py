"""The payout adapter through the payments service's HTTP API (``liangcao.payments.http``), not the embedded
engine: the same derived transfer ids, so a replay is answered ``EXISTS`` and pays nothing."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from cover_ledger import INSURER, PLATFORM, CoverChain, return_event
from liangcao.adapters.payout import (
    PAYOUT_CODE,
    AdapterFault,
    HttpPayments,
    PayoutAdapter,
    insurer_account,
    shopper_account,
)
from liangcao.apps.cover.rules import transfer_id
from liangcao.payments import Engine
from liangcao.procs import free_port


class ChainLedger:
    def __init__(self, chain: CoverChain) -> None:
        self.c = chain

    def query(self, contract: str, method: str, args: dict[str, Any]) -> Any:
        return self.c.query(contract, method, args)

    def submit(self, contract: str, method: str, args: dict[str, Any]) -> dict[str, Any]:
        return dict(self.c.run(contract, method, args, INSURER))


def start_service(data: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port(0)
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "liangcao.cli", "pay", "start", "--port", str(port), "--data", str(data)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/v1/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, "the payments service exited"
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the payments service did not start")


def test_the_adapter_pays_through_the_payments_service(tmp_path: Path) -> None:
    c = CoverChain()
    c.ok("cover", "pledge_capital", {"amount": 100_000}, INSURER)
    c.product("rs", "return_shipping")
    (rs,) = c.buy(["rs"], "o-1")
    r = c.run("cover", "claim", {"policy": rs["id"], "event": c.anchor(return_event("o-1", c.time_ms))}, PLATFORM)
    proc, url = start_service(tmp_path / "pay")
    payments = HttpPayments(url, token=(tmp_path / "pay" / "operator.token").read_text())
    try:
        adapter = PayoutAdapter(ChainLedger(c), payments, INSURER)
        assert adapter.settle_due() == 2 and adapter.paid == 2  # the premium and the payout
        # a replay after the ledger recorded it: nothing to do; a crash before it was recorded: EXISTS
        approved = {"contract": "cover", **r.events[0]}
        assert adapter.handle(approved) == "recorded"
        tid = int(transfer_id("payout", rs["id"]), 16)
        payee = shopper_account(PLATFORM, "s1")
        assert adapter._transfer(tid, insurer_account(INSURER), payee, 1_200, PAYOUT_CODE) == "exists"
        with pytest.raises(AdapterFault, match="exists_with_different"):  # the same id, other fields: stop loudly
            adapter._transfer(tid, insurer_account(INSURER), payee, 1_300, PAYOUT_CODE)
    finally:
        payments.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    engine = Engine(tmp_path / "pay")
    try:
        (payout,) = engine.lookup_transfers([int(transfer_id("payout", rs["id"]), 16)])
        (account,) = engine.lookup_accounts([insurer_account(INSURER)])
        assert payout.amount == 1_200 and account.debits_posted == 1_200 and account.credits_posted == rs["premium"]
        assert c.capital()["paid"] == 1_200
    finally:
        engine.close()
