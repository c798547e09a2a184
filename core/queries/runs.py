"""Reads on DAG runs: lists, one run with its jobs and critical path, its graph (networkx)
and its timeline, and the console overview's run figures."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

import networkx as nx
import sqlalchemy as sa

from core.domain import dag, errors, redaction
from core.domain.auth import Principal
from core.ledger.reads import runs as reads
from core.queries.common import plain, visible

#: Rows of history a timeline reads at most (a 10,000-job run has about 50,000).
MAX_TIMELINE_ROWS = 200_000


def run_link(run_id: int) -> str:
    """The console's view of a run, relative to the console's address."""
    return f"/Runs?run={run_id}"


def parse_run_state(state: str) -> str:
    if state not in dag.RUN_STATES:
        raise errors.InvalidInput(f"unknown run state {state!r}; one of: {', '.join(dag.RUN_STATES)}")
    return state


def list_runs(
    conn: sa.Connection,
    principal: Principal,
    *,
    tenant: str | None = None,
    state: str | None = None,
    name: str | None = None,
    before: int | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Runs newest first, with progress (jobs done of total) and duration."""
    if state is not None:
        parse_run_state(state)
    if not 1 <= limit <= 10_000:
        raise errors.InvalidInput(f"limit must be between 1 and 10000, got {limit}")
    rows = reads.runs(conn, visible(principal, tenant), state=state, name=name, before=before, limit=limit)
    return [plain(r) for r in rows]


def _run_row(conn: sa.Connection, principal: Principal, run_id: int) -> dict[str, Any]:
    row = reads.run(conn, visible(principal, None), run_id)
    if row is None:
        raise errors.NotFound(f"no run {run_id}; list runs with `orch runs list`")
    return plain(row)


def get_run(conn: sa.Connection, principal: Principal, run_id: int) -> dict[str, Any]:
    """A run, each current job (key, id, state, parents, attempts, start and end, why it
    waits) and the critical path: the longest chain of jobs by run time, with its length in
    seconds and every job's slack. Raises NotFound (also for a run of a tenant not visible).
    A 10,000-job run takes about a quarter of a second (bench/dag.py, show_10k_ms)."""
    run = _run_row(conn, principal, run_id)
    jobs = reads.run_jobs(conn, run_id)
    key_of = {j["id"]: j["key"] for j in jobs}
    parents: dict[str, list[str]] = defaultdict(list)
    for p, c in reads.run_edges(conn, run_id):
        pk, ck = key_of.get(p), key_of.get(c)
        if pk is not None and ck is not None:
            parents[ck].append(pk)
    durations = {j["key"]: max(0.0, j.pop("run_s") or 0.0) for j in jobs}
    path = dag.critical_path(durations, parents)
    on_path = set(path.keys)
    counts: dict[str, int] = defaultdict(int)
    for j in jobs:
        key = j["key"]
        j["parents"] = sorted(parents.get(key, ()))
        j["duration_s"] = round(durations[key], 3)
        j["slack_s"] = round(path.slack.get(key, 0.0), 3)
        j["critical"] = key in on_path
        if j["last_error"]:
            j["last_error"] = redaction.redact_text(j["last_error"])
        counts[j["state"]] += 1
    run["jobs"] = jobs
    run["counts"] = dict(sorted(counts.items()))
    run["critical_path"] = {"keys": path.keys, "seconds": round(path.seconds, 3)}
    run["link"] = run_link(run_id)
    return run


def run_graph(conn: sa.Connection, principal: Principal, run_id: int) -> nx.DiGraph:
    """The run as a networkx DiGraph: nodes are keys (with id, job_type, state, attempt,
    trigger_rule, duration_s, critical, generation), edges point from parent to child."""
    run = get_run(conn, principal, run_id)
    return graph_of(run)


