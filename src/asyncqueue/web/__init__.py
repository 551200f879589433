"""The web server: gunicorn, its worker class, request framing and settings."""
