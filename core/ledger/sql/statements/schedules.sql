-- Statements of schedules, event-time windows, watermarks and backfills (docs/design.md,
-- "Schedules, windows and backfills"): one per name, called by the function of that name in
-- core/ledger/schedules.py or core/ledger/windows.py.

-- name: ensure_stream
-- The stream (and its watermark row) of a tenant, source, job type and payload; created on
-- first use. origin is where its first window starts: the watermark speaks of the data
-- since then (windows planned later before it, e.g. a backfill of older history, are done
-- or not, but do not hold the watermark back).
WITH w AS (
    INSERT INTO watermarks (tenant_id, source_id, job_type)
    VALUES (:tenant_id, :source_id, :job_type)
    ON CONFLICT ON CONSTRAINT watermarks_key_uq DO UPDATE SET job_type = EXCLUDED.job_type
    RETURNING id
)
INSERT INTO streams (watermark_id, tenant_id, source_id, job_type, payload_digest, origin, live)
SELECT w.id, :tenant_id, :source_id, :job_type, :digest, :origin, :live FROM w
ON CONFLICT ON CONSTRAINT streams_key_uq DO UPDATE SET live = streams.live OR EXCLUDED.live
RETURNING id;

-- name: find_stream
SELECT id, origin, done_until FROM streams
WHERE tenant_id = :tenant_id AND source_id IS NOT DISTINCT FROM :source_id AND job_type = :job_type
  AND payload_digest = :digest;

-- name: insert_schedule
INSERT INTO schedules (tenant_id, name, cron, every_s, timezone, target_kind, target, stream_id, overlap, catchup,
                       catchup_window_s, max_catchup, start_at, end_at, next_fire_at, created_by)
VALUES (:tenant_id, :name, :cron, :every_s, :timezone, :target_kind, CAST(:target AS jsonb), :stream_id, :overlap,
        :catchup, :catchup_window_s, :max_catchup, :start_at, :end_at, :next_fire_at, :actor)
ON CONFLICT (tenant_id, name) WHERE removed_at IS NULL DO NOTHING
RETURNING id;

-- name: lock_schedule
SELECT s.*, t.name AS tenant FROM schedules AS s JOIN tenants AS t ON t.id = s.tenant_id
WHERE t.name = :tenant AND s.name = :name AND s.removed_at IS NULL
FOR UPDATE OF s;

