"""The fairness and create-limit settings (ASYNCQUEUE_FAIRNESS_RESERVE, ASYNCQUEUE_CREATE_RATE)."""

import pytest

from asyncqueue.config import ConfigError, Settings

URL = {"DATABASE_URL": "postgresql://x"}


@pytest.mark.parametrize(
    "env, reserve",
    [
        ({}, 4),  # a quarter of the default concurrency, 16
        ({"ASYNCQUEUE_WORKER_CONCURRENCY": "40"}, 10),
        ({"ASYNCQUEUE_WORKER_CONCURRENCY": "2"}, 1),  # at least one
        ({"ASYNCQUEUE_FAIRNESS_RESERVE": "0"}, 0),  # fairness off
        ({"ASYNCQUEUE_FAIRNESS_RESERVE": "6"}, 6),
    ],
)
def test_fairness_reserve(env, reserve):
    assert Settings.from_env({**URL, **env}).fairness_reserve == reserve


@pytest.mark.parametrize(
    "raw, rates",
    [
        (None, {"free": 20, "pro": 500}),
        ("", {"free": 20, "pro": 500}),
        ("free=5", {"free": 5, "pro": 500}),
        ("free=5, pro=2000", {"free": 5, "pro": 2000}),
        ("pro=0", {"free": 20, "pro": None}),  # 0: unlimited
        ("off", {"free": None, "pro": None}),
        ("OFF", {"free": None, "pro": None}),
    ],
)
def test_create_rate(raw, rates):
    env = URL if raw is None else {**URL, "ASYNCQUEUE_CREATE_RATE": raw}
    assert Settings.from_env(env).create_rates == rates


@pytest.mark.parametrize(
    "raw, message",
    [
        ("gold=5", "ASYNCQUEUE_CREATE_RATE must be plan=rate pairs"),
        ("free=fast", "ASYNCQUEUE_CREATE_RATE must be plan=rate pairs whose rates are 0"),
        ("free=", "ASYNCQUEUE_CREATE_RATE must be plan=rate pairs whose rates are 0"),
        ("free=-1", "ASYNCQUEUE_CREATE_RATE must be plan=rate pairs whose rates are 0"),
    ],
)
def test_create_rate_mistakes_are_named(raw, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({**URL, "ASYNCQUEUE_CREATE_RATE": raw})


def test_fairness_reserve_must_be_a_whole_non_negative_number():
    with pytest.raises(
        ConfigError, match="ASYNCQUEUE_FAIRNESS_RESERVE must be a whole number of at least 0"
    ):
        Settings.from_env({**URL, "ASYNCQUEUE_FAIRNESS_RESERVE": "-1"})
