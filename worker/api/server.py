"""Running the API under uvicorn in a thread of its own (`orch api` and `orch up` wait on
their signals in the main thread; the tests stop it by hand). Stopping ends open SSE
streams first, so the server does not wait on clients that never leave."""

from __future__ import annotations

import socket
import threading
from typing import Any

import sqlalchemy as sa
import uvicorn

from worker.api import app as api_app

#: Seconds uvicorn waits for open requests when it stops (streams end at once anyway).
GRACEFUL_S = 3


class ApiServer:
    """The API on a socket bound at construction (so a taken port fails at once, with
    OSError, and port 0 picks a free one)."""

    def __init__(self, engine: sa.Engine, host: str, port: int, *, source: str, **app_options: Any) -> None:
        self.stopping = threading.Event()
        self.app = api_app.create_app(engine, source=source, stopping=self.stopping, **app_options)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind((host, port))
        except OSError:
            self.socket.close()
            raise
        self.host = host
        self.port = int(self.socket.getsockname()[1])
        config = uvicorn.Config(
            self.app,
            log_config=None,  # the process's own logging (worker.runtime.logs)
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=GRACEFUL_S,
            lifespan="off",
        )
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> ApiServer:
        """Serve in a daemon thread; returns once the server accepts connections (or failed:
        `started` is False then)."""
        self._thread = threading.Thread(target=self.server.run, args=([self.socket],), name="orch-api", daemon=True)
        self._thread.start()
        while not self.server.started and self._thread.is_alive():
            self.stopping.wait(0.02)
        return self

    @property
    def started(self) -> bool:
        return bool(self.server.started)

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self.socket.close()
