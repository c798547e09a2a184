"""Jobs: filter by tenant, state, job type and time range; a selected job's history timeline,
attempts, why it waits and until when, progress, logs, artifacts, provenance and (masked)
payload; Cancel and Retry."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
import streamlit as st

from app import charts, common, labels
from core import queries
from core.domain.states import TERMINAL, State

#: States a cancel applies to (a running job is asked to stop).
CANCELABLE = {State.PENDING, State.QUEUED, State.THROTTLED, State.RETRYING, State.LEASED, State.RUNNING}
#: States a retry applies to: due now (retrying) or replayed as a new job.
RETRYABLE = {State.RETRYING, State.DEAD_LETTERED, State.CANCELED, State.UPSTREAM_FAILED}
LIMITS = [50, 200, 1000, 5000]

session = common.page("Jobs")
principal = session.principal

cols = st.columns([2, 2, 2, 2, 1])
with cols[0]:
    tenant = common.tenant_filter(session, key="jobs_tenant")
with cols[1]:
    state_choice = st.selectbox(
        "State", [labels.ALL, *(s.value for s in State)], format_func=labels.state_label, key="jobs_state"
    )
with cols[2]:
    job_type = common.job_type_filter(session, key="jobs_type")
with cols[3]:
    range_s = common.time_range(key="jobs_range", label="Created")
with cols[4]:
    limit = st.selectbox("Newest", LIMITS, index=1, key="jobs_limit")
state = None if state_choice == labels.ALL else str(state_choice)


def _job_list(conn: sa.Connection) -> list[dict[str, Any]]:
    return queries.list_jobs(
        conn, principal, tenant=tenant, state=state, job_type=job_type, limit=int(limit), since_s=range_s
    )


def _job_label(job: dict[str, Any]) -> str:
    return f"{job['id']} · {job['tenant']} · {job['job_type']} · {labels.state_label(job['state'])}"


def _detail(conn: sa.Connection, job_id: int) -> None:
    job = queries.get_job(conn, principal, job_id)
    history = queries.job_history(conn, principal, job_id)
    logs = queries.job_logs(conn, principal, job_id)
    artifacts = queries.job_artifacts(conn, principal, job_id)
    job_state = State(job["state"])

    st.subheader(f"Job {job['id']}: {job['job_type']}")
    top = st.columns(4)
    top[0].metric("State", labels.state_label(job_state))
    top[1].metric("Attempts", f"{job['attempt']} / {job['max_attempts']}")
    top[2].metric("Tenant", job["tenant"])
    top[3].metric("Queue", job["queue"])
    if job_state == State.THROTTLED and job["wait_reason"]:
        st.info(labels.wait_text(job["wait_reason"], job["not_before"], common.now()))
    elif job_state == State.RETRYING and job["not_before"]:
        st.info(labels.wait_text("retrying", job["not_before"], common.now()))
    if job["cancel_requested"] and job_state not in TERMINAL:
        st.warning("Cancellation requested: the handler stops at its next check.")
    if job["last_error"]:
        st.error(f"Last error ({job['error_class'] or 'unknown'}): {job['last_error']}")
    progress = float(job["progress"] or 0.0)
    st.progress(min(max(progress, 0.0), 1.0), text=f"Progress {progress:.0%} {job['progress_message'] or ''}".strip())

    actions = st.columns(2)
    with actions[0]:
        common.action_button(
            session,
            labels.CANCEL,
            common.Action("cancel", (job_id,), f"Cancel job {job_id}", tenant=job["tenant"]),
            key=f"jobs_cancel_{job_id}",
            blocked=None
            if job_state in CANCELABLE and not job["cancel_requested"]
            else f"Job {job_id} is {labels.state_label(job_state).lower()}: nothing to cancel.",
        )
    with actions[1]:
        title = f"Retry job {job_id}" if job_state == State.RETRYING else f"Replay job {job_id}"
        common.action_button(
            session,
            labels.RETRY,
            common.Action("retry", (job_id,), title, tenant=job["tenant"]),
            key=f"jobs_retry_{job_id}",
            blocked=None
            if job_state in RETRYABLE
            else f"Job {job_id} is {labels.state_label(job_state).lower()}: only retrying, dead-lettered, "
            "canceled or upstream-failed jobs are retried.",
        )

    now = common.now()
    common.chart(
        charts.history_timeline(history, now),
        title="State history",
        empty=labels.no_data("history"),
        key=f"jobs_timeline_{job_id}",
    )
    st.dataframe(
        labels.table(
            (
                {
                    "at": h["at"],
                    "from": labels.state_label(h["from_state"]),
                    "to": labels.state_label(h["to_state"]),
                    "event": h["event"],
                    "attempt": h["attempt"],
                    "actor": h["actor"],
                    "reason": h["reason"],
                }
                for h in history
            ),
            now=now,
            times=("at",),
        ),
        hide_index=True,
        key=f"jobs_history_{job_id}",
    )

    left, right = st.columns(2)
    with left:
        st.markdown("**Provenance**")
        st.markdown(
            f"- correlation id: `{labels.cell(job['correlation_id'])}`\n"
            f"- run: `{labels.cell(job['run_id'])}`\n"
            f"- replay of: `{labels.cell(job['replay_of'])}`\n"
            f"- idempotency key: `{labels.cell(job['idempotency_key'])}`\n"
            f"- source: `{labels.cell(job['source'])}`\n"
            f"- created {labels.moment(job['created_at'], now)}\n"
            f"- started {labels.moment(job['started_at'], now)}\n"
            f"- finished {labels.moment(job['finished_at'], now)}"
        )
        st.markdown("**Payload** (secrets masked)")
        st.json(job["payload"], expanded=True)
    with right:
        st.markdown(f"**Artifacts** ({len(artifacts)})")
        if artifacts:
            st.dataframe(
                labels.table(
                    (
                        {
                            "name": a["name"],
                            "media type": a["media_type"],
                            "bytes": a["size_bytes"],
                            "sha256": a["sha256"],
                            "attempt": a["attempt"],
                            "created": a["created_at"],
                        }
                        for a in artifacts
                    ),
                    now=now,
                    times=("created",),
                ),
                hide_index=True,
                key=f"jobs_artifacts_{job_id}",
            )
        st.markdown(f"**Log** ({len(logs)} lines)")
        if logs:
            lines = (f"{labels.utc(r['at'])} [{r['attempt']}] {r['level']}: {r['message']}" for r in logs)
            st.code("\n".join(lines), language=None)


def _render(conn: sa.Connection) -> None:
    jobs = _job_list(conn)
    st.caption(f"{len(jobs)} jobs (newest {limit} matching the filters, created in the range).")
    if not jobs:
        st.info("No jobs match the filters.")
        return
    st.dataframe(
        labels.table(
            (
                {
                    "id": j["id"],
                    "tenant": j["tenant"],
                    "job type": j["job_type"],
                    "queue": j["queue"],
                    "state": labels.state_label(j["state"]),
                    "attempt": f"{j['attempt']} / {j['max_attempts']}",
                    "error": j["error_class"],
                    "waits for": labels.WAIT_SHORT.get(j["wait_reason"], j["wait_reason"])
                    if j["state"] == State.THROTTLED
                    else None,
                    "updated": j["updated_at"],
                }
                for j in jobs
            ),
            now=common.now(),
            times=("updated",),
        ),
        hide_index=True,
        key="jobs_table",
    )
    ids = [j["id"] for j in jobs]
    by_id = {j["id"]: j for j in jobs}
    selected = st.selectbox(
        "Job",
        [None, *ids],
        format_func=lambda i: "Select a job for its detail" if i is None else _job_label(by_id[i]),
        key="jobs_selected",
    )
    if selected is not None:
        _detail(conn, int(selected))


@st.fragment(run_every=labels.REFRESH_S)
def live() -> None:
    with common.shown_errors(), session.engine.connect() as conn:
        _render(conn)


live()
