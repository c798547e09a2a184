-- name: orch_circuit_history
-- version 1, installed by migration 0015. A landed version is never edited: a change is
-- orch_circuit_history.v2.sql and a new migration.
--
-- Every transition of a source's circuit as a durable row of circuit_transitions (issue 13:
-- a bundle's throttles.jsonl names each one; the outbox keeps them only for the event
-- stream's resume window). A row trigger whose WHEN clause fires only when circuit_state
-- changed, so the many updates that leave the circuit alone cost nothing. The actor is
-- whoever the transaction says it is (orch.actor, set by an operator's reset), else 'orch'.
CREATE OR REPLACE FUNCTION orch_circuit_history() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO circuit_transitions (at, tenant_id, source_id, from_state, to_state, actor)
    VALUES (date_trunc('microseconds', clock_timestamp()), NEW.tenant_id, NEW.id,
            OLD.circuit_state, NEW.circuit_state,
            coalesce(nullif(current_setting('orch.actor', true), ''), 'orch'));
    RETURN NULL;
END $fn$;
