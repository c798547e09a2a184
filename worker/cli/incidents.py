"""`orch incidents`: list, show, acknowledge and resolve the incidents the scheduler opens
(docs/design.md, "Incidents"), thin over core.control and core.queries."""

from __future__ import annotations

import argparse
import json
from typing import Any

from core import control, queries
from core.domain import incidents as domain
from worker.cli.common import Context, add_json, add_limit, add_tenant, print_json, table, to_int

LIST_COLUMNS = ["id", "state", "severity", "kind", "tenant", "scope", "opened_at", "resolved_at", "occurrences"]


def cmd_list(ctx: Context) -> int:
    a = ctx.args
    with ctx.engine.connect() as conn:
        rows = queries.list_incidents(conn, ctx.principal, tenant=a.tenant, state=a.state, limit=a.limit)
    if a.json:
        print_json({"incidents": rows})
        return 0
    table(rows, LIST_COLUMNS)
    return 0


def cmd_show(ctx: Context) -> int:
    a = ctx.args
    with ctx.engine.connect() as conn:
        row = queries.get_incident(conn, ctx.principal, a.incident)
    if a.json:
        print_json(row)
        return 0
    print(f"incident {row['id']} {row['dedup_key']}: {row['state']}, {row['severity']}")
    print(f"  opened {row['opened_at']}, last seen {row['last_seen_at']}, {row['occurrences']} occurrence(s)")
    if row["acknowledged_by"]:
        print(f"  acknowledged by {row['acknowledged_by']} at {row['acknowledged_at']}: {row['ack_reason']}")
    if row["resolved_at"]:
        print(f"  resolved by {row['resolved_by']} at {row['resolved_at']}: {row['resolve_reason']}")
    elif row["clear_since"]:
        print(f"  condition clear since {row['clear_since']}")
    print("  evidence: " + json.dumps(row["evidence"], sort_keys=True))
    return 0


def _act(ctx: Context, fn: Any) -> int:
    a = ctx.args
    state = fn(ctx.engine, ctx.principal, a.incident, reason=a.reason)
    if a.json:
        print_json({"id": a.incident, "state": state})
    else:
        print(f"incident {a.incident}: {state}")
    return 0


def cmd_ack(ctx: Context) -> int:
    return _act(ctx, control.acknowledge_incident)


def cmd_resolve(ctx: Context) -> int:
    return _act(ctx, control.resolve_incident)


def _reason(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reason", required=True, help="why, for the audit log (at most 256 characters)")
    add_json(p)


def register(sub: Any) -> None:
    inc = sub.add_parser("incidents", help="incidents the scheduler opened: list, show, ack, resolve").add_subparsers(
        dest="incidents_command", required=True
    )
    ls = inc.add_parser("list", help="incidents, newest first")
    add_tenant(ls)
    ls.add_argument("--state", default="all", choices=("all", *domain.STATES), help="only this state (default all)")
    add_limit(ls, 100)
    add_json(ls)
    ls.set_defaults(fn=cmd_list)

    sh = inc.add_parser("show", help="one incident with its evidence")
    sh.add_argument("incident", type=to_int, help="incident id")
    add_json(sh)
    sh.set_defaults(fn=cmd_show)

    ack = inc.add_parser("ack", help="acknowledge an open incident (records who took it; mutes nothing)")
    ack.add_argument("incident", type=to_int, help="incident id")
    _reason(ack)
    ack.set_defaults(fn=cmd_ack)

    res = inc.add_parser("resolve", help="resolve an incident by hand")
    res.add_argument("incident", type=to_int, help="incident id")
    _reason(res)
    res.set_defaults(fn=cmd_resolve)
