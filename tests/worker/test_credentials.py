"""Credentials reach only the process that needs them: `orch up` gives its admin token to the
console alone, worker processes drop API tokens from their environment before any handler
runs, and the local admin token has every scope, including scopes added since it was made."""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path

import pytest
import sqlalchemy as sa

from core import control
from core.domain import auth
from core.domain.auth import Scope, local_principal
from tests.conftest import Services, orch_env, session_namespace, start_orch, stop_process, wait_until
from worker.cli.common import Context
from worker.cli.up import admin_token

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _probe_logs(engine: sa.Engine, job_id: int) -> list[str]:
    with engine.connect() as conn:
        return [
            r[0]
            for r in conn.execute(
                sa.text("SELECT message FROM job_logs WHERE job_id = :id ORDER BY id"), {"id": job_id}
            )
        ]


def _run_probe(engine: sa.Engine, secret: str) -> list[str]:
    job = control.submit(
        engine,
        local_principal("tests"),
        control.JobSpec("creds", "test.env_probe", {"secret": secret}),
        doorbell=control.NoDoorbell(),
    )
    wait_until(lambda: len(_probe_logs(engine, job)) == 2, timeout=60, what="the probe job to log")
    return _probe_logs(engine, job)


def test_orch_up_gives_its_admin_token_to_no_handler(services: Services, ledger: sa.Engine, tmp_path: Path) -> None:
    data = tmp_path / "orch-data"
    env = orch_env(
        services,
        session_namespace(),
        ORCH_DATA_DIR=str(data),
        ORCH_METRICS_PORT=str(_free_port()),
        ORCH_SCHEDULER_INTERVAL_S="0.2",
        ORCH_SHUTDOWN_GRACE_S="2",
    )
    env.pop("ORCH_TOKEN", None)
    log = tmp_path / "up.log"
    proc = start_orch(["up", "--no-console", "--processes", "1", "--threads", "2"], env, log)
    try:
        wait_until(
            lambda: "Ctrl-C stops everything" in log.read_text(errors="replace") or proc.poll() is not None,
            timeout=90,
            what="orch up to start",
        )
        assert proc.poll() is None, log.read_text()
        token = (data / "admin-token").read_text().strip()
        assert token.startswith(auth.TOKEN_PREFIX)
        names, holders = _run_probe(ledger, token)
    finally:
        code = stop_process(proc)
    assert code == 0, log.read_text()
    assert holders == "holding the secret: none", holders
    assert "ORCH_CONSOLE_TOKEN" not in names and "ORCH_TOKEN" not in names, names
    assert "ORCH_DATABASE_URL" in names  # the probe did see the variables a worker needs


def test_worker_processes_drop_api_tokens(services: Services, ledger: sa.Engine, tmp_path: Path) -> None:
    secret = auth.new_token()
    env = orch_env(services, session_namespace(), ORCH_TOKEN=secret, ORCH_CONSOLE_TOKEN=secret)
    log = tmp_path / "worker.log"
    proc = start_orch(["worker", "--processes", "1", "--threads", "2"], env, log)
    try:
        wait_until(lambda: " ready: queues=" in log.read_text(errors="replace"), timeout=60, what="the worker")
        # Without a scheduler the doorbell must come from the submit itself.
        from worker.runtime import broker as broker_mod

        bell = broker_mod.RedisDoorbell(
            broker_mod.build_broker(services.redis_url, namespace=env["ORCH_BROKER_NAMESPACE"])
        )
        job = control.submit(
            ledger,
            local_principal("tests"),
            control.JobSpec("creds", "test.env_probe", {"secret": secret}),
            doorbell=bell,
        )
        wait_until(lambda: len(_probe_logs(ledger, job)) == 2, timeout=60, what="the probe job to log")
        names, holders = _probe_logs(ledger, job)
    finally:
        assert stop_process(proc) == 0, log.read_text()
    assert holders == "holding the secret: none", holders
    assert "ORCH_TOKEN" not in names and "ORCH_CONSOLE_TOKEN" not in names, names


def test_an_old_admin_token_gets_every_scope(ledger: sa.Engine, tmp_path: Path) -> None:
    old = control.create_token(
        ledger,
        local_principal(),
        subject="admin",
        scopes=frozenset({Scope.READ, Scope.OPERATE}),
        tenants=None,
        reason="made by an older orch up",
    )
    (tmp_path / "admin-token").write_text(old + "\n")
    ctx = Context(argparse.Namespace(token=None))
    ctx._engine = ledger
    token, path = admin_token(ctx, tmp_path)
    assert (token, path) == (old, tmp_path / "admin-token")
    principal = control.authenticate(ledger, token)
    assert principal.scopes == auth.ALL_SCOPES and principal.tenants is None
    with ledger.connect() as conn:
        actions = [r[0] for r in conn.execute(sa.text("SELECT action FROM audit_log ORDER BY id"))]
    assert actions == ["token.create", "token.scopes"]
    # Idempotent: a token that has every scope is left alone.
    admin_token(ctx, tmp_path)
    with ledger.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM audit_log")).scalar_one() == 2


def test_a_token_file_of_another_ledger_is_replaced(ledger: sa.Engine, tmp_path: Path) -> None:
    (tmp_path / "admin-token").write_text(auth.new_token() + "\n")
    ctx = Context(argparse.Namespace(token=None))
    ctx._engine = ledger
    token, path = admin_token(ctx, tmp_path)
    assert path.read_text().strip() == token
    assert control.authenticate(ledger, token).scopes == auth.ALL_SCOPES
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
