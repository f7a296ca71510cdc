"""Creating a consortium: every organisation's CA, its members' keys and certificates, and the genesis block.

``create_consortium(3)`` gives a ready-to-run consortium in memory; ``Consortium.write(dir)`` lays it out
on disk (private keys as PKCS#8 PEM, certificates as PEM) and ``Consortium.load(dir)`` reads it back::

    DIR/consortium.json                      chain id, genesis hash, organisations and their members
    DIR/genesis.json                         the genesis block
    DIR/orgs/<org>/ca.pem, ca.key.pem
    DIR/orgs/<org>/members/<name>/cert.pem, key.pem

In a real deployment each organisation generates its own keys and sends only its CA certificate; this
function plays every organisation at once, for local networks, demos and tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from liangcao import encoding
from liangcao.apps.bundle import default_registry
from liangcao.contracts.runtime import GENESIS_CONTRACT, GENESIS_METHOD, ContractRuntime
from liangcao.crypto import identity, keys
from liangcao.crypto.signer import Signer
from liangcao.ledger import block as blk
from liangcao.ledger import executor
from liangcao.ledger.state import MemoryState

#: Organisation types given to organisations 1..N when none are named: the seed story's cast.
DEFAULT_ORG_TYPES = (
    "core_enterprise",
    "supplier",
    "bank",
    "warehouse",
    "logistics",
    "platform",
    "insurer",
    "regulator",
)
#: Every organisation gets these members.
STANDARD_MEMBERS: tuple[tuple[str, str], ...] = (
    ("admin", "admin"),
    ("peer0", "peer"),
    ("orderer0", "orderer"),
    ("alice", "member"),
    ("bob", "member"),
)


@dataclass
class Member:
    name: str
    role: str
    key: Ed25519PrivateKey
    cert: bytes

    @property
    def signer(self) -> Signer:
        return Signer(self.key, self.cert)


@dataclass
class OrgMaterial:
    org_id: str
    name: str
    org_type: str
    ca_key: Ed25519PrivateKey
    ca_cert: bytes
    members: dict[str, Member] = field(default_factory=dict)

    def signer(self, name: str) -> Signer:
        return self.members[name].signer

    def enroll(self, name: str, role: str, now_ms: int | None = None, seed: bytes | None = None) -> Member:
        """Issue a new member certificate from this organisation's CA (``seed``: deterministic, simulations)."""
        key = keys.generate(None if seed is None else seed + f"/{self.org_id}/{name}".encode())
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        serial = None if seed is None else _serial(seed, self.org_id, name)
        cert = identity.issue(self.ca_key, self.ca_cert, name, role, key.public_key(), now, serial=serial)
        m = Member(name, role, key, cert)
        self.members[name] = m
        return m

    def org_args(self) -> dict[str, Any]:
        return {
            "org_id": self.org_id,
            "name": self.name,
            "org_type": self.org_type,
            "ca_cert": keys.b64(self.ca_cert),
        }


def _serial(seed: bytes, org: str, name: str) -> int:
    return int.from_bytes(hashlib.sha256(seed + f"/serial/{org}/{name}".encode()).digest()[:15], "big") | 1


def make_org(
    org_id: str, org_type: str, name: str = "", now_ms: int | None = None, seed: bytes | None = None
) -> OrgMaterial:
    """An organisation's CA and standard members. ``seed`` makes every key and certificate a function of it
    (the simulator replays a seed byte for byte); never use it for a real consortium."""
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    ca_key = keys.generate(None if seed is None else seed + f"/{org_id}/ca".encode())
    serial = None if seed is None else _serial(seed, org_id, "ca")
    org = OrgMaterial(
        org_id, name or org_id, org_type, ca_key, identity.make_ca(org_id, org_type, ca_key, now, serial=serial)
    )
    for member, role in STANDARD_MEMBERS:
        org.enroll(member, role, now, seed)
    return org


def write_org(root: Path, org: OrgMaterial) -> Path:
    """An organisation's CA and members' keys and certificates under ``root/orgs/<org>`` (keys 0600)."""
    base = root / "orgs" / org.org_id
    base.mkdir(parents=True, exist_ok=True)
    (base / "ca.pem").write_bytes(identity.der_to_pem(org.ca_cert))
    _write_secret(base / "ca.key.pem", keys.private_pem(org.ca_key))
    for m in org.members.values():
        mdir = base / "members" / m.name
        mdir.mkdir(parents=True, exist_ok=True)
        (mdir / "cert.pem").write_bytes(identity.der_to_pem(m.cert))
        _write_secret(mdir / "key.pem", keys.private_pem(m.key))
    return base


