"""Every label, colour and piece of wording the console shows, in one place (never in core)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Literal

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
    State.SKIPPED: "Skipped",
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
    State.SKIPPED: "#bdbdbd",
}

BadgeColour = Literal["green", "orange", "red", "blue", "violet", "gray"]

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

# -- values as people read them ---------------------------------------------------------------

#: What a table cell or a sentence shows for nothing (a missing value, an empty text).
DASH = "—"
#: The suffix of the column with a time column's exact UTC time ("at" -> "at (UTC)").
UTC_COLUMN = " (UTC)"

# -- charts ---------------------------------------------------------------------------------

#: What a chart's place says when the chart has nothing to draw (an empty figure is a bare
#: -1..1 axis); per panel key of dashboards/panels.py, or "history" for a job's timeline.
NO_DATA = "No data in this window."
EMPTY_CHARTS: dict[str, str] = {
    "jobs_now": "No jobs.",
    "queue_depth": "Nothing queued or running in this window.",
    "throughput": "No jobs finished in this window.",
    "duration_p95": "No jobs finished in this window.",
    "outcomes": "No jobs finished in this window.",
    "burn_rate": "No jobs finished in any SLO window.",
    "error_trend": "No failures in this window.",
    "failures_by_class": "No failures in this window.",
    "error_clusters": "No failures in this window.",
    "lease_expirations": "No lease expired in this window.",
    "bucket_rate": "No token bucket: nothing limits the rate.",
    "bucket_tokens": "No token bucket: nothing limits the rate.",
    "rate_limit_events": "No upstream 429 and no admission denial in this window.",
    "circuit_state": "No source.",
    "quota_slots": "No quota.",
    "jobs_waiting": "Nothing waiting.",
    "history": "No history yet.",
}


def no_data(key: str) -> str:
    """The sentence shown instead of chart `key` when it has nothing to draw."""
    return EMPTY_CHARTS.get(key, NO_DATA)


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

# -- flow control ---------------------------------------------------------------------------

#: queries.sources' health word -> (label, Streamlit badge colour, the same colour as a dot for
#: table cells), worst last.
HEALTH: dict[str, tuple[str, BadgeColour, str]] = {
    "ok": ("Healthy", "green", "🟢"),
    "throttled": ("Throttled", "orange", "🟠"),
    "paused": ("Paused", "gray", "⚪"),
    "blackout": ("Blackout", "violet", "🟣"),
    "circuit_half_open": ("Probing", "orange", "🟠"),
    "circuit_open": ("Circuit open", "red", "🔴"),
}

CIRCUIT_LABELS: dict[str, str] = {"closed": "Closed", "half_open": "Half-open", "open": "Open"}

#: Why a throttled job waits (jobs.wait_reason), in words; "until" follows.
WAIT_REASONS: dict[str, str] = {
    "rate_limited": "Rate limited: waiting for a token of its upstream host's bucket",
    "quota": "Quota: waiting for a free slot of its job type or source",
    "paused": "Paused: its source, job type or tenant is paused",
    "blackout": "Blackout: a no-dispatch window is open",
    "circuit_open": "Circuit open: its source's upstream keeps failing",
    "backpressure": "Backpressure: the tenant's backlog is over its limit",
}
#: A retrying job waits too, for its next attempt (it has no wait reason).
RETRY_WAIT = "Retrying: waiting for its next attempt after a failure"
#: Short names of the wait reasons, for tables and charts.
WAIT_SHORT: dict[str, str] = {
    "rate_limited": "Rate limited",
    "quota": "Quota",
    "paused": "Paused",
    "blackout": "Blackout",
    "circuit_open": "Circuit open",
    "backpressure": "Backpressure",
}

PAUSE = "Pause"
RESUME = "Resume"
THROTTLE = "Throttle"
RESET_CIRCUIT = "Reset circuit"
BLACKOUT = "Blackout"
RATE_LABEL = "Configured rate (jobs per second)"
BURST_LABEL = "Burst (bucket capacity)"
BLACKOUT_KIND_LABEL = "Window"
ONE_OFF = "One-off"
RECURRING = "Recurring (cron)"
STARTS_LABEL = "Starts (UTC, YYYY-MM-DD HH:MM)"
ENDS_LABEL = "Ends (UTC, YYYY-MM-DD HH:MM)"
CRON_LABEL = "Cron expression (UTC), e.g. 0 2 * * *"
DURATION_LABEL = "Duration (minutes)"


def health(word: str | None) -> tuple[str, BadgeColour, str]:
    return HEALTH.get(word or "", (word or "unknown", "gray", "⚪"))


def health_cell(word: str | None) -> str:
    """A source's health for a table cell: a coloured dot and the word."""
    label, _, dot = health(word)
    return f"{dot} {label}"


