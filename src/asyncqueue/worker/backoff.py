"""Retry delays, as the API document lists them."""

from __future__ import annotations

from asyncqueue.domain import EXPONENTIAL, LINEAR


def retry_delay(strategy: str, retry_number: int) -> float:
    """Seconds to wait before retry `retry_number` (1 for the first retry).

    exponential: 1, 2, 4, 8, ... ; linear: 1, 2, 3, ...
    """
    if retry_number < 1:
        raise ValueError("retry_number starts at 1")
    if strategy == EXPONENTIAL:
        return float(2 ** (retry_number - 1))
    if strategy == LINEAR:
        return float(retry_number)
    raise ValueError(f"unknown retry strategy {strategy!r}")
