"""The deterministic simulator: honest peers survive crashes, faults and adversaries over hundreds of
schedules; a seed replays exactly; and the simulator itself finds the bugs it exists to find (each check is
shown to fail when the defence it guards is switched off)."""

from __future__ import annotations

from typing import Any

import pytest

from liangcao import sim
from liangcao.contracts import config as cfgmod
from liangcao.crypto import keys
from liangcao.crypto.identity import parse_certificate
from liangcao.ordering import jetstream

SEEDS = range(40)


def test_seeds_pass() -> None:
    assert sim.run_seeds(list(SEEDS)) == []


def test_a_seed_replays_exactly() -> None:
    assert sim.run_seed(7) == sim.run_seed(7)
    assert sim.run_seed(7) != sim.run_seed(8)


def _first_failure(seeds: range = range(60)) -> str:
    failures = sim.run_seeds(list(seeds), fail_fast=True)
    assert failures, "the simulator did not notice the broken defence"
    return failures[0][1]


def test_it_finds_attestations_counted_from_anyone(monkeypatch: pytest.MonkeyPatch) -> None:
    def anyone(self: cfgmod.Config, att: Any, certs: Any, time_ms: int | None = None) -> str | None:
        return parse_certificate(keys.unb64(att["cert"])).org

    monkeypatch.setattr(cfgmod.Config, "attesting_org", anyone)
    assert "fork alarm about an honest peer" in _first_failure()


def test_it_finds_a_cut_that_moves_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jetstream.limits, "cut_clock_skew_ms_max", 10**15)
    assert "ran ahead" in _first_failure()


def test_it_finds_an_undetected_divergent_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    from liangcao.node.node import Node

    monkeypatch.setattr(Node, "note_fork", lambda self, *a: False)  # a peer that never compares
    assert "did not detect the divergent peer" in _first_failure()


def test_it_finds_attestations_lost_for_good(monkeypatch: pytest.MonkeyPatch) -> None:
    from liangcao.node.node import Node
    from liangcao.ordering.memory import MemoryLink

    # a link that never retries what the log did not take, and a peer that never chases what is missing
    monkeypatch.setattr(MemoryLink, "pump", lambda self: self.outbox.clear() if self.log.attestations_down else None)
    monkeypatch.setattr(MemoryLink, "publish_attestation", _publish_once)
    monkeypatch.setattr(Node, "_maintain", lambda self: None)
    assert "not final after the flush" in _first_failure()


def _publish_once(self: Any, att: bytes, height: int | None = None) -> None:
    self.log.attest(att)  # fire and forget: lost while the log is down


def test_the_cli_runs_seeds_and_names_a_failing_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from liangcao.cli import app

    ok = CliRunner().invoke(app, ["sim", "--seeds", "2", "--seed", "5", "--json"])
    assert ok.exit_code == 0, ok.output
    assert '"failed": 0' in ok.output.splitlines()[-1]
    monkeypatch.setattr(jetstream.limits, "cut_clock_skew_ms_max", 10**15)
    bad = CliRunner().invoke(app, ["sim", "--seeds", "40", "--fail-fast"])
    assert bad.exit_code == 1 and "replay: liangcao sim --seed" in bad.output
