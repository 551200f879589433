"""The worker engine: claim due tasks, call them, decide, record, notify."""
