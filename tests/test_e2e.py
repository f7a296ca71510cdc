"""End to end through the real CLI and a node in its own process: kill -9, SIGTERM, audit, proofs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from liangcao.cli import app
from liangcao.client import Client, ClientError
from liangcao.codes import Code
from liangcao.crypto.signer import load_signer
from liangcao.node.home import NodeHome, member_dir
from liangcao.procs import free_port


def cli(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [sys.executable, "-m", "liangcao.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )
    if check and r.returncode != 0:
        raise AssertionError(f"liangcao {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


def cli_here(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``cli`` in this process: the same command code, without the ~1.5 s interpreter start and import. Each test
    keeps some commands (a success and a failure) on the real entry point with ``cli``."""
    r = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    # An exception escaping the command would be a traceback in a real process: never expected.
    assert r.exception is None or isinstance(r.exception, SystemExit), (args, r.exc_info)
    done = subprocess.CompletedProcess(["liangcao", *args], r.exit_code, r.stdout, r.stderr)
    if check and done.returncode != 0:
        raise AssertionError(f"liangcao {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


class NodeProcess:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log = self.home / "node.log"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "liangcao.cli",
                    "node",
                    "start",
                    "--home",
                    str(self.home),
                    "--verify-workers",
                    "1",
                ],
                stdout=log,
                stderr=log,
            )
        url = NodeHome.open(self.home).url
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(url + "/v1/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise AssertionError("node exited: " + self.log.read_text())
            time.sleep(0.05)
        raise AssertionError("node did not become healthy")

    def signal(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        rc = self.proc.wait(60)
        self.proc = None
        return rc

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def net(tmp_path: Path) -> Iterator[tuple[Path, NodeProcess]]:
    home = tmp_path / "net"
    cli("network", "init", "--orgs", "3", "--out", str(home), "--port", str(free_port(0)))
    node = NodeProcess(home)
    yield home, node
    node.kill()


def test_kill_9_loses_nothing_reported_committed(net: tuple[Path, NodeProcess]) -> None:
    home, node = net
    h = NodeHome.open(home)
    node.start()
    token = h.auth().create("org1/admin", 1)
    admin = load_signer(member_dir(home, "org1/admin"))
    committed: dict[str, int] = {}
    stop = threading.Event()
    lock = threading.Lock()

    def stream(k: int) -> None:
        with Client(h.url, token, chain_id=h.chain_id()) as c:
            i = 0
            while not stop.is_set():
                i += 1
                tx = c.build("demo.wallet", "mint", {"to": f"org1/u{k}-{i}", "amount": i}, [admin])
                try:
                    r = c.submit(tx, wait=True)
                except (httpx.HTTPError, ClientError):
                    return  # the node is gone
                if r["status"] == "committed":
                    with lock:
                        committed[tx.tx_id] = r["code"]

    threads = [threading.Thread(target=stream, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    node.kill()  # SIGKILL in the middle of the stream
    stop.set()
    for t in threads:
        t.join(30)
    assert len(committed) > 20
    node.start()
    with Client(h.url, token) as c:
        for tx_id, code in committed.items():
            assert c.tx(tx_id)["receipt"]["code"] == code
    node.signal(signal.SIGTERM)
    r = cli("audit", "--home", str(home))
    assert "audit passed" in r.stdout


def test_sigterm_commits_everything_admitted(net: tuple[Path, NodeProcess]) -> None:
    home, node = net
    h = NodeHome.open(home)
    node.start()
    admin = load_signer(member_dir(home, "org2/admin"))
    with Client(h.url, chain_id=h.chain_id()) as c:
        txs = [c.build("demo.wallet", "mint", {"to": "org2/alice", "amount": 1}, [admin]) for _ in range(300)]
        results = c.submit_many(txs)
    assert all(r["status"] in ("pending", "committed") for r in results)
    assert node.signal(signal.SIGTERM) == 0
    node.start()
    with Client(h.url, h.auth().create("org2/admin", 1)) as c:
        assert c.query("demo.wallet", "balance", {"member": "org2/alice"}) == {"balance": 300}
    node.signal(signal.SIGINT)


def test_cli_flow_and_tamper_detection(net: tuple[Path, NodeProcess], tmp_path: Path) -> None:
    home, node = net
    node.start()
    r = cli(
        "tx", "--home", str(home), "--as", "org1/admin", "demo.wallet", "mint", '{"to": "org1/alice", "amount": 500}'
    )
    receipt = json.loads(r.stdout)
    assert receipt["status"] == "committed" and receipt["receipt"]["code"] == 0
    r = cli_here(
        "tx",
        "--home",
        str(home),
        "--as",
        "org1/alice",
        "demo.wallet",
        "transfer",
        '{"to": "org2/bob", "amount": 900}',
        check=False,
    )
    assert r.returncode == 2 and '"code": 411' in r.stdout
    r = cli("tx", "--home", str(home), "--as", "org1/alice", "demo.wallet", "transfer", '{"amount": 1.5}', check=False)
    assert r.returncode == 1 and "float" in r.stderr and "Traceback" not in r.stderr
    r = cli_here("query", "--home", str(home), "demo.wallet", "balance", '{"member": "org1/alice"}')
    assert json.loads(r.stdout) == {"balance": 500}
    token = cli_here("token", "create", "--home", str(home), "--member", "org3/bob").stdout.strip()
    with Client(NodeHome.open(home).url, token) as c:
        proof = c.tx(receipt["tx_id"])["tx_proof"]
    proof_file = tmp_path / "proof.json"
    proof_file.write_text(json.dumps(proof))
    assert "proof verifies" in cli_here("verify-proof", str(proof_file)).stdout
    proof["path"] = ["00" * 32] + proof["path"]
    proof_file.write_text(json.dumps(proof))
    r = cli_here("verify-proof", str(proof_file), check=False)
    assert r.returncode == 1 and "does NOT verify" in r.stderr
    node.signal(signal.SIGTERM)
    assert "audit passed" in cli_here("audit", "--home", str(home)).stdout
    assert "rebuilt state and indexes from" in cli_here("node", "rebuild", "--home", str(home)).stdout
    assert "audit passed" in cli_here("audit", "--home", str(home)).stdout
    copy = tmp_path / "copy.sqlite"
    shutil.copy(home / "node" / "ledger.sqlite", copy)
    db = sqlite3.connect(copy)
    db.execute(
        "UPDATE attestations SET attestation = replace(attestation, '\"height\":1', '\"height\":2') WHERE height = 1"
    )
    db.commit()
    db.close()
    r = cli_here("audit", "--db", str(copy), check=False)
    assert r.returncode == 1 and "attestations @ height 1" in r.stderr
    db = sqlite3.connect(home / "node" / "ledger.sqlite")
    db.execute("UPDATE receipts SET code = code + 1 WHERE height = 1")
    db.commit()
    db.close()
    r = cli("audit", "--home", str(home), check=False)
    assert r.returncode == 1 and "receipts @ height 1 tx 0" in r.stderr


def test_demo_no_serve_then_audit(tmp_path: Path) -> None:
    home = tmp_path / "demo"
    r = cli("demo", "--home", str(home), "--no-serve", "--port", str(free_port(0)))
    assert "proof verifies" in r.stdout and "checks out" in r.stdout
    assert "discount 4,500.00" in r.stdout or "discount 4,450.00" in r.stdout  # 90 (or 89) days at 6 % on 300,000.00
    assert "ALREADY_FINANCED" in r.stdout and "INVOICE_USED" in r.stdout
    assert "PLEDGED" in r.stdout and "EXCEEDS_STOCK" in r.stdout and "OVER_ADVANCE" in r.stdout
    assert "after settlement" in r.stdout and "10,004,500.00" in r.stdout  # the bank: +4,500.00 on the financing
    assert "History of tin" in r.stdout and "NOT_PERMITTED" in r.stdout and "inspecting" in r.stdout
    assert "/01/10614141073464/21/1?anchors=" in r.stdout and (home / "proofs" / "tin-1-qr.svg").exists()
    # the consumer side: escrow, the risk engine's step-up confirmed by a passkey bound to the payment (and
    # refused for another one), a blocked payment, installments whose schedule sums to the price
    assert "STEP_UP_REQUIRED" in r.stdout and "STEP_UP_FAILED" in r.stdout and "RISK_BLOCKED" in r.stdout
    assert "199.85 + 199.83" in r.stdout and "2,000.00 of 2,000.00 available" in r.stdout
    # again on the same home: the chain's time is now 91 days ahead of the wall clock, and the node follows it
    r = cli("demo", "--home", str(home), "--no-serve", "--port", str(free_port(0)))
    assert "after settlement" in r.stdout and "checks out" in r.stdout
    assert "audit passed" in cli_here("audit", "--home", str(home)).stdout
    assert "proof verifies" in cli_here("verify-proof", str(home / "proofs" / "payment.json")).stdout


def test_scf_cli_commands_and_sdk_handles(tmp_path: Path) -> None:
    home = tmp_path / "scf"
    types = "core_enterprise,supplier,supplier,bank"
    cli("network", "init", "--orgs", "4", "--out", str(home), "--port", str(free_port(0)), "--org-types", types)
    r = cli_here(
        "network", "init", "--orgs", "2", "--out", str(tmp_path / "x"), "--org-types", "bank,pirate", check=False
    )
    assert r.returncode == 1 and "unknown organisation types pirate" in r.stderr
    node = NodeProcess(home)
    node.start()
    try:

        def scf(*args: str, check: bool = True, here: bool = True) -> subprocess.CompletedProcess[str]:
            return (cli_here if here else cli)("scf", *args, "--home", str(home), check=check)

        scf("tokens", "issue", "--to", "org1", "--amount", "100000", "--as", "org4/admin")
        doc = "ab" * 32
        r = scf(
            "invoices", "register", "--code", "3100", "--number", "77", "--seller", "org2", "--buyer", "org1",
            "--amount", "50000", "--date", "2026-11-11", "--doc-hash", doc, "--as", "org2/alice",
        )  # fmt: skip
        inv = json.loads(r.stdout)["receipt"]["result"]["key"]
        r = scf(
            "vouchers", "issue", "--to", "org2", "--face", "40000", "--maturity", "2099-01-01", "--invoices", inv,
            "--settlement-bank", "org4", "--as", "org1/admin",
        )  # fmt: skip
        vid = json.loads(r.stdout)["receipt"]["result"]["voucher"]
        scf("vouchers", "accept", "--voucher", vid, "--as", "org2/alice")
        r = scf("vouchers", "split", "--voucher", vid, "--amounts", "10000,5000", "--as", "org2/alice")
        assert len(json.loads(r.stdout)["receipt"]["result"]["children"]) == 3
        tree = json.loads(scf("vouchers", "tree", "--voucher", vid).stdout)
        assert [c["face"] for c in tree["children"]] == [10_000, 5_000, 25_000]
        # refused by the contract: exit 2 with the code; bad input: exit 1 with the field, nothing sent
        r = scf("vouchers", "split", "--voucher", vid, "--amounts", "1", "--as", "org2/alice", check=False)
        assert r.returncode == 2 and '"code": 2004' in r.stdout
        r = scf(
            "vouchers", "split", "--voucher", vid, "--amounts", "ten", "--as", "org2/alice", check=False, here=False
        )
        assert r.returncode == 1 and "amounts" in r.stderr and "Traceback" not in r.stderr
        listed = cli_here("scf", "tokens", "--help").stdout.split("Commands")[1].split()
        assert "transfer" in listed and "pay" not in listed  # internal methods are not offered
        # the SDK: the same actions as methods, arguments checked before anything is signed
        h = NodeHome.open(home)
        with Client(h.url, h.auth().create("org3/alice", 1)) as c:
            tier1 = c.contract("scf.vouchers", load_signer(member_dir(home, "org2/alice")))
            part = tier1.tree(voucher=vid)["children"][0]["id"]
            tier1.offer(voucher=part, to="org3")
            with pytest.raises(ClientError) as refused:
                tier1.offer(voucher=part, to="org3")
            assert refused.value.code == 2004
            with pytest.raises(ClientError) as bad:
                tier1.split(voucher=part, amounts=["1"])
            assert bad.value.code == Code.INVALID_ARGUMENT and "amounts" in bad.value.message
            with pytest.raises(AttributeError):
                getattr(c.contract("scf.vouchers"), "pool_assign")  # noqa: B009
            c.contract("scf.vouchers", load_signer(member_dir(home, "org3/alice"))).accept(voucher=part)
            assert c.contract("scf.vouchers").portfolio(org="org3")["total"] == 10_000
    finally:
        node.signal(signal.SIGTERM)
