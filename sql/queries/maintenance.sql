-- name: prune_lock_try
-- One pruner at a time across every worker: a lock held until this batch's transaction ends.
SELECT pg_try_advisory_xact_lock(%(lock)s) AS locked;

-- name: prune_lock_wait
SELECT pg_advisory_xact_lock(%(lock)s);

-- name: prune_batch
-- Delete up to %(limit)s finished tasks completed before the cutoff, oldest first, from the
-- finished-only index. SKIP LOCKED: a row another transaction holds is left for the next batch.
-- The task_counts and task_finished_deleted triggers run in this same transaction.
WITH doomed AS (
    SELECT id FROM tasks
    WHERE status IN ('completed', 'failed', 'timeout', 'cancelled')
      AND completed_at < now() - make_interval(secs => %(older_than_seconds)s)
    ORDER BY completed_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM tasks t USING doomed
WHERE t.id = doomed.id AND t.status IN ('completed', 'failed', 'timeout', 'cancelled')
RETURNING t.status;

-- name: prune_preview
-- What prune_batch would delete, by status (for --dry-run).
SELECT status, count(*)::bigint AS n FROM tasks
WHERE status IN ('completed', 'failed', 'timeout', 'cancelled')
  AND completed_at < now() - make_interval(secs => %(older_than_seconds)s)
GROUP BY status ORDER BY status;

-- name: queue_figures
-- Everything /metrics reports about the queue, in one round trip, each part cheap at any size:
-- counts from the trigger-kept task_counts (a few rows per team), the oldest due unclaimed task
-- from the tasks_due index (unfinished rows only), and workers from their small table.
SELECT 'tasks' AS figure, status AS label, sum(n)::float8 AS value
FROM task_counts GROUP BY status
UNION ALL
SELECT 'deleted', status, sum(n)::float8 FROM task_finished_deleted GROUP BY status
UNION ALL
SELECT 'lag', NULL, coalesce(extract(epoch FROM now() - min(next_run_at)), 0)::float8
FROM tasks
WHERE status IN ('pending', 'delayed', 'processing') AND next_run_at <= now()
UNION ALL
SELECT 'workers', NULL, count(*)::float8 FROM workers
WHERE last_seen_at >= now() - make_interval(secs => %(silent_after)s);
