"""Schedules: every schedule (by tenant) with its trigger, time zone, overlap and catch-up
policies, pause state and next fire; a chosen schedule's next fire times in its local time
and in UTC, its recent ticks with their outcomes (the job or run each created), and Pause,
Resume (optionally firing the caught-up ticks) and Trigger now."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
import streamlit as st

from app import common, dag_view, labels
from app import schedule_views as views
from core import queries

#: Next fire times and recent ticks shown for a chosen schedule.
NEXT_FIRES = 10
TICKS = 50
#: A next tick this late means no scheduler is firing the schedule.
OVERDUE_S = 120

session = common.page("Schedules")
principal = session.principal

_pending = views.pending(views.SCHEDULE_KINDS)
if _pending is not None:
    views.confirm(session, _pending)

cols = st.columns([2, 3])
with cols[0]:
    tenant = common.tenant_filter(session, key="schedules_tenant")


def _key(s: dict[str, Any]) -> str:
    return f"{s['tenant']}/{s['name']}"


def _table(rows: list[dict[str, Any]]) -> None:
    st.dataframe(
        views.table(
            [
                {
                    "tenant": s["tenant"],
                    "name": s["name"],
                    "trigger": s["trigger"],
                    "time zone": s["timezone"],
                    "target": views.target_text(s["target_kind"], s["target"]),
                    "overlap": s["overlap"],
                    "catch-up": s["catchup"],
                    "paused": views.yes_no(s["paused"]),
                    "next fire": s["next_fire_at"],
                    "next fire (local)": views.local_time(s["next_fire_at"], s["timezone"]),
                    "last tick": s["last_tick_at"],
                }
                for s in rows
            ],
            times=("next fire", "last tick"),
        ),
        hide_index=True,
        key="schedules_table",
    )


def _buttons(s: dict[str, Any]) -> None:
    name, where = _key(s), {"tenant": s["tenant"], "name": s["name"]}
    cols = st.columns(3)
    with cols[0]:
        views.action_button(
            session,
            labels.PAUSE,
            views.ViewAction("pause_schedule", **where),
            key=f"schedules_pause_{s['id']}",
            blocked=f"Schedule {name} is already paused." if s["paused"] else None,
        )
    with cols[1]:
        views.action_button(
            session,
            labels.RESUME,
            views.ViewAction("resume_schedule", **where),
            key=f"schedules_resume_{s['id']}",
            blocked=None if s["paused"] else f"Schedule {name} is not paused.",
        )
    with cols[2]:
        views.action_button(
            session,
            views.TRIGGER_NOW,
            views.ViewAction("trigger_schedule", **where),
            key=f"schedules_trigger_{s['id']}",
            blocked=None,
        )


def _next_fires(s: dict[str, Any]) -> None:
    zone = s["timezone"]
    st.markdown(f"**Next fire times** (local time is {zone})")
    if not s["next_fires"]:
        st.info("No next fire: the schedule has reached its end." if s["end_at"] else "No next fire.")
        return
    st.dataframe(
        views.table(
            [{"fires": f["utc"], f"local ({zone})": views.local_time(f["local"], zone)} for f in s["next_fires"]],
            times=("fires",),
        ),
        hide_index=True,
        key=f"schedules_next_{s['id']}",
    )


def _work_state(t: dict[str, Any]) -> str | None:
    """The state of the job or run a tick created, now."""
    if t["work_state"] is None:
        return None
    return dag_view.run_state_label(t["work_state"]) if t["run_id"] is not None else labels.state_label(t["work_state"])


def _tick_rows(ticks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = views.table(
        [
            {
                "scheduled for": t["scheduled_for"],
                "data interval (UTC)": views.span(t["interval_start"], t["scheduled_for"]),
                "status": views.tick_cell(t["status"]),
                "manual": views.yes_no(t["manual"]),
                "job": t["job_id"],
                "work state": _work_state(t),
                "note": t["note"],
                "backfill": t["backfill_id"],
                "fired": t["fired_at"],
            }
            for t in ticks
        ],
        times=("scheduled for", "fired"),
    )
    # The run a tick created opens the Runs page's view of it (an empty cell: none).
    for row, t in zip(rows, ticks, strict=True):
        row["run"] = queries.run_link(int(t["run_id"])) if t["run_id"] is not None else ""
    return rows


def _ticks(s: dict[str, Any]) -> None:
    ticks = s["ticks"]
    counts = ", ".join(f"{views.TICK_STATUS.get(k, (k, ''))[0]} {n}" for k, n in sorted(s["tick_counts"].items()))
    st.markdown(f"**Recent ticks** (newest {TICKS}; all ticks on record: {counts or 'none yet'})")
    if not ticks:
        st.info("No tick yet: the first is recorded when it is due.")
        return
    st.dataframe(
        _tick_rows(ticks),
        hide_index=True,
        key=f"schedules_ticks_{s['id']}",
        column_config={"run": st.column_config.LinkColumn("run", display_text=r"run=(\d+)")},
    )
    st.caption(views.TICK_HELP)


def _last_firing(s: dict[str, Any]) -> None:
    if s["last_run_id"] is not None:
        run_id = int(s["last_run_id"])
        st.page_link(
            "pages/7_Runs.py",
            label=f"Last firing: run {run_id} (its graph and timeline on the Runs page)",
            query_params={"run": str(run_id)},
            icon=":material/account_tree:",
        )
    elif s["last_job_id"] is not None:
        st.caption(f"Last firing: job {s['last_job_id']}. Its logs, artifacts and history: on the Jobs page.")
        st.page_link("pages/1_Jobs.py", label="Jobs", icon=":material/list:")


def _detail(conn: sa.Connection, row: dict[str, Any]) -> None:
    s = queries.get_schedule(conn, principal, row["tenant"], row["name"], ticks=TICKS, next_n=NEXT_FIRES)
    now = common.now()
    st.subheader(f"{_key(s)}: {s['trigger']}")
    st.badge("Paused" if s["paused"] else "Active", color="gray" if s["paused"] else "green")
    top = st.columns(5)
    top[0].metric("Next fire", labels.ago(s["next_fires"][0]["utc"], now) if s["next_fires"] else labels.DASH)
    top[1].metric("Time zone", s["timezone"])
    top[2].metric("Overlap", s["overlap"], help=views.OVERLAP_LABELS.get(s["overlap"]))
    top[3].metric("Catch-up", s["catchup"], help=views.CATCHUP_LABELS.get(s["catchup"]))
    top[4].metric("Buffered ticks", s["buffered"], help="Ticks waiting for the previous firing to end.")
    st.caption(
        f"Fires {views.target_text(s['target_kind'], s['target'])} · overlap: "
        f"{views.OVERLAP_LABELS.get(s['overlap'], s['overlap']).lower()} · catch-up: "
        f"{views.CATCHUP_LABELS.get(s['catchup'], s['catchup']).lower()} (window "
        f"{views.seconds_text(s['catchup_window_s'])}, at most {s['max_catchup']} late ticks) · starts "
        f"{labels.moment(s['start_at'], now)} · ends {labels.moment(s['end_at'], now)} · added by "
        f"{s['created_by']} {labels.ago(s['created_at'], now)}"
    )
    due = labels.timestamp(s["next_fire_at"])
    if due is not None and (now - due).total_seconds() > OVERDUE_S:
        st.warning(
            f"Its next tick was due {labels.ago(due, now)} and is not recorded yet: is a scheduler running "
            "(`orch scheduler`)? The catch-up policy decides about late ticks when one is."
        )
    if s["paused"]:
        st.warning(
            f"Paused since {labels.moment(s['paused_at'], now)}: its ticks are recorded paused until it is resumed."
        )
    _buttons(s)
    _last_firing(s)
    left, right = st.columns([1, 2])
    with left:
        _next_fires(s)
        with st.expander("What it fires (secrets masked)"):
            st.json(views.masked(s["target"]), expanded=True)
    with right:
        _ticks(s)


def _render(conn: sa.Connection) -> None:
    rows = queries.list_schedules(conn, principal, tenant=tenant)
    if not rows:
        st.info("No schedules. Add one with `orch schedules add`.")
        return
    paused = sum(1 for s in rows if s["paused"])
    st.caption(f"{len(rows)} schedules, {paused} paused. Times are UTC unless a column says local.")
    _table(rows)
    by_key = {_key(s): s for s in rows}
    selected = st.selectbox(
        "Schedule",
        [None, *by_key],
        format_func=lambda k: "Choose a schedule for its next fire times and ticks" if k is None else k,
        key="schedules_selected",
    )
    if selected is not None and selected in by_key:
        _detail(conn, by_key[str(selected)])


@st.fragment(run_every=labels.REFRESH_S)
def live() -> None:
    with common.shown_errors(), session.engine.connect() as conn:
        _render(conn)


live()
