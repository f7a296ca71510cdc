"""Test harness for contracts: an in-memory chain that runs them exactly as a node does.

Theory of operation
-------------------
:class:`Chain` is one peer in memory: a consortium of organisations ``org1..orgN`` of the types you name
(each with a CA and the members ``admin``, ``alice``, ``bob`` (role member), ``peer0`` and ``orderer0``),
its genesis block, and the real pure executor and contract runtime. Every transaction is built, signed with
the members' Ed25519 keys and executed as a block of its own by :func:`liangcao.ledger.executor.execute`:
signatures and certificates are checked against the consortium, arguments converted into their structs,
limits enforced, a refusal recorded with its code and no writes. What passes here passes on a node.

A chain is deterministic by default: keys and certificates derive from ``seed``, nonces count up, and the
clock starts at ``time_ms`` and moves one second per block (and as far as you say with :meth:`Chain.advance`).
The same test therefore gives the same transaction ids, receipts and state hash on every run and machine,
and a failure replays exactly. Pass ``seed=None`` for fresh random keys.

::

    from liangcao.testing import Chain

    chain = Chain(["core_enterprise", "supplier", "bank"], contracts=[Escrow()])
    chain.ok("escrow", "open", {"to": "org2", "amount": 500}, "org1")       # the result, or AssertionError
    chain.fails(EscrowCode.NOT_PAYEE, "escrow", "release", {...}, "org3")   # the receipt, with that code
    chain.advance(days=30)                                                    # time travel
    assert chain.query("escrow", "deal", {"id": ...})["status"] == "open"

Signers are named ``"org1"`` (its admin), ``"org1/alice"``, or given as :class:`liangcao.ledger.tx.Signer`;
with several, the first is the acting party (``actor``) unless ``actor=`` names another.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from liangcao import codes, encoding
from liangcao.codes import Code
from liangcao.contracts.base import Contract, Registry
from liangcao.contracts.runtime import ContractRuntime
from liangcao.crypto import identity
from liangcao.errors import ContractFailure
from liangcao.ledger import block as blk
from liangcao.ledger import executor
from liangcao.ledger import tx as txm
from liangcao.ledger.state import MemoryState
from liangcao.node import genesis

__all__ = [
    "DAY_MS",
    "DEFAULT_SEED",
    "EPOCH_MS",
    "Chain",
    "Receipt",
    "code_name",
    "make_consortium",
]

#: Where a chain's clock starts unless told otherwise: 2026-01-01T00:00:00Z.
EPOCH_MS = 1_767_225_600_000
DAY_MS = 86_400_000
#: The seed of every chain that names none: the same keys, the same bytes, every run.
DEFAULT_SEED = b"liangcao.testing"
#: How long a transaction built here stays valid after the time it was built at.
TX_TTL_MS = 60_000


def code_name(code: int) -> str:
    """``"INSUFFICIENT_FUNDS (411)"``: a code's registered name (``liangcao.codes.register``) and number."""
    return f"{codes.name_of(code)} ({code})"


class Receipt(dict[str, Any]):
    """A transaction's receipt as stored: ``{tx_id, code, message, result, events, write_set_hash}``.

    A dict (it compares and prints as the stored receipt; ``dict(receipt)`` for canonical encoding, which
    takes exact dicts only) with typed accessors."""

    @property
    def code(self) -> int:
        return int(self["code"])

    @property
    def ok(self) -> bool:
        return self.code == Code.OK

    @property
    def message(self) -> str:
        return str(self["message"])

    @property
    def result(self) -> Any:
        return self["result"]

    @property
    def tx_id(self) -> str:
        return str(self["tx_id"])

    @property
    def events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = self["events"]
        return events

    def event(self, name: str) -> Any:
        """The data of the one event called ``name`` (AssertionError if there is not exactly one)."""
        found = [e["data"] for e in self.events if e["name"] == name]
        if len(found) != 1:
            raise AssertionError(f"expected one {name!r} event, found {len(found)} in {self.events}")
        return found[0]


def _key(label: bytes) -> Ed25519PrivateKey:
    # Derived here rather than by a shared helper: the golden tests' numbers must not move when another
    # tool changes how it derives its keys.
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"liangcao/testing-key/v1\n" + label).digest())


def _serial(label: bytes) -> int:
    # A certificate serial is a positive integer of at most 20 octets: 127 bits of a hash, never zero.
    return (int.from_bytes(hashlib.sha256(b"liangcao/sim-serial/v1\n" + label).digest()[:16], "big") >> 1) | 1


def _member(org: genesis.OrgMaterial, name: str, role: str, time_ms: int, seed: bytes | None) -> genesis.Member:
    if seed is None:
        return org.enroll(name, role, time_ms)
    label = seed + f"/{org.org_id}/{name}".encode()
    key = _key(label)
    cert = identity.issue(org.ca_key, org.ca_cert, name, role, key.public_key(), time_ms, serial=_serial(label))
    member = genesis.Member(name, role, key, cert)
    org.members[name] = member
    return member


