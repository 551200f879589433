"""AsyncQueue: a Postgres-native service that makes HTTP calls later, reliably."""
