"""Installed as `asyncqueue.sql`: the migrations and named queries, read with importlib.resources
(see setup.py). Nothing to import here."""
