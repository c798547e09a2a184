"""Backfills: a form for a new backfill (tenant, source, job type, payload, range, window,
what to reprocess, max active, pause above, reason and ticket) with a dry-run preview of
which windows run and which are skipped and why, then Create; every backfill with its
progress, state and why it waits; a chosen backfill's windows, with Pause, Resume and
Cancel (optionally terminating the running windows)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import sqlalchemy as sa
import streamlit as st

from app import common, labels
from app import schedule_views as views
from core import control, queries
from core.domain import errors
from core.domain.auth import Scope
from core.domain.schedules import parse_duration

LIMITS = [50, 100, 500]
#: Windows listed for a chosen backfill, in event-time order.
WINDOW_ROWS = 200
NO_SOURCE = "(no source)"
FORM = "backfills_new"
PREVIEW_KEY = "backfills_preview"
SELECTED_KEY = "backfills_selected"
TIME_HELP = "UTC unless a zone is given: 2026-12-01 00:00 or 2026-12-01T00:00:00+01:00."

session = common.page("Backfills")
principal = session.principal

_pending = views.pending(views.BACKFILL_KINDS)
if _pending is not None:
    views.confirm(session, _pending)

cols = st.columns([2, 2, 1])
with cols[0]:
    tenant = common.tenant_filter(session, key="backfills_tenant")
with cols[1]:
    state_choice = st.selectbox(
        "State",
        [labels.ALL, *views.BACKFILL_STATES],
        format_func=lambda s: s if s == labels.ALL else views.backfill_state(s)[0],
        key="backfills_state",
    )
with cols[2]:
    limit = st.selectbox("Newest", LIMITS, index=1, key="backfills_limit")
state = None if state_choice == labels.ALL else str(state_choice)


# -- the form ---------------------------------------------------------------------------------


def _names(fetch: Any) -> list[str]:
    with common.shown_errors(), session.engine.connect() as conn:
        return list(fetch(conn))
    return []


def _time(text: str, label: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise errors.InvalidInput(f"{label}: {text!r} is not a time like 2026-12-01 00:00") from None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def _payload(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise errors.InvalidInput(f"payload is not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(value, dict):
        raise errors.InvalidInput('payload must be a JSON object, e.g. {"feed": "nvd"}')
    return value


def _defaults() -> None:
    """The form's first values, fixed when the page first opened (a rerun never changes them)."""
    midnight = common.now().replace(hour=0, minute=0, second=0, microsecond=0)
    st.session_state.setdefault(f"{FORM}_from", f"{midnight - dt.timedelta(days=1):%Y-%m-%d %H:%M}")
    st.session_state.setdefault(f"{FORM}_to", f"{midnight:%Y-%m-%d %H:%M}")
    st.session_state.setdefault(f"{FORM}_window", "1h")
    st.session_state.setdefault(f"{FORM}_payload", "{}")


def _inputs() -> dict[str, Any]:
    """Draw the form's fields; returns what they hold."""
    _defaults()
    tenants = _names(lambda conn: queries.tenants(conn, principal))
    row = st.columns(3)
    chosen = row[0].selectbox("Tenant", tenants, key=f"{FORM}_tenant")
    sources = (
        _names(lambda conn: [s["name"] for s in queries.sources(conn, principal, tenant=chosen)]) if chosen else []
    )
    source = row[1].selectbox("Source", [NO_SOURCE, *sources], key=f"{FORM}_source")
    types = _names(lambda conn: [str(t["name"]) for t in queries.job_types(conn, principal)])
    job_type = row[2].selectbox("Job type", types, key=f"{FORM}_type")
    payload = st.text_area("Payload (JSON object)", key=f"{FORM}_payload", height=80)
    row = st.columns(3)
    start = row[0].text_input("From (UTC, YYYY-MM-DD HH:MM)", key=f"{FORM}_from", help=TIME_HELP)
    end = row[1].text_input("To (UTC, YYYY-MM-DD HH:MM)", key=f"{FORM}_to", help=TIME_HELP)
    window = row[2].text_input("Window (e.g. 1h, 15m, 1d)", key=f"{FORM}_window")
    row = st.columns([2, 1, 1])
    reprocess = row[0].radio(
        "Reprocess",
        list(views.REPROCESS_LABELS),
        format_func=lambda r: views.REPROCESS_LABELS[r],
        key=f"{FORM}_reprocess",
    )
    max_active = row[1].number_input(
        "Max active windows", min_value=1, max_value=1000, value=2, step=1, key=f"{FORM}_max_active"
    )
    pause_above = row[2].number_input(
        "Pause above (live ready jobs)",
        min_value=1,
        value=1000,
        step=1,
        key=f"{FORM}_pause_above",
        help="The backfill pauses on its own while the tenant has more live jobs ready than this.",
    )
    row = st.columns(2)
    reason = row[0].text_input(labels.REASON_LABEL, max_chars=control.MAX_REASON, key=f"{FORM}_reason")
    ticket = row[1].text_input("Ticket (required)", max_chars=control.MAX_TICKET, key=f"{FORM}_ticket")
    return {
        "tenant": chosen,
        "source": None if source == NO_SOURCE else source,
        "job_type": job_type,
        "payload": payload,
        "from": start,
        "to": end,
        "window": window,
        "reprocess": reprocess,
        "max_active": int(max_active),
        "pause_above": int(pause_above),
        "reason": reason,
        "ticket": ticket.strip() or None,
    }


