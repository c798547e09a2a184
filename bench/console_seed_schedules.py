"""The schedules of bench/console.py's ledger (see console_seed.py): a few hundred schedules
through core.control, 20 days of their ticks and windows in SQL with three scheduler outages,
backfills of missed ticks and over older ranges in every state, streams, watermarks and their
samples, and the tick counters."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from bench.console_seed import JOB_TYPES, SCHEDULES, SOURCES, TENANT_SHARE, TENANTS, Progress, cuts, script

#: The paused schedules paused two days ago; every tick since the first, by its schedule's
#: trigger: missed in scheduler outages, skipped now and then by a slow feed, paused while
#: paused, else fired (a job of that moment); a window per fired tick (the latest of a stream
#: still running if it fired minutes ago). The last outage's missed ticks wait for an operator
#: on a third of the schedules (hidden from backfill_missed meanwhile, by backfill_id -1).
TICKS_SQL = """
UPDATE schedules SET paused_at = now() - interval '2 days' WHERE paused;
INSERT INTO schedule_ticks (schedule_id, scheduled_for, interval_start, status, job_id, note, recorded_at, fired_at)
SELECT s.id, f.at, f.prev, x.status,
       CASE WHEN x.status = 'fired' THEN greatest(1, least(:n, ceil(extract(epoch FROM f.at - CAST(:t0 AS timestamptz))
                                                                     / :span_s * :n)))::bigint END,
       CASE x.status WHEN 'missed' THEN 'late beyond the catch-up window'
                     WHEN 'skipped' THEN 'overlap skip: the previous firing has not ended' END,
       f.at + CASE WHEN x.status = 'missed' THEN interval '20 minutes' ELSE interval '50 milliseconds' END,
       CASE WHEN x.status = 'fired' THEN f.at + interval '80 milliseconds' END
FROM schedules AS s
CROSS JOIN LATERAL (
    SELECT g AS at, g - interval '15 minutes' AS prev
    FROM generate_series(date_trunc('hour', CAST(:t0 AS timestamptz)), now(), interval '15 minutes') AS g
    WHERE left(s.name, 1) = 'q'
    UNION ALL
    SELECT g, g - interval '1 hour'
    FROM generate_series(date_trunc('hour', CAST(:t0 AS timestamptz)), now(), interval '1 hour') AS g
    WHERE left(s.name, 1) = 'h'
    UNION ALL
    SELECT (d::date + time '02:30') AT TIME ZONE s.timezone, (d::date - 1 + time '02:30') AT TIME ZONE s.timezone
    FROM generate_series(CAST(:t0 AS timestamptz)::date + 1, now()::date, interval '1 day') AS d
    WHERE left(s.name, 1) = 'd'
) AS f
CROSS JOIN LATERAL (SELECT CASE
    WHEN s.paused_at IS NOT NULL AND f.at >= s.paused_at THEN 'paused'
    WHEN EXISTS (SELECT 1 FROM unnest(CAST(:outages AS timestamptz[]), CAST(:outage_ends AS timestamptz[])) AS o(a, b)
                 WHERE f.at >= o.a AND f.at < o.b) THEN 'missed'
    WHEN s.id % 5 = 0 AND left(s.name, 1) = 'q' AND f.at > now() - interval '1 day'
         AND pg_temp.u(s.id * 100000000 + (extract(epoch FROM f.at) / 60)::bigint, 30) < 0.05 THEN 'skipped'
    ELSE 'fired' END AS status) AS x
WHERE f.at < now() - interval '1 minute' AND f.at > CAST(:t0 AS timestamptz);
INSERT INTO windows (stream_id, tenant_id, span_start, span_end, claim, state, schedule_id, job_id, created_at,
                     started_at, finished_at)
SELECT s.stream_id, s.tenant_id, k.interval_start, k.scheduled_for,
       orch_window_claim(s.stream_id, k.interval_start, k.scheduled_for), x.state, s.id, k.job_id, k.fired_at,
       k.fired_at + interval '1 second',
       CASE WHEN x.state <> 'running' THEN k.fired_at + make_interval(secs => 2 + 60 * pg_temp.u(k.job_id, 31)) END
FROM schedule_ticks AS k JOIN schedules AS s ON s.id = k.schedule_id
CROSS JOIN LATERAL (SELECT CASE WHEN k.scheduled_for > now() - interval '10 minutes' THEN 'running'
                                WHEN k.scheduled_for > now() - interval '1 day' AND pg_temp.u(k.job_id, 32) < 0.01
                                THEN 'failed' ELSE 'succeeded' END AS state) AS x
