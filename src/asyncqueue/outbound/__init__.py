"""Outbound calls: which hosts and addresses the service may call (shared by API and worker)."""
