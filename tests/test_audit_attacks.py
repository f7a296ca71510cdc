"""Audit against an attacker who holds the disk but no keys: a consistent rollback, another chain's store,
forged attestation rows, a BLOB stored as TEXT. Each attack is performed on a copy of a real node's store
(a solo node run from a network folder), and the audit must name its place; the honest store passes."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conftest import NOW_MS, Chain, open_ledger
from liangcao import encoding
from liangcao.apps.bundle import default_registry
from liangcao.cli import app
from liangcao.contracts.runtime import ContractRuntime
from liangcao.crypto.identity import fingerprint
from liangcao.ledger import block as blk
from liangcao.ledger import tx as txm
from liangcao.node.audit import AuditReport, audit
from liangcao.node.genesis import Consortium, create_consortium, make_org
from liangcao.node.home import NodeHome, init_network
from liangcao.procs import free_port

PEER = "org1/peer0"


def run_audit(path: Path, **pins: Any) -> AuditReport:
    return audit(path, lambda: ContractRuntime(default_registry()), **pins)


def found(report: AuditReport, table: str, place: str, words: str = "") -> bool:
    return any(f.table == table and f.place == place and words in f.message for f in report.findings)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "liangcao.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "300"},
    )


def cli_here(*args: str) -> subprocess.CompletedProcess[str]:
    """``cli`` in this process: the same command code without the ~1.5 s interpreter start (``cli`` keeps the real
    entry point covered, passing and failing)."""
    r = CliRunner().invoke(app, list(args), env={"COLUMNS": "300"})
    # An exception escaping the command would be a traceback in a real process: never expected.
    assert r.exception is None or isinstance(r.exception, SystemExit), (args, r.exc_info)
    return subprocess.CompletedProcess(["liangcao", *args], r.exit_code, r.stdout, r.stderr)


def copy_store(src: Path, dst: Path) -> Path:
    """A stopped node's store (its WAL checkpointed at close) as a file of its own."""
    shutil.copy(src, dst)
    return dst


@dataclass
class Net:
    root: Path  # the network folder; its node's store is the final (honest) one
    consortium: Consortium
    earlier: Path  # a copy of the store taken when the node was stopped one run before: a rollback
    earlier_head: int
    head: int
    head_hash: str

    @property
    def store(self) -> Path:
        return self.root / "node" / "ledger.sqlite"

    @property
    def genesis_hash(self) -> str:
        return self.consortium.genesis.hash

    def rows(self, sql: str, *params: Any) -> list[Any]:
        db = sqlite3.connect(self.store)
        try:
            return db.execute(sql, params).fetchall()
        finally:
            db.close()


def run_node(root: Path, waves: int, start: int) -> None:
    """Start the network folder's node, commit ``waves`` blocks of mints, stop it."""
    home = NodeHome.open(root)
    c = Consortium.load(root)
    admin = c.org("org1").signer("admin")
    node = home.node(verify_workers=1)
    node.start()
    try:
        for w in range(waves):
            txs = [
                txm.build(
                    c.chain_id,
                    "demo.wallet",
                    "mint",
                    {"to": "org2/alice", "amount": start + 10 * w + i + 1},
                    [admin],
                    not_after=int(time.time() * 1000) + 600_000,
                )
                for i in range(5)
            ]
            for t in txs:
                node.submit(t.raw)
            deadline = time.monotonic() + 60
            while not node.reader().tx_seen(txs[-1].tx_id):
                assert time.monotonic() < deadline, "the node did not commit"
                time.sleep(0.01)
    finally:
        node.stop()


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Net:
    base = tmp_path_factory.mktemp("attacks")
    root = base / "net"
    init_network(root, 3, port=free_port(0), block_wait_ms=5)
    run_node(root, 3, 0)
    earlier = copy_store(root / "node" / "ledger.sqlite", base / "earlier.sqlite")
    run_node(root, 2, 100)
    c = Consortium.load(root)
    # The other organisations' peers' attestations of every block, as a consortium peer keeps them.
    ledger = open_ledger(root / "node" / "ledger.sqlite")
    head = ledger.head
    assert head is not None
    for h in range(head.height + 1):
        header = ledger.store.header(h)
        assert header is not None
        for org in ("org2", "org3"):
            p = c.org(org).members["peer0"]
            att = blk.make_attestation(p.key, p.cert, c.chain_id, h, header.hash, header.state_hash)
            ledger.store.add_attestation(h, f"{org}/peer0", encoding.canonical(att))
    ledger.close()
    earlier_head = open_ledger(earlier).store.height()
    assert 2 <= earlier_head < head.height
    return Net(root, c, earlier, earlier_head, head.height, head.hash)


