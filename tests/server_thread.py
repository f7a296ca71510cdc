"""Servers of ``liangcao.checkout.server`` on one event loop in a thread of the test process: the harness of
the attack tests (the one-process gateway, and an edge relaying to its application on a Unix socket)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Sequence

from liangcao.checkout.server import Server


class ServerThread:
    """Start ``servers`` in order on a loop made by ``loop_factory`` (an application's server before the edge
    that relays to it), wait until ``port`` answers, and stop them all with :meth:`close`."""

    def __init__(
        self, servers: Sequence[Server], port: int, loop_factory: Callable[[], asyncio.AbstractEventLoop]
    ) -> None:
        self.servers = list(servers)
        self.loop = loop_factory()
        self.stop = asyncio.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                return
            time.sleep(0.02)
        raise RuntimeError("the server did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.stop = asyncio.Event()

        async def all_of() -> None:
            tasks = []
            for srv in self.servers:
                tasks.append(asyncio.ensure_future(srv.serve(self.stop)))
                await asyncio.sleep(0.05)
            await asyncio.gather(*tasks)

        self.loop.run_until_complete(all_of())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(15)
        self.loop.close()
