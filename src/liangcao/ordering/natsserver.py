"""Local JetStream clusters of Debian's ``nats-server``: one server per organisation, on loopback.

Used by tests and by the local network tooling. Each server gets its own client and cluster port, its own
JetStream folder and a config file naming the other servers as routes; JetStream clustering (RAFT per
stream) needs at least three servers for a stream with three replicas.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from liangcao.procs import die_with_parent, free_ports, port_open


class NatsUnavailable(RuntimeError):
    pass


def nats_server_binary() -> str:
    path = shutil.which("nats-server")
    if path is None:
        raise NatsUnavailable("nats-server not found: run scripts/install-nats.sh (Debian package nats-server)")
    return path


@dataclass
class NatsNode:
    name: str
    client_port: int
    cluster_port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    def config(self, cluster: str, routes: list[int]) -> str:
        route_urls = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in routes)
        return (
            f'server_name: "{self.name}"\n'
            f'listen: "127.0.0.1:{self.client_port}"\n'
            f'jetstream {{ store_dir: "{self.dir / "js"}" }}\n'
            f'cluster {{ name: "{cluster}", listen: "127.0.0.1:{self.cluster_port}", routes: [{route_urls}] }}\n'
        )


@dataclass
class NatsCluster:
    """``with NatsCluster(root, 3) as c: c.urls`` — started, and stopped (SIGTERM) on exit."""

    root: Path
    size: int = 3
    name: str = "liangcao"
    nodes: list[NatsNode] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.nodes:
            ports = free_ports(2 * self.size)
            for i in range(self.size):
                d = self.root / f"nats{i + 1}"
                d.mkdir(parents=True, exist_ok=True)
                self.nodes.append(NatsNode(f"n{i + 1}", ports[2 * i], ports[2 * i + 1], d))

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def start_node(self, node: NatsNode) -> None:
        routes = [n.cluster_port for n in self.nodes if n is not node]
        conf = node.dir / "nats.conf"
        conf.write_text(node.config(self.name, routes))
        log = open(node.dir / "nats.log", "ab")  # noqa: SIM115 - handed to the child process
        # dies with its owner even when the owner is killed (a test run stopped by SIGTERM or SIGKILL left a
        # dozen servers behind); ``liangcao net up`` starts its servers detached instead, on purpose
        node.proc = subprocess.Popen(
            [nats_server_binary(), "-c", str(conf)], stdout=log, stderr=log, preexec_fn=die_with_parent()
        )
        log.close()

    def start(self) -> NatsCluster:
        for n in self.nodes:
            self.start_node(n)
        for n in self.nodes:
            wait_port(n.client_port)
        return self

    def kill(self, node: NatsNode, sig: int = signal.SIGKILL) -> None:
        if node.proc is not None:
            node.proc.send_signal(sig)
            node.proc.wait(30)
            node.proc = None

    def stop(self) -> None:
        for n in self.nodes:
            self.kill(n, signal.SIGTERM)

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_port(port: int, timeout_s: float = 30) -> None:
    if not port_open(port, timeout_s):
        raise NatsUnavailable(f"nothing listens on 127.0.0.1:{port}")
