-- name: audit_log_append_only
-- version 1, written inline by migration 0002 and installed again from this file by 0004
-- (the same body), so that every function of the ledger has its file. A landed version is
-- never edited: a change is audit_log_append_only.v2.sql and a new migration.
--
-- The trigger function that refuses UPDATE and DELETE on audit_log.
CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP;
END $fn$;
