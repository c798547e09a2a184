"""The webhook notifier (worker/runtime/notifier.py) against a real HTTP receiver on a free port
and a real ledger: signed deliveries in stream order, the type filter, retries with back-off
after 5xx (nothing lost, duplicates only with the same idempotency key), giving up on a 4xx,
a cursor that survives a restart, and a dead endpoint that never holds up the relay."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from core import control, queries
from core.domain.auth import local_principal
from core.ledger import events
from core.ledger import jobs as ledger_jobs
from core.ledger import notifier as ledger_notifier
from tests.conftest import wait_until
from worker.runtime import exporter
from worker.runtime.notifier import Notifier
from worker.runtime.relay import Relay

SECRET = "s3cret-for-the-tests-only"


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def envelope(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    """A local HTTP endpoint: answers POSTs with the scripted statuses in order (then 200),
    optionally after a delay, and keeps every request it got (answered or not)."""

    statuses: list[int] = field(default_factory=list)
    delay_s: float = 0.0
    got: list[Received] = field(default_factory=list)
    #: (status, request) for every answer given.
    answered: list[tuple[int, Received]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def delivered(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r.envelope for status, r in self.answered if 200 <= status < 300]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            one = Received({k: v for k, v in self.headers.items()}, body)
            with rec.lock:
                rec.got.append(one)
                status = rec.statuses.pop(0) if rec.statuses else 200
            if rec.delay_s:
                time.sleep(rec.delay_s)
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
            with rec.lock:
                rec.answered.append((status, one))

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield rec
    server.shutdown()
    server.server_close()


@pytest.fixture
def hook_ledger(ledger: sa.Engine) -> sa.Engine:
    """The ledger with no notifier cursor and everything written so far numbered."""
    with ledger.begin() as conn:
        conn.execute(sa.text("DELETE FROM notifier_cursors"))
    Relay(ledger).run_once()
    return ledger


def _notifier(engine: sa.Engine, url: str, **kwargs: Any) -> Notifier:
    kwargs.setdefault("secret", SECRET)
    kwargs.setdefault("backoff_base_s", 0.01)
    kwargs.setdefault("backoff_cap_s", 0.05)
    kwargs.setdefault("idle_s", 0.01)
    return Notifier(engine, url, **kwargs)


def _emit(engine: sa.Engine, *kinds: str, relay: bool = True) -> None:
    """One outbox event per kind (a job's, with job_id and attempt), numbered by the relay."""
    with engine.begin() as conn:
        for i, kind in enumerate(kinds):
            ledger_jobs.insert_event(conn, tenant_id=None, kind=kind, payload={"job_id": 1000 + i, "attempt": 1})
    if relay:
        Relay(engine).run_once()


def _newest(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return events.bounds(conn)[1]


def _status(engine: sa.Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        status = queries.webhook_status(conn, local_principal("tests"))
    assert status is not None
    return status


def _drain(n: Notifier, *, rounds: int = 200) -> None:
    """Run steps until the cursor reaches the stream's newest number."""
    for _ in range(rounds):
        step = n.run_once()
        if n.cursor == _newest(n.engine):
            return
        time.sleep(step.retry_in or 0.005)
    pytest.fail(f"the notifier did not catch up: cursor {n.cursor}, newest {_newest(n.engine)}")


def test_events_are_posted_in_order_signed_with_their_idempotency_key(
    hook_ledger: sa.Engine, receiver: Receiver
) -> None:
    n = _notifier(hook_ledger, receiver.url)
    _emit(hook_ledger, "job.succeeded")  # before the cursor exists: a new cursor starts after it
    assert n.run_once().posted == 0
    start = n.cursor
    assert start == _newest(hook_ledger)
    _emit(hook_ledger, "job.succeeded", "job.dead_lettered", "incident.opened")
    step = n.run_once()
    assert (step.posted, step.delivered, step.retry_in) == (3, 3, None)
    assert n.cursor == start + 3 == _newest(hook_ledger)
    assert [int(r.headers["X-Orch-Sequence"]) for r in receiver.got] == [start + 1, start + 2, start + 3]
    for r in receiver.got:
        expected = "sha256=" + hmac.new(SECRET.encode(), r.body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(r.headers["X-Orch-Signature"], expected)
        assert r.headers["Content-Type"] == "application/cloudevents+json"
        env = r.envelope
        assert r.headers["X-Orch-Idempotency-Key"] == env["idempotencykey"]
        assert r.headers["X-Orch-Event-Id"] == env["id"]
        assert r.headers["X-Orch-Sequence"] == env["sequence"]
        assert env["specversion"] == "1.0" and env["source"] == "urn:orch"
    assert [r.envelope["type"] for r in receiver.got] == [
        "orch.job.succeeded",
        "orch.job.dead_lettered",
        "orch.incident.opened",
    ]
    assert receiver.got[1].envelope["idempotencykey"] == "orch-orch.job.dead_lettered-1001-1"
    status = _status(hook_ledger)
    assert (status["backlog"], status["delivered"], status["failed"], status["dropped"]) == (0, 3, 0, 0)
    assert status["last_success_at"] is not None and status["last_error"] is None
    assert n.run_once().posted == 0  # nothing new


def test_only_the_types_of_the_filter_are_posted_and_the_cursor_passes_the_rest(
    hook_ledger: sa.Engine, receiver: Receiver
) -> None:
    n = _notifier(hook_ledger, receiver.url, types=["orch.job.dead_lettered", "orch.incident."])
    n.run_once()
    _emit(
        hook_ledger,
        "job.succeeded",
        "job.dead_lettered",
        "incident.opened",
        "source.circuit_open",
        "incident.resolved",
        "job.dead_lettered_extra",
    )
    step = n.run_once()
    assert (step.posted, step.skipped) == (3, 3)
    assert [r.envelope["type"] for r in receiver.got] == [
        "orch.job.dead_lettered",
        "orch.incident.opened",
        "orch.incident.resolved",
    ]
    assert n.cursor == _newest(hook_ledger) and _status(hook_ledger)["backlog"] == 0


def test_job_batches_are_posted_one_envelope_per_job(hook_ledger: sa.Engine, receiver: Receiver) -> None:
    n = _notifier(hook_ledger, receiver.url, types=["orch.job.*"])
    n.run_once()
    specs = [control.JobSpec(tenant="acme", job_type="noop") for _ in range(3)]
    ids = control.submit_many(hook_ledger, local_principal("tests"), specs, doorbell=control.NoDoorbell()).job_ids
    Relay(hook_ledger).run_once()
    _drain(n)
    keys = [r.envelope["idempotencykey"] for r in receiver.got]
    assert keys == [f"orch-orch.job.submitted-{i}-0" for i in ids]
    assert all(r.envelope["tenantid"] == "acme" for r in receiver.got)


def test_5xx_answers_are_retried_with_back_off_until_delivered_and_nothing_is_lost(
    hook_ledger: sa.Engine, receiver: Receiver
) -> None:
    n = _notifier(hook_ledger, receiver.url)
    n.run_once()
    receiver.statuses = [500, 503, 502, 200, 500, 200]
    _emit(hook_ledger, *["job.succeeded"] * 5)
    first = n.run_once()
    assert (first.posted, first.delivered, first.failures["http_5xx"]) == (1, 0, 1)
    assert first.retry_in is not None and 0 <= first.retry_in <= 0.05
    status = _status(hook_ledger)
    assert status["backlog"] == 5 and status["failures"]["http_5xx"] == 1 and "HTTP 500" in status["last_error"]
    thread, stop = n.start()
    try:
        wait_until(lambda: len(receiver.delivered()) >= 5, timeout=10, what="five deliveries")
    finally:
        stop.set()
        thread.join(timeout=2)
    assert not thread.is_alive()
    delivered = receiver.delivered()
    assert len(delivered) == 5 and len({e["idempotencykey"] for e in delivered}) == 5
    assert [int(e["sequence"]) for e in delivered] == sorted(int(e["sequence"]) for e in delivered)
    # Every request of an event (the failed ones too) carried that event's key.
    by_seq: dict[str, set[str]] = {}
    for r in receiver.got:
        by_seq.setdefault(r.headers["X-Orch-Sequence"], set()).add(r.headers["X-Orch-Idempotency-Key"])
    assert all(len(keys) == 1 for keys in by_seq.values()) and len(by_seq) == 5
    status = _status(hook_ledger)
    assert (status["backlog"], status["delivered"], status["failures"]["http_5xx"]) == (0, 5, 4)
    assert status["consecutive_failures"] == 0


def test_a_4xx_gives_up_on_that_event_and_429_or_404_are_retried(hook_ledger: sa.Engine, receiver: Receiver) -> None:
    n = _notifier(hook_ledger, receiver.url)
    n.run_once()
    receiver.statuses = [422, 429, 200, 404, 200]
    _emit(hook_ledger, "job.succeeded", "job.failed", "job.canceled")
    _drain(n)
    seqs = [r.headers["X-Orch-Sequence"] for r in receiver.got]
    first = int(seqs[0])
    # 422: the first is dropped; 429 then 200: the second; 404 then 200: the third.
    assert seqs == [str(first), str(first + 1), str(first + 1), str(first + 2), str(first + 2)]
    status = _status(hook_ledger)
    assert (status["delivered"], status["dropped"], status["backlog"]) == (2, 1, 0)
    assert status["failures"] == {"http_4xx": 2, "http_429": 1}


def test_the_cursor_survives_a_restart_and_a_lost_cursor_write_only_redelivers(
    hook_ledger: sa.Engine, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = _notifier(hook_ledger, receiver.url)
    n.run_once()
    _emit(hook_ledger, "job.succeeded", "job.succeeded")
    n.run_once()
    assert len(receiver.got) == 2
    # A new notifier (a restart, even one told to start at the oldest event) resumes at the cursor.
    _emit(hook_ledger, "job.dead_lettered")
    again = _notifier(hook_ledger, receiver.url, start="oldest")
    assert again.run_once().posted == 1
    assert receiver.got[-1].envelope["type"] == "orch.job.dead_lettered"
    # The process dies after posting and before writing its cursor: the next one posts the
    # same events again, with the same keys; none is lost.
    _emit(hook_ledger, "incident.opened", "incident.resolved")
    crashing = _notifier(hook_ledger, receiver.url)

    def lost(*args: Any, **kwargs: Any) -> None:
        raise sa.exc.OperationalError("UPDATE notifier_cursors", {}, Exception("connection lost"))

    monkeypatch.setattr(ledger_notifier, "record", lost)
    with pytest.raises(sa.exc.OperationalError):
        crashing.run_once()
    monkeypatch.undo()
    assert len(receiver.got) == 5
    _drain(_notifier(hook_ledger, receiver.url))
    keys = [r.headers["X-Orch-Idempotency-Key"] for r in receiver.got]
    assert keys[5:] == keys[3:5] and len(set(keys)) == 5
    assert _status(hook_ledger)["delivered"] == 5  # the lost step's counts are lost with it


def test_a_dead_endpoint_never_stops_the_relay_and_its_backlog_shows(
    hook_ledger: sa.Engine, receiver: Receiver
) -> None:
    receiver.delay_s = 1.0  # longer than the notifier's timeout: every POST times out
    n = _notifier(hook_ledger, receiver.url, timeout_s=0.2)
    n.run_once()
    start = _newest(hook_ledger)
    relay = Relay(hook_ledger, idle_s=0.01)
    relay_thread, relay_stop = relay.start()
    hook_thread, hook_stop = n.start()
    try:
        for _ in range(5):
            _emit(hook_ledger, "job.succeeded", "job.succeeded", relay=False)
        wait_until(lambda: _newest(hook_ledger) == start + 10, timeout=10, what="the relay to number 10 events")
        wait_until(lambda: _status(hook_ledger)["failures"].get("timeout", 0) >= 2, timeout=10, what="timeouts")
    finally:
        began = time.monotonic()
        hook_stop.set()
        hook_thread.join(timeout=2)
        relay_stop.set()
        relay_thread.join(timeout=2)
    assert not hook_thread.is_alive() and time.monotonic() - began < 2  # stop honoured promptly
    status = _status(hook_ledger)
    assert status["backlog"] == 10 and status["delivered"] == 0 and status["last_success_at"] is None
    assert "timed out" in status["last_error"]
    # The exporter reads the same numbers from the ledger.
    registry = CollectorRegistry()
    registry.register(exporter.LedgerCollector(hook_ledger))
    samples = {(s.name, tuple(s.labels.values())): s.value for f in registry.collect() for s in f.samples}
    assert samples[("orch_webhook_backlog", ())] == 10
    assert samples[("orch_webhook_failures_total", ("timeout",))] >= 2
    assert samples[("orch_webhook_failures_total", ("http_5xx",))] == 0
    assert samples[("orch_webhook_delivered_total", ())] == 0
    assert samples[("orch_webhook_last_success_timestamp_seconds", ())] == 0


def test_a_refused_connection_is_retried(hook_ledger: sa.Engine) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once it is closed
    n = _notifier(hook_ledger, f"http://127.0.0.1:{port}/hook")
    n.run_once()
    _emit(hook_ledger, "job.succeeded")
    step = n.run_once()
    assert step.failures == {"connection": 1} and step.retry_in is not None
    assert n.cursor == _newest(hook_ledger) - 1