def _spec(i: dict[str, Any]) -> control.BackfillSpec:
    """The backfill the form describes. Raises InvalidInput."""
    if not i["tenant"]:
        raise errors.InvalidInput("choose a tenant")
    if not i["job_type"]:
        raise errors.InvalidInput("choose a job type: none is registered (start a worker that registers it)")
    return control.BackfillSpec(
        tenant=str(i["tenant"]),
        target=control.Target.of_job(str(i["job_type"]), _payload(i["payload"]), source=i["source"]),
        start=_time(i["from"], "From"),
        end=_time(i["to"], "To"),
        window=parse_duration(i["window"], "window"),
        reprocess=str(i["reprocess"]),
        max_active=i["max_active"],
        pause_above=i["pause_above"],
    )


def _fingerprint(i: dict[str, Any]) -> str:
    """What the plan depends on (not the reason or ticket): Create runs what the preview showed."""
    return json.dumps({k: v for k, v in i.items() if k not in ("reason", "ticket")}, sort_keys=True, default=str)


def _show_plan(plan: control.BackfillPlan) -> None:
    m = st.columns(5)
    m[0].metric("Windows", plan.windows)
    m[1].metric("Will run", plan.to_run)
    m[2].metric("Skipped: done", plan.skipped_done)
    m[3].metric("Skipped: failed before", plan.skipped_failed)
    m[4].metric("Skipped: in flight", plan.skipped_in_flight)
    shown = len(plan.preview)
    more = f" (the first {shown} of {plan.windows})" if shown < plan.windows else ""
    st.markdown(f"**Dry run: what each window would do**{more}")
    st.dataframe(
        [
            {
                "window (UTC)": views.span(start, end),
                "decision": views.DECISIONS.get(d, (d, ""))[0],
                "why": views.DECISIONS.get(d, (d, d))[1],
            }
            for start, end, d in plan.preview
        ],
        hide_index=True,
        key="backfills_preview_table",
    )


def _new_backfill() -> None:
    i = _inputs()
    fp = _fingerprint(i)
    why: str | None = None
    if i["tenant"] and not principal.can(Scope.BACKFILL, i["tenant"]):
        why = labels.missing_scope(principal.subject, Scope.BACKFILL.value)
        if Scope.BACKFILL in principal.scopes:
            why = f"{principal.subject} may not backfill tenant {i['tenant']!r}."
    st.caption("The dry run writes nothing; creating the backfill needs a reason and a ticket (both audited).")
    left, right, _ = st.columns([1, 1, 3])
    if left.button(views.PREVIEW, key=f"{FORM}_preview", disabled=why is not None, help=why) and why is None:
        try:
            plan = control.create_backfill(
                session.engine, principal, _spec(i), reason=i["reason"], ticket=i["ticket"], dry_run=True
            )
        except errors.OrchError as exc:
            st.session_state.pop(PREVIEW_KEY, None)
            st.error(f"Preview failed: {labels.tidy(str(exc))}")
        except sa.exc.SQLAlchemyError as exc:
            st.error(f"Preview failed: the ledger is unavailable ({str(exc).splitlines()[0]})")
        else:
            st.session_state[PREVIEW_KEY] = {"fp": fp, "plan": plan}
    previewed = st.session_state.get(PREVIEW_KEY)
    plan: control.BackfillPlan | None = previewed["plan"] if previewed and previewed["fp"] == fp else None
    blocked = why
    if blocked is None and plan is None:
        blocked = "Preview the backfill first (again after a change): Create runs what the dry run showed."
    elif blocked is None and plan is not None and plan.to_run == 0:
        blocked = "Nothing to run: the dry run skips every window."
    elif blocked is None and (not i["reason"].strip() or i["ticket"] is None):
        blocked = "A reason and a ticket are needed to create the backfill."
    created = right.button(
        views.CREATE, key=f"{FORM}_create", type="primary", disabled=blocked is not None, help=blocked
    )
    if created and blocked is None:
        _create(i)
    if blocked is not None:
        st.caption(blocked)
    if plan is not None:
        _show_plan(plan)
    elif previewed:
        st.caption("The form changed since the last dry run: preview again.")


