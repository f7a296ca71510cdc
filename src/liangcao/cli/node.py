"""``liangcao node``: run a node from its folder (``start``), or rebuild its state from its blocks."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from liangcao.cli.common import NODE_DIR, Home, NodeDir, console, fail, open_home
from liangcao.errors import LiangcaoError

app = typer.Typer(help="Run a node.", no_args_is_help=True)


@app.command("start")
def node_start(
    home: Home,
    host: Annotated[str | None, typer.Option(help="listen address (default from node.json)")] = None,
    port: Annotated[int | None, typer.Option(help="listen port (default from node.json)")] = None,
    block_txs_max: Annotated[int | None, typer.Option(help="cut a block at this many transactions")] = None,
    block_wait_ms: Annotated[int | None, typer.Option(help="or when the oldest pending is this old")] = None,
    verify_workers: Annotated[int | None, typer.Option(help="signature-checking processes (default: cores)")] = None,
    node_dir: NodeDir = NODE_DIR,
    nats: Annotated[
        str | None,
        typer.Option("--nats", help="comma-separated NATS server URLs of the consortium's JetStream cluster"),
    ] = None,
    custody: Annotated[
        bool | None,
        typer.Option(
            "--custody/--no-custody",
            help="let the node sign EPCIS captures as a member with that member's key from the network folder, "
            "for a write token (default from node.json: off)",
        ),
    ] = None,
) -> None:
    """Run the node in the foreground; SIGINT/SIGTERM stop it after committing what it admitted.

    With --nats (or "nats" in node.json) it orders through the consortium's JetStream cluster.
    Without --custody (or "custody": true in node.json) the node holds no member's key: members sign."""
    from liangcao.api.server import Server

    h = open_home(home, node_dir)
    urls = [u.strip() for u in nats.split(",") if u.strip()] if nats else None
    try:
        node = h.node(
            block_txs_max=block_txs_max, block_wait_ms=block_wait_ms, verify_workers=verify_workers, nats=urls
        )
    except (LiangcaoError, ValueError, RuntimeError, TimeoutError) as exc:
        fail(getattr(exc, "message", str(exc)))
    bind_host = host or str(h.config["host"])
    bind_port = port or int(h.config["port"])
    head = node.head
    console.print(
        f"liangcao node for {h.config['org']}: chain {head.chain_id} at height {head.height}, serving http://{bind_host}:{bind_port}"
    )
    sys.stdout.flush()
    custody_root = h.custody_root(custody)
    if custody_root is not None:
        console.print(f"custody on: signs captures for write tokens with member keys under {custody_root}/orgs")
    Server(node, h.auth(), bind_host, bind_port, custody=custody_root).run()
    console.print("node stopped cleanly")


@app.command("rebuild")
def node_rebuild(home: Home) -> None:
    """Re-derive state and indexes from the stored blocks alone (the node must be stopped)."""
    from liangcao.apps.bundle import default_registry
    from liangcao.contracts.runtime import ContractRuntime
    from liangcao.ledger.chain import Ledger

    h = open_home(home)
    ledger = Ledger.open(h.store_path, ContractRuntime(default_registry()))
    try:
        n = ledger.rebuild()
    except LiangcaoError as exc:
        fail(exc.message)
    finally:
        ledger.close()
    console.print(f"rebuilt state and indexes from {n} blocks")
