"""Audit of real consortium peer stores (two organisations' nodes ordering through Debian's nats-server):
the honest store, with its ``jetstream_resume`` meta row, passes; altered or unknown meta rows are named;
a store rolled back to an earlier copy is found from the attestations the network's stream holds."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from liangcao.apps.bundle import default_registry
from liangcao.cli.audit import network_attestations
from liangcao.contracts.runtime import ContractRuntime
from liangcao.ledger import tx as txm
from liangcao.node.audit import RESUME_META, AuditReport, audit
from liangcao.node.genesis import Consortium, create_consortium
from liangcao.node.link import JetStreamLink
from liangcao.node.node import Node, NodeSettings
from liangcao.ordering.natsserver import NatsCluster


def run_audit(path: Path, **pins: Any) -> AuditReport:
    return audit(path, lambda: ContractRuntime(default_registry()), **pins)


def wait_for(cond: Any, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@dataclass
class Stores:
    net: Consortium
    urls: list[str]
    org1: Path  # org1's final store (honest)
    org2: Path
    earlier: Path  # a copy of org1's store from before its last run: a consistent rollback
    earlier_head: int
    head: int


def node(c: Consortium, org: str, path: Path, urls: list[str]) -> Node:
    return Node(
        path,
        c.genesis,
        orderer=c.org(org).signer("orderer0"),
        peer=c.org(org).signer("peer0"),
        settings=NodeSettings(block_txs_max=50, block_wait_ms=10, verify_workers=1),
        link=JetStreamLink(urls, c.chain_id, 3),
    )


def mint(c: Consortium, n: int, start: int) -> list[bytes]:
    admin = c.org("org1").signer("admin")
    not_after = int(time.time() * 1000) + 600_000
    return [
        txm.build(
            c.chain_id, "demo.wallet", "mint", {"to": "org1/alice", "amount": i + 1}, [admin], not_after=not_after
        ).raw
        for i in range(start, start + n)
    ]


def run_both(c: Consortium, urls: list[str], root: Path, start: int) -> None:
    """org1's and org2's nodes commit a few blocks together and exchange attestations; then both stop."""
    a, b = node(c, "org1", root / "org1.sqlite", urls), node(c, "org2", root / "org2.sqlite", urls)
    a.start()
    b.start()
    try:
        for wave in range(3):
            raws = mint(c, 20, start + 20 * wave)
            for raw in raws:
                a.submit(raw)
            last = txm.parse(raws[-1]).tx_id
            wait_for(lambda: a.reader().tx_seen(last) and b.reader().tx_seen(last))  # noqa: B023
        wait_for(
            lambda: (
                b.head.hash == a.head.hash
                and len(a.reader().attestations(a.head.height)) == 2
                and len(b.reader().attestations(b.head.height)) == 2
            )
        )
    finally:
        b.stop()
        a.stop()


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stores]:
    root = tmp_path_factory.mktemp("consortium-audit")
    c = create_consortium(3, chain_id=f"audit-{time.time_ns()}", now_ms=int(time.time() * 1000))
    with NatsCluster(root / "nats", 3) as cluster:
        run_both(c, cluster.urls, root, 0)
        earlier = root / "earlier.sqlite"
        shutil.copy(root / "org1.sqlite", earlier)
        run_both(c, cluster.urls, root, 1000)
        heads = [run_audit(p).head for p in (earlier, root / "org1.sqlite")]
        assert heads[0] < heads[1]
        yield Stores(c, cluster.urls, root / "org1.sqlite", root / "org2.sqlite", earlier, heads[0], heads[1])


def meta(path: Path) -> dict[str, str]:
    db = sqlite3.connect(path)
    try:
        return dict(db.execute("SELECT name, value FROM meta").fetchall())
    finally:
        db.close()


def test_honest_consortium_stores_pass(stores: Stores) -> None:
    evidence = network_attestations(stores.urls, stores.net.chain_id)
    assert len(evidence) >= 2 * stores.head  # both peers' attestations of (nearly) every block
    for path, peer in ((stores.org1, "org1/peer0"), (stores.org2, "org2/peer0")):
        resume = json.loads(meta(path)[RESUME_META])  # the row the node writes with every block
        report = run_audit(path, genesis_hash=stores.net.genesis.hash, peer=peer, evidence=evidence)
        assert report.ok, [str(f) for f in report.findings]
        assert resume["height"] == report.head == stores.head and not report.notes
        # another organisation's attestations are stored, each by a trusted peer
        db = sqlite3.connect(path)
        members = {r[0] for r in db.execute("SELECT DISTINCT member FROM attestations")}
        db.close()
        assert members == {"org1/peer0", "org2/peer0"}


def _set_meta(src: Path, dst: Path, name: str, value: str | None) -> Path:
    shutil.copy(src, dst)
    db = sqlite3.connect(dst)
    if value is None:
        db.execute("DELETE FROM meta WHERE name=?", (name,))
    else:
        db.execute("INSERT OR REPLACE INTO meta(name, value) VALUES (?, ?)", (name, value))
    db.commit()
    db.close()
    return dst


def _resume(stores: Stores, **change: int) -> str:
    return json.dumps({**json.loads(meta(stores.org1)[RESUME_META]), **change})


ALTERED = [
    ("above the head", lambda s: _resume(s, height=s.head + 1), "above the head"),
    ("below the head", lambda s: _resume(s, height=s.head - 1), "below the head"),
    ("another time", lambda s: _resume(s, time_ms=json.loads(_resume(s))["time_ms"] + 10**9), "time"),
    ("a cut before the resume point", lambda s: _resume(s, cut_seq=0), "not one a committed block leaves"),
    ("a missing field", lambda s: json.dumps({"height": s.head}), "non-negative integers"),
    ("a negative number", lambda s: _resume(s, resume_seq=-1), "non-negative integers"),
    ("another form", lambda s: _resume(s).replace(", ", ","), "form the node writes"),
    ("not JSON", lambda s: "{", "not JSON"),
]


@pytest.mark.parametrize(("what", "value", "words"), ALTERED, ids=[a[0] for a in ALTERED])
def test_an_altered_stream_position_is_named(stores: Stores, tmp_path: Path, what: str, value: Any, words: str) -> None:
    copy = _set_meta(stores.org1, tmp_path / "meta.sqlite", RESUME_META, value(stores))
    report = run_audit(copy)
    assert [(f.table, f.place) for f in report.findings] == [("meta", RESUME_META)], [str(f) for f in report.findings]
    assert words in report.findings[0].message


def test_an_unknown_meta_row_is_named(stores: Stores, tmp_path: Path) -> None:
    copy = _set_meta(stores.org1, tmp_path / "meta.sqlite", "chain_id", "elsewhere")
    report = run_audit(copy)
    assert [(f.table, f.place) for f in report.findings] == [("meta", "chain_id")]
    copy = _set_meta(stores.org1, tmp_path / "meta2.sqlite", "schema_version", None)
    assert [(f.table, f.place) for f in run_audit(copy).findings] == [("meta", "schema_version")]


def test_a_rolled_back_peer_store_is_found_from_the_networks_stream(stores: Stores) -> None:
    # the earlier copy is consistent, stream position included: on its own it passes
    assert json.loads(meta(stores.earlier)[RESUME_META])["height"] == stores.earlier_head
    assert run_audit(stores.earlier, genesis_hash=stores.net.genesis.hash, peer="org1/peer0").ok
    evidence = network_attestations(stores.urls, stores.net.chain_id)
    report = run_audit(stores.earlier, genesis_hash=stores.net.genesis.hash, peer="org1/peer0", evidence=evidence)
    rolled = {f.place for f in report.findings if f.table == "blocks" and "rolled back" in f.message}
    assert rolled == {f"height {h}" for h in range(stores.earlier_head + 1, stores.head + 1)}, [
        str(f) for f in report.findings
    ]
    # the command line reads the stream itself
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "liangcao.cli",
            "audit",
            "--db",
            str(stores.earlier),
            "--genesis-hash",
            stores.net.genesis.hash,
            "--peer",
            "org1/peer0",
            "--nats",
            ",".join(stores.urls),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "300"},
    )
    assert r.returncode == 1 and f"blocks @ height {stores.head}: this node's peer org1/peer0" in r.stderr, r.stderr