def _create(i: dict[str, Any]) -> None:
    try:
        plan = control.create_backfill(session.engine, principal, _spec(i), reason=i["reason"], ticket=i["ticket"])
    except errors.OrchError as exc:
        st.error(f"Create failed: {labels.tidy(str(exc))}")
        return
    except sa.exc.SQLAlchemyError as exc:
        st.error(f"Create failed: the ledger is unavailable ({str(exc).splitlines()[0]})")
        return
    skipped = plan.skipped_done + plan.skipped_failed + plan.skipped_in_flight
    st.session_state[common.OUTCOME_KEY] = (
        "success",
        f"Backfill {plan.backfill_id} created for {i['tenant']}: {plan.to_run} of {plan.windows} windows to run, "
        f"{skipped} skipped (done {plan.skipped_done}, failed before {plan.skipped_failed}, in flight "
        f"{plan.skipped_in_flight}).",
    )
    st.session_state.pop(PREVIEW_KEY, None)
    st.session_state[SELECTED_KEY] = plan.backfill_id
    st.rerun()


with st.expander("New backfill", expanded=False):
    _new_backfill()


# -- the list -----------------------------------------------------------------------------------


def _table(rows: list[dict[str, Any]]) -> None:
    shown = []
    for b in rows:
        done, _ = views.progress(b["windows"])
        shown.append(
            {
                "id": b["id"],
                "tenant": b["tenant"],
                "source": b["source"],
                "job type": b["job_type"],
                "range (UTC)": views.span(b["range_start"], b["range_end"]),
                "window": views.seconds_text(b["window_s"]),
                "state": views.backfill_state(b["state"])[0],
                "progress": round(done * 100, 1),
                "windows": f"{sum(b['windows'].get(s, 0) for s in views.ENDED)} / {sum(b['windows'].values())}",
                "waits for": b["wait_reason"] if b["state"] not in views.ENDED else None,
                "created": b["created_at"],
                "by": b["created_by"],
                "ticket": b["ticket"],
            }
        )
    st.dataframe(
        views.table(shown, times=("created",)),
        hide_index=True,
        key="backfills_table",
        column_config={
            "progress": st.column_config.ProgressColumn("progress", min_value=0, max_value=100, format="%.0f%%")
        },
    )


def _wait(b: dict[str, Any], now: dt.datetime) -> None:
    """Why the backfill waits, or how it ended."""
    if b["state"] in views.ENDED:
        note = f": {b['wait_reason']}" if b["wait_reason"] else ""
        st.caption(f"Ended {labels.moment(b['finished_at'], now)}{note}.")
    elif b["wait_reason"]:
        st.info(f"Waits: {b['wait_reason']}.")
    elif b["state"] == "planned":
        st.info("Planned: the scheduler's next pass starts its first windows.")


def _buttons(b: dict[str, Any]) -> None:
    bid, ended = int(b["id"]), b["state"] in views.ENDED
    where = {"tenant": b["tenant"], "backfill_id": bid}
    is_ = f"Backfill {bid} is {views.backfill_state(b['state'])[0].lower()}"
    cols = st.columns(3)
    with cols[0]:
        views.action_button(
            session,
            labels.PAUSE,
            views.ViewAction("pause_backfill", **where),
            key=f"backfills_pause_{bid}",
            blocked=f"{is_}: it cannot be paused." if ended or b["operator_paused"] else None,
        )
    with cols[1]:
        views.action_button(
            session,
            labels.RESUME,
            views.ViewAction("resume_backfill", **where),
            key=f"backfills_resume_{bid}",
            blocked=None if b["state"] == "paused" else f"{is_}: only a paused backfill is resumed.",
        )
    with cols[2]:
        views.action_button(
            session,
            views.CANCEL_BACKFILL,
            views.ViewAction("cancel_backfill", **where),
            key=f"backfills_cancel_{bid}",
            blocked=f"{is_}: it has ended." if ended else None,
        )


