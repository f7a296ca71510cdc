"""``liangcao checkout ...``: the command line of ``liangcao.checkout``, mounted by ``liangcao.cli``.

``start`` runs the gateway (an embedded payments engine in ``HOME/pay``, or PostgreSQL with ``--pg``);
``surge`` runs the midnight surge simulator against real gateway processes (``liangcao.checkout.surge``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(help="checkout", no_args_is_help=True, add_completion=False)
console = Console()
err = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr (never a traceback), then exit ``code``."""
    err.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def _gate(rules: Path | None, no_flow: bool, token_server: str | None, fallback_share: float) -> tuple[Any, Any]:
    """(gate, cluster client) from the command line: (None, None) with --no-flow."""
    from liangcao.checkout.http import default_rules
    from liangcao.flow import FlowError, Gate, rules_from_json

    if no_flow:
        return None, None
    cluster: Any = None
    try:
        if token_server is not None:
            from liangcao.flow.cluster import ClusterClient

            host_, _, port_ = token_server.rpartition(":")
            if not host_ or not port_.isdigit():
                fail(f"--token-server {token_server!r}: give HOST:PORT")
            cluster = ClusterClient(host_, int(port_), fallback_share=fallback_share).start()
        return Gate(rules_from_json(rules.read_bytes()) if rules else default_rules(), cluster=cluster), cluster
    except (OSError, FlowError) as exc:
        if cluster is not None:
            cluster.close()
        fail(f"{rules or 'rules'}: {exc}")


