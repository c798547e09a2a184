"""What every `orch` command shares: the lazily built context (settings, ledger, doorbell,
principal), output helpers, argument types and the options most commands take."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import math
import os
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from core import control
from core.domain import errors
from core.domain.auth import Principal, local_principal
from core.ledger import db
from core.settings import Settings, get_settings

log = logging.getLogger("orch")

#: Exit code per error class, most specific first.
EXIT_CODES: list[tuple[type[Exception], int]] = [
    (errors.Unavailable, 6),
    (errors.Backpressure, 8),
    (errors.IdempotencyConflict, 5),
    (errors.InvalidTransition, 5),
    (errors.Forbidden, 4),
    (errors.NotFound, 3),
    (errors.ReasonRequired, 7),
    (errors.InvalidInput, 2),
    (errors.OrchError, 1),
]


class Context:
    """What a command needs, built lazily so `orch --help` touches nothing."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._engine: sa.Engine | None = None
        self._principal: Principal | None = None

    @property
    def settings(self) -> Settings:
        return get_settings()

    def urls(self) -> tuple[str, str | None]:
        """The ledger's and the broker's URLs: the settings, else those of a live `orch up`
        in this directory. Raises InvalidInput when there is no ledger to use."""
        s = self.settings
        db_url, redis_url = s.database_url, s.redis_url
        if db_url is None or redis_url is None:
            from worker.devtools import services

            running = services.running_urls(s.data_dir)
            if running is not None:
                db_url = db_url or running.database_url
                redis_url = redis_url or running.redis_url
        if not db_url:
            raise errors.InvalidInput(
                "no ledger configured: set ORCH_DATABASE_URL (postgresql+psycopg://...) "
                "or start `orch up` in this directory"
            )
        return db_url, redis_url

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            self._engine = db.create_engine(self.urls()[0], pool_size=2, application_name="orch-cli", pre_ping=True)
            db.check_connection(self._engine)
        return self._engine

    def doorbell(self) -> control.Doorbell:
        redis_url = self.urls()[1]
        if not redis_url:
            log.warning("no ORCH_REDIS_URL: jobs are rung by the scheduler instead")
            return control.NoDoorbell()
        from worker.runtime import broker

        return broker.RedisDoorbell(broker.build_broker(redis_url, namespace=self.settings.broker_namespace))

    @property
    def principal(self) -> Principal:
        """The API token's principal (--token or ORCH_TOKEN); without one, the local
        principal: whoever reaches the database directly is already trusted."""
        if self._principal is None:
            token = getattr(self.args, "token", None) or os.environ.get("ORCH_TOKEN")
            self._principal = control.authenticate(self.engine, token) if token else local_principal()
        return self._principal


# -- output ------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


def print_json(value: Any) -> None:
    """Pretty JSON on stdout; dataclasses (control's typed results) become objects."""
    print(json.dumps(value, indent=2, sort_keys=True, default=_plain))


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """A plain text table of `columns`, cells cut at 60 characters; "(none)" when empty."""
    if not rows:
        print("(none)")
        return
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i][:60]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(v[:60].ljust(w) for v, w in zip(row, widths, strict=True)))


def out(ctx: Context, result: Any, text: str) -> int:
    """The result as JSON with --json, else the sentence; exit code 0."""
    if getattr(ctx.args, "json", False):
        print_json(result)
    else:
        print(text)
    return 0


def read_run_document(path: str) -> Any:
    """The JSON document of a run file. Raises InvalidInput in one line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise errors.InvalidInput(f"cannot read run file {path}: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise errors.InvalidInput(
            f"run file {path} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None


# -- argument types and shared options -----------------------------------------------------


def iso_time(text: str, what: str) -> dt.datetime:
    """An ISO 8601 time; without a zone it is UTC. Raises InvalidInput."""
    try:
        t = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise errors.InvalidInput(f"{what} {text!r} is not an ISO 8601 time (e.g. 2026-01-01T00:00:00Z)") from None
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t


def to_int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None


def to_float(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {value!r}")
    return x


def duration(text: str) -> float:
    """Seconds from 90s, 15m, 1h, 3d or a plain number. Raises InvalidInput."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except (ValueError, IndexError):
        raise errors.InvalidInput(f"bad duration {text!r}: use e.g. 90s, 15m, 1h or 3d") from None


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def add_tenant(p: argparse.ArgumentParser, *, required: bool = False, what: str = "") -> None:
    text = f"the tenant{what}" if required else f"only this tenant{what} (default: every tenant you may see)"
    p.add_argument("--tenant", required=required, help=text)


def add_limit(p: argparse.ArgumentParser, default: int) -> None:
    p.add_argument("--limit", type=to_int, default=default, help=f"at most this many rows (default {default})")


def add_why(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    """--reason, --ticket and --json, as audited actions take them."""
    need = "; required" if required else ""
    p.add_argument("--reason", help=f"why, for the audit log (at most 256 characters{need})")
    p.add_argument("--ticket", help="change or incident ticket, for the audit log (at most 128 characters)")
    add_json(p)


def stop_on_signals(stop: threading.Event) -> None:
    """SIGINT and SIGTERM set `stop` (once)."""

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            return
        log.info("stopping (signal %d)", signum)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
