"""A clock a test sets by hand, for code that takes its clock as an argument."""

from __future__ import annotations


class FakeClock:
    """Reads `now`; each reading then moves it on by `step` (0: only the test moves it)."""

    def __init__(self, now: float = 1000.0, step: float = 0.0):
        self.now = now
        self.step = step

    def __call__(self) -> float:
        now = self.now
        self.now += self.step
        return now
