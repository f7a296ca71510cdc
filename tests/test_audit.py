"""Audit: an untouched store passes; one altered byte in any table is found and named."""

from __future__ import annotations

import random
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from conftest import NOW_MS, Chain, open_ledger
from liangcao import encoding
from liangcao.apps.bundle import default_registry
from liangcao.codes import Code
from liangcao.contracts.runtime import ContractRuntime
from liangcao.crypto import keys
from liangcao.crypto.identity import fingerprint
from liangcao.ledger.store import SCHEMA_VERSION
from liangcao.node.audit import AuditReport, audit
from liangcao.node.genesis import Consortium
from liangcao.node.storecheck import check_store
from test_store_history import SCHEMA_1

MEMBERS = [f"org{o}/{m}" for o in (1, 2, 3) for m in ("alice", "bob")]


def mixed_workload(chain: Chain, blocks: int = 12, per_block: int = 25, seed: int = 7) -> dict[int, int]:
    """Valid and invalid transactions of every kind, spread over blocks. Returns a count per code."""
    rng = random.Random(seed)
    codes: dict[int, int] = {}
    committed: list[bytes] = []
    for b in range(blocks):
        txs: list[bytes] = []
        for _ in range(per_block):
            kind = rng.choice(
                ["mint", "transfer", "transfer", "transfer", "bad_sig", "expired", "replay", "unknown", "bad_args"]
            )
            sender = rng.choice(MEMBERS)
            org, name = sender.split("/")
            to = rng.choice(MEMBERS)
            if kind == "mint":
                t = chain.tx(
                    "demo.wallet", "mint", {"to": to, "amount": rng.randint(1, 10_000)}, chain.signer(org, "admin")
                )
            elif kind == "transfer":
                t = chain.tx(
                    "demo.wallet", "transfer", {"to": to, "amount": rng.randint(1, 3_000)}, chain.signer(org, name)
                )
            elif kind == "bad_sig":
                t = chain.tx("demo.wallet", "transfer", {"to": to, "amount": 1}, chain.signer(org, name))
                env: Any = encoding.decode(t.raw)
                env["signatures"][0]["sig"] = keys.b64(bytes(64))
                txs.append(encoding.canonical(env))
                continue
            elif kind == "expired":
                t = chain.tx(
                    "demo.wallet", "mint", {"to": to, "amount": 1}, chain.signer(org, "admin"), not_after=NOW_MS - 1
                )
            elif kind == "replay" and committed:
                txs.append(rng.choice(committed))
                continue
            elif kind == "unknown":
                t = chain.tx("nope", "x", {}, chain.signer(org, name))
            else:
                t = chain.tx("demo.wallet", "mint", {"to": 5}, chain.signer(org, "admin"))
            txs.append(t.raw)
        if b == 5:  # a governance change and a revocation in the middle of the history
            txs.append(
                chain.tx(
                    "consortium",
                    "set_policy",
                    {"name": "finality", "num": 2, "den": 3},
                    chain.signer("org1", "admin"),
                    chain.signer("org2", "admin"),
                ).raw
            )
            fp = fingerprint(chain.c.org("org3").members["bob"].cert)
            txs.append(
                chain.tx(
                    "consortium",
                    "revoke_cert",
                    {"fingerprint": fp},
                    chain.signer("org1", "admin"),
                    chain.signer("org3", "admin"),
                ).raw
            )
        for r in chain.commit(txs):
            codes[r["code"]] = codes.get(r["code"], 0) + 1
        committed.extend(txs[:3])
    return codes


def run_audit(path: Path) -> AuditReport:
    return audit(path, lambda: ContractRuntime(default_registry()))


@pytest.fixture(scope="module")
def audited_store(tmp_path_factory: pytest.TempPathFactory, consortium: Consortium) -> Path:
    path = tmp_path_factory.mktemp("audit") / "ledger.sqlite"
    ledger = open_ledger(path)
    ledger.apply(consortium.genesis)
    chain = Chain(ledger, consortium)
    codes = mixed_workload(chain)
    # the workload really is mixed: successes and each kind of refusal
    for code in (
        Code.OK,
        Code.BAD_SIGNATURE,
        Code.EXPIRED,
        Code.DUPLICATE_TX,
        Code.UNKNOWN_CONTRACT,
        Code.INVALID_ARGUMENT,
        Code.INSUFFICIENT_FUNDS,
        Code.CERTIFICATE_REVOKED,
    ):
        assert codes.get(code, 0) > 0, (code, codes)
    assert sum(codes.values()) >= 300
    ledger.close()
    return path


