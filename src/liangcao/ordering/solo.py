"""The solo block cutter: a pure decision, given what is pending and the time.

============================================  =========================================
situation                                     decision
============================================  =========================================
nothing pending                               wait (no empty blocks)
pending >= ``block_txs_max``                  cut ``block_txs_max`` now
pending > 0, ``block_wait_ms`` elapsed since  cut everything pending now
the oldest pending transaction arrived
pending > 0, stopping (graceful shutdown)     cut everything pending now
otherwise                                     wait until the oldest is ``block_wait_ms`` old
============================================  =========================================

Unlike Fabric's block cutter this never reads the clock itself: the caller passes ``now_ms``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Cut:
    count: int  # how many to take now (0: none)
    wait_ms: int  # if count == 0 and pending, how long until a cut is due; -1: until something arrives


def decide(
    pending: int, oldest_ms: int | None, now_ms: int, *, block_txs_max: int, block_wait_ms: int, stopping: bool = False
) -> Cut:
    if pending <= 0 or oldest_ms is None:
        return Cut(0, -1)
    if pending >= block_txs_max:
        return Cut(block_txs_max, 0)
    due = oldest_ms + block_wait_ms
    if stopping or now_ms >= due:
        return Cut(pending, 0)
    return Cut(0, due - now_ms)
