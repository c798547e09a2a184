"""`orch events tail`: the orch.event.v1 stream, read from the ledger as the API's SSE stream
reads it (worker.api.stream), one line per event until Ctrl-C."""

from __future__ import annotations

import json
import threading
from typing import Any

import sqlalchemy as sa

from worker.api import stream
from worker.cli.common import Context, stop_on_signals

#: How often an idle tail looks for new events.
POLL_S = 0.2


def _line(item: stream.Item, as_json: bool) -> str:
    if as_json:
        return json.dumps(item.data, separators=(",", ":"), sort_keys=True, default=str)
    d = item.data
    if item.lost:
        return f"{item.seq:>8}  ! {d['detail']}"
    data = d.get("data") or {}
    why = data.get("reason") or ""
    return "  ".join(
        part
        for part in (
            f"{item.seq:>8}",
            str(d["time"]),
            str(d.get("tenantid") or "-"),
            str(d["type"]),
            str(d.get("subject") or "-"),
            f"by {d['actor']}" if d.get("actor") else "",
            str(why)[:120],
        )
        if part
    )


def cmd_tail(ctx: Context) -> int:
    a = ctx.args
    filters = stream.filters_for(
        ctx.principal, tenants=[a.tenant] if a.tenant else (), types=a.type or (), subjects=a.subject or ()
    )
    reader = stream.Reader(ctx.engine, filters, source=ctx.settings.event_source)
    after = reader.start(stream.parse_cursor(a.after))
    stop = threading.Event()
    stop_on_signals(stop)
    failing = False
    while not stop.is_set():
        try:
            batch = reader.read(after, limit=500)
        except sa.exc.OperationalError as exc:
            if not failing:
                print(f"orch: the ledger is unavailable ({str(exc.orig or exc).strip().splitlines()[0]}); retrying")
                failing = True
            stop.wait(2.0)
            continue
        failing = False
        try:
            for item in batch.items:
                print(_line(item, a.json), flush=True)
        except BrokenPipeError:  # `orch events tail | head`
            return 0
        after = batch.cursor
        if not batch.full:
            stop.wait(POLL_S)
    return 0


def register(sub: Any) -> None:
    ev = sub.add_parser("events", help="the orch.event.v1 event stream").add_subparsers(
        dest="events_command", required=True
    )
    t = ev.add_parser("tail", help="print the stream, one line per event, until Ctrl-C")
    t.add_argument("--tenant", help="only this tenant (default: every tenant you may see)")
    t.add_argument(
        "--type", action="append", help="only this event type (repeatable); ending in . or *: a prefix (orch.job.)"
    )
    t.add_argument("--subject", action="append", help="only this subject, e.g. job/42 (repeatable)")
    t.add_argument("--after", help="start after this sequence number, or 'latest' (default: the oldest retained event)")
    t.add_argument("--json", action="store_true", help="print each envelope as one line of JSON")
    t.set_defaults(fn=cmd_tail)
