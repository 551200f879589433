"""AsyncQueue: a Postgres-native service that makes HTTP calls later, reliably."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("asyncqueue")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