def make_consortium(
    orgs: int | Sequence[str] = 3,
    *,
    chain_id: str = "liangcao-test",
    time_ms: int = EPOCH_MS,
    seed: bytes | None = DEFAULT_SEED,
) -> genesis.Consortium:
    """Organisations ``org1..orgN`` (of the types in ``orgs``, or N of the default types), their members'
    keys and certificates, and the genesis block; derived from ``seed`` (random keys if it is None)."""
    if seed is None:
        if isinstance(orgs, int):
            return genesis.create_consortium(orgs, chain_id=chain_id, now_ms=time_ms)
        return genesis.create_consortium(len(orgs), chain_id=chain_id, org_types=list(orgs), now_ms=time_ms)
    if isinstance(orgs, int):
        types = [genesis.DEFAULT_ORG_TYPES[i % len(genesis.DEFAULT_ORG_TYPES)] for i in range(orgs)]
    else:
        types = list(orgs)
    if not 1 <= len(types) <= 64:
        raise ValueError("a test consortium has 1 to 64 organisations")
    materials = []
    for i, org_type in enumerate(types):
        org_id = f"org{i + 1}"
        label = seed + f"/{chain_id}/{org_id}/ca".encode()
        ca_key = _key(label)
        ca = identity.make_ca(org_id, org_type, ca_key, time_ms, serial=_serial(label))
        org = genesis.OrgMaterial(org_id, f"Organisation {i + 1} ({org_type})", org_type, ca_key, ca)
        for name, role in genesis.STANDARD_MEMBERS:
            _member(org, name, role, time_ms, seed + f"/{chain_id}".encode())
        materials.append(org)
    name = f"{chain_id} consortium"
    block = genesis.make_genesis(chain_id, name, materials, time_ms, materials[0].signer("orderer0"))
    return genesis.Consortium(chain_id, name, materials, block)


def _registry(contracts: Iterable[Contract], builtins: bool) -> Registry:
    """The built-in bundle (or only the consortium contract) with ``contracts`` added; a contract of yours
    replaces a built-in of the same name."""
    from liangcao.apps.bundle import default_registry
    from liangcao.contracts.consortium import Consortium

    mine = {c.name: c for c in contracts}
    base = default_registry()
    chosen = [base.get(n) for n in base.names()] if builtins else [Consortium()]
    kept = [c for c in chosen if c is not None and c.name not in mine]
    return Registry([*kept, *mine.values()])


