-- The outbox's relay and its readers (core/ledger/events.py): one statement per name.

-- name: lock_event_counter
-- The counter, held until commit: a second relay waits here and numbers after this one, so
-- the numbers readers see are contiguous. In a statement of its own, so the numbering below
-- takes its snapshot after the wait and sees what the other relay numbered.
SELECT last_seq FROM event_relay WHERE one FOR UPDATE;

-- name: sequence_events
-- Number the committed events nobody numbered yet (oldest id first, at most :limit) with the
-- counter's next values. An event that commits late gets a later number on a later pass
-- instead of being skipped (an id alone is not commit order).
WITH picked AS (
    SELECT e.id, row_number() OVER (ORDER BY e.id) AS n
    FROM (SELECT id FROM events WHERE published_at IS NULL ORDER BY id LIMIT :limit) AS e
), numbered AS (
    UPDATE events AS e SET seq = :last_seq + p.n, published_at = now()
    FROM picked AS p
    WHERE e.id = p.id
    RETURNING e.seq
), moved AS (
    UPDATE event_relay SET last_seq = :last_seq + (SELECT count(*) FROM numbered) WHERE one
)
SELECT count(*) AS n FROM numbered;

-- name: events_after
-- The stream after a cursor, in order.
SELECT e.seq, e.id, e.at, e.tenant_id, t.name AS tenant, e.kind, e.payload
FROM events AS e LEFT JOIN tenants AS t ON t.id = e.tenant_id
WHERE e.seq > :after ORDER BY e.seq LIMIT :limit;

-- name: stream_bounds
-- The oldest retained and the newest number (NULL, NULL when the stream is empty).
SELECT (SELECT min(seq) FROM events WHERE seq IS NOT NULL) AS oldest, (SELECT last_seq FROM event_relay) AS newest;

-- name: events_waiting
-- Whether any committed event waits for its number (the relay's idle probe).
SELECT EXISTS (SELECT 1 FROM events WHERE published_at IS NULL);
