"""The store's schema 2 attacked from outside: tampered rows the start-up check must find, key histories over
altered links, the checkpointer thread (leaks, kill -9, a reader holding the log) and the schema-1 upgrade
(a replay that fails or is cut short, a reader that opens an old store)."""

from __future__ import annotations

import gc
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from conftest import Chain, open_ledger
from liangcao.apps.bundle import default_registry
from liangcao.codes import Code
from liangcao.contracts.runtime import ContractRuntime
from liangcao.errors import BlockInvalid, StoreError
from liangcao.ledger import store as store_mod
from liangcao.ledger.chain import Ledger
from liangcao.ledger.executor import Execution
from liangcao.ledger.store import REBUILD_META, Store
from liangcao.node.genesis import Consortium
from liangcao.node.storecheck import check_store
from test_store_history import SCHEMA_1, commit


class Crash(BaseException):
    """The process stopped half-way through a replay (not an Exception: nothing may catch it)."""


def crash_at(height: int, real: Any) -> Any:
    """``Store.commit_block`` that stops the process (raises :class:`Crash`) replaying ``height``."""

    def crash(self: Store, block: Any, execution: Execution, **kw: Any) -> None:
        if kw.get("derived_only") and block.header.height == height:
            raise Crash
        real(self, block, execution, **kw)

    return crash


def tampered(src: Path, dst: Path, *statements: tuple[str, tuple[Any, ...]]) -> Path:
    shutil.copy(src, dst)
    with closing(sqlite3.connect(dst)) as db, db:
        for sql, args in statements:
            db.execute(sql, args)
    return dst


def checkpointers() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "liangcao-ckpt" and t.is_alive()}


