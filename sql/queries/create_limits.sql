-- name: create_limits_lock
-- Syncs run one at a time, across every web process: each then sees the allowances the others
-- took (see create_limits_write), so no two take the same headroom. Held until the sync's
-- transaction ends; the sync connection's lock_timeout bounds the wait.
SELECT pg_advisory_xact_lock(%(lock)s);

-- name: create_counts_sync
-- One web process's sync, under create_limits_lock: say it is alive, and read back for the
-- teams it asks about their plan, the other processes' counts in the last %(kept)s tenths of a
-- second, the allowances the live ones took at their last syncs and the creates they were asked
-- for; the number of live web processes and the database's clock. Its own counts and
-- allowances are written after (create_limits_write), in the same transaction, as of one
-- moment. The counts and allowances are in create_tenth_*, never in the older release's tables
-- (create_counts, create_allowances): during a rolling deploy each generation sees its own.
WITH alive AS (
    INSERT INTO web_processes (process, seen_at) VALUES (%(process)s, now())
    ON CONFLICT (process) DO UPDATE SET seen_at = excluded.seen_at
), clock AS (
    SELECT extract(epoch FROM clock_timestamp())::float8 AS now
), live AS (
    SELECT process FROM web_processes
    WHERE seen_at > now() - interval '2 seconds' AND process <> %(process)s
)
SELECT clock.now,
       1 + (SELECT count(*) FROM live) AS processes,
       (SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'team_id', t.id, 'plan', t.plan,
                   'allowance', (SELECT coalesce(sum(a.allowance), 0)
                                 FROM create_tenth_allowances a
                                 WHERE a.team_id = t.id
                                   AND a.process IN (SELECT process FROM live)),
                   'others', (SELECT coalesce(jsonb_object_agg(c.tenth, c.n), '{}')
                              FROM (SELECT tenth, sum(n) AS n FROM create_tenth_counts
                                    WHERE team_id = t.id AND process <> %(process)s
                                      AND tenth > floor(clock.now * 10) - %(kept)s
                                    GROUP BY tenth) c),
                   'wanted', (SELECT coalesce(sum(c.wanted), 0) FROM create_tenth_counts c
                              WHERE c.team_id = t.id AND c.process <> %(process)s
                                AND c.tenth > floor(clock.now * 10) - %(kept)s))), '[]')
        FROM teams t WHERE t.id = ANY(%(teams)s::uuid[])) AS teams
FROM clock;

-- name: create_limits_write
-- This process's create counts per team and tenth of a second, admitted and asked for
-- (absolute numbers, so a repeated sync changes nothing; only those changed since its last
-- sync are sent), and the allowances it took at this sync: one row per team it knows, none
-- left for teams it has forgotten.
WITH counts AS (
    SELECT * FROM jsonb_to_recordset(%(counts)s::jsonb)
        AS c (team_id uuid, tenth bigint, n int, wanted int)
), written AS (
    INSERT INTO create_tenth_counts (team_id, tenth, process, n, wanted)
    SELECT team_id, tenth, %(process)s, n, wanted FROM counts
    ON CONFLICT (team_id, tenth, process) DO UPDATE SET n = excluded.n, wanted = excluded.wanted
), allowances AS (
    SELECT * FROM jsonb_to_recordset(%(allowances)s::jsonb) AS a (team_id uuid, allowance float8)
), forgotten AS (
    DELETE FROM create_tenth_allowances
    WHERE process = %(process)s AND team_id NOT IN (SELECT team_id FROM allowances)
)
INSERT INTO create_tenth_allowances (team_id, process, allowance)
SELECT team_id, %(process)s, allowance FROM allowances
ON CONFLICT (team_id, process) DO UPDATE SET allowance = excluded.allowance;

-- name: create_counts_prune
-- Counts older than the window, processes gone for a minute, and the allowances of processes
-- no longer listed (a live process's sync ignores them after two seconds already); any process
-- may do it. The older release's tables are its own processes' to prune.
WITH counts AS (
    DELETE FROM create_tenth_counts
    WHERE tenth < extract(epoch FROM clock_timestamp())::bigint * 10 - 100  -- 10 s of tenths
), gone AS (
    DELETE FROM web_processes WHERE seen_at < now() - interval '1 minute' RETURNING process
)
DELETE FROM create_tenth_allowances a
WHERE a.process IN (SELECT process FROM gone)
   OR NOT EXISTS (SELECT 1 FROM web_processes w WHERE w.process = a.process);
