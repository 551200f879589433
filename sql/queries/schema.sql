-- name: schema_migration_versions
-- For /readyz: which migrations this database has (a handful of rows).
SELECT version FROM schema_migrations;