def test_untouched_store_passes_after_reopen(audited_store: Path, consortium: Consortium) -> None:
    report = run_audit(audited_store)
    assert report.ok, [str(f) for f in report.findings]
    assert report.blocks == 13 and report.txs >= 300
    # reopening gives the same head, and a rebuild from blocks alone gives the same state
    ledger = open_ledger(audited_store)
    head = ledger.head
    before = dict(ledger.store.range(""))
    assert ledger.rebuild() == 13
    assert dict(ledger.store.range("")) == before and ledger.head == head
    ledger.close()


def _flip(value: Any) -> Any:
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        i = len(value) // 2
        return value[:i] + ("0" if value[i] != "0" else "1") + value[i + 1 :]
    data = bytearray(value)
    data[len(data) // 2] ^= 0x01
    return bytes(data)


# (table, column, which row, what the finding's place must mention)
TAMPERS = [
    ("blocks", "header", "height=7", "height 7"),
    ("blocks", "hash", "height=3", "height 3"),
    ("blocks", "seal", "height=9", "height 9"),
    ("blocks", "seal", "height=0", "height 0"),
    ("txs", "raw", "height=4 AND idx=2", "height 4"),
    ("txs", "tx_id", "height=6 AND idx=0", "height 6 tx 0"),
    ("txs", "consumed", "height=2 AND idx=1", "height 2 tx 1"),
    ("receipts", "receipt", "height=8 AND idx=3", "height 8"),
    ("receipts", "code", "height=10 AND idx=5", "height 10 tx 5"),
    ("state", "value", "key=CAST('demo.wallet/supply' AS BLOB)", "key demo.wallet/supply"),
    ("state", "key", "key=CAST('demo.wallet/supply' AS BLOB)", "key demo.wallet/supply"),
    ("state", "height", "key=CAST('consortium/version' AS BLOB)", "key consortium/version"),
    ("state", "idx", "key=CAST('consortium/version' AS BLOB)", "key consortium/version"),
    (
        "history",
        "value",
        "(height, idx, key)=(SELECT height, idx, key FROM history WHERE height=11 LIMIT 1)",
        "height 11",
    ),
    (
        "history",
        "prev_height",
        "(height, idx, key)=(SELECT height, idx, key FROM history WHERE prev_height=4 LIMIT 1)",
        "tx",
    ),
    ("history", "next_idx", "(height, idx, key)=(SELECT height, idx, key FROM history WHERE next_idx>0 LIMIT 1)", "tx"),
    ("events", "data", "height=12 AND idx=(SELECT MIN(idx) FROM events WHERE height=12) AND seq=0", "height 12"),
    ("events", "name", "height=1 AND idx=(SELECT MIN(idx) FROM events WHERE height=1) AND seq=0", "height 1"),
    ("meta", "value", "name='schema_version'", "schema_version"),
]


@pytest.mark.parametrize(("table", "column", "where", "place"), TAMPERS)
def test_one_altered_byte_is_found_and_named(
    audited_store: Path, tmp_path: Path, table: str, column: str, where: str, place: str
) -> None:
    copy = tmp_path / "tampered.sqlite"
    shutil.copy(audited_store, copy)
    db = sqlite3.connect(copy)
    rows = db.execute(f"SELECT {column} FROM {table} WHERE {where}").fetchall()
    assert len(rows) == 1, "the row to tamper with must exist, and be one row"
    db.execute(f"UPDATE {table} SET {column}=? WHERE {where}", (_flip(rows[0][0]),))
    db.commit()
    db.close()
    report = run_audit(copy)
    assert not report.ok
    assert any(f.table == table and place in f.place for f in report.findings), [str(f) for f in report.findings]


def test_deleted_block_row_is_found(audited_store: Path, tmp_path: Path) -> None:
    copy = tmp_path / "gap.sqlite"
    shutil.copy(audited_store, copy)
    db = sqlite3.connect(copy)
    db.execute("DELETE FROM receipts WHERE height=5 AND idx=0")
    db.commit()
    db.close()
    report = run_audit(copy)
    assert any(f.table == "receipts" and "height 5" in f.place for f in report.findings)


def test_a_schema_1_store_is_upgraded_and_replayed_from_its_blocks(audited_store: Path, tmp_path: Path) -> None:
    old = tmp_path / "ledger.sqlite"
    shutil.copy(audited_store, old)
    with sqlite3.connect(old) as db:
        db.executescript(SCHEMA_1)
    ledger = open_ledger(old)  # opening it upgrades the schema and replays the blocks
    assert ledger.store.meta("schema_version") == str(SCHEMA_VERSION)
    assert not ledger.store.rebuild_needed
    ledger.close()
    report = run_audit(old)
    assert report.ok, [str(f) for f in report.findings]
    assert check_store(old) == []
