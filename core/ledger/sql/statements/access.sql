-- The audit log and API tokens: one statement per name, called by the function of that
-- name in core/ledger/audit.py.

-- name: append_audit
-- One row on its chain, the head locked until commit and the hash computed by the server
-- (orch_audit_append; core/ledger/audit.py, body_parts), and the control action's outbox
-- event (orch.action.<action>, dots as underscores) in the same round trip.
WITH appended AS (
    SELECT orch_audit_append(:chain, :subject, :scopes, :action, :target, :tenant, :reason, :ticket,
                             CAST(:details AS jsonb), :head, :mid, :tail) AS id
), announce AS (
    INSERT INTO events (tenant_id, kind, payload)
    SELECT (SELECT t.id FROM tenants AS t WHERE t.name = :tenant), 'action.' || replace(:action, '.', '_'),
           jsonb_build_object('audit_id', a.id, 'action', CAST(:action AS text), 'target', CAST(:target AS text),
                              'reason', CAST(:reason AS text), 'ticket', CAST(:ticket AS text),
                              'details', CAST(:details AS jsonb), 'actor', CAST(:subject AS text))
    FROM appended AS a
)
SELECT id FROM appended;

-- name: audit_legacy
-- Where the single chain of the log before per-tenant chains ended (recorded by migration
-- 0004; last_id NULL when it had no rows).
SELECT last_id, last_hash, row_count FROM audit_legacy;

-- name: audit_chains
SELECT chain, anchor_hash, head_seq, head_hash, head_id FROM audit_chains ORDER BY chain;

-- name: audit_chain_names
-- Chains that rows name (a row whose chain has no head row is reported by verify).
SELECT DISTINCT chain FROM audit_log WHERE chain IS NOT NULL;

-- name: legacy_audit_rows
SELECT * FROM audit_log WHERE chain IS NULL ORDER BY id;

-- name: chain_audit_rows
SELECT * FROM audit_log WHERE chain = :chain ORDER BY chain_seq;

-- name: insert_token
INSERT INTO api_tokens (token_sha256, subject, tenants, scopes, created_by)
VALUES (:h, :subject, :tenants, :scopes, :by)
RETURNING id;

-- name: find_token
SELECT * FROM api_tokens WHERE token_sha256 = :h AND revoked_at IS NULL;

-- name: set_token_scopes
UPDATE api_tokens SET scopes = :scopes WHERE token_sha256 = :h AND revoked_at IS NULL;
