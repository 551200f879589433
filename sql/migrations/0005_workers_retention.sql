-- Worker heartbeats, the index retention prunes by, and a tally of deleted finished tasks.

-- One row per running worker process, written by its heartbeat every few seconds and deleted
-- when it stops; rows of workers that died without saying so are removed after an hour.
-- Keyed by a per-start id, not host:pid, so a reused pid never takes over a dead worker's row.
CREATE TABLE workers (
    id            uuid PRIMARY KEY,
    name          text NOT NULL,
    host          text NOT NULL,
    pid           integer NOT NULL,
    version       text NOT NULL,
    started_at    timestamptz NOT NULL,
    last_seen_at  timestamptz NOT NULL,
    in_flight     integer NOT NULL DEFAULT 0
);
CREATE INDEX workers_last_seen ON workers (last_seen_at);

-- Retention deletes the oldest finished tasks first, a small batch at a time: only finished
-- rows are in this index, so it never leads a prune to an unfinished task. A plain CREATE INDEX
-- (migrations run in a transaction, where CONCURRENTLY is not allowed): on a big table it holds
-- off writes to tasks while it builds. IF NOT EXISTS: an operator may build it CONCURRENTLY first.
CREATE INDEX IF NOT EXISTS tasks_finished_completed ON tasks (completed_at)
    WHERE status IN ('completed', 'failed', 'timeout', 'cancelled');

-- Finished tasks ever deleted (by retention, by hand, or with their team), by status, so that
-- the finished-tasks counter on /metrics (task_counts plus this) never goes down when rows go.
-- Sharded by backend like task_counts, and kept by a statement trigger in the same transaction
-- as the delete: an interrupted prune rolls back its tally with its rows.
CREATE TABLE task_finished_deleted (
    status  text     NOT NULL,
    shard   smallint NOT NULL,
    n       bigint   NOT NULL,
    PRIMARY KEY (status, shard)
);

CREATE FUNCTION task_finished_deleted_after_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_finished_deleted (status, shard, n)
    SELECT status, pg_backend_pid() % 8, count(*)
    FROM removed
    WHERE status IN ('completed', 'failed', 'timeout', 'cancelled')
    GROUP BY status ORDER BY status
    ON CONFLICT (status, shard) DO UPDATE SET n = task_finished_deleted.n + excluded.n;
    RETURN NULL;
END;
$$;

CREATE TRIGGER task_finished_deleted_delete AFTER DELETE ON tasks
    REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION task_finished_deleted_after_delete();
