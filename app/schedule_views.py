"""Schedules, backfills and watermarks in the console: their wording, table cells and lag
chart, and the confirmation dialog of their buttons (Pause, Resume, Trigger now on a
schedule; Pause, Resume, Cancel on a backfill), which acts through core.control."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
import zoneinfo
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go
import sqlalchemy as sa
import streamlit as st

from app import common, labels
from core import control, queries
from core.domain import errors, redaction
from core.domain.auth import Scope
from core.domain.schedules import format_duration
from core.queries import schedule_views

# -- wording ----------------------------------------------------------------------------------

TRIGGER_NOW = "Trigger now"
CANCEL_BACKFILL = "Cancel"
PREVIEW = "Preview (dry run)"
CREATE = "Create backfill"
CATCHUP_BOX = "Fire the caught-up ticks"
CATCHUP_HELP = (
    "The ticks recorded paused since the pause go through the schedule's catch-up and overlap policies, as if "
    "the pause had been downtime. Unticked, they stay paused (a backfill can still cover their data)."
)
TERMINATE_BOX = "Terminate running windows"
TERMINATE_HELP = "Cancel the jobs or runs of the windows running now too. Unticked, they finish."

#: A tick's status -> (label, dot for table cells).
TICK_STATUS: dict[str, tuple[str, str]] = {
    "fired": ("Fired", "🟢"),
    "buffered": ("Buffered", "🔵"),
    "skipped": ("Skipped", "🟠"),
    "missed": ("Missed", "🔴"),
    "paused": ("Paused", "⚪"),
}
TICK_HELP = (
    "Fired: its job or run was created. Buffered: it waits for the previous firing to end (overlap buffer). "
    "Skipped: the overlap policy dropped it (or its work could not be created). Missed: it was late and the "
    "catch-up policy did not fire it. Paused: the schedule was paused."
)
OVERLAP_LABELS: dict[str, str] = {
    "skip": "Skip while the previous firing runs",
    "buffer_one": "Buffer one tick",
    "buffer_all": "Buffer every tick",
    "cancel_other": "Cancel the previous firing",
    "allow_all": "Allow overlapping firings",
}
CATCHUP_LABELS: dict[str, str] = {
    "none": "None: late ticks are missed",
    "latest": "Latest: only the newest late tick fires",
    "all": "All late ticks within the window",
}
#: A backfill's state -> (label, badge colour).
BACKFILL_STATES: dict[str, tuple[str, labels.BadgeColour]] = {
    "planned": ("Planned", "blue"),
    "running": ("Running", "blue"),
    "paused": ("Paused", "orange"),
    "succeeded": ("Succeeded", "green"),
    "failed": ("Failed", "red"),
    "canceled": ("Canceled", "gray"),
}
ENDED = ("succeeded", "failed", "canceled")
WINDOW_STATES: dict[str, str] = {
    "planned": "Planned",
    "running": "Running",
    "succeeded": "Succeeded",
    "failed": "Failed",
    "canceled": "Canceled",
}
#: A dry run's decision for a window -> (label, why).
DECISIONS: dict[str, tuple[str, str]] = {
    "run": ("Runs", "not covered yet: it will run"),
    "done": ("Skipped: done", "succeeded windows of this stream cover it (reprocess all runs it again)"),
    "failed": ("Skipped: failed before", "it failed before (reprocess failed or all runs it again)"),
    "in_flight": ("Skipped: in flight", "a planned or running window of this stream (a schedule or a backfill) has it"),
}
REPROCESS_LABELS: dict[str, str] = {
    "missing": "missing: skip what is done or failed before",
    "failed": "failed: run the failed ones again, skip what is done",
    "all": "all: run every window again",
}
NO_LAG = "No watermark samples in this window: the scheduler samples every watermark's lag once a minute."

#: The kinds of action on a schedule (orch:operate) and on a backfill (orch:backfill).
SCHEDULE_KINDS = ("pause_schedule", "resume_schedule", "trigger_schedule")
BACKFILL_KINDS = ("pause_backfill", "resume_backfill", "cancel_backfill")
PENDING_KEY = "schedule_views_pending_action"


# -- cells ------------------------------------------------------------------------------------


def tick_cell(status: str | None) -> str:
    label, dot = TICK_STATUS.get(status or "", (status or labels.DASH, "⚪"))
    return f"{dot} {label}"


def backfill_state(state: str | None) -> tuple[str, labels.BadgeColour]:
    return BACKFILL_STATES.get(state or "", (state or labels.DASH, "gray"))


def yes_no(value: Any) -> str:
    return "yes" if value else "no"


def seconds_text(value: float | int | None) -> str:
    """ "1h", "15m", "90s" for a window or an interval; DASH for none."""
    return labels.DASH if value is None else format_duration(dt.timedelta(seconds=float(value)))


def span(start: str | dt.datetime | None, end: str | dt.datetime | None) -> str:
    """ "2026-12-01 23:00:00 → 2026-12-02 00:00:00 UTC", the end's date left out when it is the start's."""
    a, b = labels.utc(start), labels.utc(end)
    if a[:10] == b[:10] and a != labels.DASH:
        b = b[11:]
    return f"{a} → {b}"


def length(start: str | dt.datetime | None, end: str | dt.datetime | None) -> str:
    """How long start..end is: "2 h 0 min"; DASH when either is missing."""
    a, b = labels.timestamp(start), labels.timestamp(end)
    return labels.DASH if a is None or b is None else labels.duration((b - a).total_seconds())


def local_time(value: str | dt.datetime | None, zone: str) -> str:
    """A time in the schedule's zone: "2026-12-03 02:00:00 CET"; DASH for none."""
    at = labels.timestamp(value)
    if at is None:
        return labels.DASH
    try:
        local = at.astimezone(zoneinfo.ZoneInfo(zone))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return f"{labels.utc(at)} UTC"
    return f"{local:%Y-%m-%d %H:%M:%S} {local.tzname()}"