@app.command("start")
def start_cmd(
    home: Annotated[Path, typer.Option("--home", help="the gateway's folder (orders; the engine in HOME/pay)")],
    port: Annotated[int, typer.Option("--port")] = 8290,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    pg: Annotated[str | None, typer.Option("--pg", help="a PostgreSQL DSN for the payments core")] = None,
    fee_bps: Annotated[int, typer.Option("--fee-bps", help="platform fee, basis points of the amount")] = 60,
    auto_confirm_s: Annotated[
        int, typer.Option("--auto-confirm-s", help="seconds after payment until auto-confirmation")
    ] = 10 * 24 * 3600,
    rules: Annotated[Path | None, typer.Option("--rules", help="flow-control rules (JSON); default: built in")] = None,
    no_flow: Annotated[bool, typer.Option("--no-flow", help="no flow control (for comparison only)")] = False,
    sync_full: Annotated[bool, typer.Option("--sync-full", help="fsync the order store on every commit")] = False,
    server: Annotated[str, typer.Option("--server", help="fast (liangcao.checkout.server) or uvicorn")] = "fast",
    risk_home: Annotated[
        Path | None, typer.Option("--risk-home", help="decide every payment with the risk engine in this folder")
    ] = None,
    rp_id: Annotated[str | None, typer.Option("--rp-id", help="passkey step-up: the relying party id")] = None,
    origin: Annotated[str | None, typer.Option("--origin", help="passkey step-up: the site's origin")] = None,
    confirm_every_payment: Annotated[
        bool, typer.Option("--confirm-every-payment", help="step up every payment (needs --rp-id and --origin)")
    ] = False,
    token_server: Annotated[
        str | None,
        typer.Option("--token-server", help="HOST:PORT of a flow token server: 'cluster' rules are global"),
    ] = None,
    fallback_share: Annotated[
        float, typer.Option("--fallback-share", help="share of a global rate used locally while it is unreachable")
    ] = 0.5,
    credit_db: Annotated[
        Path | None,
        typer.Option(
            "--credit-db", help="offer installments (3, 6, 12 periods) with the credit service's records here"
        ),
    ] = None,
    installment_fee_payer: Annotated[
        str, typer.Option("--installment-fee-payer", help="who pays the installment fee: shopper or merchant")
    ] = "shopper",
    edge: Annotated[
        bool,
        typer.Option(
            "--edge",
            help="two processes: an edge (HTTP, flow control, refusals) in front of the application process",
        ),
    ] = False,
    unix: Annotated[
        str | None, typer.Option("--unix", help="listen on this Unix socket (the application process of an edge)")
    ] = None,
    app_nice: Annotated[
        int,
        typer.Option(
            "--app-nice",
            min=0,
            max=19,
            help="with --edge: the application process's niceness (above 0: the edge answers first under overload)",
        ),
    ] = 0,
    edge_realtime: Annotated[
        bool,
        typer.Option(
            "--edge-realtime",
            help="with --edge: the edge's event loop in the real-time class (SCHED_FIFO; needs CAP_SYS_NICE), so a "
            "refusal is answered the moment it arrives even when the application process fills the cores",
        ),
    ] = False,
) -> None:
    """Run the checkout gateway (the checkout page is at /checkout/{order_id})."""
    if edge:
        if server != "fast" or unix is not None:
            fail("--edge runs the fast server on TCP (no --server uvicorn, no --unix)")
        passed: list[str] = ["--fee-bps", str(fee_bps), "--auto-confirm-s", str(auto_confirm_s)]
        passed += ["--installment-fee-payer", installment_fee_payer]
        for flag, value in (
            ("--pg", pg),
            ("--risk-home", risk_home),
            ("--rp-id", rp_id),
            ("--origin", origin),
            ("--credit-db", credit_db),
        ):
            if value is not None:
                passed += [flag, str(value)]
        passed += ["--sync-full"] * sync_full + ["--confirm-every-payment"] * confirm_every_payment
        _run_edge(home, host, port, passed, rules, no_flow, token_server, fallback_share, app_nice, edge_realtime)
        return
    if edge_realtime:
        fail("--edge-realtime is for --edge (the edge process only; the application stays in the normal class)")
    import gc

    import uvicorn

    from liangcao.checkout.http import create_app
    from liangcao.checkout.money import Serialized
    from liangcao.checkout.service import Checkout
    from liangcao.errors import LiangcaoError, StoreError

    if server not in ("fast", "uvicorn"):
        fail(f"--server {server!r}: fast or uvicorn")
    gate, cluster = _gate(rules, no_flow, token_server, fallback_share)
    backend: Any
    try:
        if pg:
            from liangcao.payments.postgres import PostgresBackend

            backend = Serialized(PostgresBackend(pg))
        else:
            from liangcao.payments import Engine

            backend = Engine(home / "pay")
    except (LiangcaoError, StoreError) as exc:
        fail(exc.message)
    from liangcao.checkout.guards import GuardChain
    from liangcao.checkout.plugins import PasskeyStepUp, risk_guard

    if installment_fee_payer not in ("shopper", "merchant"):
        fail(f"--installment-fee-payer {installment_fee_payer!r}: shopper or merchant")
    if (rp_id is None) != (origin is None):
        fail("passkey step-up needs both --rp-id and --origin")
    if confirm_every_payment and rp_id is None:
        fail("--confirm-every-payment needs --rp-id and --origin (the relying party that confirms)")
    closers: list[Any] = []
    guards = GuardChain()
    routers: list[Any] = []
    try:
        if risk_home is not None:
            from liangcao.risk.engine import RiskEngine

            engine = RiskEngine(risk_home)
            closers.append(engine)
            guards.guards.append(risk_guard(engine))
        if rp_id is not None and origin is not None:
            from liangcao.authn import RelyingParty
            from liangcao.authn.http import router as authn_router

            rp = RelyingParty(rp_id, origin, home / "authn")
            closers.append(rp)
            guards.step_up = PasskeyStepUp(rp)
            if confirm_every_payment:
                from liangcao.checkout.plugins import ConfirmEveryPayment

                guards.guards.append(ConfirmEveryPayment())
            from liangcao.checkout.http import session_shopper

            routers.append(authn_router(rp, shopper_of=session_shopper))  # a shopper's devices: theirs only
        methods: list[Any] = []
        if credit_db is not None:
            from liangcao.checkout.plugins import InstallmentsMethod
            from liangcao.credit import CreditService

            credit = CreditService(backend, credit_db)
            closers.append(credit)
            methods = [InstallmentsMethod(credit, n, installment_fee_payer) for n in (3, 6, 12)]
        co = Checkout(
            home,
            backend,
            fee_bps=fee_bps,
            auto_confirm_s=auto_confirm_s,
            sync_full=sync_full,
            guards=guards,
            methods=methods,
        )
    except (LiangcaoError, StoreError, OSError) as exc:
        backend.close()
        fail(getattr(exc, "message", str(exc)))
    from liangcao.checkout.page import router as page_router

    routers.append(page_router(co))
    gc.collect()
    gc.freeze()
    where = "PostgreSQL" if pg else f"engine in {home / 'pay'}"
    flow = "off" if gate is None else "on"
    from liangcao.checkout.http import operator_token

    operator = operator_token(home) if gate is not None else None
    at = f"unix:{unix}" if unix is not None else f"http://{host}:{port}"
    console.print(f"checkout gateway on {at} ({where}; flow control {flow})", soft_wrap=True)
    try:
        if server == "uvicorn":
            uvicorn.run(
                create_app(co, gate, routers=routers, operator=operator),
                host=host,
                port=port,
                log_level="warning",
                access_log=False,
            )
        else:
            from liangcao.checkout.http import classifier
            from liangcao.checkout.identity import Identity, session_key
            from liangcao.checkout.server import Server

            # The server asks the gate before it makes an ASGI call: a refusal costs a parse and a write. The
            # caller is checked first (a MAC, microseconds): a request without a good session is classed
            # "unauthenticated" and shed on its own small limit, never in paying's slots.
            Server(
                create_app(co, gate, middleware=False, routers=routers, operator=operator),
                host,
                port,
                gate=gate,
                classify=classifier(Identity(session_key(home), operator_token(home)), gate),
                unix=unix,
            ).run()
    finally:
        co.close()
        for c in closers:
            c.close()
        backend.close()
        if cluster is not None:
            cluster.close()


