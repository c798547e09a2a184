"""What the PostgreSQL server spends on a benchmark's database: CPU seconds of its backends
(from /proc, so only when the server runs on this machine) and, where the server has
pg_stat_statements loaded, the statements that took the time.

    meter = PgMeter.start(engine)   # before the measured work
    ...
    figures = meter.stop()          # {"pg_cpu_s": ..., "statements": [...]} or Nones

CPU is read per backend process (utime + stime of /proc/PID/stat, clock ticks), for every
backend whose command line names the database; a backend that exits during the
measurement takes its CPU with it, so the pool's long-lived connections are what this
counts. Statement times are pg_stat_statements' total_exec_time for the database (wall time
inside the executor, not CPU), reset at start when the extension is there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _backend_cpu(dbname: str) -> dict[int, float] | None:
    """CPU seconds so far of each local backend connected to `dbname`; None without /proc."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    out: dict[int, float] = {}
    needle = f" {dbname} "
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if not cmdline.startswith("postgres:") or needle not in cmdline:
                continue
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(entry.name)] = (int(fields[11]) + int(fields[12])) / _TICK
    return out


def _has_statements(conn: sa.Connection) -> bool:
    try:
        loaded = conn.execute(sa.text("SELECT current_setting('shared_preload_libraries')")).scalar_one()
        if "pg_stat_statements" not in loaded:
            return False
        conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
        return True
    except sa.exc.SQLAlchemyError:
        return False


@dataclass
class PgMeter:
    engine: sa.Engine
    dbname: str
    statements: bool
    cpu_before: dict[int, float] | None = field(default=None)

    @classmethod
    def start(cls, engine: sa.Engine) -> PgMeter:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            dbname = conn.execute(sa.text("SELECT current_database()")).scalar_one()
            statements = _has_statements(conn)
            if statements:
                conn.execute(
                    sa.text("SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database WHERE datname = :d))"),
                    {"d": dbname},
                )
        return cls(engine, dbname, statements, _backend_cpu(dbname))

    def stop(self, top: int = 12) -> dict[str, Any]:
        after = _backend_cpu(self.dbname)
        cpu = None
        if self.cpu_before is not None and after is not None:
            cpu = sum(v - self.cpu_before.get(pid, 0.0) for pid, v in after.items())
        rows: list[dict[str, Any]] = []
        if self.statements:
            with self.engine.connect() as conn:
                for r in conn.execute(
                    sa.text(
                        "SELECT calls, total_exec_time, rows, left(regexp_replace(query, '\\s+', ' ', 'g'), 110) AS q"
                        " FROM pg_stat_statements"
                        " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = :d)"
                        " ORDER BY total_exec_time DESC LIMIT :n"
                    ),
                    {"d": self.dbname, "n": top},
                ).mappings():
                    rows.append(
                        {"calls": r["calls"], "ms": round(r["total_exec_time"], 1), "rows": r["rows"], "query": r["q"]}
                    )
        return {"pg_cpu_s": None if cpu is None else round(cpu, 3), "statements": rows}


def print_statements(rows: list[dict[str, Any]], n_jobs: int) -> None:
    """The statements that took the server's time, per 1,000 jobs."""
    if not rows:
        return
    total = sum(r["ms"] for r in rows) or 1.0
    print(f"  {'ms/1k jobs':>10} {'share':>6} {'calls/1k':>8}  statement")
    for r in rows:
        per_k = 1000 / n_jobs
        print(f"  {r['ms'] * per_k:10.1f} {r['ms'] / total:6.1%} {r['calls'] * per_k:8.1f}  {r['query']}")


def processes_cpu(pids: list[int]) -> float | None:
    """CPU seconds so far of these local processes (all their threads); None without /proc."""
    total = 0.0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        fields = stat[stat.rindex(")") + 2 :].split()
        total += (int(fields[11]) + int(fields[12])) / _TICK
    return total
