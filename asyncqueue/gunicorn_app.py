"""`asyncqueue web`: gunicorn, run inside this process, serving the package this process imported.

gunicorn's own runner puts its working directory first on sys.path (`python -m gunicorn`, and its
`chdir` step), so in a clone's root, where Procfile platforms run every process, it would import
the clone's `asyncqueue/` instead of the installed package. Here the master is the `asyncqueue`
console script itself, whose sys.path never holds the working directory, and `chdir` adds
nothing to it; the workers gunicorn forks inherit the modules already imported.
"""

from __future__ import annotations

import os
import sys

from gunicorn.app.wsgiapp import WSGIApplication

CONFIG = "python:asyncqueue.gunicorn_config"
APP = "asyncqueue.api:create_app()"


class WebApplication(WSGIApplication):
    def __init__(self, gunicorn_args: tuple[str, ...] = ()):
        self._argv = ["asyncqueue web", "-c", CONFIG, *gunicorn_args, APP]
        super().__init__(prog="asyncqueue web")

    def load_config(self) -> None:
        # gunicorn parses sys.argv, at start and again on every HUP: it gets our arguments, and
        # sys.argv stays this command's own, which a USR2 re-exec runs again.
        own, sys.argv = sys.argv, self._argv
        try:
            super().load_config()
        finally:
            sys.argv = own

    def chdir(self) -> None:
        os.chdir(self.cfg.chdir)  # gunicorn's also puts the folder first on sys.path


def serve(gunicorn_args: tuple[str, ...] = ()) -> None:
    """Run the web server until it stops (gunicorn exits the process)."""
    WebApplication(gunicorn_args).run()
