"""A deterministic simulator of a consortium (in the spirit of TigerBeetle's VOPR).

Theory of operation
-------------------
One seed gives one run. N peers, one per organisation, are real :class:`~liangcao.node.node.Node` objects with
their own SQLite stores, ordering through one :class:`~liangcao.ordering.memory.MemoryLog` instead of a
JetStream cluster. Nothing runs on a thread: at every step the driver draws one action from the seeded
random generator and performs it, so a failing seed replays exactly (keys and certificates are derived from
the seed too). The actions:

==========================  ================================================================================
honest work                 clients submit signed transfers through a node's admission; an honest orderer
                            cuts the next block at the position a peer reports; the log's clock moves on
delivery                    a peer is handed the next few log messages (peers lag behind each other); one
                            attestation is handed to one peer, possibly again, possibly out of order, and
                            some are never handed (lost) until the final flush; the attestation log goes
                            down and comes back (a leader election): publishes wait in the link's outbox
crashes and faults          a peer is killed and restarted from its store at any step; an SQLite error is
                            injected into a peer's next commit (the peer stops, and is restarted)
a tampered peer             (some seeds) one organisation's peer runs a contract that credits one fen more:
                            it must be detected
adversaries                 a member publishes straight into the log: a forged copy of a transaction with an
                            extra signer and a junk signature, a 3,000-deep array, bytes that are not JSON,
                            attestations under a self-signed certificate, a member's non-peer certificate,
                            or with wrong hashes, a cut stamped a year ahead, a cut by a forged orderer
==========================  ================================================================================

After every step the driver checks: no two honest peers are final on different blocks at one height; every
block a peer once reported final is still in its store with the same hash; honest peers hold the same
blocks wherever both have them; no honest peer stopped except by an injected fault; an honest peer raises a
fork alarm only about the tampered peer; no honest peer's chain time runs ahead of the log's clock; no peer's
finality tracker counts a height final that its stored attestations do not. After the final flush every
message reached everyone, and the peers chased finality themselves (outboxes retried, missing attestations
fetched, their own re-announced): every committed height is final on every honest peer without a fork alarm;
then, with every attestation delivered to everyone, honest peers have the same head and, if the tampered
peer's state diverged, every honest peer holding the divergent height has raised the alarm about it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liangcao import encoding, limits
from liangcao.apps.bundle import default_registry
from liangcao.apps.wallet import MintArgs, Wallet
from liangcao.contracts.base import Context, Registry, transaction
from liangcao.crypto import keys
from liangcao.ledger import block as blk
from liangcao.ledger import tx as txm
from liangcao.node.genesis import Consortium, create_consortium, make_org
from liangcao.node.node import ATT_REPAIR_EVERY_MAX_MS, Node, NodeSettings
from liangcao.ordering.jetstream import CutMarker
from liangcao.ordering.memory import MemoryLink, MemoryLog

#: The simulated chain starts at this time (2026-01-01), whatever the wall clock says: a seed replays exactly.
SIM_EPOCH_MS = 1_767_225_600_000
MEMBERS = ("alice", "bob")
#: The bound the simulator holds chain time to, fixed here (not read from the limit it checks at run time).
CLOCK_SKEW_MS = limits.cut_clock_skew_ms_max
#: Rounds of the flush in which peers chase finality on their own (each past every repair back-off)
FINALITY_ROUNDS = 3


class SimFailure(AssertionError):
    """An invariant broke: the message says which, at which step of which seed."""


class TamperedWallet(Wallet):
    """The wallet as a dishonest (or buggy) peer runs it: every mint credits one fen more."""

    @transaction
    def mint(self, ctx: Context, args: MintArgs) -> dict[str, int]:
        out = super().mint(ctx, args)
        key = f"balance/{args.to}"
        ctx.put(key, int(ctx.get(key) or 0) + 1)
        return out


def tampered_registry() -> Registry:
    reg = default_registry()
    return Registry([TamperedWallet() if n == "demo.wallet" else reg.get(n) for n in reg.names()])  # type: ignore[misc]


class SimClock:
    """The log's and every node's clock: virtual milliseconds, moved only by the driver."""

    def __init__(self, start_ms: int) -> None:
        self.t = start_ms

    def now_ms(self) -> int:
        return self.t


class FaultyCommit:
    """A store connection whose next COMMIT fails with an I/O error (the rest is the real connection)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self.armed = True

    def execute(self, sql: str, *args: Any) -> Any:
        if self.armed and sql == "COMMIT":
            self.armed = False
            raise sqlite3.OperationalError("disk I/O error (injected by the simulator)")
        return self._db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