def _run_edge(
    home: Path,
    host: str,
    port: int,
    passed: list[str],
    rules: Path | None,
    no_flow: bool,
    token_server: str | None,
    fallback_share: float,
    app_nice: int = 0,
    realtime: bool = False,
) -> None:
    """The edge: start the application process on a Unix socket in ``home``, then serve HTTP in front of it
    (flow control here; admitted requests relayed). The application process dies with the edge.

    ``app_nice``: the application process runs that much nicer than the edge, so that when the cores are
    short the scheduler runs the edge first: a refusal is answered at once and paying takes what is left,
    which is the order flow control promises (refuse fast, then pay).

    ``realtime``: the edge's event loop thread runs in the real-time class (see :func:`_realtime`)."""
    import gc
    import os
    import signal
    import socket
    import subprocess
    import sys
    import threading
    import time

    from liangcao.checkout.http import classifier, operator_token
    from liangcao.checkout.identity import Identity, session_key
    from liangcao.checkout.server import Server, Upstream
    from liangcao.procs import die_with_parent, stop_process

    home.mkdir(parents=True, exist_ok=True)
    sock = home / "app.sock"
    with contextlib.suppress(FileNotFoundError):
        sock.unlink()  # a socket left by a killed run
    gate, cluster = _gate(rules, no_flow, token_server, fallback_share)
    cmd = [sys.executable, "-m", "liangcao.cli", "checkout", "start", "--home", str(home), "--unix", str(sock)]
    dies = die_with_parent(signal.SIGKILL)

    def setup() -> None:
        dies()
        if app_nice:
            os.nice(app_nice)

    child = subprocess.Popen([*cmd, "--no-flow", *passed], preexec_fn=setup)
    try:
        deadline = time.monotonic() + 120
        while True:
            if child.poll() is not None:
                fail(f"the application process exited ({child.returncode}) before it served")
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as probe:
                probe.connect(str(sock))
                break
            if time.monotonic() > deadline:
                fail("the application process did not start in time")
            time.sleep(0.05)
        from fastapi import FastAPI, Request, Response
        from fastapi.responses import JSONResponse
        from starlette.exceptions import HTTPException as StarletteHTTPException

        from liangcao.checkout.codes import CheckoutCode, CheckoutError
        from liangcao.checkout.http import operator_only, operator_token
        from liangcao.flow.asgi import flow_router

        own = FastAPI(title="liangcao checkout edge")
        if gate is not None:
            own.include_router(flow_router(gate, write=operator_only(operator_token(home))))

        @own.exception_handler(CheckoutError)
        async def _refused(_: Request, exc: CheckoutError) -> Response:
            return JSONResponse(exc.body(), exc.status)

        @own.exception_handler(StarletteHTTPException)
        async def _coded(_: Request, exc: StarletteHTTPException) -> Response:
            # as the application answers: a stable code, never FastAPI's bare {"detail": ...}
            code = {404: CheckoutCode.ROUTE_NOT_FOUND, 405: CheckoutCode.METHOD_NOT_ALLOWED}
            e = CheckoutError(code.get(exc.status_code, CheckoutCode.BAD_REQUEST), str(exc.detail))
            return JSONResponse(e.body(), e.status)

        # As in the application process: what was imported is never collected, so the collector's full
        # passes (tens of milliseconds over the imported modules) do not stall the refusals.
        gc.collect()
        gc.freeze()
        flow = "off" if gate is None else "on"
        console.print(
            f"checkout edge on http://{host}:{port} (application process {child.pid}; flow control {flow})",
            soft_wrap=True,
        )
        if realtime:
            _realtime()
        lost = threading.Event()
        # the caller checked before the gate (see classifier): the edge and its application share the folder's key
        check = classifier(Identity(session_key(home), operator_token(home)), gate)
        edge = Server(own, host, port, gate=gate, classify=check, upstream=Upstream(str(sock)))

        def watch() -> None:
            # The pair lives and dies together: an edge without its application could only answer 503, so it
            # stops (non-zero exit) and whatever supervises it starts both again. A child stopped as asked
            # (Ctrl-C or SIGTERM to the process group: the edge was asked too) is not a loss; a child stopped
            # on its own, even cleanly (a SIGTERM to it alone), is.
            rc = child.wait()
            if rc in (0, -signal.SIGINT, -signal.SIGTERM):
                deadline = time.monotonic() + 1.0  # the same signal reaching the edge
                while not edge.stopping and time.monotonic() < deadline:
                    time.sleep(0.02)
            if rc not in (0, -signal.SIGINT, -signal.SIGTERM) or not edge.stopping:
                lost.set()
                os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, name="edge-watch", daemon=True).start()
        edge.run()
        if lost.is_set():
            fail(f"the application process exited ({child.returncode}): the edge stopped with it")
    finally:
        stop_process(child)
        if cluster is not None:
            cluster.close()


