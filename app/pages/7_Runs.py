"""Runs: DAG runs filtered by tenant, state and name, with progress and duration; a run's view
(?run=42, or chosen in the table): its graph of jobs by generation and its Gantt timeline, both
with the critical path marked, a chosen job's detail, and Cancel run / Replay failed part."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa
import streamlit as st

from app import common, dag_view, gantt_view, labels
from core import control, queries
from core.domain import dag, errors
from core.domain.auth import Scope

LIMITS = [50, 200, 1000]
CANCEL_RUN = "Cancel run"
REPLAY_RUN = "Replay failed part"
#: Keys named one by one in a replay's plan and outcome.
SHOWN_KEYS = 40
#: A timeline taller than this scrolls in a box of this height.
GANTT_BOX_PX = 1000
PENDING_KEY = "runs_pending_action"
SELECTED_KEY = "runs_selected"
#: The ?run= value the selection last followed, so a new one in the address wins once.
FOLLOWED_KEY = "runs_followed_param"
TABLE_KEY = "runs_table"
TABLE_IDS_KEY = "runs_table_ids"


@dataclass(frozen=True)
class RunAction:
    """Cancel or replay a run, once the operator confirms with a reason."""

    kind: Literal["cancel", "replay"]
    run_id: int
    tenant: str
    nonce: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    @property
    def title(self) -> str:
        return (
            f"{CANCEL_RUN} {self.run_id}" if self.kind == "cancel" else f"Replay the failed part of run {self.run_id}"
        )


session = common.page("Runs")
principal = session.principal


def _keys(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOWN_KEYS])
    return shown + (f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else "") if keys else labels.DASH


def _close_dialog() -> None:
    st.session_state.pop(PENDING_KEY, None)


def _perform(action: RunAction, reason: str, ticket: str | None) -> tuple[str, str]:
    """Cancel or replay through core.control; (kind, message). Raises InvalidInput (a missing
    reason) before anything changed, so the dialog can ask again."""
    try:
        if action.kind == "cancel":
            done = control.cancel_run(session.engine, principal, action.run_id, reason=reason, ticket=ticket)
            return "success", (
                f"{action.title}: {done.canceled} waiting jobs canceled, {done.cancel_requested} running jobs asked "
                f"to stop; the run is {dag_view.run_state_label(done.state).lower()}."
            )
        plan = control.replay_run(
            session.engine, principal, action.run_id, control.NoDoorbell(), reason=reason, ticket=ticket
        )
    except errors.InvalidInput:
        raise
    except common.ACTION_FAILURES as exc:
        return common.failed(action.title, exc)
    return "success", (
        f"{action.title}: attempt {plan.attempt}, {len(plan.new_jobs)} new jobs ({_keys(sorted(plan.new_jobs))}); "
        f"{len(plan.kept)} jobs kept."
    )


@st.dialog(labels.DIALOG_TITLE, on_dismiss=_close_dialog)
def _confirm(action: RunAction) -> None:
    st.markdown(f"**{action.title}**")
    st.caption(f"Acting as {principal.subject}. The action and its reason are written to the audit log.")
    if action.kind == "replay":
        try:
            plan = control.replay_run(
                session.engine, principal, action.run_id, control.NoDoorbell(), dry_run=True, reason=None
            )
        except errors.OrchError as exc:
            st.error(f"{action.title}: {exc}")
        else:
            st.markdown(f"**Will run again** ({len(plan.to_run)}): {_keys(plan.to_run)}")
            st.markdown(f"**Kept** ({len(plan.kept)}, their results are read again): {_keys(plan.kept)}")
    else:
        st.markdown("Waiting jobs are canceled now; running ones are asked to stop at their next check.")
    reason = st.text_input(labels.REASON_LABEL, max_chars=control.MAX_REASON, key=f"runs_reason_{action.nonce}")
    ticket = st.text_input(labels.TICKET_LABEL, max_chars=control.MAX_TICKET, key=f"runs_ticket_{action.nonce}")
    left, right = st.columns(2)
    confirmed = left.button(labels.CONFIRM, type="primary", key=f"runs_confirm_{action.nonce}")
    if right.button(labels.BACK, key=f"runs_back_{action.nonce}"):
        _close_dialog()
        st.rerun()
    if confirmed:
        try:
            outcome = _perform(action, reason, ticket.strip() or None)
        except errors.InvalidInput as exc:
            st.error(str(exc))
            return
        st.session_state[common.OUTCOME_KEY] = outcome
        _close_dialog()
        st.rerun()


# Kept as a plain dict: a class of this script is a new class on every rerun.
pending = st.session_state.get(PENDING_KEY)
if isinstance(pending, dict) and pending.get("kind") in ("cancel", "replay"):
    _confirm(RunAction(pending["kind"], int(pending["run_id"]), str(pending["tenant"]), str(pending["nonce"])))

cols = st.columns([2, 2, 3, 1])
with cols[0]:
    tenant = common.tenant_filter(session, key="runs_tenant")
with cols[1]:
    state_choice = st.selectbox(
        "State", [labels.ALL, *dag.RUN_STATES], format_func=dag_view.run_state_label, key="runs_state"
    )
with cols[2]:
    name = st.text_input("Name contains", key="runs_name").strip() or None
with cols[3]:
    limit = st.selectbox("Newest", LIMITS, index=0, key="runs_limit")
state = None if state_choice == labels.ALL else str(state_choice)


def _param_run() -> int | None:
    raw = st.query_params.get("run")
    try:
        return int(raw) if raw else None
    except ValueError:
        return None


def _follow_address() -> None:
    """A ?run= the selection has not followed yet (a link opened) selects that run."""
    wanted = _param_run()
    if st.session_state.get(FOLLOWED_KEY, "unset") != wanted:
        st.session_state[FOLLOWED_KEY] = wanted
        st.session_state[SELECTED_KEY] = wanted


def _show_in_address(run_id: int | None) -> None:
    st.session_state[FOLLOWED_KEY] = run_id
    if run_id is None:
        st.query_params.pop("run", None)
    else:
        st.query_params["run"] = str(run_id)


def _picked_run() -> None:
    _show_in_address(st.session_state.get(SELECTED_KEY))


def _picked_row() -> None:
    """A row chosen in the table selects its run."""
    rows = st.session_state[TABLE_KEY].selection.rows
    ids = st.session_state.get(TABLE_IDS_KEY, [])
    if rows and rows[0] < len(ids):
        st.session_state[SELECTED_KEY] = ids[rows[0]]
        _show_in_address(ids[rows[0]])


def _progress(r: dict[str, Any]) -> str:
    return f"{r['jobs_done']} / {r['jobs_total']}"


def _overview(conn: sa.Connection) -> None:
    o = queries.runs_overview(conn, principal, tenant=tenant)
    m = st.columns(4)
    m[0].metric("Running", o["running"])
    m[1].metric("Failed (last hour)", o["failed_1h"])
    m[2].metric("Finished (last day)", o["finished_24h"])
    m[3].metric("p95 duration (last day)", dag_view.seconds(o["p95_duration_s"]))


def _table(runs: list[dict[str, Any]]) -> None:
    now = common.now()
    st.session_state[TABLE_IDS_KEY] = [int(r["id"]) for r in runs]
    st.dataframe(
        labels.table(
            (
                {
                    "id": r["id"],
                    "state": dag_view.run_state_label(r["state"]),
                    "name": r["name"],
                    "tenant": r["tenant"],
                    "started": r["started_at"],
                    "duration": dag_view.seconds(r["duration_s"]),
                    "progress": _progress(r),
                    "attempt": r["attempt"],
                }
                for r in runs
            ),
            now=now,
            times=("started",),
        ),
        hide_index=True,
        key=TABLE_KEY,
        on_select=_picked_row,
        selection_mode="single-row",
    )


def _header(run: dict[str, Any]) -> None:
    st.subheader(f"Run {run['id']}: {run['name']}")
    m = st.columns(5)
    m[0].metric("State", dag_view.run_state_label(run["state"]))
    m[1].metric("Progress", _progress(run), help="Jobs ended of all the run's current jobs.")
    m[2].metric("Duration", dag_view.seconds(run["duration_s"]))
    m[3].metric("Attempt", run["attempt"], help="1 + how often the run was replayed.")
    path = run["critical_path"]
    m[4].metric("Critical path", dag_view.seconds(path["seconds"]), help="The longest chain of jobs by run time.")
    counts = ", ".join(f"{labels.state_label(s)} {n}" for s, n in run["counts"].items())
    st.caption(
        f"Tenant {run['tenant']} · started {labels.moment(run['started_at'], common.now())}"
        f" · finished {labels.moment(run['finished_at'], common.now())} · jobs: {counts}"
        f" · critical path: {' → '.join(path['keys'][:12])}{' …' if len(path['keys']) > 12 else ''}"
    )


def _action_button(label: str, action: RunAction, blocked: str | None) -> None:
    """Disabled, with the reason shown, without orch:operate on the run's tenant or when the
    action does not apply; control checks both again."""
    why = blocked
    if not principal.can(Scope.OPERATE, action.tenant):
        why = labels.missing_scope(principal.subject, Scope.OPERATE.value)
        if Scope.OPERATE in principal.scopes:
            why = f"{principal.subject} may not act on tenant {action.tenant!r}."
    if st.button(label, key=f"runs_{action.kind}_{action.run_id}", disabled=why is not None, help=why) and why is None:
        st.session_state[PENDING_KEY] = dataclasses.asdict(action)
        st.rerun()
    if why is not None:
        st.caption(why)


def _is(state: str, cancel_requested: bool) -> str:
    """ "is running", "has failed": a run's state in a sentence."""
    if state == "running":
        return "is being canceled" if cancel_requested else "is running"
    return {"succeeded": "has succeeded", "failed": "has failed", "canceled": "was canceled"}.get(state, f"is {state}")