@dataclass
class Peer:
    org: str
    node: Node
    link: MemoryLink
    tampered: bool = False
    final: dict[int, str] = field(default_factory=dict)  # height -> block hash once reported final


_CONSORTIA: dict[int, Consortium] = {}


def consortium(n_orgs: int) -> Consortium:
    """The simulated consortium of ``n_orgs`` organisations: keys and certificates fixed by a constant seed."""
    if n_orgs not in _CONSORTIA:
        _CONSORTIA[n_orgs] = create_consortium(
            n_orgs, chain_id=f"sim-{n_orgs}", now_ms=SIM_EPOCH_MS, seed=b"liangcao-sim"
        )
    return _CONSORTIA[n_orgs]


class Simulation:
    def __init__(self, seed: int, root: Path, steps: int = 120) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.steps = steps
        self.root = root
        self.n_orgs = self.rng.choice((3, 4))
        self.c = consortium(self.n_orgs)
        self.clock = SimClock(SIM_EPOCH_MS + 60_000)
        self.log = MemoryLog(self.clock.now_ms)
        self.tampered = self.rng.random() < 0.3
        self.peers = [self._start(f"org{i + 1}") for i in range(self.n_orgs)]
        self.recent: list[txm.Tx] = []
        self.nonce = 0
        self.step_no = 0
        self.trace = hashlib.sha256()  # a digest of everything that happened: equal digests, equal runs
        self.injected: set[str] = set()
        self.restarts = 0  # peers restarted after an injected fault

    # ---- peers ------------------------------------------------------------------------------------------
    def _start(self, org: str, tampered: bool | None = None) -> Peer:
        o = self.c.org(org)
        link = MemoryLink(self.log)
        node = Node(
            self.root / f"{org}.sqlite",
            self.c.genesis,
            orderer=o.signer("orderer0"),
            peer=o.signer("peer0"),
            settings=NodeSettings(block_txs_max=50, block_wait_ms=0, verify_workers=1),
            link=link,
        )
        node.clock = self.clock  # type: ignore[assignment]
        bad = (org == f"org{self.n_orgs}" and self.tampered) if tampered is None else tampered
        if bad:
            node.runtime.registry = tampered_registry()
        node.follow()
        return Peer(org, node, link, bad)

    def _restart(self, i: int) -> None:
        old = self.peers[i]
        final = old.final
        with contextlib.suppress(Exception):  # a peer stopped by an injected fault may not close cleanly
            old.node.stop(timeout_s=1)
        self.peers[i] = self._start(old.org, old.tampered)
        self.peers[i].final = final

    @property
    def honest(self) -> list[Peer]:
        return [p for p in self.peers if not p.tampered]

    # ---- actions ----------------------------------------------------------------------------------------
    def _tx(self, method: str, args: dict[str, Any], *signers: txm.Signer) -> txm.Tx:
        self.nonce += 1
        return txm.build(
            self.c.chain_id, "demo.wallet", method, args, list(signers),
            not_after=self.clock.t + 3_600_000, nonce=f"s{self.seed}-{self.nonce}",
        )  # fmt: skip

    def _member(self) -> txm.Signer:
        return self.c.org(f"org{self.rng.randint(1, self.n_orgs)}").signer(self.rng.choice(MEMBERS))

    def submit(self) -> None:
        org = f"org{self.rng.randint(1, self.n_orgs)}"
        txs = []
        for _ in range(self.rng.randint(1, 4)):
            if self.rng.random() < 0.5:
                to = f"org{self.rng.randint(1, self.n_orgs)}/{self.rng.choice(MEMBERS)}"
                txs.append(
                    self._tx("mint", {"to": to, "amount": self.rng.randint(1, 1000)}, self.c.org(org).signer("admin"))
                )
            else:
                s = self._member()
                to = f"org{self.rng.randint(1, self.n_orgs)}/{self.rng.choice(MEMBERS)}"
                txs.append(self._tx("transfer", {"to": to, "amount": self.rng.randint(1, 50)}, s))
        via = self.rng.choice(self.peers).node
        results = via.submit_many([t.raw for t in txs])
        for t, r in zip(txs, results, strict=True):
            if isinstance(r, BaseException):
                raise SimFailure(f"an honest transaction was refused at admission: {r}")
            self.recent.append(t)
        self.recent = self.recent[-20:]

    def cut(self, honest: bool = True) -> None:
        p = self.rng.choice(self.peers)
        height, pending, _ = p.node._order_position()
        if height <= 0 or (honest and pending == 0):
            return
        o = self.c.org(f"org{self.rng.randint(1, self.n_orgs)}").signer("orderer0")
        t = self.clock.t + (0 if honest else 365 * 86_400_000)
        self.log.cut(CutMarker.make(self.c.chain_id, height, t, o.member_id, o.key, o.cert))

    def attack(self) -> None:
        kind = self.rng.randrange(7)
        if kind == 0 and self.recent:  # a forged copy: the genuine body, an extra signer, a junk signature
            env: Any = encoding.decode(self.rng.choice(self.recent).raw)
            victim = self._member()
            env["signatures"].append({"cert": keys.b64(victim.cert), "sig": keys.b64(bytes(64))})
            raw = encoding.canonical(env)
            self.log.append("tx", raw, encoding.sha256_hex(raw))
        elif kind == 1:
            self.log.append("tx", b"[" * 3000 + b"]" * 3000, f"deep-{self.step_no}")
        elif kind == 2:
            self.log.append("tx", bytes(self.rng.randrange(256) for _ in range(16)), f"junk-{self.step_no}")
        elif kind == 3:  # an attestation of wrong hashes by someone whose attestations do not count
            org = f"org{self.rng.randint(1, self.n_orgs)}"
            s = self.rng.choice(
                [make_org(org, self.c.org(org).org_type, now_ms=SIM_EPOCH_MS, seed=b"outsider").signer("peer0"),
                 self.c.org(org).signer("alice")]
            )  # fmt: skip
            h = max(1, self.rng.choice(self.peers).node.head.height)
            wrong = hashlib.sha256(f"wrong{self.step_no}".encode()).hexdigest()
            att = blk.make_attestation(s.key, s.cert, self.c.chain_id, h, wrong, wrong)
            self.log.attestations.append(encoding.canonical(att))
        elif kind == 4:
            self.log.attestations.append(encoding.canonical({"chain_id": self.c.chain_id, "height": "1"}))
        elif kind == 5:
            self.cut(honest=False)  # a year ahead
        else:  # a cut by an orderer whose certificate is not from the organisation's CA
            fake = make_org("org1", self.c.org("org1").org_type, now_ms=SIM_EPOCH_MS, seed=b"fake").signer("orderer0")
            height = self.rng.choice(self.peers).node._order_position()[0]
            self.log.cut(
                CutMarker.make(self.c.chain_id, max(1, height), self.clock.t, fake.member_id, fake.key, fake.cert)
            )

    def deliver(self, i: int, n: int) -> None:
        p = self.peers[i]
        p.link.pump()  # the link retries what the attestation log did not take (JetStreamLink: its outbox task)
        p.link.deliver(n)
        try:
            while p.node.step():
                pass
        except BaseException as exc:
            if p.org in self.injected:  # the fault the driver injected: the peer stops and is restarted
                self.injected.discard(p.org)
                self.restarts += 1
                self._restart(i)
                return
            raise SimFailure(f"peer {p.org} stopped: {type(exc).__name__}: {exc}") from exc

    def deliver_attestation(self, i: int) -> None:
        if not self.log.attestations:
            return
        att = self.rng.choice(self.log.attestations)  # any one: duplicates and reordering come for free
        self.peers[i].link.deliver_attestation(att)
        self.deliver(i, 0)

    def inject_fault(self) -> None:
        p = self.rng.choice(self.peers)
        store = p.node.ledger.store
        store._db = FaultyCommit(store._db)  # type: ignore[assignment]
        self.injected.add(p.org)

    def one_step(self) -> None:
        self.step_no += 1
        r = self.rng.random()
        i = self.rng.randrange(len(self.peers))
        if r < 0.20:
            self.submit()
        elif r < 0.32:
            self.cut()
        elif r < 0.60:
            self.deliver(i, self.rng.randint(1, 6))
        elif r < 0.78:
            self.deliver_attestation(i)
        elif r < 0.86:
            self.attack()
        elif r < 0.90:
            self._restart(i)
        elif r < 0.92:
            self.inject_fault()
        else:
            self.clock.t += self.rng.randint(1, 2000)
            if self.rng.random() < 0.25:  # the attestation log elects a leader: it takes nothing for a while
                self.log.attestations_down = not self.log.attestations_down
        self.check()

    # ---- invariants -------------------------------------------------------------------------------------
    def _final_heights(self, p: Peer) -> None:
        node = p.node
        if node.fork_alarms:
            return
        config = node._cut_config()
        quorum = config.quorum_size("finality")
        reader = node.ledger.store
        for h in range(max(p.final, default=0) + 1, node.head.height + 1):
            orgs = {config.attesting_org(encoding.decode(a), node.runtime.certs) for a in reader.attestations(h)}  # type: ignore[arg-type]
            orgs.discard(None)
            header = reader.header(h)
            if header is None or len(orgs) < quorum:
                break
            p.final[h] = header.hash

    def check(self) -> None:
        for p in self.peers:
            if not p.tampered:
                self._final_heights(p)
                upto = p.node.finality.final_upto
                if not p.node.fork_alarms and upto > max(p.final, default=0):
                    raise SimFailure(f"{p.org} counts height {upto} final, and its stored attestations do not")
            for h, block_hash in p.final.items():
                header = p.node.ledger.store.header(h)
                if header is None or header.hash != block_hash:
                    raise SimFailure(f"{p.org} reported height {h} final, and it is gone or changed")
        honest = self.honest
        for a in honest:
            for b in honest:
                for h in set(a.final) & set(b.final):
                    if a.final[h] != b.final[h]:
                        raise SimFailure(f"{a.org} and {b.org} are final on different blocks at height {h}")
            for alarm in a.node.fork_alarms:
                if not any(alarm["member"] == f"{t.org}/peer0" for t in self.peers if t.tampered):
                    raise SimFailure(f"{a.org} raised a fork alarm about an honest peer: {alarm}")
            if a.node.head.time_ms > self.clock.t + CLOCK_SKEW_MS:
                raise SimFailure(
                    f"{a.org}'s chain time {a.node.head.time_ms} ran ahead of the log's clock {self.clock.t}"
                )
        top = min(p.node.head.height for p in honest)
        for h in range(1, top + 1):
            hashes = {p.node.ledger.store.header(h).hash for p in honest}  # type: ignore[union-attr]
            if len(hashes) != 1:
                raise SimFailure(f"honest peers hold different blocks at height {h}")
        self.trace.update(f"{self.step_no}:{[p.node.head.hash for p in self.peers]}".encode())

    def flush(self) -> None:
        """Deliver every message to everyone and cut what is pending; then let the peers chase finality by
        themselves (the attestation log is back: outboxes are retried, missing attestations fetched, their
        own re-announced) and check that every committed height is final on every honest peer; then deliver
        every attestation to everyone: the final state."""
        for _ in range(200):
            for i in range(len(self.peers)):
                self.deliver(i, 10**6)
            # a peer restarted by an injected fault during this round has messages still to read
            if not any(p.node._order_position()[1] or p.link.pending() for p in self.peers):
                break
            self.cut()
        self.log.attestations_down = False
        for n in range(3 * FINALITY_ROUNDS):
            restarts = self.restarts
            self.clock.t += ATT_REPAIR_EVERY_MAX_MS + 1_000  # past every peer's repair back-off
            for i in range(len(self.peers)):
                self.deliver(i, 10**6)
                self.deliver(i, 10**6)  # the attestations fetched in the first turn are taken in the second
            if n + 1 >= FINALITY_ROUNDS and self.restarts == restarts:
                break  # (an injected fault that struck while storing attestations restarted a peer: go on)
        self.check()
        for p in self.honest:
            if p.node.fork_alarms:
                continue  # it reports nothing as final, by design
            head = p.node.head.height
            if max(p.final, default=0) < head:
                raise SimFailure(
                    f"{p.org}: height {max(p.final, default=0) + 1} of {head} is not final after the flush "
                    f"(attestations lost and never re-sent or fetched)"
                )
            if p.node.finality.final_upto < head:
                raise SimFailure(
                    f"{p.org} does not count height {p.node.finality.final_upto + 1} final after the flush"
                )
        for _ in range(2):
            for i, p in enumerate(self.peers):
                for att in list(self.log.attestations):
                    p.link.deliver_attestation(att)
                self.deliver(i, 10**6)
        self.check()
        honest = self.honest
        if len({p.node.head.hash for p in honest}) != 1:
            raise SimFailure("after the flush honest peers have different heads")
        for t in (p for p in self.peers if p.tampered):
            for h in range(1, t.node.head.height + 1):
                mine = t.node.ledger.store.header(h)
                theirs = honest[0].node.ledger.store.header(h)
                if mine is not None and theirs is not None and mine.state_hash != theirs.state_hash:
                    for p in honest:
                        if not any(a["member"] == f"{t.org}/peer0" and a["height"] == h for a in p.node.fork_alarms):
                            raise SimFailure(f"{p.org} did not detect the divergent peer {t.org} at height {h}")
                    break

    def run(self) -> str:
        quiet = logging.getLogger("liangcao")
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)  # fork alarms about the tampered peer are expected here, by design
        try:
            for _ in range(self.steps):
                self.one_step()
            self.flush()
        except SimFailure as exc:
            raise SimFailure(f"seed {self.seed}, step {self.step_no}: {exc}") from exc
        finally:
            for p in self.peers:
                with contextlib.suppress(Exception):  # already broken by the failure being reported
                    p.node.stop(timeout_s=1)
            quiet.setLevel(level)
        self.trace.update(f"final:{[(p.org, p.node.head.height, len(p.final)) for p in self.peers]}".encode())
        return self.trace.hexdigest()


def run_seed(seed: int, steps: int = 120, root: Path | None = None) -> str:
    """Run one seed; the digest of the run (equal for equal seeds). Raises :class:`SimFailure`."""
    base = Path(tempfile.mkdtemp(prefix=f"liangcao-sim-{seed}-", dir=_tmp_dir() if root is None else root))
    try:
        return Simulation(seed, base, steps).run()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _tmp_dir() -> str | None:
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() else None


def run_seeds(
    seeds: list[int],
    steps: int = 120,
    progress: Callable[[int], None] | None = None,
    *,
    fail_fast: bool = False,
) -> list[tuple[int, str]]:
    """Run many seeds; the failures as (seed, message). ``progress(seed)`` after each; ``fail_fast``: stop at
    the first failure."""
    failures: list[tuple[int, str]] = []
    for seed in seeds:
        try:
            run_seed(seed, steps)
        except SimFailure as exc:
            failures.append((seed, str(exc)))
            if fail_fast:
                break
        if progress is not None:
            progress(seed)
    return failures
