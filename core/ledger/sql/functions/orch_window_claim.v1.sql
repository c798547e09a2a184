-- name: orch_window_claim
-- version 1, installed by migration 0006. A landed version is never edited: a change is
-- orch_window_claim.v2.sql and a new migration that installs it.
--
-- The claim key of an event-time window: its span in whole seconds, shifted into a band of
-- its own per stream ([stream * 2^33 + start, stream * 2^33 + end), seconds since 1970; the
-- windows table checks spans lie in 1970..2200, so bands never touch). One gist exclusion
-- over this int8range keeps a stream's open windows disjoint without the btree_gist
-- extension (which the embedded server does not ship).
CREATE OR REPLACE FUNCTION orch_window_claim(p_stream bigint, p_start timestamptz, p_end timestamptz)
RETURNS int8range
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT int8range(
        p_stream * 8589934592 + floor(extract(epoch FROM p_start))::bigint,
        p_stream * 8589934592 + ceil(extract(epoch FROM p_end))::bigint)
$fn$;
