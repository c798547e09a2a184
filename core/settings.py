"""Typed settings (prefix ORCH_), read from the environment once per process and validated."""

from __future__ import annotations

import functools
from pathlib import Path

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.domain import errors
from core.domain.incidents import Policy as IncidentPolicy


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ORCH_", extra="ignore")

    #: SQLAlchemy URL of the ledger, e.g. postgresql+psycopg://user@host:5432/orch.
    #: Unset: the embedded server that `orch up` started under data_dir.
    database_url: str | None = None
    #: redis:// or unix:// URL of the broker. Unset: the embedded Redis of `orch up`.
    redis_url: str | None = None
    #: Where the embedded servers keep their data and `orch up` its state.
    data_dir: Path = Path(".orch")
    #: Comma-separated modules imported by workers for their @job_handler registrations.
    handler_modules: str = ""
    #: Queues a worker consumes when --queues is not given.
    queues: str = "default"
    #: Seconds between scheduler passes (a pass also runs early when a retry falls due).
    scheduler_interval_s: float = Field(default=1.0, gt=0, le=60)
    #: A queued job whose doorbell is older than this may be re-rung.
    doorbell_timeout_s: float = Field(default=15.0, gt=0)
    #: Most rows one scheduler step touches, so every pass stays bounded.
    scheduler_batch: int = Field(default=1000, ge=1, le=100_000)
    #: Seconds a stopping worker waits for running handlers before releasing their leases.
    shutdown_grace_s: float = Field(default=10.0, ge=0)
    #: How long a worker's writer waits for more outcomes when it has only a few: larger
    #: batches, no latency any handler sees (outcomes are asynchronous).
    write_linger_s: float = Field(default=0.002, ge=0, le=0.1)
    #: How long a worker's claimer waits for more of its threads to ask for work, only while
    #: ready work remains and handlers are running (an idle pool never waits): fewer, larger
    #: claim statements under load (docs/adr/0017).
    claim_linger_s: float = Field(default=0.001, ge=0, le=0.1)
    #: Dramatiq namespace in Redis.
    broker_namespace: str = "orch"
    #: Where /metrics is served (orch up, orch exporter).
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    #: The console's address (orch console, orch up); 0.0.0.0 in a container.
    console_host: str = "127.0.0.1"
    console_port: int = Field(default=8501, ge=1, le=65535)
    #: The HTTP API's address (orch api, orch up): the event stream and the incidents.
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8600, ge=1, le=65535)
    #: The `source` of every orch.event.v1 envelope: a URI reference naming this deployment.
    event_source: str = Field(default="urn:orch", min_length=1, max_length=200)
    #: Whether the leading scheduler runs the outbox relay. Off only to measure what it costs
    #: (bench/events.py): events then wait unnumbered, and no reader sees them, until a relay runs.
    event_relay: bool = True
    #: The webhook notifier (README, "Webhooks"): while set, the leading scheduler POSTs every
    #: matching event to this http(s) URL, signed with webhook_secret (then required).
    webhook_url: str | None = None
    #: The HMAC-SHA256 key of the X-Orch-Signature header: at least 16 characters.
    webhook_secret: str | None = Field(default=None, validate_default=True, repr=False)
    #: Comma-separated event types to post: exact (orch.job.dead_lettered) or prefixes ending
    #: in "." or ".*" (orch.incident.); empty: every event.
    webhook_types: str = ""
    #: Seconds one POST may take before it counts as a timeout (and is retried).
    webhook_timeout_s: float = Field(default=5.0, gt=0, le=60)
    #: Where worker processes of this host write their metric files (multiprocess mode).
    #: Unset: a fresh temporary directory per pool start.
    metrics_dir: Path | None = None
    #: Most jobs a DAG run may hold, those its handlers spawn included.
    run_max_jobs: int = Field(default=10_000, ge=1, le=1_000_000)
    #: Days that finished work is kept: jobs (with history, logs, artifacts), runs and
    #: schedule ticks past it are pruned (dead letters stay; each schedule keeps its newest
    #: 100 ticks). A tenant's retention_days overrides it.
    retention_days: int = Field(default=30, ge=1, le=3650)
    #: Days the outbox (events) is kept: the event stream's resume window.
    outbox_retention_days: int = Field(default=7, ge=1, le=3650)
    #: Incidents (docs/design.md, "Incidents"): a condition must hold this long before it
    #: opens one...
    incident_for_s: float = Field(default=60.0, ge=0, le=86_400)
    #: ... and an incident resolves itself once its condition has been clear this long.
    incident_quiet_s: float = Field(default=300.0, ge=0, le=86_400)
    #: dlq_growth: a tenant's dead letters within this window; more than
    #: incident_dlq_warning is a warning (fewer clears it), more than incident_dlq_critical
    #: critical.
    incident_dlq_window_s: float = Field(default=1800.0, gt=0, le=7 * 86_400)
    incident_dlq_warning: int = Field(default=10, ge=1)
    incident_dlq_critical: int = Field(default=50, ge=1)
    #: circuit_open: a source's circuit not closed for longer than this.
    incident_circuit_open_s: float = Field(default=300.0, ge=0, le=86_400)
    #: sustained_throttling: a source with jobs waiting on its rate limit or open circuit
    #: without a break for this long.
    incident_throttled_s: float = Field(default=600.0, ge=0, le=7 * 86_400)
    #: stuck_job: a job running (heartbeating or not) for longer than this.
    incident_running_s: float = Field(default=3600.0, gt=0, le=30 * 86_400)
    #: stuck_job: a job ready and unclaimed for longer than this while workers of its queue
    #: are alive (a job of that queue started or finished within the same time).
    incident_ready_s: float = Field(default=900.0, gt=0, le=30 * 86_400)
    #: The job-success SLO target (docs/design.md, "Observability").
    slo_target: float = Field(default=0.99, gt=0, lt=1)

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if value.startswith("postgres://"):
            value = "postgresql://" + value[len("postgres://") :]
        if value.startswith("postgresql://"):
            value = "postgresql+psycopg://" + value[len("postgresql://") :]
        if not value.startswith("postgresql+psycopg://"):
            raise ValueError("must be a PostgreSQL URL such as postgresql+psycopg://user@host:5432/orch")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a Redis URL such as redis://127.0.0.1:6379/0")
        return value

    @field_validator("webhook_url")
    @classmethod
    def _check_webhook_url(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        if not value.startswith(("http://", "https://")) or len(value) > 2000:
            raise ValueError("must be an http:// or https:// URL such as https://hooks.example/orch")
        return value.strip()

    @field_validator("webhook_secret")
    @classmethod
    def _check_webhook_secret(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value == "":
            value = None
        if value is None and info.data.get("webhook_url"):
            raise ValueError("required when ORCH_WEBHOOK_URL is set (receivers check the signature with it)")
        if value is not None and len(value) < 16:
            raise ValueError("must be at least 16 characters")
        return value

    def webhook_type_list(self) -> list[str]:
        return [t.strip() for t in self.webhook_types.split(",") if t.strip()]

    def incident_policy(self) -> IncidentPolicy:
        return IncidentPolicy(
            for_s=self.incident_for_s,
            quiet_s=self.incident_quiet_s,
            dlq_window_s=self.incident_dlq_window_s,
            dlq_warning=self.incident_dlq_warning,
            dlq_critical=max(self.incident_dlq_critical, self.incident_dlq_warning),
            circuit_open_s=self.incident_circuit_open_s,
            throttled_s=self.incident_throttled_s,
            running_s=self.incident_running_s,
            ready_s=self.incident_ready_s,
        )

    def queue_list(self) -> list[str]:
        return [q.strip() for q in self.queues.split(",") if q.strip()]

    def handler_module_list(self) -> list[str]:
        return [m.strip() for m in self.handler_modules.split(",") if m.strip()]


@functools.cache
def get_settings() -> Settings:
    """The process's settings, built on first use. Raises InvalidInput naming the bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "ORCH_" + str(first["loc"][0]).upper() if first["loc"] else "ORCH_*"
        raise errors.InvalidInput(f"{name}: {first['msg']}") from None