def _windows(rows: list[dict[str, Any]], bid: int, total: int) -> None:
    st.markdown(f"**Windows** (the first {len(rows)} of {total} in event-time order)")
    shown = views.table(
        [
            {
                "window (UTC)": views.span(w["span_start"], w["span_end"]),
                "state": views.WINDOW_STATES.get(w["state"], w["state"]),
                "job": w["job_id"],
                "started": w["started_at"],
                "finished": w["finished_at"],
            }
            for w in rows
        ],
        times=("started", "finished"),
    )
    for row, w in zip(shown, rows, strict=True):
        row["run"] = queries.run_link(int(w["run_id"])) if w["run_id"] is not None else ""
    st.dataframe(
        shown,
        hide_index=True,
        key=f"backfills_windows_{bid}",
        column_config={"run": st.column_config.LinkColumn("run", display_text=r"run=(\d+)")},
    )
    st.caption("A window's job: its logs, artifacts and history on the Jobs page; a run opens on the Runs page.")


def _detail(conn: sa.Connection, bid: int) -> None:
    got = queries.get_backfill(conn, principal, bid, windows=WINDOW_ROWS)
    b, windows, now = got["backfill"], got["windows"], common.now()
    label, colour = views.backfill_state(b["state"])
    st.subheader(f"Backfill {bid}: {views.target_text(b['target_kind'], b['target'])} for {b['tenant']}")
    st.badge(label, color=colour)
    done, text = views.progress(windows)
    st.progress(done, text=text)
    m = st.columns(5)
    m[0].metric("State", label)
    m[1].metric("Windows", sum(windows.values()))
    m[2].metric("Running", f"{windows.get('running', 0)} / {b['max_active']}", help="Running of max active.")
    m[3].metric("Failed", windows.get("failed", 0))
    eta, left = got["eta_s"], windows.get("planned", 0) + windows.get("running", 0)
    m[4].metric(
        "ETA",
        "done" if left == 0 else labels.DASH if eta is None else labels.duration(eta),
        help="From the pace of its finished windows; none before the first has finished.",
    )
    _wait(b, now)
    st.caption(
        f"Range {views.span(b['range_start'], b['range_end'])} UTC in windows of {views.seconds_text(b['window_s'])}"
        f" · reprocess {b['reprocess']} · max active {b['max_active']} · pauses above {b['pause_above']} live "
        f"ready jobs · skipped when created: {b['skipped_done']} done or failed before, {b['skipped_in_flight']} in"
        f" flight · created by {b['created_by']} {labels.ago(b['created_at'], now)}: {b['reason']} (ticket "
        f"{b['ticket']})" + (f" · from schedule {b['schedule_id']}'s missed ticks" if b["schedule_id"] else "")
    )
    _buttons(b)
    if got.get("window_rows"):
        _windows(got["window_rows"], bid, sum(windows.values()))
    with st.expander("What each window fires (secrets masked)"):
        st.json(views.masked(b["target"]), expanded=True)


def _render(conn: sa.Connection) -> None:
    rows = queries.list_backfills(conn, principal, tenant=tenant, state=state, limit=int(limit))
    if not rows:
        st.info("No backfills match the filters. Start one under New backfill (or `orch backfill create`).")
        return
    active = sum(1 for b in rows if b["state"] not in views.ENDED)
    st.caption(f"{len(rows)} backfills (newest {limit} matching the filters), {active} not ended.")
    _table(rows)
    by_id = {int(b["id"]): b for b in rows}
    chosen = st.session_state.get(SELECTED_KEY)
    options: list[int | None] = [None, *by_id]
    if chosen is not None and chosen not in by_id:
        options.append(int(chosen))
    st.selectbox(
        "Backfill",
        options,
        format_func=lambda i: (
            "Choose a backfill for its windows and actions"
            if i is None
            else f"{i} · {by_id[i]['tenant']} · {by_id[i]['job_type']} · {views.backfill_state(by_id[i]['state'])[0]}"
            if i in by_id
            else f"backfill {i}"
        ),
        key=SELECTED_KEY,
    )
    if chosen is not None:
        _detail(conn, int(chosen))


@st.fragment(run_every=labels.REFRESH_S)
def live() -> None:
    with common.shown_errors(), session.engine.connect() as conn:
        _render(conn)


live()
