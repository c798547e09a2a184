-- name: orch_dag_advance
-- version 1, installed by migration 0005. A landed version is never edited: a change is
-- orch_dag_advance.v2.sql and a new migration that installs it.
--
-- Moves DAG runs on (docs/design.md, "DAG runs"), in the transaction that changed the jobs:
-- p_done are jobs of runs that just ended, in states p_states; p_check are pending jobs of
-- runs whose parents may already decide them (just spawned or replayed).
--
-- 1. Only the direct children of the jobs that ended are touched: their parent counts
--    (run_jobs.deps_*) go up, under the row lock, so two parents ending at once in two
--    transactions both count (the second waits for the first and adds to its result).
-- 2. A pending child whose trigger rule is now decided (orch_trigger_verdict) moves once:
--    to queued (with a dag_released row: the caller rings it after commit, or the scheduler
--    does), or
--    to upstream_failed / skipped, which end it and repeat step 1 for its children.
--    The cascade is a loop here, not nested triggers: a chain of any length costs no stack.
-- 3. Each run whose jobs have all ended gets its state (core.domain.dag.run_state): canceled
--    if an operator canceled it, failed if a job without allow_failure failed, else
--    succeeded; with a run.state event in the outbox and its finished counter.
-- Locks are taken in one order, children by id then runs by id, so concurrent finishers
-- do not deadlock on each other.
CREATE OR REPLACE FUNCTION orch_dag_advance(
    p_done bigint[], p_states text[], p_check bigint[], p_actor text)
RETURNS void
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v_done bigint[] := coalesce(p_done, '{}');
    v_states text[] := coalesce(p_states, '{}');
    v_check bigint[] := coalesce(p_check, '{}');
    v_all bigint[] := '{}';
    v_kids bigint[];
    v_runs bigint[];
