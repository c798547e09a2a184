"""The event stream as one reader sees it: where its cursor starts, what its filters and its
principal's tenants let through, and an explicit lost-events note when its cursor is older
than the retention window (never a silent gap). Transport-agnostic and without FastAPI:
the API's SSE stream and JSON pages and `orch events tail` read through it alike."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa

from core.domain import errors
from core.domain import events as domain
from core.domain.auth import Principal, Scope
from core.ledger import events as ledger

LATEST = "latest"
#: The largest cursor a reader may give (events.seq is a bigint).
MAX_CURSOR = 2**63 - 1
#: The SSE event name of the lost-events note (its body's `type`).
LOST = "orch.stream.events_lost"
#: What a type filter may look like: orch.job.succeeded, or a prefix (orch.job. or orch.job.*).
_TYPE_RE = re.compile(r"^[a-z0-9_.]{1,200}\*?$")

Cursor = int | Literal["latest"] | None


@dataclass(frozen=True, slots=True)
class Filters:
    """What a reader sees: tenants by name (None: every tenant, and events of none), event
    types (exact, or a prefix ending in `.` or `*`) and subjects (exact); empty: all."""

    tenants: tuple[str, ...] | None = None
    types: tuple[str, ...] = ()
    subjects: tuple[str, ...] = ()

    def type_patterns(self) -> list[str] | None:
        if not self.types:
            return None
        out = []
        for t in self.types:
            if t.endswith("*"):
                out.append(ledger.type_pattern(t[:-1], prefix=True))
            else:
                out.append(ledger.type_pattern(t, prefix=t.endswith(".")))
        return out


def filters_for(
    principal: Principal,
    *,
    tenants: Sequence[str] = (),
    types: Sequence[str] = (),
    subjects: Sequence[str] = (),
) -> Filters:
    """The filters of a reader, limited to its principal's tenants (a principal limited to
    tenants never sees events of other tenants, nor those of no tenant). Raises Forbidden
    (no orch:read, or a tenant it may not read) and InvalidInput (a malformed type)."""
    principal.require(Scope.READ)
    for tenant in tenants:
        principal.require(Scope.READ, tenant)
    for t in types:
        if not _TYPE_RE.match(t):
            raise errors.InvalidInput(
                f"type filter {t!r} is not an event type (orch.job.succeeded) or a prefix (orch.job. or orch.job.*)"
            )
    for s in subjects:
        if not s or len(s) > 300:
            raise errors.InvalidInput("a subject filter is 1 to 300 characters (e.g. job/42, run/7)")
    chosen: tuple[str, ...] | None
    if tenants:
        chosen = tuple(sorted(set(tenants)))
    elif principal.tenants is not None:
        chosen = tuple(sorted(principal.tenants))
    else:
        chosen = None
    return Filters(tenants=chosen, types=tuple(dict.fromkeys(types)), subjects=tuple(dict.fromkeys(subjects)))


def parse_cursor(text: str | None, *, what: str = "after") -> Cursor:
    """`latest`, a number (the last event seen) or None (no cursor). Raises InvalidInput."""
    if text is None or text.strip() == "":
        return None
    text = text.strip()
    if text == LATEST:
        return "latest"
    if not text.isdigit() or int(text) > MAX_CURSOR:
        raise errors.InvalidInput(f"{what} must be an event's sequence number (0 or more) or 'latest', got {text!r}")
    return int(text)


@dataclass(frozen=True, slots=True)
class Item:
    """One thing a reader gets: an event (its envelope) or the lost-events note."""

    #: The SSE id: the event's sequence number; for the note, the number the stream resumes
    #: after (so a reader that reconnects from it is not told again).
    seq: int
    #: The SSE event name: the envelope's type, or LOST.
    event: str
    data: dict[str, Any]

    @property
    def lost(self) -> bool:
        return self.event == LOST


@dataclass(frozen=True, slots=True)
class Batch:
    items: list[Item]
    #: Where the next read starts (the `after` of the next page).
    cursor: int
    #: More may follow at once (read again without waiting).
    full: bool
    oldest: int | None
    newest: int

    @property
    def events(self) -> list[dict[str, Any]]:
        return [i.data for i in self.items if not i.lost]

    @property
    def lost(self) -> dict[str, Any] | None:
        return next((i.data for i in self.items if i.lost), None)


class Reader:
    """Pages of the stream for one reader's filters; every read is one short connection."""

    def __init__(
        self, engine: sa.Engine, filters: Filters, *, source: str = domain.DEFAULT_SOURCE, span: int = ledger.SPAN
    ) -> None:
        self.engine = engine
        self.filters = filters
        self.source = source
        self.span = span

    def start(self, cursor: Cursor) -> int:
        """The number a reader starts after: `latest` is the newest; no cursor the one before
        the oldest retained event (everything kept); a number is itself (read() reports it
        lost when it is older than the retention window)."""
        if isinstance(cursor, int):
            return cursor
        with self.engine.connect() as conn:
            oldest, newest = ledger.bounds(conn)
        if cursor == LATEST or oldest is None:
            return newest
        return oldest - 1

    def read(self, after: int, *, limit: int) -> Batch:
        """The next page after `after` (at most `limit` events), preceded by the lost-events
        note when events after `after` were pruned."""
        with self.engine.connect() as conn:
            page = self._page(conn, after, limit)
            resume = _resume(after, page.oldest, page.newest)
            items: list[Item] = []
            if resume is not None:
                items.append(Item(resume, LOST, domain.lost_event(after, page.oldest)))
                page = self._page(conn, resume, limit)
            start = after if resume is None else resume
        envelopes = self._envelopes(page.events, start, limit)
        cursor, full = page.cursor, page.full
        if len(envelopes) > limit:  # rows holding many events: stop inside the last one
            envelopes = envelopes[:limit]
            cursor, full = int(envelopes[-1]["sequence"]), True
        items.extend(Item(int(env["sequence"]), str(env["type"]), env) for env in envelopes)
        return Batch(items, cursor, full, page.oldest, page.newest)

    def collect(self, after: int, *, limit: int, reads: int = 10) -> Batch:
        """Up to `limit` events after `after`, reading on (at most `reads` pages) while the
        filters let little through: what a JSON page returns."""
        items: list[Item] = []
        batch = self.read(after, limit=limit)
        items.extend(batch.items)
        for _ in range(reads - 1):
            wanted = limit - len([i for i in items if not i.lost])
            if not batch.full or wanted <= 0:
                break
            batch = self.read(batch.cursor, limit=wanted)
            items.extend(batch.items)
        return Batch(items, batch.cursor, batch.full, batch.oldest, batch.newest)

    def _page(self, conn: sa.Connection, after: int, limit: int) -> ledger.Page:
        f = self.filters
        return ledger.page(
            conn,
            after,
            limit=limit,
            span=self.span,
            tenants=f.tenants,
            type_patterns=f.type_patterns(),
            subjects=list(f.subjects) or None,
        )

    def _envelopes(self, rows: Sequence[sa.RowMapping], after: int, limit: int) -> list[dict[str, Any]]:
        """The events of the rows past `after`, one per job of a job batch row, kept to the
        subjects asked for (a batch row matches when one of its jobs does)."""
        out: list[dict[str, Any]] = []
        subjects = self.filters.subjects
        for r in rows:
            if len(out) > limit:
                break
            # More than `limit` tells read() to stop inside the last row.
            got = domain.expand(dict(r), after=after, source=self.source, limit=None if subjects else limit + 1)
            out += [e for e in got if e["subject"] in subjects] if subjects else got
        return out


def _resume(after: int, oldest: int | None, newest: int) -> int | None:
    """Where a reader whose events after `after` were pruned resumes; None when none were."""
    if oldest is None:
        return newest if after < newest else None
    return oldest - 1 if after < oldest - 1 else None


def sse(item: Item) -> str:
    """One Server-Sent Event: `id:` the sequence, `event:` the type, `data:` the envelope as
    one line of JSON."""
    data = json.dumps(item.data, separators=(",", ":"), sort_keys=True, default=str)
    return f"id: {item.seq}\nevent: {item.event}\ndata: {data}\n\n"


#: The comment line an idle stream sends so proxies and clients know it is alive.
KEEPALIVE = ": keep-alive\n\n"
