"""Witnesses: other organisations' peers re-execute an embedded node's chain and attest its blocks.

An embedded node (``liangcao node start``, the demo) is one organisation's: it orders, executes and
attests alone, so nothing it commits is attested by the consortium's finality quorum, and a consumer's
check (``/verify``, ``liangcao verify-proof``) rightly refuses to call its history verified. In a real
consortium each organisation runs its own node (``liangcao network up``) and attestations arrive by
themselves. On one machine (the demo, tests) a :class:`Witness` stands in for another organisation's node:

1. it fetches each new block over the API (``GET /v1/blocks/{height}``);
2. it verifies and re-executes the block on a ledger of its own (its own store, runtime and certificate
   cache, from the genesis block it was given, not the node's), so it trusts nothing the node computed:
   a block whose header it does not derive byte for byte stops it (``WitnessError``);
3. it signs an attestation of the block with its organisation's peer key and posts it
   (``POST /v1/attestations``, ``NodeServices.accept_attestation``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from liangcao.apps.bundle import default_registry
from liangcao.client import Client
from liangcao.contracts.runtime import ContractRuntime
from liangcao.crypto.signer import Signer
from liangcao.errors import LiangcaoError
from liangcao.ledger import block as blk
from liangcao.ledger.chain import Ledger


class WitnessError(RuntimeError):
    """The node served a block this witness does not derive identically (it attests nothing more)."""


class Witness:
    """One organisation's peer following a node: re-executes its blocks and attests them (module docstring)."""

    def __init__(self, peer: Signer, genesis: blk.Block, store_path: str | Path) -> None:
        self.peer = peer
        self.ledger = Ledger.open(store_path, ContractRuntime(default_registry()))
        if self.ledger.head is None:
            self.ledger.apply(genesis)
        head = self.ledger.store.header(0)
        if head is None or head.hash != genesis.hash:
            self.ledger.close()
            raise WitnessError(f"the witness store at {store_path} belongs to another chain")

    def close(self) -> None:
        self.ledger.close()

    def follow(self, client: Client) -> int:
        """Re-execute and attest every block the node has beyond this witness's head; how many it attested."""
        assert self.ledger.head is not None
        top = int(client.head()["header"]["height"])
        done = 0
        for height in range(self.ledger.head.height + 1, top + 1):
            served: Any = client.block(height)
            try:
                block = blk.block_from_dict({k: served[k] for k in ("header", "seal", "txs")})
                self.ledger.apply(block)  # verifies the seal and re-executes; the header must come out the same
            except (LiangcaoError, KeyError, TypeError) as exc:
                raise WitnessError(f"{self.peer.member_id} does not derive block {height}: {exc}") from exc
            h = block.header
            att = blk.make_attestation(self.peer.key, self.peer.cert, h.chain_id, h.height, h.hash, h.state_hash)
            r = client.http.post("/v1/attestations", json=att)
            if r.status_code != 200:
                raise WitnessError(
                    f"the node refused {self.peer.member_id}'s attestation of block {height}: {r.text[:300]}"
                )
            done += 1
        return done


def witness(client: Client, genesis: blk.Block, peers: Iterable[Signer], workdir: str | Path) -> dict[str, int]:
    """Each peer in ``peers`` follows the node once (a store per peer under ``workdir``, kept for the next
    call); the number of blocks each attested, by member id."""
    out: dict[str, int] = {}
    for peer in peers:
        w = Witness(peer, genesis, Path(workdir) / f"witness-{peer.member_id.replace('/', '-')}.sqlite")
        try:
            out[peer.member_id] = w.follow(client)
        finally:
            w.close()
    return out


__all__ = ["Witness", "WitnessError", "witness"]
