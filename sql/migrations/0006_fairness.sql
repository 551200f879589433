-- Fairness between teams, and per-team create limits.

-- Each team's unfinished tasks in due order. A claim that skips a team at its cap walks the
-- teams with unfinished tasks through this index (one probe per team: a loose index scan) and
-- takes each one's oldest due rows, instead of walking the capped team's backlog in tasks_due.
-- IF NOT EXISTS: on a large table, build it first with CREATE INDEX CONCURRENTLY (README).
CREATE INDEX IF NOT EXISTS tasks_team_due ON tasks (team_id, next_run_at)
    WHERE status IN ('pending', 'delayed', 'processing');

-- Create limits: every web process counts the creates it admits per team and per second (of the
-- database's clock) and writes its counts here every ~200 ms, reading back the other processes'.
-- UNLOGGED: no WAL, lost on a crash, which only forgets the last second or two of counts.
CREATE UNLOGGED TABLE create_counts (
    team_id  uuid   NOT NULL,
    process  text   NOT NULL,  -- host:pid:start of the web process
    second   bigint NOT NULL,  -- floor(epoch) of the database's clock
    n        integer NOT NULL,
    PRIMARY KEY (team_id, second, process)
);

-- Web processes alive (synced in the last seconds): a process's share of a team's headroom is
-- one over their number.
CREATE UNLOGGED TABLE web_processes (
    process  text PRIMARY KEY,
    seen_at  timestamptz NOT NULL
);
