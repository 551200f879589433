"""Development only: the dev server (bin/dev) and an embedded PostgreSQL."""
