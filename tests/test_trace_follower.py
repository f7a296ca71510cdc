"""The node's EPCIS index followed from a process of its own (issue 25, scale: ``TraceIndex.follow``).

Real stores and a real spawned follower: it indexes what is committed without the reader's process doing
the work, a read waits for it and sees every committed block, a follower killed with SIGKILL costs nothing
but a re-index (the reader indexes itself, a new follower resumes), and the follower dies with its node.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from liangcao.apps.trace import anchor
from liangcao.bench.trace import documents, tin
from liangcao.node.trace_index import FOLLOWER_NICE, TraceIndex, TraceView
from liangcao.trace import query as tq
from test_trace_layout import TraceChain
from trace_ledger import BRAND, LOGISTICS, WAREHOUSE

EVERYTHING = ("trace/", "trace/\U0010ffff")


def _capture(c: TraceChain, first: int, cases: int) -> None:
    for org, data in zip((BRAND, LOGISTICS, WAREHOUSE), documents(first, cases).values(), strict=True):
        c.capture(data, org, compact=True)


def _no_sync_here(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make this process's syncs countable (the follower's, in its own process, are not)."""
    calls: list[int] = []
    real = TraceIndex.sync

    def counted(self: TraceIndex, store: Any) -> int:
        calls.append(1)
        return real(self, store)

    monkeypatch.setattr(TraceIndex, "sync", counted)
    return calls


def _wait(cond: Any, s: float = 30.0) -> None:
    end = time.monotonic() + s
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def test_the_follower_indexes_every_commit_and_reads_wait_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = TraceChain(tmp_path / "ledger.sqlite")
    _capture(c, 0, 5)
    index = TraceIndex(tmp_path / "trace-index.sqlite", c.ledger.store.path)
    here = _no_sync_here(monkeypatch)
    try:
        index.follow()
        assert index.following() and not anchor.FACTS_KEEP  # the commit side stops keeping facts for it
        _wait(lambda: index.indexed_height() == c.ledger.store.height())
        assert index._follower is not None and index._follower.pid is not None
        assert _nice(index._follower.pid) == min(19, os.nice(0) + FOLLOWER_NICE)  # commits go first
        for first in (5, 10):  # commits while it follows: each read sees them, the follower did the work
            _capture(c, first, 5)
            index.wake()
            view = TraceView(c.ledger.store, index)
            assert index.indexed_height() == c.ledger.store.height()
            page = tq.run(view, tq.parse([("MATCH_anyEPC", tin(first * 4 + 3))]))
            assert len(page.records) == 2  # its commissioning and its packing
        assert here == []
        _same_as_from_scratch(index, c, tmp_path)
    finally:
        index.close()
    assert not index.following() and anchor.FACTS_KEEP


def _same_as_from_scratch(index: TraceIndex, c: TraceChain, tmp_path: Path) -> None:
    """The followed index holds exactly the entries of one built from the blocks in this process."""
    reference = TraceIndex(tmp_path / "reference.sqlite", c.ledger.store.path)
    try:
        reference.sync(c.ledger.store)
        assert list(reference.scan(*EVERYTHING)) == list(index.scan(*EVERYTHING))
    finally:
        reference.close()


def test_a_killed_follower_costs_a_reindex_and_nothing_else(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c = TraceChain(tmp_path / "ledger.sqlite")
    _capture(c, 0, 3)
    index = TraceIndex(tmp_path / "trace-index.sqlite", c.ledger.store.path)
    here = _no_sync_here(monkeypatch)
    try:
        index.follow()
        _wait(lambda: index.indexed_height() == c.ledger.store.height())
        assert index._follower is not None and index._follower.pid is not None
        os.kill(index._follower.pid, signal.SIGKILL)
        _wait(lambda: not index.following())
        _capture(c, 3, 3)
        view = TraceView(c.ledger.store, index)  # no follower: the read indexes what is missing itself
        assert here and index.indexed_height() == c.ledger.store.height()
        assert len(tq.run(view, tq.parse([("MATCH_anyEPC", tin(5 * 4))])).records) == 2
    finally:
        index.close()
    # a new follower on the same file resumes from the height recorded there
    _capture(c, 6, 3)
    again = TraceIndex(tmp_path / "trace-index.sqlite", c.ledger.store.path)
    try:
        before = again.indexed_height()
        assert 0 < before < c.ledger.store.height()
        again.follow()
        _wait(lambda: again.indexed_height() == c.ledger.store.height())
        _same_as_from_scratch(again, c, tmp_path)
    finally:
        again.close()


_OWNER = """
import sys, time
from liangcao.node.trace_index import TraceIndex
index = TraceIndex(sys.argv[1], sys.argv[2])
index.follow()
print(index._follower.pid, flush=True)
time.sleep(120)
"""


def test_the_follower_dies_with_its_node(tmp_path: Path) -> None:
    c = TraceChain(tmp_path / "ledger.sqlite")
    _capture(c, 0, 1)
    owner = subprocess.Popen(
        [sys.executable, "-c", _OWNER, str(tmp_path / "trace-index.sqlite"), str(c.ledger.store.path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None
        follower = int(owner.stdout.readline())
        index = TraceIndex(tmp_path / "trace-index.sqlite", c.ledger.store.path)
        try:
            _wait(lambda: index.indexed_height() == c.ledger.store.height())
        finally:
            index.close()
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        _wait(lambda: not Path(f"/proc/{follower}").exists() or "Z" in _state(follower), 10)
    finally:
        owner.kill()
        owner.wait(10)
        if owner.stdout is not None:
            owner.stdout.close()


def _state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "Z"
    return stat[stat.rindex(")") + 2 :].split()[0]


def _nice(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[16])
