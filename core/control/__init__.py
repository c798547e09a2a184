"""The one write API, split by concern: jobs (submit, cancel, retry, replay), flow control
(sources, pauses, throttles, circuits, blackouts, quotas, backlog limits) and access (API
tokens). Every call takes a Principal, checks its scope, owns its transaction and writes its
audit row in it. This package re-exports every public name, so `core.control.<name>` is the
way to call them.
"""

from core.control.access import authenticate, create_token, grant_every_scope
from core.control.common import (
    MAX_ATTEMPTS_LIMIT,
    MAX_PRIORITY,
    MAX_REASON,
    MAX_TICKET,
    TENANT_RE,
    Doorbell,
    NoDoorbell,
    forget_cached_catalog,
)
from core.control.flow import (
    BACKLOG_POLICIES,
    HOST_RE,
    MAX_RATE,
    add_blackout,
    add_source,
    pause,
    remove_blackout,
    reset_circuit,
    resume,
    set_backlog_limit,
    set_quota,
    throttle_source,
)
from core.control.jobs import (
    JobSpec,
    SubmitResult,
    cancel,
    register_job_types,
    replay_many,
    retry,
    submit,
    submit_many,
)
from core.control.results import (
    BacklogLimit,
    BlackoutAdded,
    BlackoutRemoved,
    CircuitReset,
    PauseChange,
    QuotaChange,
    RateChange,
    SourceChange,
)
from core.control.runs import (
    CancelResult,
    ReplayPlan,
    RunResult,
    RunSpec,
    cancel_run,
    plan_replay,
    replay_run,
    submit_run,
)
from core.control.spawn import spawn

__all__ = [
    "BACKLOG_POLICIES",
    "HOST_RE",
    "MAX_ATTEMPTS_LIMIT",
    "MAX_PRIORITY",
    "MAX_RATE",
    "MAX_REASON",
    "MAX_TICKET",
    "TENANT_RE",
    "BacklogLimit",
    "BlackoutAdded",
    "BlackoutRemoved",
    "CancelResult",
    "CircuitReset",
    "Doorbell",
    "JobSpec",
    "NoDoorbell",
    "PauseChange",
    "QuotaChange",
    "RateChange",
    "ReplayPlan",
    "RunResult",
    "RunSpec",
    "SourceChange",
    "SubmitResult",
    "add_blackout",
    "add_source",
    "authenticate",
    "cancel",
    "cancel_run",
    "create_token",
    "forget_cached_catalog",
    "grant_every_scope",
    "pause",
    "plan_replay",
    "register_job_types",
    "remove_blackout",
    "replay_many",
    "replay_run",
    "reset_circuit",
    "resume",
    "retry",
    "set_backlog_limit",
    "set_quota",
    "spawn",
    "submit",
    "submit_many",
    "submit_run",
    "throttle_source",
]
