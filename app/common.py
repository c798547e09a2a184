"""What every page shares: the ledger engine, sign-in by API token, filters, the panels of
dashboards/ drawn from their read models, and the confirmation dialog through which every
button acts (core.control, signed-in principal)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import plotly.graph_objects as go
import sqlalchemy as sa
import streamlit as st

from app import charts, labels
from core import control, queries, settings
from core.domain import errors
from core.domain.auth import Principal, Scope
from dashboards import panels, read_models

TOKEN_KEY = "orch_token"
SIGNED_OUT_KEY = "orch_signed_out"
SIGN_IN_ERROR_KEY = "orch_sign_in_error"
PENDING_KEY = "orch_pending_action"
OUTCOME_KEY = "orch_outcome"
#: Replays named one by one in the outcome of a cluster replay.
SHOWN_REPLAYS = 20
#: Set by `orch up` to its local admin token so the demo console is signed in at once.
CONSOLE_TOKEN_ENV = "ORCH_CONSOLE_TOKEN"


@dataclass(frozen=True)
class Session:
    engine: sa.Engine
    principal: Principal


@st.cache_resource(show_spinner=False)
def _engine(url: str) -> sa.Engine:
    # One small pool per URL for the whole console process; pre-ping because a console
    # sits idle for long stretches and must survive a restarted database.
    return sa.create_engine(
        url,
        pool_size=4,
        max_overflow=4,
        pool_pre_ping=True,
        connect_args={"application_name": "orch-console", "connect_timeout": 5},
    )


def _database_url() -> str:
    try:
        url = settings.get_settings().database_url
    except errors.InvalidInput as exc:
        st.error(str(exc))
        st.stop()
    if url is None:
        st.error(labels.NO_DATABASE)
        st.stop()
    return url


def page(title: str) -> Session:
    """Set up a page: title, engine, the signed-in principal (or the sign-in form and stop),
    the outcome of the last action, and the confirmation dialog of a pending one."""
    st.set_page_config(page_title=f"{title} · {labels.TITLE}", layout="wide")
    engine = _engine(_database_url())
    principal = _signed_in(engine)
    st.title(title)
    session = Session(engine, principal)
    _critical_banner(session)
    _show_outcome()
    pending = st.session_state.get(PENDING_KEY)
    if isinstance(pending, Action):
        _confirm(session, pending)
    return session


def _critical_banner(session: Session) -> None:
    """On every page while a critical incident is unresolved (one small index read)."""
    try:
        with session.engine.connect() as conn:
            n = queries.critical_incidents_open(conn, session.principal)
    except (sa.exc.SQLAlchemyError, errors.OrchError):
        return  # the page itself says what is wrong with the ledger
    if n:
        st.error(labels.critical_incidents(n))
        st.page_link("pages/11_Incidents.py", label=labels.SEE_INCIDENTS)


def _signed_in(engine: sa.Engine) -> Principal:
    if TOKEN_KEY not in st.session_state and not st.session_state.get(SIGNED_OUT_KEY):
        preset = os.environ.get(CONSOLE_TOKEN_ENV, "").strip()
        if preset:
            st.session_state[TOKEN_KEY] = preset
    token = st.session_state.get(TOKEN_KEY)
    if token:
        try:
            principal = control.authenticate(engine, token)
        except errors.Forbidden as exc:
            st.session_state.pop(TOKEN_KEY, None)
            st.session_state[SIGN_IN_ERROR_KEY] = str(exc)
        except sa.exc.OperationalError as exc:
            st.error(f"The ledger is unavailable: {str(exc.orig or exc).strip().splitlines()[0]}")
            st.stop()
        else:
            _identity(principal)
            return principal
    _sign_in_form(engine)
    st.stop()


def _identity(principal: Principal) -> None:
    with st.sidebar:
        st.markdown(f"Signed in as **{principal.subject}**")
        st.caption("Scopes: " + ", ".join(sorted(s.value for s in principal.scopes)))
        tenants = "every tenant" if principal.tenants is None else ", ".join(sorted(principal.tenants))
        st.caption(f"Tenants: {tenants}")
        if st.button(labels.SIGN_OUT, key="orch_sign_out"):
            st.session_state.pop(TOKEN_KEY, None)
            st.session_state.pop(PENDING_KEY, None)
            st.session_state[SIGNED_OUT_KEY] = True
            st.rerun()


def _sign_in_form(engine: sa.Engine) -> None:
    st.title(labels.TITLE)
    st.subheader(labels.SIGN_IN_HEADER)
    st.write(labels.SIGN_IN_PROMPT)
    token = st.text_input(labels.TOKEN_LABEL, type="password", key="orch_token_input")
    if st.button(labels.SIGN_IN, key="orch_sign_in", type="primary"):
        try:
            control.authenticate(engine, token or "")
        except errors.Forbidden as exc:
            st.session_state[SIGN_IN_ERROR_KEY] = str(exc)
        else:
            st.session_state[TOKEN_KEY] = token.strip()
            st.session_state.pop(SIGN_IN_ERROR_KEY, None)
            st.rerun()
    problem = st.session_state.get(SIGN_IN_ERROR_KEY)
    if problem:
        st.error(problem)


@contextlib.contextmanager
def shown_errors() -> Iterator[None]:
    """Show a query's deliberate error (or an unreachable ledger) on the page instead of a
    traceback; the next refresh tries again."""
    try:
        yield
    except errors.OrchError as exc:
        st.error(str(exc))
    except sa.exc.OperationalError as exc:
        st.error(f"The ledger is unavailable: {str(exc.orig or exc).strip().splitlines()[0]}")


# -- filters ----------------------------------------------------------------------------------


def _choices(session: Session, fetch: Callable[[sa.Connection], list[str]]) -> list[str]:
    """The options of a picker, read from the ledger; none (with the error shown) when the read fails."""
    with shown_errors(), session.engine.connect() as conn:
        return fetch(conn)
    return []


def tenant_filter(session: Session, *, key: str) -> str | None:
    """Pick one of the tenants the principal may see (queries.tenants), or all of them."""
    names = _choices(session, lambda conn: queries.tenants(conn, session.principal))
    choice = st.selectbox("Tenant", [labels.ALL, *names], key=key)
    return None if choice == labels.ALL else str(choice)


def job_type_filter(session: Session, *, key: str, label: str = "Job type") -> str | None:
    """Pick one of the registered job types (queries.job_types), or all of them."""
    names = _choices(session, lambda conn: [str(t["name"]) for t in queries.job_types(conn, session.principal)])
    choice = st.selectbox(label, [labels.ALL, *names], key=key)
    return None if choice == labels.ALL else str(choice)


def time_range(*, key: str, label: str = "Time range") -> int:
    names = list(labels.TIME_RANGES)
    choice = st.selectbox(label, names, index=names.index(labels.DEFAULT_TIME_RANGE), key=key)
    return labels.TIME_RANGES[str(choice)]


# -- panels -----------------------------------------------------------------------------------


class Panels:
    """The panels of dashboards/ for one render of a page: each read model runs once per
    filter set however many panels draw from it, and each chart is the panel's own figure
    builder with the panel's title and unit (dashboards.panels.draw)."""

    def __init__(self, conn: sa.Connection, principal: Principal) -> None:
        self._conn = conn
        self._principal = principal
        self._rows: dict[tuple[str, read_models.Filters], read_models.Rows] = {}

    def rows(self, read_model: str, filters: read_models.Filters) -> read_models.Rows:
        if (read_model, filters) not in self._rows:
            self._rows[(read_model, filters)] = read_models.run(read_model, self._conn, self._principal, filters)
        return self._rows[(read_model, filters)]

    def panel_rows(self, key: str, filters: read_models.Filters) -> read_models.Rows:
        """The rows the console draws panel `key` from."""
        p = panels.panel(key)
        if p.read_model is None:
            raise ValueError(f"panel {key} has no read model: only Grafana draws it")
        return self.rows(p.read_model, filters)

    def chart(self, key: str, filters: read_models.Filters, *, chart_key: str) -> None:
        """Draw panel `key` as a plotly chart, or say in a sentence that it has no data."""
        panel_chart(key, self.panel_rows(key, filters), chart_key=chart_key)