def _actions(run: dict[str, Any]) -> None:
    run_id, state = int(run["id"]), run["state"]
    left, right, _ = st.columns([1, 1, 3])
    with left:
        _action_button(
            CANCEL_RUN,
            RunAction("cancel", run_id, run["tenant"]),
            None
            if state == "running" and not run["cancel_requested"]
            else f"Run {run_id} {_is(state, run['cancel_requested'])}: only a running run can be canceled.",
        )
    with right:
        _action_button(
            REPLAY_RUN,
            RunAction("replay", run_id, run["tenant"]),
            None
            if state in ("failed", "canceled")
            else f"Run {run_id} {_is(state, run['cancel_requested'])}: only a failed or canceled run can be replayed.",
        )


def _dag(run: dict[str, Any], job_key: str) -> None:
    g = queries.graph_of(run)
    drawing = dag_view.dag_figure(g, run["critical_path"]["keys"])
    if drawing.grouped:
        st.info(
            f"This run has {g.number_of_nodes()} jobs, more than {dag_view.GROUP_OVER}: each node is the jobs of one "
            "generation and job type (counts by state in its hover). Choose a node for its most notable job, or "
            "pick any job below."
        )
    event = st.plotly_chart(
        drawing.figure, key=f"runs_dag_{run['id']}", on_select="rerun", selection_mode="points", width="stretch"
    )
    st.caption(
        "Left to right by generation (a job's parents are all to its left); the critical path is drawn thick in "
        "violet with outlined nodes. Click a node for its detail."
    )
    picked = _node_pick(event, drawing, g)
    seen_key = f"runs_dag_seen_{run['id']}"
    if picked is None:
        st.session_state.pop(seen_key, None)  # so clicking the same node again opens it again
    elif st.session_state.get(seen_key) != picked:
        st.session_state[seen_key] = picked
        st.session_state[job_key] = picked


