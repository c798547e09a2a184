"""The read API for the CLI, console, exporter and bundles, split by concern: jobs, flow
control, audit, and failures and SLOs. Plain rows as dicts; every read filters by the
principal's tenants. This package re-exports every public name, so `core.queries.<name>` is
the way to call them.
"""

from core.domain.states import WAIT_REASONS
from core.queries.audit import audit_log, verify_audit
from core.queries.failures import burn_rates, dead_letter_clusters, error_clusters, error_trend
from core.queries.flow import (
    backlog_limits,
    blackouts,
    pauses,
    quotas,
    rate_limit_series,
    source,
    sources,
    throttles,
    waiting_by_reason,
)
from core.queries.incidents import critical_incidents_open, get_incident, list_incidents
from core.queries.jobs import (
    dead_letters,
    get_job,
    job_artifacts,
    job_history,
    job_logs,
    job_stats,
    job_types,
    list_jobs,
    queue_depth_series,
    run_time_summary,
    tenants,
    throughput_series,
)
from core.queries.notifier import webhook_status
from core.queries.runs import (
    get_run,
    graph_dot,
    graph_json,
    graph_of,
    list_runs,
    run_graph,
    run_link,
    run_timeline,
    runs_overview,
)
from core.queries.schedules import (
    get_backfill,
    get_schedule,
    list_backfills,
    list_schedules,
    list_watermarks,
    next_fires,
    schedule_tick_counters,
    watermark_series,
)

__all__ = [
    "WAIT_REASONS",
    "audit_log",
    "backlog_limits",
    "blackouts",
    "burn_rates",
    "critical_incidents_open",
    "dead_letter_clusters",
    "dead_letters",
    "error_clusters",
    "error_trend",
    "get_backfill",
    "get_incident",
    "get_job",
    "get_run",
    "get_schedule",
    "graph_dot",
    "graph_json",
    "graph_of",
    "job_artifacts",
    "job_history",
    "job_logs",
    "job_stats",
    "job_types",
    "list_backfills",
    "list_incidents",
    "list_jobs",
    "list_runs",
    "list_schedules",
    "list_watermarks",
    "next_fires",
    "pauses",
    "queue_depth_series",
    "quotas",
    "rate_limit_series",
    "run_graph",
    "run_link",
    "run_time_summary",
    "run_timeline",
    "runs_overview",
    "schedule_tick_counters",
    "source",
    "sources",
    "tenants",
    "throttles",
    "throughput_series",
    "verify_audit",
    "waiting_by_reason",
    "watermark_series",
    "webhook_status",
]
