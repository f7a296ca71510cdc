"""``liangcao authn``: the benchmark's JSON line, and a software device paying against a real service process
(``liangcao authn serve``, uvicorn on 127.0.0.1) through the CLI."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
from typer.testing import CliRunner

from liangcao.cli import app
from liangcao.procs import free_port, port_open

runner = CliRunner()


def test_bench_prints_the_figures_and_ends_with_one_json_line() -> None:
    out = runner.invoke(app, ["authn", "bench", "--shoppers", "4", "--payments", "15", "--rounds", "2", "--json"])
    assert out.exit_code == 0, out.output
    figures = json.loads(out.output.strip().splitlines()[-1])
    for key in ("assertions_per_s", "es256_verify_per_s", "ed25519_verify_per_s", "cores", "peak_rss_mb"):
        assert figures[key] > 0, key
    assert figures["cores"] == os.cpu_count() and figures["assertions"] == 4 * 15 * 2
    assert figures["synchronous"] == "FULL" and isinstance(figures["bar_met"], bool)
    assert len(figures["rounds"]["assertions_per_s"]) == 2
    bad = runner.invoke(app, ["authn", "bench", "--synchronous", "OFF"])
    assert bad.exit_code == 2


def test_a_software_device_registers_and_pays_through_the_service(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "liangcao.cli", "authn", "serve", "--home", str(tmp_path / "rp"), "--port", str(port)]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert port_open(port, 30), "authn serve did not start"
        phone = tmp_path / "phone.json"
        out = runner.invoke(app, ["authn", "device-register", url, "dora", "phone", "--device", str(phone)])
        assert out.exit_code == 0, out.output
        assert "registered 'phone' (ES256) for dora" in out.output
        assert stat.S_IMODE(phone.stat().st_mode) == 0o600
        watch = tmp_path / "watch.json"
        out = runner.invoke(
            app, ["authn", "device-register", url, "dora", "watch", "--device", str(watch), "--alg", "Ed25519"]
        )
        assert out.exit_code == 0 and "(EdDSA)" in out.output, out.output
        for n, device in enumerate((phone, watch, phone)):
            out = runner.invoke(
                app, ["authn", "pay", url, "dora", f"order-{n}", "merchant-1", "2500", "--device", str(device)]
            )
            assert out.exit_code == 0, out.output
            assert f"confirmed order-{n}: 2500 fen to merchant-1" in out.output
        devices = httpx.get(f"{url}/authn/v1/credentials", params={"shopper": "dora"}).json()["credentials"]
        assert [(d["name"], d["sign_count"]) for d in devices] == [("phone", 2), ("watch", 1)]
        # money is integer fen on the command line too
        out = runner.invoke(
            app, ["authn", "pay", url, "dora", "order-9", "merchant-1", "19.99", "--device", str(phone)]
        )
        assert out.exit_code == 2
        # the phone revoked: its next confirmation is refused with the code's name
        httpx.post(f"{url}/authn/v1/credentials/revoke", json={"shopper": "dora", "credential_id": devices[0]["id"]})
        out = runner.invoke(app, ["authn", "pay", url, "dora", "order-10", "merchant-1", "100", "--device", str(phone)])
        assert out.exit_code == 1 and "holds none of the devices" in out.output, out.output
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)
