"""Loopback ports and /proc figures: the one place the node, the tools, the tests and the benchmarks get them.

Foundations layer: no liangcao import. Ports are only ever bound on 127.0.0.1 (the project's servers listen on
loopback in tests and benchmarks)."""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Allocations of containers between two young-generation collections in a server process (CPython's default is
#: 700): each collection of the older generations walks every container they hold, so collecting ten times less
#: often costs ten times less for the same garbage
GC_YOUNG = 10_000


def settle_heap(young: int = GC_YOUNG) -> None:
    """Prepare a long-running server's heap for its working life: what it built at start-up (modules, the
    contracts, the FastAPI application, caches read from the store) lives as long as the process, so it is
    frozen out of the cyclic collector's passes, and the young generation is collected less often.

    Measured on a node taking EPCIS captures (``liangcao trace bench``): full collections ran every second or
    two and took 0.15-0.18 s each, mostly walking these permanent objects, holding the interpreter lock for
    about an eighth of the node's time."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(young, 10, 10)


def free_port(preferred: int = 0) -> int:
    """``preferred`` if it is free on 127.0.0.1, else any free port."""
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise OSError("no free port")


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports on 127.0.0.1 (held together while chosen, so they differ)."""
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(int(s.getsockname()[1]))
    for s in socks:
        s.close()
    return ports


def port_open(port: int, timeout_s: float = 30) -> bool:
    """Wait until something accepts connections on 127.0.0.1:``port``; whether it did within the time."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)


def die_with_parent(sig: int = 15) -> Callable[[], None]:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets ``sig`` (SIGTERM by default) when the thread
    that started it (call this from the main thread) or its process ends, even by SIGKILL (Linux
    ``PR_SET_PDEATHSIG``; elsewhere it does nothing)."""

    parent = os.getpid()

    def preexec() -> None:
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, sig, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            return
        # The parent may have died between the fork and the prctl: the signal would then never come.
        if os.getpid() != parent and os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return preexec


def name_this_thread(name: str) -> None:
    """Name the calling thread as ``top -H`` shows it, and in a process's main thread the process as ``ps -o
    comm`` shows it (Linux ``PR_SET_NAME``, 15 bytes; elsewhere nothing): a node's worker processes are
    otherwise all "python", and Python before 3.14 does not give the OS its threads' names."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        return


def _cpu_s(stat: Path) -> tuple[str, float]:
    """(comm, user + system seconds) from a /proc ``stat`` file; the comm may hold spaces and parentheses."""
    text = stat.read_text()
    comm = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    return comm, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_by_name(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) of a process and its children, by name: the process itself under
    ``process``, each of its threads that has a name of its own under ``thread:<name>`` (also counted in
    ``process``), each child under its ``comm`` (summed over children of one name). Gone processes count 0."""
    out: dict[str, float] = {}
    try:
        _, out["process"] = _cpu_s(Path(f"/proc/{pid}/stat"))
        children: list[int] = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            name, cpu = _cpu_s(task / "stat")
            if int(task.name) != pid and not name.startswith("python"):
                out[f"thread:{name}"] = out.get(f"thread:{name}", 0.0) + cpu
            children += [int(c) for c in (task / "children").read_text().split()]
    except (OSError, ValueError):
        return out
    for child in children:
        try:
            name, cpu = _cpu_s(Path(f"/proc/{child}/stat"))
        except (OSError, ValueError):
            continue
        out[name] = out.get(name, 0.0) + cpu
    return out


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of a process and its children, in MiB."""
    total_kb = 0
    pids = [pid]
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            pids += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024


def stop_process(proc: subprocess.Popen[Any], grace_s: float = 15.0) -> None:
    """Stop a child: SIGTERM (it unwinds: servers close, children follow), then SIGKILL after ``grace_s``."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def raise_fd_limit(want: int = 65536) -> int:
    """Raise this process's soft limit on open files towards ``want`` (never past the hard limit); the limit
    now. A server holding a connection per client needs more than the common default of 1,024."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, exited but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
