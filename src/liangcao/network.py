"""A whole local consortium on one machine: ``liangcao network up | status | down``.

``up --orgs N --home DIR`` makes the network folder if needed (keys, certificates, genesis), then starts
one ``nats-server`` per organisation in one JetStream cluster and one node per organisation, each with its
own folder (``DIR/nodes/orgK``: settings, token secret, SQLite store), its own ports, all on loopback, and
records what runs in ``DIR/network.json``. Processes are detached: they outlive the command; ``down`` stops
them (nodes first, with SIGTERM, so each commits what it admitted; then the servers).

On separate machines the same pieces run one per organisation: ``nats-server -c nats.conf`` with routes to
the other organisations' servers, and ``liangcao node start --home DIR --node nodes/orgK --nats URLS``
(docs/operations.md).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liangcao.ordering.natsserver import NatsCluster, NatsNode, wait_port
from liangcao.procs import free_ports
from liangcao.tokens import new_secret

STATE = "network.json"
# Children started by this process. They are detached (their own session) and outlive a CLI run; kept here
# so a long-lived caller (the tests) can reap them in down() instead of leaving zombies behind.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass
class OrgProcess:
    org: str
    node_dir: str
    port: int
    nats_port: int
    cluster_port: int
    node_pid: int | None = None
    nats_pid: int | None = None


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        del _CHILDREN[pid]
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie child of ours is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


def load_state(home: Path) -> dict[str, Any]:
    path = home / STATE
    if not path.exists():
        raise FileNotFoundError(f"{home} has no {STATE}: start the network with 'liangcao network up'")
    state: dict[str, Any] = json.loads(path.read_text())
    return state


def _save(home: Path, state: dict[str, Any]) -> None:
    tmp = home / (STATE + ".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(home / STATE)


def add_org_node(home: Path, org: str, port: int, urls: list[str], *, block_txs_max: int, block_wait_ms: int) -> str:
    """Write ``nodes/<org>/node.json`` (and its token secret) for an organisation of the network."""
    node_dir = f"nodes/{org}"
    d = home / node_dir
    d.mkdir(parents=True, exist_ok=True)
    config = {
        "org": org,
        "host": "127.0.0.1",
        "port": port,
        "store": "ledger.sqlite",
        "orderer": f"orgs/{org}/members/orderer0",
        "peer": f"orgs/{org}/members/peer0",
        "block_txs_max": block_txs_max,
        "block_wait_ms": block_wait_ms,
        "verify_workers": 1,
        "nats": urls,
    }
    (d / "node.json").write_text(json.dumps(config, indent=1))
    if not (d / "token.secret").exists():
        new_secret(d / "token.secret")
    return node_dir


def _cluster(home: Path, orgs: list[OrgProcess]) -> NatsCluster:
    nodes = [NatsNode(f"n-{o.org}", o.nats_port, o.cluster_port, home / "nats" / o.org) for o in orgs if o.nats_port]
    for n in nodes:
        n.dir.mkdir(parents=True, exist_ok=True)
    return NatsCluster(home / "nats", len(nodes), nodes=nodes)


def up(
    home: Path, orgs: int = 3, *, block_txs_max: int = 1000, block_wait_ms: int = 20, base_port: int = 0
) -> dict[str, Any]:
    """Start (or restart) the local consortium; returns the recorded state."""
    from liangcao.node.home import init_network

    home.mkdir(parents=True, exist_ok=True)
    if not (home / "consortium.json").exists():
        init_network(home, orgs)
    names = [o["org_id"] for o in json.loads((home / "consortium.json").read_text())["orgs"]]
    state = json.loads((home / STATE).read_text()) if (home / STATE).exists() else {"orgs": []}
    known = {o["org"]: OrgProcess(**o) for o in state["orgs"]}
    names += [o for o in known if o not in names]  # organisations admitted later (add_org)
    ports = free_ports(3 * len(names))
    procs: list[OrgProcess] = []
    for k, org in enumerate(names):
        if org in known:
            procs.append(known[org])
            continue
        port = base_port + k if base_port else ports[3 * k]
        procs.append(OrgProcess(org, f"nodes/{org}", port, ports[3 * k + 1], ports[3 * k + 2]))
    cluster = _cluster(home, procs)
    for o, n in zip([o for o in procs if o.nats_port], cluster.nodes, strict=True):
        if not _alive(o.nats_pid):
            _start_detached_nats(cluster, n)
            o.nats_pid = n.proc.pid if n.proc else None
    for n in cluster.nodes:
        wait_port(n.client_port)
    urls = cluster.urls
    logs = home / "logs"
    logs.mkdir(exist_ok=True)
    for o in procs:
        if not (home / o.node_dir / "node.json").exists():
            add_org_node(home, o.org, o.port, urls, block_txs_max=block_txs_max, block_wait_ms=block_wait_ms)
        if not _alive(o.node_pid):
            o.node_pid = start_node_process(home, o.node_dir, logs / f"{o.org}.log")
    state = {"orgs": [o.__dict__ for o in procs], "nats": urls}
    _save(home, state)
    for o in procs:
        wait_healthy(f"http://127.0.0.1:{o.port}", o.node_pid)
    return state


def _start_detached_nats(cluster: NatsCluster, node: NatsNode) -> None:
    routes = [n.cluster_port for n in cluster.nodes if n is not node]
    conf = node.dir / "nats.conf"
    conf.write_text(node.config(cluster.name, routes))
    from liangcao.ordering.natsserver import nats_server_binary

    with open(node.dir / "nats.log", "ab") as log:
        node.proc = subprocess.Popen(
            [nats_server_binary(), "-c", str(conf)], stdout=log, stderr=log, start_new_session=True
        )
    _CHILDREN[node.proc.pid] = node.proc


def start_node_process(home: Path, node_dir: str, log_path: Path) -> int:
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "liangcao.cli", "node", "start", "--home", str(home), "--node", node_dir],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    return proc.pid


def wait_healthy(url: str, pid: int | None, timeout_s: float = 90) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/v1/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if not _alive(pid):
            raise RuntimeError(f"the node for {url} exited; see its log in the network folder's logs/")
        time.sleep(0.1)
    raise RuntimeError(f"the node at {url} did not become healthy")


def status(home: Path) -> list[dict[str, Any]]:
    import httpx

    rows = []
    for o in load_state(home)["orgs"]:
        row: dict[str, Any] = {
            "org": o["org"],
            "url": f"http://127.0.0.1:{o['port']}",
            "node": "up" if _alive(o["node_pid"]) else "down",
            "nats": ("up" if _alive(o["nats_pid"]) else "down") if o["nats_port"] else "none",
        }
        try:
            h = httpx.get(row["url"] + "/v1/health", timeout=2).json()
            fin = h.get("finality") or {}
            summary = h.get("fork_alarm_summary") or {}
            row.update(
                height=h["height"],
                block_hash=h["block_hash"],
                status=h["status"],
                forks=summary.get("count", len(h["fork_alarms"])),
                final_upto=fin.get("final_upto"),
                nonfinal=fin.get("nonfinal_blocks"),
                oldest_nonfinal_age_ms=fin.get("oldest_nonfinal_age_ms"),
                lag_blocks=(h.get("lag") or {}).get("blocks"),
                ordering_reachable=(h.get("ordering_status") or {}).get("reachable"),
                problems=h.get("problems", []),
            )
        except (httpx.HTTPError, ValueError, KeyError):
            row.update(height=None, block_hash=None, status="unreachable", forks=None, problems=["no answer"])
        rows.append(row)
    return rows


def add_org(home: Path, org_type: str = "logistics") -> dict[str, Any]:
    """Admit a new organisation by governance (a majority of the admins sign ``consortium.add_org``), give it
    a node of its own and start it: it catches up from the stream. Returns the receipt of the admission."""
    from liangcao.client import Client
    from liangcao.crypto.signer import load_signer
    from liangcao.node.genesis import make_org, write_org
    from liangcao.node.home import member_dir

    state = load_state(home)
    orgs = [o["org"] for o in state["orgs"]]
    new_id = f"org{len(orgs) + 1}"
    material = make_org(new_id, org_type, f"Organisation {len(orgs) + 1} ({org_type})")
    write_org(home, material)
    admins = [load_signer(member_dir(home, f"{o}/admin")) for o in orgs[: len(orgs) // 2 + 1]]
    first = state["orgs"][0]
    with Client(f"http://127.0.0.1:{first['port']}") as client:
        tx = client.build("consortium", "add_org", material.org_args(), admins)
        result = client.submit(tx, wait=True, timeout_ms=30_000)
    receipt = result.get("receipt") or {}
    if receipt.get("code") != 0:
        raise RuntimeError(f"the consortium refused {new_id}: {receipt.get('message')}")
    (port,) = free_ports(1)
    config = json.loads((home / first["node_dir"] / "node.json").read_text())
    node_dir = add_org_node(
        home,
        new_id,
        port,
        state["nats"],
        block_txs_max=config["block_txs_max"],
        block_wait_ms=config["block_wait_ms"],
    )
    proc = OrgProcess(new_id, node_dir, port, 0, 0)
    proc.node_pid = start_node_process(home, node_dir, home / "logs" / f"{new_id}.log")
    state["orgs"].append(proc.__dict__)
    _save(home, state)
    wait_healthy(f"http://127.0.0.1:{port}", proc.node_pid)
    return dict(receipt)


def down(home: Path, timeout_s: float = 60) -> None:
    state = load_state(home)
    for key in ("node_pid", "nats_pid"):  # nodes first: they commit what they admitted, then the servers go
        pids = [o[key] for o in state["orgs"] if _alive(o[key])]
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        for o in state["orgs"]:
            o[key] = None
    _save(home, state)
