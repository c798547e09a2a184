"""Console tests: the real app (AppTest) against the test ledger, seeded through core.control
and the core.ledger statements that workers use."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from streamlit.testing.v1 import AppTest

from core import control, settings
from core.domain.auth import Principal, Scope, local_principal
from core.ledger import jobs as ledger_jobs

HOME = Path(__file__).resolve().parents[2] / "app" / "Home.py"
PAGES = {
    "jobs": "pages/1_Jobs.py",
    "dead_letters": "pages/2_Dead_letters.py",
    "errors": "pages/3_Errors.py",
    "audit": "pages/4_Audit.py",
    "sources": "pages/5_Sources.py",
    "rate_limits": "pages/6_Rate_limits.py",
    "schedules": "pages/8_Schedules.py",
    "backfills": "pages/9_Backfills.py",
    "watermarks": "pages/10_Watermarks.py",
    "incidents": "pages/11_Incidents.py",
}
JOB_TYPE = "test.report"
QUEUE = "default"
WORKER = "seed-worker"
TENANT_A = "acme"
TENANT_B = "globex"
SECRET = "s3cr3t-value-of-acme"
ARTIFACT = b"report body\n"


@dataclass
class Tenant:
    name: str
    succeeded: list[int] = field(default_factory=list)
    dead: dict[str, list[int]] = field(default_factory=dict)  # message -> job ids
    running: list[int] = field(default_factory=list)
    retrying: list[int] = field(default_factory=list)
    queued: list[int] = field(default_factory=list)

    @property
    def dead_ids(self) -> list[int]:
        return [i for ids in self.dead.values() for i in ids]

    @property
    def all_ids(self) -> list[int]:
        return self.succeeded + self.dead_ids + self.running + self.retrying + self.queued


@dataclass
class Seeded:
    a: Tenant
    b: Tenant
    #: The job of tenant A with logs, progress and an artifact (still running).
    rich_job: int
    #: A queued job of tenant A whose payload holds a secret.
    secret_job: int
    #: Tenant A's dead-letter clusters: (error_class, messages); "HTTP 503" pages are one cluster.
    clusters_a: dict[str, list[str]]


def _admin() -> Principal:
    return local_principal("console-tests")


def _submit(engine: sa.Engine, tenant: str, n: int, payload: dict[str, Any] | None = None) -> list[int]:
    specs = [
        control.JobSpec(tenant=tenant, job_type=JOB_TYPE, payload=payload or {"n": i}, correlation_id=f"corr-{tenant}")
        for i in range(n)
    ]
    return control.submit_many(engine, _admin(), specs, doorbell=control.NoDoorbell()).job_ids


def _start(engine: sa.Engine, tenant: str, n: int) -> list[sa.RowMapping]:
    """Submit n jobs and claim exactly them (nothing else is queued while seeding runs)."""
    ids = _submit(engine, tenant, n)
    with engine.begin() as conn:
        rows = ledger_jobs.claim_and_start_jobs(conn, queue=QUEUE, limit=n, owner=WORKER, job_types=[JOB_TYPE])
    assert sorted(r["id"] for r in rows) == sorted(ids)
    return sorted(rows, key=lambda r: r["id"])


def _succeed(engine: sa.Engine, tenant: str, n: int) -> list[int]:
    rows = _start(engine, tenant, n)
    with engine.begin() as conn:
        done = ledger_jobs.succeed_jobs(conn, [r["id"] for r in rows], [r["lease_id"] for r in rows], actor=WORKER)
    assert len(done) == n
    return [r["id"] for r in rows]


def _dead_letter(engine: sa.Engine, tenant: str, error_class: str, messages: list[str]) -> list[int]:
    rows = _start(engine, tenant, len(messages))
    with engine.begin() as conn:
        moved = ledger_jobs.fail_final_jobs(
            conn,
            [r["id"] for r in rows],
            [r["lease_id"] for r in rows],
            [error_class] * len(rows),
            messages,
            ["not retryable"] * len(rows),
            actor=WORKER,
        )
    assert len(moved) == len(rows)
    return [r["id"] for r in rows]


def seed(engine: sa.Engine) -> Seeded:
    a, b = Tenant(TENANT_A), Tenant(TENANT_B)
    a.succeeded = _succeed(engine, TENANT_A, 2)
    http = ["HTTP 503 for https://feeds.example/feed?page=17", "HTTP 503 for https://feeds.example/feed?page=18"]
    timeout = ["timed out after 30 seconds reading /advisories"]
    a.dead[http[0]] = _dead_letter(engine, TENANT_A, "http_5xx", http)
    a.dead[timeout[0]] = _dead_letter(engine, TENANT_A, "timeout", timeout)

    b.succeeded = _succeed(engine, TENANT_B, 19)
    b.dead["schema"] = _dead_letter(engine, TENANT_B, "schema_mismatch", ["schema mismatch: field 'cvss' missing"])

    # Tenant B: one job waiting for its next attempt (an hour away).
    (row,) = _start(engine, TENANT_B, 1)
    with engine.begin() as conn:
        ledger_jobs.fail_retryable_jobs(
            conn, [row["id"]], [row["lease_id"]], [3600.0], ["http_429"], ["HTTP 429 too many requests"], actor=WORKER
        )
    b.retrying = [row["id"]]

    # Tenant A: one running job with progress, two log lines and an artifact.
    (rich,) = _start(engine, TENANT_A, 1)
    with engine.begin() as conn:
        ledger_jobs.set_progress(conn, [rich["id"]], [rich["lease_id"]], [0.4], ["page 2 of 5"])
        now = dt.datetime.now(dt.UTC)
        ledger_jobs.insert_logs(
            conn,
            [rich["id"]] * 2,
            [1, 1],
            [1, 2],
            [now, now],
            ["info", "warning"],
            ["fetched page 1", "slow upstream, token=abcd1234 retrying"],
        )
        ledger_jobs.insert_artifact(
            conn,
            job_id=rich["id"],
            lease_id=rich["lease_id"],
            name="report.txt",
            media_type="text/plain",
            sha256=hashlib.sha256(ARTIFACT).hexdigest(),
            data=ARTIFACT,
        )
    a.running = [rich["id"]]

    # Queued last, so the claims above never pick them.
    a.queued = _submit(engine, TENANT_A, 1, {"url": "https://feeds.example/a", "api_key": SECRET})
    a.queued += _submit(engine, TENANT_A, 2)
    b.queued = _submit(engine, TENANT_B, 3)
    with engine.begin() as conn:
        ledger_jobs.sample_queue_depth(conn)
    return Seeded(
        a=a,
        b=b,
        rich_job=rich["id"],
        secret_job=a.queued[0],
        clusters_a={"http_5xx": http, "timeout": timeout},
    )


@dataclass
class Flow:
    """seed_flow's sources and jobs."""

    #: acme's nvd jobs: started (the one still running), and waiting for a token.
    running: list[int]
    rate_limited: list[int]
    #: The job an upstream 429 sent back (waits rate_limited until the bucket unblocks).
    throttled_by_429: int