WHERE k.status = 'fired';
UPDATE schedule_ticks AS k SET window_id = w.id FROM windows AS w
WHERE k.status = 'fired' AND w.schedule_id = k.schedule_id AND w.span_end = k.scheduled_for;
UPDATE schedule_ticks SET backfill_id = -1
WHERE schedule_id % 3 = 0 AND status = 'missed' AND backfill_id IS NULL AND scheduled_for >= :since"""
#: Scheduler outages (days and minutes before this hour, minutes long): their ticks are missed.
OUTAGES = ((15, 40, 40), (8, 0, 120), (1, 10, 25))
MISSED_SQL = """SELECT DISTINCT t.name, s.name FROM schedule_ticks AS k JOIN schedules AS s ON s.id = k.schedule_id
JOIN tenants AS t ON t.id = s.tenant_id WHERE k.status = 'missed' AND k.backfill_id IS NULL ORDER BY 1, 2"""
#: The hidden ticks come back; backfills of missed ticks ran to the end, long ago.
MISSED_DONE_SQL = """
UPDATE schedule_ticks SET backfill_id = NULL WHERE backfill_id = -1;
UPDATE windows AS w SET state = 'succeeded', started_at = w.span_end + interval '3 hours',
       finished_at = w.span_end + interval '3 hours 30 seconds'
FROM backfills AS b WHERE b.id = w.backfill_id AND b.schedule_id IS NOT NULL AND b.state = 'planned'
  AND w.state = 'planned';
UPDATE backfills SET state = 'succeeded',
       started_at = least(range_end + interval '3 hours', now() - interval '1 minute'),
       finished_at = least(range_end + interval '3 hours 30 seconds', now()), updated_at = now()
WHERE schedule_id IS NOT NULL AND state = 'planned'"""
#: One backfill's windows in event-time order: the first `ok` share succeeded, `running` of
#: them running, the rest `rest`; the backfill in `state`.
BACKFILL_STATE_SQL = """
WITH w AS (SELECT id, row_number() OVER (ORDER BY span_start) AS k, count(*) OVER () AS n
           FROM windows WHERE backfill_id = :id)
UPDATE windows AS x SET
    state = CASE WHEN w.k <= :ok * w.n THEN 'succeeded' WHEN w.k <= :ok * w.n + :running THEN 'running' ELSE :rest END,
    started_at = CASE WHEN w.k <= :ok * w.n + :running THEN now() - make_interval(secs => 30 * (w.n - w.k + 1)) END,
    finished_at = CASE WHEN w.k <= :ok * w.n OR (w.k > :ok * w.n + :running AND :rest <> 'planned')
                       THEN now() - make_interval(secs => 30 * (w.n - w.k)) END
FROM w WHERE x.id = w.id;
UPDATE backfills SET state = :state, operator_paused = :paused, started_at = now() - interval '2 hours',
       finished_at = CASE WHEN :state IN ('succeeded', 'failed', 'canceled') THEN now() - interval '5 minutes' END,
       updated_at = now()
WHERE id = :id"""
#: Streams start at their first window; their done prefix as orch_stream_advance keeps it; the
#: schedules' last firing; tick counters; a watermark sample a minute over the 7 days kept.
STREAMS_SQL = """
UPDATE streams AS st SET origin = m.first
FROM (SELECT stream_id, min(span_start) AS first FROM windows GROUP BY 1) AS m
WHERE m.stream_id = st.id AND m.first < st.origin;
SELECT count(orch_stream_advance(id)) FROM streams;
UPDATE schedules AS s SET last_tick_at = k.at, last_job_id = k.job_id
FROM (SELECT DISTINCT ON (schedule_id) schedule_id, scheduled_for AS at, job_id FROM schedule_ticks
      WHERE status = 'fired' ORDER BY schedule_id, scheduled_for DESC) AS k
WHERE k.schedule_id = s.id;
INSERT INTO schedule_tick_counters (tenant_id, status, ticks)
SELECT s.tenant_id, k.status, count(*) FROM schedule_ticks AS k JOIN schedules AS s ON s.id = k.schedule_id
GROUP BY 1, 2
ON CONFLICT (tenant_id, status) DO UPDATE SET ticks = EXCLUDED.ticks;
INSERT INTO watermark_samples (watermark_id, at, watermark, lag_s)
SELECT w.id, m.at, x.wm, extract(epoch FROM m.at - x.wm)
FROM (SELECT w.id, (SELECT coalesce(min(st.done_until) FILTER (WHERE st.live), min(st.done_until))
                    FROM streams AS st WHERE st.watermark_id = w.id) AS mark FROM watermarks AS w) AS w
