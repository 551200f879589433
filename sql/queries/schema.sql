-- name: schema_migration_versions
-- Which migrations this database has (a handful of rows): for migrate and /readyz.
SELECT version FROM schema_migrations;