def _node_pick(event: Any, drawing: dag_view.DagDrawing, g: Any) -> str | None:
    points = event.get("selection", {}).get("points", []) if event else []
    for p in points:
        name = p.get("customdata")
        if isinstance(name, list):
            name = name[0] if name else None
        if name is None:
            continue
        if drawing.grouped:
            keys = drawing.members.get(str(name))
            if keys:
                return str(dag_view.notable(g, keys))
        elif name in g:
            return str(name)
    return None


def _detail(conn: sa.Connection, run: dict[str, Any], job_key: str) -> None:
    jobs = {j["key"]: j for j in run["jobs"]}
    order = sorted(jobs, key=lambda k: (not jobs[k]["critical"], k))
    g = queries.graph_of(run)
    if job_key not in st.session_state and jobs:
        # A run opened shows its most notable job at once, when one failed or waits.
        first = dag_view.notable(g, jobs)
        st.session_state[job_key] = first if jobs[first]["state"] != "succeeded" else None
    st.selectbox(
        "Job",
        [None, *order],
        format_func=lambda k: (
            "Choose a job (or click a node)"
            if k is None
            else f"{k} · {labels.state_label(jobs[k]['state'])}" + (" · critical" if jobs[k]["critical"] else "")
        ),
        key=job_key,
    )
    key = st.session_state.get(job_key)
    if key is None or key not in jobs:
        return
    j = jobs[key]
    job = queries.get_job(conn, principal, int(j["id"]))
    now = common.now()
    st.markdown(f"**{key}** · job {job['id']} · `{job['job_type']}`")
    st.badge(labels.state_label(job["state"]), color=dag_view.STATE_BADGES.get(job["state"], "gray"))
    why = dag_view.why_waiting(g, key)
    if job["state"] == "throttled" and job["wait_reason"]:
        st.info(labels.wait_text(job["wait_reason"], job["not_before"], now))
    elif job["state"] == "retrying" and job["not_before"]:
        st.info(labels.wait_text("retrying", job["not_before"], now))
    elif why:
        st.info(why[:1].upper() + why[1:] + ".")
    if job["last_error"]:
        st.error(f"Last error ({job['error_class'] or 'unknown'}): {job['last_error']}")
    st.markdown(
        f"- attempts: {job['attempt']} / {job['max_attempts']}\n"
        f"- run time: {dag_view.seconds(j['duration_s'])}; slack: {dag_view.seconds(j['slack_s'])}\n"
        f"- trigger rule: `{j['trigger_rule']}`{' (may fail)' if j['allow_failure'] else ''}\n"
        f"- parents: {', '.join(j['parents']) or labels.DASH}\n"
        f"- replay of: {labels.cell(j['replay_of'])}\n"
        f"- started {labels.moment(job['started_at'], now)}\n"
        f"- finished {labels.moment(job['finished_at'], now)}"
    )
    st.caption(f"Logs, artifacts and history: job {job['id']} on the Jobs page.")
    with st.expander("Payload (secrets masked)"):
        st.json(job["payload"], expanded=True)


