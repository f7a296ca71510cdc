"""uvicorn serving a node's API: the process side of ``liangcao node start`` (interfaces layer)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from liangcao.node.events import Hub
from liangcao.node.node import Node
from liangcao.tokens import TokenAuth

#: After SIGTERM, requests still running (a slow client, a long read) get this long before they are cancelled.
SHUTDOWN_GRACE_S = 5


class Server:
    """uvicorn serving a node's API; ``run`` blocks (main thread: SIGINT/SIGTERM stop it gracefully)."""

    def __init__(
        self,
        node: Node,
        auth: TokenAuth,
        host: str,
        port: int,
        log_level: str = "warning",
        custody: Path | None = None,
    ) -> None:
        """``custody``: a network folder whose members' keys the node may sign with (opt-in; None: none)."""
        import uvicorn

        from liangcao.api.app import create_app
        from liangcao.node.capture import Custody

        self.node = node
        self.app = create_app(node, auth, Custody(custody))
        hub: Hub = self.app.state.hub

        class Uvicorn(uvicorn.Server):
            async def shutdown(self, sockets: Any = None) -> None:
                # Open event streams (an explorer tab, a client following blocks) would hold the shutdown up
                # for ever: end them first; each gets an ``end`` message and resumes elsewhere or later.
                hub.close()
                await super().shutdown(sockets)

        self.server = Uvicorn(
            uvicorn.Config(
                self.app,
                host=host,
                port=port,
                log_level=log_level,
                access_log=False,
                lifespan="on",
                timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
            )
        )

    def run(self) -> None:
        """Serve until SIGINT/SIGTERM, then commit everything admitted and close the store: event streams end
        at once, running requests get ``SHUTDOWN_GRACE_S``, the node drains and stops its workers."""
        self.node.start()
        # uvicorn captures SIGINT/SIGTERM while serving and re-raises them to the handlers it found when it
        # returns; with the default handlers that kills the process before the mempool is drained. Handlers
        # that do nothing make the re-raise harmless, so the drain below always runs.
        quiet = threading.current_thread() is threading.main_thread()
        previous = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGINT, signal.SIGTERM)} if quiet else {}
        try:
            self.server.run()
        finally:
            self.node.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def start_in_thread(self, ready: Callable[[], None] | None = None) -> threading.Thread:
        """Serve from a background thread (the demo's way); :meth:`stop_thread` ends it."""
        self.node.start()
        t = threading.Thread(target=self.server.run, name="liangcao-api", daemon=True)
        t.start()
        import time

        while not self.server.started:
            if not t.is_alive():
                raise RuntimeError("the API server failed to start (is the port in use?)")
            time.sleep(0.02)
        if ready is not None:
            ready()
        return t

    def stop_thread(self, thread: threading.Thread) -> None:
        self.server.should_exit = True
        thread.join(30)
        self.node.stop()
