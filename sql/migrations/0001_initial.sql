-- Teams, their members and API keys, and the tasks they create.

CREATE TABLE teams (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL UNIQUE,
    plan        text NOT NULL DEFAULT 'free' CHECK (plan IN ('free', 'pro')),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE team_members (
    team_id     uuid NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    email       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (team_id, email)
);

-- Only a SHA-256 of each key is kept; the prefix lets people tell keys apart in listings.
CREATE TABLE api_keys (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    team_id     uuid NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    name        text,
    prefix      text NOT NULL,
    key_hash    bytea NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_team ON api_keys (team_id);

CREATE TABLE tasks (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    team_id          uuid NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    status           text NOT NULL CHECK (status IN
                         ('pending', 'delayed', 'processing', 'completed', 'failed', 'timeout', 'cancelled')),
    callback_url     text NOT NULL,
    method           text NOT NULL CHECK (method IN ('GET', 'POST', 'PUT', 'DELETE')),
    headers          jsonb NOT NULL DEFAULT '{}',
    body             text,
    max_wait_time    double precision NOT NULL,
    timeout          double precision NOT NULL,
    max_retries      integer NOT NULL,
    retry_count      integer NOT NULL DEFAULT 0,
    retry_backoff    text NOT NULL CHECK (retry_backoff IN ('linear', 'exponential')),
    on_complete_url  text,
    delay_until      timestamptz,
    -- The one column that drives time: when a waiting task becomes due, when a retry is due,
    -- or when a running attempt's lease runs out. NULL once the task is finished.
    next_run_at      timestamptz,
    -- Fences the outcome write: only the holder of the current claim may record a result.
    claim_token      uuid,
    attempts         integer NOT NULL DEFAULT 0,
    result           jsonb,
    error            text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    completed_at     timestamptz
);

-- Claiming: only unfinished tasks are in this index, so it stays small however many finish.
CREATE INDEX tasks_due ON tasks (next_run_at)
    WHERE status IN ('pending', 'delayed', 'processing');
-- Listing a team's tasks, newest or oldest first, optionally by status.
CREATE INDEX tasks_team_created ON tasks (team_id, created_at, id);
CREATE INDEX tasks_team_status_created ON tasks (team_id, status, created_at, id);

-- NOTIFY is only a hint that work may be due; once per statement keeps bulk inserts cheap.
CREATE FUNCTION tasks_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('asyncqueue_tasks', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER tasks_notify_on_insert
    AFTER INSERT ON tasks
    FOR EACH STATEMENT EXECUTE FUNCTION tasks_notify();