def seed_flow(engine: sa.Engine) -> Flow:
    """acme: sources nvd and nvd-cve on nvd.example (one bucket: 1/s, burst 2; nvd max 4
    active), osv on osv.example (10/s) whose circuit opened after 10 failures. Four nvd jobs
    claimed at once: two start, two wait rate_limited; one started job gets an upstream 429
    (rate halved to 0.5/s, bucket blocked 60 s). globex: source ghsa on api.ghsa.example (5/s),
    paused."""
    admin = _admin()
    control.add_source(
        engine, admin, tenant=TENANT_A, name="nvd", host="nvd.example", rate=1, burst=2, max_active=4, reason="seed"
    )
    control.add_source(engine, admin, tenant=TENANT_A, name="nvd-cve", host="nvd.example", reason="seed")
    control.add_source(engine, admin, tenant=TENANT_A, name="osv", host="osv.example", rate=10, reason="seed")
    control.add_source(engine, admin, tenant=TENANT_B, name="ghsa", host="api.ghsa.example", rate=5, reason="seed")
    specs = [control.JobSpec(tenant=TENANT_A, job_type=JOB_TYPE, payload={"page": i}, source="nvd") for i in range(4)]
    ids = control.submit_many(engine, admin, specs, doorbell=control.NoDoorbell()).job_ids
    with engine.begin() as conn:
        rows = ledger_jobs.claim_and_start_jobs(conn, queue=QUEUE, limit=4, owner=WORKER, job_types=[JOB_TYPE])
    assert len(rows) == 2
    hit, running = rows
    with engine.begin() as conn:
        ledger_jobs.throttle_jobs(
            conn, [hit["id"]], [hit["lease_id"]], [60.0], ["HTTP 429 Too Many Requests"], actor=WORKER
        )
        ledger_jobs.record_outcomes(conn, [hit["source_id"]], ["throttled"], [60.0], [hit["started_at"]], actor=WORKER)
        osv = conn.execute(sa.text("SELECT id FROM sources WHERE name = 'osv'")).scalar_one()
        ledger_jobs.record_outcomes(conn, [osv] * 10, ["fail"] * 10, [None] * 10, [None] * 10, actor=WORKER)
    control.pause(engine, admin, tenant=TENANT_B, source="ghsa", reason="globex maintenance")
    started = {hit["id"], running["id"]}
    return Flow(
        running=[running["id"]],
        rate_limited=[i for i in ids if i not in started],
        throttled_by_429=hit["id"],
    )


