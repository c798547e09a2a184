-- name: orch_window_ended
-- version 1, installed by migration 0006. A landed version is never edited: a change is
-- orch_window_ended.v2.sql and a new migration that installs it.
--
-- The row triggers jobs_window_ended and runs_window_ended: when the job or run that holds
-- an event-time window ends, its window ends with it, in the same transaction (succeeded,
-- failed or canceled), and a succeeded window that touches its stream's gap-free prefix
-- moves the stream's done_until. Until a stream's first window ends, its done_until is NULL
-- (its watermark is unknown); the first to end sets it to the origin. The triggers' WHEN
-- clauses let only windowed rows through.
-- A job or run that ends again (an operator's retry) updates its window again.
CREATE OR REPLACE FUNCTION orch_window_ended()
RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    v_state text := CASE
        WHEN NEW.state = 'succeeded' THEN 'succeeded'
        WHEN NEW.state = 'canceled' THEN 'canceled'
        ELSE 'failed' END;
    v_stream bigint;
    v_start timestamptz;
    v_until timestamptz;
BEGIN
    IF TG_TABLE_NAME = 'jobs' THEN
        UPDATE windows SET state = v_state, finished_at = now()
        WHERE id = NEW.window_id AND job_id = NEW.id
        RETURNING stream_id, span_start INTO v_stream, v_start;
    ELSE
        UPDATE windows SET state = v_state, finished_at = now()
        WHERE id = NEW.window_id AND run_id = NEW.id
        RETURNING stream_id, span_start INTO v_stream, v_start;
    END IF;
    IF v_stream IS NOT NULL THEN
        -- The stream's first window to end makes its watermark known: from its origin.
        UPDATE streams SET done_until = origin WHERE id = v_stream AND done_until IS NULL;
        IF v_state = 'succeeded' THEN
            SELECT done_until INTO v_until FROM streams WHERE id = v_stream;
            IF v_start <= v_until THEN
                PERFORM orch_stream_advance(v_stream);
            END IF;
        END IF;
    END IF;
    RETURN NULL;
END
$fn$;
