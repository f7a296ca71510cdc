"""``liangcao verify-proof``: check a Merkle inclusion proof, or an item's whole traceability bundle, offline.

Trust is never taken from the bundle: ``--anchors`` (the QR code's) or ``--genesis`` name the organisations
whose attestations and signatures count (``liangcao.trace.bundle_check``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from liangcao.cli.common import console, fail


def verify_proof_cmd(
    file: Annotated[Path, typer.Argument(help="a proof JSON file, or an item's /v1/trace/verify bundle")],
    anchors: Annotated[
        str | None,
        typer.Option(
            help="bundles: trust the organisations whose CA certificate's SHA-256 fingerprint starts with one of "
            "these (comma-separated, 32+ hex digits: the QR code's anchors=)"
        ),
    ] = None,
    genesis: Annotated[
        Path | None,
        typer.Option(help="bundles: trust every organisation of this genesis.json (the consortium's, got out of band)"),
    ] = None,
    quorum: Annotated[
        int | None,
        typer.Option(help="bundles: distinct trusted organisations that must attest each block (default: a majority)"),
    ] = None,
    item: Annotated[
        str | None, typer.Option(help="bundles: the item you asked about (default: the bundle's id)")
    ] = None,
) -> None:
    """Check a Merkle inclusion proof, or a whole traceability bundle, offline. Exit 1 if it does not verify.

    A bundle gets the checks the consumer page makes (liangcao.trace.bundle_check): header hashes,
    transaction and receipt inclusion, the capture's signatures by members of trusted organisations (who
    recorded each event comes from their certificates), the anchored event hashing to its id and concerning
    the item, and attestations by at least a quorum of trusted organisations. Trust is never taken from the
    bundle: give --anchors (from the QR code) or --genesis.
    """
    from liangcao.ledger.block import verify_proof_dict
    from liangcao.trace.depth import check_json

    try:
        text = file.read_text()
        check_json(text, "the file")  # a bundle from anywhere: refused before json.loads recurses into it
        proof = json.loads(text)
    except (OSError, ValueError) as exc:
        fail(f"cannot read {file}: {exc}")
    if isinstance(proof, dict) and "events" in proof and "organisations" in proof:
        from liangcao.trace.bundle_check import Trust, TrustError, check_bundle

        try:
            if genesis is not None:
                trust: Trust | None = Trust.from_genesis(json.loads(genesis.read_text()), quorum)
            elif anchors:
                trust = Trust.from_anchors(anchors.split(","), quorum)
            else:
                trust = None
        except (OSError, ValueError) as exc:  # TrustError is a ValueError
            fail(
                f"cannot use the trust anchors: {exc}"
                if isinstance(exc, TrustError)
                else f"cannot read {genesis}: {exc}"
            )
        result = check_bundle(proof, trust, item)
        if result.trusted:
            console.print(f"trusted organisations: {', '.join(result.trusted)}; quorum {result.quorum}", soft_wrap=True)
        for e in result.events:
            mark = "[green]ok[/]" if not e.problems else "[red]NOT verified[/]"
            who = f"recorded by {e.recorded_by}" if e.recorded_by else "recorder not proven"
            console.print(
                f"{mark} {e.id} {who}, block {e.height}, attested by {', '.join(e.orgs) or 'nobody trusted'}",
                soft_wrap=True,
            )
            for problem in e.problems:
                console.print(f"    {problem}", soft_wrap=True)
        for problem in result.problems:
            console.print(f"[red]NOT verified[/]: {problem}", soft_wrap=True)
        if not result.verified:
            fail(f"the history of {result.item} is NOT verified" + ("" if result.events else ": it has no events"))
        console.print(f"[green]verified[/]: {len(result.events)} events of {result.item}")
        return
    if isinstance(proof, dict) and proof.get("kind") == "private_disclosure":
        from liangcao.contracts.private import check_disclosure

        ok, why = check_disclosure(proof)
        if not ok:
            fail(f"private disclosure does NOT verify: {why}")
        header = proof["tx_proof"]["header"]
        console.print(
            f"[green]private value verifies[/]: {proof['contract']}/{proof['collection']}/{proof['key']} opens "
            f"commitment {proof['hash'][:16]}… committed by a successful transaction in block {header['height']} "
            f"({proof['tx_proof']['block_hash'][:16]}…) of chain {header['chain_id']}",
            soft_wrap=True,
        )
        return
    if isinstance(proof, dict) and "tx_proof" in proof:
        proof = proof["tx_proof"]
    if not isinstance(proof, dict):
        fail("the file does not hold a proof object")
    ok, why = verify_proof_dict(proof)
    if not ok:
        fail(f"proof does NOT verify: {why}")
    header = proof["header"]
    console.print(
        f"[green]proof verifies[/]: the {proof['kind']} is at index {proof['index']} of block {header['height']} ({proof['block_hash'][:16]}…) of chain {header['chain_id']}"
    )
