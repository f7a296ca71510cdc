"""``liangcao sim``: run the deterministic simulator (``liangcao.sim``) over many seeds."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer
from rich.progress import Progress

from liangcao.cli.common import AsJson, console, fail


def sim_cmd(
    seeds: Annotated[int, typer.Option(min=1, max=1_000_000, help="how many seeds to run")] = 100,
    seed: Annotated[int, typer.Option(min=0, help="the first seed (replay one failing seed with --seeds 1)")] = 0,
    steps: Annotated[int, typer.Option(min=1, max=100_000, help="actions per seed before the final flush")] = 120,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="stop at the first failing seed")] = False,
    as_json: AsJson = False,
) -> None:
    """Simulate a consortium of real nodes over an in-memory log with crashes, faults and adversaries.

    Exit 1 naming the first failing seed and the invariant it broke; `liangcao sim --seed N --seeds 1`
    replays it exactly."""
    from liangcao.sim import run_seeds

    started = time.monotonic()
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("seeds", total=seeds)
        failures = run_seeds(list(range(seed, seed + seeds)), steps, lambda _s: bar.advance(task), fail_fast=fail_fast)
    took = time.monotonic() - started
    summary = {"seeds": seeds, "first_seed": seed, "steps": steps, "failed": len(failures), "seconds": round(took, 1)}
    if failures:
        for s, message in failures[:10]:
            console.print(f"[red]FAIL[/] {message}\n    replay: liangcao sim --seed {s} --seeds 1 --steps {steps}")
    else:
        console.print(f"{seeds} seeds from {seed}, {steps} steps each: every invariant held ({took:.1f} s)")
    if as_json:
        print(json.dumps({**summary, "failures": [{"seed": s, "message": m} for s, m in failures]}))
    if failures:
        fail(f"{len(failures)} of {seeds} seeds failed")