def _realtime() -> None:
    """Put the calling thread (the edge's event loop) in the real-time class, SCHED_FIFO at its lowest priority.

    Why: on a machine whose cores the application process fills, the normal scheduler lets a woken edge wait
    behind it for a time slice (milliseconds), and niceness did not change that measurably (docs/benchmarks.md);
    a real-time thread runs as soon as it is woken. The edge does little per request (parse, ask the gate,
    answer or relay), so it cannot starve the application: it takes what refusing costs and the application
    gets the rest, the order flow control promises. The kernel's real-time throttling (95 % of each second by
    default) still bounds a runaway loop. Only this thread: the application process was started before, and
    ``SCHED_RESET_ON_FORK`` keeps anything it might start in the normal class."""
    import os

    try:
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(1))
    except (PermissionError, OSError) as exc:
        console.print(f"[yellow]--edge-realtime: the edge stays in the normal class ({exc.strerror})[/yellow]")


@app.command("token")
def token_cmd(
    home: Annotated[Path, typer.Option("--home", help="the gateway's folder (its session key: HOME/session.key)")],
    shopper: Annotated[str | None, typer.Option("--shopper", help="a session of this shopper (buyer)")] = None,
    merchant: Annotated[str | None, typer.Option("--merchant", help="a session of this merchant")] = None,
    operator: Annotated[str | None, typer.Option("--operator", help="an operator session under this name")] = None,
    ttl_s: Annotated[int, typer.Option("--ttl-s", help="seconds the session is good for")] = 3600,
) -> None:
    """Issue a session token (printed alone on stdout): ``Authorization: Bearer <token>`` at the gateway."""
    from liangcao.checkout.codes import CheckoutError
    from liangcao.checkout.identity import session_key

    chosen = [(r, s) for r, s in (("shopper", shopper), ("merchant", merchant), ("operator", operator)) if s]
    if len(chosen) != 1:
        fail("give exactly one of --shopper, --merchant, --operator")
    try:
        token, _ = session_key(home).issue(chosen[0][0], chosen[0][1], ttl_s)
    except CheckoutError as exc:
        fail(exc.message)
    except (OSError, ValueError) as exc:
        fail(str(exc))
    print(token)


