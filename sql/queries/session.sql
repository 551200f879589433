-- name: statement_timeout_local
-- For the rest of the transaction: a statement taking longer is cancelled by the server.
SELECT set_config('statement_timeout', %(ms)s, true);

-- name: transaction_repeatable_read
-- First in a transaction: every statement in it reads one snapshot.
SET TRANSACTION ISOLATION LEVEL REPEATABLE READ;

-- name: discard_plans
-- Drops the session's cached plans, so the next prepared statement is planned afresh.
DISCARD PLANS;

-- name: create_limits_session
-- A create-limit sync connection: a sync that cannot have the lock within a second (another
-- process's sync stuck mid-transaction) fails and is retried; one idle inside a transaction
-- is ended by the server.
SET lock_timeout = '1s';
SET idle_in_transaction_session_timeout = '5s';
