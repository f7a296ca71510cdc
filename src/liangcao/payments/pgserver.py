"""A throwaway PostgreSQL server on loopback, from Debian's packages, for tests and ``liangcao pay bench``.

``initdb`` and ``postgres`` refuse to run as root, so under root the cluster belongs to the ``postgres``
user (``runuser`` for ``initdb``; the server itself drops to that user in its own ``preexec_fn``). The server
listens on 127.0.0.1 only, on a free port, with its socket in its own folder.

The server is this process's child (not daemonized by ``pg_ctl``) and gets SIGQUIT, PostgreSQL's immediate
shutdown (the postmaster stops its backends, then itself), when its owner ends, even by ``kill -9``
(``PR_SET_PDEATHSIG``): a killed test run or benchmark leaves no server behind.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


class PgUnavailable(RuntimeError):
    pass


def pg_bindir() -> Path:
    """The folder of Debian's newest PostgreSQL server programs (``scripts/install-postgres.sh`` installs them)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise PgUnavailable("PostgreSQL server programs not found: run scripts/install-postgres.sh")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """``with PgServer() as pg: pg.dsn`` — a fresh cluster, stopped and deleted on exit."""

    def __init__(self, root: Path | None = None, *, settings: dict[str, str] | None = None) -> None:
        self.bindir = pg_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="liangcao-pg-", dir=root))
        self.data = self.root / "data"
        self.port = _free_port()
        self.settings = settings or {}
        self._as: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres")
            os.chmod(self.root, 0o755)

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def _run(self, *args: str) -> None:
        proc = subprocess.run([*self._as, *args], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise PgUnavailable(f"{args[0]} failed: {proc.stderr.strip() or proc.stdout.strip()}")

    def start(self) -> PgServer:
        from liangcao.procs import die_with_parent

        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8")
        cmd = [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.root)]
        cmd += ["-c", "listen_addresses=127.0.0.1"]
        for k, v in self.settings.items():
            cmd += ["-c", f"{k}={v}"]
        user = pwd.getpwnam("postgres") if self._as else None
        dies = die_with_parent(signal.SIGQUIT)

        def setup() -> None:
            if user is not None:
                os.setgroups([])
                os.setgid(user.pw_gid)
                os.setuid(user.pw_uid)
            dies()  # after the change of user: the kernel clears the parent-death signal when the uid changes

        with open(self.root / "log", "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, preexec_fn=setup)
        try:
            wait_connectable(self.dsn, 60, self.proc)
        except BaseException:
            self.stop()
            raise
        return self

    def pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown: roll back open transactions, then stop
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGQUIT)
                self.proc.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_connectable(dsn: str, timeout_s: float = 30, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Until the server at ``dsn`` takes a connection (``proc``: its process, which must not have exited)."""
    import psycopg

    deadline = time.monotonic() + timeout_s
    while True:
        if proc is not None and proc.poll() is not None:
            raise PgUnavailable(f"postgres exited ({proc.returncode}) before it took connections")
        try:
            psycopg.connect(dsn).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
