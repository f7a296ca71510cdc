"""``liangcao risk ...``: the command line of ``liangcao.risk``, mounted by ``liangcao.cli``.

=============  ===========================================================================================
``replay``     the seeded synthetic world through the engine, prequentially; draws docs/img/risk-replay.png
``bench``      the same world paced open-loop at ``--rate``: latency, throughput, recall after the shift
``decide``     one payment (JSON) through an engine home folder; prints the decision
``rules``      ``check`` a rule-set file; ``show`` the current set of a home folder
``status``     counters, versions and model events of a home folder
``rollback``   serve an earlier model version
=============  ===========================================================================================
"""

from __future__ import annotations

import gc
import json
import os
import resource
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from liangcao.errors import Fault, LiangcaoError

app = typer.Typer(
    help="The risk engine: decisions, rule sets, model versions; the synthetic world's replay and benchmark.",
    no_args_is_help=True,
    add_completion=False,
)
rules_app = typer.Typer(help="Rule sets.", no_args_is_help=True, add_completion=False)
app.add_typer(rules_app, name="rules")
console = Console()
err = Console(stderr=True)

Home = Annotated[Path, typer.Option("--home", help="the engine's home folder")]
Seed = Annotated[int, typer.Option("--seed", help="the world's seed (same seed, same world)")]
PerDay = Annotated[int, typer.Option("--per-day", help="payments per simulated day")]
Shoppers = Annotated[int, typer.Option("--shoppers", help="shoppers in the world")]
AsJson = Annotated[bool, typer.Option("--json", help="last line: one JSON object")]


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr, never a traceback, then exit ``code``."""
    err.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def peak_rss_mb() -> float:
    """Peak resident memory of this process plus its children, in MiB (ru_maxrss is KiB on Linux)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round((own + children) / 1024, 1)


def _world(seed: int, per_day: int, shoppers: int) -> Any:
    from liangcao.risk.world import World, WorldConfig

    if not 1000 <= per_day <= 2_000_000 or not 100 <= shoppers <= 1_000_000:
        fail("--per-day must be within 1000..2000000 and --shoppers within 100..1000000")
    return World(WorldConfig(seed=seed, payments_per_day=per_day, shoppers=shoppers))


@app.command()
def replay(
    seed: Seed = 7,
    per_day: PerDay = 30_000,
    shoppers: Shoppers = 4000,
    png: Annotated[Path, typer.Option("--png", help="where to draw the picture")] = Path("docs/img/risk-replay.png"),
    as_json: AsJson = False,
) -> None:
    """Run the synthetic world through the engine (test, then train) against a model frozen after day 1."""
    from liangcao.risk.replay import draw, run, series, summary

    world = _world(seed, per_day, shoppers)
    r = run(world)
    s = series(r)
    table = Table(title=f"risk replay (seed {seed}, {len(r.t):,} payments; shift at hour 24)")
    for col in ("hour", "recall online", "recall frozen", "good stepped up online", "good stepped up frozen"):
        table.add_column(col, justify="right")
    for i, hour in enumerate(s["hours"]):
        table.add_row(
            f"{hour:.0f}",
            f"{s['recall_online'][i]:.2f}",
            f"{s['recall_frozen'][i]:.2f}",
            f"{100 * s['stepup_online'][i]:.1f} %",
            f"{100 * s['stepup_frozen'][i]:.1f} %",
        )
    console.print(table)
    path = draw(r, png)
    out = {**summary(r), "seed": seed, "png": str(path), "replay_s": round(r.wall_s, 1)}
    console.print(f"picture: {path}")
    if as_json:
        console.print(json.dumps(out), soft_wrap=True, markup=False, highlight=False)
    else:
        console.print(out)


