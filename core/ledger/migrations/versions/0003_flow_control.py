"""Flow control: token buckets per (tenant, upstream host), sources with circuit breakers,
pauses, blackouts, quotas, backpressure limits, the throttles log; admission and outcome
functions that the claim and writer statements call.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    # An upstream's 429 sends the running job back to wait, without using up an attempt.
    op.execute("INSERT INTO job_transitions (from_state, event, to_state) VALUES ('running', 'throttle', 'throttled')")
    op.execute(
        """
-- One token bucket per (tenant, upstream host), shared by every source of that host.
-- Tokens are settled lazily with the database clock: the tokens at time t are
-- least(capacity, tokens + rate * (t - updated_at)). An updated_at in the future is an
-- upstream's Retry-After: the bucket is empty and grows from zero only after it.
CREATE TABLE buckets (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     bigint NOT NULL REFERENCES tenants (id),
    host          text NOT NULL CHECK (length(host) BETWEEN 1 AND 253),
    capacity      double precision NOT NULL CHECK (capacity >= 1),
    base_rate     double precision NOT NULL CHECK (base_rate > 0),   -- configured (tokens/s)
    rate          double precision NOT NULL CHECK (rate > 0),        -- current, adaptive
    min_rate      double precision NOT NULL DEFAULT 0.1 CHECK (min_rate > 0),
    tokens        double precision NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    -- AIMD: K successes in a row add step * base_rate, up to 0.9 * ceiling (the limit
    -- estimated at the last upstream 429), relaxed by 10% after 5 quiet minutes (a probe).
    aimd_k        integer NOT NULL DEFAULT 10 CHECK (aimd_k >= 1),
    aimd_step     double precision NOT NULL DEFAULT 0.05 CHECK (aimd_step > 0 AND aimd_step <= 1),
    streak        integer NOT NULL DEFAULT 0,
    ceiling       double precision,
    ceiling_at    timestamptz,
    decreased_at  timestamptz,   -- the end of the block of the last slow-down
    -- Hint: when the last denied job was told to come back, so denied jobs queue up one
    -- token apart instead of all coming back at the same instant.
    next_slot     timestamptz,
    denied_total  bigint NOT NULL DEFAULT 0,   -- claims refused for want of a token
    upstream_429_total bigint NOT NULL DEFAULT 0,
    UNIQUE (tenant_id, host)
);

-- Sources: a tenant's feed on an upstream host, with its circuit breaker.
ALTER TABLE sources
    ADD COLUMN bucket_id        bigint REFERENCES buckets (id),
    ADD COLUMN max_active       integer CHECK (max_active >= 1),
    ADD COLUMN circuit_state    text NOT NULL DEFAULT 'closed'
        CHECK (circuit_state IN ('closed', 'open', 'half_open')),
    ADD COLUMN circuit_since    timestamptz NOT NULL DEFAULT now(),
    -- open: end of the cooldown; half_open: deadline of the probes granted.
    ADD COLUMN circuit_until    timestamptz,
    ADD COLUMN circuit_probes   integer NOT NULL DEFAULT 0,
    -- Last outcomes, oldest first: '0' success, '1' failure (5xx, timeout, network).
    ADD COLUMN circuit_window   text NOT NULL DEFAULT '',
    ADD COLUMN cb_window        integer NOT NULL DEFAULT 20 CHECK (cb_window BETWEEN 1 AND 1000),
    ADD COLUMN cb_min_outcomes  integer NOT NULL DEFAULT 10 CHECK (cb_min_outcomes >= 1),
    ADD COLUMN cb_failure_ratio double precision NOT NULL DEFAULT 0.5
        CHECK (cb_failure_ratio > 0 AND cb_failure_ratio <= 1),
    ADD COLUMN cb_cooldown_s    double precision NOT NULL DEFAULT 30 CHECK (cb_cooldown_s > 0),
    ADD COLUMN cb_probes        integer NOT NULL DEFAULT 1 CHECK (cb_probes >= 1),
    ADD COLUMN opened_total     bigint NOT NULL DEFAULT 0,
    ADD CONSTRAINT sources_name_valid CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$');

-- Pauses: a whole tenant (no source, no job type), one source, or one of a tenant's job types.
CREATE TABLE pauses (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   bigint NOT NULL REFERENCES tenants (id),
    source_id   bigint REFERENCES sources (id),
    job_type    text,
    reason      text NOT NULL,
    ticket      text,
    actor       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (source_id IS NULL OR job_type IS NULL)
);
-- One pause per scope: pausing twice is a no-op, resume removes the one row.
CREATE UNIQUE INDEX pauses_scope_uq ON pauses (tenant_id, coalesce(source_id, 0), coalesce(job_type, ''));

