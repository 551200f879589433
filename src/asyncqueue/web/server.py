"""`asyncqueue web`: gunicorn, run inside this process, serving the package this process imported.

The master is the `asyncqueue` command itself (so a platform's signals reach it), which has
imported the installed package before gunicorn starts; gunicorn's own runner would put its
working directory first on sys.path as well, which `chdir` here leaves alone.
"""

from __future__ import annotations

import os
import sys

from gunicorn.app.wsgiapp import WSGIApplication

CONFIG = "python:asyncqueue.web.gunicorn_config"
APP = "asyncqueue.api:create_app()"


class WebApplication(WSGIApplication):
    def __init__(self, gunicorn_args: tuple[str, ...] = ()):
        # The app comes first: gunicorn serves the first positional argument.
        self._argv = ["asyncqueue web", "-c", CONFIG, APP, *gunicorn_args]
        super().__init__(prog="asyncqueue web (gunicorn)")

    def load_config(self) -> None:
        # gunicorn parses sys.argv, at start and again on every HUP: it gets our arguments, and
        # sys.argv stays this command's own, which a USR2 re-exec runs again.
        own, sys.argv = sys.argv, self._argv
        try:
            super().load_config()
        finally:
            sys.argv = own

    def chdir(self) -> None:
        os.chdir(self.cfg.chdir)


def serve(gunicorn_args: tuple[str, ...] = ()) -> None:
    """Run the web server until it stops (gunicorn exits the process)."""
    # A USR2 re-exec runs sys.argv again after --chdir: the command's path must not be relative.
    sys.argv[0] = os.path.abspath(sys.argv[0])
    WebApplication(gunicorn_args).run()
