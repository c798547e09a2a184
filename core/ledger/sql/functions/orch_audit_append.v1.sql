-- name: orch_audit_append
-- version 1, installed by migration 0010. A landed version is never edited: a change is
-- orch_audit_append.v2.sql and a new migration that installs it.
--
-- Appends one row to an audit chain in one round trip (core/ledger/audit.py, append): takes
-- the chain's head row (created at the chain's first action, anchored on the last hash of
-- the single chain the log had before chains were per tenant) and holds it until commit,
-- so appends to one chain take turns and appends to different chains never wait on each
-- other; reads the time after the lock, so a chain's times never go back; and computes the
-- row's hash as core.ledger.audit.row_hash does: sha256 over the previous hash and the
-- row's canonical JSON. The caller sends that JSON in three parts around the two values
-- only the head decides, the time and the place in the chain:
--   p_head || <"at" as Python's isoformat in UTC> || p_mid || <seq> || p_tail.
-- Verification stays in Python (audit.verify), which recomputes every hash from the row.
CREATE OR REPLACE FUNCTION orch_audit_append(
    p_chain text, p_subject text, p_scopes text[], p_action text, p_target text, p_tenant text,
    p_reason text, p_ticket text, p_details jsonb, p_head text, p_mid text, p_tail text
) RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
    v_seq bigint;
    v_prev text;
    v_at timestamptz;
    v_utc timestamp;
    v_iso text;
    v_hash text;
    v_id bigint;
BEGIN
    INSERT INTO audit_chains (chain, anchor_hash, head_seq, head_hash)
    SELECT p_chain, l.last_hash, 0, l.last_hash FROM audit_legacy AS l
    ON CONFLICT (chain) DO UPDATE SET chain = EXCLUDED.chain
    RETURNING head_seq + 1, head_hash INTO v_seq, v_prev;
    v_at := date_trunc('microseconds', clock_timestamp());
    v_utc := v_at AT TIME ZONE 'UTC';
    -- datetime.isoformat(): microseconds only when there are any.
    v_iso := to_char(v_utc, 'YYYY-MM-DD"T"HH24:MI:SS')
        || CASE WHEN date_part('microseconds', v_utc)::bigint % 1000000 = 0 THEN ''
                ELSE to_char(v_utc, '.US') END
        || '+00:00';
    v_hash := encode(sha256(convert_to(v_prev || p_head || v_iso || p_mid || v_seq::text || p_tail, 'UTF8')), 'hex');
    INSERT INTO audit_log (at, subject, scopes, action, target, tenant, reason, ticket, details,
                           prev_hash, hash, chain, chain_seq)
    VALUES (v_at, p_subject, p_scopes, p_action, p_target, p_tenant, p_reason, p_ticket, p_details,
            v_prev, v_hash, p_chain, v_seq)
    RETURNING id INTO v_id;
    UPDATE audit_chains SET head_seq = v_seq, head_hash = v_hash, head_id = v_id WHERE chain = p_chain;
    RETURN v_id;
END
$fn$;
