"""uvicorn serving a node's API: the process side of ``liangcao node start`` (interfaces layer)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path

from liangcao.node.node import Node
from liangcao.tokens import TokenAuth


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
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host=host, port=port, log_level=log_level, access_log=False, lifespan="on")
        )

    def run(self) -> None:
        """Serve until SIGINT/SIGTERM, then commit everything admitted and close the store."""
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
