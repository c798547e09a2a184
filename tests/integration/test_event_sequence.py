"""The outbox's sequence (core/ledger/events.py): the relay numbers committed events with
one gap-free counter in the order it finds them committed, so a reader resuming after a
number never skips an event that committed late, and two relays at once neither skip nor
repeat a number."""

from __future__ import annotations

import threading

import sqlalchemy as sa

from core.ledger import events
from worker.runtime.relay import Relay

INSERT = sa.text("INSERT INTO events (tenant_id, kind, payload) VALUES (NULL, :kind, '{}') RETURNING id")


def _insert(engine: sa.Engine, kind: str) -> int:
    with engine.begin() as conn:
        return int(conn.execute(INSERT, {"kind": kind}).scalar_one())


def _stream(engine: sa.Engine, after: int) -> list[tuple[int, str]]:
    with engine.connect() as conn:
        return [(int(r["seq"]), r["kind"]) for r in events.after(conn, after, limit=10_000)]


def test_an_event_that_commits_late_is_numbered_late_and_never_skipped(ledger: sa.Engine) -> None:
    relay = Relay(ledger)
    relay.run_once()
    with ledger.connect() as conn:
        _, start = events.bounds(conn)
    with ledger.connect() as late:
        tx = late.begin()
        late_id = int(late.execute(INSERT, {"kind": "late"}).scalar_one())  # the lowest id, not committed
        ids = [_insert(ledger, f"e{i}") for i in range(3)]
        assert late_id < min(ids)
        assert relay.run_once() == 3
        seen = _stream(ledger, start)
        assert seen == [(start + 1, "e0"), (start + 2, "e1"), (start + 3, "e2")]
        tx.commit()
    # A reader that resumes after what it saw gets the late event next, not a gap.
    assert relay.run_once() == 1
    assert _stream(ledger, start + 3) == [(start + 4, "late")]
    assert relay.run_once() == 0
    with ledger.connect() as conn:
        assert events.bounds(conn)[1] == start + 4


def test_concurrent_writers_and_two_relays_give_every_event_one_number(ledger: sa.Engine) -> None:
    with ledger.connect() as conn:
        _, start = events.bounds(conn)
    stop = threading.Event()
    relays = [Relay(ledger, batch=7, idle_s=0.001) for _ in range(2)]
    threads = [threading.Thread(target=r.run, args=(stop,)) for r in relays]
    writers = [threading.Thread(target=lambda w=w: [_insert(ledger, f"w{w}-{i}") for i in range(60)]) for w in range(3)]
    for t in threads + writers:
        t.start()
    for t in writers:
        t.join()
    # Every event gets its number (the relays keep polling until then).
    for _ in range(200):
        with ledger.connect() as conn:
            if not events.waiting(conn):
                break
        stop.wait(0.05)
    stop.set()
    for t in threads:
        t.join()
    seen = _stream(ledger, start)
    assert [s for s, _ in seen] == list(range(start + 1, start + 181)), "a number was skipped or repeated"
    assert sorted(k for _, k in seen) == sorted(f"w{w}-{i}" for w in range(3) for i in range(60))
    assert sum(r.numbered for r in relays) == 180
    # Each writer's events keep their order in the stream.
    for w in range(3):
        mine = [k for _, k in seen if k.startswith(f"w{w}-")]
        assert mine == [f"w{w}-{i}" for i in range(60)]


def test_the_relay_thread_numbers_what_is_committed(ledger: sa.Engine) -> None:
    from tests.conftest import wait_until

    _insert(ledger, "before")
    relay = Relay(ledger, idle_s=0.01)
    thread, stop = relay.start()
    try:
        assert wait_until(lambda: relay.numbered >= 1, timeout=10)
    finally:
        stop.set()
        thread.join(timeout=5)
    with ledger.connect() as conn:
        assert not events.waiting(conn)
