-- The outbox's relay and its readers (core/ledger/events.py): one statement per name.

-- name: lock_event_counter
-- The counter, held until commit: a second relay waits here and numbers after this one, so
-- the numbers readers see are contiguous. In a statement of its own, so the numbering below
-- takes its snapshot after the wait and sees what the other relay numbered.
SELECT last_seq FROM event_relay WHERE one FOR UPDATE;

-- name: sequence_events
-- Number the committed rows nobody numbered yet (oldest id first, at most :limit) with the
-- counter's next values: a row holding n events (a job batch, migration 0013) takes n
-- consecutive numbers and keeps the last as its seq. A row that commits late gets later
-- numbers on a later pass instead of being skipped (an id alone is not commit order).
WITH picked AS (
    SELECT e.id, sum(e.n) OVER (ORDER BY e.id) AS upto
    FROM (SELECT id, n FROM events WHERE published_at IS NULL ORDER BY id LIMIT :limit) AS e
), numbered AS (
    UPDATE events AS e SET seq = :last_seq + p.upto, published_at = now()
    FROM picked AS p
    WHERE e.id = p.id
    RETURNING e.n
), moved AS (
    UPDATE event_relay SET last_seq = :last_seq + (SELECT coalesce(sum(n), 0) FROM numbered) WHERE one
)
SELECT coalesce(sum(n), 0) AS n FROM numbered;

-- name: events_after
-- The stream after a cursor, in order: rows whose last number is past it (the first may
-- hold a few numbers at or before it; core.domain.events.expand skips those).
SELECT e.seq, e.n, e.id, e.at, e.tenant_id, t.name AS tenant, e.kind, e.payload
FROM events AS e LEFT JOIN tenants AS t ON t.id = e.tenant_id
WHERE e.seq > :after ORDER BY e.seq LIMIT :limit;

-- name: stream_bounds
-- The oldest retained and the newest number (NULL, NULL when the stream is empty).
SELECT (SELECT seq - n + 1 FROM events WHERE seq IS NOT NULL ORDER BY seq LIMIT 1) AS oldest,
       (SELECT last_seq FROM event_relay) AS newest;

-- name: events_waiting
-- Whether any committed event waits for its number (the relay's idle probe).
SELECT EXISTS (SELECT 1 FROM events WHERE published_at IS NULL);

-- name: straddling_row
-- The first row numbered past :hi, with the first of its numbers: a page that ends at :hi
-- must take it whole when it starts at or before :hi (a job batch row holds n numbers).
SELECT seq, seq - n + 1 AS first FROM events WHERE seq > :hi ORDER BY seq LIMIT 1;

-- name: events_page
-- A reader's page of the stream (the API's SSE and JSON pages, `orch events tail`): at most
-- :limit rows numbered in (:after, :hi] (:hi is the cursor plus a span, moved to the end of a
-- row that straddles it), so a filter that matches little never scans more than a span of
-- events_seq_uq, with the stream's bounds read in the same snapshot (every number up to
-- `newest` that was not pruned is visible). A NULL filter matches everything: :tenants names
-- tenants (an event of no tenant matches no name); :type_patterns are LIKE patterns over the
-- event type, whose expression is the SQL twin of core.domain.events.event_type; :subjects
-- are exact, over the twin of core.domain.events.subject (a test checks both twins), and a
-- job batch row matches when one of its jobs does (the reader keeps only those). One row
-- with NULL event columns when no event matched.
WITH bounds AS (
    SELECT (SELECT seq - n + 1 FROM events WHERE seq IS NOT NULL ORDER BY seq LIMIT 1) AS oldest,
           (SELECT last_seq FROM event_relay WHERE one) AS newest
), page AS (
    SELECT e.seq, e.n, e.id, e.at, e.tenant_id, t.name AS tenant, e.kind, e.payload
    FROM events AS e LEFT JOIN tenants AS t ON t.id = e.tenant_id
    WHERE e.seq > :after AND e.seq <= :hi
      AND (CAST(:tenants AS text[]) IS NULL OR t.name = ANY(CAST(:tenants AS text[])))
      AND (CAST(:type_patterns AS text[]) IS NULL
           OR 'orch.' || CASE WHEN e.kind = 'run.state' THEN 'run.' || (e.payload ->> 'state') ELSE e.kind END
              LIKE ANY(CAST(:type_patterns AS text[])))
      AND (CAST(:subjects AS text[]) IS NULL
           OR CASE WHEN e.payload ->> 'job_id' IS NOT NULL THEN 'job/' || (e.payload ->> 'job_id')
                   WHEN e.payload ->> 'run_id' IS NOT NULL THEN 'run/' || (e.payload ->> 'run_id')
                   WHEN e.payload ->> 'incident_id' IS NOT NULL THEN 'incident/' || (e.payload ->> 'incident_id')
                   WHEN e.payload ->> 'schedule_id' IS NOT NULL THEN 'schedule/' || (e.payload ->> 'schedule_id')
                   WHEN e.payload ->> 'backfill_id' IS NOT NULL THEN 'backfill/' || (e.payload ->> 'backfill_id')
                   WHEN e.payload ->> 'source_id' IS NOT NULL THEN 'source/' || (e.payload ->> 'source_id')
                   WHEN e.payload ->> 'source' IS NOT NULL THEN 'source/' || (e.payload ->> 'source')
                   ELSE nullif(e.payload ->> 'target', '') END
              = ANY(CAST(:subjects AS text[]))
           OR (e.kind LIKE 'job.%' AND EXISTS (
                   SELECT 1 FROM jsonb_array_elements(e.payload -> 'jobs') AS j(v)
                   WHERE 'job/' || (j.v ->> 0) = ANY(CAST(:subjects AS text[])))))
    ORDER BY e.seq
    LIMIT :limit
)
SELECT b.oldest, b.newest, p.seq, p.n, p.id, p.at, p.tenant_id, p.tenant, p.kind, p.payload
FROM bounds AS b LEFT JOIN page AS p ON true
ORDER BY p.seq;