BEGIN
    -- The job updates below must not run this again through the jobs trigger.
    PERFORM set_config('orch.dag_advancing', 'on', true);
    LOOP
        IF cardinality(v_done) > 0 THEN
            v_all := v_all || v_done;
            SELECT array_agg(DISTINCT e.child_id ORDER BY e.child_id) INTO v_kids
            FROM dag_edges AS e WHERE e.parent_id = ANY(v_done);
            IF v_kids IS NOT NULL THEN
                PERFORM 1 FROM run_jobs AS r WHERE r.job_id = ANY(v_kids) ORDER BY r.job_id FOR NO KEY UPDATE;
                UPDATE run_jobs AS r SET
                    deps_ok = r.deps_ok + c.ok,
                    deps_failed = r.deps_failed + c.failed,
                    deps_skipped = r.deps_skipped + c.skipped
                FROM (
                    SELECT e.child_id,
                           count(*) FILTER (WHERE d.state = 'succeeded') AS ok,
                           count(*) FILTER (WHERE d.state IN ('dead_lettered', 'upstream_failed', 'canceled')) AS failed,
                           count(*) FILTER (WHERE d.state = 'skipped') AS skipped
                    FROM unnest(v_done, v_states) AS d(id, state)
                    JOIN dag_edges AS e ON e.parent_id = d.id
                    GROUP BY e.child_id
                ) AS c
                WHERE r.job_id = c.child_id;
                v_check := v_check || v_kids;
            END IF;
        END IF;
        EXIT WHEN cardinality(v_check) = 0;
        WITH decided AS (
            SELECT r.job_id, r.trigger_rule, r.deps_total, r.deps_ok, r.deps_failed, r.deps_skipped,
                   orch_trigger_verdict(r.trigger_rule, r.deps_total, r.deps_ok, r.deps_failed, r.deps_skipped) AS verdict
            FROM run_jobs AS r
            WHERE r.job_id = ANY(v_check)
        ), moved AS (
            UPDATE jobs AS j SET
                state = d.verdict,
                updated_at = now(),
                rung_at = CASE WHEN d.verdict = 'queued' THEN now() END,
                finished_at = CASE WHEN d.verdict <> 'queued' THEN now() END
            FROM decided AS d
            WHERE j.id = d.job_id AND d.verdict IS NOT NULL AND j.state = 'pending'
            RETURNING j.id, j.state, j.attempt, j.run_id, j.queue,
                d.trigger_rule || ': ' || d.deps_ok || ' succeeded, ' || d.deps_failed || ' failed, '
                    || d.deps_skipped || ' skipped of ' || d.deps_total || ' parent(s)' AS reason
        ), released AS (
            INSERT INTO dag_released (job_id, run_id, queue)
            SELECT m.id, m.run_id, m.queue FROM moved AS m WHERE m.state = 'queued'
            ON CONFLICT (job_id) DO NOTHING
        ), history AS (
            INSERT INTO job_history (job_id, from_state, event, to_state, at, actor, reason, attempt)
            SELECT m.id, 'pending',
                   CASE m.state WHEN 'queued' THEN 'deps_met' WHEN 'upstream_failed' THEN 'parent_failed' ELSE 'skip' END,
                   m.state, now(), p_actor, m.reason, m.attempt
            FROM moved AS m
        )
        SELECT coalesce(array_agg(m.id ORDER BY m.id) FILTER (WHERE m.state <> 'queued'), '{}'),
               coalesce(array_agg(m.state ORDER BY m.id) FILTER (WHERE m.state <> 'queued'), '{}')
        INTO v_done, v_states
        FROM moved AS m;
        v_check := '{}';
        EXIT WHEN cardinality(v_done) = 0;
    END LOOP;

    IF cardinality(v_all) > 0 THEN
        SELECT array_agg(DISTINCT r.run_id ORDER BY r.run_id) INTO v_runs
        FROM run_jobs AS r WHERE r.job_id = ANY(v_all) AND r.current;
    END IF;
    IF v_runs IS NOT NULL THEN
        PERFORM 1 FROM runs WHERE id = ANY(v_runs) ORDER BY id FOR NO KEY UPDATE;
        UPDATE runs SET jobs_live = runs.jobs_live - e.n, updated_at = now()
        FROM (
            SELECT r.run_id, count(*) AS n FROM run_jobs AS r
            WHERE r.job_id = ANY(v_all) AND r.current GROUP BY r.run_id
        ) AS e
        WHERE runs.id = e.run_id;
        WITH finished AS (
            UPDATE runs SET
                state = CASE
                    WHEN runs.cancel_requested THEN 'canceled'
                    WHEN EXISTS (
                        SELECT 1 FROM run_jobs AS r JOIN jobs AS j ON j.id = r.job_id
                        WHERE r.run_id = runs.id AND r.current AND NOT r.allow_failure
                          AND j.state IN ('dead_lettered', 'upstream_failed', 'canceled')) THEN 'failed'
                    ELSE 'succeeded' END,
                finished_at = now(),
                updated_at = now()
            WHERE runs.id = ANY(v_runs) AND runs.jobs_live = 0 AND runs.state = 'running'
            RETURNING runs.id, runs.tenant_id, runs.state, runs.attempt, runs.name,
                extract(epoch FROM now() - runs.started_at) AS duration_s
        ), counted AS (
            INSERT INTO run_counters (tenant_id, state, finished)
            SELECT f.tenant_id, f.state, count(*) FROM finished AS f GROUP BY f.tenant_id, f.state
            ON CONFLICT (tenant_id, state) DO UPDATE SET finished = run_counters.finished + EXCLUDED.finished
        )
        INSERT INTO events (tenant_id, kind, payload)
        SELECT f.tenant_id, 'run.state',
               jsonb_build_object('run_id', f.id, 'name', f.name, 'state', f.state, 'from_state', 'running',
                                  'attempt', f.attempt, 'duration_s', round(f.duration_s::numeric, 3), 'actor', p_actor)
        FROM finished AS f;
    END IF;
    PERFORM set_config('orch.dag_advancing', '', true);
END
$fn$;
