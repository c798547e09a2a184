"""`orch runs`: submit, inspect, cancel and replay DAG runs, thin over core.control and
core.queries (docs/design.md, "DAG runs")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core import control, queries
from core.control import targets
from worker.cli.common import (
    Context,
    add_json,
    add_limit,
    add_tenant,
    add_why,
    print_json,
    read_run_document,
    table,
    to_int,
)


def load_run_file(path: str, tenant: str, *, idempotency_key: str | None, max_jobs: int) -> control.RunSpec:
    """A RunSpec from a run file ({"name": ..., "jobs": [{"key", "type", ...}]}). Raises
    InvalidInput with the file's problem in one line."""
    doc = read_run_document(path)
    return targets.run_spec(
        doc,
        tenant,
        where=f"run file {path}",
        default_name=Path(path).stem,
        idempotency_key=idempotency_key,
        max_jobs=max_jobs,
    )


def console_url(ctx: Context, link: str) -> str:
    s = ctx.settings
    host = "127.0.0.1" if s.console_host in ("0.0.0.0", "::") else s.console_host
    return f"http://{host}:{s.console_port}{link}"


def cmd_submit(ctx: Context) -> int:
    a = ctx.args
    spec = load_run_file(a.file, a.tenant, idempotency_key=a.idempotency_key, max_jobs=ctx.settings.run_max_jobs)
    result = control.submit_run(ctx.engine, ctx.principal, spec, ctx.doorbell(), reason=a.reason)
    if a.json:
        print_json({"run_id": result.run_id, "jobs": result.jobs, "created": result.created})
    else:
        word = "run" if result.created else "existing run (same idempotency key)"
        print(f"{word} {result.run_id}: {len(result.jobs)} jobs")
        print(f"  {console_url(ctx, queries.run_link(result.run_id))}")
    return 0


LIST_COLUMNS = ["id", "tenant", "name", "state", "attempt", "progress", "started_at", "duration_s"]


def cmd_list(ctx: Context) -> int:
    a = ctx.args
    with ctx.engine.connect() as conn:
        rows = queries.list_runs(conn, ctx.principal, tenant=a.tenant, state=a.state, name=a.name, limit=a.limit)
    if a.json:
        print_json({"runs": rows})
        return 0
    for r in rows:
        r["progress"] = f"{r['jobs_done']}/{r['jobs_total']}"
        r["duration_s"] = f"{r['duration_s']:.1f}"
    table(rows, LIST_COLUMNS)
    return 0


JOB_COLUMNS = ["key", "id", "state", "parents", "attempt", "started", "finished", "duration_s", "critical"]


def cmd_show(ctx: Context) -> int:
    a = ctx.args
    with ctx.engine.connect() as conn:
        run = queries.get_run(conn, ctx.principal, a.run)
    run["url"] = console_url(ctx, run["link"])
    if a.json:
        print_json(run)
        return 0
    path = run["critical_path"]
    print(f"run {run['id']} {run['name']!r} (tenant {run['tenant']}): {run['state']}, attempt {run['attempt']}")
    print(
        f"  {run['jobs_done']}/{run['jobs_total']} jobs done; "
        + ", ".join(f"{n} {s}" for s, n in run["counts"].items())
    )
    print(f"  critical path ({path['seconds']:.3f}s): {' -> '.join(path['keys']) or '-'}")
    print(f"  {run['url']}")
    rows = [
        {
            **j,
            "parents": ",".join(j["parents"]) or "-",
            "started": j["first_started_at"] or "-",
            "finished": j["finished_at"] or "-",
            "attempt": f"{j['attempt']}/{j['max_attempts']}",
            "critical": "*" if j["critical"] else "",
        }
        for j in run["jobs"]
    ]
    table(rows, JOB_COLUMNS)
    return 0


