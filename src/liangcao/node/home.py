"""A node's home folder: creating a local network, loading a node from it, and serving it over HTTP.

``network init --orgs N --out DIR`` lays out::

    DIR/consortium.json, DIR/genesis.json, DIR/orgs/...     keys, certificates, genesis (liangcao.node.genesis)
    DIR/node/node.json                                      the node's settings (below)
    DIR/node/token.secret                                   the key its bearer tokens are made with (0600)
    DIR/node/token.revoked                                  members whose tokens were revoked, and when
    DIR/node/ledger.sqlite                                  created by the node on first start

``node.json``: ``{"org", "host", "port", "store", "orderer", "peer", "block_txs_max", "block_wait_ms",
"verify_workers", "custody"}`` where ``orderer`` and ``peer`` are member folders relative to DIR; optionally
``store_check`` (``state``, ``recent`` or ``off``: what is checked before serving) and the health thresholds
``lag_blocks_max``, ``lag_messages_max``, ``nonfinal_age_ms_max``, ``ordering_silence_ms_max``.

``custody`` (false unless the operator sets it, or starts the node with ``--custody``): whether the node
may sign as a member with that member's key from ``DIR/orgs/<org>/members/<name>/`` (EPCIS capture through
the API, for a ``write`` token). Off, the node uses only its own orderer and peer keys; members sign on
their side with the SDK or the CLI.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liangcao.crypto.signer import load_signer
from liangcao.ledger import block as blk
from liangcao.node.genesis import Consortium, create_consortium
from liangcao.node.node import Node, NodeSettings
from liangcao.tokens import REVOKED_FILE, TokenAuth, load_secret, new_secret

DEFAULT_PORT = 7800
#: node.json keys that go to NodeSettings as they are (all optional)
NODE_OPTIONS = (
    "store_check",
    "lag_blocks_max",
    "lag_messages_max",
    "nonfinal_age_ms_max",
    "ordering_silence_ms_max",
    "mempool_bytes_max",
    "stop_drain_ms_max",
)


#: A member id as it may name folders: ``org/name``, each part a plain name (no separator, no ``..``, no
#: leading dot), the organisation as the consortium contract allows it.
MEMBER_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}/[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def valid_member_id(member_id: object) -> bool:
    return isinstance(member_id, str) and MEMBER_ID.fullmatch(member_id) is not None


def member_dir(home: str | Path, member_id: str) -> Path:
    """``home/orgs/<org>/members/<name>``; ValueError for anything but a plain ``org/name`` (no path tricks)."""
    if not valid_member_id(member_id):
        raise ValueError(f"{member_id!r} is not a member id ORG/NAME (letters, digits, '_' or '-': no path)")
    org, _, name = member_id.partition("/")
    return Path(home) / "orgs" / org / "members" / name


def init_network(
    out: str | Path,
    orgs: int = 3,
    *,
    chain_id: str = "liangcao-local",
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    block_txs_max: int = 1000,
    block_wait_ms: int = 20,
    org_types: list[str] | None = None,
) -> Consortium:
    root = Path(out)
    if (root / "consortium.json").exists():
        raise FileExistsError(f"{root} already holds a network")
    consortium = create_consortium(orgs, chain_id=chain_id, org_types=org_types)
    consortium.write(root)
    node_dir = root / "node"
    node_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "org": "org1",
        "host": host,
        "port": port,
        "store": "ledger.sqlite",
        "orderer": "orgs/org1/members/orderer0",
        "peer": "orgs/org1/members/peer0",
        "block_txs_max": block_txs_max,
        "block_wait_ms": block_wait_ms,
        "verify_workers": None,
        "custody": False,
    }
    (node_dir / "node.json").write_text(json.dumps(config, indent=1))
    new_secret(node_dir / "token.secret")
    return consortium


@dataclass
class NodeHome:
    root: Path
    config: dict[str, Any]
    node_dir: str = "node"  # one organisation's node folder inside the network folder

    @classmethod
    def open(cls, root: str | Path, node: str = "node") -> NodeHome:
        r = Path(root)
        path = r / node / "node.json"
        if not path.exists():
            raise FileNotFoundError(f"{r} is not a network folder (no {node}/node.json); run 'liangcao network init'")
        return cls(r, json.loads(path.read_text()), node)

    @property
    def store_path(self) -> Path:
        return self.root / self.node_dir / str(self.config["store"])

    @property
    def url(self) -> str:
        return f"http://{self.config['host']}:{self.config['port']}"

    def auth(self) -> TokenAuth:
        d = self.root / self.node_dir
        return TokenAuth(load_secret(d / "token.secret"), revoked=d / REVOKED_FILE)

    @property
    def custody(self) -> bool:
        """Whether node.json opts in to signing with members' keys (off unless set to true)."""
        return self.config.get("custody") is True

    def custody_root(self, override: bool | None = None) -> Path | None:
        """The folder the node may take member keys from, or None (the default): ``override`` beats node.json."""
        return self.root if (self.custody if override is None else override) else None

    def genesis(self) -> blk.Block:
        return blk.block_from_dict(json.loads((self.root / "genesis.json").read_text()))

    def chain_id(self) -> str:
        return str(json.loads((self.root / "consortium.json").read_text())["chain_id"])

    def organisations(self) -> int:
        return len(json.loads((self.root / "consortium.json").read_text())["orgs"])

    def node(self, **overrides: Any) -> Node:
        """The node this folder describes; with ``nats`` (a list of server URLs, in node.json or given here)
        it orders through the consortium's JetStream cluster instead of the embedded solo orderer."""
        cfg = {**self.config, **{k: v for k, v in overrides.items() if v is not None}}
        link = None
        if cfg.get("nats"):
            from liangcao.node.link import JetStreamLink

            link = JetStreamLink(list(cfg["nats"]), self.chain_id(), self.organisations())
        # optional in node.json: the store check at start and the health thresholds (NodeSettings)
        extra = {k: cfg[k] for k in NODE_OPTIONS if cfg.get(k) is not None}
        settings = NodeSettings(
            block_txs_max=int(cfg["block_txs_max"]),
            block_wait_ms=int(cfg["block_wait_ms"]),
            verify_workers=cfg.get("verify_workers"),
            **extra,
        )
        return Node(
            self.store_path,
            self.genesis(),
            orderer=load_signer(self.root / cfg["orderer"]),
            peer=load_signer(self.root / cfg["peer"]),
            settings=settings,
            link=link,
        )