def attestation_rows(path: Path, member: str | None = None) -> list[bytes]:
    db = sqlite3.connect(path)
    try:
        sql = "SELECT attestation FROM attestations" + (" WHERE member=?" if member else "")
        return [bytes(r[0]) for r in db.execute(sql, (member,) if member else ())]
    finally:
        db.close()


# ---- the honest store ------------------------------------------------------------------------------------
def test_the_honest_store_passes_with_every_pin(net: Net) -> None:
    report = run_audit(
        net.store,
        genesis_hash=net.genesis_hash,
        expect_head=(net.head, net.head_hash),
        peer=PEER,
        evidence=attestation_rows(net.store),
    )
    assert report.ok, [str(f) for f in report.findings]
    assert report.genesis_pinned and report.genesis_hash == net.genesis_hash and report.head == net.head
    assert not report.notes
    # every height is attested by this node's peer and the two others
    assert len(net.rows("SELECT 1 FROM attestations")) == 3 * (net.head + 1)
    r = cli("audit", "--home", str(net.root), "--expect-head", f"{net.head}:{net.head_hash}")
    assert r.returncode == 0 and "audit passed" in r.stdout, r.stderr
    assert "not pinned" not in r.stderr


# ---- 1. a consistent rollback ------------------------------------------------------------------------------
def test_a_consistent_rollback_passes_on_its_own_as_documented(net: Net) -> None:
    # An earlier copy of the store is exactly what deleting the last blocks consistently leaves: nothing in
    # it contradicts it. This is the limit docs/operator.md states; the next tests are the remedies.
    report = run_audit(net.earlier, genesis_hash=net.genesis_hash, peer=PEER)
    assert report.ok and report.head == net.earlier_head


def test_a_rollback_is_found_from_the_networks_attestations_of_this_peer(net: Net) -> None:
    evidence = attestation_rows(net.store)  # what the network holds: every peer's attestations
    report = run_audit(net.earlier, genesis_hash=net.genesis_hash, peer=PEER, evidence=evidence)
    place = f"height {net.head}"
    assert found(report, "blocks", place, "rolled back"), [str(f) for f in report.findings]
    assert found(report, "blocks", f"height {net.earlier_head + 1}", f"peer {PEER} attested")
    # without knowing which peer is this node's, the network being ahead is only a note (a lag looks alike)
    report = run_audit(net.earlier, genesis_hash=net.genesis_hash, evidence=evidence)
    assert report.ok and any(f"up to height {net.head}" in n for n in report.notes), report.notes
    # another organisation's attestations above the head alone: a note too (this node may just lag)
    others = attestation_rows(net.store, "org2/peer0")
    report = run_audit(net.earlier, genesis_hash=net.genesis_hash, peer=PEER, evidence=others)
    assert report.ok and report.notes


def test_a_rollback_is_found_from_a_pinned_head(net: Net) -> None:
    report = run_audit(net.earlier, expect_head=(net.head, net.head_hash))
    assert found(report, "blocks", f"height {net.head}", "rolled back"), [str(f) for f in report.findings]
    report = run_audit(net.store, expect_head=(2, "ab" * 32))
    assert found(report, "blocks", "height 2", "not the pinned")