-- name: lock_due_schedules
-- Due schedules, oldest tick first, each with whether its latest firing is still live (the
-- overlap policies' question). SKIP LOCKED: a second scheduler in the same instant takes
-- other rows, and the tick keys catch anything else.
SELECT s.*, t.name AS tenant,
       CASE WHEN s.last_run_id IS NOT NULL THEN (SELECT r.state = 'running' FROM runs AS r WHERE r.id = s.last_run_id)
            WHEN s.last_job_id IS NOT NULL THEN (SELECT j.state NOT IN ('succeeded', 'dead_lettered', 'canceled',
                 'upstream_failed', 'skipped') FROM jobs AS j WHERE j.id = s.last_job_id)
            ELSE false END AS previous_live
FROM schedules AS s JOIN tenants AS t ON t.id = s.tenant_id
WHERE s.next_fire_at IS NOT NULL AND s.next_fire_at <= :now
ORDER BY s.next_fire_at
LIMIT :limit
FOR UPDATE OF s SKIP LOCKED;

-- name: lock_buffered_schedules
-- Schedules with buffered ticks whose latest firing has ended: the oldest buffered tick fires.
SELECT * FROM (
    SELECT s.*, t.name AS tenant,
           CASE WHEN s.last_run_id IS NOT NULL THEN (SELECT r.state = 'running' FROM runs AS r WHERE r.id = s.last_run_id)
                WHEN s.last_job_id IS NOT NULL THEN (SELECT j.state NOT IN ('succeeded', 'dead_lettered', 'canceled',
                     'upstream_failed', 'skipped') FROM jobs AS j WHERE j.id = s.last_job_id)
                ELSE false END AS previous_live
    FROM schedules AS s JOIN tenants AS t ON t.id = s.tenant_id
    WHERE s.buffered > 0 AND NOT s.paused AND s.removed_at IS NULL
    FOR UPDATE OF s SKIP LOCKED
) AS b WHERE NOT coalesce(b.previous_live, false)
LIMIT :limit;

-- name: oldest_buffered
SELECT DISTINCT ON (schedule_id) schedule_id, scheduled_for, interval_start
FROM schedule_ticks
WHERE schedule_id = ANY(CAST(:ids AS bigint[])) AND status = 'buffered'
ORDER BY schedule_id, scheduled_for;

-- name: insert_ticks
-- Rows as parallel arrays; a tick that exists already is not inserted (RETURNING says which were).
INSERT INTO schedule_ticks (schedule_id, scheduled_for, interval_start, status, manual, note, fired_at)
SELECT s, f, i, st, m, n, CASE WHEN st = 'fired' THEN now() END
FROM unnest(CAST(:schedule_id AS bigint[]), CAST(:scheduled_for AS timestamptz[]),
            CAST(:interval_start AS timestamptz[]), CAST(:status AS text[]), CAST(:manual AS boolean[]),
            CAST(:note AS text[])) AS t(s, f, i, st, m, n)
ON CONFLICT (schedule_id, scheduled_for) DO NOTHING
RETURNING schedule_id, scheduled_for;

-- name: set_tick_fired
UPDATE schedule_ticks AS t
SET status = 'fired', fired_at = now(), job_id = v.job_id, run_id = v.run_id, window_id = v.window_id,
    note = coalesce(v.note, t.note)
FROM unnest(CAST(:schedule_id AS bigint[]), CAST(:scheduled_for AS timestamptz[]), CAST(:job_id AS bigint[]),
            CAST(:run_id AS bigint[]), CAST(:window_id AS bigint[]), CAST(:note AS text[]))
     AS v(schedule_id, scheduled_for, job_id, run_id, window_id, note)
WHERE t.schedule_id = v.schedule_id AND t.scheduled_for = v.scheduled_for;

-- name: set_tick_status
UPDATE schedule_ticks AS t SET status = v.status, note = coalesce(v.note, t.note)
FROM unnest(CAST(:schedule_id AS bigint[]), CAST(:scheduled_for AS timestamptz[]), CAST(:status AS text[]),
            CAST(:note AS text[])) AS v(schedule_id, scheduled_for, status, note)
WHERE t.schedule_id = v.schedule_id AND t.scheduled_for = v.scheduled_for;

-- name: count_ticks
INSERT INTO schedule_tick_counters (tenant_id, status, ticks)
SELECT tenant_id, status, sum(n) FROM unnest(CAST(:tenant_id AS bigint[]), CAST(:status AS text[]),
                                             CAST(:n AS bigint[])) AS c(tenant_id, status, n)
GROUP BY tenant_id, status
ON CONFLICT (tenant_id, status) DO UPDATE SET ticks = schedule_tick_counters.ticks + EXCLUDED.ticks;

-- name: update_schedules_after_pass
UPDATE schedules AS s
SET next_fire_at = v.next_fire_at, last_tick_at = greatest(s.last_tick_at, v.last_tick_at),
    last_job_id = CASE WHEN v.last_job_id IS NOT NULL OR v.last_run_id IS NOT NULL THEN v.last_job_id
                       ELSE s.last_job_id END,
    last_run_id = CASE WHEN v.last_job_id IS NOT NULL OR v.last_run_id IS NOT NULL THEN v.last_run_id
                       ELSE s.last_run_id END,
    buffered = s.buffered + v.buffered_delta, updated_at = now()
FROM unnest(CAST(:id AS bigint[]), CAST(:next_fire_at AS timestamptz[]), CAST(:last_tick_at AS timestamptz[]),
            CAST(:last_job_id AS bigint[]), CAST(:last_run_id AS bigint[]), CAST(:buffered_delta AS int[]))
     AS v(id, next_fire_at, last_tick_at, last_job_id, last_run_id, buffered_delta)
WHERE s.id = v.id;

-- name: insert_windows
-- Open windows of a stream; a window that overlaps one already open (planned or running)
-- is not inserted (windows_open_disjoint). RETURNING gives the new ids with their spans.
INSERT INTO windows (stream_id, tenant_id, span_start, span_end, claim, state, schedule_id, backfill_id, started_at)
SELECT v.stream_id, v.tenant_id, v.s, v.e, orch_window_claim(v.stream_id, v.s, v.e), :state, v.schedule_id,
       :backfill_id, CASE WHEN :state = 'running' THEN now() END
FROM unnest(CAST(:stream_id AS bigint[]), CAST(:tenant_id AS bigint[]), CAST(:span_start AS timestamptz[]),
            CAST(:span_end AS timestamptz[]), CAST(:schedule_id AS bigint[])) AS v(stream_id, tenant_id, s, e, schedule_id)
ON CONFLICT DO NOTHING
RETURNING id, stream_id, span_start, schedule_id;

-- name: delete_windows
-- Windows whose work could not be created (the firing failed): they never ran.
DELETE FROM windows WHERE id = ANY(CAST(:ids AS bigint[])) AND job_id IS NULL AND run_id IS NULL;

-- name: set_window_work
UPDATE windows AS w SET job_id = v.job_id, run_id = v.run_id, state = 'running', started_at = now()
FROM unnest(CAST(:id AS bigint[]), CAST(:job_id AS bigint[]), CAST(:run_id AS bigint[])) AS v(id, job_id, run_id)
WHERE w.id = v.id;

-- name: schedule_ticks
SELECT scheduled_for, interval_start, status, manual, job_id, run_id, window_id, backfill_id, note, fired_at
FROM schedule_ticks WHERE schedule_id = :schedule_id
ORDER BY scheduled_for DESC LIMIT :limit;

-- name: paused_ticks
SELECT scheduled_for, interval_start FROM schedule_ticks
WHERE schedule_id = :schedule_id AND status = 'paused' AND scheduled_for >= :since
ORDER BY scheduled_for LIMIT :limit;

-- name: missed_ticks
SELECT scheduled_for, interval_start FROM schedule_ticks
WHERE schedule_id = :schedule_id AND status = 'missed' AND backfill_id IS NULL
ORDER BY scheduled_for LIMIT :limit;

-- name: mark_ticks_backfilled
UPDATE schedule_ticks SET backfill_id = :backfill_id
WHERE schedule_id = :schedule_id AND status = 'missed' AND backfill_id IS NULL
  AND scheduled_for = ANY(CAST(:scheduled_for AS timestamptz[]));

-- name: set_schedule_paused
UPDATE schedules SET paused = :paused, paused_at = CASE WHEN :paused THEN now() END, updated_at = now()
WHERE id = :id;

-- name: set_schedule_next
UPDATE schedules SET next_fire_at = :next_fire_at, updated_at = now() WHERE id = :id;

-- name: remove_schedule
UPDATE schedules SET removed_at = now(), next_fire_at = NULL, buffered = 0, updated_at = now() WHERE id = :id;

-- name: drop_buffered_ticks
UPDATE schedule_ticks SET status = 'skipped', note = :note WHERE schedule_id = :id AND status = 'buffered';

-- name: prune_ticks
-- Ticks recorded longer ago than the retention, except each schedule's newest 100 and those
-- still buffered; bounded per call.
WITH old AS (
    SELECT schedule_id, scheduled_for FROM schedule_ticks
    WHERE recorded_at < now() - make_interval(days => :days) AND status <> 'buffered'
    ORDER BY recorded_at LIMIT :limit
)
DELETE FROM schedule_ticks AS t USING old
WHERE t.schedule_id = old.schedule_id AND t.scheduled_for = old.scheduled_for
  AND t.scheduled_for < coalesce((SELECT n.scheduled_for FROM schedule_ticks AS n WHERE n.schedule_id = t.schedule_id
                                  ORDER BY n.scheduled_for DESC OFFSET 99 LIMIT 1), '-infinity');

-- name: seconds_to_next_fire
SELECT extract(epoch FROM min(next_fire_at) - now()) FROM schedules WHERE next_fire_at IS NOT NULL;