# ---- the start-up check ---------------------------------------------------------------------------------------
def test_the_store_check_finds_a_state_row_deleted_before_the_recent_blocks(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = Store(path)
    commit(store, 0, [{"a": b"1", "b": b"2", "gone": b"x"}])
    commit(store, 1, [{"gone": None}, {"b": b"3"}])
    store.close()
    assert check_store(path, "state", recent_blocks=0) == []
    # a present key's row deleted: the key reads as absent (a spent voucher, an anchored event, ...)
    dropped = tampered(path, tmp_path / "d.sqlite", ("DELETE FROM state WHERE key=?", (b"a",)))
    reader = Store(dropped, readonly=True)
    assert reader.get("a") is None  # what the node would serve
    reader.close()
    assert any(f.startswith("state @ a: missing") for f in check_store(dropped, "state", recent_blocks=0))
    # a deleted key's row (value NULL) removed: the key's next write would start a history of its own
    gone = tampered(path, tmp_path / "g.sqlite", ("DELETE FROM state WHERE key=?", (b"gone",)))
    assert any(f.startswith("state @ gone: missing") for f in check_store(gone, "state", recent_blocks=0))
    # a write planted ahead of the chain, linked to nothing: the block that reaches height 7 and writes b
    # could not be committed (its history row would exist already)
    planted = tampered(path, tmp_path / "p.sqlite", ("INSERT INTO history(height, idx, key) VALUES (7, 0, ?)", (b"b",)))
    assert any(f.startswith("history @ b height 7 tx 0:") for f in check_store(planted, "state", recent_blocks=0))


def test_the_store_check_finds_a_rollback_hidden_by_a_cut_link(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = Store(path)
    commit(store, 0, [{"a": b"1"}])
    commit(store, 1, [{"a": b"2"}, {"a": b"3"}])  # two transactions of one block
    store.close()
    # the state row moved back to the key's first write, whose forward link is cut to match
    rolled = tampered(
        path,
        tmp_path / "r.sqlite",
        ("UPDATE state SET value=?, height=0, idx=0 WHERE key=?", (b"1", b"a")),
        ("UPDATE history SET next_height=NULL, next_idx=NULL WHERE height=0 AND idx=0 AND key=?", (b"a",)),
    )
    reader = Store(rolled, readonly=True)
    assert reader.get("a") == b"1"  # what the node would serve
    reader.close()
    found = check_store(rolled, "state", recent_blocks=0)
    assert any(f.startswith("history @ a height 1 tx 1:") for f in found), found
    assert check_store(path, "state", recent_blocks=0) == []


def test_a_key_history_never_repeats_a_write_over_a_link_circle(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = Store(path)
    commit(store, 0, [{"a": b"1"}])
    commit(store, 1, [{"a": b"2"}])
    store.close()
    circle = tampered(
        path,
        tmp_path / "c.sqlite",
        ("UPDATE history SET prev_height=1, prev_idx=0 WHERE height=0 AND idx=0 AND key=?", (b"a",)),
    )
    reader = Store(circle, readonly=True)
    assert reader.key_history("a") == [(1, 0, b"2"), (0, 0, b"1")]  # each write once, not 100 times
    reader.close()


# ---- the checkpointer -----------------------------------------------------------------------------------------
def test_a_store_dropped_without_close_stops_its_checkpointer(tmp_path: Path) -> None:
    before = checkpointers()
    store = Store(tmp_path / "s.sqlite", checkpointer=True)
    commit(store, 0, [{"a": b"1"}])
    mine = checkpointers() - before
    assert len(mine) == 1
    del store
    gc.collect()
    (thread,) = mine
    thread.join(5)
    assert not thread.is_alive(), "the checkpointer of a store nobody holds is still polling its file"
    again = Store(tmp_path / "s.sqlite")
    assert again.get("a") == b"1"
    again.close()


CHILD = r"""
import sys
from types import SimpleNamespace
from liangcao.ledger import store as store_mod
from liangcao.ledger.executor import Execution

store_mod.WAL_BYTES_RESTART = 0  # the checkpointer truncates the log after every commit
store = store_mod.Store(sys.argv[1], checkpointer=True)
h = 0
while True:
    txs = [{f"k{h}/{n}": b"v" * 200 for n in range(100)}, {f"k{h}/0": None, "last": str(h).encode()}]
    merged = {}
    for w in txs:
        merged.update(w)
    ex = Execution([], [], [], [], txs, merged, "", "", "", "", [[] for _ in txs])
    store.commit_block(SimpleNamespace(header=SimpleNamespace(height=h)), ex, derived_only=True)
    print(h, flush=True)  # acknowledged: commit_block returned
    h += 1
"""


def test_acknowledged_commits_survive_kill_9_while_the_checkpointer_truncates(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True)
    acked = -1
    try:
        assert child.stdout is not None
        deadline = time.monotonic() + 60
        while acked < 40 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            acked = int(line)
        os.kill(child.pid, signal.SIGKILL)
        rest, _ = child.communicate(timeout=10)  # acknowledgements already in the pipe count too
        acked = max([acked, *(int(x) for x in rest.split())])
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert acked >= 40, "the child did not commit"
    store = Store(path)
    last = store.get("last")
    assert last is not None and int(last) >= acked
    history = store.key_history("last", limit=1000)
    assert [h for h, _, _ in history][-acked - 1 :] == list(range(acked, -1, -1))
    assert store.get(f"k{acked}/0") is None and store.get(f"k{acked}/99") == b"v" * 200
    store.close()
    assert check_store(path, "state", recent_blocks=0) == []


def test_a_reader_holding_the_log_delays_but_never_fails_a_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_mod, "WAL_BYTES_RESTART", 0)  # a TRUNCATE after every commit: the write lock taken
    path = tmp_path / "s.sqlite"
    store = Store(path, checkpointer=True)
    commit(store, 0, [{"seed": b"1"}])
    reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    stop = threading.Event()

    def hold() -> None:  # long reads, one after the other: each snapshot pins the log for 1.5 s
        while not stop.is_set():
            reader.execute("BEGIN")
            reader.execute("SELECT COUNT(*) FROM state").fetchone()
            stop.wait(1.5)
            reader.execute("COMMIT")

    holder = threading.Thread(target=hold)
    holder.start()
    worst = 0.0
    try:
        for h in range(1, 6):
            t0 = time.monotonic()
            commit(store, h, [{f"k{h}/{n}": b"v" * 100 for n in range(200)}])
            worst = max(worst, time.monotonic() - t0)
            time.sleep(0.3)  # the next block executes; the checkpointer runs meanwhile
    finally:
        stop.set()
        holder.join()
        reader.close()
    assert worst < 5.0, worst  # the writer's busy timeout: a commit waiting longer would fail
    assert store.get("k5/199") == b"v" * 100
    store.close()


# ---- the schema-1 upgrade -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_chain(tmp_path_factory: pytest.TempPathFactory, consortium: Consortium) -> Path:
    """Genesis and four blocks of mints: ``demo.wallet/supply`` and a balance written by several transactions
    of each block."""
    path = tmp_path_factory.mktemp("chain") / "ledger.sqlite"
    ledger = open_ledger(path)
    ledger.apply(consortium.genesis)
    chain = Chain(ledger, consortium)
    admin = chain.signer("org1", "admin")
    for b in range(4):
        to = ("org1/alice", "org2/bob", "org1/alice")
        txs = [chain.tx("demo.wallet", "mint", {"to": m, "amount": 10 * b + n + 1}, admin) for n, m in enumerate(to)]
        assert [r["code"] for r in chain.commit(txs)] == [Code.OK] * 3
    ledger.close()
    return path


def as_schema_1(src: Path, dst: Path) -> Path:
    shutil.copy(src, dst)
    with closing(sqlite3.connect(dst)) as db:
        db.executescript(SCHEMA_1)
    return dst


def snapshot(path: Path) -> tuple[dict[str, bytes], list[Any], list[Any]]:
    store = Store(path, readonly=True)
    try:
        return (
            dict(store.range("")),
            store.key_history("demo.wallet/supply"),
            store.key_history("demo.wallet/balance/org1/alice"),
        )
    finally:
        store.close()


def test_the_recent_check_finds_rows_planted_above_the_head(small_chain: Path, tmp_path: Path) -> None:
    assert check_store(small_chain, "recent") == [] and check_store(small_chain, "state") == []
    # a write of a key the recent blocks wrote, planted at the height the next block will have: schema 1's check
    # found it as the key's latest write; in write order it is linked to nothing
    write = tampered(
        small_chain,
        tmp_path / "w.sqlite",
        ("INSERT INTO history(height, idx, key, value) VALUES (5, 0, ?, ?)", (b"demo.wallet/supply", b"1")),
    )
    assert "history @ 5: a row of transaction 0 above the head 4" in check_store(write, "recent")
    # a consumed transaction planted ahead: the genuine one would be refused as a replay by this node only
    tx = tampered(
        small_chain,
        tmp_path / "t.sqlite",
        ("INSERT INTO txs(height, idx, tx_id, raw, consumed) VALUES (6, 0, 'f00d', x'00', 1)", ()),
    )
    assert "txs @ 6: a row of transaction 0 above the head 4" in check_store(tx, "recent")


def test_a_failed_replay_on_opening_leaves_no_checkpointer_running(small_chain: Path, tmp_path: Path) -> None:
    old = as_schema_1(small_chain, tmp_path / "ledger.sqlite")
    with closing(sqlite3.connect(old)) as db, db:
        db.execute("DELETE FROM blocks WHERE height=2")  # the replay cannot finish
    before = checkpointers()
    with pytest.raises(BlockInvalid, match="block 2 is missing"):
        Ledger.open(old, ContractRuntime(default_registry()), checkpointer=True)
    assert checkpointers() - before == set(), "a failed opening left its store's checkpointer running"


def test_a_replay_cut_short_on_opening_is_done_again_at_the_next(
    small_chain: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = snapshot(small_chain)
    assert len(expected[1]) == 12 and len(expected[2]) == 8  # every mint's write, several per block
    old = as_schema_1(small_chain, tmp_path / "ledger.sqlite")
    real = Store.commit_block
    monkeypatch.setattr(Store, "commit_block", crash_at(3, real))
    with pytest.raises(Crash):
        open_ledger(old)
    monkeypatch.setattr(Store, "commit_block", real)
    with pytest.raises(StoreError, match="being replayed"):
        Store(old, readonly=True)  # readers are refused a half-replayed store
    ledger = open_ledger(old)
    assert not ledger.store.rebuild_needed
    ledger.close()
    assert snapshot(old) == expected
    assert check_store(old, "state") == [] and check_store(old, "recent") == []


def test_a_reader_refuses_a_schema_1_store(small_chain: Path, tmp_path: Path) -> None:
    old = as_schema_1(small_chain, tmp_path / "ledger.sqlite")
    with pytest.raises(StoreError, match="schema 1"):
        Store(old, readonly=True)  # it would answer get() from the old table and fail key histories
    writer = Store(old)  # the writer upgrades it; the ledger would replay it now
    assert writer.rebuild_needed and writer.meta(REBUILD_META) == "1"
    writer.close()
    with pytest.raises(StoreError, match="being replayed"):
        Store(old, readonly=True)


def test_a_rebuild_cut_short_is_done_again_at_the_next_opening(
    small_chain: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = snapshot(small_chain)
    path = tmp_path / "ledger.sqlite"
    shutil.copy(small_chain, path)
    real = Store.commit_block
    ledger = open_ledger(path)
    monkeypatch.setattr(Store, "commit_block", crash_at(3, real))
    with pytest.raises(Crash):
        ledger.rebuild()
    monkeypatch.setattr(Store, "commit_block", real)
    ledger.close()
    ledger = open_ledger(path)  # replays the blocks again, as after an upgrade
    assert not ledger.store.rebuild_needed
    ledger.close()
    assert snapshot(path) == expected
