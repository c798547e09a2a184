-- name: orch_row_state_events
-- version 1, installed by migration 0013. A landed version is never edited: a change is
-- orch_row_state_events.v2.sql and a new migration.
--
-- The state changes of sources (their circuit), schedules (paused or active) and backfills
-- as outbox events (issue 12, docs/adr/0019), whoever makes them: a row trigger that fires
-- only when the state column changed (its WHEN clause, tested before any function runs, so
-- the many updates that leave the state alone cost nothing).
--
-- TG_ARGV: [0] the event kind's prefix (e.g. 'source.circuit_'), [1] the subject key of the
-- payload (e.g. 'source_id'), [2] the state column, and for a boolean column [3] and [4]:
-- the state names of true and false.
CREATE OR REPLACE FUNCTION orch_row_state_events() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
    v_old text := to_jsonb(OLD) ->> TG_ARGV[2];
    v_new text := to_jsonb(NEW) ->> TG_ARGV[2];
BEGIN
    IF TG_NARGS > 3 THEN
        v_old := CASE v_old WHEN 'true' THEN TG_ARGV[3] ELSE TG_ARGV[4] END;
        v_new := CASE v_new WHEN 'true' THEN TG_ARGV[3] ELSE TG_ARGV[4] END;
    END IF;
    INSERT INTO events (tenant_id, kind, payload)
    VALUES (NEW.tenant_id, TG_ARGV[0] || v_new,
            jsonb_build_object(TG_ARGV[1], NEW.id, 'name', to_jsonb(NEW) ->> 'name',
                               'from_state', v_old, 'state', v_new));
    RETURN NULL;
END $fn$;