def test_an_attestation_above_the_head_left_in_the_store_is_found(net: Net, tmp_path: Path) -> None:
    # A rollback that deletes the blocks but keeps any attestation (ours or another organisation's) of them.
    copy = copy_store(net.earlier, tmp_path / "careless.sqlite")
    h = net.earlier_head + 1
    db = sqlite3.connect(copy)
    for member, raw in net.rows("SELECT member, attestation FROM attestations WHERE height=?", h):
        if member == "org2/peer0":
            db.execute("INSERT INTO attestations VALUES (?, ?, ?)", (h, member, raw))
    db.commit()
    db.close()
    report = run_audit(copy)
    assert found(report, "attestations", f"height {h} by org2/peer0", "above the head"), [
        str(f) for f in report.findings
    ]


def test_cli_finds_a_rollback_from_an_attestations_file_and_a_pinned_head(net: Net, tmp_path: Path) -> None:
    home = tmp_path / "net"
    shutil.copytree(net.root, home)
    for suffix in ("", "-wal", "-shm"):
        (home / "node" / f"ledger.sqlite{suffix}").unlink(missing_ok=True)
    shutil.copy(net.earlier, home / "node" / "ledger.sqlite")
    # the evidence as another organisation's node answers GET /v1/attestations/{height}
    answers = [
        {"height": h, "attestations": [encoding.decode(bytes(r[0])) for r in rows]}
        for h in range(net.earlier_head + 1, net.head + 1)
        if (rows := net.rows("SELECT attestation FROM attestations WHERE height=?", h))
    ]
    (tmp_path / "atts.json").write_text(json.dumps(answers))
    r = cli("audit", "--home", str(home), "--attestations", str(tmp_path / "atts.json"))
    assert r.returncode == 1 and f"blocks @ height {net.head}: this node's peer {PEER}" in r.stderr, r.stderr
    r = cli_here("audit", "--home", str(home), "--expect-head", str(net.head))
    assert r.returncode == 1 and f"blocks @ height {net.head}: the pinned head" in r.stderr, r.stderr
    r = cli_here("audit", "--home", str(home), "--expect-head", "x:y")
    assert r.returncode == 1 and "--expect-head is HEIGHT" in r.stderr


# ---- 2. another chain's store --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def other_chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of another consortium with the same (default) chain id: self-consistent, and not ours."""
    other = create_consortium(3)  # chain id "liangcao-local", like every local network
    path = tmp_path_factory.mktemp("other") / "ledger.sqlite"
    ledger = open_ledger(path)
    ledger.apply(other.genesis)
    chain = Chain(ledger, other)
    chain.run("demo.wallet", "mint", {"to": "org1/alice", "amount": 5}, chain.signer("org1", "admin"))
    ledger.close()
    return path


def test_a_store_replaced_by_another_chains_is_found(net: Net, other_chain: Path, tmp_path: Path) -> None:
    assert run_audit(other_chain).ok  # unpinned it is merely self-consistent
    report = run_audit(other_chain, genesis_hash=net.genesis_hash)
    assert found(report, "blocks", "height 0", "another chain"), [str(f) for f in report.findings]
    home = tmp_path / "net"
    shutil.copytree(net.root, home)
    for suffix in ("-wal", "-shm"):
        (home / "node" / f"ledger.sqlite{suffix}").unlink(missing_ok=True)
    shutil.copy(other_chain, home / "node" / "ledger.sqlite")
    r = cli("audit", "--home", str(home))
    assert r.returncode == 1 and "blocks @ height 0: genesis block" in r.stderr, r.stderr
    r = cli_here("audit", "--db", str(other_chain), "--genesis-hash", net.genesis_hash)
    assert r.returncode == 1 and "the store holds another chain" in r.stderr, r.stderr
    r = cli_here("audit", "--db", str(other_chain))
    assert r.returncode == 0 and "genesis not pinned" in r.stderr
    # a network folder whose genesis.json was swapped too disagrees with its consortium.json
    (home / "genesis.json").write_text(json.dumps(create_consortium(1).genesis.to_dict()))
    r = cli_here("audit", "--home", str(home))
    assert r.returncode == 1 and "consortium.json says" in r.stderr, r.stderr


