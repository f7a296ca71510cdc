"""The test and benchmark NATS servers (``liangcao.ordering.natsserver``) stop with their owner, even killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from liangcao.procs import pid_alive

OWNER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from liangcao.ordering.natsserver import NatsCluster
    c = NatsCluster(Path(sys.argv[1]), 2).start()
    print(" ".join(str(n.proc.pid) for n in c.nodes), flush=True)
    time.sleep(600)
    """
)


def test_a_killed_owner_takes_its_servers_with_it(tmp_path: Path) -> None:
    with subprocess.Popen([sys.executable, "-c", OWNER, str(tmp_path)], stdout=subprocess.PIPE, text=True) as owner:
        try:
            assert owner.stdout is not None
            pids = [int(p) for p in owner.stdout.readline().split()]
            assert len(pids) == 2 and all(pid_alive(p) for p in pids)
            os.kill(owner.pid, signal.SIGKILL)  # no cleanup runs in the owner
            owner.wait(10)
            deadline = time.monotonic() + 15
            while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not any(pid_alive(p) for p in pids), pids
        finally:
            if owner.poll() is None:
                owner.kill()
