-- Statements of event-time windows, watermarks and backfills: one per name, called by the
-- function of that name in core/ledger/windows.py.

-- name: classify_windows
-- Candidate windows of a stream against what is done: covered by its succeeded windows
-- (done), by succeeded or failed ones (attempted), overlapping an open window (in flight).
-- Coverage is a union of intervals (range_agg), never an exact match.
WITH cov AS (
    SELECT range_agg(tstzrange(span_start, span_end)) FILTER (WHERE state = 'succeeded') AS done,
           range_agg(tstzrange(span_start, span_end)) FILTER (WHERE state IN ('succeeded', 'failed')) AS tried
    FROM windows WHERE stream_id = :stream_id AND state IN ('succeeded', 'failed')
)
SELECT c.n,
       coalesce(tstzrange(c.s, c.e) <@ cov.done, false) AS done,
       coalesce(tstzrange(c.s, c.e) <@ cov.tried, false) AS tried,
       EXISTS (SELECT 1 FROM windows AS w
               WHERE w.claim && orch_window_claim(:stream_id, c.s, c.e) AND w.state IN ('planned', 'running'))
           AS in_flight
FROM unnest(CAST(:span_start AS timestamptz[]), CAST(:span_end AS timestamptz[])) WITH ORDINALITY AS c(s, e, n),
     cov
ORDER BY c.n;

-- name: insert_backfill
INSERT INTO backfills (tenant_id, stream_id, schedule_id, target_kind, target, range_start, range_end, window_s,
                       reprocess, max_active, pause_above, state, windows_total, skipped_done, skipped_in_flight,
                       created_by, reason, ticket)
VALUES (:tenant_id, :stream_id, :schedule_id, :target_kind, CAST(:target AS jsonb), :range_start, :range_end,
        :window_s, :reprocess, :max_active, :pause_above, 'planned', 0, :skipped_done, 0, :actor, :reason, :ticket)
RETURNING id;

-- name: set_backfill_counts
UPDATE backfills SET windows_total = :total, skipped_in_flight = :in_flight,
    state = CASE WHEN :total = 0 THEN 'succeeded' ELSE state END,
    finished_at = CASE WHEN :total = 0 THEN now() END
WHERE id = :id;

-- name: lock_backfill
SELECT b.*, t.name AS tenant FROM backfills AS b JOIN tenants AS t ON t.id = b.tenant_id
WHERE b.id = :id FOR UPDATE OF b;

-- name: lock_active_backfills
SELECT b.*, t.name AS tenant FROM backfills AS b JOIN tenants AS t ON t.id = b.tenant_id
WHERE b.state IN ('planned', 'running', 'paused')
ORDER BY b.id LIMIT :limit
FOR UPDATE OF b SKIP LOCKED;

-- name: backfill_window_counts
SELECT state, count(*) AS n FROM windows WHERE backfill_id = :id GROUP BY state;

-- name: next_planned_windows
SELECT id, span_start, span_end FROM windows
WHERE backfill_id = :id AND state = 'planned' ORDER BY span_start LIMIT :limit;

-- name: live_ready
-- A tenant's live ready work: queued jobs above the backfill priority, counted to a cap.
SELECT count(*) FROM (
    SELECT 1 FROM jobs WHERE tenant_id = :tenant_id AND state = 'queued' AND priority > :backfill_priority
    LIMIT :cap
) AS q;

-- name: set_backfill_state
UPDATE backfills SET state = :state, wait_reason = :wait_reason, operator_paused = :operator_paused,
    started_at = CASE WHEN :state = 'running' THEN coalesce(started_at, now()) ELSE started_at END,
    finished_at = CASE WHEN :state IN ('succeeded', 'failed', 'canceled') THEN now() END,
    updated_at = now()
WHERE id = :id;

-- name: cancel_planned_windows
UPDATE windows SET state = 'canceled', finished_at = now() WHERE backfill_id = :id AND state = 'planned';

-- name: running_window_work
SELECT id, job_id, run_id FROM windows WHERE backfill_id = :id AND state = 'running';

-- name: report_watermark
-- Monotone: only a later event time moves it, and records who moved it.
INSERT INTO watermarks AS w (tenant_id, source_id, job_type, reported, moved_at, moved_by, moved_by_job)
VALUES (:tenant_id, :source_id, :job_type, :at, now(), :actor, :job_id)
ON CONFLICT ON CONSTRAINT watermarks_key_uq DO UPDATE
SET reported = EXCLUDED.reported, moved_at = now(), moved_by = EXCLUDED.moved_by, moved_by_job = EXCLUDED.moved_by_job
WHERE w.reported IS NULL OR w.reported < EXCLUDED.reported
RETURNING reported;

-- name: watermark_rows
-- Every watermark with the end of its windows' gap-free prefix: the least over its live
-- streams (those a schedule fires; over all when none is): data is complete only as far as
-- every live payload's windows reach. A stream none of whose windows has ended yet adds
-- nothing (its done_until is NULL).
SELECT w.id, t.name AS tenant, s.name AS source, w.job_type, w.reported, w.moved_at, w.moved_by, w.moved_by_job,
       (SELECT coalesce(min(st.done_until) FILTER (WHERE st.live), min(st.done_until))
        FROM streams AS st WHERE st.watermark_id = w.id) AS windowed,
       (SELECT count(*) FROM streams AS st WHERE st.watermark_id = w.id) AS streams
FROM watermarks AS w JOIN tenants AS t ON t.id = w.tenant_id LEFT JOIN sources AS s ON s.id = w.source_id
WHERE (CAST(:tenant AS text) IS NULL OR t.name = CAST(:tenant AS text))
ORDER BY t.name, s.name NULLS FIRST, w.job_type
LIMIT :limit;

-- name: stream_done_beyond
-- A watermark's succeeded windows past its streams' prefixes: the holes lie between them.
SELECT st.id AS stream_id, coalesce(st.done_until, st.origin) AS until, w.span_start, w.span_end
FROM streams AS st JOIN windows AS w ON w.stream_id = st.id AND w.state = 'succeeded'
     AND w.span_end > coalesce(st.done_until, st.origin)
WHERE st.watermark_id = ANY(CAST(:ids AS bigint[]))
ORDER BY st.id, w.span_start
LIMIT :limit;

-- name: sample_watermarks
INSERT INTO watermark_samples (watermark_id, at, watermark, lag_s)
SELECT id, date_trunc('second', now()), wm, extract(epoch FROM now() - wm)
FROM (SELECT w.id,
             coalesce((SELECT coalesce(min(st.done_until) FILTER (WHERE st.live), min(st.done_until))
                       FROM streams AS st WHERE st.watermark_id = w.id),
                      w.reported) AS wm
      FROM watermarks AS w) AS x
WHERE wm IS NOT NULL
ON CONFLICT DO NOTHING;

-- name: prune_watermark_samples
DELETE FROM watermark_samples WHERE at < now() - interval '7 days';

-- name: fail_windows
-- Windows whose work could not be created (an unknown job type, a source removed).
UPDATE windows SET state = 'failed', finished_at = now() WHERE id = ANY(CAST(:ids AS bigint[])) AND state = 'planned';

-- name: job_window
-- The window a job covers: its own, or its run's.
SELECT span_start, span_end FROM windows
WHERE id = coalesce(CAST(:window_id AS bigint), (SELECT window_id FROM runs WHERE id = CAST(:run_id AS bigint)));

-- name: job_watermark_key
SELECT tenant_id FROM jobs WHERE id = :job_id;