-- Blackouts: one-off (starts_at..ends_at) or recurring (cron, UTC, with a duration), for a
-- tenant or one of its sources. window_start/window_end hold the current or next window
-- (control computes it, the scheduler moves it on), so admission is a range test.
CREATE TABLE blackouts (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     bigint NOT NULL REFERENCES tenants (id),
    source_id     bigint REFERENCES sources (id),
    starts_at     timestamptz,
    ends_at       timestamptz,
    cron          text,
    duration_s    double precision,
    window_start  timestamptz NOT NULL,
    window_end    timestamptz NOT NULL,
    reason        text NOT NULL,
    ticket        text,
    actor         text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((cron IS NULL AND starts_at IS NOT NULL AND ends_at > starts_at AND duration_s IS NULL)
        OR (cron IS NOT NULL AND duration_s > 0 AND starts_at IS NULL AND ends_at IS NULL)),
    CHECK (window_end > window_start)
);
-- Admission: the blackouts of the claimed jobs' tenants.
CREATE INDEX blackouts_tenant_idx ON blackouts (tenant_id, window_end);

-- Concurrency quotas per tenant and job type. The slots in use are the leased and running
-- jobs themselves (counted under this row's lock at claim), so no exit path can leak one.
CREATE TABLE quotas (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     bigint NOT NULL REFERENCES tenants (id),
    job_type      text NOT NULL,
    max_active    integer CHECK (max_active >= 1),
    max_per_hour  integer CHECK (max_per_hour >= 1),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, job_type)
);

-- Starts per quota and minute, for max_per_hour (the last 61 minutes are counted, so no
-- rolling hour ever sees more than the limit).
CREATE TABLE quota_starts (
    quota_id  bigint NOT NULL REFERENCES quotas (id) ON DELETE CASCADE,
    minute    timestamptz NOT NULL,
    starts    integer NOT NULL,
    PRIMARY KEY (quota_id, minute)
);

-- Every change of a bucket's rate: adaptive (actor = the worker or 'aimd') or manual.
CREATE TABLE throttles (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    bucket_id  bigint NOT NULL REFERENCES buckets (id),
    tenant_id  bigint NOT NULL REFERENCES tenants (id),
    old_rate   double precision,
    new_rate   double precision NOT NULL,
    reason     text NOT NULL,
    actor      text NOT NULL
);
CREATE INDEX throttles_bucket_idx ON throttles (bucket_id, at);
CREATE INDEX throttles_at_idx ON throttles (at);

-- Backpressure: a tenant's backlog limit (waiting jobs) and what submit does beyond it.
ALTER TABLE tenants
    ADD COLUMN backlog_limit   integer CHECK (backlog_limit >= 1),
    ADD COLUMN backlog_policy  text NOT NULL DEFAULT 'refuse' CHECK (backlog_policy IN ('refuse', 'defer'));

ALTER TABLE jobs ADD CONSTRAINT jobs_wait_reason_valid CHECK (wait_reason IN
    ('rate_limited', 'quota', 'paused', 'blackout', 'circuit_open', 'backpressure'));

-- Admission counts the slots in use per quota and per source.
CREATE INDEX jobs_active_type_idx ON jobs (tenant_id, job_type) WHERE state IN ('leased', 'running');
CREATE INDEX jobs_active_source_idx ON jobs (source_id)
    WHERE state IN ('leased', 'running') AND source_id IS NOT NULL;
-- Resume, circuit close and the console find the jobs waiting on a source.
CREATE INDEX jobs_throttled_source_idx ON jobs (source_id, wait_reason) WHERE state = 'throttled';
-- The console's rate-limit view: denials and upstream 429s over time.
CREATE INDEX job_history_flow_idx ON job_history (at) WHERE event IN ('deny', 'throttle');
"""
    )
    op.execute(LEARNS)
    op.execute(ADMIT)
    op.execute(RECORD_OUTCOMES)


# -- orch_circuit_learns, orch_bucket_learns -----------------------------------------------
# Whether a success can change a source's circuit (not closed, or its window not yet all
# successes) or its bucket (below its cap, or due for a probe). When neither can, successes
# need not be reported at all: the claim tells the worker so (core/ledger/sql.py), and
# orch_record_outcomes skips them.
LEARNS = r"""
CREATE FUNCTION orch_circuit_learns(s sources) RETURNS boolean LANGUAGE sql STABLE AS $fn$
    SELECT s.circuit_state <> 'closed' OR s.circuit_window <> repeat('0', s.cb_window)
