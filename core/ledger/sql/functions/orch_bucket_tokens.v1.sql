-- name: orch_bucket_tokens
-- version 1, installed by migration 0004. A landed version is never edited: a change is
-- orch_bucket_tokens.v2.sql and a new migration that installs it.
--
-- The one definition of the tokens bucket b holds at time p_at (default now): what it held
-- at updated_at plus what its rate earned since, up to its capacity. Before updated_at the
-- value is below the stored tokens, negative for a bucket blocked by an upstream's
-- Retry-After (updated_at in the future, tokens 0): the debt the rest of the block stands
-- for. Admission reads it at now(); a view shows greatest(it, 0); a settlement (a grant, a
-- rate change) takes it at greatest(updated_at, now()), which keeps a block in place.
CREATE OR REPLACE FUNCTION orch_bucket_tokens(b buckets, p_at timestamptz DEFAULT now())
RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT least(b.capacity, b.tokens + b.rate * extract(epoch FROM p_at - b.updated_at)::double precision)
$fn$;
