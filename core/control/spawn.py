"""The spawn a running handler does into its own run (JobContext.spawn; docs/design.md, "DAG
runs"): its authority is the lease it holds on a running job of the run."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace

import sqlalchemy as sa

from core.control.common import catalog
from core.control.jobs import JobSpec, _source_ids
from core.control.runs import _check_jobs, _new_job
from core.domain import dag, errors, payloads
from core.domain.dag import RunState
from core.domain.states import State
from core.ledger import jobs as ledger
from core.ledger import runs as ledger_runs


def spawn(
    engine: sa.Engine, *, job_id: int, lease_id: uuid.UUID, specs: Sequence[JobSpec], actor: str
) -> tuple[dict[str, int], list[tuple[int, str]]]:
    """Add jobs to the run of running job `job_id` (its handler holds `lease_id`). Their
    parents may be the spawning job (the default), each other, or jobs of the run that have
    ended; a job that waits on the spawning job (a join) waits for these as well. Spawning a
    key again with the same job (a retried handler) returns the existing job. Returns
    ({key: job id}, doorbells to ring after commit). Raises LeaseLost, InvalidInput (bad
    jobs, a conflicting key, the run's size limit), InvalidTransition (the run was canceled)."""
    if not specs:
        return {}, []
    with engine.begin() as conn:
        me = ledger_runs.lock_spawner(conn, job_id, lease_id)
        if me is None:
            raise errors.LeaseLost(f"job {job_id}: lease lost, or not a running job of a run; nothing spawned")
        run_id, tenant = int(me["run_id"]), me["tenant"]
        specs = [s if s.tenant == tenant else replace(s, tenant=tenant) for s in specs]
        rows = ledger_runs.run_job_rows(conn, run_id)
        current = {r["key"]: r for r in rows}
        ended = {k for k, r in current.items() if State(r["state"]) in dag.SUCCEEDED | dag.FAILED | dag.SKIPPED}
        types = catalog.job_types(conn, {s.job_type for s in specs})
        fresh: list[JobSpec] = []
        result: dict[str, int] = {}
        for s in specs:
            if s.key is not None and s.key in current:
                result[s.key] = _respawned(current[s.key], s, job_id)
            else:
                fresh.append(s)
        if not fresh:
            return result, []
        checked, _ = _check_jobs(tenant, fresh, types, known=sorted(ended | {me["key"]}))
        new_keys = {c.key for c in checked}
        for c in checked:
            for p in c.after:
                if p not in new_keys and p not in ended and p != me["key"]:
                    raise errors.InvalidInput(
                        f"spawned job {c.key!r} is after {p!r}, which has not ended: a spawned job may follow "
                        "the spawning job, jobs spawned with it, or jobs of the run that have ended"
                    )
        source_ids = _source_ids(conn, {(tenant, s.source) for s in fresh if s.source is not None})
        ids = ledger.allocate_job_ids(conn, len(checked))
        by_key = {c.key: ids[i] for i, c in enumerate(checked)}
        joins = ledger_runs.pending_children(conn, job_id)
        jobs = [
            _new_job(c, by_key[c.key], int(me["tenant_id"]), run_id, types, source_ids, State.PENDING) for c in checked
        ]
        run_rows = []
        for c in checked:
            done = [State(current[p]["state"]) for p in c.after if p in ended and p not in new_keys]
            ok, failed, skipped = dag.parent_counts(done)
            run_rows.append(
                ledger_runs.NewRunJob(
                    by_key[c.key],
                    run_id,
                    c.key,
                    c.rule.value,
                    c.spec.allow_failure,
                    job_id,
                    len(c.after),
                    ok,
                    failed,
                    skipped,
                )
            )
        parent_id = {**{k: int(r["id"]) for k, r in current.items()}, **by_key}
        edges = [(parent_id[p], by_key[c.key]) for c in checked for p in c.after]
        edges += [(by_key[c.key], j) for c in checked for j in joins]
        total = ledger_runs.grow_run(conn, run_id, len(checked))
        if total is None:
            run = ledger_runs.run_row(conn, run_id)
            assert run is not None
            if run["state"] != RunState.RUNNING or run["cancel_requested"]:
                raise errors.InvalidTransition(f"run {run_id} is {run['state']} or being canceled; nothing spawned")
            raise errors.InvalidInput(
                f"run {run_id} would have {run['jobs_total'] + len(checked)} jobs; at most {run['max_jobs']}"
            )
        ledger.insert_jobs(conn, jobs, actor=actor, reason=f"spawned by job {job_id}")
        ledger_runs.insert_run_jobs(conn, run_rows)
        ledger_runs.add_parents(conn, joins, len(checked))
        ledger_runs.insert_edges(conn, run_id, edges)
        ledger_runs.advance_runs(conn, check=ids, actor=actor)
        rung = ledger_runs.ring_unrung(conn, [run_id])
        result.update(by_key)
    return result, rung


def _respawned(existing: sa.RowMapping, spec: JobSpec, spawner: int) -> int:
    """A key spawned again by the same job with the same job: the existing one."""
    same = (
        existing["spawned_by"] is not None
        and int(existing["spawned_by"]) == spawner
        and existing["job_type"] == spec.job_type
        and payloads.digest(payloads.canonical_json(existing["payload"]))
        == payloads.digest(payloads.check_payload(spec.payload))
    )
    if not same:
        raise errors.InvalidInput(f"the run has a job with key {existing['key']!r} already")
    return int(existing["id"])
