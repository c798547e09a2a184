-- name: orch_dag_advance
-- version 4, installed by migration 0022. A landed version is never edited: a change is
-- orch_dag_advance.v5.sql and a new migration that installs it. Changes from version 3: the
-- function runs with enable_seqscan off (docs/adr/0027). Its statements find rows by key
-- from arrays. While run_jobs is small, the planner costs a scan of it below the index
-- probes for those keys: for a cached generic plan, which assumes 10 elements, up to a few
-- thousand rows (about 0.5 ms of every child's success on a 4,004-row run_jobs, in a
-- session whose first call was a big release), and for any plan on a tiny table. With
-- sequential scans off, each key is an index lookup whatever the table's size. Version 3
-- wrote the tenant, type and run into the history rows of the jobs a release moves
-- (docs/adr/0023).
-- Version 2 locked the runs before counting them, also when there is one (version 1, for
-- one run, judged its jobs on the snapshot taken before the lock's wait).
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
LANGUAGE plpgsql VOLATILE
-- While the function runs, for its statements and the triggers they fire; restored when it
-- returns.
SET enable_seqscan = off
AS $fn$
DECLARE
    v_done bigint[] := coalesce(p_done, '{}');
    v_states text[] := coalesce(p_states, '{}');
    v_all bigint[] := '{}';
    v_kids bigint[];
    v_ok integer[];
    v_failed integer[];
    v_skipped integer[];
    v_ids bigint[];
    v_verdicts text[];
    v_runs bigint[];
    v_ended integer[];
BEGIN
    -- Jobs just created (spawn, replay) whose parents may decide them already.
    IF cardinality(p_check) > 0 THEN
        SELECT array_agg(r.job_id ORDER BY r.job_id), array_agg(v.verdict ORDER BY r.job_id)
        INTO v_ids, v_verdicts
        FROM run_jobs AS r
        CROSS JOIN LATERAL (SELECT orch_trigger_verdict(r.trigger_rule, r.deps_total, r.deps_ok, r.deps_failed,
                                                        r.deps_skipped) AS verdict) AS v
        WHERE r.job_id = ANY(p_check) AND v.verdict IS NOT NULL;
    END IF;
    LOOP
        IF cardinality(v_done) > 0 THEN
            v_all := v_all || v_done;
            -- 1. The direct children of the jobs that ended, and how many of their parents
            --    ended how, in this step.
            SELECT array_agg(c.child_id ORDER BY c.child_id), array_agg(c.ok ORDER BY c.child_id),
                   array_agg(c.failed ORDER BY c.child_id), array_agg(c.skipped ORDER BY c.child_id)
            INTO v_kids, v_ok, v_failed, v_skipped
            FROM (
                SELECT e.child_id,
                       count(*) FILTER (WHERE d.state = 'succeeded') AS ok,
                       count(*) FILTER (WHERE d.state IN ('dead_lettered', 'upstream_failed', 'canceled')) AS failed,
                       count(*) FILTER (WHERE d.state = 'skipped') AS skipped
                FROM unnest(v_done, v_states) AS d(id, state)
                -- Per parent, by the primary key. (A generic plan knows no array's size and
                -- would hash-join the whole edge table; OFFSET 0 keeps this a lookup.)
                CROSS JOIN LATERAL (SELECT x.child_id FROM dag_edges AS x WHERE x.parent_id = d.id OFFSET 0) AS e
                GROUP BY e.child_id
            ) AS c;
            IF v_kids IS NOT NULL THEN
                IF cardinality(v_kids) > 1 THEN
                    PERFORM 1 FROM run_jobs AS r WHERE r.job_id = ANY(v_kids) ORDER BY r.job_id FOR NO KEY UPDATE;
                END IF;
                -- Their counts go up under the row lock; those now decided come back.
                WITH bumped AS (
                    UPDATE run_jobs AS r SET
                        deps_ok = r.deps_ok + c.ok,
                        deps_failed = r.deps_failed + c.failed,
                        deps_skipped = r.deps_skipped + c.skipped
                    FROM unnest(v_kids, v_ok, v_failed, v_skipped) AS c(child_id, ok, failed, skipped)
                    WHERE r.job_id = c.child_id
                    RETURNING r.job_id,
                        orch_trigger_verdict(r.trigger_rule, r.deps_total, r.deps_ok, r.deps_failed, r.deps_skipped)
                            AS verdict
                )
                SELECT coalesce(v_ids, '{}') || array_agg(b.job_id ORDER BY b.job_id),
                       coalesce(v_verdicts, '{}') || array_agg(b.verdict ORDER BY b.job_id)
                INTO v_ids, v_verdicts
                FROM bumped AS b WHERE b.verdict IS NOT NULL;
            END IF;
        END IF;
        EXIT WHEN v_ids IS NULL OR cardinality(v_ids) = 0;
        -- 2. Decided jobs still pending move, each once (the compare-and-set on 'pending').
        --    The jobs this ends are not noted for the jobs trigger (orch_dag_note_ended's
        --    WHEN clause): this loop cascades them itself.
        PERFORM set_config('orch.dag_advancing', 'on', true);
        WITH moved AS (
            UPDATE jobs AS j SET
                state = d.verdict,
                updated_at = now(),
                rung_at = CASE WHEN d.verdict = 'queued' THEN now() END,
                finished_at = CASE WHEN d.verdict <> 'queued' THEN now() END
            FROM unnest(v_ids, v_verdicts) AS d(id, verdict)
            JOIN run_jobs AS r ON r.job_id = d.id
            WHERE j.id = d.id AND j.state = 'pending'
            RETURNING j.id, j.state, j.attempt, j.run_id, j.queue, j.tenant_id, j.job_type,
                r.trigger_rule || ': ' || r.deps_ok || ' succeeded, ' || r.deps_failed || ' failed, '
                    || r.deps_skipped || ' skipped of ' || r.deps_total || ' parent(s)' AS reason
        ), released AS (
            INSERT INTO dag_released (job_id, run_id, queue)
            SELECT m.id, m.run_id, m.queue FROM moved AS m WHERE m.state = 'queued'
            ON CONFLICT (job_id) DO NOTHING
        ), history AS (
            INSERT INTO job_history (job_id, from_state, event, to_state, at, actor, reason, attempt,
                                     tenant_id, job_type, run_id)
            SELECT m.id, 'pending',
                   CASE m.state WHEN 'queued' THEN 'deps_met' WHEN 'upstream_failed' THEN 'parent_failed' ELSE 'skip' END,
                   m.state, now(), p_actor, m.reason, m.attempt, m.tenant_id, m.job_type, m.run_id
            FROM moved AS m
        )
        SELECT coalesce(array_agg(m.id ORDER BY m.id) FILTER (WHERE m.state <> 'queued'), '{}'),
               coalesce(array_agg(m.state ORDER BY m.id) FILTER (WHERE m.state <> 'queued'), '{}')
        INTO v_done, v_states
        FROM moved AS m;
        PERFORM set_config('orch.dag_advancing', '', true);
        v_ids := NULL;
        v_verdicts := NULL;
        EXIT WHEN cardinality(v_done) = 0;
    END LOOP;

    -- 3. Runs: fewer jobs left; a run whose last job ended gets its state.
    IF cardinality(v_all) = 0 THEN
        RETURN;
    END IF;
    SELECT array_agg(e.run_id ORDER BY e.run_id), array_agg(e.n ORDER BY e.run_id) INTO v_runs, v_ended
    FROM (
        SELECT r.run_id, count(*)::integer AS n FROM run_jobs AS r
        WHERE r.job_id = ANY(v_all) AND r.current GROUP BY r.run_id
    ) AS e;
    IF v_runs IS NULL THEN
        RETURN;
    END IF;
    -- Always, and in a statement of its own: the UPDATE below takes its snapshot after this
    -- lock is granted, so it sees every job that a concurrent finisher of the run committed.
    PERFORM 1 FROM runs WHERE id = ANY(v_runs) ORDER BY id FOR NO KEY UPDATE;
    WITH counted AS (
        UPDATE runs SET
            jobs_live = runs.jobs_live - e.n,
            state = CASE
                WHEN runs.state <> 'running' OR runs.jobs_live - e.n > 0 THEN runs.state
                WHEN runs.cancel_requested THEN 'canceled'
                WHEN EXISTS (
                    SELECT 1 FROM run_jobs AS r JOIN jobs AS j ON j.id = r.job_id
                    WHERE r.run_id = runs.id AND r.current AND NOT r.allow_failure
                      AND j.state IN ('dead_lettered', 'upstream_failed', 'canceled')) THEN 'failed'
                ELSE 'succeeded' END,
            finished_at = CASE WHEN runs.state = 'running' AND runs.jobs_live - e.n = 0 THEN now()
                               ELSE runs.finished_at END,
            updated_at = now()
        FROM unnest(v_runs, v_ended) AS e(run_id, n)
        WHERE runs.id = e.run_id
        RETURNING runs.id, runs.tenant_id, runs.state, runs.attempt, runs.name, runs.jobs_live,
            extract(epoch FROM now() - runs.started_at) AS duration_s
    ), finished AS (
        SELECT * FROM counted AS c WHERE c.jobs_live = 0 AND c.state <> 'running'
    ), totals AS (
        INSERT INTO run_counters (tenant_id, state, finished)
        SELECT f.tenant_id, f.state, count(*) FROM finished AS f GROUP BY f.tenant_id, f.state
        ON CONFLICT (tenant_id, state) DO UPDATE SET finished = run_counters.finished + EXCLUDED.finished
    )
    INSERT INTO events (tenant_id, kind, payload)
    SELECT f.tenant_id, 'run.state',
           jsonb_build_object('run_id', f.id, 'name', f.name, 'state', f.state, 'from_state', 'running',
                              'attempt', f.attempt, 'duration_s', round(f.duration_s::numeric, 3), 'actor', p_actor)
    FROM finished AS f;
END
$fn$;
