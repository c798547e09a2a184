-- name: orch_tenant_backlog
-- version 1, installed by migration 0004. A landed version is never edited: a change is
-- orch_tenant_backlog.v2.sql and a new migration that installs it.
--
-- The one definition of a tenant's backlog: its jobs waiting to run (pending, queued,
-- retrying, throttled) except those deferred by backpressure, which wait for the backlog
-- itself. Counted no further than p_cap (NULL: all), so a check against a limit stays cheap.
CREATE OR REPLACE FUNCTION orch_tenant_backlog(p_tenant bigint, p_cap bigint)
RETURNS bigint LANGUAGE sql STABLE PARALLEL SAFE AS $fn$
    SELECT count(*) FROM (
        SELECT 1 FROM jobs AS j
        WHERE j.tenant_id = p_tenant AND j.state IN ('pending', 'queued', 'retrying', 'throttled')
          AND j.wait_reason IS DISTINCT FROM 'backpressure'
        LIMIT p_cap
    ) AS w
$fn$;