@pytest.fixture
def console(services: Any, ledger: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[sa.Engine]:
    """The app's environment: the test ledger, no preset token, fresh settings."""
    monkeypatch.setenv("ORCH_DATABASE_URL", services.database_url)
    monkeypatch.delenv("ORCH_CONSOLE_TOKEN", raising=False)
    settings.get_settings.cache_clear()
    yield ledger
    settings.get_settings.cache_clear()


@pytest.fixture
def seeded(console: sa.Engine) -> Seeded:
    return seed(console)


@pytest.fixture
def flow(console: sa.Engine) -> Flow:
    return seed_flow(console)


@pytest.fixture
def make_token(console: sa.Engine) -> Callable[..., str]:
    def make(subject: str, scopes: set[Scope], tenants: set[str] | None = None) -> str:
        return control.create_token(
            console,
            _admin(),
            subject=subject,
            scopes=frozenset(scopes),
            tenants=None if tenants is None else frozenset(tenants),
        )

    return make


def open_app(token: str | None, page: str | None = None) -> AppTest:
    """Run the console as a signed-in browser session would, on `page` (None: Overview)."""
    at = AppTest.from_file(str(HOME), default_timeout=60)
    if token is not None:
        at.session_state["orch_token"] = token
    at.run()
    if page is not None:
        at.switch_page(PAGES[page]).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def audit_count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM audit_log")).scalar_one())


def last_audit(engine: sa.Engine) -> sa.RowMapping:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT * FROM audit_log ORDER BY id DESC LIMIT 1")).mappings().one()


def job_state(engine: sa.Engine, job_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(
            conn.execute(sa.text("SELECT state, replay_of FROM jobs WHERE id = :id"), {"id": job_id}).mappings().one()
        )


def texts(at: AppTest) -> str:
    """Everything the page wrote as text (markdown, captions, alerts, code, text)."""
    parts: list[str] = []
    for kind in ("markdown", "caption", "success", "info", "warning", "error", "code", "text", "title", "subheader"):
        parts += [str(e.value) for e in getattr(at, kind)]
    return "\n".join(parts)


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def button(at: AppTest, label: str) -> Any:
    matches = [b for b in at.button if b.label == label]
    assert len(matches) == 1, f"{len(matches)} buttons labelled {label!r}: {[b.label for b in at.button]}"
    return matches[0]


def text_input(at: AppTest, label: str) -> Any:
    matches = [t for t in at.text_input if t.label == label]
    assert len(matches) == 1, f"{len(matches)} text inputs labelled {label!r}"
    return matches[0]
