"""A node as an operator runs it, in its own process: SIGTERM stops it within seconds even with an event stream
open, its verifier workers die with it even when it is killed, `liangcao bench` leaves no process and no
folder behind, and a transaction whose ordering the servers did not confirm is reported unknown (and is
committed once they answer again), never refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from liangcao.client import Client
from liangcao.crypto.signer import load_signer
from liangcao.node.home import NodeHome, init_network, member_dir
from liangcao.procs import free_port, pid_alive


def children(pid: int) -> set[int]:
    out: set[int] = set()
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            out |= {int(c) for c in (task / "children").read_text().split()}
    except OSError:
        pass
    return out


def start(home: Path, *args: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "liangcao.cli", "node", "start", "--home", str(home), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = NodeHome.open(home).url
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/v1/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, "the node did not start"
        time.sleep(0.1)


def load_workers(home: Path, n: int = 64) -> None:
    """Submit a batch large enough to be verified in the process pool (which spawns the workers)."""
    h = NodeHome.open(home)
    with Client(h.url) as c:
        admin = load_signer(member_dir(home, "org1/admin"))
        txs = [c.build("demo.wallet", "mint", {"to": "org1/alice", "amount": i + 1}, [admin]) for i in range(n)]
        assert all(r["status"] in ("pending", "committed") for r in c.submit_many(txs))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    init_network(tmp_path / "net", 3, port=free_port(0))
    return tmp_path / "net"


def test_sigterm_with_an_open_event_stream_stops_within_seconds(home: Path) -> None:
    proc = start(home, "--verify-workers", "2")
    try:
        load_workers(home)
        workers = children(proc.pid)
        assert len(workers) >= 2  # the verifier pool and the resource tracker
        h = NodeHome.open(home)
        token = h.auth().create("org1/admin", 1)
        got: list[str] = []
        opened = threading.Event()

        def follow() -> None:
            with (
                httpx.Client(base_url=h.url, timeout=None) as c,
                c.stream("GET", "/v1/events?follow=true", headers={"Authorization": f"Bearer {token}"}) as r,
            ):
                opened.set()
                for line in r.iter_lines():
                    got.append(line)

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        assert opened.wait(10)
        time.sleep(0.5)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        took = time.monotonic() - t0
        assert took < 8, f"SIGTERM took {took:.1f} s"  # about 1 s on a quiet machine
        reader.join(5)
        assert "event: end" in got and any('"code":502' in line for line in got)  # told why, to resume later
        deadline = time.monotonic() + 5
        while any(pid_alive(p) for p in workers):
            assert time.monotonic() < deadline, "verifier workers outlived their node"
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_verifier_workers_die_with_a_killed_node(home: Path) -> None:
    proc = start(home, "--verify-workers", "2")
    try:
        load_workers(home)
        workers = children(proc.pid)
        assert len(workers) >= 2
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 10
    while any(pid_alive(p) for p in workers):
        assert time.monotonic() < deadline, f"orphans after kill -9: {[p for p in workers if pid_alive(p)]}"
        time.sleep(0.1)


def bench_leftovers(tmp: Path) -> tuple[list[Path], list[int]]:
    folders = list(tmp.iterdir())
    procs = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes()
                environ = (p / "environ").read_bytes()
            except OSError:
                continue
            if str(tmp).encode() in cmd or f"TMPDIR={tmp}".encode() in environ:
                procs.append(int(p.name))
    return folders, [p for p in procs if pid_alive(p)]


def test_bench_leaves_no_process_and_no_folder(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "liangcao.cli", "bench", "--txs", "400", "--batch", "200", "--latency-s", "1"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    time.sleep(1)
    assert bench_leftovers(tmp) == ([], [])
    # stopped half-way by SIGTERM: the same (a longer run, so that the signal lands in the middle of it)
    cmd[cmd.index("400")] = "20000"
    bench = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not any(f.name.startswith("liangcao-bench-") for f in tmp.iterdir()):
        assert time.monotonic() < deadline and bench.poll() is None
        time.sleep(0.1)
    time.sleep(3)  # the node is up by now
    bench.send_signal(signal.SIGTERM)
    assert bench.wait(60) != 0
    deadline = time.monotonic() + 10
    while bench_leftovers(tmp) != ([], []):
        assert time.monotonic() < deadline, f"left behind: {bench_leftovers(tmp)}"
        time.sleep(0.2)


def test_an_unconfirmed_transaction_is_unknown_then_committed(tmp_path: Path) -> None:
    from liangcao.ledger import tx as txm
    from liangcao.node.genesis import create_consortium
    from liangcao.node.link import JetStreamLink
    from liangcao.node.node import Node, NodeSettings
    from liangcao.ordering.natsserver import NatsCluster

    c = create_consortium(3, chain_id=f"unknown-{time.time_ns()}", now_ms=int(time.time() * 1000))
    with NatsCluster(tmp_path / "nats", 3) as cluster:
        node = Node(
            tmp_path / "org1.sqlite",
            c.genesis,
            orderer=c.org("org1").signer("orderer0"),
            peer=c.org("org1").signer("peer0"),
            settings=NodeSettings(block_txs_max=100, block_wait_ms=20, verify_workers=1),
            link=JetStreamLink(cluster.urls, c.chain_id, 3),
        )
        node.start()
        try:
            admin = c.org("org1").signer("admin")
            t = txm.build(c.chain_id, "demo.wallet", "mint", {"to": "org1/alice", "amount": 5}, [admin],
                          not_after=int(time.time() * 1000) + 600_000)  # fmt: skip
            for n in cluster.nodes:  # every server stops answering (paused, not gone)
                assert n.proc is not None
                n.proc.send_signal(signal.SIGSTOP)
            try:
                assert node.link is not None
                errors = node.link.publish_many([(t.raw, t.envelope_id)], timeout_s=3)
                from liangcao.ordering.memory import PublishUnknown

                assert isinstance(errors[0], PublishUnknown)  # may be in the stream: not a refusal
            finally:
                for n in cluster.nodes:
                    assert n.proc is not None
                    n.proc.send_signal(signal.SIGCONT)
            # the request did reach the servers: once they answer again, it is ordered and committed
            deadline = time.monotonic() + 30
            while not node.reader().tx_seen(t.tx_id):
                assert time.monotonic() < deadline, "the unconfirmed transaction was never committed"
                time.sleep(0.1)
        finally:
            node.stop()


def test_the_operator_clears_fork_alarms_from_the_command_line(home: Path) -> None:
    from liangcao import encoding
    from liangcao.ledger import block as blk

    proc = start(home)
    try:
        h = NodeHome.open(home)
        load_workers(home, 3)
        token = h.auth().create("org1/admin", 1)
        auth = {"Authorization": f"Bearer {token}"}
        head = httpx.get(h.url + "/v1/head", headers=auth, timeout=5).json()
        liar = load_signer(member_dir(home, "org3/peer0"))
        height = head["header"]["height"]
        att = blk.make_attestation(
            liar.key, liar.cert, head["header"]["chain_id"], height, head["block_hash"], "ab" * 32
        )
        r = httpx.post(h.url + "/v1/attestations", content=encoding.canonical(att), headers=auth, timeout=5)
        assert r.status_code == 400 and r.json()["code"] == 503  # BAD_BLOCK: a fork alarm
        health = httpx.get(h.url + "/v1/health", timeout=5).json()
        assert health["status"] == "fork" and health["fork_alarm_summary"]["members"] == ["org3/peer0"]
        out = subprocess.run(
            [sys.executable, "-m", "liangcao.cli", "node", "clear-forks", "--home", str(home)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0 and "cleared 1 fork alarms (about org3/peer0)" in out.stdout, out.stdout + out.stderr
        assert httpx.get(h.url + "/v1/health", timeout=5).json()["status"] == "ok"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert (home / "node" / "ledger.sqlite.forks-resolved").exists()


def test_a_peer_catching_up_holds_a_bounded_part_of_the_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from liangcao.ledger import tx as txm
    from liangcao.node import node as nodemod
    from liangcao.node.genesis import create_consortium
    from liangcao.node.link import JetStreamLink
    from liangcao.node.node import Node, NodeSettings
    from liangcao.ordering.natsserver import NatsCluster

    c = create_consortium(3, chain_id=f"catchup-{time.time_ns()}", now_ms=int(time.time() * 1000))

    def node(org: str, urls: list[str]) -> Node:
        return Node(
            tmp_path / f"{org}.sqlite",
            c.genesis,
            orderer=c.org(org).signer("orderer0"),
            peer=c.org(org).signer("peer0"),
            settings=NodeSettings(block_txs_max=50, block_wait_ms=20, verify_workers=1),
            link=JetStreamLink(urls, c.chain_id, 3),
        )

    with NatsCluster(tmp_path / "nats", 3) as cluster:
        a = node("org1", cluster.urls)
        a.start()
        try:
            admin = c.org("org1").signer("admin")
            txs = [
                txm.build(c.chain_id, "demo.wallet", "mint", {"to": "org1/alice", "amount": i + 1}, [admin],
                          not_after=int(time.time() * 1000) + 600_000)
                for i in range(400)
            ]  # fmt: skip
            for i in range(0, 400, 100):
                a.submit_many([t.raw for t in txs[i : i + 100]])
            deadline = time.monotonic() + 60
            while not a.reader().tx_seen(txs[-1].tx_id):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            monkeypatch.setattr(nodemod, "STREAM_INBOX_MAX", 8)  # a tiny queue: the link must hold back
            b = node("org2", cluster.urls)
            assert b._stream_inbox.maxsize == 8
            b.start()
            try:
                deadline = time.monotonic() + 60
                while b.head.hash != a.head.hash:
                    assert b._stream_inbox.qsize() <= 8
                    assert time.monotonic() < deadline, f"stuck at {b.head.height} of {a.head.height}"
                    time.sleep(0.02)
            finally:
                b.stop()
        finally:
            a.stop()