def target_text(kind: str, target: Mapping[str, Any]) -> str:
    """What a schedule or backfill fires: "job test.report on source nvd", "run nightly (3 jobs)"."""
    if kind == "run":
        jobs = target.get("jobs") or []
        return f"run {target.get('name', 'run')} ({len(jobs)} job{'' if len(jobs) == 1 else 's'})"
    text = f"job {target.get('type', '?')}"
    return text + (f" on source {target['source']}" if target.get("source") else "")


def masked(target: Mapping[str, Any]) -> Any:
    """A target document with its secret-looking payload values masked (core.domain.redaction)."""
    return redaction.redact(dict(target))


def stream_name(row: Mapping[str, Any]) -> str:
    """A watermark's key: "acme / nvd / test.report" (a dash for no source)."""
    source = row.get("source")
    return f"{row['tenant']} / {labels.DASH if source in (None, '-') else source} / {row['job_type']}"


def progress(windows: Mapping[str, int]) -> tuple[float, str]:
    """A backfill's ended windows as a fraction, and the counts in words."""
    n = sum(windows.values())
    if n == 0:
        return 1.0, "No windows to run: every window was already covered."
    ended = sum(windows.get(s, 0) for s in ENDED)
    parts = [f"{windows[s]} {WINDOW_STATES[s].lower()}" for s in WINDOW_STATES if windows.get(s)]
    return ended / n, f"{ended} of {n} windows ended: " + ", ".join(parts)


def lag_unit(seconds: float) -> tuple[str, float]:
    """The unit a lag chart is drawn in: s, min, h or d, by its largest value."""
    if seconds < 120:
        return "s", 1.0
    if seconds < 7200:
        return "min", 60.0
    if seconds < 172800:
        return "h", 3600.0
    return "d", 86400.0