def graph_of(run: dict[str, Any]) -> nx.DiGraph:
    g: nx.DiGraph = nx.DiGraph(run_id=run["id"], name=run["name"], state=run["state"])
    for j in run["jobs"]:
        g.add_node(
            j["key"],
            id=j["id"],
            job_type=j["job_type"],
            state=j["state"],
            attempt=j["attempt"],
            trigger_rule=j["trigger_rule"],
            duration_s=j["duration_s"],
            critical=j["critical"],
            wait_reason=j["wait_reason"],
        )
    for j in run["jobs"]:
        for p in j["parents"]:
            g.add_edge(p, j["key"])
    for n, generation in enumerate(nx.topological_generations(g)):
        for key in generation:
            g.nodes[key]["generation"] = n
    return g


def graph_json(g: nx.DiGraph) -> dict[str, Any]:
    """Node-link JSON (networkx's format, `edges` as the link key)."""
    data: dict[str, Any] = nx.node_link_data(g, edges="edges")
    return data


def _dot_id(value: object) -> str:
    """A DOT string: quoted, with backslashes, quotes and newlines escaped."""
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return '"' + text + '"'


def graph_dot(g: nx.DiGraph) -> str:
    """Graphviz DOT, nodes labelled with key and state, the critical path in bold."""
    lines = [f"digraph {_dot_id('run ' + str(g.graph.get('run_id')))} {{", "  rankdir=LR;"]
    for key, attrs in g.nodes(data=True):
        label = _dot_id(f"{key}\n{attrs.get('job_type')}\n{attrs.get('state')}")
        style = ", penwidth=3" if attrs.get("critical") else ""
        lines.append(f"  {_dot_id(key)} [label={label}{style}];")
    for p, c in g.edges():
        bold = g.nodes[p].get("critical") and g.nodes[c].get("critical")
        lines.append(f"  {_dot_id(p)} -> {_dot_id(c)}{' [penwidth=3]' if bold else ''};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def run_timeline(conn: sa.Connection, principal: Principal, run_id: int) -> dict[str, Any]:
    """The Gantt's data: per current job its segments (waiting with the reason, running,
    retry back-off; the last one open until now for a job still going), from the ledger's
    history, plus the critical path and slack of get_run."""
    run = get_run(conn, principal, run_id)
    rows = reads.run_history(conn, run_id, MAX_TIMELINE_ROWS)
    by_job: dict[int, list[tuple[float, str, str | None, int]]] = defaultdict(list)
    for h in rows:
        by_job[int(h["job_id"])].append((h["at"].timestamp(), h["to_state"], h["wait_reason"], int(h["attempt"])))
    now = dt.datetime.now(dt.UTC).timestamp()
    out = []
    for j in run["jobs"]:
        segs = dag.segments(by_job.get(int(j["id"]), []), now)
        out.append(
            {
                "key": j["key"],
                "id": j["id"],
                "state": j["state"],
                "critical": j["critical"],
                "slack_s": j["slack_s"],
                "segments": [
                    {
                        "kind": s.kind,
                        "start": dt.datetime.fromtimestamp(s.start, dt.UTC).isoformat(),
                        "end": dt.datetime.fromtimestamp(s.end, dt.UTC).isoformat(),
                        "reason": s.reason,
                        "attempt": s.attempt,
                    }
                    for s in segs
                ],
            }
        )
    return {
        "run": {k: v for k, v in run.items() if k != "jobs"},
        "jobs": out,
        "truncated": len(rows) >= MAX_TIMELINE_ROWS,
    }


def runs_overview(conn: sa.Connection, principal: Principal, *, tenant: str | None = None) -> dict[str, Any]:
    """Runs running now, failed in the last hour, and the p95 duration of runs that ended in
    the last day (None when none did)."""
    row = plain(reads.overview(conn, visible(principal, tenant)))
    p95 = row["p95_duration_s"]
    return {
        "running": int(row["running"]),
        "failed_1h": int(row["failed_1h"]),
        "finished_24h": int(row["finished_24h"]),
        "p95_duration_s": None if p95 is None else round(float(p95), 3),
    }
