"""The store's derived tables in schema 2: history in write order, linked per key; state rows point at their
key's latest write (deleted keys keep theirs, value NULL). Key histories, reads and the start-up store check
against a plain model (the upgrade of a schema-1 store: tests/test_audit.py)."""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liangcao.ledger.executor import Execution
from liangcao.ledger.state import MemoryState, Overlay, present
from liangcao.ledger.store import Store
from liangcao.node.storecheck import check_store

Writes = list[dict[str, bytes | None]]  # one block: each transaction's writes

#: A schema-1 store's derived tables : what a store written before schema 2 holds.
SCHEMA_1 = """
DROP TABLE state; DROP TABLE history;
CREATE TABLE state (key BLOB PRIMARY KEY, value BLOB NOT NULL, height INTEGER NOT NULL);
CREATE TABLE history (key BLOB NOT NULL, height INTEGER NOT NULL, idx INTEGER NOT NULL, value BLOB,
    PRIMARY KEY (key, height, idx));
UPDATE meta SET value='1' WHERE name='schema_version';
"""


def commit(store: Store, height: int, txs: Writes) -> None:
    """The derived rows of one block, as the ledger commits them (only the parts they are made of)."""
    merged: dict[str, bytes | None] = {}
    for w in txs:
        merged.update(w)
    ex = Execution([], [], [], [], txs, merged, "", "", "", "", [[] for _ in txs])
    block: Any = SimpleNamespace(header=SimpleNamespace(height=height))
    store.commit_block(block, ex, derived_only=True)


def model(blocks: list[Writes]) -> dict[str, list[tuple[int, int, bytes | None]]]:
    out: dict[str, list[tuple[int, int, bytes | None]]] = {}
    for h, txs in enumerate(blocks):
        for i, w in enumerate(txs):
            for k, v in w.items():
                out.setdefault(k, []).append((h, i, v))
    return out


def test_a_key_written_deleted_and_written_again_keeps_its_whole_history(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    commit(store, 0, [{"a": b"1", "gone": b"x"}, {}, {"a": b"2"}])
    commit(store, 1, [{"a": None, "gone": None}])
    commit(store, 2, [{"b": b"9"}, {"a": b"3"}])
    assert store.get("a") == b"3"
    assert store.get("gone") is None
    assert [k for k, _ in store.range("")] == ["a", "b"]  # a deleted key's row is not state
    assert store.key_history("a") == [(2, 1, b"3"), (1, 0, None), (0, 2, b"2"), (0, 0, b"1")]
    assert store.key_history("a", limit=2) == [(2, 1, b"3"), (1, 0, None)]
    assert store.key_history("gone") == [(1, 0, None), (0, 0, b"x")]
    assert store.key_history("never") == []
    assert check_store(tmp_path / "s.sqlite") == []


def _tampered(src: Path, dst: Path, sql: str, *args: Any) -> Path:
    shutil.copy(src, dst)
    with sqlite3.connect(dst) as db:
        db.execute(sql, args)
    return dst


def test_the_store_check_finds_a_state_row_rolled_back_or_revived(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = Store(path)
    commit(store, 0, [{"a": b"1", "gone": b"x"}])
    commit(store, 1, [{"a": b"2", "gone": None}])
    store.close()
    # back to an older write, consistently with its history row: the row's forward link gives it away
    rolled = _tampered(path, tmp_path / "r.sqlite", "UPDATE state SET value=?, height=0, idx=0 WHERE key=?", b"1", b"a")
    assert any("state @ a" in f for f in check_store(rolled, "state", recent_blocks=0))
    revived = _tampered(path, tmp_path / "v.sqlite", "UPDATE state SET value=? WHERE key=?", b"x", b"gone")
    assert any("state @ gone: present" in f for f in check_store(revived, "state", recent_blocks=0))
    added = _tampered(path, tmp_path / "n.sqlite", "INSERT INTO state VALUES (?, ?, 0, 0)", b"new", b"1")
    assert any("state @ new" in f for f in check_store(added, "state", recent_blocks=0))
    assert check_store(path, "state", recent_blocks=0) == []


_keys = st.sampled_from(["k1", "k2", "k3", "trace/e/aa", "trace/e/bb"])
_value = st.one_of(st.none(), st.binary(min_size=1, max_size=4))
_blocks = st.lists(st.lists(st.dictionaries(_keys, _value, max_size=3), max_size=4), min_size=1, max_size=8)


@settings(max_examples=60, deadline=None)
@given(blocks=_blocks)
def test_histories_and_state_agree_with_a_plain_model(
    tmp_path_factory: pytest.TempPathFactory, blocks: list[Writes]
) -> None:
    path = tmp_path_factory.mktemp("h") / "s.sqlite"
    store = Store(path)
    for h, txs in enumerate(blocks):
        commit(store, h, txs)
    for key, writes in model(blocks).items():
        assert store.key_history(key) == list(reversed(writes))
        assert store.get(key) == writes[-1][2]
    assert check_store(path, "state", recent_blocks=0) == []
    store.close()


def test_present_answers_as_get_does_through_every_view(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    commit(store, 0, [{"a": b"1", "b": b"2", "gone": b"x"}])
    commit(store, 1, [{"gone": None}])
    overlay = Overlay(store)
    overlay.writes.update({"b": None, "new": b"n"})  # a delete and a put not committed yet
    keys = ["a", "b", "gone", "new", "never"] + [f"k{n}" for n in range(1200)]  # more than one statement's worth
    assert store.present(keys) == {"a", "b"}
    assert present(overlay, keys) == {"a", "new"} == {k for k in keys if overlay.get(k) is not None}
    memory = MemoryState()
    memory.apply({"a": b"1"}, [])
    assert present(memory, keys) == {"a"}  # a view without a batched read: key by key
    store.close()


def test_a_checkpointer_folds_the_log_in_and_stops_with_its_store(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = Store(path, checkpointer=True)
    for h in range(20):
        commit(store, h, [{f"k{h}/{n}": b"v" * 100 for n in range(200)}])
    # the writer would checkpoint by itself only past a gigabyte of log: the rows reach the database file
    # (checkpointed) because the checkpointer copies them there after each commit
    deadline = time.monotonic() + 10
    while path.stat().st_size < 1_000_000 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.stat().st_size >= 1_000_000, path.stat().st_size
    names = {t.name for t in threading.enumerate()}
    assert "liangcao-ckpt" in names
    store.close()
    assert "liangcao-ckpt" not in {t.name for t in threading.enumerate()}
    again = Store(path)
    assert again.get("k19/199") == b"v" * 100 and again.key_history("k0/0") == [(0, 0, b"v" * 100)]
    again.close()
