"""The FastAPI application of `orch api`: /v1/events (Server-Sent Events with
`Accept: text/event-stream`, JSON pages otherwise) and /v1/incidents, every route behind a
bearer API token and limited to its principal's tenants; errors are problem+json
(worker.api.problems); the OpenAPI document is at /.well-known/openapi. Built by
create_app(engine): nothing happens at import."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import anyio
import sqlalchemy as sa
from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from core import control, queries
from core.control import common
from core.domain import errors
from core.domain import events as domain_events
from core.domain.auth import Principal
from worker.api import problems, stream

log = logging.getLogger(__name__)

OPENAPI_URL = "/.well-known/openapi"
#: Seconds of silence after which an SSE stream sends a keep-alive comment.
KEEPALIVE_S = 15.0
#: How often an idle SSE stream looks for new events (a full page is followed at once).
POLL_S = 0.05
#: Most events one SSE read takes.
SSE_PAGE = 500
#: What an EventSource waits before it reconnects (the `retry:` field), in milliseconds.
RETRY_MS = 2000
MAX_ID = 2**63 - 1

BEARER = HTTPBearer(
    auto_error=False,
    description="An Orch API token (`orch tokens create`), as `Authorization: Bearer <token>`.",
)


@dataclass
class Api:
    """What the routes share: the ledger, the envelope's source and the stream's timings."""

    engine: sa.Engine
    source: str = domain_events.DEFAULT_SOURCE
    keepalive_s: float = KEEPALIVE_S
    poll_s: float = POLL_S
    #: Set when the server stops: open streams end so the server can.
    stopping: threading.Event = field(default_factory=threading.Event)
    #: SSE streams open now.
    streams: int = 0


class EventsPage(BaseModel):
    events: list[dict[str, Any]] = Field(
        description="orch.event.v1 envelopes in stream order (docs/schemas/orch.event.v1.json)"
    )
    next_after: int = Field(description="The cursor of the next page: pass it as ?after=")
    oldest: int | None = Field(description="The oldest retained sequence number (null: none retained)")
    newest: int = Field(description="The newest sequence number given; next_after == newest: caught up")
    lost: dict[str, Any] | None = Field(
        default=None, description="Set when events after the cursor were pruned (orch.stream.events_lost)"
    )


class IncidentList(BaseModel):
    incidents: list[dict[str, Any]]


class Reason(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=256, description="Why, for the audit log")


class IncidentState(BaseModel):
    id: int
    state: str


def _api(request: Request) -> Api:
    api: Api = request.app.state.api
    return api


def _principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]
) -> Principal:
    if credentials is None or not credentials.credentials.strip():
        raise problems.Unauthorized("an API token is required: Authorization: Bearer <token>")
    try:
        return control.authenticate(_api(request).engine, credentials.credentials)
    except errors.Forbidden:
        raise problems.Unauthorized("unknown or revoked API token") from None


#: What a filter may hold (checked before any SQL sees it).
TenantName = Annotated[str, StringConstraints(pattern=common.TENANT_RE.pattern)]
EventType = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_.]{1,200}\*?$")]
Subject = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f]{1,300}$")]
CURSOR = r"^(latest|[0-9]{1,18})$"


def _only(*single: str, repeatable: tuple[str, ...] = ()) -> Any:
    """A dependency refusing query parameters other than these, and a single-valued one
    given twice: a misspelt or doubled filter must not silently change what a reader gets."""
    names = (*single, *repeatable)

    def check(request: Request) -> None:
        unknown = sorted(set(request.query_params) - set(names))
        if unknown:
            allowed = ", ".join(names) or "none"
            raise errors.InvalidInput(f"unknown query parameter(s) {', '.join(map(repr, unknown))}; allowed: {allowed}")
        doubled = [n for n in single if len(request.query_params.getlist(n)) > 1]
        if doubled:
            raise errors.InvalidInput(f"query parameter {doubled[0]!r} may be given once")

    return Depends(check)


ApiDep = Annotated[Api, Depends(_api)]
PrincipalDep = Annotated[Principal, Depends(_principal)]
IncidentId = Annotated[int, Path(ge=1, le=MAX_ID, description="The incident's id")]
AUTH_ERRORS = (400, 401, 403, 422)


def create_app(
    engine: sa.Engine,
    *,
    source: str = domain_events.DEFAULT_SOURCE,
    keepalive_s: float = KEEPALIVE_S,
    poll_s: float = POLL_S,
    stopping: threading.Event | None = None,
) -> FastAPI:
    """The API on `engine`; `stopping` (set by the server) ends open streams."""
    app = FastAPI(
        title="Orch API",
        version="1",
        description=(
            "The orch.event.v1 event stream and the incidents. Every route needs a bearer API "
            "token; a token limited to tenants sees only theirs. Errors are application/problem+json."
        ),
        openapi_url=OPENAPI_URL,
        docs_url=None,
        redoc_url=None,
    )
    app.state.api = Api(
        engine, source=source, keepalive_s=keepalive_s, poll_s=poll_s, stopping=stopping or threading.Event()
    )
    problems.install(app)
    app.add_api_route(
        "/v1/events",
        get_events,
        methods=["GET"],
        response_model=EventsPage,
        dependencies=[_only("after", "limit", repeatable=("tenant", "type", "subject"))],
        summary="The event stream: Server-Sent Events, or a JSON page",
        responses={
            200: {
                "description": "A JSON page, or with Accept: text/event-stream an endless SSE stream",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            **problems.responses(*AUTH_ERRORS),
        },
    )
    app.add_api_route(
        "/v1/incidents",
        list_incidents,
        methods=["GET"],
        response_model=IncidentList,
        dependencies=[_only("tenant", "state", "limit")],
        summary="Incidents, newest first",
        responses=problems.responses(*AUTH_ERRORS),
    )
    app.add_api_route(
        "/v1/incidents/{incident_id}",
        get_incident,
        methods=["GET"],
        response_model=dict[str, Any],
        dependencies=[_only()],
        summary="One incident with its evidence",
        responses=problems.responses(*AUTH_ERRORS, 404),
    )
    for action in ("ack", "resolve"):
        app.add_api_route(
            f"/v1/incidents/{{incident_id}}/{action}",
            ack_incident if action == "ack" else resolve_incident,
            methods=["POST"],
            response_model=IncidentState,
            dependencies=[_only()],
            summary="Acknowledge an open incident (orch:operate)"
            if action == "ack"
            else "Resolve an incident by hand (orch:operate)",
            responses=problems.responses(*AUTH_ERRORS, 404, 409),
        )
    return app


def get_events(
    request: Request,
    api: ApiDep,
    principal: PrincipalDep,
    after: Annotated[
        str | None,
        Query(
            pattern=CURSOR,
            description="Resume after this sequence number, or `latest` for new events only; none: the oldest retained",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Most events in a JSON page")] = 100,
    tenant: Annotated[list[TenantName] | None, Query(description="Only these tenants (repeatable)")] = None,
    type: Annotated[
        list[EventType] | None,
        Query(description="Only these event types (repeatable); one ending in `.` or `*` is a prefix: orch.job."),
    ] = None,
    subject: Annotated[list[Subject] | None, Query(description="Only these subjects, e.g. job/42 (repeatable)")] = None,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            pattern=CURSOR,
            description="The SSE resume cursor an EventSource sends on reconnecting; takes precedence over ?after",
        ),
    ] = None,
) -> Any:
    """Server-Sent Events with `Accept: text/event-stream`: `id:` the sequence number,
    `event:` the type, `data:` the envelope; `: keep-alive` comments while idle. Otherwise a
    JSON page. A cursor older than the retention window gets an `orch.stream.events_lost`
    event (in a JSON page: `lost`) before the oldest retained event."""
    filters = stream.filters_for(principal, tenants=tenant or (), types=type or (), subjects=subject or ())
    cursor = stream.parse_cursor(last_event_id, what="Last-Event-ID") if last_event_id else None
    if cursor is None:
        cursor = stream.parse_cursor(after)
    reader = stream.Reader(api.engine, filters, source=api.source)
    start = reader.start(cursor)
    if "text/event-stream" in request.headers.get("accept", ""):
        return StreamingResponse(
            _events(api, reader, start),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    batch = reader.collect(start, limit=limit)
    return EventsPage(
        events=batch.events, next_after=batch.cursor, oldest=batch.oldest, newest=batch.newest, lost=batch.lost
    )


async def _events(api: Api, reader: stream.Reader, after: int) -> AsyncIterator[str]:
    """The SSE stream after `after` until the client goes, the ledger fails (the client
    reconnects with Last-Event-ID) or the server stops."""
    api.streams += 1
    try:
        yield f"retry: {RETRY_MS}\n\n"
        quiet_since = time.monotonic()
        while not api.stopping.is_set():
            try:
                batch = await anyio.to_thread.run_sync(functools.partial(reader.read, after, limit=SSE_PAGE))
            except sa.exc.SQLAlchemyError as exc:
                log.warning("api: event stream ends: %s", str(exc).splitlines()[0])
                return
            after = batch.cursor
            now = time.monotonic()
            if batch.items:
                yield "".join(stream.sse(item) for item in batch.items)
                quiet_since = now
            elif now - quiet_since >= api.keepalive_s:
                yield stream.KEEPALIVE
                quiet_since = now
            if not batch.full:
                await anyio.sleep(api.poll_s)
    finally:
        api.streams -= 1


def list_incidents(
    api: ApiDep,
    principal: PrincipalDep,
    tenant: Annotated[str | None, Query(pattern=common.TENANT_RE.pattern, description="Only this tenant")] = None,
    state: Annotated[Literal["all", "open", "acknowledged", "resolved"], Query(description="Only this state")] = "all",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> IncidentList:
    """Incidents newest first, as `orch incidents list --json` prints them (orch:read)."""
    with api.engine.connect() as conn:
        rows = queries.list_incidents(conn, principal, tenant=tenant, state=state, limit=limit)
    return IncidentList(incidents=rows)


def get_incident(api: ApiDep, principal: PrincipalDep, incident_id: IncidentId) -> dict[str, Any]:
    """One incident with its evidence (orch:read); 404 for one of a tenant it may not read."""
    with api.engine.connect() as conn:
        return queries.get_incident(conn, principal, incident_id)


def _act(api: Api, principal: Principal, incident_id: int, body: Reason, fn: Any) -> IncidentState:
    with api.engine.connect() as conn:
        queries.get_incident(conn, principal, incident_id)  # 404 unless the principal may read it
    return IncidentState(id=incident_id, state=fn(api.engine, principal, incident_id, reason=body.reason))


def ack_incident(api: ApiDep, principal: PrincipalDep, incident_id: IncidentId, body: Reason) -> IncidentState:
    """open -> acknowledged, audited with the reason (orch:operate); 409 unless open."""
    return _act(api, principal, incident_id, body, control.acknowledge_incident)


def resolve_incident(api: ApiDep, principal: PrincipalDep, incident_id: IncidentId, body: Reason) -> IncidentState:
    """open or acknowledged -> resolved, audited with the reason (orch:operate); 409 once resolved."""
    return _act(api, principal, incident_id, body, control.resolve_incident)
