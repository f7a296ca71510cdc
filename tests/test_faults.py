"""Two error channels: an I/O error is this machine's fault, never a transaction's outcome.

An SQLite error is injected into the real store's connection at several points of a block's execution and
commit (a state read inside the contract, a read that contract code swallows, the replay check, the block
insert, the state write, the commit itself). Each time the block must not be committed and no receipt may
record the fault; after the fault is gone, the same block executes to the same hashes as on a healthy peer.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import NOW_MS
from liangcao.apps.bundle import default_registry
from liangcao.contracts.base import Args, Context, Contract, Registry, run_guarded, transaction
from liangcao.contracts.runtime import ContractRuntime
from liangcao.errors import Fault, LiangcaoError, StoreError
from liangcao.ledger import tx as txm
from liangcao.ledger.chain import Ledger
from liangcao.node.genesis import Consortium


class KeyArgs(Args):
    key: str


class Swallower(Contract):
    """Contract code that catches everything around a read: it must not hide a fault from the executor."""

    name = "swallow"

    @transaction
    def read(self, ctx: Context, args: KeyArgs) -> int:
        try:
            ctx.get(args.key)
        except Exception:
            return 0
        return 1


class FailingConnection:
    """The store's real connection, except that the statement matching ``needle`` fails ``times`` times."""

    def __init__(self, db: sqlite3.Connection, needle: str, times: int = 1) -> None:
        self._db = db
        self.needle = needle
        self.times = times

    def _check(self, sql: str) -> None:
        if self.needle in sql and self.times > 0:
            self.times -= 1
            raise sqlite3.OperationalError("disk I/O error (injected)")

    def execute(self, sql: str, *args: Any) -> Any:
        self._check(sql)
        return self._db.execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> Any:
        self._check(sql)
        return self._db.executemany(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def registry() -> Registry:
    reg = default_registry()
    reg.add(Swallower())
    return reg


def open_ledger(path: Path, c: Consortium) -> Ledger:
    ledger = Ledger.open(path, ContractRuntime(registry()))
    if ledger.head is None:
        ledger.apply(c.genesis)
    return ledger


@pytest.fixture
def pair(tmp_path: Path, consortium: Consortium) -> Iterator[tuple[Ledger, Ledger]]:
    sick, healthy = open_ledger(tmp_path / "sick.sqlite", consortium), open_ledger(tmp_path / "ok.sqlite", consortium)
    yield sick, healthy
    sick.close()
    healthy.close()


def block_txs(c: Consortium) -> list[bytes]:
    admin, alice = c.org("org1").signer("admin"), c.org("org1").signer("alice")
    build = txm.build
    return [
        build(
            c.chain_id, "demo.wallet", "mint", {"to": "org1/alice", "amount": 10}, [admin], not_after=NOW_MS + 60_000
        ).raw,
        build(c.chain_id, "swallow", "read", {"key": "k"}, [alice], not_after=NOW_MS + 60_000).raw,
        build(
            c.chain_id, "demo.wallet", "transfer", {"to": "org2/bob", "amount": 3}, [alice], not_after=NOW_MS + 60_000
        ).raw,
    ]


@pytest.mark.parametrize(
    "needle",
    [
        "SELECT value FROM state WHERE key=?",  # the first state read (the wallet's balance, the swallower's key)
        "SELECT 1 FROM txs WHERE tx_id=?",  # the replay check
        "INSERT INTO blocks",  # commit: the block row
        "INTO state(",  # commit: the state writes
        "COMMIT",  # commit: the end of the SQLite transaction
    ],
)
def test_an_io_error_stops_the_commit_and_never_becomes_a_receipt(
    pair: tuple[Ledger, Ledger], consortium: Consortium, needle: str
) -> None:
    sick, healthy = pair
    orderer = consortium.org("org1").signer("orderer0")
    txs = block_txs(consortium)
    head = sick.head
    sick.store._db = FailingConnection(sick.store._db, needle)  # type: ignore[assignment]
    with pytest.raises((Fault, sqlite3.Error)) as exc:
        sick.produce(txs, NOW_MS + 1000, orderer)
    assert not isinstance(exc.value, LiangcaoError)  # never a business outcome
    assert sick.head == head and sick.store.height() == head.height  # nothing committed
    # The fault is gone (a restart: a fresh store object on the same file); the block executes to the same hashes.
    sick.close()
    again = open_ledger(sick.store.path, consortium)
    try:
        block, ex = again.produce(txs, NOW_MS + 1000, orderer)
        good, ex_ok = healthy.produce(txs, NOW_MS + 1000, orderer)
        assert block.header == good.header
        assert ex.receipts == ex_ok.receipts
        assert ex.codes == [0, 0, 0]
    finally:
        again.close()


def test_a_swallowed_read_error_still_stops_the_commit(pair: tuple[Ledger, Ledger], consortium: Consortium) -> None:
    sick, _ = pair
    raws = block_txs(consortium)[1:2]  # only the swallowing contract
    sick.store._db = FailingConnection(sick.store._db, "SELECT value FROM state WHERE key=?")  # type: ignore[assignment]
    with pytest.raises(StoreError):
        sick.produce(raws, NOW_MS + 1000, consortium.org("org1").signer("orderer0"))
    assert sick.store.height() == 0


def test_faults_are_not_business_outcomes() -> None:
    for fault in (StoreError(500, "disk"), MemoryError(), OSError("io")):

        def boom(f: BaseException = fault) -> None:
            raise f

        with pytest.raises(type(fault)):
            run_guarded(boom)
    assert not issubclass(Fault, LiangcaoError)
    # a business failure and a contract bug remain receipts
    assert run_guarded(lambda: 1 // 0)[0] != 0
