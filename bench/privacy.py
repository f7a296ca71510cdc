"""Committed tx/s with half the transactions private, next to all public, in the same run (issue 24).

Run: ``.venv/bin/python bench/privacy.py [--n 1000] [--json]``.

Two set-ups, each measured all public and then half private (the other half public), on fresh chains:

* ``solo``: one embedded node; a private transaction is a ``pdc.put`` whose value is handed to the node
  first (salt, hash, transient hold, then the private store at commit);
* ``network``: three organisations, each with its own node and nats-server (JetStream ordering); the private
  values are handed to org1's node only and reach org2's over core NATS (signed request, sealed answer);
  org3 stores none. Two rates: every node committed every transaction (``*_commit_tps``), and in addition
  org2 holds every private value (``*_private_tps``).

Public transactions are ``demo.wallet.mint``; each transaction is signed by one member. Prints the machine's
core count and the peak RSS; with ``--json`` the last line is one JSON object with every figure. On a shared
machine the figures move with the other load: compare the two columns of one run, not runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from liangcao.contracts import private as pv
from liangcao.ledger import tx as txm
from liangcao.node.genesis import Consortium, create_consortium
from liangcao.node.node import Node, NodeSettings
from liangcao.node.private import close_private, private_of

CHUNK = 200


def make_txs(c: Consortium, n: int, private: bool, pd: Any) -> tuple[list[bytes], float]:
    """``n`` transactions (every other one private if ``private``); and the seconds spent handing values over."""
    admin = c.org("org1").signer("admin")
    not_after = int(time.time() * 1000) + 600_000
    raws: list[bytes] = []
    handing = 0.0
    for i in range(n):
        if private and i % 2 == 1:
            t0 = time.perf_counter()
            value, salt = {"unit_fen": 1000 + i, "note": f"terms {i}"}, pv.new_salt()
            h = pd.hand("pdc", "bilateral", f"b{i}", value, salt, ["org1", "org2"])["hash"]
            handing += time.perf_counter() - t0
            args: dict[str, Any] = {
                "private": {"collection": "bilateral", "key": f"b{i}", "hash": h},
                "members": ["org1", "org2"],
            }
            raws.append(txm.build(c.chain_id, "pdc", "put", args, [admin], not_after=not_after).raw)
        else:
            args = {"to": "org1/alice", "amount": 1 + i}
            raws.append(txm.build(c.chain_id, "demo.wallet", "mint", args, [admin], not_after=not_after).raw)
    return raws, handing


def submit_all(node: Node, raws: list[bytes]) -> None:
    for i in range(0, len(raws), CHUNK):
        for r in node.submit_many(raws[i : i + CHUNK]):
            if isinstance(r, Exception):
                raise r


def committed(node: Node, tx_ids: list[str]) -> bool:
    store = node.reader()
    return all(node.position(t) is not None or store.tx_position(t) is not None for t in tx_ids[-50:])


def wait(cond: Any, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("the benchmark's transactions did not commit in time")
        time.sleep(0.01)


def solo(root: Path, n: int, private: bool) -> dict[str, float]:
    c = create_consortium(3, chain_id=f"bench-solo-{time.time_ns()}", now_ms=int(time.time() * 1000))
    node = Node(
        root / f"solo-{int(private)}.sqlite", c.genesis, orderer=c.org("org1").signer("orderer0"),
        peer=c.org("org1").signer("peer0"), settings=NodeSettings(block_txs_max=1000, block_wait_ms=20),
    )  # fmt: skip
    pd = private_of(node)
    node.start()
    try:
        t0 = time.perf_counter()
        raws, handing = make_txs(c, n, private, pd)
        ids = [txm.parse(r).tx_id for r in raws]
        build_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        submit_all(node, raws)
        wait(lambda: all(node.position(t) is not None or node.reader().tx_position(t) is not None for t in ids))
        if private:
            wait(lambda: pd.status()["values"] >= n // 2)
        secs = time.perf_counter() - t1
        return {"tps": n / secs, "seconds": secs, "hand_us": 1e6 * handing / max(1, n // 2), "build_s": build_s}
    finally:
        close_private(node)
        node.stop()


def network(root: Path, n: int, private: bool, urls: list[str]) -> dict[str, float]:
    from liangcao.node.link import JetStreamLink

    types = ["bank", "supplier", "core_enterprise"]
    c = create_consortium(3, org_types=types, chain_id=f"bench-net-{time.time_ns()}", now_ms=int(time.time() * 1000))
    nodes: dict[str, Node] = {}
    try:
        for i, org in enumerate(("org1", "org2", "org3")):
            nodes[org] = Node(
                root / f"{org}-{int(private)}.sqlite", c.genesis, orderer=c.org(org).signer("orderer0"),
                peer=c.org(org).signer("peer0"), settings=NodeSettings(block_txs_max=1000, block_wait_ms=20),
                link=JetStreamLink([urls[i]], c.chain_id, 3),
            )  # fmt: skip
            private_of(nodes[org])
            nodes[org].start()
        pds = {org: private_of(node) for org, node in nodes.items()}
        raws, handing = make_txs(c, n, private, pds["org1"])
        ids = [txm.parse(r).tx_id for r in raws]
        t1 = time.perf_counter()
        submit_all(nodes["org1"], raws)
        wait(lambda: all(all(node.reader().tx_position(t) is not None for t in ids[-20:]) for node in nodes.values()))
        commit_s = time.perf_counter() - t1
        if private:
            wait(lambda: pds["org2"].status()["values"] >= n // 2)
        all_s = time.perf_counter() - t1
        if pds["org3"].status()["rows"] != 0:
            raise AssertionError("org3 holds private values")
        return {"commit_tps": n / commit_s, "private_tps": n / all_s, "hand_us": 1e6 * handing / max(1, n // 2)}
    finally:
        for node in nodes.values():
            close_private(node)
            node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="transactions per measurement")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-network", action="store_true", help="measure the solo node only")
    a = parser.parse_args()
    out: dict[str, Any] = {"n": a.n}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pub, half = solo(root, a.n, False), solo(root, a.n, True)
        out.update(solo_public_tps=round(pub["tps"]), solo_half_private_tps=round(half["tps"]),
                   solo_hand_us=round(half["hand_us"], 1))  # fmt: skip
        if not a.no_network:
            from liangcao.ordering.natsserver import NatsCluster

            with NatsCluster(root / "nats", 3) as cluster:
                npub = network(root, a.n, False, cluster.urls)
                nhalf = network(root, a.n, True, cluster.urls)
            out.update(
                network_public_commit_tps=round(npub["commit_tps"]),
                network_half_private_commit_tps=round(nhalf["commit_tps"]),
                network_half_private_disseminated_tps=round(nhalf["private_tps"]),
            )
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out.update(cores=os.cpu_count(), peak_rss_mb=round(rss_kb / 1024, 1))
    print(f"cores {out['cores']}, peak RSS {out['peak_rss_mb']} MB, {a.n} transactions per measurement")
    print(
        f"solo node      all public {out['solo_public_tps']:>7} tx/s   half private {out['solo_half_private_tps']:>7} tx/s"
    )
    if "network_public_commit_tps" in out:
        print(
            f"3 orgs (NATS)  all public {out['network_public_commit_tps']:>7} tx/s   half private "
            f"{out['network_half_private_commit_tps']:>7} tx/s committed, "
            f"{out['network_half_private_disseminated_tps']:>7} tx/s with every private value at org2"
        )
    if a.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
