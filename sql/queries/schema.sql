-- name: schema_migration_versions
-- Which migrations this database has (a handful of rows): for migrate and /readyz.
SELECT version FROM schema_migrations;

-- name: migration_lock
-- Serialises concurrent migration runs (two release phases, a web and a worker starting).
SELECT pg_advisory_lock(%(lock)s);

-- name: migration_unlock
SELECT pg_advisory_unlock(%(lock)s);

-- name: schema_migrations_create
CREATE TABLE IF NOT EXISTS schema_migrations (
    version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());

-- name: schema_migration_record
INSERT INTO schema_migrations (version) VALUES (%(version)s);