@app.command()
def bench(
    rate: Annotated[float, typer.Option("--rate", help="payments per second, open-loop")] = 5000.0,
    seed: Seed = 7,
    per_day: PerDay = 30_000,
    shoppers: Shoppers = 4000,
    as_json: AsJson = False,
) -> None:
    """Pace the world's payments open-loop at ``--rate``: every feature, the rules and the model per payment.

    Latency is from when a payment was due to when its decision returned (falling behind counts: no
    coordinated omission); labels are learned between payments, a bounded few at a time. On a loaded host
    read also ``decide_p99_ms`` (the decision function alone, measured in the process), ``decide_cpu_p99_us``
    and ``cpu_us_per_decision`` (the process's CPU time per payment, learning included).
    """
    from hdrh.histogram import HdrHistogram

    from liangcao.risk.replay import run, summary

    if not 1 <= rate <= 1_000_000:
        fail("--rate must be within 1..1000000 payments per second")
    world = _world(seed, per_day, shoppers)
    gc.collect()
    gc.freeze()  # the world's objects are permanent: keep the collector from walking them mid-run
    capacity = _capacity(world)
    gc.collect()
    gc.freeze()  # after the warm-up (the capacity run): only the run's own objects are walked
    home = Path(tempfile.mkdtemp(prefix="liangcao-risk-bench-"))
    try:
        r = run(world, rate=rate, home=home)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    h = HdrHistogram(1, 60_000_000, 3)
    for us in r.latency_us:
        h.record_value(max(1, us))
    s = summary(r)
    service = HdrHistogram(1, 60_000_000, 3)
    for us in r.service_us:
        service.record_value(max(1, us))
    cpu = HdrHistogram(1, 60_000_000, 3)
    for ns in r.decide_cpu_ns:
        cpu.record_value(max(1, ns // 1000))
    out = {
        "rate_target": rate,
        "decisions": len(r.t),
        "decisions_per_s": round(len(r.t) / r.wall_s, 1),
        "capacity_per_s": capacity,
        "p50_ms": round(h.get_value_at_percentile(50) / 1000, 3),
        "p99_ms": round(h.get_value_at_percentile(99) / 1000, 3),
        "p999_ms": round(h.get_value_at_percentile(99.9) / 1000, 3),
        "max_ms": round(h.get_max_value() / 1000, 3),
        "decide_p50_ms": round(service.get_value_at_percentile(50) / 1000, 3),
        "decide_p99_ms": round(service.get_value_at_percentile(99) / 1000, 3),
        "decide_cpu_p50_us": cpu.get_value_at_percentile(50),
        "decide_cpu_p99_us": cpu.get_value_at_percentile(99),
        "cpu_us_per_decision": round(r.cpu_s / max(1, len(r.t)) * 1e6, 1),
        "gc_pauses": len(r.gc_pauses_ms),
        "gc_pause_max_ms": round(max(r.gc_pauses_ms, default=0.0), 2),
        "recall_online_after_shift": s["recall_online_after_shift"],
        "recall_frozen_after_shift": s["recall_frozen_after_shift"],
        "events_to_recover": s["events_to_recover"],
        "good_stepped_up_online_after_shift": s["good_stepped_up_online_after_shift"],
        "good_stepped_up_frozen_after_shift": s["good_stepped_up_frozen_after_shift"],
        "labels_learned": r.status.get("learned", 0),
        "model_events": s["model_events"],
        "cores": os.cpu_count(),
        "peak_rss_mb": peak_rss_mb(),
        "seed": seed,
    }
    if not as_json:
        table = Table(title=f"risk bench: open-loop at {rate:,.0f}/s on {os.cpu_count()} cores")
        table.add_column("figure")
        table.add_column("value", justify="right")
        for k, v in out.items():
            table.add_row(k, str(v))
        console.print(table)
    else:
        console.print(json.dumps(out), soft_wrap=True, markup=False, highlight=False)


def _capacity(world: Any, n: int = 10_000) -> float:
    """Decisions per second flat out (closed loop, one thread) over the world's first ``n`` payments, each
    decision followed by learning what is due: what the engine can do when nothing waits."""
    import time

    from liangcao.risk.engine import ManualClock, RiskEngine
    from liangcao.risk.replay import replay_config

    payments = [e.payment for e in world.events if e.kind == "pay"][:n]
    clock = ManualClock(payments[0].time_ms)
    engine = RiskEngine(None, clock=clock, config=replay_config())
    began = time.perf_counter()
    for p in payments:
        clock.set(max(clock.ms, p.time_ms))
        engine.decide(p)
        engine.learn()
    return round(len(payments) / (time.perf_counter() - began), 1)


def _engine(home: Path) -> Any:
    from liangcao.risk.engine import RiskEngine

    try:
        return RiskEngine(home)
    except (LiangcaoError, Fault) as exc:
        fail(exc.message)


@app.command()
def decide(home: Home, payment: Annotated[str, typer.Argument(help="the payment as JSON, or @file")]) -> None:
    """Decide one payment through the engine in ``--home`` (and keep its windows: the state is saved)."""
    from liangcao.risk.types import decode_payment

    text = Path(payment[1:]).read_text() if payment.startswith("@") else payment
    engine = _engine(home)
    try:
        d = engine.decide(decode_payment(text))
    except LiangcaoError as exc:
        fail(f"{exc.message} (code {exc.code})")
    finally:
        engine.close()
    console.print(json.dumps(d.to_dict()), soft_wrap=True, markup=False, highlight=False)


@rules_app.command("check")
def rules_check(path: Annotated[Path, typer.Argument(help="a rule-set JSON file")]) -> None:
    """Check a rule set without installing it."""
    from liangcao.risk.rules import parse

    try:
        spec = parse(path.read_bytes())
    except LiangcaoError as exc:
        fail(exc.message)
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    console.print(
        f"ok: {len(spec.rules)} rules, thresholds step_up={spec.thresholds.step_up} block={spec.thresholds.block}"
    )


@rules_app.command("load")
def rules_load(home: Home, path: Annotated[Path, typer.Argument(help="a rule-set JSON file")]) -> None:
    """Install a rule set in ``--home`` (a new version; bad rules are refused and nothing changes)."""
    engine = _engine(home)
    try:
        version = engine.reload_rules(path.read_bytes())
    except LiangcaoError as exc:
        fail(exc.message)
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    finally:
        engine.close()
    console.print(f"rules version {version}")


@rules_app.command("show")
def rules_show(home: Home, version: Annotated[str | None, typer.Option("--version")] = None) -> None:
    """The canonical JSON of the current rule set (or of ``--version``)."""
    engine = _engine(home)
    try:
        console.print(engine.rules_text(version), soft_wrap=True, markup=False, highlight=False)
    except LiangcaoError as exc:
        fail(exc.message)
    finally:
        engine.close()


@app.command()
def status(home: Home) -> None:
    """Counters, table sizes, versions and model events of the engine in ``--home``."""
    engine = _engine(home)
    try:
        console.print(json.dumps(engine.status()), soft_wrap=True, markup=False, highlight=False)
    finally:
        engine.close()


@app.command()
def rollback(home: Home, version: Annotated[str, typer.Argument(help="a kept model version, e.g. m12")]) -> None:
    """Serve (and go on learning from) an earlier model version."""
    engine = _engine(home)
    try:
        engine.rollback_model(version)
    except LiangcaoError as exc:
        fail(exc.message)
    finally:
        engine.close()
    console.print(f"serving model {version}")