@dataclass
class Consortium:
    chain_id: str
    name: str
    orgs: list[OrgMaterial]
    genesis: blk.Block

    def org(self, org_id: str) -> OrgMaterial:
        for o in self.orgs:
            if o.org_id == org_id:
                return o
        raise KeyError(org_id)

    # ---- files ------------------------------------------------------------------------------------------
    def write(self, directory: str | Path) -> Path:
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        for org in self.orgs:
            write_org(root, org)
        (root / "genesis.json").write_text(json.dumps(self.genesis.to_dict(), indent=1, sort_keys=True))
        summary = {
            "chain_id": self.chain_id,
            "name": self.name,
            "genesis_hash": self.genesis.hash,
            "orgs": [
                {
                    "org_id": o.org_id,
                    "name": o.name,
                    "type": o.org_type,
                    "members": {m.name: m.role for m in o.members.values()},
                }
                for o in self.orgs
            ],
        }
        (root / "consortium.json").write_text(json.dumps(summary, indent=1, sort_keys=True))
        return root

    @classmethod
    def load(cls, directory: str | Path) -> Consortium:
        root = Path(directory)
        summary = json.loads((root / "consortium.json").read_text())
        genesis = blk.block_from_dict(json.loads((root / "genesis.json").read_text()))
        orgs: list[OrgMaterial] = []
        for o in summary["orgs"]:
            base = root / "orgs" / o["org_id"]
            org = OrgMaterial(
                o["org_id"],
                o["name"],
                o["type"],
                keys.load_private_pem((base / "ca.key.pem").read_bytes()),
                identity.pem_to_der((base / "ca.pem").read_bytes()),
            )
            for name, role in o["members"].items():
                mdir = base / "members" / name
                org.members[name] = Member(
                    name,
                    role,
                    keys.load_private_pem((mdir / "key.pem").read_bytes()),
                    identity.pem_to_der((mdir / "cert.pem").read_bytes()),
                )
            orgs.append(org)
        return cls(summary["chain_id"], summary["name"], orgs, genesis)


def _write_secret(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def make_genesis(
    chain_id: str,
    name: str,
    orgs: list[OrgMaterial],
    time_ms: int,
    sealer: Signer,
    policies: dict[str, dict[str, int]] | None = None,
) -> blk.Block:
    """The genesis block: one unsigned ``consortium.genesis`` transaction, executed and sealed."""
    body = {
        "chain_id": chain_id,
        "contract": GENESIS_CONTRACT,
        "method": GENESIS_METHOD,
        "args": {
            "chain_id": chain_id,
            "name": name,
            "created_ms": time_ms,
            "orgs": [o.org_args() for o in orgs],
            "policies": policies or {},
        },
        "nonce": "genesis",
        "not_after": time_ms,
    }
    raw = encoding.canonical({"body": body, "signatures": []})
    runtime = ContractRuntime(default_registry())
    ex = executor.execute(
        MemoryState(),
        runtime,
        chain_id=chain_id,
        height=0,
        time_ms=time_ms,
        prev_state_hash=blk.ZERO_HASH,
        txs=[raw],
    )
    if ex.codes[0] != 0:
        raise ValueError(f"genesis transaction failed: {encoding.decode(ex.receipts[0])}")
    header = ex.header(chain_id, 0, blk.ZERO_HASH, time_ms)
    return blk.Block(header, blk.Seal.make(sealer.key, sealer.cert, header.hash), (raw,))


def create_consortium(
    n_orgs: int = 3,
    *,
    chain_id: str = "liangcao-local",
    name: str = "liangcao local consortium",
    org_types: list[str] | None = None,
    now_ms: int | None = None,
    seed: bytes | None = None,
) -> Consortium:
    """Keys, certificates and genesis for ``n_orgs`` organisations named org1..orgN (``seed``: see make_org)."""
    if not 1 <= n_orgs <= 64:
        raise ValueError("a local consortium has 1 to 64 organisations")
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    types = org_types or [DEFAULT_ORG_TYPES[i % len(DEFAULT_ORG_TYPES)] for i in range(n_orgs)]
    if len(types) != n_orgs:
        raise ValueError("give one organisation type per organisation")
    orgs = [make_org(f"org{i + 1}", types[i], f"Organisation {i + 1} ({types[i]})", now, seed) for i in range(n_orgs)]
    genesis = make_genesis(chain_id, name, orgs, now, orgs[0].signer("orderer0"))
    return Consortium(chain_id, name, orgs, genesis)