def cmd_graph(ctx: Context) -> int:
    a = ctx.args
    with ctx.engine.connect() as conn:
        g = queries.run_graph(conn, ctx.principal, a.run)
    if a.format == "dot":
        print(queries.graph_dot(g), end="")
    else:
        print(json.dumps(queries.graph_json(g), indent=2, sort_keys=True, default=str))
    return 0


def cmd_cancel(ctx: Context) -> int:
    a = ctx.args
    result = control.cancel_run(ctx.engine, ctx.principal, a.run, reason=a.reason, ticket=a.ticket)
    if a.json:
        print_json(result)
    else:
        print(
            f"run {result.run_id}: {result.canceled} job(s) canceled, {result.cancel_requested} running job(s) "
            f"asked to stop; run is {result.state}"
        )
    return 0


def cmd_replay(ctx: Context) -> int:
    a = ctx.args
    plan = control.replay_run(
        ctx.engine,
        ctx.principal,
        a.run,
        ctx.doorbell(),
        from_keys=a.from_keys or None,
        dry_run=a.dry_run,
        reason=a.reason,
        ticket=a.ticket,
    )
    if a.json:
        out: dict[str, Any] = {"to_run": plan.to_run, "kept": plan.kept}
        if not a.dry_run:
            out.update({"run_id": plan.run_id, "attempt": plan.attempt, "new_jobs": plan.new_jobs})
        print_json(out)
    elif a.dry_run:
        print(f"would re-run {len(plan.to_run)} job(s): {', '.join(plan.to_run)}")
        print(f"would keep {len(plan.kept)} job(s): {', '.join(plan.kept) or '-'}")
    else:
        print(f"run {plan.run_id} attempt {plan.attempt}: re-running {', '.join(plan.to_run)}")
    return 0


def register(sub: Any) -> None:
    runs = sub.add_parser("runs", help="DAG runs: jobs with dependencies").add_subparsers(
        dest="runs_command", required=True
    )
    s = runs.add_parser("submit", help="submit a run from a JSON file")
    add_tenant(s, required=True, what=" the run belongs to")
    s.add_argument("--file", required=True, help='run file: {"name": ..., "jobs": [{"key", "type", "after", ...}]}')
    s.add_argument("--idempotency-key", help="the same key returns the same run; a different run under it fails")
    s.add_argument("--reason", help="why, for the audit log (optional)")
    add_json(s)
    s.set_defaults(fn=cmd_submit)

    ls = runs.add_parser("list", help="runs, newest first")
    add_tenant(ls)
    ls.add_argument("--state", help="only runs in this state (running, succeeded, failed, canceled)")
    ls.add_argument("--name", help="only runs whose name contains this")
    add_limit(ls, 50)
    add_json(ls)
    ls.set_defaults(fn=cmd_list)

    sh = runs.add_parser("show", help="a run, its jobs and its critical path")
    sh.add_argument("run", type=to_int, help="run id")
    add_json(sh)
    sh.set_defaults(fn=cmd_show)

    gr = runs.add_parser("graph", help="a run's graph, for tools outside Orch")
    gr.add_argument("run", type=to_int, help="run id")
    gr.add_argument("--format", choices=("json", "dot"), default="json", help="networkx node-link JSON or Graphviz DOT")
    gr.set_defaults(fn=cmd_graph)

    c = runs.add_parser("cancel", help="cancel every job of a run that has not ended")
    c.add_argument("run", type=to_int, help="run id")
    add_why(c)
    c.set_defaults(fn=cmd_cancel)

    r = runs.add_parser("replay", help="re-run the failed part of a run, in the same run")
    r.add_argument("run", type=to_int, help="run id")
    r.add_argument(
        "--from",
        dest="from_keys",
        nargs="+",
        metavar="KEY",
        help="re-run these jobs and everything downstream (default: the dead-lettered and canceled ones)",
    )
    r.add_argument("--dry-run", action="store_true", help="print what would re-run and what is kept; change nothing")
    add_why(r, required=False)
    r.set_defaults(fn=cmd_replay)
