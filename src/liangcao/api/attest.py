"""``POST /v1/attestations``: another organisation's peer attests one of this node's blocks.

In a consortium (``liangcao network up``) attestations travel through JetStream by themselves. An embedded
node (one organisation, solo ordering) only ever attests its own blocks, so nothing it commits reaches the
finality quorum. Peers of other organisations that follow it (``liangcao.witness``: they fetch each block,
re-execute it on their own ledger and sign what they derived) post their attestations here.

An attestation is kept only if it counts under the consortium's one rule (``Config.attesting_org``: the
signature verifies and the certificate is a current, unrevoked peer's of an active organisation) and it
attests exactly this node's block and state hash at that height. A counted attestation of a *different*
block or state is a fork alarm, raised as the consortium link raises it.
"""

from __future__ import annotations

import logging
from typing import Any

from liangcao import encoding
from liangcao.codes import Code
from liangcao.contracts import config as cfgmod
from liangcao.crypto import identity
from liangcao.errors import LiangcaoError
from liangcao.ledger import block as blk
from liangcao.node.node import Node

log = logging.getLogger("liangcao.api")


def accept(node: Node, att: Any) -> dict[str, Any]:
    """Keep ``att`` (a decoded attestation) with the block it attests; the attesting member and organisation.

    Raises LiangcaoError: WRONG_CHAIN, UNKNOWN_CERTIFICATE (not a counted peer), NOT_FOUND (no such block
    yet), BAD_BLOCK (another block or state: a fork alarm)."""
    if not isinstance(att, dict) or att.get("chain_id") != node.chain_id:
        raise LiangcaoError(Code.WRONG_CHAIN, f"the attestation is not for chain {node.chain_id}")
    store = node.reader()
    certs = identity.CertCache()  # API threads never share the commit thread's caches
    org = cfgmod.load(store, certs).attesting_org(att, certs)
    if org is None:
        raise LiangcaoError(
            Code.UNKNOWN_CERTIFICATE,
            "the attestation is not signed by a current peer of an active organisation",
        )
    member = blk.check_attestation(att)
    height = int(att["height"])
    ours = store.header(height)
    if ours is None:
        raise LiangcaoError(Code.NOT_FOUND, f"no block at height {height} yet")
    if att["block_hash"] != ours.hash or att["state_hash"] != ours.state_hash:
        alarm = {
            "height": height,
            "member": member,
            "their_block_hash": att["block_hash"],
            "their_state_hash": att["state_hash"],
            "our_block_hash": ours.hash,
            "our_state_hash": ours.state_hash,
        }
        if alarm not in node.fork_alarms:
            node.fork_alarms.append(alarm)
            log.error("FORK ALARM at height %s: %s attests a different block or state", height, member)
        raise LiangcaoError(Code.BAD_BLOCK, f"{member} attests another block or state at height {height}")
    # The writer store serialises writes under its lock, beside the commit thread's blocks.
    node.ledger.store.add_attestation(height, member, encoding.canonical(att))
    return {"height": height, "member": member, "org": org}
