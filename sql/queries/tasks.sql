-- part: task_row_columns
-- The columns of a task as the API returns it (asyncqueue.db.rows.TaskRow, in its order).
id, team_id, status, callback_url, method, headers, body, max_wait_time, timeout, max_retries,
retry_count, retry_backoff, on_complete_url, delay_until, result, error, created_at, started_at,
completed_at;

-- name: task_insert_for_key
-- Authenticate, hold the team's plan limit and insert, in one statement (one round trip). It
-- inserts nothing when the key is unknown or revoked, or maxWaitTime is over the team's plan
-- limit; the API then finds out which, to say so.
INSERT INTO tasks (team_id, status, callback_url, method, headers, body, max_wait_time, timeout,
                   max_retries, retry_backoff, on_complete_url, delay_until, next_run_at)
SELECT k.team_id,
       CASE WHEN %(delay_until)s::timestamptz > now() THEN 'delayed' ELSE 'pending' END,
       %(callback_url)s, %(method)s, %(headers)s, %(body)s, %(max_wait_time)s, %(timeout)s,
       %(max_retries)s, %(retry_backoff)s, %(on_complete_url)s, %(delay_until)s,
       greatest(coalesce(%(delay_until)s::timestamptz, now()), now())
FROM api_keys k JOIN teams t ON t.id = k.team_id
WHERE k.key_hash = %(key_hash)s AND k.revoked_at IS NULL
  AND %(max_wait_time)s <= (%(plan_max_wait)s::jsonb ->> t.plan)::float8
RETURNING
-- include: task_row_columns

-- name: task_get
SELECT
-- include: task_row_columns
FROM tasks WHERE id = %(id)s;

-- name: task_list
-- {status_filter} and {direction} are filled from fixed strings in code, never from input.
SELECT
-- include: task_row_columns
FROM tasks
WHERE team_id = %(team_id)s {status_filter}
ORDER BY created_at {direction}, id {direction}
LIMIT %(limit)s OFFSET %(offset)s;

-- name: task_count
-- Kept by triggers (migration 0003); summing a team's few shard rows, not counting its tasks.
SELECT coalesce(sum(n), 0)::bigint AS n FROM task_counts
WHERE team_id = %(team_id)s {status_filter};

-- name: task_cancel
-- The row lock makes this safe against a claim at the same instant: whichever commits first wins,
-- and the other sees the new status (a claimed task is 'processing', so it is not cancelled).
UPDATE tasks
SET status = 'cancelled', completed_at = now(), next_run_at = NULL
WHERE id = %(id)s AND team_id = %(team_id)s AND status IN ('pending', 'delayed')
RETURNING
-- include: task_row_columns