def _gantt(conn: sa.Connection, run: dict[str, Any]) -> None:
    timeline = queries.run_timeline(conn, principal, int(run["id"]))
    parents = {j["key"]: j["parents"] for j in run["jobs"]}
    drawing = gantt_view.gantt_figure(timeline, now=common.now(), parents=parents)
    if drawing.omitted:
        st.info(
            f"The timeline shows {len(drawing.keys)} of the run's {len(timeline['jobs'])} jobs: those on the "
            "critical path, then those with least slack."
        )
    if timeline.get("truncated"):
        st.warning("The run's history is longer than a timeline reads: the latest segments are missing.")
    height = int(drawing.figure.layout.height or 0)
    # A tall timeline scrolls in its own box, so the page stays short.
    box = st.container(height=GANTT_BOX_PX) if height > GANTT_BOX_PX else st.container()
    with box:
        st.plotly_chart(drawing.figure, key=f"runs_gantt_{run['id']}", width="stretch")
    st.caption(
        "Bold rows are the critical path (bars outlined); the thin violet bar after a job is its slack, how much "
        "later it could have ended without delaying the run. Hover a bar for why a job waited."
    )


def _run_view(conn: sa.Connection, run_id: int) -> None:
    run = queries.get_run(conn, principal, run_id)
    _header(run)
    _actions(run)
    job_key = f"runs_job_{run_id}"
    left, right = st.columns([3, 1])
    with left:
        _dag(run, job_key)
    with right:
        _detail(conn, run, job_key)
    _gantt(conn, run)


def _render(conn: sa.Connection) -> None:
    _overview(conn)
    runs = queries.list_runs(conn, principal, tenant=tenant, state=state, name=name, limit=int(limit))
    st.caption(f"{len(runs)} runs (newest {limit} matching the filters). Choose a row for the run's view.")
    if runs:
        _table(runs)
    else:
        st.info("No runs match the filters.")
    by_id = {int(r["id"]): r for r in runs}
    _follow_address()
    chosen = st.session_state.get(SELECTED_KEY)
    options: list[int | None] = [None, *by_id]
    if chosen is not None and chosen not in by_id:
        options.append(int(chosen))
    st.selectbox(
        "Run",
        options,
        format_func=lambda i: (
            "Choose a run for its graph and timeline"
            if i is None
            else f"{i} · {by_id[i]['name']} · {by_id[i]['tenant']} · {dag_view.run_state_label(by_id[i]['state'])}"
            if i in by_id
            else f"run {i}"
        ),
        key=SELECTED_KEY,
        on_change=_picked_run,
    )
    if chosen is not None:
        _run_view(conn, int(chosen))


@st.fragment(run_every=labels.REFRESH_S)
def live() -> None:
    with common.shown_errors(), session.engine.connect() as conn:
        _render(conn)


live()
