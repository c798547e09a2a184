"""The API without a database: cursors, filters and their tenant limits, the SSE framing,
where a pruned cursor resumes, the LIKE patterns of type filters, problem+json for requests
refused before any SQL, and the OpenAPI document."""

from __future__ import annotations

import json
import re

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from core.domain import errors
from core.domain.auth import Principal, Scope, local_principal
from core.ledger import events as ledger
from worker.api import app, stream

READER = Principal(subject="r", scopes=frozenset({Scope.READ}), tenants=frozenset({"acme", "beta"}))


@pytest.mark.parametrize(
    ("text", "cursor"),
    [(None, None), ("", None), ("latest", "latest"), ("0", 0), (" 42 ", 42), (str(2**63 - 1), 2**63 - 1)],
)
def test_cursors(text: str | None, cursor: stream.Cursor) -> None:
    assert stream.parse_cursor(text) == cursor


@pytest.mark.parametrize("text", ["-1", "1.5", "soon", str(2**63), "LATEST"])
def test_bad_cursors_say_what_a_cursor_is(text: str) -> None:
    with pytest.raises(errors.InvalidInput, match="sequence number"):
        stream.parse_cursor(text)


def test_filters_keep_a_limited_principal_to_its_tenants() -> None:
    assert stream.filters_for(READER).tenants == ("acme", "beta")
    assert stream.filters_for(READER, tenants=["beta", "beta"]).tenants == ("beta",)
    with pytest.raises(errors.Forbidden, match="globex"):
        stream.filters_for(READER, tenants=["globex"])
    assert stream.filters_for(local_principal("t")).tenants is None
    with pytest.raises(errors.Forbidden, match="orch:read"):
        stream.filters_for(Principal(subject="o", scopes=frozenset({Scope.OPERATE})))
    with pytest.raises(errors.InvalidInput, match="prefix"):
        stream.filters_for(READER, types=["Orch Job"])


def test_type_filters_become_like_patterns() -> None:
    f = stream.Filters(types=("orch.job.dead_lettered", "orch.run.", "orch.action.*"))
    assert f.type_patterns() == ["orch.job.dead\\_lettered", "orch.run.%", "orch.action.%"]
    assert stream.Filters().type_patterns() is None
    assert ledger.type_pattern("a%b\\", prefix=True) == "a\\%b\\\\%"


@pytest.mark.parametrize(
    ("after", "oldest", "newest", "resume"),
    [
        (0, 1, 9, None),
        (1, 2, 9, None),
        (0, 2, 9, 1),
        (0, 3, 9, 2),
        (5, 3, 9, None),
        (4, None, 9, 9),
        (9, None, 9, None),
    ],
)
def test_where_a_pruned_cursor_resumes(after: int, oldest: int | None, newest: int, resume: int | None) -> None:
    assert stream._resume(after, oldest, newest) == resume


def test_one_event_is_one_sse_frame_with_its_envelope_on_one_line() -> None:
    item = stream.Item(7, "orch.job.failed", {"type": "orch.job.failed", "data": {"reason": "two\nlines"}})
    frame = stream.sse(item)
    assert frame.endswith("\n\n")
    lines = frame[:-2].split("\n")
    assert lines[:2] == ["id: 7", "event: orch.job.failed"]
    assert len(lines) == 3 and json.loads(lines[2].removeprefix("data: ")) == item.data
    assert stream.KEEPALIVE == ": keep-alive\n\n"


@pytest.fixture
def client() -> TestClient:
    # Never connects: every request here is refused before the ledger is read.
    engine = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    return TestClient(app.create_app(engine), raise_server_exceptions=False)


def test_refusals_before_the_ledger_are_problem_json(client: TestClient) -> None:
    for method, path, status in (
        ("GET", "/v1/events", 401),
        ("POST", "/v1/incidents/1/ack", 401),
        ("GET", "/nothing", 404),
        ("PUT", "/v1/events", 405),
    ):
        r = client.request(method, path)
        assert r.status_code == status
        assert r.headers["content-type"] == "application/problem+json"
        body = r.json()
        assert body["status"] == status and re.match(r"^urn:orch:problem:[a-z-]+$", body["type"])
        assert body["title"] and body["detail"] and body["instance"] == path


def test_the_openapi_document_names_every_route_and_the_problems(client: TestClient) -> None:
    doc = client.get("/.well-known/openapi").json()
    assert set(doc["paths"]) == {
        "/v1/events",
        "/v1/incidents",
        "/v1/incidents/{incident_id}",
        "/v1/incidents/{incident_id}/ack",
        "/v1/incidents/{incident_id}/resolve",
    }
    events = doc["paths"]["/v1/events"]["get"]
    assert {"application/json", "text/event-stream"} <= events["responses"]["200"]["content"].keys()
    assert "application/problem+json" in events["responses"]["401"]["content"]
    assert "Last-Event-ID" in {p["name"] for p in events["parameters"]}
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert client.get("/docs").status_code == 404
