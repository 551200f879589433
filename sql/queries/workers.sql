-- name: worker_beat
-- A worker's heartbeat: its row, created on the first beat and refreshed on every other.
INSERT INTO workers (id, name, host, pid, version, started_at, last_seen_at, in_flight)
VALUES (%(id)s, %(name)s, %(host)s, %(pid)s, %(version)s, %(started_at)s, now(), %(in_flight)s)
ON CONFLICT (id) DO UPDATE SET last_seen_at = now(), in_flight = excluded.in_flight;

-- name: worker_forget_dead
-- Rows of workers silent for longer than %(seconds)s (they died without deleting their row).
DELETE FROM workers WHERE last_seen_at < now() - make_interval(secs => %(seconds)s);

-- name: worker_remove
DELETE FROM workers WHERE id = %(id)s;

-- name: worker_list
SELECT id, name, host, pid, version, started_at, last_seen_at, in_flight,
       extract(epoch FROM now() - last_seen_at)::float8 AS seen_seconds_ago
FROM workers ORDER BY host, pid, started_at;
