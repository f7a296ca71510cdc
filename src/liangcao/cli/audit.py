"""``liangcao audit``: re-verify a ledger from genesis, with evidence from outside the store.

The genesis is pinned from a network folder's ``genesis.json`` (and/or ``--genesis-hash``). A store rolled
back consistently is found only with evidence from elsewhere: ``--expect-head``, or the network's
attestations (``--nats``: the chain's JetStream attestation stream; ``--attestations``: a file) of this
node's peer above the store's head.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from liangcao.cli.common import NODE_DIR, AsJson, NodeDir, console, err, fail, open_home
from liangcao.errors import LiangcaoError


def audit_cmd(
    home: Annotated[Path | None, typer.Option("--home", help="network folder (pins the genesis and the peer)")] = None,
    db: Annotated[Path | None, typer.Option("--db", help="or a ledger database file")] = None,
    as_json: AsJson = False,
    node_dir: NodeDir = NODE_DIR,
    genesis_hash: Annotated[
        str | None, typer.Option("--genesis-hash", help="the chain's genesis block hash, from outside this disk")
    ] = None,
    expect_head: Annotated[
        str | None, typer.Option("--expect-head", help="HEIGHT[:BLOCK_HASH] the store must hold (recorded elsewhere)")
    ] = None,
    peer: Annotated[
        str | None, typer.Option("--peer", help="this node's peer, e.g. org2/peer0 (default: the home's)")
    ] = None,
    attestations: Annotated[
        Path | None, typer.Option("--attestations", help="a JSON file of attestations held outside this store")
    ] = None,
    nats: Annotated[
        str | None,
        typer.Option("--nats", help="read the chain's attestation stream from these NATS URLs (comma-separated)"),
    ] = None,
) -> None:
    """Re-verify a ledger from genesis. Exit 1 and name each place if anything was altered.

    The genesis is pinned from --home's genesis.json (and/or --genesis-hash). A store rolled back
    consistently is found only with evidence from elsewhere: --expect-head, or the network's attestations
    (--nats, --attestations) of this node's peer above the store's head."""
    from liangcao.apps.bundle import default_registry
    from liangcao.contracts.runtime import ContractRuntime
    from liangcao.node.audit import audit

    h = open_home(home, node_dir) if home is not None else None
    if db is None:
        if h is None:
            fail("give --home DIR or --db FILE")
        db = h.store_path
    pin = genesis_hash.strip().lower() if genesis_hash else None
    if h is not None:
        pin = home_genesis_pin(h, pin)
        peer = peer or home_peer(h)
    head = expected_head(expect_head) if expect_head else None
    evidence: list[Any] = attestations_file(attestations) if attestations else []
    if nats:
        chain_id = h.chain_id() if h is not None else store_chain_id(db)
        evidence += network_attestations([u.strip() for u in nats.split(",") if u.strip()], chain_id)
    with Progress(
        TextColumn("audit"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=True
    ) as bar:
        task = bar.add_task("blocks", total=None)
        report = audit(
            db,
            lambda: ContractRuntime(default_registry()),
            lambda done, total: bar.update(task, completed=done, total=total),
            genesis_hash=pin,
            expect_head=head,
            peer=peer,
            evidence=evidence,
        )
    if as_json:
        print(
            json.dumps(
                {
                    "ok": report.ok,
                    "blocks": report.blocks,
                    "txs": report.txs,
                    "head": report.head,
                    "genesis_hash": report.genesis_hash,
                    "genesis_pinned": report.genesis_pinned,
                    "notes": report.notes,
                    "findings": [{"table": f.table, "place": f.place, "message": f.message} for f in report.findings],
                }
            )
        )
    for note in report.notes:
        err.print(f"[yellow]note:[/] {note}")
    if not report.genesis_pinned:
        err.print(
            f"[yellow]note:[/] genesis not pinned (give --home or --genesis-hash): this store's genesis is "
            f"{report.genesis_hash or 'missing'}; compare it with the consortium's"
        )
    if report.ok:
        console.print(
            f"[green]audit passed[/]: {report.blocks} blocks, {report.txs} transactions, every hash, signature and state hash verified"
        )
        return
    for f in report.findings[:50]:
        err.print(f"[red]ALTERED[/] {f}")
    if len(report.findings) > 50:
        err.print(f"... and {len(report.findings) - 50} more findings")
    raise typer.Exit(1)


def home_genesis_pin(h: Any, given: str | None) -> str:
    """The genesis hash a network folder pins (genesis.json, which consortium.json must agree with)."""
    try:
        pinned = str(h.genesis().hash)
        listed = json.loads((h.root / "consortium.json").read_text()).get("genesis_hash")
    except (OSError, ValueError, LiangcaoError) as exc:
        fail(f"cannot read the network folder's genesis: {exc}")
    if listed is not None and listed != pinned:
        fail(f"{h.root}: genesis.json hashes to {pinned}, consortium.json says {listed}")
    if given is not None and given != pinned:
        fail(f"--genesis-hash {given} is not the network folder's genesis {pinned}")
    return pinned


def home_peer(h: Any) -> str | None:
    """The member id of the peer a node folder runs as, or None if its certificate cannot be read."""
    from liangcao.crypto import identity

    try:
        pem = (h.root / str(h.config["peer"]) / "cert.pem").read_bytes()
        return identity.parse_certificate(identity.pem_to_der(pem)).member_id
    except (OSError, KeyError, ValueError):
        return None


def expected_head(text: str) -> tuple[int, str | None]:
    height, _, block_hash = text.partition(":")
    try:
        n = int(height)
        if n < 0 or (block_hash and (len(block_hash) != 64 or block_hash.strip("0123456789abcdefABCDEF"))):
            raise ValueError(text)
    except ValueError:
        fail("--expect-head is HEIGHT or HEIGHT:BLOCK_HASH (64 hex digits)")
    return n, block_hash.lower() or None


def attestations_file(path: Path) -> list[Any]:
    """Every attestation object in a JSON file: a list of them, /v1/attestations/{h} or /v1/blocks/{h}
    answers, or lists of those."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        fail(f"cannot read {path}: {exc}")
    out: list[Any] = []
    todo = [data]
    while todo:
        item = todo.pop()
        if isinstance(item, list):
            todo.extend(item)
        elif isinstance(item, dict) and "sig" in item and "block_hash" in item:
            out.append(item)
        elif isinstance(item, dict) and isinstance(item.get("attestations"), list):
            todo.extend(item["attestations"])
    return out


