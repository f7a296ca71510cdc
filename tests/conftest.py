"""Shared fixtures: a 3-organisation consortium and a ledger on disk with its genesis block applied."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from liangcao import encoding
from liangcao.apps.bundle import default_registry
from liangcao.contracts.runtime import ContractRuntime
from liangcao.crypto.signer import Signer
from liangcao.ledger import tx as txm
from liangcao.ledger.chain import Ledger
from liangcao.node.genesis import Consortium, create_consortium

NOW_MS = int(time.time() * 1000)


@pytest.fixture(autouse=True, scope="session")
def _cli_tree_built_once() -> Iterator[None]:
    """typer's ``CliRunner.invoke`` rebuilds the click tree of ``liangcao.cli.app`` (a command for every method of
    every contract, ~0.3 s) on every call; that tree is fixed at import, so it is built once per run."""
    import typer.main
    import typer.testing

    built: list[Any] = []

    def get_command(app: typer.main.Typer) -> Any:
        cli = sys.modules.get("liangcao.cli")
        if cli is None or app is not getattr(cli, "app", None):
            return typer.main.get_command(app)
        if not built:
            built.append(typer.main.get_command(app))
        return built[0]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(typer.testing, "_get_command", get_command)
        yield


@pytest.fixture(scope="session")
def consortium() -> Consortium:
    return create_consortium(3, now_ms=NOW_MS)


class Chain:
    """A ledger plus helpers to build, sign and commit transactions in tests."""

    def __init__(self, ledger: Ledger, consortium: Consortium) -> None:
        self.ledger = ledger
        self.c = consortium
        self.time_ms = NOW_MS

    def signer(self, org: str, member: str) -> Signer:
        return self.c.org(org).signer(member)

    def tx(
        self, contract: str, method: str, args: dict[str, Any], *signers: Signer, not_after: int | None = None
    ) -> txm.Tx:
        return txm.build(
            self.c.chain_id, contract, method, args, list(signers), not_after=not_after or self.time_ms + 60_000
        )

    def commit(self, txs: Sequence[txm.Tx | bytes]) -> list[dict[str, Any]]:
        self.time_ms += 1000
        raws = [t.raw if isinstance(t, txm.Tx) else t for t in txs]
        _, ex = self.ledger.produce(raws, self.time_ms, self.signer("org1", "orderer0"))
        return [encoding.decode(r) for r in ex.receipts]  # type: ignore[misc]

    def run(self, contract: str, method: str, args: dict[str, Any], *signers: Signer) -> dict[str, Any]:
        return self.commit([self.tx(contract, method, args, *signers)])[0]

    def state(self) -> dict[str, bytes]:
        return {k: v for k, v in self.ledger.store.range("")}


class Replica:
    """One independent in-memory peer with its own state, runtime and clock (no cache shared with others)."""

    def __init__(self, consortium: Consortium, time_ms: int = NOW_MS) -> None:
        from liangcao.ledger import block as blk
        from liangcao.ledger.state import MemoryState

        self.consortium = consortium
        self.state = MemoryState()
        self.runtime = ContractRuntime(default_registry())
        self.state_hash = blk.ZERO_HASH
        self.height = 0
        self.time_ms = time_ms
        self.apply([consortium.genesis.txs[0]])

    def apply(self, txs: Sequence[bytes]) -> Any:
        """Execute ``txs`` as the next block and apply it; the clock moves one second."""
        from liangcao.ledger import executor

        ex = executor.execute(
            self.state,
            self.runtime,
            chain_id=self.consortium.chain_id,
            height=self.height,
            time_ms=self.time_ms,
            prev_state_hash=self.state_hash,
            txs=txs,
        )
        self.state.apply(ex.writes, [t for t, c in zip(ex.tx_ids, ex.consumed, strict=True) if c])
        self.state_hash = ex.state_hash
        self.height += 1
        self.time_ms += 1000
        return ex


def open_ledger(path: Path) -> Ledger:
    return Ledger.open(path, ContractRuntime(default_registry()))


@pytest.fixture
def chain(tmp_path: Path, consortium: Consortium) -> Iterator[Chain]:
    ledger = open_ledger(tmp_path / "ledger.sqlite")
    ledger.apply(consortium.genesis)
    yield Chain(ledger, consortium)
    ledger.close()


class Live:
    """A node serving its API from a background thread, on a free loopback port."""

    def __init__(self, root: Path, org_types: list[str] | None = None, *, custody: bool = False) -> None:
        from liangcao.api.server import Server
        from liangcao.node.home import NodeHome, init_network
        from liangcao.procs import free_port

        orgs = len(org_types) if org_types else 3
        init_network(root, orgs, port=free_port(0), block_wait_ms=5, org_types=org_types)
        self.home = NodeHome.open(root)
        self.node = self.home.node(verify_workers=1)
        port = int(self.home.config["port"])
        # custody (opt-in): the node may sign EPCIS captures with members' keys from the network folder
        self.server = Server(self.node, self.home.auth(), "127.0.0.1", port, custody=self.home.custody_root(custody))
        self.thread = self.server.start_in_thread()
        self.url = self.home.url
        self.token = self.home.auth().create("org2/alice", 1)

    def signer(self, member: str) -> Signer:
        from liangcao.crypto.signer import load_signer
        from liangcao.node.home import member_dir

        return load_signer(member_dir(self.home.root, member))

    def stop(self) -> None:
        self.server.stop_thread(self.thread)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    node = Live(tmp_path_factory.mktemp("live") / "net")
    yield node
    node.stop()


# ---- a real browser: Debian's Chromium driven by Playwright (never a downloaded one) ------------------------
CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.fail("Debian's chromium is not installed: run scripts/install-chromium.sh (scripts/test.sh does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """A real PostgreSQL server (Debian's packages) on loopback for the whole run; never skipped."""
    from liangcao.payments.pgserver import PgServer

    # In the system temp folder: under root the server runs as the postgres user, who cannot enter
    # pytest's private (0700) temp folders.
    server = PgServer().start()
    try:
        yield server.dsn
    finally:
        server.stop()