# ---- 3. forged attestation rows ----------------------------------------------------------------------------
def _forged(net: Net, kind: str) -> tuple[int, str, bytes]:
    """(height, member, attestation row) of one forgery; height 2 unless the forgery says otherwise."""
    c = net.consortium
    h = 2
    b1 = net.rows("SELECT hash FROM blocks WHERE height=1")[0][0]
    header = blk.Header.from_bytes(net.rows("SELECT header FROM blocks WHERE height=?", h)[0][0])
    peer2 = c.org("org2").members["peer0"]

    def att(key: Any, cert: bytes, **change: Any) -> bytes:
        body: dict[str, Any] = {
            "chain_id": c.chain_id,
            "height": h,
            "block_hash": header.hash,
            "state_hash": header.state_hash,
        }
        body.update(change)
        return encoding.canonical(
            blk.make_attestation(key, cert, body["chain_id"], body["height"], body["block_hash"], body["state_hash"])
        )

    if kind == "self-made CA":  # a CA of the attacker's own naming itself org2: right hashes, no trust
        fake = make_org("org2", c.org("org2").org_type)
        return h, "org2/peer0", att(fake.members["peer0"].key, fake.members["peer0"].cert)
    if kind == "not a peer":  # a genuine member of org2, but no peer
        alice = c.org("org2").members["alice"]
        return h, "org2/alice", att(alice.key, alice.cert)
    if kind == "another height":  # a genuine attestation, filed under another height
        return h + 1, "org2/peer0", att(peer2.key, peer2.cert)
    if kind == "other hashes":
        return h, "org2/peer0", att(peer2.key, peer2.cert, block_hash=b1)
    if kind == "another chain":
        return h, "org2/peer0", att(peer2.key, peer2.cert, chain_id="liangcao-other")
    genuine = att(peer2.key, peer2.cert)
    if kind == "not canonical":
        return h, "org2/peer0", json.dumps(json.loads(genuine)).encode()
    if kind == "extra field":
        return h, "org2/peer0", encoding.canonical({**json.loads(genuine), "note": "x"})
    if kind == "another member's":
        return h, "org3/peer0", genuine
    raise AssertionError(kind)


FORGERIES = [
    ("self-made CA", "not a trusted peer"),
    ("not a peer", "not a trusted peer"),
    ("another height", "another member or height"),
    ("other hashes", "differ from the stored block"),
    ("another chain", "for chain"),
    ("not canonical", "canonical form"),
    ("extra field", "exactly the fields"),
    ("another member's", "another member or height"),
]


@pytest.mark.parametrize(("kind", "words"), FORGERIES)
def test_a_forged_attestation_row_is_found(net: Net, tmp_path: Path, kind: str, words: str) -> None:
    height, member, raw = _forged(net, kind)
    copy = copy_store(net.store, tmp_path / "forged.sqlite")
    db = sqlite3.connect(copy)
    db.execute("INSERT OR REPLACE INTO attestations VALUES (?, ?, ?)", (height, member, raw))
    db.commit()
    db.close()
    report = run_audit(copy)
    assert found(report, "attestations", f"height {height} by {member}", words), [str(f) for f in report.findings]
    assert all(f.table == "attestations" for f in report.findings)


def test_attestations_are_judged_by_the_configuration_from_their_height_on(
    tmp_path: Path, consortium: Consortium
) -> None:
    """A peer revoked at height 3 keeps its attestations of heights 0..2 and loses those of 3..; the peer of
    an organisation admitted at height 2 may attest heights before it (its node re-executed them)."""
    ledger = open_ledger(tmp_path / "ledger.sqlite")
    ledger.apply(consortium.genesis)
    chain = Chain(ledger, consortium)
    mint = {"to": "org1/alice", "amount": 1}
    chain.run("demo.wallet", "mint", mint, chain.signer("org1", "admin"))  # 1
    org4 = make_org("org4", "insurer", now_ms=NOW_MS)
    admins = [chain.signer("org1", "admin"), chain.signer("org2", "admin")]
    assert chain.run("consortium", "add_org", org4.org_args(), *admins)["code"] == 0  # 2
    peer3 = consortium.org("org3").members["peer0"]
    revoke = {"fingerprint": fingerprint(peer3.cert)}
    assert chain.run("consortium", "revoke_cert", revoke, *admins, org4.signer("admin"))["code"] == 0  # 3
    chain.run("demo.wallet", "mint", mint, chain.signer("org1", "admin"))  # 4
    head = ledger.head
    assert head is not None and head.height == 4
    for h in range(5):
        header = ledger.store.header(h)
        assert header is not None
        for member, p in (("org3/peer0", peer3), ("org4/peer0", org4.members["peer0"])):
            a = blk.make_attestation(p.key, p.cert, consortium.chain_id, h, header.hash, header.state_hash)
            ledger.store.add_attestation(h, member, encoding.canonical(a))
    ledger.close()
    report = run_audit(tmp_path / "ledger.sqlite")
    untrusted = {f.place for f in report.findings if "not a trusted peer" in f.message}
    assert untrusted == {"height 3 by org3/peer0", "height 4 by org3/peer0"}, [str(f) for f in report.findings]
    assert len(report.findings) == 2