def store_chain_id(db: Path) -> str:
    """The chain id of a ledger database, from its genesis header (read-only)."""
    import sqlite3

    from liangcao.ledger.block import Header

    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return Header.from_bytes(
                bytes(con.execute("SELECT header FROM blocks WHERE height=0").fetchone()[0])
            ).chain_id
        finally:
            con.close()
    except (sqlite3.Error, TypeError, LiangcaoError) as exc:
        fail(f"cannot read the chain id of {db}: {exc}")


def network_attestations(urls: list[str], chain_id: str, timeout_s: float = 30) -> list[bytes]:
    """Every attestation in the chain's JetStream attestation stream: what the network holds."""
    import asyncio

    from liangcao.node.link import att_filter, att_stream

    async def read() -> list[bytes]:
        import nats
        from nats.js.api import ConsumerConfig, DeliverPolicy

        nc = await nats.connect(servers=urls, connect_timeout=2, max_reconnect_attempts=2)
        try:
            js = nc.jetstream()
            last = (await js.stream_info(att_stream(chain_id))).state.last_seq
            out: list[bytes] = []
            done = asyncio.Event()

            async def on(msg: Any) -> None:
                out.append(msg.data)
                if msg.metadata.sequence.stream >= last:
                    done.set()

            if last:
                sub = await js.subscribe(
                    att_filter(chain_id),  # every height's subject
                    stream=att_stream(chain_id),
                    cb=on,
                    ordered_consumer=True,
                    config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
                )
                await asyncio.wait_for(done.wait(), timeout_s)
                await sub.unsubscribe()
            return out
        finally:
            await nc.close()

    try:
        return asyncio.run(read())
    except Exception as exc:  # no server, no stream, a timeout: the audit cannot use the network
        fail(f"cannot read the attestation stream of {chain_id} from {', '.join(urls)}: {exc!r}")
