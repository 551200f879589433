"""Kept for imports made before the worker was split (see process.py for the shape)."""

from asyncqueue.worker.completer import OUTCOME_NOT_STORED, finish_params
from asyncqueue.worker.process import WorkerProcess, run_worker

__all__ = ["OUTCOME_NOT_STORED", "WorkerProcess", "finish_params", "run_worker"]