$fn$;
CREATE FUNCTION orch_bucket_learns(b buckets) RETURNS boolean LANGUAGE sql STABLE AS $fn$
    SELECT b.rate < least(b.base_rate, coalesce(0.9 * b.ceiling, b.base_rate))
        OR coalesce(b.ceiling_at < now() - interval '5 minutes', false)
$fn$;
"""

# -- orch_admit ---------------------------------------------------------------------------
# Row locks are FOR NO KEY UPDATE: they serialise claims and outcomes on a source, bucket or
# quota, but do not block the foreign-key checks of jobs being submitted for that source.
# Admission for a claim: given the ids a claim statement has locked (best first), say for
# each whether it may start now (wait_reason NULL) or must wait, why and until when. Checks
# in order: pause, blackout, circuit, source max_active, quota (max_active, max_per_hour),
# token. Flow-control rows are locked first, in one global order (sources, buckets,
# quotas; each by id) that orch_record_outcomes shares, so no two statements deadlock; the
# verdict query then runs on a fresh snapshot (a VOLATILE function takes one per statement)
# and sees every claim committed before the locks were granted: caps hold across workers.
ADMIT = r"""
CREATE FUNCTION orch_admit(p_ids bigint[])
RETURNS TABLE (job_id bigint, wait_reason text, not_before timestamptz)
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v_sources bigint[];
    v_tenants bigint[];
    v_groups bigint;
    v_tenant bigint;
    v_type text;
    v_source bigint;
    v_n bigint;
    v_bucket record;
    v_quota record;
    v_tokens double precision;
    v_room double precision;
