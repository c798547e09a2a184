-- name: orch_admit
-- version 4, installed by migration 0021. A landed version is never edited: a change is
-- orch_admit.v5.sql and a new migration that installs it. Changes from version 3: room is
-- reserved ahead (docs/adr/0026). A claim of the fast path's batch (one tenant, job type and
-- source, nothing paused or blacked out, a closed circuit without a cap) first admits from
-- its session's reservation for that group (admission_reservations: tokens, slots and the
-- hour's starts for `room` more jobs), which no other claim writes, so it locks no shared
-- row. Only a claim without a usable reservation takes the bucket, quota and minute rows as
-- version 3 did, and where the room is ample it takes RESERVE_N more for the reservation.
-- A reservation is used while it has not expired (1 s) and its bucket's rate, its last 429
-- and its quota are as they were when it was taken; every count of a quota's free slots
-- subtracts the room of the reservations that still exist, after deleting the expired ones
-- it can lock. A reserved token is used within 1 s of its grant, so in any interval t at
-- most capacity + rate x (t + 1 s) jobs of a bucket start (grants keep capacity + rate x t).
--
-- Admission for a claim: given the ids a claim statement has locked (best first), say for
-- each whether it may start now (wait_reason NULL) or must wait, why and until when. Checks
-- in order: pause, blackout, circuit, source max_active, quota (max_active, max_per_hour),
-- token. Flow-control rows are locked first, in one global order (sources, buckets,
-- quotas; each by id) that orch_record_outcomes shares, so no two statements deadlock; the
-- verdict query then runs on a fresh snapshot (a VOLATILE function takes one per statement)
-- and sees every claim committed before the locks were granted: caps hold across workers.
-- Row locks are FOR NO KEY UPDATE: they serialise claims and outcomes on a source, bucket or
-- quota, but do not block the foreign-key checks of jobs being submitted for that source.
-- docs/adr/0009-admission-in-the-claim-statement.md says why.
CREATE OR REPLACE FUNCTION orch_admit(p_ids bigint[])
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
    v_bucket_id bigint;
    v_fast boolean := false;
    v_took boolean;
    v_room_ok boolean;
    v_quota record;
    v_reserve integer;
    v_rate double precision;
    v_decreased_at timestamptz;
    v_free_active bigint;
    v_free_hour bigint;
    v_minute timestamptz;
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
    -- as the general path does), then enough tokens (taken by the UPDATE that locks the
    -- bucket: its condition is re-checked on the row as it stands once the lock is granted)
    -- and, under the quota's lock, enough slots. Anything else, or any doubt, gives the
    -- tokens back and goes to the general path below.
    IF v_groups = 1 THEN
        SELECT NOT EXISTS (SELECT 1 FROM pauses AS p WHERE p.tenant_id = v_tenant
                           AND (p.source_id = v_source OR p.job_type = v_type
                                OR (p.source_id IS NULL AND p.job_type IS NULL)))
               AND NOT EXISTS (SELECT 1 FROM blackouts AS b WHERE b.tenant_id = v_tenant
                               AND (b.source_id IS NULL OR b.source_id = v_source)
                               AND b.window_start <= now() AND b.window_end > now())
               AND (v_source IS NULL OR s.id IS NOT NULL),
               s.bucket_id
          INTO v_fast, v_bucket_id
          FROM (SELECT 1) AS one
          LEFT JOIN sources AS s ON s.id = v_source AND s.circuit_state = 'closed' AND s.max_active IS NULL;
    END IF;
    IF v_fast THEN
        -- 1. This session's reservation for the group, if it has room for the batch and what
        -- governs the group is as it was when the room was taken: the source's bucket (its
        -- rate not lowered since, no 429 since: decreased_at moves with each) and the quota
        -- (the same row with the same limits, or still none). Its row is written only by
        -- this session; a claim deleting it as expired holds it locked, and then it is
        -- skipped.
        UPDATE admission_reservations AS r SET room = r.room - v_n
        WHERE r.id = (SELECT o.id FROM admission_reservations AS o
                      WHERE o.holder = pg_backend_pid() AND o.tenant_id = v_tenant AND o.job_type = v_type
                        AND o.source_id IS NOT DISTINCT FROM v_source AND o.room >= v_n AND o.expires_at > now()
                      LIMIT 1 FOR NO KEY UPDATE SKIP LOCKED)
          AND r.bucket_id IS NOT DISTINCT FROM v_bucket_id
          AND (r.bucket_id IS NULL OR EXISTS (
                SELECT 1 FROM buckets AS b WHERE b.id = r.bucket_id AND b.rate >= r.rate
                  AND b.decreased_at IS NOT DISTINCT FROM r.decreased_at))
          AND NOT EXISTS (SELECT 1 FROM quotas AS q WHERE q.tenant_id = v_tenant AND q.job_type = v_type
                            AND (q.id, q.max_active, q.max_per_hour)
                                IS DISTINCT FROM (r.quota_id, r.max_active, r.max_per_hour))
          AND (r.quota_id IS NULL OR EXISTS (SELECT 1 FROM quotas AS q WHERE q.id = r.quota_id));
        IF FOUND THEN
            RETURN QUERY SELECT u.id, NULL::text, NULL::timestamptz FROM unnest(p_ids) AS u(id);
            RETURN;
        END IF;
        -- A claim that does not admit from its reservation gives up the room left in it:
        -- its tokens and starts are lost, its slots are free again (room too small for the
        -- batch would otherwise hold slots until it expired).
        UPDATE admission_reservations AS r SET room = 0
        WHERE r.id IN (SELECT o.id FROM admission_reservations AS o
                       WHERE o.holder = pg_backend_pid() AND o.tenant_id = v_tenant AND o.job_type = v_type
                         AND o.source_id IS NOT DISTINCT FROM v_source AND o.room > 0
                       FOR NO KEY UPDATE SKIP LOCKED);
        -- 2. As version 3, taking RESERVE_N (64) more where the room is ample: at least
        -- 4 x RESERVE_N beyond the batch in the bucket, the quota's free slots and the hour.
        v_reserve := 64;
        v_took := v_bucket_id IS NULL;
        IF NOT v_took THEN
            -- Settled at the later of now and updated_at (a claim that committed while this
            -- one waited for the lock may have moved it past our now()); the room is what
            -- the bucket holds now (a Retry-After block puts updated_at in the future).
            UPDATE buckets AS b SET
                tokens = orch_bucket_tokens(b, greatest(b.updated_at, now())) - (v_n + v_reserve),
                updated_at = greatest(b.updated_at, now())
            WHERE b.id = v_bucket_id AND floor(greatest(orch_bucket_tokens(b), 0) + 1e-6) >= v_n + 4 * v_reserve
            RETURNING b.rate, b.decreased_at INTO v_rate, v_decreased_at;
            v_took := FOUND;
            IF NOT v_took THEN
                v_reserve := 0;
                UPDATE buckets AS b SET
                    tokens = orch_bucket_tokens(b, greatest(b.updated_at, now())) - v_n,
                    updated_at = greatest(b.updated_at, now())
                WHERE b.id = v_bucket_id AND floor(greatest(orch_bucket_tokens(b), 0) + 1e-6) >= v_n;
                v_took := FOUND;
            END IF;
        END IF;
        IF v_took THEN
            SELECT q.id, q.max_active, q.max_per_hour INTO v_quota
              FROM quotas AS q WHERE q.tenant_id = v_tenant AND q.job_type = v_type
              FOR NO KEY UPDATE;
            IF v_bucket_id IS NULL AND v_quota.id IS NULL THEN
                v_reserve := 0;  -- nothing to reserve
            END IF;
            IF v_quota.max_active IS NOT NULL THEN
                -- Expired reservations give their slots back; one a claim is using right now
                -- (locked) is counted until a later claim can delete it.
                DELETE FROM admission_reservations AS r WHERE r.id IN (
                    SELECT o.id FROM admission_reservations AS o
                    WHERE o.quota_id = v_quota.id AND o.expires_at <= now() FOR UPDATE SKIP LOCKED);
            END IF;
            -- Counted after the lock is granted: a statement of its own, so on a snapshot that
            -- sees every claim that committed before. A reservation's room counts as held
            -- slots: a claim that admits from one turns its room into active jobs in one
            -- commit, so the sum of both never passes the cap.
            SELECT v_quota.max_active - (
                        SELECT count(*) FROM jobs AS a WHERE a.tenant_id = v_tenant AND a.job_type = v_type
                          AND orch_holds_slot(a.state))
                     - (SELECT coalesce(sum(r.room), 0) FROM admission_reservations AS r WHERE r.quota_id = v_quota.id),
                   v_quota.max_per_hour - (
                        SELECT coalesce(sum(m.starts), 0) FROM quota_starts AS m WHERE m.quota_id = v_quota.id
                          AND m.minute > date_trunc('minute', now()) - interval '61 minutes')
              INTO v_free_active, v_free_hour;
            v_room_ok := coalesce(v_free_active >= v_n, true) AND coalesce(v_free_hour >= v_n, true);
            IF v_room_ok AND v_reserve > 0 AND NOT (coalesce(v_free_active >= v_n + 4 * v_reserve, true)
                                                    AND coalesce(v_free_hour >= v_n + 4 * v_reserve, true)) THEN
                IF v_bucket_id IS NOT NULL THEN
                    UPDATE buckets SET tokens = tokens + v_reserve WHERE id = v_bucket_id;
                END IF;
                v_reserve := 0;
            END IF;
            IF v_room_ok THEN
                IF v_quota.max_per_hour IS NOT NULL THEN
                    -- Reserved starts may happen until the reservation expires, so they are
                    -- counted in the minute it expires (the batch's with them: counted up to
                    -- a minute late, which only keeps them in the rolling hour longer).
                    v_minute := date_trunc('minute', now() + CASE WHEN v_reserve > 0 THEN interval '1 second'
                                                                  ELSE interval '0 seconds' END);
                    UPDATE quota_starts AS m SET starts = m.starts + v_n + v_reserve
                    WHERE m.quota_id = v_quota.id AND m.minute = v_minute;
                    IF NOT FOUND THEN
                        INSERT INTO quota_starts (quota_id, minute, starts)
                        VALUES (v_quota.id, v_minute, v_n + v_reserve)
                        ON CONFLICT (quota_id, minute) DO UPDATE SET starts = quota_starts.starts + EXCLUDED.starts;
                    END IF;
                END IF;
                -- The session's reservation for the group (given up above) is the new one.
                UPDATE admission_reservations AS r SET
                    room = v_reserve, expires_at = now() + interval '1 second',
                    bucket_id = v_bucket_id, rate = v_rate, decreased_at = v_decreased_at,
                    quota_id = v_quota.id, max_active = v_quota.max_active, max_per_hour = v_quota.max_per_hour
                WHERE v_reserve > 0
                  AND r.id IN (SELECT o.id FROM admission_reservations AS o
                               WHERE o.holder = pg_backend_pid() AND o.tenant_id = v_tenant AND o.job_type = v_type
                                 AND o.source_id IS NOT DISTINCT FROM v_source
                               LIMIT 1 FOR NO KEY UPDATE SKIP LOCKED);
                IF NOT FOUND AND v_reserve > 0 THEN
                    INSERT INTO admission_reservations (holder, tenant_id, job_type, source_id, bucket_id, rate,
                                                        decreased_at, quota_id, max_active, max_per_hour, room, expires_at)
                    VALUES (pg_backend_pid(), v_tenant, v_type, v_source, v_bucket_id, v_rate, v_decreased_at,
                            v_quota.id, v_quota.max_active, v_quota.max_per_hour, v_reserve,
                            now() + interval '1 second');
                END IF;
                RETURN QUERY SELECT u.id, NULL::text, NULL::timestamptz FROM unnest(p_ids) AS u(id);
                RETURN;
            END IF;
            IF v_bucket_id IS NOT NULL THEN
                -- No slot for all of them: the tokens go back (the bucket stays locked; the
                -- general path takes what it grants itself).
                UPDATE buckets SET tokens = tokens + v_n + v_reserve WHERE id = v_bucket_id;
            END IF;
        END IF;
        -- Not enough room: the general path decides job by job (the locks it takes on the
        -- bucket and quota may be held already; a source it locks has a circuit that left
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
    -- This session's reservations for the batch's groups are given up (as in the fast path:
    -- the general path does not admit from them), and expired ones of these quotas give
    -- their slots back.
    UPDATE admission_reservations AS r SET room = 0
    WHERE r.id IN (SELECT o.id FROM admission_reservations AS o
                   WHERE o.holder = pg_backend_pid() AND o.room > 0
                     AND (o.tenant_id, o.job_type) IN (SELECT j.tenant_id, j.job_type FROM jobs AS j WHERE j.id = ANY(p_ids))
                   FOR NO KEY UPDATE SKIP LOCKED);
    DELETE FROM admission_reservations AS r WHERE r.id IN (
        SELECT o.id FROM admission_reservations AS o
        WHERE o.quota_id IN (SELECT q.id FROM quotas AS q WHERE q.tenant_id = ANY(v_tenants) AND q.max_active IS NOT NULL
                               AND (q.tenant_id, q.job_type) IN (SELECT j.tenant_id, j.job_type FROM jobs AS j
                                                                 WHERE j.id = ANY(p_ids)))
          AND o.expires_at <= now()
        FOR UPDATE SKIP LOCKED);

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
                            WHERE a.source_id = s.id AND orch_holds_slot(a.state)) AS free
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
                              AND orch_holds_slot(a.state))
                         - (SELECT coalesce(sum(r.room), 0) FROM admission_reservations AS r
                            WHERE r.quota_id = q.id) AS free_active,
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
        SELECT b.id AS bucket_id, b.rate, b.next_slot, b.updated_at, orch_bucket_tokens(b) AS tokens_now
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
            tokens = orch_bucket_tokens(b, greatest(b.updated_at, now())) - g.granted,
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
