-- name: orch_record_outcomes
-- version 2, installed by migration 0004. A landed version is never edited: a change is
-- orch_record_outcomes.v3.sql and a new migration that installs it. (Version 1 was written
-- inline in migration 0003.) Changes from version 1: the tokens of a bucket come from
-- orch_bucket_tokens, their one definition.
--
-- What the jobs of sources taught us, in finishing order: 'ok', 'fail' (counts against
-- the circuit) or 'throttled' (an upstream 429: AIMD, docs/adr/0010). p_started is when each
-- job started (database time): a 429 for a request sent before the last slow-down ended
-- (decreased_at: the end of its block) says nothing about the new rate, so it does not
-- halve it again.
CREATE OR REPLACE FUNCTION orch_record_outcomes(
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
               orch_bucket_tokens(b, greatest(b.updated_at, now())) AS tokens_settled,
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
        v_tokens := r.tokens_settled;
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
