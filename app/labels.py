"""Every label, colour and piece of wording the console shows, in one place (never in core)."""

from __future__ import annotations

from typing import Literal

from core.domain.states import State

TITLE = "Orch console"

#: Seconds between live refreshes of the data on each page (filters are kept).
REFRESH_S = 5
#: The audit chain is re-verified less often: verification reads the whole log.
AUDIT_REFRESH_S = 30

STATE_LABELS: dict[str, str] = {
    State.PENDING: "Pending",
    State.QUEUED: "Queued",
    State.LEASED: "Leased",
    State.RUNNING: "Running",
    State.THROTTLED: "Throttled",
    State.RETRYING: "Retrying",
    State.SUCCEEDED: "Succeeded",
    State.DEAD_LETTERED: "Dead-lettered",
    State.CANCELED: "Canceled",
    State.UPSTREAM_FAILED: "Upstream failed",
}

STATE_COLOURS: dict[str, str] = {
    State.PENDING: "#9e9e9e",
    State.QUEUED: "#42a5f5",
    State.LEASED: "#7e57c2",
    State.RUNNING: "#1e88e5",
    State.THROTTLED: "#ffb300",
    State.RETRYING: "#fb8c00",
    State.SUCCEEDED: "#43a047",
    State.DEAD_LETTERED: "#e53935",
    State.CANCELED: "#757575",
    State.UPSTREAM_FAILED: "#8d6e63",
}

BadgeColour = Literal["green", "orange", "red"]

#: slo.level() -> (label, Streamlit colour name, hex for charts): green / amber / red.
LEVELS: dict[str, tuple[str, BadgeColour, str]] = {
    "ok": ("OK", "green", "#43a047"),
    "warn": ("Burning", "orange", "#fb8c00"),
    "critical": ("Critical", "red", "#e53935"),
}

#: Time ranges offered by the filters: label -> seconds.
TIME_RANGES: dict[str, int] = {
    "Last 15 minutes": 900,
    "Last hour": 3600,
    "Last 6 hours": 21600,
    "Last 24 hours": 86400,
    "Last 3 days": 259200,
    "Last 7 days": 604800,
}
DEFAULT_TIME_RANGE = "Last hour"

ALL = "All"

# -- sign-in ----------------------------------------------------------------------------------
SIGN_IN_HEADER = "Sign in"
SIGN_IN_PROMPT = "Paste an API token (create one with `orch tokens create`)."
TOKEN_LABEL = "API token"
SIGN_IN = "Sign in"
SIGN_OUT = "Sign out"
NO_DATABASE = (
    "No ledger configured: set ORCH_DATABASE_URL (postgresql+psycopg://...) or start the console "
    "with `orch console`, which sets it."
)

# -- actions ----------------------------------------------------------------------------------
CANCEL = "Cancel job"
RETRY = "Retry job"
REPLAY_JOB = "Replay job"
REPLAY_CLUSTER = "Replay cluster"
CONFIRM = "Confirm"
BACK = "Back"
REASON_LABEL = "Reason (required)"
TICKET_LABEL = "Ticket (optional)"
DIALOG_TITLE = "Confirm the action"


def missing_scope(subject: str, scope: str) -> str:
    return f"{subject} lacks the scope {scope}: ask for a token that has it."


def state_label(state: str | None) -> str:
    return "" if state is None else STATE_LABELS.get(state, state)


def cluster_title(error_class: str | None, message: str | None) -> str:
    text = (message or "").strip() or "(no message)"
    return f"{error_class or 'unknown'} · {text[:120]}"


def cluster_target(error_class: str | None, fingerprint: str | None, count: int) -> str:
    """The audit target of a cluster replay."""
    return f"{count} dead-lettered jobs of error cluster {error_class or 'unknown'}/{(fingerprint or '-')[:16]}"
