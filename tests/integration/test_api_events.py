"""`orch api`'s event stream over real HTTP (a uvicorn server in a thread, a migrated ledger):
SSE resume with Last-Event-ID and ?after (no gap, no duplicate), ?after=latest, the
lost-events note after pruning, filters and tenant-limited tokens, keep-alives, JSON pages,
problem+json errors, envelopes valid against docs/schemas/orch.event.v1.json, and
`orch events tail`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import jsonschema
import pytest
import sqlalchemy as sa

from core import control
from core.control import retention
from core.domain import events as domain_events
from core.domain.auth import ALL_SCOPES, Principal, Scope, local_principal
from tests.conftest import ROOT, Services, wait_until
from worker.api import server
from worker.api import stream as api_stream
from worker.runtime.relay import Relay

SCHEMA = json.loads((ROOT / "docs" / "schemas" / "orch.event.v1.json").read_text())
INSERT = sa.text("INSERT INTO events (tenant_id, kind, payload) VALUES (:tenant_id, :kind, CAST(:payload AS jsonb))")


@pytest.fixture(scope="module")
def api(engine: sa.Engine) -> Iterator[server.ApiServer]:
    s = server.ApiServer(engine, "127.0.0.1", 0, source="urn:orch:test", keepalive_s=0.3, poll_s=0.05).start()
    assert s.started
    yield s
    s.stop()


@pytest.fixture
def stream(ledger: sa.Engine) -> sa.Engine:
    """An empty ledger whose stream starts again at 1 (the counter is not truncated)."""
    with ledger.begin() as conn:
        conn.execute(sa.text("UPDATE event_relay SET last_seq = 0"))
    return ledger


def token(engine: sa.Engine, *, tenants: set[str] | None = None, scopes: frozenset[Scope] = ALL_SCOPES) -> str:
    """An API token; its creation's event is dropped, so the tests number only their own."""
    made = control.create_token(
        engine,
        local_principal("tests"),
        subject="api-test",
        scopes=scopes,
        tenants=None if tenants is None else frozenset(tenants),
    )
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM events WHERE seq IS NULL AND kind = 'action.token_create'"))
    return made


