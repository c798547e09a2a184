"""`orch api`: the HTTP API (worker.api): the event stream as Server-Sent Events and JSON
pages, and the incidents, behind bearer API tokens, on ORCH_API_HOST/ORCH_API_PORT."""

from __future__ import annotations

import sys
import threading
from typing import Any

import sqlalchemy as sa

from core.domain import errors
from core.ledger import db
from core.settings import Settings
from worker.cli.common import Context, stop_on_signals, to_int


def serve(engine: sa.Engine, s: Settings, host: str | None = None, port: int | None = None) -> Any:
    """The API serving in a thread (worker.api.server.ApiServer); None, after a one-line
    error, when its port cannot be bound."""
    from worker.api import server

    host = host or s.api_host
    port = s.api_port if port is None else port
    try:
        api = server.ApiServer(engine, host, port, source=s.event_source).start()
    except OSError as exc:
        print(
            f"orch: error: cannot serve the API on {host}:{port}: {exc.strerror} (set ORCH_API_PORT)", file=sys.stderr
        )
        return None
    if not api.started:
        api.stop()
        print(f"orch: error: the API on {host}:{port} did not start", file=sys.stderr)
        return None
    print(f"api: {api.url} (bearer API tokens; events at {api.url}/v1/events)", flush=True)
    return api


def cmd_api(ctx: Context) -> int:
    from worker.runtime import logs

    logs.configure("api")
    a = ctx.args
    if a.port is not None and not 1 <= a.port <= 65535:
        raise errors.InvalidInput(f"--port must be between 1 and 65535, got {a.port}")
    engine = db.create_engine(ctx.urls()[0], pool_size=10, application_name="orch-api", pre_ping=True)
    db.check_connection(engine)
    stop = threading.Event()
    stop_on_signals(stop)
    api = serve(engine, ctx.settings, a.host, a.port)
    if api is None:
        return 6
    stop.wait()
    api.stop()
    engine.dispose()
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("api", help="serve the HTTP API: event stream (SSE) and incidents (ORCH_API_HOST/PORT)")
    p.add_argument("--host", help="address to listen on (default ORCH_API_HOST or 127.0.0.1)")
    p.add_argument("--port", type=to_int, help="port to listen on (default ORCH_API_PORT or 8600)")
    p.set_defaults(fn=cmd_api)
