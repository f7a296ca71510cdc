"""The throwaway PostgreSQL server stops with its owner, even when the owner is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psycopg

from liangcao.procs import pid_alive

OWNER = """
import sys, time
from liangcao.payments.pgserver import PgServer
pg = PgServer().start()
print(pg.pid(), pg.dsn, pg.root, flush=True)
time.sleep(600)
"""


def test_a_killed_owner_leaves_no_server() -> None:
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        pid_text, *dsn_parts, _root = owner.stdout.readline().split()
        pid = int(pid_text)
        psycopg.connect(" ".join(dsn_parts)).close()  # it serves
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(10)
        deadline = time.monotonic() + 30
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not pid_alive(pid), "the postmaster outlived its killed owner"
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(10)
        if owner.stdout is not None:
            owner.stdout.close()