def lag_figure(series: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Watermark lag over time, a line per tenant, source and job type."""
    fig = go.Figure()
    lags = [float(r["lag_s"]) for r in series if r["lag_s"] is not None]
    unit, size = lag_unit(max(lags, default=0.0))
    lines: dict[str, list[Mapping[str, Any]]] = {}
    for r in series:
        if r["lag_s"] is not None:
            lines.setdefault(stream_name(r), []).append(r)
    for name, rows in sorted(lines.items()):
        fig.add_trace(
            go.Scatter(
                x=[labels.utc(r["at"]) for r in rows],
                y=[round(float(r["lag_s"]) / size, 3) for r in rows],
                mode="lines+markers",
                name=name,
                customdata=[labels.utc(r["watermark"]) for r in rows],
                hovertemplate=f"{name}<br>%{{x}} UTC<br>lag %{{y}} {unit}<br>watermark %{{customdata}} UTC"
                "<extra></extra>",
            )
        )
    fig.update_layout(
        title="Watermark lag",
        xaxis={"type": "date", "title": "UTC"},
        yaxis={"title": f"lag ({unit})", "rangemode": "tozero"},
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        height=360,
        legend={"orientation": "h"},
    )
    return fig


def table(rows: Sequence[Mapping[str, Any]], *, times: Collection[str] = ()) -> list[dict[str, Any]]:
    """labels.table relative to now."""
    return labels.table(rows, now=common.now(), times=times)


# -- actions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ViewAction:
    """Pause, resume or trigger a schedule (tenant, name); pause, resume or cancel a backfill
    (backfill_id), once the operator confirms with a reason. Kept in the session as a dict."""

    kind: str
    tenant: str
    name: str | None = None
    backfill_id: int | None = None
    nonce: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    @property
    def scope(self) -> Scope:
        return Scope.OPERATE if self.kind in SCHEDULE_KINDS else Scope.BACKFILL

    @property
    def title(self) -> str:
        what = f"schedule {self.tenant}/{self.name}" if self.kind in SCHEDULE_KINDS else f"backfill {self.backfill_id}"
        verb = self.kind.split("_")[0]
        if verb == "trigger":
            return f"Trigger {what} now"
        return f"{verb.capitalize()} {what}"


def pending(kinds: Collection[str]) -> ViewAction | None:
    """The action whose dialog is open, when it is one of `kinds` (this page's)."""
    raw = st.session_state.get(PENDING_KEY)
    if isinstance(raw, dict) and raw.get("kind") in kinds:
        try:
            return ViewAction(**raw)
        except TypeError:
            return None
    return None


def action_button(session: common.Session, label: str, action: ViewAction, *, key: str, blocked: str | None) -> None:
    """A button that opens the confirmation dialog of `action`. Disabled, with the reason
    shown, without the action's scope on its tenant or when `blocked` says why it does not
    apply; core.control checks both again."""
    principal = session.principal
    why = blocked
    if not principal.can(action.scope, action.tenant):
        why = labels.missing_scope(principal.subject, action.scope.value)
        if action.scope in principal.scopes:
            why = f"{principal.subject} may not act on tenant {action.tenant!r}."
    if st.button(label, key=key, disabled=why is not None, help=why) and why is None:
        st.session_state[PENDING_KEY] = dataclasses.asdict(action)
        st.rerun()  # inside a live fragment this reruns the page, which opens the dialog
    if why is not None:
        st.caption(why)


def _close_dialog() -> None:
    st.session_state.pop(PENDING_KEY, None)


def _explain(session: common.Session, action: ViewAction) -> None:
    """What the action will do, in a sentence or two (with the paused ticks a resume finds)."""
    if action.kind == "pause_schedule":
        st.markdown("Ticks from now on are recorded **paused**; nothing fires until the schedule is resumed.")
    elif action.kind == "resume_schedule":
        assert action.name is not None
        with common.shown_errors(), session.engine.connect() as conn:
            found = schedule_views.paused_ticks(conn, session.principal, action.tenant, action.name)
            now = common.now()
            if found["count"]:
                st.markdown(
                    f"**{found['count']} tick{'' if found['count'] == 1 else 's'} recorded paused** since the pause "
                    f"at {labels.moment(found['paused_at'], now)}: from {labels.utc(found['first'])} to "
                    f"{labels.utc(found['last'])} UTC."
                )
            else:
                st.markdown("No tick was recorded paused since the pause.")
        st.markdown("Ticks fire again from the next one on.")
    elif action.kind == "trigger_schedule":
        st.markdown("Fires once now (a manual tick), paused or not, whatever the overlap policy says.")
    elif action.kind == "pause_backfill":
        st.markdown("No new window starts until the backfill is resumed; running windows finish.")
    elif action.kind == "resume_backfill":
        st.markdown("The scheduler starts its next windows into free slots again (at most max active at once).")
    else:
        st.markdown("Its planned windows are canceled; they never run.")


@st.dialog(labels.DIALOG_TITLE, on_dismiss=_close_dialog)
def confirm(session: common.Session, action: ViewAction) -> None:
    st.markdown(f"**{action.title}**")
    st.caption(f"Acting as {session.principal.subject}. The action and its reason are written to the audit log.")
    if not session.principal.can(action.scope, action.tenant):
        st.error(labels.missing_scope(session.principal.subject, action.scope.value))
    _explain(session, action)
    options: dict[str, bool] = {}
    if action.kind == "resume_schedule":
        options["catchup"] = st.checkbox(CATCHUP_BOX, help=CATCHUP_HELP, key=f"sv_catchup_{action.nonce}")
    elif action.kind == "cancel_backfill":
        # Terminating cancels each running window's job or run, which core.control lets
        # only orch:operate do.
        why = None
        if not session.principal.can(Scope.OPERATE, action.tenant):
            why = f"Terminating running windows cancels their jobs or runs: that needs {Scope.OPERATE.value} too."
        options["terminate_running"] = st.checkbox(
            TERMINATE_BOX, help=why or TERMINATE_HELP, disabled=why is not None, key=f"sv_terminate_{action.nonce}"
        )
        if why is not None:
            st.caption(why)
    reason = st.text_input(labels.REASON_LABEL, max_chars=control.MAX_REASON, key=f"sv_reason_{action.nonce}")
    left, right = st.columns(2)
    confirmed = left.button(labels.CONFIRM, type="primary", key=f"sv_confirm_{action.nonce}")
    if right.button(labels.BACK, key=f"sv_back_{action.nonce}"):
        _close_dialog()
        st.rerun()
    if confirmed:
        try:
            outcome = perform(session, action, reason=reason, **options)
        except errors.InvalidInput as exc:  # a missing or too long reason: fix it here
            st.error(str(exc))
            return
        st.session_state[common.OUTCOME_KEY] = outcome
        _close_dialog()
        st.rerun()


def perform(
    session: common.Session,
    action: ViewAction,
    *,
    reason: str,
    catchup: bool = False,
    terminate_running: bool = False,
) -> tuple[str, str]:
    """Carry out a confirmed action through core.control; (kind, message) where kind is
    success, warning (a cancel terminated fewer running windows than ran) or error. Raises
    InvalidInput (e.g. ReasonRequired) before anything changed."""
    try:
        kind, message = _act(session, action, reason=reason, catchup=catchup, terminate=terminate_running)
    except errors.InvalidInput:
        raise
    except errors.OrchError as exc:
        return "error", f"{action.title} failed: {labels.tidy(str(exc))}"
    except sa.exc.SQLAlchemyError as exc:
        return "error", f"{action.title} failed: the ledger is unavailable ({str(exc).splitlines()[0]})"
    return kind, f"{action.title}: {message}"


def _counts(ticks: Mapping[str, int]) -> str:
    return ", ".join(f"{TICK_STATUS.get(s, (s, ''))[0].lower()} {n}" for s, n in sorted(ticks.items()) if n)


def _act(
    session: common.Session, action: ViewAction, *, reason: str, catchup: bool, terminate: bool
) -> tuple[str, str]:
    """Call core.control; (success or warning, what changed in words)."""
    engine, principal, now = session.engine, session.principal, common.now()
    if action.kind in SCHEDULE_KINDS:
        assert action.name is not None
        where = (engine, principal, action.tenant, action.name)
        if action.kind == "pause_schedule":
            control.pause_schedule(*where, reason=reason)
            return "success", "paused; its ticks are recorded paused until it is resumed."
        if action.kind == "resume_schedule":
            # The console has no broker: the scheduler rings the doorbells of the queued jobs.
            change = control.resume_schedule(*where, reason=reason, catchup=catchup, doorbell=control.NoDoorbell())
            text = f"resumed; next fire {labels.moment(change.next_fire_at, now)}"
            if catchup:
                text += f"; caught-up ticks: {_counts(change.ticks)}" if change.ticks else "; no paused tick to fire"
            return "success", text + "."
        change = control.trigger_schedule(*where, reason=reason, doorbell=control.NoDoorbell())
        made = f"run {change.run_id}" if change.run_id is not None else f"job {change.job_id}"
        return "success", f"fired now: {made}."
    assert action.backfill_id is not None
    if action.kind == "pause_backfill":
        control.pause_backfill(engine, principal, action.backfill_id, reason=reason)
        return "success", "paused; no new window starts until it is resumed (running windows finish)."
    if action.kind == "resume_backfill":
        control.resume_backfill(engine, principal, action.backfill_id, reason=reason)
        return "success", "resumed; the scheduler starts its next windows."
    running = 0
    if terminate:
        with engine.connect() as conn:
            running = queries.get_backfill(conn, principal, action.backfill_id)["windows"].get("running", 0)
    done = control.cancel_backfill(
        engine,
        principal,
        action.backfill_id,
        reason=reason,
        terminate_running=terminate,
        doorbell=control.NoDoorbell(),
    )
    if not terminate:
        return "success", "canceled; its planned windows will not run, running windows finish."
    text = f"canceled; its planned windows will not run, {done.terminated} of {running} running window(s) terminated"
    if done.terminated < running:
        return "warning", f"{text} (the others had ended, or {principal.subject} may not cancel their jobs or runs)."
    return "success", text + "."
