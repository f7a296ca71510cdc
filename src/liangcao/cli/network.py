"""``liangcao network``: create a network folder, and run a local consortium (``init``, ``up``, ``status``,
``add-org``, ``down``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from liangcao.cli.common import AsJson, Home, console, fail

app = typer.Typer(help="Create and inspect a local network.", no_args_is_help=True)


@app.command("init")
def network_init(
    out: Annotated[Path, typer.Option("--out", help="folder to create")],
    orgs: Annotated[int, typer.Option("--orgs", min=1, max=64, help="number of organisations")] = 3,
    chain_id: Annotated[str, typer.Option("--chain-id")] = "liangcao-local",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 7800,
    org_types: Annotated[
        str | None,
        typer.Option(
            "--org-types", help="comma-separated type of each organisation, e.g. core_enterprise,supplier,bank"
        ),
    ] = None,
) -> None:
    """Keys, certificates, genesis and node configuration for ORGS organisations."""
    from liangcao.crypto.identity import ORG_TYPES
    from liangcao.node.home import init_network

    types = [t.strip() for t in org_types.split(",")] if org_types else None
    if types is not None:
        unknown = sorted(set(types) - set(ORG_TYPES))
        if unknown:
            fail(f"unknown organisation types {', '.join(unknown)}; known: {', '.join(sorted(ORG_TYPES))}")
        if len(types) != orgs:
            fail(f"--org-types names {len(types)} types for {orgs} organisations")
    try:
        c = init_network(out, orgs, chain_id=chain_id, port=port, org_types=types)
    except FileExistsError as exc:
        fail(str(exc))
    console.print(f"Created {orgs} organisations in {out} (chain {c.chain_id}, genesis {c.genesis.hash[:16]}…)")
    for o in c.orgs:
        console.print(f"  {o.org_id:6s} {o.org_type:16s} members: {', '.join(o.members)}")
    console.print(f"Start the node with: liangcao node start --home {out}")


@app.command("up")
def network_up(
    home: Home,
    orgs: Annotated[int, typer.Option("--orgs", min=1, max=16, help="organisations (for a new network)")] = 3,
    block_txs_max: Annotated[int, typer.Option(help="orderers cut at this many transactions")] = 1000,
    block_wait_ms: Annotated[int, typer.Option(help="or when the oldest pending is this old")] = 20,
) -> None:
    """Start a local consortium: one nats-server (JetStream cluster) and one node per organisation."""
    from liangcao import network

    try:
        state = network.up(home, orgs, block_txs_max=block_txs_max, block_wait_ms=block_wait_ms)
    except (RuntimeError, OSError, ValueError) as exc:
        fail(str(exc))
    for o in state["orgs"]:
        console.print(f"  {o['org']:6s} node http://127.0.0.1:{o['port']}  nats 127.0.0.1:{o['nats_port']}")
    console.print(f"Consortium up in {home}; 'liangcao network status --home {home}', 'network down' to stop.")


@app.command("status")
def network_status(home: Home, as_json: AsJson = False) -> None:
    """Each organisation's node and server: up or down, height, head, finality, lag, fork alarms, and what is
    wrong. Exit 1 if any node is not ok (degraded, fork, failed, unreachable) or any server is down."""
    from rich.table import Table

    from liangcao import network

    try:
        rows = network.status(home)
    except FileNotFoundError as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps(rows))
    else:
        table = Table("org", "node", "nats", "height", "head", "final up to", "lag", "status", "fork alarms", "url")
        for r in rows:
            head = (r["block_hash"] or "")[:16]
            table.add_row(
                r["org"],
                r["node"],
                r["nats"],
                str(r["height"]),
                head,
                _opt(r.get("final_upto")),
                _opt(r.get("lag_blocks")),
                r["status"],
                str(r["forks"]),
                r["url"],
            )
        console.print(table)
        for r in rows:
            for problem in r.get("problems") or []:
                console.print(f"  {r['org']}: {problem}")
    if any(r["status"] != "ok" or r["nats"] == "down" for r in rows):
        raise typer.Exit(1)


def _opt(v: object) -> str:
    return "-" if v is None else str(v)


@app.command("add-org")
def network_add_org(
    home: Home,
    org_type: Annotated[str, typer.Option("--type", help="the new organisation's type")] = "logistics",
) -> None:
    """Admit a new organisation by a majority of admins and start its node; it catches up from the stream."""
    from liangcao import network
    from liangcao.crypto.identity import ORG_TYPES

    if org_type not in ORG_TYPES:
        fail(f"unknown organisation type {org_type}; known: {', '.join(sorted(ORG_TYPES))}")
    try:
        receipt = network.add_org(home, org_type)
    except (RuntimeError, OSError, FileNotFoundError) as exc:
        fail(str(exc))
    console.print(f"admitted in tx {receipt.get('tx_id', '')[:16]}…; its node is up and catching up")


@app.command("down")
def network_down(home: Home) -> None:
    """Stop the local consortium: nodes first (each commits what it admitted), then the servers."""
    from liangcao import network

    try:
        network.down(home)
    except FileNotFoundError as exc:
        fail(str(exc))
    console.print("consortium stopped")