CROSS JOIN generate_series(date_trunc('minute', now()) - interval '7 days', now(), interval '1 minute') AS m(at)
CROSS JOIN LATERAL (SELECT least(w.mark, m.at - make_interval(secs => 300 + 3300 * pg_temp.u(
    w.id * 100000000 + (extract(epoch FROM m.at) / 60)::bigint, 33))) AS wm) AS x
WHERE w.mark IS NOT NULL"""
#: (ok share, running windows, the rest's state, backfill state, operator paused, days, days ago)
BACKFILLS = (
    (0.6, 2, "planned", "running", False, 2, 15),
    (0.3, 4, "planned", "running", False, 10, 12),
    (0.4, 0, "planned", "paused", True, 3, 9),
    (0.0, 0, "planned", "planned", False, 1, 4),
    (1.0, 0, "succeeded", "succeeded", False, 2, 18),
    (1.0, 0, "succeeded", "succeeded", False, 1, 7),
    (0.9, 0, "failed", "failed", False, 2, 6),
    (0.2, 0, "canceled", "canceled", False, 3, 3),
)


def schedules(engine: Any, conn: Any, p: dict[str, Any], say: Callable[[str], None]) -> None:
    """Schedules through control.add_schedule (a few hundred: every 15 minutes, hourly, daily
    at 02:30 in UTC or Berlin), 20 days of their ticks and windows in SQL, the missed ticks of
    most of them backfilled (control.backfill_missed), and backfills over older ranges in
    every state (control.create_backfill, then their windows moved on in SQL)."""
    import sqlalchemy as sa

    from core import control
    from core.domain.auth import local_principal

    principal, specs = local_principal("bench"), []
    for kind, cron, count in SCHEDULES:
        for i in range(count):
            k = len(specs)
            tenant = TENANTS[sum(1 for c in cuts(TENANT_SHARE) if c <= (k * 0.6180339887) % 1) - 1]
            name, queue, _, _, sourced = JOB_TYPES[k % len(JOB_TYPES)]
            target = control.Target.of_job(name, {"feed": k}, source=SOURCES[k % 4][0] if sourced else None)
            tz = "Europe/Berlin" if kind == "d" and i % 5 == 0 else "UTC"
            specs.append(control.ScheduleSpec(tenant, f"{kind}-{queue[6:]}-{k:03d}", target, cron=cron, timezone=tz))
    bar = Progress("schedules", len(specs))
    for spec in specs:
        control.add_schedule(engine, principal, spec, reason="bench: console ledger")
        bar.advance()
    for spec in specs[::97]:
        control.pause_schedule(engine, principal, spec.tenant, spec.name, reason="bench: upstream maintenance")
    say("ticks and windows ...")
    hour = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    outages = [hour - dt.timedelta(days=d, minutes=m) for d, m, _ in OUTAGES]
    ends = [a + dt.timedelta(minutes=length) for a, (_, _, length) in zip(outages, OUTAGES, strict=True)]
    script(conn, TICKS_SQL, {**p, "outages": outages, "outage_ends": ends, "since": outages[-1]})
    missed = conn.execute(sa.text(MISSED_SQL)).all()
    bar = Progress("backfills of missed ticks", len(missed))
    for tenant, name in missed:
        control.backfill_missed(engine, principal, tenant, name, reason="bench: missed ticks", ticket="OPS-1")
        bar.advance()
    script(conn, MISSED_DONE_SQL)
    hourly = [s for s in specs if s.name.startswith("h")]
    for n, (ok, running, rest, state, paused, days, ago) in enumerate(BACKFILLS):
        spec, start = hourly[n * 7 % len(hourly)], hour - dt.timedelta(days=ago)
        end = start + dt.timedelta(days=days)
        bf = control.BackfillSpec(spec.tenant, spec.target, start, end, reprocess="all", max_active=max(2, running))
        plan = control.create_backfill(engine, principal, bf, reason="bench: reprocess after a fix", ticket=f"OPS-{n}")
        if state != "planned":
            args = dict(id=plan.backfill_id, ok=ok, running=running, rest=rest, state=state, paused=paused)
            script(conn, BACKFILL_STATE_SQL, args)
    say("streams, watermarks, tick counters ...")
    script(conn, STREAMS_SQL)
