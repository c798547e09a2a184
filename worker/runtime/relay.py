"""The outbox relay: while its scheduler leads, it numbers committed events with the stream's
gap-free sequence (core/ledger/events.py), a batch at a time, and polls every IDLE_S when
there is nothing to number (one index probe). Two relays (two leaders overlapping for a
pass) take turns on the counter, so neither skips nor repeats a number."""

from __future__ import annotations

import logging
import threading

import sqlalchemy as sa

from core.ledger import events

log = logging.getLogger(__name__)

#: How long the relay waits after finding nothing to number.
IDLE_S = 0.05
#: Most events one relay transaction numbers.
BATCH = 5000


class Relay:
    def __init__(self, engine: sa.Engine, *, batch: int = BATCH, idle_s: float = IDLE_S) -> None:
        self.engine = engine
        self.batch = batch
        self.idle_s = idle_s
        self.numbered = 0

    def run_once(self) -> int:
        """Number what waits (at most a batch); returns how many."""
        with self.engine.connect() as conn:
            if not events.waiting(conn):
                return 0
        with self.engine.begin() as conn:
            n = events.sequence(conn, limit=self.batch)
        self.numbered += n
        return n

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                n = self.run_once()
            except sa.exc.SQLAlchemyError as exc:
                log.warning("event relay: %s; retrying in 1s", str(exc).splitlines()[0])
                stop.wait(1.0)
                continue
            if n < self.batch:
                stop.wait(self.idle_s)

    def start(self) -> tuple[threading.Thread, threading.Event]:
        """Run in a thread of its own until the returned event is set."""
        stop = threading.Event()
        thread = threading.Thread(target=self.run, args=(stop,), name="orch-relay", daemon=True)
        thread.start()
        return thread, stop