# ---- 4. a BLOB stored as TEXT (and other storage classes) --------------------------------------------------
RETYPES = [
    ("blocks", "header", "height=3", "TEXT", "height 3"),
    ("blocks", "seal", "height=0", "TEXT", "height 0"),
    ("blocks", "hash", "height=2", "BLOB", "height 2"),
    ("txs", "raw", "height=2 AND idx=1", "TEXT", "height 2 tx 1"),
    ("txs", "tx_id", "height=2 AND idx=0", "BLOB", "height 2 tx 0"),
    ("txs", "consumed", "height=1 AND idx=0", "BLOB", "height 1 tx 0"),
    ("receipts", "receipt", "height=4 AND idx=2", "TEXT", "height 4 tx 2"),
    ("state", "value", "key=CAST('demo.wallet/supply' AS BLOB)", "TEXT", "key demo.wallet/supply"),
    ("state", "key", "key=CAST('demo.wallet/supply' AS BLOB)", "TEXT", "key demo.wallet/supply"),
    ("history", "value", "key=CAST('demo.wallet/supply' AS BLOB) AND height=1", "TEXT", "key demo.wallet/supply"),
    ("history", "key", "key=CAST('demo.wallet/supply' AS BLOB) AND height=2", "TEXT", "key demo.wallet/supply"),
    ("events", "data", "height=1 AND idx=0 AND seq=0", "TEXT", "height 1 tx 0 event 0"),
    ("attestations", "attestation", "height=2 AND member='org1/peer0'", "TEXT", "height 2 by org1/peer0"),
    ("attestations", "member", "height=2 AND member='org2/peer0'", "BLOB", "height 2 by org2/peer0"),
    ("meta", "value", "name='schema_version'", "BLOB", "schema_version"),
]


@pytest.mark.parametrize(("table", "column", "where", "cast", "place"), RETYPES)
def test_a_value_stored_with_another_storage_class_is_found(
    net: Net, tmp_path: Path, table: str, column: str, where: str, cast: str, place: str
) -> None:
    copy = copy_store(net.store, tmp_path / "retyped.sqlite")
    db = sqlite3.connect(copy)
    n = db.execute(f"UPDATE {table} SET {column} = CAST({column} AS {cast}) WHERE {where}").rowcount
    db.commit()
    db.close()
    assert n >= 1, "the row to retype must exist"
    report = run_audit(copy)
    stored_as = "text" if cast == "TEXT" else "blob"
    assert any(
        f.table == table and f.place.startswith(place) and f"column {column} is stored as {stored_as}" in f.message
        for f in report.findings
    ), [str(f) for f in report.findings]


def test_the_honest_storage_classes(net: Net) -> None:
    # what the check relies on: the store writes BLOBs as BLOBs (sqlite3 binds bytes as BLOB)
    assert net.rows("SELECT DISTINCT typeof(raw) FROM txs") == [("blob",)]
    assert net.rows("SELECT DISTINCT typeof(attestation) FROM attestations") == [("blob",)]
    assert {r[0] for r in net.rows("SELECT DISTINCT typeof(value) FROM history")} <= {"blob", "null"}