def bearer(t: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {t}"}


def tenant_id(engine: sa.Engine, name: str) -> int:
    with engine.begin() as conn:
        found = conn.execute(sa.text("SELECT id FROM tenants WHERE name = :n"), {"n": name}).scalar()
        if found is None:
            found = conn.execute(sa.text("INSERT INTO tenants (name) VALUES (:n) RETURNING id"), {"n": name}).scalar()
    return int(found)


def write(engine: sa.Engine, n: int, *, tenant: str | None = "acme", kind: str = "job.succeeded") -> None:
    """`n` events, numbered by the relay."""
    tid = None if tenant is None else tenant_id(engine, tenant)
    base = _newest(engine)
    with engine.begin() as conn:
        for i in range(n):
            payload = {"job_id": base + i + 1, "job_type": "noop", "state": "succeeded", "attempt": 1, "actor": "w"}
            conn.execute(INSERT, {"tenant_id": tid, "kind": kind, "payload": json.dumps(payload)})
    Relay(engine).run_once()


def _newest(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT last_seq FROM event_relay")).scalar_one())


class SSE:
    """A Server-Sent Events client over httpx: next() returns one event's fields (or a
    comment's) and fails the test when nothing arrives within the read timeout."""

    def __init__(self, url: str, headers: dict[str, str], timeout: float = 5.0) -> None:
        self.client = httpx.Client(timeout=httpx.Timeout(timeout))
        self._cm = self.client.stream("GET", url, headers={"Accept": "text/event-stream", **headers})
        self.response = self._cm.__enter__()
        self._lines = self.response.iter_lines()

    def next(self) -> dict[str, str]:
        fields: dict[str, str] = {}
        for line in self._lines:
            if line == "":
                if fields:
                    return fields
                continue
            if line.startswith(":"):
                return {"comment": line[1:].strip()}
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value
        raise AssertionError("the stream ended")

    def events(self, n: int) -> list[dict[str, Any]]:
        """The next `n` events (retry fields and comments skipped), data parsed."""
        out: list[dict[str, Any]] = []
        while len(out) < n:
            f = self.next()
            if "data" in f:
                out.append({"id": int(f["id"]), "event": f["event"], "data": json.loads(f["data"])})
        return out

    def close(self) -> None:
        self._cm.__exit__(None, None, None)
        self.client.close()


@contextmanager
def sse(api: server.ApiServer, query: str = "", **headers: str) -> Iterator[SSE]:
    client = SSE(f"{api.url}/v1/events{query}", headers)
    try:
        yield client
    finally:
        client.close()


def ids(events: list[dict[str, Any]]) -> list[int]:
    return [e["id"] for e in events]


def test_sse_starts_at_the_oldest_event_and_resumes_exactly_after_last_event_id(
    api: server.ApiServer, stream: sa.Engine
) -> None:
    t = bearer(token(stream))
    write(stream, 5)
    with sse(api, **t) as s:
        assert s.response.status_code == 200
        assert s.response.headers["content-type"].startswith("text/event-stream")
        first = s.events(5)
        assert ids(first) == [1, 2, 3, 4, 5]
        assert all(e["event"] == e["data"]["type"] == "orch.job.succeeded" for e in first)
        assert [e["data"]["sequence"] for e in first] == ["1", "2", "3", "4", "5"]
        write(stream, 3)  # live: arrives on the open stream
        assert ids(s.events(1)) == [6]
    # A reconnect sends Last-Event-ID (with the original URL's ?after): the header wins.
    with sse(api, "?after=2", **t, **{"Last-Event-ID": "6"}) as s:
        assert ids(s.events(2)) == [7, 8]
        write(stream, 1)
        assert ids(s.events(1)) == [9]
    with sse(api, "?after=7", **t) as s:
        assert ids(s.events(2)) == [8, 9]


def test_resuming_many_times_misses_and_repeats_nothing(api: server.ApiServer, stream: sa.Engine) -> None:
    t = bearer(token(stream))
    write(stream, 40)
    seen: list[int] = []
    cursor = 0
    for take in (3, 1, 7, 2, 11, 16):
        with sse(api, f"?after={cursor}", **t) as s:
            got = ids(s.events(take))
        seen.extend(got)
        cursor = got[-1]
        write(stream, 2)
    assert seen == list(range(1, len(seen) + 1))


def test_after_latest_gets_only_new_events(api: server.ApiServer, stream: sa.Engine) -> None:
    t = bearer(token(stream))
    write(stream, 4)
    with sse(api, "?after=latest", **t) as s:
        assert s.next() == {"retry": "2000"}
        write(stream, 2)
        assert ids(s.events(2)) == [5, 6]


def test_a_cursor_older_than_retention_gets_the_lost_events_note_first(
    api: server.ApiServer, stream: sa.Engine
) -> None:
    t = bearer(token(stream))
    write(stream, 10)
    with stream.begin() as conn:  # seq 1..5 are past the outbox's retention
        conn.execute(sa.text("UPDATE events SET at = now() - interval '8 days' WHERE seq <= 5"))
    pruned = retention.prune(stream, default_days=30, outbox_days=7)
    assert pruned.removed["events"] == 5
    with sse(api, "?after=2", **t) as s:
        lost, *rest = s.events(3)
        assert lost["event"] == "orch.stream.events_lost"
        assert lost["id"] == 5, "the note's id resumes after the pruned events"
        assert lost["data"] == domain_events.lost_event(2, 6)
        assert ids(rest) == [6, 7]
    # Resuming from the note's id is not told again; a cursor within retention neither.
    with sse(api, "", **t, **{"Last-Event-ID": "5"}) as s:
        assert [e["event"] for e in s.events(2)] == ["orch.job.succeeded"] * 2
    page = httpx.get(f"{api.url}/v1/events?after=0&limit=3", headers=t).json()
    assert page["lost"] == domain_events.lost_event(0, 6)
    assert [int(e["sequence"]) for e in page["events"]] == [6, 7, 8]
    assert (page["next_after"], page["oldest"], page["newest"]) == (8, 6, 10)
    page = httpx.get(f"{api.url}/v1/events", headers=t).json()  # no cursor: the oldest retained
    assert page["lost"] is None and [int(e["sequence"]) for e in page["events"]] == [6, 7, 8, 9, 10]


def test_json_pages_for_pollers(api: server.ApiServer, stream: sa.Engine) -> None:
    t = bearer(token(stream))
    write(stream, 7)
    r = httpx.get(f"{api.url}/v1/events?after=2&limit=3", headers=t)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    page = r.json()
    assert [int(e["sequence"]) for e in page["events"]] == [3, 4, 5]
    assert (page["next_after"], page["oldest"], page["newest"], page["lost"]) == (5, 1, 7, None)
    page = httpx.get(f"{api.url}/v1/events?after={page['next_after']}&limit=100", headers=t).json()
    assert [int(e["sequence"]) for e in page["events"]] == [6, 7] and page["next_after"] == 7
    page = httpx.get(f"{api.url}/v1/events?after=latest", headers=t).json()
    assert page["events"] == [] and page["next_after"] == 7


def test_filters_by_tenant_type_and_subject(api: server.ApiServer, stream: sa.Engine) -> None:
    t = bearer(token(stream))
    write(stream, 2, tenant="acme")
    write(stream, 2, tenant="globex", kind="job.dead_lettered")
    write(stream, 1, tenant=None, kind="action.token_create")

    def seqs(query: str) -> list[int]:
        r = httpx.get(f"{api.url}/v1/events{query}", headers=t)
        assert r.status_code == 200, r.text
        return [int(e["sequence"]) for e in r.json()["events"]]

    assert seqs("") == [1, 2, 3, 4, 5]
    assert seqs("?tenant=globex") == [3, 4]
    assert seqs("?tenant=globex&tenant=acme") == [1, 2, 3, 4]
    assert seqs("?type=orch.job.dead_lettered") == [3, 4]
    assert seqs("?type=orch.job.") == [1, 2, 3, 4]
    assert seqs("?type=orch.action.*") == [5]
    assert seqs("?type=orch.job.dead_") == [], "a type without a trailing . or * is exact"
    assert seqs("?type=orch.job.succeeded&type=orch.action.token_create") == [1, 2, 5]
    assert seqs("?subject=job/4") == [4]
    assert seqs("?subject=job/4&tenant=acme") == []
    with sse(api, "?tenant=globex&type=orch.job.", **t) as s:
        assert [(e["id"], e["data"]["tenantid"]) for e in s.events(2)] == [(3, "globex"), (4, "globex")]


def test_the_sql_filters_agree_with_the_envelope(api: server.ApiServer, stream: sa.Engine) -> None:
    """The type and subject expressions of events_page are the SQL twins of
    core.domain.events.event_type and subject."""
    payloads = [
        ("job.succeeded", {"job_id": 7, "run_id": 3}),
        ("run.state", {"run_id": 3, "state": "failed"}),
        ("incident.opened", {"incident_id": 5, "kind": "dlq_growth"}),
        ("schedule.fired", {"schedule_id": 2}),
        ("backfill.paused", {"backfill_id": 9}),
        ("source.paused", {"source": "nvd"}),
        ("action.pause", {"action": "pause", "target": "tenant acme"}),
        ("action.token_create", {"action": "token.create", "target": ""}),
    ]
    with stream.begin() as conn:
        for kind, payload in payloads:
            conn.execute(INSERT, {"tenant_id": None, "kind": kind, "payload": json.dumps(payload)})
    Relay(stream).run_once()
    t = bearer(token(stream))
    for seq, (kind, payload) in enumerate(payloads, start=1):
        etype = domain_events.event_type(kind, payload)
        r = httpx.get(f"{api.url}/v1/events", params={"type": etype}, headers=t).json()
        assert seq in [int(e["sequence"]) for e in r["events"]], etype
        assert all(e["type"] == etype for e in r["events"])
        subject = domain_events.subject(payload)
        if subject is not None:
            r = httpx.get(f"{api.url}/v1/events", params={"subject": subject}, headers=t).json()
            assert [(int(e["sequence"]), e["subject"]) for e in r["events"]] == [(seq, subject)]


def test_a_tenant_limited_token_sees_only_its_tenants(api: server.ApiServer, stream: sa.Engine) -> None:
    write(stream, 2, tenant="acme")
    write(stream, 2, tenant="globex")
    write(stream, 1, tenant=None, kind="action.token_create")
    t = bearer(token(stream, tenants={"acme"}, scopes=frozenset({Scope.READ})))
    page = httpx.get(f"{api.url}/v1/events", headers=t).json()
    assert [(int(e["sequence"]), e["tenantid"]) for e in page["events"]] == [(1, "acme"), (2, "acme")]
    with sse(api, "?after=0", **t) as s:
        write(stream, 1, tenant="globex")
        write(stream, 1, tenant="acme")
        got = s.events(3)
        assert [(e["id"], e["data"]["tenantid"]) for e in got] == [(1, "acme"), (2, "acme"), (7, "acme")]
    r = httpx.get(f"{api.url}/v1/events?tenant=globex", headers=t)
    assert r.status_code == 403
    assert r.headers["content-type"] == "application/problem+json"
    assert "globex" in r.json()["detail"]


def test_tokens_are_required_and_checked(api: server.ApiServer, stream: sa.Engine) -> None:
    for headers in ({}, {"Authorization": "Bearer orch_nobody"}, {"Authorization": "Basic dXNlcjpwdw=="}):
        for path in ("/v1/events", "/v1/incidents", "/v1/incidents/1"):
            r = httpx.get(f"{api.url}{path}", headers={"Accept": "text/event-stream", **headers})
            assert r.status_code == 401, (path, headers, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            assert r.headers["www-authenticate"].startswith("Bearer")
            body = r.json()
            assert body["status"] == 401 and body["type"] == "urn:orch:problem:unauthorized"
    no_read = bearer(token(stream, scopes=frozenset({Scope.OPERATE})))
    r = httpx.get(f"{api.url}/v1/events", headers=no_read)
    assert r.status_code == 403 and "orch:read" in r.json()["detail"]


@pytest.mark.parametrize(
    ("query", "headers", "status"),
    [
        ("?limit=0", {}, 422),
        ("?after=-1", {}, 422),
        ("?after=soon", {}, 422),
        ("?after=9999999999999999999", {}, 422),
        ("", {"Last-Event-ID": "abc"}, 422),
        ("?type=Orch%20Job", {}, 422),
        ("?tenant=a%00b", {}, 422),
        ("?tenat=acme", {}, 400),
        ("?after=1&after=2", {}, 400),
    ],
)
def test_bad_requests_are_problem_json(
    api: server.ApiServer, stream: sa.Engine, query: str, headers: dict[str, str], status: int
) -> None:
    t = bearer(token(stream))
    r = httpx.get(f"{api.url}/v1/events{query}", headers={**t, **headers, "Accept": "text/event-stream"})
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert {"type", "title", "status", "detail"} <= body.keys()
    assert body["status"] == status and body["type"].startswith("urn:orch:problem:")
    assert "Traceback" not in r.text
    if status == 422:
        assert body["errors"] and all({"loc", "msg", "type"} <= e.keys() for e in body["errors"])


def test_unknown_routes_and_methods_are_problem_json(api: server.ApiServer) -> None:
    r = httpx.get(f"{api.url}/v2/nothing")
    assert (r.status_code, r.headers["content-type"]) == (404, "application/problem+json")
    r = httpx.delete(f"{api.url}/v1/events")
    assert (r.status_code, r.headers["content-type"]) == (405, "application/problem+json")
    doc = httpx.get(f"{api.url}/.well-known/openapi").json()
    assert {"/v1/events", "/v1/incidents", "/v1/incidents/{incident_id}/ack"} <= doc["paths"].keys()


def test_envelopes_of_real_changes_validate_against_the_schema(
    api: server.ApiServer, stream: sa.Engine, principal: Principal
) -> None:
    control.submit_many(
        stream,
        principal,
        [control.JobSpec("acme", "noop", payload={"api_key": "s3cret", "n": 1})],
        doorbell=control.NoDoorbell(),
    )
    control.create_token(stream, principal, subject="x", scopes=frozenset({Scope.READ}), tenants=None, reason="t")
    write(stream, 1)
    page = httpx.get(f"{api.url}/v1/events", headers=bearer(token(stream))).json()
    assert len(page["events"]) >= 3
    validator = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    for env in page["events"]:
        validator.validate(env)
        assert env["source"] == "urn:orch:test"
    assert "s3cret" not in json.dumps(page)


def test_an_idle_stream_sends_keep_alives_and_a_closed_one_stops_polling(
    api: server.ApiServer, stream: sa.Engine
) -> None:
    t = bearer(token(stream))
    with sse(api, "?after=latest", **t) as s:
        assert s.next() == {"retry": "2000"}
        started = time.monotonic()
        assert s.next() == {"comment": "keep-alive"}
        assert time.monotonic() - started < 2
        assert api.app.state.api.streams >= 1
    wait_until(lambda: api.app.state.api.streams == 0, timeout=5, what="the closed stream to end")


def test_orch_events_tail_prints_the_stream_until_ctrl_c(services: Services, stream: sa.Engine) -> None:
    write(stream, 3, tenant="acme")
    write(stream, 1, tenant="globex")
    env = {
        "PATH": "/usr/bin:/bin",
        "ORCH_DATABASE_URL": services.database_url,
        "PYTHONPATH": str(ROOT),
        "ORCH_LOG_LEVEL": "WARNING",
    }
    args = [sys.executable, "-m", "worker.cli", "events", "tail", "--tenant", "acme", "--after", "1", "--json"]
    proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = [json.loads(proc.stdout.readline()) for _ in range(2)]
        assert [e["sequence"] for e in lines] == ["2", "3"]
        write(stream, 1, tenant="acme")
        assert json.loads(proc.stdout.readline())["sequence"] == "5"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    plain = subprocess.run(
        [sys.executable, "-m", "worker.cli", "events", "tail", "--after", "x"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert plain.returncode == 2 and "after must be" in plain.stderr and "Traceback" not in plain.stderr


def test_a_batch_of_job_changes_pages_and_resumes_inside_its_row(
    api: server.ApiServer, stream: sa.Engine, principal: Principal
) -> None:
    t = bearer(token(stream))
    job_ids = control.submit_many(
        stream, principal, [control.JobSpec("acme", "noop")] * 7, doorbell=control.NoDoorbell()
    ).job_ids
    Relay(stream).run_once()
    with stream.connect() as conn:  # one outbox row holds the seven submissions
        rows = conn.execute(sa.text("SELECT n FROM events WHERE kind = 'job.submitted'")).scalars().all()
    assert rows == [7]
    seen: list[dict[str, Any]] = []
    after = 0
    while True:
        page = httpx.get(f"{api.url}/v1/events", params={"after": after, "limit": 3}, headers=t).json()
        seen += page["events"]
        if not page["events"]:
            break
        after = page["next_after"]
    assert [int(e["sequence"]) for e in seen] == list(range(1, len(seen) + 1))
    submitted = [e for e in seen if e["type"] == "orch.job.submitted"]
    assert [e["subject"] for e in submitted] == [f"job/{i}" for i in job_ids]
    # SSE resumes inside the row: after the third submission comes the fourth.
    third = int(submitted[2]["sequence"])
    with sse(api, f"?after={third}", **t) as s:
        assert s.events(1)[0]["data"]["subject"] == f"job/{job_ids[3]}"
    # A subject filter finds one job of the row, and only it.
    page = httpx.get(f"{api.url}/v1/events", params={"subject": f"job/{job_ids[5]}"}, headers=t).json()
    assert [e["subject"] for e in page["events"]] == [f"job/{job_ids[5]}"]
    # A page whose span ends inside the row takes the row whole: nothing is skipped.
    reader = api_stream.Reader(stream, api_stream.filters_for(principal), span=2)
    batch = reader.read(0, limit=100)
    assert [int(e["sequence"]) for e in batch.events][:7] == list(range(1, 8))
