"""In-process cost of the solo commit loop: N signed mints through ``Node.submit_many`` until all are committed.

Prints the time to commit everything, the process's CPU time (the verifier processes excluded) and the number
of blocks. Run it against two commits side by side (``PYTHONPATH=<worktree>/src``) to compare the loop's cost
on a loaded machine, where CPU time is steadier than wall time. Usage: ``python bench/solo_loop.py [N]``.
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from liangcao.ledger import tx as txm
from liangcao.node.genesis import create_consortium
from liangcao.node.node import Node, NodeSettings


def main(n: int) -> None:
    now = int(time.time() * 1000)
    c = create_consortium(3, now_ms=now)
    admin = c.org("org1").signer("admin")
    raws = [
        txm.build(c.chain_id, "demo.wallet", "mint", {"to": "org1/alice", "amount": i + 1}, [admin],
                  not_after=now + 600_000, nonce=f"n{i}").raw
        for i in range(n)
    ]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="liangcao-solo-") as tmp:
        node = Node(
            Path(tmp) / "n.sqlite",
            c.genesis,
            orderer=c.org("org1").signer("orderer0"),
            peer=c.org("org1").signer("peer0"),
            settings=NodeSettings(verify_workers=1),
        )
        node.start()
        try:
            cpu0 = time.process_time()
            t0 = time.perf_counter()
            for i in range(0, n, 500):
                while any(isinstance(r, Exception) for r in node.submit_many(raws[i : i + 500])):
                    time.sleep(0.01)  # the mempool is full: the batch is retried (duplicates are one entry)
            while node.pending_count() or node._admitted:
                time.sleep(0.005)
            wall = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(
                f"{n} tx committed in {wall:.2f} s ({n / wall:,.0f} tx/s), process CPU {cpu:.2f} s, "
                f"{node.head.height} blocks, cores {os.cpu_count()}, peak RSS {rss:.0f} MiB, "
                f"load {os.getloadavg()[0]:.1f}"
            )
        finally:
            node.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
