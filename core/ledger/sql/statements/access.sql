-- The audit log and API tokens: one statement per name, called by the function of that
-- name in core/ledger/audit.py.

-- name: lock_audit_chain
-- Take a chain's head row (created at the first action of its tenant, anchored on the last
-- hash of the single chain the log had before chains were per tenant) and hold it until
-- commit: appends to one chain take turns, appends to different chains never wait on each
-- other. The time is read after the lock, so a chain's times never go back.
INSERT INTO audit_chains (chain, anchor_hash, head_seq, head_hash)
SELECT :chain, l.last_hash, 0, l.last_hash FROM audit_legacy AS l
ON CONFLICT (chain) DO UPDATE SET chain = EXCLUDED.chain
RETURNING head_seq, head_hash, date_trunc('microseconds', clock_timestamp()) AS at;

-- name: append_audit
-- The row, and the chain's head moved onto it, in one statement.
WITH added AS (
    INSERT INTO audit_log (at, subject, scopes, action, target, tenant, reason, ticket, details,
                           prev_hash, hash, chain, chain_seq)
    VALUES (:at, :subject, :scopes, :action, :target, :tenant, :reason, :ticket, CAST(:details AS jsonb),
            :prev_hash, :hash, :chain, :seq)
    RETURNING id
)
UPDATE audit_chains SET head_seq = :seq, head_hash = :hash, head_id = (SELECT id FROM added)
WHERE chain = :chain
RETURNING head_id;

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