def wait_text(reason: str | None, not_before: str | None, now: dt.datetime) -> str:
    """Why a job waits and until when, in words: "Rate limited: ...; may start at 2026-12-01
    12:00:03 UTC (in 2 s)." `reason` is a wait reason, or "retrying" for a retrying job."""
    if reason is None:
        return ""
    text = RETRY_WAIT if reason == "retrying" else WAIT_REASONS.get(reason, reason)
    if not_before is None:
        return text
    until = dt.datetime.fromisoformat(not_before)
    seconds = (until - now).total_seconds()
    when = "due now" if seconds <= 0 else f"in {duration(seconds)}"
    return f"{text}; may start at {until.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC ({when})."


def duration(seconds: float) -> str:
    """A short duration: 3 s, 4 min, 2 h 5 min, 3 d."""
    s = round(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172800:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d"


def waiting_summary(waiting: dict[str, int]) -> str:
    """ "Rate limited 3, Quota 2" for the reasons with jobs; DASH when none wait."""
    parts = [f"{WAIT_SHORT.get(r, r)} {n}" for r, n in waiting.items() if n]
    return ", ".join(parts) or DASH


def timestamp(value: str | dt.datetime | None) -> dt.datetime | None:
    """An ISO 8601 time (as core.queries returns them) or a datetime, as an aware datetime;
    a time without a zone is UTC."""
    if value is None or value == "":
        return None
    parsed = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed


def utc(value: str | dt.datetime | None) -> str:
    """The exact time, to the second, in UTC: "2026-12-01 18:15:02"; DASH for none."""
    at = timestamp(value)
    return DASH if at is None else f"{at.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S}"


def _span(seconds: float) -> str:
    """One unit, rounded down: 42 s, 3 min, 2 h, 5 d."""
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h"
    return f"{s // 86400} d"


def ago(value: str | dt.datetime | None, now: dt.datetime) -> str:
    """A time relative to `now`: "just now", "3 min ago", "in 2 h"; DASH for none."""
    at = timestamp(value)
    if at is None:
        return DASH
    seconds = (now - at).total_seconds()
    if abs(seconds) < 1:
        return "just now"
    return f"{_span(seconds)} ago" if seconds > 0 else f"in {_span(-seconds)}"


def moment(value: str | dt.datetime | None, now: dt.datetime) -> str:
    """A time for a sentence, exact and relative: "2026-12-01 18:15:02 UTC (3 min ago)"."""
    at = timestamp(value)
    return DASH if at is None else f"{utc(at)} UTC ({ago(at, now)})"


#: A time written into a text (a reason, a message): ISO 8601 or with a space, fractions of a
#: second and a zone optional.
_TIME_IN_TEXT = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?")


def _tidy_time(match: re.Match[str]) -> str:
    text = match.group(0)
    try:
        at = dt.datetime.fromisoformat(text)
    except ValueError:
        return text
    return utc(at) + (" UTC" if at.tzinfo is not None else "")


def tidy(text: str) -> str:
    """A text with the times in it to the second, in UTC: "until 2026-12-01 22:09:24.018 UTC"
    reads "until 2026-12-01 22:09:24 UTC"."""
    return _TIME_IN_TEXT.sub(_tidy_time, text)


def cell(value: Any) -> Any:
    """A table cell: DASH for nothing (None, an empty text), a text with its times tidied,
    anything else as it is."""
    if value is None or value == "":
        return DASH
    return tidy(value) if isinstance(value, str) else value


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def table(rows: Iterable[Mapping[str, Any]], *, now: dt.datetime, times: Collection[str] = ()) -> list[dict[str, Any]]:
    """Rows for st.dataframe as people read them: each column named in `times` as a time
    relative to `now` ("3 min ago"), followed by its exact UTC time in a column of the same
    name with UTC_COLUMN ("at (UTC)": 2026-12-01 18:15:02); DASH for nothing. A column that
    holds DASH and other values is all text, so the table never mixes types in a column."""
    out: list[dict[str, Any]] = []
    for row in rows:
        shown: dict[str, Any] = {}
        for key, value in row.items():
            if key in times:
                shown[key] = ago(value, now)
                shown[key + UTC_COLUMN] = utc(value)
            else:
                shown[key] = cell(value)
        out.append(shown)
    mixed = {key for row in out for key, value in row.items() if isinstance(value, str) and value == DASH}
    for row in out:
        for key in mixed & row.keys():
            row[key] = _text(row[key])
    return out


def rate(value: float | None) -> str:
    """A rate in jobs per second: "0.5/s"; DASH for none."""
    return DASH if value is None else f"{value:g}/s"


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
    return DASH if state is None else STATE_LABELS.get(state, state)


def cluster_title(error_class: str | None, message: str | None) -> str:
    text = (message or "").strip() or "(no message)"
    return f"{error_class or 'unknown'} · {text[:120]}"


def cluster_target(error_class: str | None, fingerprint: str | None, count: int) -> str:
    """The audit target of a cluster replay."""
    return f"{count} dead-lettered jobs of error cluster {error_class or 'unknown'}/{(fingerprint or '-')[:16]}"


# -- incidents ------------------------------------------------------------------------------

SEE_INCIDENTS = "See the incidents"
INCIDENT_STATES = ["unresolved", "open", "acknowledged", "resolved", "all"]
NO_INCIDENTS = "No incident: nothing the scheduler watches for is wrong."


def critical_incidents(n: int) -> str:
    return f"{n} critical incident{'s' if n != 1 else ''} open: the scheduler found something wrong that has held."


# -- audit bundles --------------------------------------------------------------------------

BUNDLES_HEADER = "Audit bundles"
EXPORT_SECTION = "Export a bundle of a tenant's history"
VERIFY_SECTION = "Verify a bundle"
EXPORT_BUNDLE = "Export bundle"
VERIFY_BUNDLE = "Verify bundle"
DOWNLOAD_BUNDLE = "Download bundle"
BUNDLE_FROM_LABEL = "From (UTC; empty: from the beginning)"
BUNDLE_TO_LABEL = "To (UTC; empty: the start of this minute)"
WITH_ARTIFACTS_LABEL = "With artifacts (their bytes too, not only their names and digests)"
SIGNING_KEY_LABEL = "Signing key (Ed25519 private key, PEM)"
SIGNING_KEY_FROM_ENV = "Signed with the key in ORCH_SIGNING_KEY on the console's server (a path or the PEM text)."
SIGNING_KEY_UPLOAD_HELP = (
    "ORCH_SIGNING_KEY is not set on the console's server: upload the private key (orch keys create)."
    " It is read for one export, never stored, logged or shown, and dropped after: upload it again"
    " for the next export."
)
NO_SIGNING_KEY = "No signing key: set ORCH_SIGNING_KEY on the console's server or upload the PEM private key."
BUNDLE_FILE_LABEL = "Bundle (.tar.gz)"
PUBLIC_KEYS_LABEL = "Public keys (PEM; any one of them may have signed the bundle)"
VERIFY_NEEDS = "Upload the bundle and at least one public key to verify it."
STEP_PASSED = "✅ passed"
STEP_FAILED = "❌ failed"
STEP_NOT_RUN = "— not run"
NOT_RUN_DETAIL = "not run: an earlier step failed"
