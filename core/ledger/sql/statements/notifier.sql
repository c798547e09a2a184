-- The webhook notifier's cursor (core/ledger/notifier.py, migration 0014): one statement per name.

-- name: notifier_cursor_create
-- A notifier's cursor on its first run, starting after :start (the stream's newest number,
-- or the one before its oldest retained); a cursor that exists stays as it is.
INSERT INTO notifier_cursors (name, last_seq) VALUES (:name, :start)
ON CONFLICT (name) DO NOTHING;

-- name: notifier_cursor
SELECT name, last_seq, delivered, dropped, failures, consecutive_failures, last_error, last_error_at,
       last_success_at, updated_at
FROM notifier_cursors WHERE name = :name;

-- name: notifier_record
-- What one step of a notifier did: the cursor only moves forward (two leaders overlapping for
-- a pass may both deliver; neither moves it back), the totals add up, :failures ({reason:
-- count}) adds to the counts by reason, and the error and success times are kept.
UPDATE notifier_cursors AS c SET
    last_seq = greatest(c.last_seq, :last_seq),
    delivered = c.delivered + :delivered,
    dropped = c.dropped + :dropped,
    failures = (
        SELECT coalesce(jsonb_object_agg(k.key, coalesce((c.failures ->> k.key)::bigint, 0)
                                               + coalesce((CAST(:failures AS jsonb) ->> k.key)::bigint, 0)), '{}'::jsonb)
        FROM (SELECT jsonb_object_keys(c.failures) AS key
              UNION SELECT jsonb_object_keys(CAST(:failures AS jsonb))) AS k
    ),
    consecutive_failures = :consecutive_failures,
    last_error = coalesce(left(CAST(:error AS text), 1000), c.last_error),
    last_error_at = CASE WHEN CAST(:error AS text) IS NULL THEN c.last_error_at ELSE now() END,
    last_success_at = CASE WHEN :succeeded THEN now() ELSE c.last_success_at END,
    updated_at = now()
WHERE c.name = :name;

-- name: notifier_status
-- A notifier's cursor with the stream's newest number (its backlog is the difference), read
-- by the exporter and the console. No row when the notifier never ran.
SELECT c.name, c.last_seq, r.last_seq AS newest, greatest(r.last_seq - c.last_seq, 0) AS backlog,
       c.delivered, c.dropped, c.failures, c.consecutive_failures, c.last_error, c.last_error_at,
       c.last_success_at, c.updated_at
FROM notifier_cursors AS c CROSS JOIN event_relay AS r
WHERE c.name = :name;