BEGIN
    IF p_ids IS NULL OR cardinality(p_ids) = 0 THEN
        RETURN;
    END IF;
    SELECT array_agg(DISTINCT j.source_id) FILTER (WHERE j.source_id IS NOT NULL), array_agg(DISTINCT j.tenant_id),
           count(DISTINCT (j.tenant_id, j.job_type, j.source_id)), min(j.tenant_id), min(j.job_type),
           min(j.source_id), count(*)
      INTO v_sources, v_tenants, v_groups, v_tenant, v_type, v_source, v_n
      FROM jobs AS j WHERE j.id = ANY(p_ids);
    -- Fast path: nothing governs these jobs.
    IF v_sources IS NULL
       AND NOT EXISTS (SELECT 1 FROM pauses AS p WHERE p.tenant_id = ANY(v_tenants))
       AND NOT EXISTS (SELECT 1 FROM quotas AS q WHERE q.tenant_id = ANY(v_tenants))
       AND NOT EXISTS (SELECT 1 FROM blackouts AS b WHERE b.tenant_id = ANY(v_tenants) AND b.window_end > now()) THEN
        RETURN QUERY SELECT u.id, NULL::text, NULL::timestamptz FROM unnest(p_ids) AS u(id);
        RETURN;
    END IF;
    -- Fast path for the usual batch, one tenant, job type and source with room for all of it:
    -- nothing paused or blacked out, a closed circuit without a cap (read without a lock,
    -- as the general path does), then under the bucket and quota locks enough tokens and
    -- slots. Anything else, or any doubt, goes to the general path below.
    IF v_groups = 1
       AND NOT EXISTS (SELECT 1 FROM pauses AS p WHERE p.tenant_id = v_tenant
                       AND (p.source_id = v_source OR p.job_type = v_type
                            OR (p.source_id IS NULL AND p.job_type IS NULL)))
       AND NOT EXISTS (SELECT 1 FROM blackouts AS b WHERE b.tenant_id = v_tenant
                       AND (b.source_id IS NULL OR b.source_id = v_source)
                       AND b.window_start <= now() AND b.window_end > now())
       AND (v_source IS NULL OR EXISTS (SELECT 1 FROM sources AS s WHERE s.id = v_source
                                        AND s.circuit_state = 'closed' AND s.max_active IS NULL)) THEN
        SELECT b.id, b.tokens, b.updated_at, b.capacity, b.rate INTO v_bucket
          FROM buckets AS b WHERE b.id = (SELECT s.bucket_id FROM sources AS s WHERE s.id = v_source)
          FOR NO KEY UPDATE;
        SELECT q.id, q.max_active, q.max_per_hour INTO v_quota
          FROM quotas AS q WHERE q.tenant_id = v_tenant AND q.job_type = v_type
          FOR NO KEY UPDATE;
        v_room := v_n;
        IF v_bucket.id IS NOT NULL THEN
            v_tokens := least(v_bucket.capacity,
                              v_bucket.tokens + v_bucket.rate * extract(epoch FROM now() - v_bucket.updated_at));
            v_room := least(v_room, floor(greatest(v_tokens, 0) + 1e-6));
        END IF;
        IF v_room >= v_n AND v_quota.max_active IS NOT NULL THEN
            v_room := least(v_room, v_quota.max_active - (
                SELECT count(*) FROM jobs AS a WHERE a.tenant_id = v_tenant AND a.job_type = v_type
                  AND a.state IN ('leased', 'running')));
        END IF;
        IF v_room >= v_n AND v_quota.max_per_hour IS NOT NULL THEN
            v_room := least(v_room, v_quota.max_per_hour - (
                SELECT coalesce(sum(m.starts), 0) FROM quota_starts AS m WHERE m.quota_id = v_quota.id
                  AND m.minute > date_trunc('minute', now()) - interval '61 minutes'));
        END IF;
        IF v_room >= v_n THEN
            IF v_bucket.id IS NOT NULL THEN
                UPDATE buckets SET
                    tokens = CASE WHEN updated_at > now() THEN tokens ELSE v_tokens END - v_n,
                    updated_at = greatest(updated_at, now())
                WHERE id = v_bucket.id;
            END IF;
            IF v_quota.max_per_hour IS NOT NULL THEN
                INSERT INTO quota_starts (quota_id, minute, starts)
                VALUES (v_quota.id, date_trunc('minute', now()), v_n)
                ON CONFLICT (quota_id, minute) DO UPDATE SET starts = quota_starts.starts + EXCLUDED.starts;
            END IF;
            RETURN QUERY SELECT u.id, NULL::text, NULL::timestamptz FROM unnest(p_ids) AS u(id);
            RETURN;
        END IF;
        -- Not enough room: the general path decides job by job (the locks it takes on the
        -- bucket and quota are held already; a source it locks has a circuit that left
        -- 'closed' since the check above, which is the only way the order can differ).
    END IF;
    IF v_sources IS NOT NULL THEN
        -- A source is locked only when admission may write it (probes) or count its slots;
        -- a closed circuit without a cap is read as it stands.
        PERFORM 1 FROM sources AS s
          WHERE s.id = ANY(v_sources) AND (s.circuit_state <> 'closed' OR s.max_active IS NOT NULL)
          ORDER BY s.id FOR NO KEY UPDATE;
        PERFORM 1 FROM buckets AS b
          WHERE b.id IN (SELECT s.bucket_id FROM sources AS s WHERE s.id = ANY(v_sources))
          ORDER BY b.id FOR NO KEY UPDATE;
    END IF;
    PERFORM 1 FROM quotas AS q
      WHERE q.tenant_id = ANY(v_tenants)
        AND (q.tenant_id, q.job_type) IN (SELECT j.tenant_id, j.job_type FROM jobs AS j WHERE j.id = ANY(p_ids))
      ORDER BY q.id FOR NO KEY UPDATE;

    RETURN QUERY
    WITH c AS (
        SELECT u.id, u.ord, j.tenant_id, j.job_type, j.source_id, s.bucket_id
        FROM unnest(p_ids) WITH ORDINALITY AS u(id, ord)
        JOIN jobs AS j ON j.id = u.id
        LEFT JOIN sources AS s ON s.id = j.source_id
    ),
    -- 1. Pauses and blackouts: nothing of that scope starts.
    v1 AS (
        SELECT c.*,
            CASE WHEN EXISTS (
                    SELECT 1 FROM pauses AS p
                    WHERE p.tenant_id = c.tenant_id
                      AND (p.source_id = c.source_id OR p.job_type = c.job_type
                           OR (p.source_id IS NULL AND p.job_type IS NULL)))
                 THEN 'paused' END AS paused,
            (SELECT max(b.window_end) FROM blackouts AS b
             WHERE b.tenant_id = c.tenant_id AND (b.source_id IS NULL OR b.source_id = c.source_id)
               AND b.window_start <= now() AND b.window_end > now()) AS blackout_end
        FROM c
    ),
    -- 2. Per source: the circuit's allowance (NULL: closed) and free slots (NULL: no cap).
    src AS (
        SELECT s.id AS source_id, s.circuit_state, s.circuit_until, s.cb_cooldown_s,
            CASE WHEN s.circuit_state = 'closed' THEN NULL
                 WHEN s.circuit_until <= now() THEN s.cb_probes
                 WHEN s.circuit_state = 'half_open' THEN s.circuit_probes
                 ELSE 0 END AS probes,
            s.max_active - (SELECT count(*) FROM jobs AS a
                            WHERE a.source_id = s.id AND a.state IN ('leased', 'running')) AS free
        FROM sources AS s WHERE s.id = ANY(v_sources)
    ),
    v2 AS (
        SELECT v1.*, src.probes, src.free, src.circuit_until,
            row_number() OVER (PARTITION BY v1.source_id ORDER BY v1.ord) AS rk
        FROM v1 LEFT JOIN src USING (source_id)
        WHERE v1.paused IS NULL AND v1.blackout_end IS NULL
    ),
    d2 AS (
        SELECT v2.*,
            CASE WHEN v2.rk > v2.probes THEN 'circuit_open'
                 WHEN v2.rk > v2.free THEN 'quota' END AS denied
        FROM v2
    ),
    -- 3. Quotas per tenant and job type.
    quo AS (
        SELECT q.id AS quota_id, q.tenant_id, q.job_type, q.max_per_hour,
            q.max_active - (SELECT count(*) FROM jobs AS a
                            WHERE a.tenant_id = q.tenant_id AND a.job_type = q.job_type
                              AND a.state IN ('leased', 'running')) AS free_active,
            q.max_per_hour - (SELECT coalesce(sum(m.starts), 0) FROM quota_starts AS m
                              WHERE m.quota_id = q.id
                                AND m.minute > date_trunc('minute', now()) - interval '61 minutes') AS free_hour
        FROM quotas AS q
        WHERE q.tenant_id = ANY(v_tenants)
          AND (q.tenant_id, q.job_type) IN (SELECT c.tenant_id, c.job_type FROM c)
    ),
    v3 AS (
        SELECT d2.id, d2.ord, d2.tenant_id, d2.job_type, d2.source_id, d2.bucket_id,
            quo.quota_id, quo.max_per_hour, quo.free_active, quo.free_hour,
            row_number() OVER (PARTITION BY d2.tenant_id, d2.job_type ORDER BY d2.ord) AS rk
        FROM d2 LEFT JOIN quo USING (tenant_id, job_type)
        WHERE d2.denied IS NULL
    ),
    d3 AS (
        SELECT v3.*,
            CASE WHEN v3.rk > v3.free_active THEN 'quota'
                 WHEN v3.rk > v3.free_hour THEN 'quota_hour' END AS denied
        FROM v3
    ),
    -- 4. Tokens (a token due "now" counts even if float rounding left it a hair short).
    bkt AS (
        SELECT b.id AS bucket_id, b.rate, b.next_slot, b.updated_at,
            least(b.capacity, b.tokens + b.rate * extract(epoch FROM now() - b.updated_at)) AS tokens_now
        FROM buckets AS b
        WHERE b.id IN (SELECT s.bucket_id FROM sources AS s WHERE s.id = ANY(v_sources))
    ),
    v4 AS (
        SELECT d3.id, d3.ord, d3.source_id, d3.quota_id, d3.max_per_hour, d3.bucket_id,
            bkt.rate, bkt.tokens_now, bkt.next_slot,
            row_number() OVER (PARTITION BY d3.bucket_id ORDER BY d3.ord) AS rk
        FROM d3 LEFT JOIN bkt USING (bucket_id)
        WHERE d3.denied IS NULL
    ),
    d4 AS (
        SELECT v4.*,
            CASE WHEN v4.bucket_id IS NOT NULL AND v4.rk > floor(greatest(v4.tokens_now, 0) + 1e-6)
                 THEN 'rate_limited' END AS denied,
            greatest(v4.rk - floor(greatest(v4.tokens_now, 0) + 1e-6), 0) AS behind
        FROM v4
    ),
    -- When each rate-limited job's token will exist: its place behind the tokens there
    -- are, and behind the jobs already told to come back (next_slot).
    d4t AS (
        SELECT d4.*,
            CASE WHEN d4.denied IS NOT NULL THEN greatest(
                now() + make_interval(
                    secs => (floor(greatest(d4.tokens_now, 0) + 1e-6) + d4.behind - d4.tokens_now) / d4.rate),
                coalesce(d4.next_slot, '-infinity'::timestamptz) + make_interval(secs => d4.behind / d4.rate))
            END AS token_at
        FROM d4
    ),
    admitted AS (SELECT * FROM d4t WHERE d4t.denied IS NULL),
    take_tokens AS (
        UPDATE buckets AS b SET
            -- updated_at after now(): blocked by a Retry-After, or a claim that committed while
            -- this one waited for the lock; its grants come off the tokens as they stand then.
            tokens = CASE WHEN b.updated_at > now() THEN b.tokens - g.granted ELSE g.tokens_now - g.granted END,
            updated_at = greatest(b.updated_at, now()),
            next_slot = coalesce(g.last_slot, b.next_slot),
            denied_total = b.denied_total + g.denied
        FROM (SELECT d4t.bucket_id, max(d4t.tokens_now) AS tokens_now,
                     count(*) FILTER (WHERE d4t.denied IS NULL) AS granted,
                     count(*) FILTER (WHERE d4t.denied IS NOT NULL) AS denied,
                     max(d4t.token_at) AS last_slot
              FROM d4t WHERE d4t.bucket_id IS NOT NULL GROUP BY d4t.bucket_id) AS g
        WHERE b.id = g.bucket_id
    ),
    probe AS (
        -- Probes granted: an open circuit past its cooldown goes half-open.
        UPDATE sources AS s SET
            circuit_state = 'half_open',
            circuit_since = CASE WHEN s.circuit_state = 'open' THEN now() ELSE s.circuit_since END,
            circuit_probes = CASE WHEN s.circuit_until <= now() THEN s.cb_probes ELSE s.circuit_probes END - a.n,
            circuit_until = CASE WHEN s.circuit_until <= now()
                                 THEN now() + make_interval(secs => s.cb_cooldown_s) ELSE s.circuit_until END
        FROM (SELECT admitted.source_id, count(*) AS n FROM admitted GROUP BY 1) AS a
        WHERE s.id = a.source_id AND s.circuit_state <> 'closed'
    ),
    hour_starts AS (
        INSERT INTO quota_starts (quota_id, minute, starts)
        SELECT admitted.quota_id, date_trunc('minute', now()), count(*)
        FROM admitted WHERE admitted.max_per_hour IS NOT NULL GROUP BY 1
        ON CONFLICT (quota_id, minute) DO UPDATE SET starts = quota_starts.starts + EXCLUDED.starts
    ),
    verdicts AS (
        SELECT v1.id, 'paused' AS why, now() + interval '10 minutes' AS until
            FROM v1 WHERE v1.paused IS NOT NULL
        UNION ALL
        SELECT v1.id, 'blackout', v1.blackout_end FROM v1 WHERE v1.paused IS NULL AND v1.blackout_end IS NOT NULL
        UNION ALL
        SELECT d2.id, d2.denied,
            CASE WHEN d2.denied = 'circuit_open' THEN greatest(d2.circuit_until, now() + interval '1 second')
                 ELSE now() + make_interval(secs => least(30, 1 + 0.05 * (d2.rk - d2.free - 1))) END
            FROM d2 WHERE d2.denied IS NOT NULL
        UNION ALL
        SELECT d3.id, 'quota',
            CASE WHEN d3.denied = 'quota_hour' THEN date_trunc('minute', now()) + interval '1 minute'
                 ELSE now() + make_interval(secs => least(30, 1 + 0.05 * (d3.rk - d3.free_active - 1))) END
            FROM d3 WHERE d3.denied IS NOT NULL
        UNION ALL
        SELECT d4t.id, d4t.denied, d4t.token_at FROM d4t
    )
    SELECT v.id, v.why, v.until FROM verdicts AS v;
