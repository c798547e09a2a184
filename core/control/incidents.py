"""Incidents open and resolve themselves: each scheduler pass (`evaluate`) reads the
conditions from small indexes, and in one transaction, serialised between schedulers,
starts the `for` period of a new condition, opens an incident for one that held through
it, bumps an unresolved incident whose condition holds (one occurrence more when it had
cleared in between), and resolves one whose condition has been clear for the quiet
period. Once resolved, the same key opens a new incident. Operators acknowledge and
resolve with a reason (scope orch:operate), audited; acknowledging mutes nothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from core.control import common
from core.control.common import append_audit
from core.domain import errors, slo
from core.domain import incidents as domain
from core.domain.auth import Principal, Scope
from core.domain.incidents import Condition, Policy
from core.ledger import incidents as ledger
from core.ledger.reads import Visible
from core.ledger.reads import failures as reads


@dataclass
class PassResult:
    conditions: int = 0
    opened: list[int] = field(default_factory=list)
    resolved: list[int] = field(default_factory=list)


def conditions(conn: sa.Connection, policy: Policy) -> list[Condition]:
    """What is wrong now, by kind (domain.EVALUATED)."""
    found: list[Condition] = []
    for r in ledger.dead_letter_counts(conn, window_s=policy.dlq_window_s, at_least=policy.dlq_warning):
        verdict = domain.dlq_severity(int(r["n"]), policy)
        if verdict is None:
            continue
        severity, sustains_only = verdict
        found.append(
            Condition(
                "dlq_growth",
                int(r["tenant_id"]),
                r["tenant"],
                "dead_letters",
                severity,
                {"dead_letters": int(r["n"]), "window_s": policy.dlq_window_s, "job_ids": list(r["job_ids"])},
                sustains_only,
            )
        )
    for r in ledger.open_circuits(conn, open_s=policy.circuit_open_s):
        found.append(
            Condition(
                "circuit_open",
                int(r["tenant_id"]),
                r["tenant"],
                f"source:{r['source']}",
                "critical",
                {
                    "source": r["source"],
                    "source_id": int(r["source_id"]),
                    "host": r["host"],
                    "circuit_state": r["circuit_state"],
                    "since": r["circuit_since"].isoformat(),
                    "open_s": round(float(r["open_s"]), 1),
                },
            )
        )
    for r in ledger.throttled_sources(conn):
        found.append(
            Condition(
                "sustained_throttling",
                int(r["tenant_id"]),
                r["tenant"],
                f"source:{r['source']}",
                "warning",
                {
                    "source": r["source"],
                    "source_id": int(r["source_id"]),
                    "host": r["host"],
                    "job_ids": list(r["job_ids"]),
                },
                hold_s=policy.throttled_s,
            )
        )
    for r in ledger.long_running(conn, running_s=policy.running_s):
        found.append(
            Condition(
                "stuck_job",
                int(r["tenant_id"]),
                r["tenant"],
                f"job_type:{r['job_type']}",
                "warning",
                {
                    "job_type": r["job_type"],
                    "running": int(r["n"]),
                    "job_ids": list(r["job_ids"]),
                    "longest_s": round(float(r["longest_s"]), 1),
                    "limit_s": policy.running_s,
                },
            )
        )
    for r in ledger.long_ready(conn, ready_s=policy.ready_s):
        found.append(
            Condition(
                "stuck_job",
                int(r["tenant_id"]),
                r["tenant"],
                f"ready:job_type:{r['job_type']}",
                "warning",
                {
                    "job_type": r["job_type"],
                    "queue": r["queue"],
                    "ready": int(r["n"]),
                    "job_ids": list(r["job_ids"]),
                    "longest_s": round(float(r["longest_s"]), 1),
                    "limit_s": policy.ready_s,
                },
            )
        )
    return found


def burn_conditions(engine: sa.Engine, objective: slo.Slo) -> list[Condition]:
    """fast_burn: per tenant and job type, the error budget burning at the fast-burn alert's
    rate (core.domain.slo.ALERTS[0]: 14.4x over both 1 h and 5 min). Reads up to a rollup
    bucket of finished jobs per window, so the scheduler runs it every FAST_BURN_EVERY_S and
    passes the result to each `evaluate` in between."""
    long_w, short_w, threshold, _ = slo.ALERTS[0]
    windows = {long_w: slo.WINDOWS[long_w], short_w: slo.WINDOWS[short_w]}
    with engine.connect() as conn:
        rows = reads.finished_by_window(conn, Visible(), job_type=None, windows=windows)
        ids = {r["name"]: int(r["id"]) for r in conn.execute(sa.text("SELECT id, name FROM tenants")).mappings()}
    found = []
    for r in rows:
        rates = {
            w: slo.burn_rate(int(r[f"failed_{w}"]), int(r[f"total_{w}"]), objective.target) for w in (long_w, short_w)
        }
        if min(rates.values()) >= threshold and r["tenant"] in ids:
            found.append(
                Condition(
                    "fast_burn",
                    ids[r["tenant"]],
                    r["tenant"],
                    f"job_type:{r['job_type']}",
                    "critical",
                    {
                        "job_type": r["job_type"],
                        "slo": objective.name,
                        "target": objective.target,
                        "threshold": threshold,
                        **{f"burn_rate_{w}": round(rate, 2) for w, rate in rates.items()},
                        **{f"failed_{w}": int(r[f"failed_{w}"]) for w in rates},
                        **{f"total_{w}": int(r[f"total_{w}"]) for w in rates},
                    },
                )
            )
    return found


def evaluate(engine: sa.Engine, policy: Policy, extra: Sequence[Condition] = ()) -> PassResult:
    """One pass: read the conditions (plus `extra`, read less often by the caller: the fast
    burn), then move pending conditions and incidents on."""
    result = PassResult()
    with engine.begin() as conn:
        now = conditions(conn, policy) + list(extra)
        result.conditions = len(now)
        ledger.lock(conn)
        open_by_key = {r["dedup_key"]: r for r in ledger.unresolved(conn)}
        pending = {r["dedup_key"]: r for r in ledger.pending(conn)}
        if not now and not open_by_key and not pending:
            return result  # nothing wrong, nothing to move on
        seen = {c.dedup_key: c for c in now}
        bump = [c for k, c in seen.items() if k in open_by_key]
        ledger.bump(
            conn,
            [int(open_by_key[c.dedup_key]["id"]) for c in bump],
            [c.severity for c in bump],
            [dict(c.evidence) for c in bump],
        )
        # Conditions with no incident: their `for` period starts or goes on (one that only
        # sustains keeps a period going but starts none).
        waiting = [c for k, c in seen.items() if k not in open_by_key and (k in pending or not c.sustains_only)]
        ledger.upsert_pending(conn, [_row(c) for c in waiting])
        due = [
            c
            for c in waiting
            if c.dedup_key in pending
            and float(pending[c.dedup_key]["held_s"]) >= (policy.for_s if c.hold_s is None else c.hold_s)
        ]
        opened = ledger.open_incidents(conn, [_row(c) for c in due])
        result.opened = [int(r["id"]) for r in opened]
        gone = [k for k in pending if k not in seen]
        ledger.forget_pending(conn, gone + [r["dedup_key"] for r in opened])
        cleared = ledger.clear(
            conn,
            [int(r["id"]) for k, r in open_by_key.items() if k not in seen],
            quiet_s=policy.quiet_s,
            actor=domain.ACTOR,
        )
        result.resolved = [int(r["id"]) for r in cleared if r["state"] == "resolved"]
        ledger.announce(
            conn,
            [(r["tenant_id"], "incident.opened", _payload(r, domain.ACTOR)) for r in opened]
            + [
                (r["tenant_id"], "incident.resolved", _payload(r, domain.ACTOR))
                for r in cleared
                if r["state"] == "resolved"
            ],
        )
    return result


def _row(c: Condition) -> dict[str, Any]:
    return {
        "dedup_key": c.dedup_key,
        "tenant_id": c.tenant_id,
        "kind": c.kind,
        "scope": c.scope,
        "severity": c.severity,
        "evidence": dict(c.evidence),
    }


def _payload(r: Any, actor: str, reason: str | None = None) -> dict[str, Any]:
    return {
        "incident_id": int(r["id"]),
        "kind": r["kind"],
        "dedup_key": r["dedup_key"],
        "severity": r["severity"],
        "actor": actor,
        "reason": reason,
    }


def acknowledge(engine: sa.Engine, principal: Principal, incident_id: int, *, reason: str | None) -> str:
    """open -> acknowledged; records who took it. Raises NotFound, Forbidden,
    ReasonRequired, InvalidTransition (not open)."""
    return _operate(engine, principal, incident_id, reason, "acknowledge")


def resolve(engine: sa.Engine, principal: Principal, incident_id: int, *, reason: str | None) -> str:
    """open or acknowledged -> resolved by hand. Raises as acknowledge does (already resolved)."""
    return _operate(engine, principal, incident_id, reason, "resolve")


def _operate(engine: sa.Engine, principal: Principal, incident_id: int, reason: str | None, action: str) -> str:
    why = common.require_reason(f"{action} incident", reason, None)
    principal.require(Scope.OPERATE)
    with engine.begin() as conn:
        row = ledger.lock_incident(conn, incident_id)
        if row is None:
            raise errors.NotFound(f"no incident {incident_id}; list them with `orch incidents list`")
        tenant = row["tenant"]
        if tenant is None and principal.tenants is not None:
            raise errors.Forbidden(f"{principal.subject} may not act on incidents that span tenants")
        principal.require(Scope.OPERATE, tenant)
        if action == "acknowledge":
            done = ledger.acknowledge(conn, incident_id, actor=principal.subject, reason=why)
            new_state = "acknowledged"
        else:
            done = ledger.resolve(conn, incident_id, actor=principal.subject, reason=why)
            new_state = "resolved"
        if not done:
            raise errors.InvalidTransition(
                f"incident {incident_id} is {row['state']}; only "
                + (
                    "an open incident can be acknowledged"
                    if action == "acknowledge"
                    else "an unresolved one can be resolved"
                )
            )
        append_audit(
            conn,
            principal,
            Scope.OPERATE,
            f"incident_{action}",
            f"incident {incident_id}",
            tenant=tenant,
            reason=why,
            details={"kind": row["kind"], "dedup_key": row["dedup_key"], "from_state": row["state"]},
        )
        ledger.announce(conn, [(row["tenant_id"], f"incident.{new_state}", _payload(row, principal.subject, why))])
    return new_state
