-- name: orch_bucket_learns
-- version 1, installed by migration 0004. A landed version is never edited: a change is
-- orch_bucket_learns.v2.sql and a new migration that installs it.
CREATE OR REPLACE FUNCTION orch_bucket_learns(b buckets) RETURNS boolean LANGUAGE sql STABLE AS $fn$
    SELECT b.rate < least(b.base_rate, coalesce(0.9 * b.ceiling, b.base_rate))
        OR coalesce(b.ceiling_at < now() - interval '5 minutes', false)
$fn$;