END
$fn$;
"""

# -- orch_record_outcomes -----------------------------------------------------------------
# What the jobs of sources taught us, in finishing order: 'ok', 'fail' (counts against
# the circuit) or 'throttled' (an upstream 429: AIMD, ADR 0010). p_started is when each job
# started (database time): a 429 for a request sent before the last slow-down ended
# (decreased_at: the end of its block) says nothing about the new rate, so it does not
# halve it again.
RECORD_OUTCOMES = r"""
CREATE FUNCTION orch_record_outcomes(
    p_source bigint[], p_kind text[], p_retry_after double precision[], p_started timestamptz[], p_actor text)
RETURNS void
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v_sources bigint[];
    v_buckets bigint[];
    r record;
    k text;
    v_state text;
    v_window text;
    v_until timestamptz;
    v_fails integer;
    v_rate double precision;
    v_cap double precision;
    v_streak integer;
    v_tokens double precision;
    v_ceiling double precision;
    v_ceiling_at timestamptz;
    v_t double precision;
    v_block double precision;
BEGIN
    -- Only rows a lesson can change are locked and written: in the steady state (a closed
    -- circuit whose window is all successes, a bucket at its cap) successes change nothing,
    -- and claims do not queue behind the writers. Read here without locks, re-read below
    -- under them.
    SELECT array_agg(DISTINCT s.id) INTO v_sources
    FROM unnest(p_source, p_kind) AS o(source_id, kind)
    JOIN sources AS s ON s.id = o.source_id
    WHERE o.kind = 'fail' OR (o.kind = 'ok' AND orch_circuit_learns(s));
    SELECT array_agg(DISTINCT b.id) INTO v_buckets
    FROM unnest(p_source, p_kind) AS o(source_id, kind)
    JOIN sources AS s ON s.id = o.source_id
    JOIN buckets AS b ON b.id = s.bucket_id
    WHERE o.kind = 'throttled' OR (o.kind = 'ok' AND orch_bucket_learns(b));
    IF v_sources IS NULL AND v_buckets IS NULL THEN
        RETURN;
    END IF;
    PERFORM 1 FROM sources AS s WHERE s.id = ANY(v_sources) ORDER BY s.id FOR NO KEY UPDATE;
    PERFORM 1 FROM buckets AS b WHERE b.id = ANY(v_buckets) ORDER BY b.id FOR NO KEY UPDATE;

    -- Circuits.
    FOR r IN
        SELECT s.id, s.circuit_state, s.circuit_window, s.circuit_until, s.cb_window, s.cb_min_outcomes,
               s.cb_failure_ratio, s.cb_cooldown_s,
               array_agg(o.kind ORDER BY o.n) AS kinds
        FROM unnest(p_source, p_kind) WITH ORDINALITY AS o(source_id, kind, n)
        JOIN sources AS s ON s.id = o.source_id
        WHERE o.kind IN ('ok', 'fail') AND s.id = ANY(v_sources)
        GROUP BY s.id
    LOOP
        v_state := r.circuit_state;
        v_window := r.circuit_window;
        v_until := r.circuit_until;
        FOREACH k IN ARRAY r.kinds LOOP
            IF v_state = 'half_open' THEN
                IF k = 'ok' THEN
                    v_state := 'closed'; v_until := NULL;
                ELSE
                    v_state := 'open'; v_until := now() + make_interval(secs => r.cb_cooldown_s);
                END IF;
                v_window := '';
            ELSIF v_state = 'closed' THEN
                v_window := right(v_window || CASE WHEN k = 'ok' THEN '0' ELSE '1' END, r.cb_window);
                v_fails := length(v_window) - length(replace(v_window, '1', ''));
                IF length(v_window) >= r.cb_min_outcomes AND v_fails >= r.cb_failure_ratio * length(v_window) THEN
                    v_state := 'open'; v_until := now() + make_interval(secs => r.cb_cooldown_s); v_window := '';
                END IF;
            END IF;
            -- open: outcomes of jobs that started before it opened change nothing.
        END LOOP;
        UPDATE sources AS s SET
            circuit_state = v_state,
            circuit_window = v_window,
            circuit_until = v_until,
            circuit_probes = CASE WHEN v_state = r.circuit_state THEN s.circuit_probes ELSE 0 END,
            circuit_since = CASE WHEN v_state = r.circuit_state THEN s.circuit_since ELSE now() END,
            opened_total = s.opened_total + CASE WHEN v_state = 'open' AND r.circuit_state <> 'open' THEN 1 ELSE 0 END
        WHERE s.id = r.id;
        IF v_state = 'closed' AND r.circuit_state <> 'closed' THEN
            -- Closed again: the jobs it held may go now.
            UPDATE jobs AS j SET not_before = now()
            WHERE j.source_id = r.id AND j.state = 'throttled' AND j.wait_reason = 'circuit_open';
        END IF;
    END LOOP;

    -- Buckets (AIMD).
    FOR r IN
        SELECT b.id, b.tenant_id, b.rate, b.base_rate, b.min_rate, b.capacity, b.tokens, b.updated_at,
               b.aimd_k, b.aimd_step, b.streak, b.ceiling, b.ceiling_at, b.decreased_at,
               count(*) FILTER (WHERE o.kind = 'ok') AS oks,
               count(*) FILTER (WHERE o.kind = 'throttled') AS n429,
               bool_or(o.kind = 'throttled' AND (b.decreased_at IS NULL OR o.started > b.decreased_at)) AS hit,
               max(o.retry_after) FILTER (WHERE o.kind = 'throttled') AS retry_after
        FROM unnest(p_source, p_kind, p_retry_after, p_started) AS o(source_id, kind, retry_after, started)
        JOIN sources AS s ON s.id = o.source_id
        JOIN buckets AS b ON b.id = s.bucket_id
        WHERE b.id = ANY(v_buckets)
        GROUP BY b.id
    LOOP
        -- Tokens earned so far at the old rate (a rate change is never retroactive).
        v_tokens := CASE WHEN r.updated_at > now() THEN r.tokens
                         ELSE least(r.capacity, r.tokens + r.rate * extract(epoch FROM now() - r.updated_at)) END;
        IF r.hit THEN
            v_rate := greatest(r.min_rate, r.rate / 2);
            -- The limit lies below the rate that drew the 429. How far below shows in how long
            -- that rate lasted since the last block ended (v_t): an upstream's burst (taken
            -- as about one second of its rate) runs out after v_t = 1 / (rate / limit - 1),
            -- so limit ~ rate * v_t / (v_t + 1). Trusted to cut at most 25% per 429.
            v_t := extract(epoch FROM now() - r.decreased_at);
            v_ceiling := CASE WHEN v_t IS NULL OR v_t <= 0 THEN r.rate
                              ELSE greatest(0.75 * r.rate, least(r.rate, r.rate * v_t / (v_t + 1))) END;
            v_block := greatest(coalesce(r.retry_after, 1), 0);
            UPDATE buckets SET
                rate = v_rate, tokens = 0,
                updated_at = now() + make_interval(secs => v_block),
                streak = 0, ceiling = v_ceiling, ceiling_at = now(), next_slot = NULL,
                decreased_at = now() + make_interval(secs => v_block),
                upstream_429_total = upstream_429_total + r.n429
            WHERE id = r.id;
            INSERT INTO throttles (bucket_id, tenant_id, old_rate, new_rate, reason, actor)
            VALUES (r.id, r.tenant_id, r.rate, v_rate,
                    'upstream 429: rate halved, bucket blocked for ' || round(v_block::numeric, 2)
                        || 's, limit estimated at ' || round(v_ceiling::numeric, 2) || '/s',
                    p_actor);
            CONTINUE;
        END IF;
        v_rate := r.rate;
        v_streak := r.streak + r.oks;
        v_ceiling := r.ceiling;
        v_ceiling_at := r.ceiling_at;
        IF v_ceiling IS NOT NULL AND v_ceiling_at < now() - interval '5 minutes' THEN
            -- Quiet for a while: probe whether the upstream now allows more.
            v_ceiling := v_ceiling * 1.1; v_ceiling_at := now();
        END IF;
        v_cap := least(r.base_rate, coalesce(0.9 * v_ceiling, r.base_rate));
        WHILE v_streak >= r.aimd_k AND v_rate < v_cap LOOP
            v_rate := least(v_cap, v_rate + r.aimd_step * r.base_rate);
            v_streak := v_streak - r.aimd_k;
        END LOOP;
        IF v_rate >= v_cap THEN
            v_streak := 0;
        END IF;
        UPDATE buckets SET
            rate = v_rate, streak = v_streak, ceiling = v_ceiling, ceiling_at = v_ceiling_at,
            tokens = CASE WHEN v_rate <> r.rate THEN v_tokens ELSE tokens END,
            updated_at = CASE WHEN v_rate <> r.rate THEN greatest(updated_at, now()) ELSE updated_at END,
            upstream_429_total = upstream_429_total + r.n429
        WHERE id = r.id;
        IF v_rate <> r.rate THEN
            INSERT INTO throttles (bucket_id, tenant_id, old_rate, new_rate, reason, actor)
            VALUES (r.id, r.tenant_id, r.rate, v_rate, 'successes: rate raised', p_actor);
        END IF;
    END LOOP;
