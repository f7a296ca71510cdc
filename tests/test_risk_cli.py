"""``liangcao risk ...`` through the real command line (typer's runner, in process)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from liangcao.cli import app
from liangcao.clock import now_ms

runner = CliRunner()


def _payment(pid: str, **kw: object) -> str:
    body = {
        "payment_id": pid,
        "time_ms": now_ms(),
        "shopper": "alice",
        "device": "phone-1",
        "ip": "10.2.3.4",
        "account": "card-1",
        "merchant": "shop-1",
        "amount_fen": 12_900,
        "category": "food",
        **kw,
    }
    return json.dumps(body)


def test_decide_rules_status_and_rollback_through_a_home_folder(tmp_path: Path) -> None:
    home = tmp_path / "risk"
    r = runner.invoke(app, ["risk", "decide", "--home", str(home), _payment("p1")])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["action"] == "allow" and d["rules_version"] == "r1" and d["model_version"] == "m1"
    r = runner.invoke(app, ["risk", "decide", "--home", str(home), _payment("p2")])
    assert json.loads(r.output)["features"]["shopper_n_1m"] == 1  # the window survived the restart

    bad = runner.invoke(app, ["risk", "decide", "--home", str(home), _payment("p3", amount_fen=12.5)])
    assert bad.exit_code == 1 and "integer fen" in bad.output and "Traceback" not in bad.output
    bad = runner.invoke(app, ["risk", "decide", "--home", str(home), _payment("p4", colour="red")])
    assert bad.exit_code == 1 and "unknown field" in bad.output

    rules = tmp_path / "rules.json"
    rules.write_text(
        json.dumps(
            {"rules": [{"id": "big", "reason": "BIG", "action": "block", "when": [["amount_fen", ">=", 10_000]]}]}
        )
    )
    assert runner.invoke(app, ["risk", "rules", "check", str(rules)]).exit_code == 0
    r = runner.invoke(app, ["risk", "rules", "load", "--home", str(home), str(rules)])
    assert r.exit_code == 0 and "r2" in r.output
    r = runner.invoke(app, ["risk", "decide", "--home", str(home), _payment("p5")])
    assert json.loads(r.output)["action"] == "block" and json.loads(r.output)["reasons"] == ["BIG"]
    rules.write_text('{"rules": [{"id": "x", "reason": "X", "action": "block", "when": [["nope", ">", 1]]}]}')
    r = runner.invoke(app, ["risk", "rules", "load", "--home", str(home), str(rules)])
    assert r.exit_code == 1 and "unknown field 'nope'" in r.output
    status = json.loads(runner.invoke(app, ["risk", "status", "--home", str(home)]).output)
    assert status["rules_version"] == "r2" and status["decided"] == 3
    r = runner.invoke(app, ["risk", "rollback", "--home", str(home), "m9"])
    assert r.exit_code == 1 and "not kept" in r.output
    assert runner.invoke(app, ["risk", "rollback", "--home", str(home), "m1"]).exit_code == 0


def test_replay_draws_the_picture_and_bench_ends_with_one_json_line(tmp_path: Path) -> None:
    png = tmp_path / "replay.png"
    r = runner.invoke(app, ["risk", "replay", "--per-day", "3000", "--shoppers", "400", "--png", str(png), "--json"])
    assert r.exit_code == 0, r.output
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    out = json.loads(r.output.strip().splitlines()[-1])
    assert out["payments"] >= 6000 and "recall_online_after_shift" in out
    r = runner.invoke(app, ["risk", "bench", "--per-day", "2000", "--shoppers", "300", "--rate", "2000", "--json"])
    assert r.exit_code == 0, r.output
    b = json.loads(r.output.strip().splitlines()[-1])
    for key in (
        "decisions_per_s",
        "capacity_per_s",
        "p50_ms",
        "p99_ms",
        "recall_online_after_shift",
        "recall_frozen_after_shift",
        "events_to_recover",
        "cores",
        "peak_rss_mb",
        "decide_p99_ms",
        "decide_cpu_p99_us",
        "cpu_us_per_decision",
        "gc_pause_max_ms",
    ):
        assert key in b, key
    assert b["decisions"] >= 4000 and b["p50_ms"] <= b["p99_ms"] and b["cores"] >= 1 and b["capacity_per_s"] > 0
    # The decision alone is inside the latency from the due time (measured from the schedule, not the send).
    assert b["decide_p50_ms"] <= b["p50_ms"] and b["cpu_us_per_decision"] > 0 and b["decide_cpu_p50_us"] > 0