def panel_chart(key: str, rows: read_models.Rows, *, chart_key: str) -> None:
    """Panel `key` of dashboards/ drawn from its read model's `rows` (panels.draw)."""
    p = panels.panel(key)
    chart(panels.draw(p, rows), title=p.title, empty=labels.no_data(key), key=chart_key)


def chart(fig: go.Figure, *, title: str, empty: str, key: str) -> None:
    """Draw `fig`; when it has nothing to draw (charts.has_data), its title and the sentence
    `empty` instead of a bare -1..1 axis."""
    if charts.has_data(fig):
        st.plotly_chart(fig, key=key)
        return
    with st.container(border=True, key=f"{key}_empty"):
        st.markdown(f"**{title}**")
        st.caption(empty)


def now() -> dt.datetime:
    """The time the tables of a render are relative to ("3 min ago")."""
    return dt.datetime.now(dt.UTC)


def parse_time(value: str | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromisoformat(value)


def joined(values: Sequence[Any] | None) -> str:
    return ", ".join(str(v) for v in values or [] if v is not None) or labels.DASH


# -- actions ----------------------------------------------------------------------------------


#: Actions on a source (core.control flow control) and the scope each needs.
SOURCE_ACTIONS: dict[str, Scope] = {
    "pause": Scope.OPERATE,
    "resume": Scope.OPERATE,
    "reset_circuit": Scope.OPERATE,
    "throttle": Scope.QUOTA,
    "blackout": Scope.QUOTA,
}
ActionKind = Literal[
    "cancel",
    "retry",
    "replay_cluster",
    "pause",
    "resume",
    "reset_circuit",
    "throttle",
    "blackout",
    "ack_incident",
    "resolve_incident",
]


@dataclass(frozen=True)
class Action:
    """What a button asks core.control to do once the operator confirms with a reason."""

    #: cancel and retry act on each job (a retry of a finished job is a replay); replay_cluster
    #: replays every dead letter of an error cluster as one audited action (per tenant); the
    #: SOURCE_ACTIONS act on `source` of `tenant`.
    kind: ActionKind
    job_ids: tuple[int, ...]
    title: str
    tenant: str | None = None
    #: What the audit log names as the target of a replay_cluster.
    label: str | None = None
    #: The source a flow-control action acts on.
    source: str | None = None
    #: The incident an ack_incident or resolve_incident acts on.
    incident_id: int | None = None
    #: The throttle dialog's starting rate and burst (the bucket's configured values).
    rate: float | None = None
    burst: float | None = None
    #: Makes each opening of the dialog start with empty inputs.
    nonce: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    #: When the button was pressed: the blackout dialog's default window starts after it.
    opened_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    @property
    def scope(self) -> Scope:
        """The scope core.control demands for this action."""
        return SOURCE_ACTIONS.get(self.kind, Scope.OPERATE)


def action_button(session: Session, label: str, action: Action, *, key: str, blocked: str | None = None) -> None:
    """A button that opens the confirmation dialog for `action`. Disabled, with the reason
    shown, when the principal lacks the action's scope (orch:operate, or orch:quota for rates
    and blackouts) on its tenant, or `blocked` says why the action does not apply."""
    why = blocked
    scope = action.scope
    if not session.principal.can(scope, action.tenant):
        why = labels.missing_scope(session.principal.subject, scope.value)
        if action.tenant is not None and scope in session.principal.scopes:
            why = f"{session.principal.subject} may not act on tenant {action.tenant!r}."
    # A disabled button never fires in a browser; the check also holds for a forged click.
    if st.button(label, key=key, disabled=why is not None, help=why) and why is None:
        st.session_state[PENDING_KEY] = action
        st.rerun()  # inside a live fragment this reruns the page, which opens the dialog
    if why is not None:
        st.caption(why)


def _close_dialog() -> None:
    st.session_state.pop(PENDING_KEY, None)


@st.dialog(labels.DIALOG_TITLE, on_dismiss=_close_dialog)
def _confirm(session: Session, action: Action) -> None:
    st.markdown(f"**{action.title}**")
    st.caption(f"Acting as {session.principal.subject}. The action and its reason are written to the audit log.")
    read_inputs = _action_inputs(action)
    reason = st.text_input(labels.REASON_LABEL, max_chars=control.MAX_REASON, key=f"orch_reason_{action.nonce}")
    ticket = st.text_input(labels.TICKET_LABEL, max_chars=control.MAX_TICKET, key=f"orch_ticket_{action.nonce}")
    left, right = st.columns(2)
    confirmed = left.button(labels.CONFIRM, type="primary", key=f"orch_confirm_{action.nonce}")
    if right.button(labels.BACK, key=f"orch_back_{action.nonce}"):
        _close_dialog()
        st.rerun()
    if confirmed:
        try:
            outcome = perform(session, action, reason=reason, ticket=ticket.strip() or None, inputs=read_inputs())
        except errors.InvalidInput as exc:  # a missing or too long reason, a bad rate: fix it here
            st.error(str(exc))
            return
        st.session_state[OUTCOME_KEY] = outcome
        _close_dialog()
        st.rerun()


def perform(
    session: Session, action: Action, *, reason: str, ticket: str | None, inputs: dict[str, Any] | None = None
) -> tuple[str, str]:
    """Carry out a confirmed action through core.control; returns (kind, message) where kind
    is success, warning (some jobs of a batch failed) or error. Raises InvalidInput (e.g.
    ReasonRequired) before anything changed, so the dialog can ask again. `inputs` are the
    dialog's own fields (a throttle's rate and burst, a blackout's window)."""
    if action.kind in SOURCE_ACTIONS:
        return _source_action(session, action, reason=reason, ticket=ticket, inputs=inputs or {})
    if action.kind == "replay_cluster":
        return _replay_cluster(session, action, reason=reason, ticket=ticket)
    if action.kind in ("ack_incident", "resolve_incident"):
        return _incident_action(session, action, reason=reason)
    done: list[str] = []
    failed: list[str] = []
    for i, job_id in enumerate(action.job_ids):
        try:
            done.append(_perform_one(session, action.kind, job_id, reason=reason, ticket=ticket))
        except errors.InvalidInput:
            if i == 0:
                raise
            failed.append(f"job {job_id}: invalid input")
        except errors.OrchError as exc:
            failed.append(f"job {job_id}: {exc}")
        except sa.exc.SQLAlchemyError as exc:
            failed.append(f"job {job_id}: the ledger is unavailable ({str(exc).splitlines()[0]})")
    if not failed:
        return "success", f"{action.title}: " + "; ".join(done)
    if not done:
        return "error", f"{action.title} failed: " + "; ".join(failed)
    return (
        "warning",
        f"{action.title}: {len(done)} done ({'; '.join(done)}), {len(failed)} failed ({'; '.join(failed)})",
    )


#: What a confirmed action may fail with besides InvalidInput (which the dialog shows, asking
#: again): control's refusals and an unavailable ledger.
ACTION_FAILURES = (errors.OrchError, sa.exc.SQLAlchemyError)


def failed(title: str, exc: Exception) -> tuple[str, str]:
    """The outcome of an action that failed with one of ACTION_FAILURES."""
    if isinstance(exc, sa.exc.SQLAlchemyError):
        return "error", f"{title} failed: the ledger is unavailable ({str(exc).splitlines()[0]})"
    return "error", f"{title} failed: {exc}"


def _replay_cluster(session: Session, action: Action, *, reason: str, ticket: str | None) -> tuple[str, str]:
    """All the jobs or none: control.replay_many writes one audit row per tenant of the cluster."""
    try:
        # The console has no broker: the scheduler rings the doorbells of the queued jobs.
        replayed = control.replay_many(
            session.engine,
            session.principal,
            list(action.job_ids),
            doorbell=control.NoDoorbell(),
            reason=reason,
            ticket=ticket,
            label=action.label,
        )
    except errors.InvalidInput:
        raise
    except ACTION_FAILURES as exc:
        return failed(action.title, exc)
    pairs = [f"job {new} replays job {old}" for old, new in sorted(replayed.items())]
    shown = "; ".join(pairs[:SHOWN_REPLAYS])
    if len(pairs) > SHOWN_REPLAYS:
        shown += f"; and {len(pairs) - SHOWN_REPLAYS} more"
    return "success", f"{action.title}: {len(pairs)} jobs replayed ({shown})"


def _incident_action(session: Session, action: Action, *, reason: str) -> tuple[str, str]:
    do = control.acknowledge_incident if action.kind == "ack_incident" else control.resolve_incident
    try:
        state = do(session.engine, session.principal, int(action.incident_id or 0), reason=reason)
    except errors.InvalidInput:
        raise
    except ACTION_FAILURES as exc:
        return failed(action.title, exc)
    return "success", f"{action.title}: incident {action.incident_id} is {state}"


def _perform_one(session: Session, kind: str, job_id: int, *, reason: str, ticket: str | None) -> str:
    if kind == "cancel":
        result = control.cancel(session.engine, session.principal, job_id, reason=reason, ticket=ticket)
        return f"job {job_id} canceled" if result == "canceled" else f"job {job_id}: cancellation requested"
    if kind == "retry":
        # The console has no broker: the scheduler rings the doorbell of the queued job.
        new_id = control.retry(
            session.engine, session.principal, job_id, doorbell=control.NoDoorbell(), reason=reason, ticket=ticket
        )
        return f"job {job_id} will be retried now" if new_id == job_id else f"job {new_id} replays job {job_id}"
    raise errors.InvalidInput(f"unknown console action {kind!r}")


# -- flow-control actions ---------------------------------------------------------------------


def _action_inputs(action: Action) -> Callable[[], dict[str, Any]]:
    """Draw the dialog fields an action needs besides reason and ticket; returns what reads
    them into core.control's arguments (raising InvalidInput for a value it cannot use)."""
    key = action.nonce
    if action.kind == "throttle":
        rate = st.number_input(
            labels.RATE_LABEL,
            min_value=0.001,
            max_value=control.MAX_RATE,
            value=float(action.rate or 1.0),
            format="%.3f",
            key=f"orch_rate_{key}",
        )
        burst = st.number_input(
            labels.BURST_LABEL,
            min_value=1.0,
            max_value=control.MAX_RATE,
            value=float(action.burst or max(1.0, rate)),
            key=f"orch_burst_{key}",
        )
        return lambda: {"rate": float(rate), "burst": float(burst)}
    if action.kind == "blackout":
        kind = st.radio(
            labels.BLACKOUT_KIND_LABEL, [labels.ONE_OFF, labels.RECURRING], horizontal=True, key=f"orch_bo_kind_{key}"
        )
        if kind == labels.ONE_OFF:
            # Defaults fixed when the dialog opened, so a rerun never changes what is typed.
            start = action.opened_at.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
            starts = st.text_input(labels.STARTS_LABEL, value=f"{start:%Y-%m-%d %H:%M}", key=f"orch_bo_start_{key}")
            ends = st.text_input(
                labels.ENDS_LABEL, value=f"{start + dt.timedelta(hours=1):%Y-%m-%d %H:%M}", key=f"orch_bo_end_{key}"
            )
            return lambda: {
                "starts_at": _utc(starts, labels.STARTS_LABEL),
                "ends_at": _utc(ends, labels.ENDS_LABEL),
            }
        cron = st.text_input(labels.CRON_LABEL, value="0 2 * * *", key=f"orch_bo_cron_{key}")
        minutes = st.number_input(labels.DURATION_LABEL, min_value=1, value=60, step=1, key=f"orch_bo_minutes_{key}")
        return lambda: {"cron_expr": cron.strip(), "duration_s": float(minutes) * 60}
    return dict


def _utc(text: str, label: str) -> dt.datetime:
    """A time typed in the dialog, as an aware UTC datetime (no zone given: UTC)."""
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise errors.InvalidInput(f"{label}: {text!r} is not a time like 2026-12-01 02:00") from None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def _source_action(
    session: Session, action: Action, *, reason: str, ticket: str | None, inputs: dict[str, Any]
) -> tuple[str, str]:
    """One core.control call on a source, which writes one audit row."""
    if action.tenant is None or action.source is None:
        raise errors.InvalidInput(f"{action.title}: no tenant and source to act on")
    engine, principal = session.engine, session.principal
    where = {"tenant": action.tenant, "source": action.source}
    try:
        if action.kind in ("pause", "resume"):
            act = control.pause if action.kind == "pause" else control.resume
            done = act(engine, principal, **where, reason=reason, ticket=ticket)
            if action.kind == "pause":
                message = "paused" if done.changed else "already paused"
            else:
                message = f"resumed, {done.released} waiting jobs released" if done.changed else "was not paused"
        elif action.kind == "reset_circuit":
            done = control.reset_circuit(engine, principal, **where, reason=reason, ticket=ticket)
            message = (
                f"circuit closed (was {labels.CIRCUIT_LABELS.get(str(done.old_state), done.old_state)}),"
                f" {done.released} waiting jobs released"
            )
        elif action.kind == "throttle":
            done = control.throttle_source(engine, principal, **where, **inputs, reason=reason, ticket=ticket)
            old = "none" if done.old_rate is None else f"{done.old_rate:g}/s"
            message = f"rate {old} -> {done.rate:g}/s, burst {done.burst:g}"
        else:
            done = control.add_blackout(engine, principal, **where, **inputs, reason=reason, ticket=ticket)
            message = (
                f"blackout {done.id}, next window {labels.utc(done.window_start)} to {labels.utc(done.window_end)} UTC"
            )
    except errors.InvalidInput:
        raise
    except ACTION_FAILURES as exc:
        return failed(action.title, exc)
    return "success", f"{action.title}: {message}"


def _show_outcome() -> None:
    outcome = st.session_state.pop(OUTCOME_KEY, None)
    if outcome is None:
        return
    kind, message = outcome
    {"success": st.success, "warning": st.warning}.get(kind, st.error)(message)