END
$fn$;
"""


def downgrade() -> None:
    op.execute(
        """
DROP FUNCTION orch_record_outcomes(bigint[], text[], double precision[], timestamptz[], text);
DROP FUNCTION orch_admit(bigint[]);
DROP FUNCTION orch_bucket_learns(buckets);
DROP FUNCTION orch_circuit_learns(sources);
DROP INDEX job_history_flow_idx;
DROP INDEX jobs_throttled_source_idx;
DROP INDEX jobs_active_source_idx;
DROP INDEX jobs_active_type_idx;
ALTER TABLE jobs DROP CONSTRAINT jobs_wait_reason_valid;
ALTER TABLE tenants DROP COLUMN backlog_limit, DROP COLUMN backlog_policy;
DROP TABLE throttles;
DROP TABLE quota_starts;
DROP TABLE quotas;
DROP TABLE blackouts;
DROP TABLE pauses;
ALTER TABLE sources DROP CONSTRAINT sources_name_valid,
    DROP COLUMN bucket_id, DROP COLUMN max_active, DROP COLUMN circuit_state, DROP COLUMN circuit_since,
    DROP COLUMN circuit_until, DROP COLUMN circuit_probes, DROP COLUMN circuit_window, DROP COLUMN cb_window,
    DROP COLUMN cb_min_outcomes, DROP COLUMN cb_failure_ratio, DROP COLUMN cb_cooldown_s, DROP COLUMN cb_probes,
    DROP COLUMN opened_total;
DROP TABLE buckets;
DELETE FROM job_transitions WHERE event = 'throttle';
"""
    )