class Chain:
    """One in-memory peer of a test consortium. See the module docstring.

    Attributes a test may read (and ``time_ms``, write): ``consortium`` (keys and certificates), ``state``
    (a :class:`~liangcao.ledger.state.MemoryState`; ``state.data`` maps full keys to canonical bytes),
    ``state_hash``, ``height`` (of the next block), ``time_ms`` (the next block's time) and ``runtime``.
    """

    def __init__(
        self,
        orgs: int | Sequence[str] = 3,
        *,
        contracts: Iterable[Contract] = (),
        builtins: bool = True,
        chain_id: str = "liangcao-test",
        time_ms: int = EPOCH_MS,
        seed: bytes | None = DEFAULT_SEED,
        consortium: genesis.Consortium | None = None,
    ) -> None:
        self.consortium = consortium or make_consortium(orgs, chain_id=chain_id, time_ms=time_ms, seed=seed)
        self.chain_id = self.consortium.chain_id
        self.registry = _registry(contracts, builtins)
        self.runtime = ContractRuntime(self.registry)
        self.state = MemoryState()
        self.state_hash = blk.ZERO_HASH
        self.height = 0
        self.n = 0  # transactions built so far: the next nonce
        self._seed = seed
        head = self.consortium.genesis.header
        self.time_ms = head.time_ms
        self.apply(list(self.consortium.genesis.txs))
        if self.state_hash != head.state_hash:
            raise AssertionError("the genesis block does not replay to its state hash with this registry")

    # ---- parties ----------------------------------------------------------------------------------------
    def signer(self, who: str | txm.Signer) -> txm.Signer:
        """``"org1"`` is org1's admin; ``"org1/alice"`` that member; a Signer is itself."""
        if isinstance(who, txm.Signer):
            return who
        org, _, name = who.partition("/")
        return self.consortium.org(org).signer(name or "admin")

    def enroll(self, org: str, name: str, role: str = "member") -> txm.Signer:
        """A new member of ``org`` with ``role`` (a certificate from its CA, valid from the chain's start)."""
        material = self.consortium.org(org)
        start = self.consortium.genesis.header.time_ms
        seed = None if self._seed is None else self._seed + f"/{self.chain_id}".encode()
        return _member(material, name, role, start, seed).signer

    # ---- blocks and transactions ------------------------------------------------------------------------
    def tx(
        self,
        contract: str,
        method: str,
        args: dict[str, Any],
        *who: str | txm.Signer,
        actor: str | None = None,
        nonce: str | None = None,
        not_after: int | None = None,
    ) -> txm.Tx:
        """A signed transaction (not yet run); each of ``who`` signs it."""
        self.n += 1
        return txm.build(
            self.chain_id,
            contract,
            method,
            args,
            [self.signer(w) for w in who],
            not_after=not_after if not_after is not None else self.time_ms + TX_TTL_MS,
            nonce=nonce if nonce is not None else f"n{self.n}",
            actor=actor,
        )

    def apply(self, raws: Sequence[bytes]) -> executor.Execution:
        """Execute ``raws`` as the next block at ``time_ms`` and apply it; the clock then moves one second."""
        ex = executor.execute(
            self.state,
            self.runtime,
            chain_id=self.chain_id,
            height=self.height,
            time_ms=self.time_ms,
            prev_state_hash=self.state_hash,
            txs=raws,
        )
        self.state.apply(ex.writes, [t for t, c in zip(ex.tx_ids, ex.consumed, strict=True) if c])
        self.state_hash = ex.state_hash
        self.height += 1
        self.time_ms += 1000
        return ex

    def block(self, *txs: txm.Tx | bytes) -> list[Receipt]:
        """Run transactions (built or raw bytes) together in one block; their receipts in order."""
        ex = self.apply([t.raw if isinstance(t, txm.Tx) else t for t in txs])
        return [Receipt(encoding.decode(r)) for r in ex.receipts]  # type: ignore[arg-type]

    def run(
        self, contract: str, method: str, args: dict[str, Any], *who: str | txm.Signer, actor: str | None = None
    ) -> Receipt:
        """Run one transaction signed by ``who`` in a block of its own; its receipt, whatever the outcome."""
        return self.block(self.tx(contract, method, args, *who, actor=actor))[0]

    def ok(
        self, contract: str, method: str, args: dict[str, Any], *who: str | txm.Signer, actor: str | None = None
    ) -> Any:
        """Run a transaction that must succeed; its result (AssertionError naming the code if it failed)."""
        r = self.run(contract, method, args, *who, actor=actor)
        if not r.ok:
            raise AssertionError(f"{contract}.{method} failed with {code_name(r.code)}: {r.message}")
        return r.result

    def fails(
        self,
        code: int,
        contract: str,
        method: str,
        args: dict[str, Any],
        *who: str | txm.Signer,
        actor: str | None = None,
        match: str = "",
    ) -> Receipt:
        """Run a transaction that must be refused with ``code`` (and a message containing ``match``).

        A refused transaction writes nothing (the executor throws its writes away); the receipt says why."""
        r = self.run(contract, method, args, *who, actor=actor)
        if r.code != code:
            raise AssertionError(
                f"{contract}.{method}: expected {code_name(code)}, got {code_name(r.code)}: {r.message or r.result}"
            )
        if match not in r.message:
            raise AssertionError(f"{contract}.{method}: message {r.message!r} does not contain {match!r}")
        return r

    # ---- reads ------------------------------------------------------------------------------------------
    def query(self, contract: str, method: str, args: dict[str, Any] | None = None) -> Any:
        """Run a ``@query`` on the current state (raises ContractFailure with the query's code if refused)."""
        return self.runtime.query(self.state, contract, method, args or {}, height=self.height, time_ms=self.time_ms)

    def query_fails(self, code: int, contract: str, method: str, args: dict[str, Any] | None = None) -> str:
        """Run a query that must be refused with ``code``; its message."""
        try:
            result = self.query(contract, method, args)
        except ContractFailure as exc:
            if exc.code != code:
                raise AssertionError(
                    f"{contract}.{method}: expected {code_name(code)}, got {code_name(exc.code)}"
                ) from exc
            return exc.message
        raise AssertionError(f"{contract}.{method}: expected {code_name(code)}, got a result: {result!r}")

    def get(self, key: str) -> Any:
        """The decoded value at a full key (``"contract/key"``), or None."""
        raw = self.state.get(key)
        return None if raw is None else encoding.decode(raw)

    def items(self, prefix: str) -> dict[str, Any]:
        """Every decoded value whose full key starts with ``prefix``, in key order."""
        return {k: encoding.decode(v) for k, v in self.state.range(prefix)}

    # ---- time ---------------------------------------------------------------------------------------------
    def advance(self, *, days: int = 0, hours: int = 0, seconds: int = 0, ms: int = 0) -> int:
        """Move the clock forward (the next block's time); returns the new ``time_ms``."""
        step = ((days * 24 + hours) * 3600 + seconds) * 1000 + ms
        if step < 0:
            raise ValueError("time moves forward only")
        self.time_ms += step
        return self.time_ms

    @property
    def today(self) -> int:
        """The next block's day: days since 1970-01-01 (UTC), as contracts compute ``ctx.time_ms // DAY_MS``."""
        return self.time_ms // DAY_MS

    def date(self, days: int = 0) -> str:
        """The ISO date ``days`` after the next block's day (``"2026-01-31"``)."""
        return (dt.date(1970, 1, 1) + dt.timedelta(days=self.today + days)).isoformat()