-- name: task_claim
-- Claim and mark in one statement (so one short transaction):
--   due:    the oldest due rows nobody else holds (waiting, retry due, or lease run out), of
--           any team: an index scan of tasks_due;
--   update: mark them claimed, with a lease (task_claim_mark).
-- The dispatcher uses this claim while no team is at its per-worker cap (every claim of a
-- single-team drain, every pickup); task_claim_skipping, the same claim past the capped teams,
-- otherwise.
WITH due AS (
    SELECT id FROM tasks
    WHERE status IN ('pending', 'delayed', 'processing') AND next_run_at <= now()
    ORDER BY next_run_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
-- include: task_claim_mark

-- name: task_claim_skipping
-- task_claim, of the teams not in %(skip)s (never empty: those at their per-worker cap,
-- asyncqueue/worker/fairness.py), found without walking the skipped teams' backlogs: `waiting`
-- lists the teams with unfinished tasks, one probe of tasks_team_due each (a loose index scan),
-- and each team gives its own oldest due rows. Needs a custom plan (the worker sends it
-- unprepared, so each run is planned for its parameters): a generic plan of it may seq-scan tasks.
WITH RECURSIVE waiting (team_id) AS (
    (SELECT team_id FROM tasks
     WHERE status IN ('pending', 'delayed', 'processing')
     ORDER BY team_id LIMIT 1)
    UNION ALL
    SELECT (SELECT t.team_id FROM tasks t
            WHERE t.status IN ('pending', 'delayed', 'processing') AND t.team_id > w.team_id
            ORDER BY t.team_id LIMIT 1)
    FROM waiting w
    WHERE w.team_id IS NOT NULL
), due AS (
    SELECT head.id
    FROM waiting w
    CROSS JOIN LATERAL (
        -- This team's due rows, spelt as a range of (team_id, next_run_at) so that only
        -- tasks_team_due can serve it: with `team_id = w.team_id` the planner may walk
        -- tasks_due filtering on the team, which is the full walk through the capped team's
        -- backlog this is here to avoid. SKIP LOCKED here, under the LIMIT, so that two
        -- workers probing at once each pass over the rows the other holds and take the next
        -- ones (a lock taken after a LIMIT would leave the loser with nothing though work
        -- waits). The rows a team gives beyond what the outer LIMIT keeps stay locked only
        -- until this short transaction ends.
        SELECT x.id, x.next_run_at FROM tasks x
        WHERE (x.team_id, x.next_run_at) >= (w.team_id, '-infinity'::timestamptz)
          AND (x.team_id, x.next_run_at) <= (w.team_id, now())
          AND x.status IN ('pending', 'delayed', 'processing')
        ORDER BY x.team_id, x.next_run_at
        LIMIT %(limit)s
        FOR UPDATE OF x SKIP LOCKED
    ) head
    WHERE w.team_id <> ALL(%(skip)s::uuid[])
    ORDER BY head.next_run_at
    LIMIT %(limit)s
),
-- include: task_claim_mark

-- part: task_claim_mark
-- The end of task_claim and task_claim_skipping (included by both): mark the rows of `due`
-- processing, stamp the first start, take a fresh claim token, and set the lease: the attempt's
-- own time limit (never past the task's maxWaitTime deadline) plus a grace, after which another
-- worker may take the task back.
claimed AS (
    UPDATE tasks t
    SET status = 'processing',
        started_at = coalesce(t.started_at, now()),
        claim_token = gen_random_uuid(),
        claimed_by = %(worker)s,
        attempts = t.attempts + 1,
        next_run_at = now() + make_interval(secs => greatest(0, least(t.timeout,
            extract(epoch FROM coalesce(t.started_at, now())
                                + make_interval(secs => t.max_wait_time) - now())))
            + %(grace)s)
    FROM due
    WHERE t.id = due.id
    RETURNING t.id, t.team_id, t.claim_token, t.attempts, t.retry_count, t.max_retries,
              t.retry_backoff, t.max_wait_time, t.timeout, t.headers, t.method, t.callback_url,
              t.body, t.result, t.started_at
)
-- asyncqueue.db.rows.ClaimedTask, in its order.
SELECT id, team_id, claim_token, attempts, retry_count, max_retries, retry_backoff,
       max_wait_time, timeout, headers, method, callback_url, body, result, now() AS claimed_at,
       started_at + make_interval(secs => max_wait_time) AS deadline
FROM claimed;

-- name: task_schedule_retry
-- Retries for a batch of attempts, one JSON array of {id, claim_token, result, error, delay}:
-- fenced like task_finish_many, and idempotent in the same way (a repeat after a lost reply
-- returns the tasks it had already scheduled, without counting the retry twice). The NOTIFY lets
-- sleeping workers shorten their wait to the retry time.
WITH r AS (
    SELECT * FROM jsonb_to_recordset(%(retries)s::jsonb)
        AS r (id uuid, claim_token uuid, result jsonb, error text, delay float8)
), retried AS (
    UPDATE tasks t
    SET retry_count = t.retry_count + 1, result = r.result, error = r.error,
        next_run_at = now() + make_interval(secs => r.delay), claim_token = NULL,
        outcome_claim_token = r.claim_token
    FROM r
    WHERE t.id = r.id AND t.claim_token = r.claim_token
    RETURNING t.id
)
SELECT id, pg_notify('asyncqueue_tasks', '')::text AS notified FROM retried
UNION ALL
-- One lookup by id per retry, as in task_finish_many.
SELECT t.id, NULL FROM r CROSS JOIN LATERAL (SELECT * FROM tasks x WHERE x.id = r.id LIMIT 1) t
WHERE t.outcome_claim_token = r.claim_token;

-- name: task_release
-- Hand claimed tasks back on shutdown: due again at once, status and counters untouched. Only
-- a claim still held matches: one whose outcome or retry was written has no claim_token left.
WITH released AS (
    UPDATE tasks t SET next_run_at = now(), claim_token = NULL
    FROM unnest(%(ids)s::uuid[], %(claim_tokens)s::uuid[]) AS held (id, claim_token)
    WHERE t.id = held.id AND t.claim_token = held.claim_token AND t.status = 'processing'
    RETURNING t.id
)
SELECT id, pg_notify('asyncqueue_tasks', '') FROM released;

-- name: task_seconds_until_due
-- seconds: until the earliest next_run_at (zero or less: something is due now); next_seconds:
-- until the earliest one still in the future. When something is due that the claim did not get
-- (another session holds its row), the worker waits for the second, or its idle floor.
SELECT extract(epoch FROM (
           SELECT min(next_run_at) FROM tasks
           WHERE status IN ('pending', 'delayed', 'processing')) - now()) AS seconds,
       extract(epoch FROM (
           SELECT min(next_run_at) FROM tasks
           WHERE status IN ('pending', 'delayed', 'processing') AND next_run_at > now())
           - now()) AS next_seconds;

-- name: task_finish_many
-- Final outcomes for a batch in one statement; each row is fenced by its claim token. The batch
-- is one JSON array of {id, claim_token, status, result, error}: one parameter to send however
-- many outcomes pile up. Idempotent for the claim that made it: a repeat after a lost reply (the
-- first run committed and cleared claim_token) finds the task by outcome_claim_token and returns
-- it unchanged, so the onComplete is still sent. Returns what the onComplete notification needs
-- (the result only where there is somebody to notify).
WITH o AS (
    SELECT * FROM jsonb_to_recordset(%(outcomes)s::jsonb)
        AS o (id uuid, claim_token uuid, status text, result jsonb, error text)
), finished AS (
    UPDATE tasks t
    SET status = o.status, result = o.result, error = o.error, completed_at = now(),
        next_run_at = NULL, claim_token = NULL, outcome_claim_token = o.claim_token
    FROM o
    WHERE t.id = o.id AND t.claim_token = o.claim_token
    RETURNING t.id, t.team_id, t.status, t.error, t.retry_count, t.created_at, t.completed_at,
              t.on_complete_url, t.result
)
-- asyncqueue.db.rows.FinishedTask, in its order.
SELECT id, team_id, status, error, retry_count, created_at, completed_at, on_complete_url,
       CASE WHEN on_complete_url IS NOT NULL THEN result END AS result
FROM finished
UNION ALL
SELECT t.id, t.team_id, t.status, t.error, t.retry_count, t.created_at, t.completed_at,
       t.on_complete_url, CASE WHEN t.on_complete_url IS NOT NULL THEN t.result END
-- One lookup by id per outcome. As a plain join with the status filter, statistics taken while
-- nothing had finished yet (a backlog's first ANALYZE) let the planner walk every finished task
-- through tasks_finished_completed and hash them, an order of magnitude slower: the LIMIT keeps
-- the subquery apart, so the status is not used to pick an index.
FROM o CROSS JOIN LATERAL (SELECT * FROM tasks x WHERE x.id = o.id LIMIT 1) t
WHERE t.outcome_claim_token = o.claim_token AND t.status IN ('completed', 'failed', 'timeout');
