"""``liangcao node``: run a node from its folder (``start``), or rebuild its state from its blocks."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from liangcao.cli.common import NODE_DIR, Home, NodeDir, console, fail, open_home
from liangcao.errors import LiangcaoError

if TYPE_CHECKING:
    from liangcao.node.home import NodeHome

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
    check_store: Annotated[
        str | None,
        typer.Option(
            "--check-store",
            help="what is checked against the chain before serving: state (default: the recent blocks and every "
            "state row), recent (the last blocks only) or off",
        ),
    ] = None,
    full_audit: Annotated[
        bool, typer.Option("--audit", help="audit the whole store from genesis first; refuse to start on findings")
    ] = False,
) -> None:
    """Run the node in the foreground; SIGINT/SIGTERM stop it after committing what it admitted.

    With --nats (or "nats" in node.json) it orders through the consortium's JetStream cluster.
    Without --custody (or "custody": true in node.json) the node holds no member's key: members sign.
    The store is checked against its chain before the node serves it (docs/operations.md)."""
    from liangcao.api.server import Server
    from liangcao.procs import settle_heap

    h = open_home(home, node_dir)
    urls = [u.strip() for u in nats.split(",") if u.strip()] if nats else None
    if full_audit:
        _audit_before_start(h)
    try:
        node = h.node(
            block_txs_max=block_txs_max,
            block_wait_ms=block_wait_ms,
            verify_workers=verify_workers,
            nats=urls,
            store_check=check_store,
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
    server = Server(node, h.auth(), bind_host, bind_port, custody=custody_root)
    settle_heap()  # the node, its store's caches and the application live as long as the process
    server.run()
    console.print("node stopped cleanly")


def _audit_before_start(h: NodeHome) -> None:
    from liangcao.apps.bundle import default_registry
    from liangcao.contracts.runtime import ContractRuntime
    from liangcao.node.audit import audit

    if not h.store_path.exists():
        return  # a new store: nothing to audit
    console.print(f"auditing {h.store_path} from genesis…")
    report = audit(h.store_path, lambda: ContractRuntime(default_registry()), genesis_hash=h.genesis().hash)
    if not report.ok:
        for f in report.findings[:20]:
            console.print(f"  {f}")
        fail(f"the store has {len(report.findings)} findings: not started ('liangcao audit' lists them all)")
    console.print(f"audit: {report.blocks} blocks, {report.txs} transactions, no findings")


@app.command("clear-forks")
def node_clear_forks(
    home: Home,
    node_dir: NodeDir = NODE_DIR,
    url: Annotated[str | None, typer.Option(help="the node's API (default from node.json)")] = None,
) -> None:
    """Clear a running node's fork alarms once the fork is resolved (docs/operations.md, "Resolving a fork
    alarm"); the cleared alarms are remembered, so reading the stream again does not raise them again."""
    import httpx

    from liangcao.tokens import WRITE

    h = open_home(home, node_dir)
    org = str(h.config["org"]) if h.config.get("org") else "org1"
    token = h.auth().create(f"{org}/admin", 1, scope=WRITE)
    base = url or h.url
    try:
        listed = httpx.get(f"{base}/v1/fork-alarms", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        r = httpx.post(f"{base}/v1/fork-alarms/clear", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    except httpx.HTTPError as exc:
        fail(f"cannot reach the node at {base}: {exc}")
    if r.status_code != 200:
        fail(f"the node refused: {r.status_code} {r.text[:300]}")
    members = sorted({a["member"] for a in listed.json().get("alarms", [])}) if listed.status_code == 200 else []
    console.print(f"cleared {r.json()['cleared']} fork alarms" + (f" (about {', '.join(members)})" if members else ""))


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
