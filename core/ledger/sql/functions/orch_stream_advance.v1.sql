-- name: orch_stream_advance
-- version 1, installed by migration 0006. A landed version is never edited: a change is
-- orch_stream_advance.v2.sql and a new migration that installs it.
--
-- Moves a stream's done_until (the end of the gap-free prefix of its succeeded windows,
-- from its origin) as far as succeeded windows reach, in one ordered pass over the windows
-- that end past it (only those beyond a hole, usually none). Returns the new done_until.
CREATE OR REPLACE FUNCTION orch_stream_advance(p_stream bigint)
RETURNS timestamptz
LANGUAGE plpgsql AS $fn$
DECLARE
    v_until timestamptz;
    v_origin timestamptz;
    r record;
BEGIN
    SELECT coalesce(done_until, origin), origin INTO v_until, v_origin FROM streams WHERE id = p_stream FOR UPDATE;
    IF v_until IS NULL THEN
        RETURN NULL;
    END IF;
    FOR r IN
        SELECT span_start, span_end FROM windows
        WHERE stream_id = p_stream AND state = 'succeeded' AND span_end > v_until
        ORDER BY span_start
    LOOP
        EXIT WHEN r.span_start > v_until;
        v_until := greatest(v_until, r.span_end);
    END LOOP;
    UPDATE streams SET done_until = v_until WHERE id = p_stream AND done_until IS DISTINCT FROM v_until
        AND v_until > v_origin;
    RETURN v_until;
END
$fn$;
