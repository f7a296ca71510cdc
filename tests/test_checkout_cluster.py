"""Beyond one process: two checkout gateways (real processes) over one PostgreSQL payments core share one
global rate for paying through the flow token server; together they admit no more than the global limit,
each gets a part, and every admitted payment is in the shared core once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from checkout_identity import operator, shopper
from liangcao.checkout.http import default_rules
from liangcao.flow import rules_to_json
from liangcao.payments.postgres import PostgresBackend
from liangcao.procs import die_with_parent, free_port, port_open
from test_checkout_http import Gateway, post

RATE, BURST, GATEWAYS = 30, 15, 2


def test_two_gateways_share_one_core_and_one_global_rate_for_paying(tmp_path: Path, pg_dsn: str) -> None:
    with PostgresBackend(pg_dsn) as pg:
        pg.reset()
    rules = json.loads(rules_to_json(default_rules()))
    for r in rules["resources"]:
        if r["name"] == "pay":
            r.update(rate_per_s=RATE, burst=BURST, cluster=True)
    rules_file = tmp_path / "rules.json"
    rules_file.write_text(json.dumps(rules))
    port = free_port()
    with open(tmp_path / "server.log", "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "liangcao.flow.cluster", "--port", str(port), "--rules", str(rules_file)],
            stdout=log,
            stderr=log,
            preexec_fn=die_with_parent(signal.SIGKILL),
        )
    gateways: list[Gateway] = []
    try:
        assert port_open(port, 20), "the token server did not start"
        for i in range(GATEWAYS):
            args = ["--pg", pg_dsn, "--rules", str(rules_file), "--token-server", f"127.0.0.1:{port}"]
            gateways.append(Gateway(tmp_path / f"gw{i}", *args, "--fallback-share", str(1 / GATEWAYS)).start())
        deadline = time.monotonic() + 15
        while not all(httpx.get(f"{g.url}/v1/flow").json()["cluster"]["live"] for g in gateways):
            assert time.monotonic() < deadline, "the gateways did not reach the token server"
            time.sleep(0.05)
        # Orders are made where they are paid (each gateway keeps its own order store).
        orders: list[list[tuple[str, int]]] = []
        for i, g in enumerate(gateways):
            r = httpx.post(f"{g.url}/v1/wallets/b{i}/topup", json={"amount": 10**9},
                           headers={"Idempotency-Key": f"t{i}"} | operator(g.home))  # fmt: skip
            assert r.status_code == 200, r.text
            # each shopper signs in at their gateway (its folder's session key) and pays there
            with httpx.Client(base_url=g.url, timeout=10, headers=shopper(g.home, f"b{i}")) as c:
                made = []
                for n in range(160):
                    r = post(c, "/v1/orders", {"buyer": f"b{i}", "merchant": f"m{n % 4}", "amount": 100 + n}, f"o{n}")
                    made.append((r.json()["id"], 100 + n))
                orders.append(made)
        paid: list[list[int]] = [[] for _ in gateways]
        refused = [0] * GATEWAYS
        lock = threading.Lock()
        stop = time.monotonic() + 3.0

        def payer(i: int, part: list[tuple[str, int]]) -> None:
            with httpx.Client(base_url=gateways[i].url, timeout=10, headers=shopper(gateways[i].home, f"b{i}")) as c:
                queue = list(part)
                while queue and time.monotonic() < stop:
                    oid, amount = queue.pop()
                    r = post(c, f"/v1/orders/{oid}/pay", {}, f"pay-{oid}")
                    with lock:
                        if r.status_code == 200:
                            paid[i].append(amount)
                        elif r.status_code == 429:
                            refused[i] += 1
                            queue.insert(0, (oid, amount))  # the shopper tries again later

        t0 = time.monotonic()
        threads = [threading.Thread(target=payer, args=(i, orders[i][k::4])) for i in range(GATEWAYS) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        elapsed = time.monotonic() - t0
        total = sum(len(p) for p in paid)
        allowed = RATE * elapsed + BURST + GATEWAYS  # plus at most one idle lease per gateway
        print(
            f"cluster: {total} paid ({[len(p) for p in paid]}), {sum(refused)} refused in {elapsed:.2f} s; "
            f"limit {allowed:.0f}"
        )
        assert sum(refused) > 0 and total + sum(refused) > 1.5 * allowed, (total, refused, allowed)
        assert total <= allowed * 1.02, (total, allowed)
        assert all(len(p) > 0.1 * total / GATEWAYS for p in paid), paid
        for i, g in enumerate(gateways):  # every admitted payment is held in the shared core, once
            r = httpx.get(f"{g.url}/v1/wallets/b{i}", headers=shopper(g.home, f"b{i}"))
            if r.status_code == 429:  # the shopper's retries spent their own rate: wait as they are told
                time.sleep(int(r.headers["retry-after"]))
                r = httpx.get(f"{g.url}/v1/wallets/b{i}", headers=shopper(g.home, f"b{i}"))
            assert r.status_code == 200, r.text
            w = r.json()
            assert w["held"] == sum(paid[i]) and w["available"] == 10**9 - sum(paid[i])
    finally:
        for g in gateways:
            g.stop()
        server.kill()
        server.wait(10)