@app.command("surge")
def surge_cmd(
    seconds: Annotated[float, typer.Option("--seconds", help="length of the 10x midnight phase")] = 6.0,
    workers: Annotated[int, typer.Option("--workers", help="load-generator processes")] = 2,
    timeout_s: Annotated[float, typer.Option("--timeout-s", help="a request unanswered this long is lost")] = 2.0,
    capacity: Annotated[
        float, typer.Option("--capacity", help="paid orders/s to take as capacity (0: measure it)")
    ] = 0.0,
    png: Annotated[
        Path | None,
        typer.Option(
            "--png",
            help="where the picture goes (default docs/img/checkout-surge.png, -confirm.png with confirmation)",
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="the last line is one JSON object")] = False,
    confirm_every_payment: Annotated[
        bool,
        typer.Option(
            "--confirm-every-payment",
            help="the gateway steps up every payment; the shoppers confirm each with a passkey (ES256)",
        ),
    ] = False,
    generator: Annotated[
        str,
        typer.Option("--generator", help="load generator: c (compiled with cc), python, or auto (c when cc is there)"),
    ] = "auto",
    generator_class: Annotated[
        str,
        typer.Option(
            "--generator-class",
            help="the compiled generators' scheduling class: realtime (SCHED_FIFO, as the edge; needs "
            "CAP_SYS_NICE, else normal) or normal",
        ),
    ] = "realtime",
) -> None:
    """The midnight surge: open-loop load to 10x capacity, with and without flow control (real processes)."""
    import json
    import signal

    from liangcao.checkout import surge

    if generator not in ("c", "python", "auto"):
        fail(f"--generator {generator!r}: c, python or auto")
    if generator_class not in ("realtime", "normal"):
        fail(f"--generator-class {generator_class!r}: realtime or normal")

    if not 0 < seconds <= 600 or not 1 <= workers <= surge.workers_max or not 0 < timeout_s <= 60:
        fail(f"--seconds 0..600, --workers 1..{surge.workers_max}, --timeout-s 0..60")

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # unwind: every run's finally stops its gateway and generators

    if png is None:
        png = Path("docs/img/checkout-surge-confirm.png" if confirm_every_payment else "docs/img/checkout-surge.png")
    signal.signal(signal.SIGTERM, on_term)
    say = err.print if as_json else console.print
    cap = (capacity, capacity / surge.PAY_SHARE) if capacity > 0 else None
    try:
        result = surge.run_surge(
            seconds=seconds,
            workers=workers,
            timeout_s=timeout_s,
            seed=seed,
            png=png,
            capacity=cap,
            say=say,
            confirm=confirm_every_payment,
            generator=generator,
            generator_realtime=generator_class == "realtime",
        )
    except KeyboardInterrupt:
        fail("interrupted: every process of the run was stopped", 130)
    except (RuntimeError, TimeoutError, OSError) as exc:
        fail(str(exc))
    w, n = result["with_flow"], result["without_flow"]
    confirmed = " (every payment confirmed with a passkey)" if confirm_every_payment else ""
    say(
        f"capacity {result['capacity_per_s']:,.0f} paid/s{confirmed}; at 10x with flow control: goodput "
        f"{w['goodput_ratio']:.2f} of capacity, priority p99 {w['p99_ms_priority']:,.1f} ms, shed p99 "
        f"{w['shed_p99_ms']:,.1f} ms; without: goodput {n['goodput_ratio']:.2f}, {n['timeouts_at_10x']:,} timeouts "
        f"({result['cores']} cores, gateway peak RSS {result['gateway_peak_rss_mb']:,.0f} MiB, the generators sent "
        f"up to {result['sender_lag_p99_ms']:,.0f} ms late at p99; picture {png})"
    )
    if as_json:
        print(json.dumps(result))


@app.command("bench")
def bench_cmd(
    n: Annotated[int, typer.Option("--n", help="checkouts of each kind (plain and installments)")] = 1000,
    clients: Annotated[int, typer.Option("--clients", help="concurrent HTTP clients")] = 16,
    seed: Annotated[int, typer.Option("--seed")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="the last line is one JSON object")] = False,
) -> None:
    """Installment checkouts/s next to plain checkouts/s, interleaved in one run through a real gateway."""
    import json
    import signal

    from liangcao.checkout import bench

    if not 1 <= n <= bench.checkouts_max or not 1 <= clients <= bench.clients_max:
        fail(f"--n 1..{bench.checkouts_max}, --clients 1..{bench.clients_max}")

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # unwind: the run's finally stops the gateway

    signal.signal(signal.SIGTERM, on_term)
    say = err.print if as_json else console.print
    try:
        r = bench.run_bench(n=n, clients=clients, seed=seed, say=say)
    except KeyboardInterrupt:
        fail("interrupted: the gateway was stopped", 130)
    except (RuntimeError, TimeoutError, OSError) as exc:
        fail(str(exc))
    say(
        f"plain {r['plain_checkouts_per_s']:,.1f} checkouts/s (p50 {r['plain_p50_ms']} ms, p99 {r['plain_p99_ms']} ms)"
        f"; installments {r['installment_checkouts_per_s']:,.1f} checkouts/s (p50 {r['installment_p50_ms']} ms, "
        f"p99 {r['installment_p99_ms']} ms); together {r['checkouts_per_s']:,.1f}/s over {r['wall_s']} s; "
        f"{r['failed']} failed, {r['shed_retries']} shed and retried, {r['plans_recorded']} plans recorded "
        f"({r['cores']} cores, peak RSS gateway {r['gateway_peak_rss_mb']:,.0f} MiB + driver "
        f"{r['driver_peak_rss_mb']:,.0f} MiB)"
    )
    if as_json:
        print(json.dumps(r))
    if r["failed"] or r["plans_recorded"] != r["installment_done"]:
        raise typer.Exit(1)
