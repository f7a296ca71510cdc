"""Flow control over real HTTP: the middleware refuses fast with 429/503 + Retry-After, the router reports and
reloads rules (bad rules: 400, nothing changed), and the Prometheus metrics count every decision."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from flow_gateway import build
from liangcao.flow import BreakerRule, Gate, ResourceRule, Rules
from liangcao.procs import free_port


class Served:
    def __init__(self, gate: Gate) -> None:
        port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(build(gate), host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)

    def close(self) -> None:
        self.http.close()
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def gate() -> Gate:
    return Gate(
        Rules(
            version=1,
            resources=[
                ResourceRule(name="work", rate_per_s=5, burst=5, concurrency_max=50),
                ResourceRule(name="fail", breaker=BreakerRule(calls_min=3, error_ratio_max=0.5, open_s=30)),
            ],
        )
    )


@pytest.fixture
def http(gate: Gate) -> Iterator[httpx.Client]:
    served = Served(gate)
    try:
        yield served.http
    finally:
        served.close()


def test_refused_requests_get_429_retry_after_and_a_coded_body_within_milliseconds(http: httpx.Client) -> None:
    oks = [http.get("/work").status_code for _ in range(5)]
    assert oks == [200] * 5
    timings = []
    for _ in range(20):
        t0 = time.perf_counter()
        r = http.get("/work", params={"ms": 2000})  # were it admitted it would take 2 s
        timings.append(time.perf_counter() - t0)
        assert r.status_code == 429
    assert int(r.headers["retry-after"]) >= 1
    assert 1 <= int(r.headers["x-retry-after-ms"]) <= 200
    body = r.json()
    assert body["code"] == 3100 and body["name"] == "RATE_LIMITED" and "work" in body["message"]
    assert body["detail"]["priority"] == "PAY"
    timings.sort()
    assert timings[len(timings) // 2] < 0.010  # median over loopback: answered, not queued
    assert timings[-1] < 0.25


def test_breaker_over_http_answers_503(http: httpx.Client) -> None:
    assert [http.get("/fail").status_code for _ in range(3)] == [500, 500, 500]
    r = http.get("/fail")
    assert r.status_code == 503 and r.json()["name"] == "CIRCUIT_OPEN"
    assert 25 <= int(r.headers["retry-after"]) <= 30
    status = http.get("/v1/flow").json()
    assert status["resources"]["fail"]["breaker"]["state"] == "open"
    assert status["resources"]["fail"]["exits"] == {"ok": 0, "error": 3}


def test_status_rules_reload_and_metrics(http: httpx.Client, gate: Gate) -> None:
    for _ in range(8):
        http.get("/work", headers={"x-priority": "BROWSE"})
    status = http.get("/v1/flow").json()
    decisions = status["resources"]["work"]["decisions"]["BROWSE"]
    assert decisions["pass"] + decisions["rate_limited"] == 8 and decisions["rate_limited"] > 0
    assert http.get("/v1/flow/rules").json()["version"] == 1
    # Bad rules: 400 with the code, and nothing changed.
    bad = http.put("/v1/flow/rules", content=b'{"version": 2, "resources": [{"name": "work", "rate_per_s": -5}]}')
    assert bad.status_code == 400 and bad.json()["code"] == 3110 and bad.json()["name"] == "BAD_RULES"
    assert gate.rules.version == 1 and http.get("/v1/flow").json()["version"] == 1
    junk = http.put("/v1/flow/rules", content=b"not json")
    assert junk.status_code == 400 and junk.json()["code"] == 3110
    # A good reload: the limit is lifted at once, no restart.
    good = http.put("/v1/flow/rules", content=b'{"version": 3, "resources": [{"name": "work", "rate_per_s": 10000}]}')
    assert good.status_code == 200 and good.json()["version"] == 3
    assert all(http.get("/work").status_code == 200 for _ in range(30))
    text = http.get("/v1/flow/metrics").text
    assert 'liangcao_flow_decisions_total{decision="rate_limited",priority="BROWSE",resource="work"}' in text
    assert 'liangcao_flow_rate_limit_per_s{resource="work"} 10000.0' in text
    assert "liangcao_flow_rules_version 3.0" in text


def test_a_browse_flood_over_http_cannot_starve_paying() -> None:
    gate = Gate(Rules(resources=[ResourceRule(name="work", concurrency_max=10)]))
    served = Served(gate)
    try:
        url = str(served.http.base_url)

        async def run() -> tuple[list[int], list[int], float]:
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                flood = [
                    asyncio.create_task(client.get("/work", params={"ms": 2000}, headers={"x-priority": "BROWSE"}))
                    for _ in range(40)
                ]
                await asyncio.sleep(0.3)  # the flood is in: browsing holds its half
                t0 = time.perf_counter()
                pays = await asyncio.gather(
                    *(client.get("/work", params={"ms": 10}, headers={"x-priority": "PAY"}) for _ in range(5))
                )
                pay_s = time.perf_counter() - t0
                browse = await asyncio.gather(*flood)
                return [r.status_code for r in browse], [r.status_code for r in pays], pay_s

        browse, pay, pay_s = asyncio.run(run())
        assert pay == [200] * 5 and pay_s < 1.0  # paying went straight through, not after the 2 s flood
        assert browse.count(200) == 5 and browse.count(429) == 35  # browsing got exactly its half
    finally:
        served.close()
