-- name: create_counts_sync
-- One web process's sync, one round trip: write its create counts per team and second (absolute
-- numbers, so a repeated sync changes nothing), say it is alive, and read back for the teams it
-- asks about their plan, the other processes' counts in the last two seconds and how many of
-- them admitted any, the number of
-- live web processes and the database's clock. The reads see the table as it was before this
-- statement's writes, so they hold only the other processes' counts, as they should.
WITH mine AS (
    SELECT * FROM jsonb_to_recordset(%(counts)s::jsonb) AS c (team_id uuid, second bigint, n int)
), written AS (
    INSERT INTO create_counts (team_id, second, process, n)
    SELECT team_id, second, %(process)s, n FROM mine
    ON CONFLICT (team_id, second, process) DO UPDATE SET n = excluded.n
), alive AS (
    INSERT INTO web_processes (process, seen_at) VALUES (%(process)s, now())
    ON CONFLICT (process) DO UPDATE SET seen_at = excluded.seen_at
), clock AS (
    SELECT extract(epoch FROM clock_timestamp())::float8 AS now
)
SELECT clock.now,
       1 + (SELECT count(*) FROM web_processes
            WHERE seen_at > now() - interval '2 seconds' AND process <> %(process)s) AS processes,
       (SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'team_id', t.id, 'plan', t.plan,
                   'active', (SELECT count(DISTINCT process) FROM create_counts
                              WHERE team_id = t.id AND process <> %(process)s
                                AND second >= floor(clock.now) - 1),
                   'others', (SELECT coalesce(jsonb_object_agg(c.second, c.n), '{}')
                              FROM (SELECT second, sum(n) AS n FROM create_counts
                                    WHERE team_id = t.id AND process <> %(process)s
                                      AND second >= floor(clock.now) - 1
                                    GROUP BY second) c))), '[]')
        FROM teams t WHERE t.id = ANY(%(teams)s::uuid[])) AS teams
FROM clock;

-- name: create_counts_prune
-- Counts older than the window and processes gone for a minute; any process may do it.
WITH counts AS (
    DELETE FROM create_counts
    WHERE second < extract(epoch FROM clock_timestamp())::bigint - 10
)
DELETE FROM web_processes WHERE seen_at < now() - interval '1 minute';
