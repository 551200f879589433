"""The HTTP API: create_app() and its blueprints."""

from asyncqueue.api.app import create_app

__all__ = ["create_app"]
